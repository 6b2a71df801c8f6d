"""Smoke test of the operator core: the real Kopf handlers against the KMock emulator.

DatasetVersion end to end (Job, ConfigMap, result from the store, kstatus conditions), a
TrainingJob waiting for it, then its Job failing OOMKilled, a refused spec change, and an
operator restart that creates nothing new. The full integration suite lives beside it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubeforge.operator.handlers import build
from kubeforge.operator.settings import OperatorSettings
from kubeforge.store import layout, open_store
from kubeforge.testing.chart_rbac import operator_kubeconfig
from kubeforge.testing.kopf_thread import connection_from_kubeconfig
from kubeforge.testing.kube_emulator import KopfThread, KubeEmulator

CRDS = Path(__file__).resolve().parents[1] / "crds"
TJ = {"apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "det", "namespace": "default"},
      "spec": {"datasetVersion": "v1", "task": "classification", "model": {"name": "resnet18"}}}
DSV = {"apiVersion": "kubeforge.io/v1alpha1", "kind": "DatasetVersion",
       "metadata": {"name": "v1", "namespace": "default"},
       "spec": {"dataset": "shapes", "source": {"uri": "s3://raw/x/", "format": "coco"}}}


def status_when(emu: KubeEmulator, kind: str, name: str, phase: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = emu.get(kind, name).get("status") or {}
        return status if status.get("phase") == phase else None

    return KubeEmulator.wait_for(check, timeout=20)


def reasons(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_operator_core_smoke(tmp_path: Path) -> None:
    settings = OperatorSettings(store=str(tmp_path / "store"), s3_endpoint="", progress_interval_seconds=1)
    with KubeEmulator() as emu:
        emu.apply_crds(CRDS)
        kubeconfig = operator_kubeconfig(emu)  # the chart's ServiceAccount, under the chart's RBAC
        registry, _ = build(settings, login=lambda **_: connection_from_kubeconfig(kubeconfig))
        with KopfThread(registry, emu.kubeconfig_path):
            emu.create(TJ)
            emu.create(DSV)
            job = KubeEmulator.wait_for(lambda: emu.find("Job", "v1-dataset-version"), timeout=20)
            assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
                "kubeforge", "step", "dataset-version"]
            assert emu.find("ConfigMap", "v1-dataset-version")
            waiting = status_when(emu, "TrainingJob", "det", "Waiting")
            assert reasons(waiting)["Ready"] == ("False", "WaitingForDatasetVersion")
            dsv = emu.get("DatasetVersion", "v1")
            assert "kubeforge.io/finalizer" in dsv["metadata"]["finalizers"]

            key = layout.run_result_key("default", "DatasetVersion", "v1", dsv["metadata"]["uid"])
            open_store(settings.store).put_json(key, {"digest": "a" * 64, "classes": ["c"]})
            emu.patch_status("Job", "v1-dataset-version", {"active": 1})
            status_when(emu, "DatasetVersion", "v1", "Running")
            emu.patch_status("Job", "v1-dataset-version", {
                "active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
            done = status_when(emu, "DatasetVersion", "v1", "Succeeded")
            assert done["digest"] == "a" * 64 and reasons(done)["Ready"] == ("True", "Succeeded")

            KubeEmulator.wait_for(lambda: emu.find("Job", "det-train"), timeout=40)
            emu.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "det-train-x", "namespace": "default", "labels": {"batch.kubernetes.io/job-name": "det-train"}},
                "spec": {"containers": [{"name": "step", "image": "trainer:t"}], "restartPolicy": "Never"}})
            emu.patch_status("Pod", "det-train-x", {"containerStatuses": [
                {"name": "step", "image": "trainer:t", "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]})
            emu.patch_status("Job", "det-train", {"conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
            failed = status_when(emu, "TrainingJob", "det", "Failed")
            assert reasons(failed)["Stalled"] == ("True", "OOMKilled") and "memory" in failed["message"]

            emu.patch("TrainingJob", "det", {"spec": {"hyperparameters": {"epochs": 3}}})
            KubeEmulator.wait_for(lambda: reasons(emu.get("TrainingJob", "det")["status"])["Stalled"][1]
                                  == "SpecChangeRefused", timeout=20)
            jobs = len(emu.list("Job"))
        registry2, _ = build(settings, login=lambda **_: connection_from_kubeconfig(kubeconfig))
        with KopfThread(registry2, emu.kubeconfig_path):
            time.sleep(3)  # resume handlers run on start; give them time to (not) act
            assert len(emu.list("Job")) == jobs == 2
        assert emu.denials() == []  # the chart's RBAC let the operator do all it did
        assert emu.rejected_writes() == []  # and every object and status it wrote was valid
        events = [e.get("reason") for e in emu.list("Event")]
        assert events.count("SpecChangeRefused") == 1 and "OOMKilled" in events and "Succeeded" in events

"""Smoke test of the operator core: the real Kopf handlers against the KMock emulator.

DatasetVersion end to end (Job, ConfigMap, result from the store, kstatus conditions), a
TrainingJob waiting for it, then its Job failing OOMKilled, a spec change that is a new run, and
an operator restart that creates nothing new. The full integration suite lives beside it.
"""

from __future__ import annotations

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


def jobs_of(emu: KubeEmulator, name: str) -> list[dict[str, Any]]:
    return emu.list("Job", "default", f"kubeforge.io/name={name}")


def reconciled(ctx: Any, kind: str) -> float:
    return ctx.metrics.registry.get_sample_value("kubeforge_reconciles_total", {"kind": kind}) or 0.0


def test_operator_core_smoke(tmp_path: Path) -> None:
    settings = OperatorSettings(store=str(tmp_path / "store"), s3_endpoint="", progress_interval_seconds=1)
    with KubeEmulator() as emu:
        emu.apply_crds(CRDS)
        kubeconfig = operator_kubeconfig(emu)  # the chart's ServiceAccount, under the chart's RBAC
        registry, _ = build(settings, login=lambda **_: connection_from_kubeconfig(kubeconfig))
        with KopfThread(registry, emu.kubeconfig_path):
            emu.create(TJ)
            emu.create(DSV)
            (job,) = KubeEmulator.wait_for(lambda: jobs_of(emu, "v1"), timeout=20)
            name = job["metadata"]["name"]
            run_id = job["metadata"]["annotations"]["kubeforge.io/run-id"]
            assert name == f"v1-dataset-version-{run_id[:8]}"
            assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
                "kubeforge", "step", "dataset-version"]
            assert emu.find("ConfigMap", name)
            waiting = status_when(emu, "TrainingJob", "det", "Waiting")
            assert reasons(waiting)["Ready"] == ("False", "WaitingForDatasetVersion")
            dsv = emu.get("DatasetVersion", "v1")
            assert "kubeforge.io/finalizer" in dsv["metadata"]["finalizers"]

            key = layout.run_result_key("default", "DatasetVersion", "v1", dsv["metadata"]["uid"], run_id)
            open_store(settings.store).put_json(key, {"digest": "a" * 64, "classes": ["c"]})
            emu.patch_status("Job", name, {"active": 1})
            status_when(emu, "DatasetVersion", "v1", "Running")
            emu.patch_status("Job", name, {
                "active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
            done = status_when(emu, "DatasetVersion", "v1", "Succeeded")
            assert done["digest"] == "a" * 64 and reasons(done)["Ready"] == ("True", "Succeeded")
            assert done["outputPrefix"] == f"datasets/shapes/{'a' * 64}" and done["runs"][0]["phase"] == "Succeeded"

            # The waiting TrainingJob starts as soon as its data succeeded (not on its next retry).
            (train,) = KubeEmulator.wait_for(lambda: jobs_of(emu, "det"), timeout=40)
            train_name = train["metadata"]["name"]
            emu.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": f"{train_name}-x", "namespace": "default",
                "labels": {"batch.kubernetes.io/job-name": train_name}},
                "spec": {"containers": [{"name": "step", "image": "trainer:t"}], "restartPolicy": "Never"}})
            emu.patch_status("Pod", f"{train_name}-x", {"containerStatuses": [
                {"name": "step", "image": "trainer:t", "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]})
            emu.patch_status("Job", train_name, {"conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
            failed = status_when(emu, "TrainingJob", "det", "Failed")
            assert reasons(failed)["Stalled"] == ("True", "OOMKilled") and "memory" in failed["message"]

            # A changed spec is a new run with its own Job; the failed one stays in the history.
            emu.patch("TrainingJob", "det", {"spec": {"hyperparameters": {"epochs": 3}}})
            retried = KubeEmulator.wait_for(lambda: len(jobs_of(emu, "det")) == 2 and jobs_of(emu, "det"), timeout=20)
            status = status_when(emu, "TrainingJob", "det", "Pending")
            assert [r["phase"] for r in status["runs"]] == ["Failed", "Pending"]
            assert [r["generation"] for r in status["runs"]] == [1, 2]
            assert status["runId"] != run_id and status["outputPrefix"].endswith(f"/runs/{status['runId']}")
            assert {j["metadata"]["name"] for j in retried} == {train_name, f"det-train-{status['runId'][:8]}"}
            jobs = len(emu.list("Job"))
        registry2, ctx2 = build(settings, login=lambda **_: connection_from_kubeconfig(kubeconfig))
        with KopfThread(registry2, emu.kubeconfig_path):
            # The restarted operator looked at both resources (its resume handlers ran) and made nothing new.
            KubeEmulator.wait_for(lambda: reconciled(ctx2, "TrainingJob") >= 1 and reconciled(ctx2, "DatasetVersion")
                                  >= 1, timeout=20)
            assert len(emu.list("Job")) == jobs == 3
            # Its phase gauges count what exists, though this process wrote none of those phases.
            gauge = ctx2.metrics.registry.get_sample_value
            assert gauge("kubeforge_resources", {"kind": "DatasetVersion", "phase": "Succeeded"}) == 1
        assert emu.denials() == []  # the chart's RBAC let the operator do all it did
        assert emu.rejected_writes() == []  # and every object and status it wrote was valid
        # Waiting for a reference is a state, not an error: no Error Events for it in `kubectl describe`.
        assert [e["message"] for e in emu.list("Event") if "failed temporarily" in e.get("message", "")] == []
        events = [e.get("reason") for e in emu.list("Event")]
        assert "OOMKilled" in events and "Succeeded" in events and events.count("JobCreated") >= 2

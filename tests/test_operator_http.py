"""The running operator's `/metrics` and `/healthz`, fetched over HTTP as Prometheus and the kubelet do.

Real: `kubeforge operator run` in its own process, started with the command, environment, probe
paths and metrics path that the Helm chart renders (only the two ports are free ones instead of
8080/8081, and the store is this test's SeaweedFS prefix); Kopf; SeaweedFS; the KMock-based
Kubernetes emulator over HTTP. Emulated: the Job controller and the step (the test patches the Job's
status and writes the step's result and progress.json to the store, as they would).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from kubeforge.api import KINDS
from kubeforge.store import layout
from kubeforge.testing.chart_rbac import operator_kubeconfig
from kubeforge.testing.kube_emulator import KubeEmulator, kopf_peering_crds
from kubeforge.testing.kube_operator import SECRET, ready_dataset_version, start_job, training_job, wait_job, wait_phase
from kubeforge.testing.operator_process import OperatorProcess

CHART = Path(__file__).resolve().parents[1] / "helm/kubeforge"


def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name="kubeforge", namespace="kubeforge")
    return [doc for path, text in manifests.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture
def chart_operator(kube_emulator: KubeEmulator, kube_namespace: str, s3_store: Any, seaweedfs: Any,
                   tmp_path: Path) -> Any:
    """The operator as the chart's Deployment runs it, watching this test's namespace."""
    objects = rendered({
        "minio": {"enabled": False}, "watchNamespaces": [kube_namespace],
        "store": {"url": s3_store.uri, "endpoint": seaweedfs.endpoint, "existingSecret": SECRET},
        "operator": {"progressIntervalSeconds": 0.5}, "metrics": {"serviceMonitor": {"enabled": True}},
    })
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probes = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    assert len(probes) == 1 and {container[p]["httpGet"]["port"] for p in ("livenessProbe", "readinessProbe")} == {
        "health"}
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    env = {e["name"]: e["value"] for e in container["env"]}
    # What envFrom the store Secret gives the pod.
    env |= {"AWS_ACCESS_KEY_ID": seaweedfs.access_key, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}
    for crd in kopf_peering_crds():
        if not kube_emulator.find("CustomResourceDefinition", crd["metadata"]["name"], None):
            kube_emulator.create(crd)
    for peering in (o for o in objects if o["kind"] in ("KopfPeering", "ClusterKopfPeering")):
        kube_emulator.create(peering)  # the chart's hook creates them
    op = OperatorProcess(operator_kubeconfig(kube_emulator), tmp_path, "chart", env, args=tuple(container["args"]),
                         healthz_path=probes.pop(), metrics_path=monitor["spec"]["endpoints"][0]["path"])
    with op:
        yield op


def test_metrics_and_healthz_of_a_running_operator(chart_operator: OperatorProcess, kube_emulator: KubeEmulator,
                                                    kube_namespace: str, s3_store: Any) -> None:
    op, emu, ns = chart_operator, kube_emulator, kube_namespace
    # /healthz is Kopf's liveness endpoint: a JSON object of probe results, 200 while Kopf runs.
    status, body = op.healthz()
    assert status == 200 and isinstance(json.loads(body), dict)

    before = op.metrics()
    assert before["kubeforge_reconciles"].type == "counter" and before["kubeforge_resources"].type == "gauge"
    for kind in KINDS:  # every kind's series exists from the start, at 0
        assert op.sample("kubeforge_reconciles_total", kind=kind) == 0
        assert op.sample("kubeforge_reconcile_errors_total", kind=kind) == 0
    emu.wait_for(lambda: op.sample("kubeforge_operator_active") == 1, timeout=30, message="the operator active")
    assert 1 <= (op.sample("kubeforge_operator_peering_priority") or 0)

    # Something to reconcile: a DatasetVersion to Succeeded, a TrainingJob to Running with progress.
    ready_dataset_version(emu, s3_store, "data", ns)
    tj = emu.create(training_job("train", ns, "data"))
    start_job(emu, wait_job(emu, ns, "train"))
    prefix = wait_phase(emu, "TrainingJob", "train", ns, "Running")["outputPrefix"]
    s3_store.put_json(f"{prefix}/{layout.PROGRESS}", {"epoch": 1, "epochs": 2, "metrics": {"loss": 0.5}})
    emu.wait_for(lambda: op.sample("kubeforge_training_epoch", namespace=ns, name="train") == 1,
                 timeout=30, message="the epoch gauge")

    assert op.sample("kubeforge_training_epochs", namespace=ns, name="train") == 2
    assert (op.sample("kubeforge_reconciles_total", kind="DatasetVersion") or 0) >= 1
    assert (op.sample("kubeforge_reconciles_total", kind="TrainingJob") or 0) >= 1
    for kind in KINDS:
        assert op.sample("kubeforge_reconcile_errors_total", kind=kind) == 0
    assert op.sample("kubeforge_resources", kind="DatasetVersion", phase="Succeeded") == 1
    assert op.sample("kubeforge_resources", kind="TrainingJob", phase="Running") == 1
    assert op.sample("kubeforge_resources", kind="TrainingJob", phase="Pending") == 0  # it moved on
    assert (op.sample("process_resident_memory_bytes") or 0) > 10 * 2**20
    assert time.time() - 600 < (op.sample("process_start_time_seconds") or 0) <= time.time()
    assert emu.get("TrainingJob", "train", ns)["metadata"]["uid"] == tj["metadata"]["uid"]

    # Kopf stopping (SIGTERM, as the kubelet does) takes /healthz with it: a probe would fail.
    op.stop()
    assert op.proc is not None and op.proc.returncode == 0, op.log()[-2000:]
    assert op.healthz()[0] == 0

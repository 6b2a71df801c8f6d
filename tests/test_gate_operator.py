"""Promotion gates through the operator, with real step processes, end to end.

Real: the Kopf operator (in a thread), the Kubernetes API as the KMock-based emulator over HTTP (CRD
schemas and CEL rules, the chart's RBAC), every step (`kubeforge step …` as a subprocess from the Job's
own command: two tiny classifiers trained for one epoch, the Benchmark step with its gate, the serve
step), SeaweedFS as the store, and the local `tritonserver` the pod runner starts for the Deployment.
Nothing is written into a status by the test: the gate's outcome is changed by patching the Benchmark's
spec, as a GitOps commit would.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubeforge.testing.kube_operator import GV, SECRET, condition, status_of

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.triton]


def synth(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "kubeforge.cli.main", "datasets", "synth", "shapes", "--task",
                    "classification", "--out", str(out), "--images", "8", "--size", "32", "--seed", "5"],
                   check=True, capture_output=True, timeout=120)


@pytest.fixture
def cluster(kubeforge_operator: Any, seaweedfs: Any, triton_backend_dir: Path, tmp_path: Path) -> Any:
    from kubeforge.store.s3 import S3Store
    from kubeforge.testing.fixtures import S3_TEST_BUCKET
    from kubeforge.testing.pod_runner import PodRunner

    op = kubeforge_operator(progress_interval_seconds=0.5)
    data = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}
    op["emu"].create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": SECRET, "namespace": op["ns"]},
                      "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    raw = tmp_path / "raw"
    synth(raw)
    prefix = f"raw-{uuid.uuid4().hex[:8]}/shapes-cls"
    store = S3Store(S3_TEST_BUCKET, prefix, endpoint=seaweedfs.endpoint, access_key=seaweedfs.access_key,
                    secret_key=seaweedfs.secret_key)
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        store.put_file(path.relative_to(raw).as_posix(), path)
    with PodRunner(op["emu"], op["ns"], tmp_path / "pods", triton_backend_dir=triton_backend_dir) as runner:
        yield {**op, "runner": runner, "source": f"s3://{S3_TEST_BUCKET}/{prefix}/"}
        assert not runner.errors, runner.errors


def manifests(ns: str, source: str) -> list[dict[str, Any]]:
    meta = {"namespace": ns}
    job = {"datasetVersion": "shapes-cls", "task": "classification", "split": {"trainPercent": 50, "seed": 1},
           "hyperparameters": {"epochs": 1, "batchSize": 8}, "export": ["onnx"], "benchmark": {"enabled": False}}
    return [
        {"apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": "shapes-cls", **meta},
         "spec": {"dataset": "shapes-cls", "source": {"uri": source, "format": "imagefolder"}}},
        {"apiVersion": GV, "kind": "TrainingJob", "metadata": {"name": "clf-a", **meta},
         "spec": {**job, "model": {"name": "resnet18", "imageSize": 32}}},
        {"apiVersion": GV, "kind": "TrainingJob", "metadata": {"name": "clf-b", **meta},
         "spec": {**job, "model": {"name": "mobilenet_v3_small", "imageSize": 32}}},
        {"apiVersion": GV, "kind": "Benchmark", "metadata": {"name": "cmp", **meta},
         "spec": {"models": [{"trainingJob": "clf-a"}, {"trainingJob": "clf-b"}],
                  "bootstrap": {"resamples": 200}, "gate": [{"metric": "accuracy", "min": 1.5}]}},
        {"apiVersion": GV, "kind": "InferenceService", "metadata": {"name": "clf", **meta},
         "spec": {"model": {"benchmark": "cmp", "pick": "best"}, "runtime": {"maxBatchSize": 4}}},
    ]


def events_of(emu: Any, ns: str, name: str) -> list[dict[str, Any]]:
    events = [e for e in emu.list("Event", ns) if (e.get("involvedObject") or {}).get("name") == name]
    return sorted(events, key=lambda e: e["metadata"]["creationTimestamp"])


def benchmark_run_done(emu: Any, ns: str, generation: int) -> Any:
    """The Benchmark's status once the run of `generation` succeeded (fails at once if it failed)."""
    def check() -> dict[str, Any] | None:
        status = status_of(emu, "Benchmark", "cmp", ns)
        if status.get("phase") == "Failed":
            raise AssertionError(f"Benchmark cmp failed: {status}")
        ok = status.get("phase") == "Succeeded" and status.get("observedGeneration") == generation
        return status if ok else None
    return emu.wait_for(check, timeout=300, interval=0.3, message=f"Benchmark cmp generation {generation}")


def serving(emu: Any, ns: str, job: str) -> dict[str, Any]:
    return emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "clf", ns)).get("ready") is True
                        and s.get("trainingJob") == job and condition(s, "Ready").get("reason") == "Serving" and s,
                        timeout=180, interval=0.3, message=f"InferenceService clf serving {job}")


def test_the_service_waits_for_the_gate_then_serves_and_rolls(cluster: dict[str, Any]) -> None:
    emu, ns = cluster["emu"], cluster["ns"]
    for doc in manifests(ns, cluster["source"]):
        emu.create(doc)

    # 1. The gate fails: GatePassed False with the numbers; the service waits with the reason.
    bench = benchmark_run_done(emu, ns, 1)
    acc = {m: bench["metrics"][m]["accuracy"] for m in ("clf-a", "clf-b")}
    gate = condition(bench, "GatePassed")
    assert (gate["status"], gate["reason"]) == ("False", "GateFailed")
    assert gate["message"] == "; ".join(f"{m} accuracy {acc[m]:.4g} < 1.5" for m in ("clf-a", "clf-b"))
    assert "promoted" not in bench
    svc = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "clf", ns)).get("phase") == "Waiting"
                       and gate["message"] in s.get("message", "") and s, timeout=60, interval=0.3,
                       message="InferenceService clf waiting for the gate")
    assert condition(svc, "Ready")["reason"] == "WaitingForPromotion"
    assert "Benchmark 'cmp' has no run whose gate passed" in svc["message"]
    assert emu.list("Deployment", ns) == []  # nothing served before a gate passed

    # 2. A commit lowers the bar: the best model is promoted and served.
    emu.patch("Benchmark", "cmp", {"spec": {"gate": [{"metric": "accuracy", "min": 0.0}]}}, ns)
    bench = benchmark_run_done(emu, ns, 2)
    winner = "clf-a" if acc["clf-a"] >= acc["clf-b"] else "clf-b"
    loser = "clf-b" if winner == "clf-a" else "clf-a"
    assert condition(bench, "GatePassed")["status"] == "True" and bench["promoted"]["trainingJob"] == winner
    job = status_of(emu, "TrainingJob", winner, ns)
    assert bench["promoted"]["run"] == job["runId"] and bench["promoted"]["experimentPrefix"] == job["outputPrefix"]
    svc = serving(emu, ns, winner)
    assert svc["trainingRun"] == job["runId"] and svc["experimentPrefix"] == job["outputPrefix"]
    assert f"serving {winner} (run {job['runId']}), the winner of Benchmark cmp" in svc["message"]

    # 3. A later commit makes the other model the winner: the service rolls to it, and says so.
    emu.patch("Benchmark", "cmp", {"spec": {"models": [{"trainingJob": loser}]}}, ns)
    bench = benchmark_run_done(emu, ns, 3)
    assert bench["promoted"]["trainingJob"] == loser
    other = status_of(emu, "TrainingJob", loser, ns)
    svc = serving(emu, ns, loser)
    assert svc["trainingRun"] == other["runId"]
    changed = [e for e in events_of(emu, ns, "clf") if e.get("reason") == "ServedRunChanged"]
    assert changed and changed[-1]["message"] == (
        f"Benchmark cmp promoted a new winner: serving TrainingJob {loser} run {other['runId']} instead of "
        f"TrainingJob {winner} run {job['runId']}")

    # 4. A later run whose gate fails keeps the promoted model; the service keeps serving it.
    emu.patch("Benchmark", "cmp", {"spec": {"gate": [{"metric": "accuracy", "min": 1.5}]}}, ns)
    bench = benchmark_run_done(emu, ns, 4)
    assert bench["promoted"]["trainingJob"] == loser and condition(bench, "GatePassed")["status"] == "False"
    svc = status_of(emu, "InferenceService", "clf", ns)
    assert svc["ready"] is True and svc["trainingJob"] == loser and svc["trainingRun"] == other["runId"]

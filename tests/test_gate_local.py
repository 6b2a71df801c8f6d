"""Promotion gates in local mode, end to end through `kubeforge run -f`: real training (two tiny
classifiers, one epoch), the real Benchmark step, the real serve step and a real local tritonserver.

The served model follows the Benchmark's gate: the service waits (WaitingForPromotion) while no run's
gate passed, serves the winner once one does, rolls when a later run promotes another model, and keeps
serving when a later run's gate fails. Also: examples/promotion is accepted by `kubeforge run -f`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubeforge.testing.cli import get_json, kubeforge
from kubeforge.testing.local_world import classifiers, local_world

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "promotion"

JOBS = classifiers(("clf-a", "resnet18"), ("clf-b", "mobilenet_v3_small"))

SERVICE = """
apiVersion: kubeforge.io/v1alpha1
kind: InferenceService
metadata: {name: clf}
spec:
  model: {benchmark: cmp, pick: best}
  runtime: {maxBatchSize: 4}
"""


def benchmark(models: list[str], gate: str) -> str:
    return f"""
apiVersion: kubeforge.io/v1alpha1
kind: Benchmark
metadata: {{name: cmp}}
spec:
  models: [{", ".join("{trainingJob: " + m + "}" for m in models)}]
  bootstrap: {{resamples: 200, seed: 0}}
  gate: {gate}
"""


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with local_world(tmp_path_factory.mktemp("gate-local"), images=8, stop="clf") as (work, env):
        (work / "jobs.yaml").write_text(JOBS)
        yield work, env


def apply(work: Path, env: dict[str, str], bench: str) -> str:
    (work / "bench.yaml").write_text(bench + "---" + SERVICE)
    proc = kubeforge("run", "-f", str(work / "jobs.yaml"), "-f", str(work / "bench.yaml"), env=env)
    return proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.triton
def test_the_service_follows_the_gate(world: Any) -> None:
    work, env = world
    # 1. A gate no model can pass: the Benchmark succeeds with GatePassed False; the service waits, exit 0.
    out = apply(work, env, benchmark(["clf-a", "clf-b"], "[{metric: accuracy, min: 1.5}]"))
    bench = get_json("benchmark", "cmp", env)["status"]
    assert bench["phase"] == "Succeeded", bench
    gate = condition(bench, "GatePassed")
    assert gate["status"] == "False" and gate["reason"] == "GateFailed"
    acc = {m: bench["metrics"][m]["accuracy"] for m in ("clf-a", "clf-b")}
    assert gate["message"] == "; ".join(f"{m} accuracy {acc[m]:.4g} < 1.5" for m in ("clf-a", "clf-b"))
    assert "promoted" not in bench and bench["gate"]["passed"] is False
    svc = get_json("inferenceservice", "clf", env)["status"]
    assert svc["phase"] == "Waiting" and condition(svc, "Ready")["reason"] == "WaitingForPromotion"
    assert "Benchmark 'cmp' has no run whose gate passed" in svc["message"]
    assert gate["message"] in svc["message"] and "url" not in svc
    assert "WaitingForPromotion" in out

    # 2. The gate passes: the best model is promoted and served.
    apply(work, env, benchmark(["clf-a", "clf-b"], "[{metric: accuracy, min: 0.0}]"))
    bench = get_json("benchmark", "cmp", env)["status"]
    winner = "clf-a" if acc["clf-a"] >= acc["clf-b"] else "clf-b"  # ties: the first in spec.models
    loser = "clf-b" if winner == "clf-a" else "clf-a"
    assert condition(bench, "GatePassed")["status"] == "True"
    assert bench["promoted"]["trainingJob"] == winner and bench["promoted"]["benchmarkRun"] == bench["runId"]
    job = get_json("trainingjob", winner, env)["status"]
    assert bench["promoted"]["run"] == job["runId"] and bench["promoted"]["experimentPrefix"] == job["outputPrefix"]
    svc = get_json("inferenceservice", "clf", env)["status"]
    assert svc["ready"] is True and svc["trainingJob"] == winner and svc["trainingRun"] == job["runId"]
    assert svc["experimentPrefix"] == job["outputPrefix"]

    # 3. A later run promotes another model (the Benchmark now compares the other one alone): the service rolls.
    out = apply(work, env, benchmark([loser], "[{metric: accuracy, min: 0.0}]"))
    other = get_json("trainingjob", loser, env)["status"]
    svc = get_json("inferenceservice", "clf", env)["status"]
    assert svc["ready"] is True and svc["trainingJob"] == loser and svc["trainingRun"] == other["runId"]
    assert (f"Benchmark cmp promoted a new winner: serving TrainingJob {loser} run {other['runId']} instead of "
            f"TrainingJob {winner} run {job['runId']}") in " ".join(out.split())

    # 4. A later run whose gate fails keeps the promoted model, and the service keeps serving it.
    promoted = get_json("benchmark", "cmp", env)["status"]["promoted"]
    out = apply(work, env, benchmark([winner, loser], "[{metric: accuracy, min: 1.5}]"))
    bench = get_json("benchmark", "cmp", env)["status"]
    assert bench["promoted"] == promoted and condition(bench, "GatePassed")["status"] == "False"
    assert f"still promoted: {loser}" in condition(bench, "GatePassed")["message"]
    svc = get_json("inferenceservice", "clf", env)["status"]
    assert svc["ready"] is True and svc["trainingJob"] == loser
    assert "InferenceService/clf: unchanged" in " ".join(out.split())


def test_the_promotion_example_is_accepted(tmp_path: Path) -> None:
    manifests = tmp_path / "promotion"
    shutil.copytree(EXAMPLE, manifests)
    env = {**os.environ, "KUBEFORGE_STATE_DIR": str(tmp_path / "state"), "KUBEFORGE_STORE": (tmp_path / "s").as_uri()}
    kubeforge("datasets", "synth", "shapes", "--task", "classification", "--out",
              str(manifests / "data" / "shapes-cls"), "--images", "2", "--size", "32", env=env)
    out = kubeforge("run", "-f", str(manifests), "--dry-run", env=env).stdout
    for name in ("DatasetVersion/shapes-cls", "TrainingJob/shapes-clf-v1", "TrainingJob/shapes-clf-v2",
                 "Benchmark/shapes-promotion", "InferenceService/shapes-clf"):
        assert name in out, out
    assert out.index("Benchmark/shapes-promotion") < out.index("InferenceService/shapes-clf")

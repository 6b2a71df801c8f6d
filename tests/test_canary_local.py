"""A canary in local mode, end to end through `kubeforge run -f`: two tiny classifiers (one epoch), the
real serve step and two real local tritonservers (the stable model and the canary on its own ports).

`kubeforge get` shows both models' request counts, read from each server's Prometheus metrics: they
go up with predictions sent to each server. Removing spec.canary (a rollback) stops the canary's server;
`kubeforge stop` stops both. Also: the metrics parser on Triton's text format (pure).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeforge.serving.triton_metrics import request_count, total_requests
from kubeforge.serving.triton_server import is_running
from kubeforge.testing.cli import get_json, kubeforge
from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.local_world import classifiers, local_world

JOBS = classifiers(("clf-a", "resnet18"), ("clf-b", "mobilenet_v3_small"))


def service(canary: bool) -> str:
    return """
apiVersion: kubeforge.io/v1alpha1
kind: InferenceService
metadata: {name: clf}
spec:
  model: {trainingJob: clf-a}
  runtime: {maxBatchSize: 4}
""" + ("  canary: {model: {trainingJob: clf-b}, trafficPercent: 10}\n" if canary else "")


TRITON_TEXT = """# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="clf",version="1"} 3
nv_inference_request_success{model="clf",version="2"} 4
nv_inference_request_success{model="other",version="1"} 9
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="clf",version="1"} 120
"""


def test_request_count_sums_the_models_versions_only() -> None:
    assert request_count(TRITON_TEXT, "clf") == 7 and request_count(TRITON_TEXT, "none") == 0
    assert total_requests(["http://127.0.0.1:9/metrics"], "clf", timeout=0.5) is None  # nothing answers


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    with local_world(tmp_path_factory.mktemp("canary-local"), images=8, stop="clf") as (work, env):
        (work / "jobs.yaml").write_text(JOBS)
        yield work, env


def apply(work: Path, env: dict[str, str], canary: bool) -> None:
    (work / "svc.yaml").write_text(service(canary))
    kubeforge("run", "-f", str(work / "jobs.yaml"), "-f", str(work / "svc.yaml"), env=env)


@pytest.mark.slow
@pytest.mark.triton
def test_local_canary_serves_both_models_and_counts_their_requests(world: tuple[Path, dict[str, str]]) -> None:
    work, env = world
    apply(work, env, canary=True)
    status = get_json("inferenceservice", "clf", env)["status"]
    canary = status["canary"]
    assert status["ready"] is True and status["trainingJob"] == "clf-a"
    assert canary["trainingJob"] == "clf-b" and canary["split"] == "local" and canary["ready"] is True
    assert canary["trainingRun"] == get_json("trainingjob", "clf-b", env)["status"]["runId"]
    assert canary["url"] != status["url"] and is_running(canary["pid"]) and canary["pid"] != status["pid"]
    assert canary["url"] in status["message"]
    assert (status["requests"], canary["requests"]) == (0, 0)  # Triton counts from its start

    image = next((work / "data").rglob("*.png"))
    kubeforge("predict", "clf", str(image), "--json", env=env)  # the stable server, found by name
    for _ in range(2):  # the canary, by its URL: locally nothing splits traffic, the client picks
        kubeforge("predict", "clf", str(image), "--json", "--url", canary["url"], env=env)

    def counts() -> tuple[int, int] | None:
        got = get_json("inferenceservice", "clf", env)["status"]
        pair = (got["requests"], got["canary"]["requests"])
        return pair if pair == (1, 2) else None
    # Triton counts a request when it completes; poll `kubeforge get` until both counts show.
    KubeClient.wait_for(counts, timeout=30, message="request counts (1, 2) in `kubeforge get`")
    table = kubeforge("get", "inferenceservice", "clf", "-o", "wide", env=env).stdout
    assert "clf-b" in table and "CANARYREQUESTS" in table.replace(" ", "").upper()

    # Roll back: spec.canary removed, the canary's server stops, the stable one serves on.
    apply(work, env, canary=False)
    after = get_json("inferenceservice", "clf", env)["status"]
    assert "canary" not in after and after["ready"] is True and after["trainingJob"] == "clf-a"
    KubeClient.wait_for(lambda: not is_running(canary["pid"]), message="the canary's tritonserver to exit")
    kubeforge("stop", "inferenceservice", "clf", env=env)
    KubeClient.wait_for(lambda: not is_running(after["pid"]), message="the stable tritonserver to exit")

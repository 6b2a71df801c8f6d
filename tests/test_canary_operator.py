"""Canary rollout and autoscaling through the real operator, in a cluster that has Gateway API and KEDA.

The emulator serves the vendored Gateway API (HTTPRoute, GRPCRoute) and KEDA CRDs (discovery included)
and admits HTTPRoutes, GRPCRoutes and ScaledObjects by their released schemas; the operator runs as the
Helm chart's ServiceAccount (its RBAC enforced) and the fixture fails the test on any refusal. Controllers
are played by the test (serve Jobs completed, Deployment status patched); Kopf, the operator and the S3
store are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.testing import rollout_crds as rc
from kubeforge.testing.kube_operator import GV, status_of
from kubeforge.testing.serving_operator import (
    TRITON,
    complete_serve_job,
    deployments_ready,
    model_hash,
    serve_jobs,
    trained,
    weights,
    with_canary,
)
from kubeforge.testing.triton_deployments import pod_of, running_status
from kubeforge.testing.triton_serving import served


@pytest.fixture(scope="module")
def kube_emulator(kube_emulator: Any) -> Iterator[Any]:
    rc.install(kube_emulator, rc.GATEWAY_API, rc.GATEWAY_API_GRPC, rc.KEDA)
    yield kube_emulator


@pytest.fixture
def op(kubeforge_operator: Any) -> dict[str, Any]:
    return kubeforge_operator(triton_image=TRITON, gateway="infra/public", grpc_route=True,
                              request_count_interval_seconds=0.2)








def test_canary_with_gateway_api_promote_and_rollback(op: dict[str, Any]) -> None:
    emu, ns = op["emu"], op["ns"]
    done: set[str] = set()
    with_canary(op, done, replicas=4)
    route = emu.wait_for(lambda: emu.find("HTTPRoute", "svc", ns), message="the HTTPRoute")
    assert weights(route) == [("svc", 90), ("svc-canary", 10)]
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    grpc = emu.wait_for(lambda: emu.find("GRPCRoute", "svc-grpc", ns), message="the GRPCRoute")
    assert weights(grpc) == [("svc", 90), ("svc-canary", 10)]
    assert {b["port"] for b in grpc["spec"]["rules"][0]["backendRefs"]} == {8001}
    assert grpc["spec"]["parentRefs"] == route["spec"]["parentRefs"]
    canary = emu.get("Deployment", "svc-canary", ns)
    stable = emu.get("Deployment", "svc", ns)
    assert canary["spec"]["replicas"] == 1 and stable["spec"]["replicas"] == 4
    assert emu.get("Service", "svc-canary", ns)["spec"]["selector"] == canary["spec"]["selector"]["matchLabels"]
    status = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("canary", {}).get("split")
                          and s, message="canary in status")
    assert status["canary"]["trainingJob"] == "new" and status["canary"]["split"] == "HTTPRoute"
    assert status["trainingJob"] == "old"
    old_run = emu.get("TrainingJob", "old", ns)["status"]["runId"]
    assert status["trainingRun"] == old_run
    stable_hash = model_hash(stable)
    deployments_ready(emu, ns, "svc", "svc-canary")
    emu.wait_for(lambda: "takes 10% (HTTPRoute, GRPCRoute)" in status_of(emu, "InferenceService", "svc", ns)
                 .get("message", ""), message="the status message names both routes")

    # Shift traffic: the route's weights follow, no new serve run, the stable pods are not rolled.
    emu.patch("InferenceService", "svc", {"spec": {"canary": {"trafficPercent": 50}}}, ns)
    for kind, name in (("HTTPRoute", "svc"), ("GRPCRoute", "svc-grpc")):
        emu.wait_for(lambda: weights(emu.get(kind, name, ns)) == [("svc", 50), ("svc-canary", 50)],  # noqa: B023
                     message=f"{kind} weights 50/50")
    assert emu.get("Deployment", "svc-canary", ns)["spec"]["replicas"] == 2
    assert len(serve_jobs(emu, ns)) == 1 and model_hash(emu.get("Deployment", "svc", ns)) == stable_hash

    # Promote: the canary's model becomes spec.model, the canary goes; the stable Deployment rolls to it.
    emu.patch("InferenceService", "svc", {"spec": {"model": {"trainingJob": "new"}, "canary": None}}, ns)
    emu.wait_for(lambda: emu.find("HTTPRoute", "svc", ns) is None and emu.find("Deployment", "svc-canary", ns) is None
                 and emu.find("Service", "svc-canary", ns) is None and emu.find("GRPCRoute", "svc-grpc", ns) is None,
                 message="canary objects deleted")
    complete_serve_job(op, done)
    emu.wait_for(lambda: model_hash(emu.get("Deployment", "svc", ns)) != stable_hash, message="stable rolled")
    promoted = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("trainingJob") == "new"
                            and s, message="serving the promoted model")
    assert "canary" not in promoted

    # A new canary, then a rollback: its objects go, the stable model stays and is not rolled.
    trained(op, "newer")
    emu.patch("InferenceService", "svc", {"spec": {"canary": {"model": {"trainingJob": "newer"},
                                                              "trafficPercent": 20}}}, ns)
    complete_serve_job(op, done)
    emu.wait_for(lambda: emu.find("HTTPRoute", "svc", ns) and emu.find("GRPCRoute", "svc-grpc", ns),
                 message="the second canary's routes")
    promoted_hash = model_hash(emu.get("Deployment", "svc", ns))
    emu.patch("InferenceService", "svc", {"spec": {"canary": None}}, ns)
    emu.wait_for(lambda: emu.find("HTTPRoute", "svc", ns) is None and emu.find("Deployment", "svc-canary", ns) is None
                 and emu.find("GRPCRoute", "svc-grpc", ns) is None, message="rolled back")
    # Back to the run built before the canary: nothing to build again.
    emu.wait_for(lambda: "canary" not in status_of(emu, "InferenceService", "svc", ns), message="canary status gone")
    assert model_hash(emu.get("Deployment", "svc", ns)) == promoted_hash


def test_no_grpc_route_unless_asked(kubeforge_operator: Any) -> None:
    """serving.grpcRoute off (the default): the cluster serves GRPCRoutes, the operator makes none."""
    op = kubeforge_operator(triton_image=TRITON, gateway="infra/public")
    emu, ns = op["emu"], op["ns"]
    with_canary(op, set(), replicas=2)
    emu.wait_for(lambda: emu.find("HTTPRoute", "svc", ns), message="the HTTPRoute")
    # The status is written after the routes are applied in the same reconcile: it proves the operator got there.
    status = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("canary", {}).get("split")
                          and s, message="canary in status")
    assert status["canary"]["split"] == "HTTPRoute"
    assert emu.find("GRPCRoute", "svc-grpc", ns) is None


def test_autoscaling_with_keda_creates_a_scaled_object_and_leaves_replicas_to_it(op: dict[str, Any]) -> None:
    emu, ns = op["emu"], op["ns"]
    trained(op, "m")
    emu.create({"apiVersion": GV, "kind": "InferenceService", "metadata": {"name": "svc", "namespace": ns},
                "spec": {"model": {"trainingJob": "m"}, "autoscaling": {
                    "minReplicas": 0, "maxReplicas": 4, "metric": "queueTime", "target": 2000}}})
    complete_serve_job(op, set())
    so = emu.wait_for(lambda: emu.find("ScaledObject", "svc", ns), message="the ScaledObject")
    assert so["spec"]["minReplicaCount"] == 0 and so["spec"]["maxReplicaCount"] == 4
    assert "nv_inference_queue_duration_us" in so["spec"]["triggers"][0]["metadata"]["query"]
    assert emu.find("HorizontalPodAutoscaler", "svc", ns) is None
    # KEDA scales the Deployment; a later reconcile must not put spec.replicas back.
    emu.patch("Deployment", "svc", {"spec": {"replicas": 3}}, ns)
    emu.patch("InferenceService", "svc", {"spec": {"autoscaling": {"maxReplicas": 6}}}, ns)
    emu.wait_for(lambda: emu.get("ScaledObject", "svc", ns)["spec"]["maxReplicaCount"] == 6, message="max 6")
    assert emu.get("Deployment", "svc", ns)["spec"]["replicas"] == 3
    assert status_of(emu, "InferenceService", "svc", ns)["autoscaler"] == "ScaledObject"
    # Autoscaling removed: the ScaledObject goes and the operator owns replicas again.
    emu.patch("InferenceService", "svc", {"spec": {"autoscaling": None, "replicas": 2}}, ns)
    emu.wait_for(lambda: emu.find("ScaledObject", "svc", ns) is None
                 and emu.get("Deployment", "svc", ns)["spec"]["replicas"] == 2, message="ScaledObject removed")


def running_pod(emu: Any, deployment: dict[str, Any], process: Any) -> None:
    """Play the ReplicaSet controller and the kubelet: a Running pod of `deployment` at 127.0.0.1 whose
    ports are a real local tritonserver's (the pod network cannot run here)."""
    emu.create(pod_of(deployment, process, f"{deployment['metadata']['name']}-p1"))
    emu.patch_status("Pod", f"{deployment['metadata']['name']}-p1",
                     running_status(deployment["spec"]["template"]["spec"]["containers"][0], process),
                     deployment["metadata"]["namespace"])


def infer(url: str, times: int) -> None:
    """`times` requests to the tiny classifier served as `svc` (a 32 px image each)."""
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    for _ in range(times):
        inp = httpclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        client.infer("svc", [inp])


def test_request_counts_of_both_tracks_come_from_their_pods_metrics(
        op: dict[str, Any], tiny_classifier: tuple[Path, Any], triton_backend_dir: Path, tmp_path: Path) -> None:
    emu, ns = op["emu"], op["ns"]
    with_canary(op, set(), replicas=2)
    stable = emu.wait_for(lambda: emu.find("Deployment", "svc", ns), message="the stable Deployment")
    canary = emu.wait_for(lambda: emu.find("Deployment", "svc-canary", ns), message="the canary Deployment")
    onnx, meta = tiny_classifier
    with ExitStack() as servers:
        # Two real tritonservers stand for the two tracks' pods, each serving the model as `svc`.
        one = servers.enter_context(served(tmp_path / "stable", onnx, meta, "svc", RuntimeSpec(), triton_backend_dir))
        two = servers.enter_context(served(tmp_path / "canary", onnx, meta, "svc", RuntimeSpec(), triton_backend_dir))
        running_pod(emu, stable, one)
        running_pod(emu, canary, two)
        for name, dep in (("svc", stable), ("svc-canary", canary)):
            n = dep["spec"]["replicas"]
            emu.patch_status("Deployment", name, {"observedGeneration": dep["metadata"]["generation"],
                                                  "replicas": n, "readyReplicas": n, "updatedReplicas": n}, ns)
        emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("requests") == 0
                     and s.get("canary", {}).get("requests") == 0, message="both counts 0 once Ready")
        infer(one.http_url, 3)
        infer(two.http_url, 1)
        status = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("requests") == 3
                              and s.get("canary", {}).get("requests") == 1 and s, message="3 stable, 1 canary")
        assert status["canary"]["trainingJob"] == "new" and status["ready"] is True
        # A pod that is not Running is not read: only the stable server counts for the stable track.
        emu.patch_status("Pod", "svc-canary-p1", {"phase": "Pending"}, ns)
        infer(one.http_url, 1)
        emu.wait_for(lambda: status_of(emu, "InferenceService", "svc", ns).get("requests") == 4, message="4 stable")
        assert status_of(emu, "InferenceService", "svc", ns)["canary"]["requests"] == 1

"""A cluster without Gateway API or KEDA, through the real operator: the canary splits traffic by replica
ratio behind one Service, autoscaling is an autoscaling/v2 HPA, scale to zero is refused in status.

The emulator serves neither Gateway API nor KEDA (discovery finds neither); the operator runs as the Helm
chart's ServiceAccount (its RBAC enforced) and the fixture fails the test on any refusal. Controllers are
played by the test (serve Jobs completed, Deployment status patched); Kopf, the operator and the S3 store
are real.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.testing.kube_operator import GV, status_of
from kubeforge.testing.serving_operator import TRITON, complete_serve_job, trained, with_canary


@pytest.fixture
def op(kubeforge_operator: Any) -> dict[str, Any]:
    return kubeforge_operator(triton_image=TRITON, gateway="infra/public")







def test_canary_by_replica_ratio_and_hpa(op: dict[str, Any]) -> None:
    emu, ns = op["emu"], op["ns"]
    done: set[str] = set()
    with_canary(op, done, replicas=4, percent=25, autoscaling={
        "minReplicas": 2, "maxReplicas": 8, "metric": "requestsPerSecond", "target": 40})
    canary = emu.wait_for(lambda: emu.find("Deployment", "svc-canary", ns), message="the canary Deployment")
    assert emu.find("Service", "svc-canary", ns) is None  # no route here: no canary backend Service
    service = emu.wait_for(lambda: (s := emu.get("Service", "svc", ns))["spec"]["selector"] == {
        "kubeforge.io/serves": "svc"} and s, message="the Service selects both tracks")
    stable = emu.get("Deployment", "svc", ns)
    for dep in (stable, canary):
        assert service["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    # minReplicas 2 split 25%: one canary, one stable replica (approximate: 50% of pods).
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (1, 1)
    hpa = emu.wait_for(lambda: emu.find("HorizontalPodAutoscaler", "svc", ns), message="the HPA")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_requests_per_second"
    status = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("canary", {}).get("split")
                          and s, message="canary status")
    assert status["canary"]["split"] == "replicas" and status["autoscaler"] == "HorizontalPodAutoscaler"

    # Rollback: the canary Deployment goes at once.
    emu.patch("InferenceService", "svc", {"spec": {"canary": None}}, ns)
    emu.wait_for(lambda: emu.find("Deployment", "svc-canary", ns) is None, message="canary deleted")
    complete_serve_job(op, done)
    emu.wait_for(lambda: emu.get("Service", "svc", ns)["spec"]["selector"].get("app.kubernetes.io/component")
                 == "triton", message="the Service selects the stable pods only again")


def test_scale_to_zero_without_keda_is_refused(op: dict[str, Any]) -> None:
    emu, ns = op["emu"], op["ns"]
    trained(op, "m")
    emu.create({"apiVersion": GV, "kind": "InferenceService", "metadata": {"name": "svc", "namespace": ns},
                "spec": {"model": {"trainingJob": "m"}, "autoscaling": {"minReplicas": 0, "maxReplicas": 3,
                                                                        "target": 10}}})
    complete_serve_job(op, set())
    failed = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("phase") == "Failed" and s,
                          message="Failed")
    assert "minReplicas 0 (scale to zero) needs KEDA" in failed["message"]
    assert emu.find("HorizontalPodAutoscaler", "svc", ns) is None

"""A cluster with Gateway API before v1.1 (HTTPRoutes served, GRPCRoutes not), through the real operator:
the canary's HTTP traffic is split by an HTTPRoute and the operator makes no GRPCRoute (gRPC reaches the
stable track only, as docs/serving.md says).

The emulator serves the vendored HTTPRoute CRD only (discovery finds no grpcroutes): a GRPCRoute the
operator tried to create would be answered 404, the reconcile would fail and the canary's status would
never be written. The operator runs as the Helm chart's ServiceAccount (its RBAC enforced) and the
fixture fails the test on any refusal; serve Jobs are completed by the test, Kopf and the operator are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubeforge.testing import rollout_crds as rc
from kubeforge.testing.kube_operator import status_of
from kubeforge.testing.serving_operator import TRITON, deployments_ready, weights, with_canary


@pytest.fixture(scope="module")
def kube_emulator(kube_emulator: Any) -> Iterator[Any]:
    rc.install(kube_emulator, rc.GATEWAY_API)
    yield kube_emulator


@pytest.fixture
def op(kubeforge_operator: Any) -> dict[str, Any]:
    return kubeforge_operator(triton_image=TRITON, gateway="infra/public", grpc_route=True)  # asked, not served


def test_canary_with_httproutes_but_no_grpcroutes(op: dict[str, Any]) -> None:
    emu, ns = op["emu"], op["ns"]
    with_canary(op, set(), replicas=2)
    route = emu.wait_for(lambda: emu.find("HTTPRoute", "svc", ns), message="the HTTPRoute")
    assert weights(route) == [("svc", 90), ("svc-canary", 10)]
    # The reconcile went through to the end (status written) without touching GRPCRoutes.
    status = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("canary", {}).get("split")
                          and s, message="canary in status")
    assert status["canary"]["split"] == "HTTPRoute"
    deployments_ready(emu, ns, "svc", "svc-canary")
    ready = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("ready") and s,
                         message="Ready")
    assert "takes 10% (HTTPRoute) " in ready["message"] + " ", ready["message"]

    # Rollback: the HTTPRoute and the canary go; no GRPCRoute delete stands in the way.
    emu.patch("InferenceService", "svc", {"spec": {"canary": None}}, ns)
    emu.wait_for(lambda: emu.find("HTTPRoute", "svc", ns) is None and emu.find("Deployment", "svc-canary", ns) is None
                 and "canary" not in status_of(emu, "InferenceService", "svc", ns), message="rolled back")

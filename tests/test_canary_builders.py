"""Pure builders of a canary rollout, validated against the released schemas: Gateway API's HTTPRoute
and GRPCRoute CRDs (v1.6.1, CEL rules included) and the Kubernetes 1.31 OpenAPI for Deployments and
Services."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.api import InferenceService
from kubeforge.operator import builders_rollout as br
from kubeforge.operator import builders_serving as bs
from kubeforge.operator.settings import OperatorSettings
from kubeforge.testing import core_schema
from kubeforge.testing import rollout_crds as rc

SETTINGS = OperatorSettings(store="s3://bucket/pre", s3_endpoint="http://seaweed:8333", gateway="infra/public")


def isvc(**spec: Any) -> InferenceService:
    return InferenceService.model_validate({
        "apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "shapes", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {"model": {"trainingJob": "det"}, "canary": {"model": {"trainingJob": "det2"}, "trafficPercent": 10},
                 **spec}})


def test_http_route_splits_by_weight_and_passes_the_gateway_api_schema() -> None:
    route = br.http_route(isvc(), SETTINGS, 10)
    assert rc.validate(rc.GATEWAY_API, route) == []
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"], b["port"]) for b in backends] == [("shapes", 90, 8000),
                                                                       ("shapes-canary", 10, 8000)]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "public", "namespace": "infra"}]
    assert route["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_the_vendored_schema_refuses_what_the_api_server_refuses() -> None:
    """The check can fail: a negative weight and an unknown field are refused by the released CRD."""
    route = br.http_route(isvc(), SETTINGS, 10)
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -5
    route["spec"]["rules"][0]["bogus"] = 1
    errors = rc.validate(rc.GATEWAY_API, route)
    assert any("weight" in e for e in errors) and any("bogus" in e for e in errors), errors


def test_grpc_route_splits_tritons_grpc_service_by_the_same_weights() -> None:
    route = br.grpc_route(isvc(), SETTINGS, 10)
    assert rc.validate(rc.GATEWAY_API_GRPC, route) == []
    assert (route["kind"], route["metadata"]["name"]) == ("GRPCRoute", "shapes-grpc")
    [rule] = route["spec"]["rules"]
    assert [(b["name"], b["weight"], b["port"]) for b in rule["backendRefs"]] == [("shapes", 90, 8001),
                                                                                ("shapes-canary", 10, 8001)]
    # Every method of Triton's service (ModelInfer, ModelStreamInfer, ModelMetadata, ...): no method named.
    assert rule["matches"] == [{"method": {"type": "Exact", "service": "inference.GRPCInferenceService"}}]
    assert route["spec"]["parentRefs"] == br.http_route(isvc(), SETTINGS, 10)["spec"]["parentRefs"]
    assert route["metadata"]["ownerReferences"][0]["uid"] == "u-1"


@pytest.mark.parametrize("percent", [0, 50, 100])
def test_grpc_route_weights_follow_the_percent_and_the_route_needs_no_gateway(percent: int) -> None:
    route = br.grpc_route(isvc(), OperatorSettings(store="s3://bucket/pre"), percent)
    assert rc.validate(rc.GATEWAY_API_GRPC, route) == []
    assert "parentRefs" not in route["spec"]  # no Gateway configured: attached by the cluster's admin
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100 - percent, percent]


def test_the_vendored_grpc_schema_refuses_what_the_api_server_refuses() -> None:
    """The check can fail: a method match type outside the CRD's enum (a gRPC match has no prefix
    form) and an unknown field are refused by the released CRD."""
    route = br.grpc_route(isvc(), SETTINGS, 10)
    route["spec"]["rules"][0]["matches"][0]["method"]["type"] = "Prefix"
    route["spec"]["rules"][0]["bogus"] = 1
    errors = rc.validate(rc.GATEWAY_API_GRPC, route)
    assert any("Prefix" in e for e in errors) and any("bogus" in e for e in errors), errors


def test_canary_deployment_reads_the_canary_repository_with_its_own_selector() -> None:
    res = isvc()
    dep = br.canary_deployment(res, SETTINGS, "runs/abc", 2)
    assert core_schema.check(dep, []) == ([], [])
    stable = bs.triton_deployment(res, SETTINGS, "runs/old")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-repository=s3://seaweed:8333/bucket/pre/serving/ml_shapes/canary/onnxruntime" in args
    assert "--load-model=shapes" in args  # the same model name: a client cannot tell the tracks apart
    assert dep["metadata"]["name"] == "shapes-canary" and dep["spec"]["replicas"] == 2
    # The stable Deployment's (immutable) selector must not match canary pods, and vice versa.
    stable_sel = stable["spec"]["selector"]["matchLabels"].items()
    canary_sel = dep["spec"]["selector"]["matchLabels"].items()
    assert not stable_sel <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert not canary_sel <= stable["spec"]["template"]["metadata"]["labels"].items()
    # ...while the replica-ratio Service's selector matches both.
    shared = br.shared_selector(res).items()
    assert shared <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert shared <= stable["spec"]["template"]["metadata"]["labels"].items()
    svc = br.canary_service(res)
    assert core_schema.check(svc, []) == ([], [])
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(("replicas", "percent", "expected"), [
    (1, 10, (1, 1)), (9, 10, (8, 1)), (10, 25, (7, 3)), (4, 0, (4, 0)), (4, 100, (0, 4)), (0, 50, (1, 1)),
])
def test_replica_split_approximates_the_share(replicas: int, percent: int, expected: tuple[int, int]) -> None:
    assert br.split_replicas(replicas, percent) == expected


def test_a_canary_names_one_training_job_run() -> None:
    with pytest.raises(ValueError, match=r"spec\.canary\.model"):
        isvc(canary={"model": {"benchmark": "b"}})
    with pytest.raises(ValueError, match=r"less than or equal to 100"):
        isvc(canary={"model": {"trainingJob": "x"}, "trafficPercent": 101})

"""Pure builders for rollouts of an InferenceService: the canary, its traffic split, the autoscaler.

Canary: a second Triton Deployment `<name>-canary` reads the canary repository
(`serving/<ns>_<name>/canary/onnxruntime`), serving the same model name, so a client cannot tell
which one answered. Its pods carry the component `triton-canary` (the stable Deployment's selector,
immutable, does not match them). Traffic is split:
- with Gateway API: an `HTTPRoute` `<name>` with two weighted backendRefs, the Services `<name>`
  (stable) and `<name>-canary`: exact per request; and, where the cluster also serves GRPCRoutes, a
  `GRPCRoute` `<name>-grpc` splitting gRPC calls by the same weights;
- without: the Service `<name>` selects the pods of both (by `kubeforge.io/serves`), and the canary's
  share is its share of the replicas: approximate (kube-proxy balances connections, not requests).

Autoscaling: a KEDA `ScaledObject` (a prometheus trigger on Triton's metrics) where KEDA is installed,
else an `autoscaling/v2` HorizontalPodAutoscaler on Pods metrics that the Prometheus adapter serves
(its rules: docs/serving.md). Both scale the stable Deployment; scale to zero needs KEDA.
"""

from __future__ import annotations

import math
from typing import Any

from kubeforge.api import InferenceService
from kubeforge.api.inference_service import AutoscalingSpec
from kubeforge.operator import builders_serving as bs
from kubeforge.operator.builders import _meta
from kubeforge.operator.settings import OperatorSettings

CANARY_COMPONENT = "triton-canary"
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
# Triton's gRPC API (the KServe v2 / Open Inference Protocol service: ModelInfer, ModelStreamInfer,
# ModelMetadata, ModelReady, ...).
TRITON_GRPC_SERVICE = "inference.GRPCInferenceService"
KEDA_GROUP, KEDA_VERSION = "keda.sh", "v1alpha1"

# Adapter metric names (HPA) and the PromQL behind each (KEDA); docs/serving.md lists the adapter rules.
HPA_METRICS = {"requestsPerSecond": "triton_requests_per_second", "queueTime": "triton_queue_time_us",
               "gpuUtilization": "triton_gpu_utilization_percent"}


class AutoscalingError(ValueError):
    """spec.autoscaling asks for what this cluster cannot do (scale to zero without KEDA)."""


def canary_name(isvc: InferenceService) -> str:
    return f"{isvc.name}-canary"


def canary_selector(isvc: InferenceService) -> dict[str, str]:
    return {**bs.selector(isvc), "app.kubernetes.io/component": CANARY_COMPONENT}


def split_replicas(replicas: int, percent: int) -> tuple[int, int]:
    """(stable, canary) replicas for the replica-ratio split: the canary's share of `replicas` rounded
    up (at least one while it takes any traffic), the stable keeps at least one unless it takes none."""
    if percent <= 0:
        return max(replicas, 1), 0
    if percent >= 100:
        return 0, max(replicas, 1)
    canary = max(1, math.ceil(replicas * percent / 100))
    return max(1, replicas - canary), canary


def routed_replicas(replicas: int, percent: int) -> int:
    """The canary's replicas behind an HTTPRoute: its share of the stable count, at least one (weight 0
    keeps one warm for a quick shift)."""
    return max(1, math.ceil(replicas * percent / 100))


def canary_deployment(isvc: InferenceService, settings: OperatorSettings, revision: str,
                      replicas: int) -> dict[str, Any]:
    """The canary's Triton Deployment: the stable one's pod, on the canary repository, its own labels."""
    stable = bs.triton_deployment(isvc, settings, revision, canary=True)
    name = canary_name(isvc)
    stable["metadata"] = _meta(isvc, name, CANARY_COMPONENT)
    spec = stable["spec"]
    spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": canary_selector(isvc)}
    spec["template"]["metadata"]["labels"] = {**stable["metadata"]["labels"], bs.LABEL_SERVES: isvc.name}
    return stable


def canary_service(isvc: InferenceService) -> dict[str, Any]:
    """`<name>-canary`: the canary's backend of the HTTPRoute (and its metrics for status)."""
    svc = bs.triton_service(isvc)
    svc["metadata"] = _meta(isvc, canary_name(isvc), CANARY_COMPONENT)
    svc["spec"]["selector"] = canary_selector(isvc)
    return svc


def shared_selector(isvc: InferenceService) -> dict[str, str]:
    """The Service `<name>`'s selector while the replica ratio splits traffic: both tracks' pods."""
    return {bs.LABEL_SERVES: isvc.name}


def gateway_parent(settings: OperatorSettings) -> list[dict[str, Any]]:
    if not settings.gateway:
        return []
    namespace, _, name = settings.gateway.rpartition("/")
    ref: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": name}
    if namespace:
        ref["namespace"] = namespace
    return [ref]


def http_route(isvc: InferenceService, settings: OperatorSettings, percent: int) -> dict[str, Any]:
    """HTTPRoute `<name>`: requests for the model (Open Inference Protocol paths) split by weight."""
    return _route(isvc, settings, "HTTPRoute", isvc.name, "route", [{
        "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{bs.model_name(isvc)}"}}],
        "backendRefs": _weighted_backends(isvc, bs.HTTP_PORT, percent),
    }])


def grpc_route_name(isvc: InferenceService) -> str:
    """`<name>-grpc`, not `<name>`: when an HTTPRoute and a GRPCRoute meet on one listener with
    overlapping hostnames, Gateway API accepts the older one, ties broken by `namespace/name`; the
    suffix makes that tie go to the HTTPRoute `<name>`, so a misconfigured Gateway loses gRPC, never
    HTTP. It also names what the route carries in `kubectl get grpcroutes`."""
    return f"{isvc.name}-grpc"


def _weighted_backends(isvc: InferenceService, port: int, percent: int) -> list[dict[str, Any]]:
    return [
        {"group": "", "kind": "Service", "name": isvc.name, "port": port, "weight": 100 - percent},
        {"group": "", "kind": "Service", "name": canary_name(isvc), "port": port, "weight": percent},
    ]


def _route(isvc: InferenceService, settings: OperatorSettings, kind: str, name: str, component: str,
           rules: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    parents = gateway_parent(settings)
    if parents:
        spec["parentRefs"] = parents
    return {"apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}", "kind": kind,
            "metadata": _meta(isvc, name, component), "spec": spec}


def grpc_route(isvc: InferenceService, settings: OperatorSettings, percent: int) -> dict[str, Any]:
    """GRPCRoute `<name>-grpc`: every call of Triton's gRPC service split by the HTTPRoute's weights.

    Per service, not per model: the model name travels inside the protobuf message (ModelInferRequest
    .model_name), which a GRPCRoute cannot match (only service, method and headers). So the route
    takes all of `inference.GRPCInferenceService` on the listeners it attaches to; two canaried
    services on one gRPC listener would claim the same calls (docs/serving.md, "Limits today")."""
    return _route(isvc, settings, "GRPCRoute", grpc_route_name(isvc), "grpc-route", [{
        "matches": [{"method": {"type": "Exact", "service": TRITON_GRPC_SERVICE}}],
        "backendRefs": _weighted_backends(isvc, bs.GRPC_PORT, percent),
    }])


def _selector_labels(isvc: InferenceService) -> str:
    return f'namespace="{isvc.namespace}",model="{bs.model_name(isvc)}"'


def promql(isvc: InferenceService, metric: str) -> str:
    """The PromQL KEDA evaluates for `metric` over the stable Deployment's Triton servers."""
    sel = _selector_labels(isvc)
    if metric == "requestsPerSecond":  # total; KEDA divides by replicas (AverageValue)
        return f"sum(rate(nv_inference_request_success{{{sel}}}[1m]))"
    if metric == "queueTime":  # mean microseconds a request waited in the queue, over the last minute
        return (f"sum(rate(nv_inference_queue_duration_us{{{sel}}}[1m])) / "
                f"clamp_min(sum(rate(nv_inference_request_success{{{sel}}}[1m])), 1)")
    if metric == "gpuUtilization":  # Triton reports 0..1 per GPU; the pods are the stable Deployment's
        return (f'avg(nv_gpu_utilization{{namespace="{isvc.namespace}",pod=~"{isvc.name}-[a-z0-9]+-[a-z0-9]+"}})'
                " * 100")
    raise ValueError(f"spec.autoscaling.metric {metric!r}: expected one of {sorted(HPA_METRICS)}")


def _target(value: float) -> str:
    return f"{value:g}"


def scaled_object(isvc: InferenceService, settings: OperatorSettings) -> dict[str, Any]:
    """KEDA ScaledObject `<name>` scaling the stable Deployment on Triton's Prometheus metrics."""
    auto = isvc.spec.autoscaling
    assert auto is not None
    # requests per second is a total KEDA averages over replicas; a queue time or a utilization is not.
    metric_type = "AverageValue" if auto.metric == "requestsPerSecond" else "Value"
    return {
        "apiVersion": f"{KEDA_GROUP}/{KEDA_VERSION}", "kind": "ScaledObject",
        "metadata": _meta(isvc, isvc.name, "autoscaler"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": isvc.name},
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [{
                "type": "prometheus",
                "metricType": metric_type,
                "metadata": {"serverAddress": settings.prometheus_url, "query": promql(isvc, auto.metric),
                             "threshold": _target(auto.target)},
            }],
        },
    }


def check_autoscaling(auto: AutoscalingSpec, keda: bool) -> None:
    """Refuse what an HPA cannot do: scale to zero needs KEDA (HPA's minReplicas is at least 1)."""
    if auto.min_replicas == 0 and not keda:
        raise AutoscalingError(
            "spec.autoscaling.minReplicas 0 (scale to zero) needs KEDA, and this cluster has no "
            f"{KEDA_GROUP}/{KEDA_VERSION} scaledobjects; install KEDA or set minReplicas >= 1")


def horizontal_pod_autoscaler(isvc: InferenceService) -> dict[str, Any]:
    """autoscaling/v2 HPA `<name>` on a Pods metric the Prometheus adapter serves (docs/serving.md)."""
    auto = isvc.spec.autoscaling
    assert auto is not None
    check_autoscaling(auto, keda=False)
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(isvc, isvc.name, "autoscaler"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": isvc.name},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": HPA_METRICS[auto.metric]},
                "target": {"type": "AverageValue", "averageValue": _target(auto.target)},
            }}],
        },
    }

"""Pure builders of autoscaling: KEDA's ScaledObject against the released CRD (v2.20.1), the
autoscaling/v2 HPA against the Kubernetes 1.31 OpenAPI; scale to zero only with KEDA."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.api import InferenceService
from kubeforge.operator import builders_rollout as br
from kubeforge.operator.settings import OperatorSettings
from kubeforge.testing import core_schema
from kubeforge.testing import rollout_crds as rc

SETTINGS = OperatorSettings(store="s3://bucket/pre", prometheus_url="http://prom.monitoring:9090")


def isvc(**auto: Any) -> InferenceService:
    return InferenceService.model_validate({
        "apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "shapes", "namespace": "ml", "uid": "u-1"},
        "spec": {"model": {"trainingJob": "det"}, "autoscaling": {"maxReplicas": 5, "target": 50, **auto}}})


@pytest.mark.parametrize("metric", ["requestsPerSecond", "queueTime", "gpuUtilization"])
def test_scaled_object_passes_the_keda_schema(metric: str) -> None:
    obj = br.scaled_object(isvc(metric=metric, minReplicas=0), SETTINGS)
    assert rc.validate(rc.KEDA, obj) == []
    trigger = obj["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["serverAddress"] == "http://prom.monitoring:9090"
    assert trigger["metadata"]["threshold"] == "50"
    assert obj["spec"]["minReplicaCount"] == 0 and obj["spec"]["maxReplicaCount"] == 5
    assert obj["spec"]["scaleTargetRef"]["name"] == "shapes"
    metric_name = {"requestsPerSecond": "nv_inference_request_success", "queueTime": "nv_inference_queue_duration_us",
                   "gpuUtilization": "nv_gpu_utilization"}[metric]
    assert metric_name in trigger["metadata"]["query"] and 'namespace="ml"' in trigger["metadata"]["query"]
    assert trigger["metricType"] == ("AverageValue" if metric == "requestsPerSecond" else "Value")


def test_the_keda_schema_refuses_a_bad_scaled_object() -> None:
    obj = br.scaled_object(isvc(), SETTINGS)
    obj["spec"]["triggers"] = []
    obj["spec"]["minReplicaCount"] = -1
    errors = rc.validate(rc.KEDA, obj)
    assert any("triggers" in e for e in errors) and any("minReplicaCount" in e for e in errors), errors


@pytest.mark.parametrize(("metric", "name"), list(br.HPA_METRICS.items()))
def test_hpa_passes_the_kubernetes_schema(metric: str, name: str) -> None:
    hpa = br.horizontal_pod_autoscaler(isvc(metric=metric, minReplicas=2, target=30))
    assert core_schema.check(hpa, []) == ([], [])
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    target = {"type": "AverageValue", "averageValue": "30"}
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {"metric": {"name": name}, "target": target}}]
    broken = {**hpa, "spec": {**hpa["spec"], "metrics": [{"type": "Pods"}], "maxReplicas": "five"}}
    invalid, decode = core_schema.check(broken, [])
    assert invalid or decode


def test_scale_to_zero_needs_keda() -> None:
    with pytest.raises(br.AutoscalingError, match=r"minReplicas 0 .*needs KEDA"):
        br.horizontal_pod_autoscaler(isvc(minReplicas=0))
    br.check_autoscaling(isvc(minReplicas=0).spec.autoscaling, keda=True)  # type: ignore[arg-type]


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="minReplicas 6 exceeds maxReplicas 5"):
        isvc(minReplicas=6)
    with pytest.raises(ValueError, match="percentage"):
        isvc(metric="gpuUtilization", target=150)

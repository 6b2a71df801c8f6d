"""An InferenceService's request counts in a cluster: Triton's metrics of every running pod of each track.

The operator lists the pods of the stable and the canary Deployment (by their selectors; pods get/list is
already in the chart's RBAC), reads `http://<podIP>:<metrics port>/metrics` of each running one, and
writes the sums into `status.requests` and `status.canary.requests` (kubectl's `-o wide` columns). The
counts are Triton's since each server started: a pod replaced starts again from zero, so a count is a
figure to watch, not an account (Prometheus' `increase()` is that; docs/serving.md).

The write carries the resourceVersion it read: a reconcile that changed the status in between (a
canary removed) wins, and the next tick counts again.
"""

from __future__ import annotations

import logging
from typing import Any

from kubeforge import GROUP_VERSION
from kubeforge.api import InferenceService
from kubeforge.operator import builders_rollout as br
from kubeforge.operator import builders_serving as bs
from kubeforge.operator.kube import KubeError
from kubeforge.operator.reconcile import Context, resource_of
from kubeforge.serving.triton_metrics import total_requests


def metrics_urls(pods: list[dict[str, Any]]) -> list[str]:
    """The metrics endpoint of each running pod that has an IP (the container port named `metrics`)."""
    urls = []
    for pod in pods:
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if status.get("phase") != "Running" or not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        port = bs.METRICS_PORT
        for container in (pod.get("spec") or {}).get("containers") or []:
            for p in container.get("ports") or []:
                if p.get("name") == "metrics" and p.get("containerPort"):
                    port = int(p["containerPort"])
        host = f"[{ip}]" if ":" in ip else ip
        urls.append(f"http://{host}:{port}/metrics")
    return urls


def refresh_request_counts(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> bool:
    """Count each track's requests and patch them into status when they changed; True when it wrote."""
    meta = body["metadata"]
    current = ctx.kube.get(GROUP_VERSION, "InferenceService", meta["namespace"], meta["name"])
    if current is None:
        return False
    res = resource_of(current)
    status = current.get("status") or {}
    model = status.get("modelName")
    if not isinstance(res, InferenceService) or not model or not status.get("ready"):
        return False
    ns = meta["namespace"]
    patch: dict[str, Any] = {}
    stable = total_requests(metrics_urls(ctx.kube.list("v1", "Pod", ns, bs.selector(res))), model)
    if stable is not None and stable != status.get("requests"):
        patch["requests"] = stable
    canary = status.get("canary")
    if canary:
        count = total_requests(metrics_urls(ctx.kube.list("v1", "Pod", ns, br.canary_selector(res))), model)
        if count is not None and count != canary.get("requests"):
            patch["canary"] = {"requests": count}
    if not patch:
        return False
    try:
        ctx.kube.patch(GROUP_VERSION, "InferenceService", ns, meta["name"],
                       {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "status": patch},
                       "status")
    except KubeError as exc:
        if exc.status != 409:
            raise
        logger.debug("request counts of %s/%s: the status changed meanwhile; counted again next time",
                     ns, meta["name"])
        return False
    return True

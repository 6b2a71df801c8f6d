"""Reconciling an InferenceService: serve Job -> Triton Deployment + Service -> status.url/ready.

A serve run builds the model repository of one TrainingJob run: the pinned `spec.model.run`, or the
TrainingJob's latest successful run (followed: when it retrains and succeeds, the operator
reconciles this service again, a new serve run rebuilds the repository and the Deployment rolls).
Each serve run has its own Job; the older serve Jobs are deleted. The pod template carries the serve
run's id, so a new run rolls the Deployment; a replica change patches it in place.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kubeforge.api import InferenceService, InferenceServiceStatus
from kubeforge.api.common import Phase, StatusBase
from kubeforge.core import status as cs
from kubeforge.core.resolve import Waiting, build_run
from kubeforge.operator import builders as b
from kubeforge.operator import builders_rollout as br
from kubeforge.operator import builders_serving as bs
from kubeforge.operator import status as st
from kubeforge.operator.builders import canonical_hash
from kubeforge.operator.reconcile import (
    Context,
    _parse,
    _status,
    _wait,
    job_gone,
    start_run,
    sync_from_job,
    write_status,
)


def reconcile_serving(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> None:
    res = _parse(ctx, body, logger)
    assert isinstance(res, InferenceService)
    status = _status(res, body)
    if res.spec.canary is None and delete_canary(ctx, res):  # a rollback takes effect now, not after a serve run
        kopf.event(body, type="Normal", reason="CanaryRemoved",
                   message=f"canary of {res.name} removed: its Deployment and route are deleted")
    try:
        run = build_run(res, ctx.lookup(), ctx.settings.store)
    except Waiting as waiting:
        current = status.find_run(status.run_id) if status.run_id else None
        if current is not None and current.phase == "Succeeded" and current.generation == res.metadata.generation:
            ensure_serving(ctx, body, res, current.id, logger)  # keep serving what was built
            return
        _wait(ctx, body, res, waiting, logger)
        return
    if status.run_id != run.run_id:
        before = status.training_run if isinstance(status, InferenceServiceStatus) else None
        before_job = status.training_job if isinstance(status, InferenceServiceStatus) else None
        notice = cs.served_run_notice(res, before, start_run(ctx, body, res, run, logger), before_job)
        if notice:
            kopf.event(body, type="Normal", reason="ServedRunChanged", message=notice)
        _delete_stale_serve_jobs(ctx, res, keep=b.step_job_name(res, run))
        return
    assert run.run_id
    if not _built(status, run.run_id):
        job = ctx.kube.get("batch/v1", "Job", res.namespace, b.step_job_name(res, run))
        if job is None:
            job_gone(ctx, body, res, run.run_id, logger)
        else:
            sync_from_job(ctx, body, res, job, logger)
        if not _built(_status(res, body), run.run_id):
            return
    ensure_serving(ctx, body, res, run.run_id, logger)


def _built(status: StatusBase, run_id: str) -> bool:
    """Whether the serve run `run_id` built its repository (then the Deployment may serve it)."""
    record = status.find_run(run_id)
    return record is not None and record.phase == "Succeeded"


def _delete_stale_serve_jobs(ctx: Context, res: InferenceService, keep: str) -> None:
    for job in ctx.kube.list("batch/v1", "Job", res.namespace,
                             {b.LABEL_KIND: res.kind, b.LABEL_NAME: res.name, b.LABEL_COMPONENT: "serve"}):
        if job["metadata"]["name"] != keep:
            ctx.kube.delete("batch/v1", "Job", res.namespace, job["metadata"]["name"])


def stable_revision(status: InferenceServiceStatus, revision: str) -> str:
    """What the stable Deployment serves: its TrainingJob run(s), not the serve run's id (a canary added or
    removed is a new serve run, and must not roll the stable pods)."""
    if not status.experiment_prefix:
        return revision
    versions = [v.experiment_prefix for v in status.versions or []]
    return canonical_hash({"experiment": status.experiment_prefix, "versions": versions})


def _apply_deployment(ctx: Context, body: dict[str, Any], desired: dict[str, Any], own_replicas: bool,
                      ) -> dict[str, Any]:
    """Create the Deployment, or patch its template (a new model rolls it) and replicas (unless autoscaled)."""
    existing, created = ctx.kube.create(desired)
    if created:
        return existing
    meta, spec = desired["metadata"], existing.get("spec") or {}
    old_hash = ((spec.get("template") or {}).get("metadata") or {}).get("annotations", {}).get(
        bs.ANNOTATION_MODEL_HASH)
    new_hash = desired["spec"]["template"]["metadata"]["annotations"][bs.ANNOTATION_MODEL_HASH]
    old_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    labels_missing = not desired["spec"]["template"]["metadata"]["labels"].items() <= old_labels.items()
    replicas_differ = own_replicas and spec.get("replicas") != desired["spec"]["replicas"]
    if old_hash != new_hash or replicas_differ or labels_missing:
        existing = ctx.kube.patch("apps/v1", "Deployment", meta["namespace"], meta["name"],
                                  bs.patch_of(desired, replicas=own_replicas))
        kopf.event(body, type="Normal", reason="DeploymentUpdated",
                   message=f"Deployment {meta['name']} patched (model or replicas)")
    return existing


def _apply_object(ctx: Context, desired: dict[str, Any]) -> None:
    """Create `desired`, or merge-patch its spec when it differs (a route's weights, an autoscaler's bounds)."""
    existing, created = ctx.kube.create(desired)
    if not created and existing.get("spec") != desired["spec"]:
        meta = desired["metadata"]
        ctx.kube.patch(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"],
                       {"spec": desired["spec"]})


def _deployment_ready(dep: dict[str, Any] | None, replicas: int) -> tuple[bool, int]:
    if dep is None:
        return False, 0
    dep_status = dep.get("status") or {}
    observed_ok = (dep_status.get("observedGeneration") or 0) >= (dep["metadata"].get("generation") or 0)
    ready_replicas = dep_status.get("readyReplicas") or 0
    updated = dep_status.get("updatedReplicas") or 0
    return replicas > 0 and observed_ok and ready_replicas >= replicas and updated >= replicas, ready_replicas


def delete_canary(ctx: Context, res: InferenceService) -> bool:
    """Remove the canary's Deployment, Service and route (rollback or promotion); True when any existed."""
    ns = res.namespace
    gone = [ctx.kube.delete("apps/v1", "Deployment", ns, br.canary_name(res)),
            ctx.kube.delete("v1", "Service", ns, br.canary_name(res))]
    gateway_api = f"{br.GATEWAY_GROUP}/{br.GATEWAY_VERSION}"
    if ctx.kube.serves(br.GATEWAY_GROUP, br.GATEWAY_VERSION, "httproutes"):
        gone.append(ctx.kube.delete(gateway_api, "HTTPRoute", ns, res.name))
    if ctx.kube.serves(br.GATEWAY_GROUP, br.GATEWAY_VERSION, "grpcroutes"):
        gone.append(ctx.kube.delete(gateway_api, "GRPCRoute", ns, br.grpc_route_name(res)))
    return any(gone)


def _ensure_autoscaler(ctx: Context, res: InferenceService, keda: bool) -> str | None:
    """The ScaledObject (KEDA) or HPA for spec.autoscaling, the other one (and both without it) removed."""
    ns, auto = res.namespace, res.spec.autoscaling
    keda_api = f"{br.KEDA_GROUP}/{br.KEDA_VERSION}"
    if auto is None or not keda:
        if keda:
            ctx.kube.delete(keda_api, "ScaledObject", ns, res.name)
    if auto is None or keda:
        ctx.kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", ns, res.name)
    if auto is None:
        return None
    try:
        br.check_autoscaling(auto, keda)
    except br.AutoscalingError as exc:
        raise kopf.PermanentError(str(exc)) from None
    if keda:
        _apply_object(ctx, br.scaled_object(res, ctx.settings))
        return "ScaledObject"
    _apply_object(ctx, br.horizontal_pod_autoscaler(res))
    return "HorizontalPodAutoscaler"


def ensure_serving(ctx: Context, body: dict[str, Any], res: InferenceService, revision: str,
                   logger: logging.Logger) -> None:
    """Create or patch the Deployments, Services, route and autoscaler; report url and readiness."""
    status = _status(res, body)
    assert isinstance(status, InferenceServiceStatus)
    ns = res.namespace
    gateway = ctx.kube.serves(br.GATEWAY_GROUP, br.GATEWAY_VERSION, "httproutes")
    # gRPC is split only beside an HTTPRoute: its backend `<name>-canary` exists only in that mode (with
    # the replica ratio the one Service already spreads gRPC connections over both tracks' pods); and only
    # when asked (serving.grpcRoute): the route claims Triton's whole gRPC service on its listeners.
    grpc_route = gateway and ctx.settings.grpc_route and \
        ctx.kube.serves(br.GATEWAY_GROUP, br.GATEWAY_VERSION, "grpcroutes")
    keda = ctx.kube.serves(br.KEDA_GROUP, br.KEDA_VERSION, "scaledobjects")
    try:
        autoscaler = _ensure_autoscaler(ctx, res, keda)
    except kopf.PermanentError as exc:
        cs.fail(status, st.INVALID_SPEC, str(exc), res.metadata.generation)
        write_status(ctx, body, status, logger)
        raise
    auto = res.spec.autoscaling
    canary = res.spec.canary if status.canary is not None and status.canary.experiment_prefix else None
    percent = canary.traffic_percent if canary else 0
    replicas = max(auto.min_replicas, 1) if auto else res.spec.replicas
    stable_n, canary_n = (replicas, br.routed_replicas(replicas, percent)) if gateway else \
        br.split_replicas(replicas, percent)
    if canary is None:
        stable_n = replicas

    desired = bs.triton_deployment(res, ctx.settings, stable_revision(status, revision))
    desired["spec"]["replicas"] = stable_n
    # An autoscaler owns the stable replicas: the operator sets them only when it creates the Deployment,
    # never fights it. With a replica-ratio canary the split is then made on minReplicas and the canary's
    # share shrinks as the stable track scales out (approximate, docs/serving.md).
    existing = _apply_deployment(ctx, body, desired, own_replicas=auto is None)
    service = bs.triton_service(res)
    if canary is not None and not gateway:
        service["spec"]["selector"] = br.shared_selector(res)
    _apply_object(ctx, service)

    if canary is None:
        if delete_canary(ctx, res):
            kopf.event(body, type="Normal", reason="CanaryRemoved",
                       message=f"canary of {res.name} removed: its Deployment and route are deleted")
    else:
        assert status.canary is not None
        canary_dep = br.canary_deployment(res, ctx.settings, status.canary.experiment_prefix or "", canary_n)
        dep = _apply_deployment(ctx, body, canary_dep, own_replicas=True)
        if gateway:
            _apply_object(ctx, br.canary_service(res))
            _apply_object(ctx, br.http_route(res, ctx.settings, percent))
            if grpc_route:
                _apply_object(ctx, br.grpc_route(res, ctx.settings, percent))
        else:
            ctx.kube.delete("v1", "Service", ns, br.canary_name(res))
        status.canary.ready = _deployment_ready(dep, canary_n)[0] if canary_n else True
        status.canary.replicas, status.canary.traffic_percent = canary_n, percent
        status.canary.split = "HTTPRoute" if gateway else "replicas"
        status.canary.model_name = bs.model_name(res)

    target = stable_n if not auto else max((existing.get("spec") or {}).get("replicas") or 0, 1)
    ready, ready_replicas = _deployment_ready(existing, target)
    if res.spec.replicas == 0 and auto is None:
        ready = False
    status.autoscaler = autoscaler
    status.url, status.grpc_url, status.ready = bs.service_url(res), bs.grpc_url(res), ready
    status.model_name, status.repository_uri = bs.model_name(res), bs.repository_uri(res, ctx.settings)
    reason = cs.SERVING if ready else st.DEPLOYMENT_PROGRESSING
    job = status.training_job or res.spec.model.training_job
    served = f"{job} (run {status.training_run})" if status.training_run else job
    if res.spec.model.benchmark is not None:
        served += f", the winner of Benchmark {res.spec.model.benchmark}"
    if status.canary is not None and canary is not None:
        served += (f"; canary {status.canary.training_job} (run {status.canary.training_run}) takes "
                   f"{percent}% ({status.canary.split}{', GRPCRoute' if grpc_route else ''})")
    message = (f"serving {served} at {status.url}" if ready else
               f"Deployment {res.name}: {ready_replicas}/{target} replicas ready")
    cs.set_phase(status, Phase.RUNNING, reason, message, res.metadata.generation, ready=ready)
    write_status(ctx, body, status, logger)

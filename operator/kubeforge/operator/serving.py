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
from kubeforge.operator import builders_serving as bs
from kubeforge.operator import status as st
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


def ensure_serving(ctx: Context, body: dict[str, Any], res: InferenceService, revision: str,
                   logger: logging.Logger) -> None:
    """Create or patch the Deployment and Service; report url and readiness."""
    desired = bs.triton_deployment(res, ctx.settings, revision)
    existing, created = ctx.kube.create(desired)
    if not created:
        spec = existing.get("spec") or {}
        old_hash = ((spec.get("template") or {}).get("metadata") or {}).get("annotations", {}).get(
            bs.ANNOTATION_MODEL_HASH)
        if spec.get("replicas") != res.spec.replicas or old_hash != bs.model_hash(res, ctx.settings, revision):
            existing = ctx.kube.patch("apps/v1", "Deployment", res.namespace, res.name,
                                      bs.deployment_patch(res, ctx.settings, revision))
            kopf.event(body, type="Normal", reason="DeploymentUpdated",
                       message=f"Deployment {res.name} patched (model or replicas)")
    ctx.kube.create(bs.triton_service(res))
    dep_status = existing.get("status") or {}
    observed_ok = (dep_status.get("observedGeneration") or 0) >= (existing["metadata"].get("generation") or 0)
    ready_replicas = dep_status.get("readyReplicas") or 0
    updated = dep_status.get("updatedReplicas") or 0
    ready = observed_ok and ready_replicas >= max(res.spec.replicas, 1) and updated >= res.spec.replicas
    if res.spec.replicas == 0:
        ready = False
    status = _status(res, body)
    assert isinstance(status, InferenceServiceStatus)
    status.url, status.grpc_url, status.ready = bs.service_url(res), bs.grpc_url(res), ready
    status.model_name, status.repository_uri = bs.model_name(res), bs.repository_uri(res, ctx.settings)
    reason = cs.SERVING if ready else st.DEPLOYMENT_PROGRESSING
    job = status.training_job or res.spec.model.training_job
    served = f"{job} (run {status.training_run})" if status.training_run else job
    if res.spec.model.benchmark is not None:
        served += f", the winner of Benchmark {res.spec.model.benchmark}"
    message = (f"serving {served} at {status.url}" if ready else
               f"Deployment {res.name}: {ready_replicas}/{res.spec.replicas} replicas ready")
    cs.set_phase(status, Phase.RUNNING, reason, message, res.metadata.generation, ready=ready)
    write_status(ctx, body, status, logger)

"""Reconciling an InferenceService: serve Job -> Triton Deployment + Service -> status.url/ready.

A new served model (or runtime) is a new serve run with its own Job name; the older serve Jobs
are deleted, and the Deployment's pod template hash changes, which rolls it. A replica change
patches the Deployment in place.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kubeforge.api import InferenceService
from kubeforge.api.common import Phase
from kubeforge.operator import builders as b
from kubeforge.operator import builders_serving as bs
from kubeforge.operator import status as st
from kubeforge.operator.reconcile import Context, Waiting, _create_all, _wait, sync_from_job, write_status
from kubeforge.operator.refs import build_run, model_of


def reconcile_serving(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> None:
    res = model_of(body)
    assert isinstance(res, InferenceService)
    try:
        run = build_run(res, ctx.get, ctx.settings.store)
    except Waiting as waiting:
        _wait(ctx, body, waiting, logger)
    name = b.step_job_name(res, run)
    job = ctx.kube.get("batch/v1", "Job", res.namespace, name)
    status = body.get("status") or {}
    if job is None:
        _create_all(ctx, b.step_objects(res, run, ctx.settings))
        _delete_stale_serve_jobs(ctx, res, keep=name)
        write_status(ctx, body, st.status_patch(status, Phase.PENDING, st.JOB_CREATED, f"created Job {name}",
                                                res.metadata.generation, {"outputPrefix": run.output_prefix,
                                                                          "ready": False}), logger)
        return
    outcome = st.job_outcome(job)
    if outcome.phase != Phase.SUCCEEDED:
        sync_from_job(ctx, body, res, job, logger)
        return
    ensure_serving(ctx, body, res, revision=job["metadata"]["annotations"].get(b.ANNOTATION_RUN_HASH, ""),
                   logger=logger)


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
            kopf.info(body, reason="DeploymentUpdated", message=f"Deployment {res.name} patched (model or replicas)")
    ctx.kube.create(bs.triton_service(res))
    dep_status = existing.get("status") or {}
    observed_ok = (dep_status.get("observedGeneration") or 0) >= (existing["metadata"].get("generation") or 0)
    ready_replicas = dep_status.get("readyReplicas") or 0
    updated = dep_status.get("updatedReplicas") or 0
    ready = observed_ok and ready_replicas >= max(res.spec.replicas, 1) and updated >= res.spec.replicas
    if res.spec.replicas == 0:
        ready = False
    status = body.get("status") or {}
    extra = {"url": bs.service_url(res), "grpcUrl": bs.grpc_url(res), "ready": ready,
             "modelName": bs.model_name(res), "repositoryUri": bs.repository_uri(res, ctx.settings)}
    reason = st.SERVING if ready else st.DEPLOYMENT_PROGRESSING
    message = (f"serving {res.spec.model.training_job} at {extra['url']}" if ready else
               f"Deployment {res.name}: {ready_replicas}/{res.spec.replicas} replicas ready")
    patch = st.status_patch(status, Phase.RUNNING, reason, message, res.metadata.generation, extra,
                            ready=ready)
    unchanged = all(status.get(k) == v for k, v in extra.items()) and status.get("phase") == Phase.RUNNING and \
        status.get("observedGeneration") == res.metadata.generation and status.get("message") == message
    if not unchanged:
        write_status(ctx, body, patch, logger)

"""Reconciliation: look at what exists, create what is missing, report status.

Called by the thin handlers in `handlers.py`. Decisions come from what exists in the API
(the step Job, its annotations) and the store (results, progress), never from
`status.phase` alone, so a restarted operator picks up exactly where the last one was and
re-reconciling creates nothing new (creates are idempotent: 409 means it is there).
Status is written through the status subresource; an Event is posted on every phase change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from kubeforge import GROUP_VERSION
from kubeforge.api import Resource, TrainingJob, owned
from kubeforge.api.common import Phase, now_rfc3339
from kubeforge.operator import builders as b
from kubeforge.operator import status as st
from kubeforge.operator.kube import Kube, KubeHolder
from kubeforge.operator.metrics import Metrics
from kubeforge.operator.refs import Waiting, build_run, model_of, output_prefix
from kubeforge.operator.settings import OperatorSettings
from kubeforge.store import Store, StoreError, layout, open_store

WAIT_DELAY = 15.0  # seconds between checks of a reference that is not ready (TemporaryError)
SERVE_KIND = "InferenceService"


@dataclass
class Context:
    """Everything one operator instance shares between handlers."""

    settings: OperatorSettings
    holder: KubeHolder = field(default_factory=KubeHolder)
    metrics: Metrics = field(default_factory=Metrics)
    _store: Store | None = None

    @property
    def kube(self) -> Kube:
        return self.holder.kube

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings.store)
        return self._store

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(GROUP_VERSION, kind, namespace, name)


def write_status(ctx: Context, body: dict[str, Any], patch: dict[str, Any], logger: logging.Logger | None = None,
                 ) -> None:
    """Patch status; post an Event and count the phase when the phase (or Ready) changes."""
    meta = body["metadata"]
    old = body.get("status") or {}
    ctx.kube.patch(GROUP_VERSION, body["kind"], meta["namespace"], meta["name"], {"status": patch}, "status")
    phase = patch.get("phase")
    # An Event on every phase change, and on a change of Ready within a phase (an InferenceService
    # stays Running while it goes Ready): `kubectl describe` must show when it started serving.
    was_ready = next((c.get("status") for c in old.get("conditions") or [] if c.get("type") == "Ready"), None)
    is_ready = next((c.get("status") for c in patch.get("conditions") or [] if c.get("type") == "Ready"), was_ready)
    if phase and (phase != old.get("phase") or is_ready != was_ready):
        kind = "Warning" if phase == Phase.FAILED else "Normal"
        reason = next((c["reason"] for c in patch.get("conditions", []) if c["type"] == "Ready"), phase)
        kopf.event(body, type=kind, reason=reason, message=f"{phase}: {patch.get('message', '')}"[:1024])
        ctx.metrics.set_phase(body["kind"], meta["namespace"], meta["name"], phase)
        if logger:
            logger.info("%s/%s: phase %s (%s)", meta["namespace"], meta["name"], phase, reason)


def _wait(ctx: Context, body: dict[str, Any], waiting: Waiting, logger: logging.Logger) -> None:
    patch = st.status_patch(body.get("status"), Phase.WAITING, waiting.reason, waiting.message,
                            body["metadata"].get("generation"))
    write_status(ctx, body, patch, logger)
    raise kopf.TemporaryError(waiting.message, delay=WAIT_DELAY)


def _create_all(ctx: Context, objects: list[dict[str, Any]]) -> int:
    """Create each object unless it exists; returns how many were new."""
    return sum(1 for obj in objects if ctx.kube.create(obj)[1])


def reconcile_step(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> None:
    """DatasetVersion, TrainingJob, Benchmark: make sure the step Job exists, then report on it."""
    try:
        res = model_of(body)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        patch = st.status_patch(body.get("status"), Phase.FAILED, st.INVALID_SPEC, str(exc)[:1000],
                                body["metadata"].get("generation"))
        write_status(ctx, body, patch, logger)
        raise kopf.PermanentError(f"invalid spec: {exc}") from None
    name = b.step_job_name(res)
    job = ctx.kube.get("batch/v1", "Job", res.namespace, name)
    status = body.get("status") or {}
    generation = res.metadata.generation
    if job is None:
        if status.get("phase") in (Phase.SUCCEEDED, Phase.FAILED) and status.get("observedGeneration") == generation:
            return  # finished, and its Job expired (ttlSecondsAfterFinished): nothing to redo
        if isinstance(res, TrainingJob) and res.spec.source is not None:
            ensure_data_version(ctx, res, logger)
        try:
            run = build_run(res, ctx.get, ctx.settings.store)
        except Waiting as waiting:
            _wait(ctx, body, waiting, logger)
        if _create_all(ctx, b.step_objects(res, run, ctx.settings)):
            logger.info("%s: created Job %s", res.key(), name)
        extra = {"startTime": status.get("startTime") or now_rfc3339(), "jobName": name}
        prefix = output_prefix(run)
        if prefix:
            extra["outputPrefix"] = prefix
        write_status(ctx, body, st.status_patch(status, Phase.PENDING, st.JOB_CREATED, f"created Job {name}",
                                                generation, extra), logger)
        return
    made_for = (job["metadata"].get("annotations") or {}).get(b.ANNOTATION_GENERATION)
    if made_for is not None and generation is not None and made_for != str(generation):
        message = (f"spec changed (generation {generation}) after Job {name} started for generation {made_for}; "
                   "a started run cannot change: create a new resource")
        if any(c.get("type") == "Stalled" and c.get("reason") == st.SPEC_CHANGE_REFUSED
               and c.get("observedGeneration") == generation for c in status.get("conditions") or []):
            return  # already refused (an operator restart resumes here): no second event
        write_status(ctx, body, st.refused_patch(status, generation, message), logger)
        kopf.warn(body, reason=st.SPEC_CHANGE_REFUSED, message=message)
        return
    sync_from_job(ctx, body, res, job, logger)


def sync_from_job(ctx: Context, body: dict[str, Any], res: Resource, job: dict[str, Any],
                  logger: logging.Logger) -> dict[str, Any] | None:
    """Reflect the step Job's state into the resource; on success read the step's result from the store."""
    status = body.get("status") or {}
    pods: list[dict[str, Any]] = []
    if any(c.get("type") == "Failed" and c.get("status") == "True"
           for c in (job.get("status") or {}).get("conditions") or []):
        pods = ctx.kube.list("v1", "Pod", res.namespace, {b.JOB_NAME_LABEL: job["metadata"]["name"]})
    outcome = st.job_outcome(job, pods)
    # The generation of the run the Job is doing: a refused later change stays visible as refused.
    made_for = (job["metadata"].get("annotations") or {}).get(b.ANNOTATION_GENERATION)
    generation = int(made_for) if made_for and made_for.isdigit() else res.metadata.generation
    extra: dict[str, Any] = {}
    phase, reason, message = outcome.phase, outcome.reason, outcome.message
    if phase == Phase.SUCCEEDED:
        if status.get("phase") == Phase.SUCCEEDED:
            return None  # already reflected: nothing to write
        try:
            result = ctx.store.get_json(b.result_key(res))
        except KeyError:
            phase, reason = Phase.FAILED, st.RESULT_MISSING
            message = f"the Job succeeded but wrote no result at {b.result_key(res)}"
            result = {}
        except StoreError as exc:
            raise kopf.TemporaryError(f"reading the result of {res.key()}: {exc}", delay=10) from None
        extra.update(result if isinstance(result, dict) else {})
        extra["completionTime"] = now_rfc3339()
        if phase == Phase.SUCCEEDED:
            extra.update(_after_success(ctx, body, res, result))
    elif phase == Phase.FAILED:
        if status.get("phase") == Phase.FAILED:
            return None
        extra["completionTime"] = now_rfc3339()
    elif status.get("phase") == phase and status.get("conditions") and \
            next((c.get("reason") for c in status["conditions"] if c.get("type") == "Ready"), None) == reason:
        return None  # nothing new
    patch = st.status_patch(status, phase, reason, message, generation, extra)
    write_status(ctx, body, patch, logger)
    return patch


def _after_success(ctx: Context, body: dict[str, Any], res: Resource, result: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if res.kind == "DatasetVersion" and result.get("digest"):
        extra["outputPrefix"] = layout.dataset_version_prefix(res.spec.dataset, result["digest"])  # type: ignore[union-attr]
    if isinstance(res, TrainingJob) and res.spec.benchmark.enabled:
        bench = implicit_benchmark(res)
        ctx.kube.create(bench)
        extra["benchmark"] = bench["metadata"]["name"]
    if isinstance(res, TrainingJob) and isinstance(result.get("progress"), dict):
        progress = st.progress_status(result["progress"])
        if progress:
            ctx.metrics.set_progress(res.namespace, res.name, progress["epoch"], progress["epochs"])
    return extra


def _as_child(model: Resource, job: TrainingJob, component: str) -> dict[str, Any]:
    """An owned resource from `kubeforge.api.owned`, with the operator's labels and the owner's uid."""
    obj = model.dump()
    obj.pop("status", None)
    obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), **b.labels(job, component)}
    obj["metadata"]["ownerReferences"] = [b.owner_reference(job)]
    return obj


def data_version_object(job: TrainingJob) -> dict[str, Any]:
    """The DatasetVersion a TrainingJob with `spec.source` owns (the same one the local runner makes)."""
    return _as_child(owned.implicit_dataset_version(job), job, "data")


def ensure_data_version(ctx: Context, job: TrainingJob, logger: logging.Logger) -> None:
    if ctx.kube.create(data_version_object(job))[1]:
        logger.info("%s: created DatasetVersion %s from spec.source", job.key(), owned.data_version_name(job))


def implicit_benchmark(job: TrainingJob) -> dict[str, Any]:
    """The Benchmark a TrainingJob with `benchmark.enabled` owns: its best checkpoint on its val split."""
    return _as_child(owned.implicit_benchmark(job), job, "benchmark")


def refresh_progress(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> None:
    """Timer body: mirror a running TrainingJob's progress.json into status.progress."""
    status = body.get("status") or {}
    prefix = status.get("outputPrefix")
    if not prefix:
        return
    try:
        data = ctx.store.get_json(f"{prefix}/{layout.PROGRESS}")
    except (KeyError, StoreError, ValueError):
        return  # not written yet, or the store blinked: the next tick tries again
    progress = st.progress_status(data)
    if progress is None or progress == status.get("progress"):
        return
    meta = body["metadata"]
    ctx.kube.patch(GROUP_VERSION, body["kind"], meta["namespace"], meta["name"], {"status": {"progress": progress}},
                   "status")
    ctx.metrics.set_progress(meta["namespace"], meta["name"], progress["epoch"], progress["epochs"])
    logger.debug("progress %s/%s", progress["epoch"], progress["epochs"])


def owner_of_job(ctx: Context, job: dict[str, Any]) -> dict[str, Any] | None:
    """The resource a step Job belongs to (by its controller reference)."""
    ref = next((r for r in job["metadata"].get("ownerReferences") or []
                if r.get("controller") and r.get("apiVersion") == GROUP_VERSION), None)
    if ref is None:
        return None
    body = ctx.get(ref["kind"], job["metadata"]["namespace"], ref["name"])
    if body is None or (body.get("metadata") or {}).get("uid") != ref.get("uid"):
        return None  # the owner is gone (or re-created): garbage collection handles the Job
    return body

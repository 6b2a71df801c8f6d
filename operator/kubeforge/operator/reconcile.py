"""Reconciliation: look at what exists, create what is missing, report status.

Called by the thin handlers in `handlers.py`. The decisions are the shared core's
(`kubeforge.core`): which references a resource waits for, its run spec and run id, how a step's
result becomes status. This module only drives the API: a run is one Job named after its run id, so
a restarted operator finds exactly the Job it made, re-reconciling creates nothing new (creates are
idempotent: 409 means it is there), and a changed spec or changed inputs is a new run whose Job
replaces the unfinished one. Status is written through the status subresource (as a diff, so fields
a new run no longer has are removed); an Event is posted on every phase change.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from kubeforge import GROUP_VERSION
from kubeforge.api import Resource, TrainingJob, owned, parse_resource
from kubeforge.api.common import Phase, StatusBase
from kubeforge.api.references import references
from kubeforge.api.training_job import Progress
from kubeforge.core import status as cs
from kubeforge.core.progress import PROGRESS_KINDS, read_progress, settle_progress
from kubeforge.core.resolve import Lookup, Waiting, build_run
from kubeforge.operator import builders as b
from kubeforge.operator import status as st
from kubeforge.operator.kube import Kube, KubeError, KubeHolder
from kubeforge.operator.metrics import Metrics
from kubeforge.operator.settings import OperatorSettings
from kubeforge.store import Store, StoreError, open_store

WAIT_DELAY = 15.0  # seconds between checks of a reference that is not ready (TemporaryError)
SERVE_KIND = "InferenceService"
# Kinds whose references name other resources: what may wait for a resource that just succeeded.
DEPENDENT_KINDS = ("DatasetVersion", "TrainingJob", "Benchmark", "InferenceService", "PredictionJob")


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

    def lookup(self) -> Lookup:
        """The core's view of other resources: the API server's."""
        def get(kind: str, namespace: str, name: str) -> Resource | None:
            body = self.get(kind, namespace, name)
            return resource_of(body) if body is not None else None
        return get


def model_of(body: dict[str, Any]) -> Resource:
    """The API model of a body without its status; ValueError (pydantic's) for an invalid spec."""
    return parse_resource({"apiVersion": body.get("apiVersion", GROUP_VERSION), "kind": body["kind"],
                           "metadata": dict(body.get("metadata") or {}), "spec": body.get("spec") or {}})


def resource_of(body: dict[str, Any]) -> Resource | None:
    """The API model with its status (what the core reads); None when the spec is invalid."""
    try:
        res = model_of(body)
    except ValueError:
        return None
    res.status = cs.parse_status(res.kind, body.get("status"))  # type: ignore[assignment]
    return res


def status_diff(old: Any, new: Any) -> Any:
    """A JSON merge patch turning `old` into `new`: removed keys become null (a plain merge keeps them)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = status_diff(old[key], value)
            if isinstance(value, dict) and isinstance(patch[key], dict):
                # The object whole, not only what changed: if a concurrent write removed it (a canary rolled
                # back), a partial patch would recreate it without its required fields.
                patch[key] = {**value, **patch[key]}
    return patch


def write_status(ctx: Context, body: dict[str, Any], status: StatusBase, logger: logging.Logger | None = None,
                 ) -> bool:
    """Patch status when it changed; post an Event and count the phase when the phase (or Ready) changed."""
    meta = body["metadata"]
    old = body.get("status") or {}
    new = status.dump()
    patch = status_diff(old, new)
    if not patch:
        return False
    ctx.kube.patch(GROUP_VERSION, body["kind"], meta["namespace"], meta["name"], {"status": patch}, "status")
    body["status"] = new  # later writes in this reconcile diff against what is there now
    phase = new.get("phase")
    # An Event on every phase change, and on a change of Ready within a phase (an InferenceService
    # stays Running while it goes Ready): `kubectl describe` must show when it started serving.
    was_ready = next((c.get("status") for c in old.get("conditions") or [] if c.get("type") == "Ready"), None)
    is_ready = next((c.get("status") for c in new.get("conditions") or [] if c.get("type") == "Ready"), None)
    if phase and (phase != old.get("phase") or is_ready != was_ready):
        kind = "Warning" if phase == Phase.FAILED else "Normal"
        reason = next((c["reason"] for c in new.get("conditions", []) if c["type"] == "Ready"), phase)
        kopf.event(body, type=kind, reason=reason, message=f"{phase}: {new.get('message', '')}"[:1024])
        ctx.metrics.set_phase(body["kind"], meta["namespace"], meta["name"], phase)
        if logger:
            logger.info("%s/%s: phase %s (%s)", meta["namespace"], meta["name"], phase, reason)
    return True


def _status(res: Resource, body: dict[str, Any]) -> StatusBase:
    return cs.parse_status(res.kind, body.get("status"))


def _wait(ctx: Context, body: dict[str, Any], res: Resource, waiting: Waiting, logger: logging.Logger) -> None:
    status = cs.set_phase(_status(res, body), Phase.WAITING, waiting.reason, waiting.message,
                          res.metadata.generation)
    write_status(ctx, body, status, logger)
    raise kopf.TemporaryError(waiting.message, delay=WAIT_DELAY)


def _create_all(ctx: Context, objects: list[dict[str, Any]]) -> int:
    """Create each object unless it exists; returns how many were new."""
    return sum(1 for obj in objects if ctx.kube.create(obj)[1])


def _parse(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> Resource:
    try:
        return model_of(body)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        status = cs.set_phase(cs.parse_status(body["kind"], body.get("status")), Phase.FAILED, st.INVALID_SPEC,
                              str(exc)[:1000], body["metadata"].get("generation"))
        write_status(ctx, body, status, logger)
        raise kopf.PermanentError(f"invalid spec: {exc}") from None


def start_run(ctx: Context, body: dict[str, Any], res: Resource, run: Any, logger: logging.Logger) -> StatusBase:
    """Create the run's objects (the Job last), make it the current run, supersede an unfinished one."""
    name = b.step_job_name(res, run)
    # Another handler of this resource (its own retry, or a dependency's success) may have started this
    # very run a moment ago: a create would only meet a 409.
    exists = ctx.kube.get("batch/v1", "Job", res.namespace, name) is not None
    if not exists and _create_all(ctx, b.step_objects(res, run, ctx.settings)):
        logger.info("%s: created Job %s for run %s", res.key(), name, run.run_id)
    status, superseded = cs.start_run(_status(res, body), run, res.metadata.generation)
    for record in superseded:
        ctx.kube.delete("batch/v1", "Job", res.namespace, b.step_job_name(res, record.id))
        if record.output_prefix:
            settle_progress(ctx.store, record.output_prefix, "Stopped", record.message)
        logger.info("%s: run %s superseded by %s", res.key(), record.id, run.run_id)
    cs.set_phase(status, Phase.PENDING, st.JOB_CREATED, f"created Job {name} for run {run.run_id}",
                 res.metadata.generation)
    write_status(ctx, body, status, logger)
    return status


def reconcile_step(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> None:
    """DatasetVersion, TrainingJob, Benchmark: make sure the current run's Job exists, then report on it."""
    res = _parse(ctx, body, logger)
    status = _status(res, body)
    if not status.runs and status.phase == Phase.SUCCEEDED and status.observed_generation == res.metadata.generation:
        return  # it succeeded before runs were recorded (an operator upgrade): its result stands
    if isinstance(res, TrainingJob) and res.spec.source is not None:
        ensure_data_version(ctx, res, logger)
    try:
        run = build_run(res, ctx.lookup(), ctx.settings.store)
    except Waiting as waiting:
        current = status.find_run(status.run_id) if status.run_id else None
        if current is not None and current.generation == res.metadata.generation:
            return  # a reference went away after this run was made: the run stands as it is
        _wait(ctx, body, res, waiting, logger)
        return
    if status.run_id != run.run_id:
        start_run(ctx, body, res, run, logger)
        return
    job = ctx.kube.get("batch/v1", "Job", res.namespace, b.step_job_name(res, run))
    if job is None:  # finished and expired (ttlSecondsAfterFinished), or deleted: job_gone tells which
        job_gone(ctx, body, res, run.run_id, logger)  # type: ignore[arg-type]
        return
    sync_from_job(ctx, body, res, job, logger)


def job_gone(ctx: Context, body: dict[str, Any], res: Resource, run_id: str, logger: logging.Logger) -> None:
    """The current run's Job is gone before its end was seen: if the step wrote its result (the Job
    finished and expired while no operator watched), the run succeeded; otherwise it failed, and says so."""
    status = _status(res, body)
    current = status.find_run(run_id)
    if status.run_id != run_id or current is None or current.phase not in ("Pending", "Running"):
        return
    key = b.result_key(res, run_id)
    try:
        result = ctx.store.get_json(key)
    except KeyError:
        result = None
    except StoreError as exc:
        raise kopf.TemporaryError(f"reading the result of {res.key()}: {exc}", delay=10) from None
    if result is not None:
        _apply(ctx, body, res, status, result, key, current.generation, logger)
        return
    message = (f"the step Job {b.step_job_name(res, run_id)} of run {run_id} was deleted before it finished; "
               "change the spec (or delete and re-create the resource) to run again")
    cs.fail(status, st.JOB_DELETED, message, current.generation)
    if current.output_prefix:
        settle_progress(ctx.store, current.output_prefix, "Failed", message)
    write_status(ctx, body, status, logger)


def _apply(ctx: Context, body: dict[str, Any], res: Resource, status: StatusBase, result: Any, key: str,
           generation: int | None, logger: logging.Logger) -> StatusBase:
    """The run succeeded with `result`: validated into status (InvalidResult fails it); dependents follow."""
    try:
        status = cs.apply_result(res, status, result, generation)
    except cs.InvalidResult as exc:
        cs.fail(status, cs.INVALID_RESULT, f"the step's result at {key}: {exc}", generation)
        write_status(ctx, body, status, logger)
        return status
    _after_success(ctx, res, status)
    write_status(ctx, body, status, logger)
    if res.kind != SERVE_KIND:
        reconcile_dependents(ctx, res, logger)
    return status


def run_id_of(job: dict[str, Any]) -> str | None:
    return (job["metadata"].get("annotations") or {}).get(b.ANNOTATION_RUN_ID) or None


def sync_from_job(ctx: Context, body: dict[str, Any], res: Resource, job: dict[str, Any],
                  logger: logging.Logger) -> StatusBase | None:
    """Reflect the current run's Job into the resource; on success apply the step's result from the store.
    Returns the status written, or None when nothing changed."""
    status = _status(res, body)
    run_id = run_id_of(job)
    current = status.find_run(run_id) if run_id else None
    if current is None or status.run_id != run_id:
        return None  # an earlier run's Job (superseded): it speaks for no one now
    pods: list[dict[str, Any]] = []
    if any(c.get("type") == "Failed" and c.get("status") == "True"
           for c in (job.get("status") or {}).get("conditions") or []):
        pods = ctx.kube.list("v1", "Pod", res.namespace, {b.JOB_NAME_LABEL: job["metadata"]["name"]})
    outcome = st.job_outcome(job, pods)
    generation = current.generation
    if outcome.phase == Phase.SUCCEEDED:
        if current.phase == "Succeeded":
            return None  # already reflected
        key = b.result_key(res, run_id)  # type: ignore[arg-type]
        try:
            result = ctx.store.get_json(key)
        except KeyError:
            cs.fail(status, st.RESULT_MISSING, f"the Job succeeded but wrote no result at {key}", generation)
            write_status(ctx, body, status, logger)
            return status
        except StoreError as exc:
            raise kopf.TemporaryError(f"reading the result of {res.key()}: {exc}", delay=10) from None
        return _apply(ctx, body, res, status, result, key, generation, logger)
    if outcome.phase == Phase.FAILED:
        if current.phase == "Failed":
            return None
        if current.output_prefix and res.kind in PROGRESS_KINDS:  # how far it got (a rerun continues there)
            progress = read_progress(ctx.store, current.output_prefix, res.kind)
            if progress is not None:
                status.progress = progress  # type: ignore[attr-defined]
        cs.fail(status, outcome.reason, outcome.message, generation)
        if current.output_prefix:
            settle_progress(ctx.store, current.output_prefix, "Failed", outcome.message)
    else:
        if outcome.phase == Phase.RUNNING:
            cs.mark_running(status)
        cs.set_phase(status, outcome.phase, outcome.reason, outcome.message, generation)
    return status if write_status(ctx, body, status, logger) else None


def _after_success(ctx: Context, res: Resource, status: StatusBase) -> None:
    if isinstance(res, TrainingJob) and res.spec.benchmark.enabled:
        ctx.kube.create(implicit_benchmark(res))
    progress = getattr(status, "progress", None)
    if isinstance(res, TrainingJob) and progress is not None:
        ctx.metrics.set_progress(res.namespace, res.name, progress.epoch, progress.epochs)


def may_name(spec: dict[str, Any], name: str) -> bool:
    """Whether `spec` can reference `name` (a cheap text test; `references` decides): as a whole string, or
    after a kind (a derived version's `PredictionJob/<name>` parent)."""
    text = json.dumps(spec)
    return json.dumps(name) in text or json.dumps(f"/{name}")[1:] in text


def reconcile_dependents(ctx: Context, res: Resource, logger: logging.Logger) -> None:
    """A resource produced something new: reconcile what references it in its namespace now (level-
    triggered: a dependent whose inputs changed starts a new run; one that waited starts at last)."""
    from kubeforge.operator.serving import reconcile_serving  # serving builds on this module

    owners = {(o.get("kind"), o.get("name")) for o in (res.metadata.model_extra or {}).get("ownerReferences") or []}
    bodies: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in DEPENDENT_KINDS:
        try:
            for body in ctx.kube.list(GROUP_VERSION, kind, res.namespace):
                bodies[(kind, body["metadata"]["name"])] = body
        except KubeError as exc:
            logger.warning("listing %s to find what references %s failed: %s", kind, res.key(), exc)
    # Parsing every resource of a namespace per success would be quadratic: only those whose spec names
    # this one, or that own it (a TrainingJob's `<job>-data`), can reference it.
    models = {key: m for key, body in bodies.items()
              if (may_name(body.get("spec") or {}, res.name) or key in owners)
              and (m := resource_of(body)) is not None}

    def spec_of(kind: str, name: str) -> Resource | None:
        found = models.get((kind, name))
        return found if found is not None or (kind, name) not in bodies else resource_of(bodies[(kind, name)])

    for (kind, name), model in models.items():
        refs = references(model, spec_of)
        if not any(r.kind == res.kind and r.name == res.name for r in refs):
            continue
        body = bodies[(kind, name)]
        if body["metadata"].get("deletionTimestamp"):
            continue
        try:
            if kind == SERVE_KIND:
                reconcile_serving(ctx, body, logger)
            else:
                reconcile_step(ctx, body, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            logger.debug("%s %s not advanced yet: %s", kind, name, exc)


def _as_child(model: Resource, job: TrainingJob, component: str) -> dict[str, Any]:
    """An owned resource from `kubeforge.api.owned` (its owner reference included), with the operator's labels."""
    b.owner_reference(job)  # refuses an owner without a uid: garbage collection needs it
    obj = model.dump()
    obj.pop("status", None)
    obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), **b.labels(job, component)}
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
    """Timer body: mirror a running TrainingJob's (PredictionJob's) progress.json into status.progress."""
    status = body.get("status") or {}
    prefix = status.get("outputPrefix")
    if not prefix:
        return
    progress = read_progress(ctx.store, prefix, body["kind"])
    if progress is None or progress.dump() == status.get("progress"):
        return
    meta = body["metadata"]
    ctx.kube.patch(GROUP_VERSION, body["kind"], meta["namespace"], meta["name"],
                   {"status": {"progress": progress.dump()}}, "status")
    if isinstance(progress, Progress):
        ctx.metrics.set_progress(meta["namespace"], meta["name"], progress.epoch, progress.epochs)
    logger.debug("progress %s", progress.dump())


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

"""The Kopf handlers, registered on a registry per operator instance (`build_registry`).

Thin: each handler counts, then calls one function of `reconcile`, `serving` or `cleanup`.
Retry policy is Kopf's: `TemporaryError(delay=…)` while a reference is not ready,
`PermanentError` for an invalid spec; errors are counted per kind in /metrics.

Kopf's own state lives in annotations with the prefix `kopf.kubeforge.io/` (progress of
handlers and the last-handled configuration), not in status: it survives any CRD schema
and a status rewrite, and `kubectl get -o yaml` shows it apart from our status.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import kopf

from kubeforge import API_GROUP, API_VERSION
from kubeforge.core.resolve import WAITING_MARK
from kubeforge.operator import builders as b
from kubeforge.operator.cleanup import delete_artifacts
from kubeforge.operator.reconcile import (
    Context,
    job_gone,
    model_of,
    owner_of_job,
    reconcile_step,
    refresh_progress,
    run_id_of,
    sync_from_job,
)
from kubeforge.operator.request_counts import refresh_request_counts
from kubeforge.operator.serving import reconcile_serving
from kubeforge.operator.settings import OperatorSettings

STEP_KINDS = {"datasetversions": "DatasetVersion", "trainingjobs": "TrainingJob", "benchmarks": "Benchmark",
              "predictionjobs": "PredictionJob"}
SERVE_PLURAL = "inferenceservices"
KOPF_PREFIX = "kopf.kubeforge.io"
FINALIZER = "kubeforge.io/finalizer"
MANAGED = {b.LABEL_MANAGED_BY: b.MANAGED_BY}

LoginFn = Callable[..., kopf.ConnectionInfo | None]


class WaitingIsNotAnError(logging.Filter):
    """Kopf logs every TemporaryError as an ERROR ("failed temporarily"); a resource waiting for a
    reference (`kubeforge.core.resolve.Waiting`) is a state, shown in its status: log it as INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "failed temporarily" in str(record.msg) \
                and WAITING_MARK in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_waiting(logger: logging.Logger | None = None) -> None:
    """Install WaitingIsNotAnError on Kopf's per-object logger (once)."""
    target = logger or logging.getLogger("kopf.objects")
    if not any(isinstance(f, WaitingIsNotAnError) for f in target.filters):
        target.addFilter(WaitingIsNotAnError())


def configure(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """Kopf's settings for production (and tests, which may preset the watch timeouts)."""
    quiet_waiting()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    # A watch that silently stalls must end and resume: the server closes it, the client gives up.
    if settings.watching.server_timeout is None:
        settings.watching.server_timeout = 300
    if settings.watching.client_timeout is None:
        settings.watching.client_timeout = 330
    if settings.watching.connect_timeout is None:
        settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.peering.name = ours.peering_name
    settings.peering.clusterwide = ours.clusterwide
    # Replicas must not share a priority (Kopf pauses all of a tie): see OperatorSettings.
    settings.peering.priority = ours.peering_priority
    settings.peering.lifetime = ours.peering_lifetime_seconds
    # Our phase-change Events are posted explicitly; Kopf's own go out for warnings and errors only.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "kubeforge-operator"
    settings.execution.max_workers = 16  # sync handlers run in this pool


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere $KUBECONFIG or ~/.kube/config (as Kopf does)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def build(settings: OperatorSettings, login: LoginFn | None = None) -> tuple[kopf.OperatorRegistry, Context]:
    """A registry with every handler, and the context its handlers share."""
    registry = kopf.OperatorRegistry()
    ctx = Context(settings)
    do_login = login or default_login

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, ctx.settings)

    @kopf.on.login(registry=registry)
    def login_fn(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = do_login(**kwargs)
        if info is not None:
            ctx.holder.set(info)
        return info

    def counted(kind: str, fn: Callable[[], None], body: kopf.Body | None = None) -> None:
        ctx.metrics.reconciles.labels(kind).inc()
        phase = ((body or {}).get("status") or {}).get("phase")
        if body is not None and phase:
            # What the phase gauge counts is what exists, also what another replica (before a failover)
            # or an earlier process wrote, not only this process's own writes.
            meta = body.get("metadata") or {}
            ctx.metrics.set_phase(kind, meta.get("namespace", ""), meta.get("name", ""), phase)
        try:
            fn()
        except (kopf.TemporaryError, kopf.PermanentError):
            raise
        except Exception:
            ctx.metrics.errors.labels(kind).inc()
            raise

    for plural, kind in STEP_KINDS.items():
        def step_handler(body: kopf.Body, logger: logging.Logger, _kind: str = kind, **_: Any) -> None:
            counted(_kind, lambda: reconcile_step(ctx, _plain(body), logger), body)

        for on in (kopf.on.create, kopf.on.resume):
            on(API_GROUP, API_VERSION, plural, registry=registry, id="reconcile")(step_handler)
        kopf.on.update(API_GROUP, API_VERSION, plural, field="spec", registry=registry, id="reconcile")(step_handler)

    def serve_handler(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
        counted("InferenceService", lambda: reconcile_serving(ctx, _plain(body), logger), body)

    for on in (kopf.on.create, kopf.on.resume):
        on(API_GROUP, API_VERSION, SERVE_PLURAL, registry=registry, id="reconcile")(serve_handler)
    kopf.on.update(API_GROUP, API_VERSION, SERVE_PLURAL, field="spec", registry=registry,
                   id="reconcile")(serve_handler)

    for plural in (*STEP_KINDS, SERVE_PLURAL):
        @kopf.on.delete(API_GROUP, API_VERSION, plural, registry=registry, id="artifacts")
        def delete_handler(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
            delete_artifacts(ctx, _plain(body), logger)

    for plural in ("trainingjobs", "predictionjobs"):  # kinds whose steps write progress.json
        @kopf.timer(API_GROUP, API_VERSION, plural, registry=registry, id="progress",
                    interval=settings.progress_interval_seconds,
                    when=lambda status, **_: status.get("phase") == "Running")
        def progress_timer(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
            refresh_progress(ctx, _plain(body), logger)

    @kopf.timer(API_GROUP, API_VERSION, SERVE_PLURAL, registry=registry, id="requests",
                interval=settings.request_count_interval_seconds,
                when=lambda status, **_: status.get("ready") is True)
    def request_count_timer(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
        refresh_request_counts(ctx, _plain(body), logger)

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry, id="step-job")
    def job_event(event: dict[str, Any], body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
        on_owned_change(ctx, _plain(body), logger, job=True, deleted=event.get("type") == "DELETED")

    @kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry, id="triton")
    def deployment_event(event: dict[str, Any], body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
        if event.get("type") == "DELETED":
            return
        on_owned_change(ctx, _plain(body), logger, job=False)

    return registry, ctx


def on_owned_change(ctx: Context, child: dict[str, Any], logger: logging.Logger, job: bool,
                    deleted: bool = False) -> None:
    """A Job or Deployment we own changed (or a Job went away): bring its owner's status up to date."""
    owner = owner_of_job(ctx, child)
    if owner is None:
        return
    try:
        if owner["kind"] == "InferenceService":
            if not deleted:
                reconcile_serving(ctx, owner, logger)
            return
        run_id = run_id_of(child) if job else None
        if run_id is None:
            return
        res = model_of(owner)
        if child["metadata"]["name"] != b.step_job_name(res, run_id):
            return  # not one of this resource's step Jobs
        if deleted:
            job_gone(ctx, owner, res, run_id, logger)
        else:
            sync_from_job(ctx, owner, res, child, logger)
    except kopf.TemporaryError as exc:
        # An event handler is not retried: the owner's own handler retries on its schedule.
        logger.debug("owner %s not updated yet: %s", owner["metadata"]["name"], exc)
    except kopf.PermanentError:
        pass


def build_registry(settings: OperatorSettings, login: LoginFn | None = None) -> kopf.OperatorRegistry:
    """The registry of one operator instance (tests build one per operator they start)."""
    return build(settings, login)[0]

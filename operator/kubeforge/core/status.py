"""Statuses, for both runtimes: phases with kstatus conditions, runs, and a step's result applied.

Every function takes and returns the status model of the resource's kind (`kubeforge.api`), so a
status is validated the same way whether the local runner saves it or the operator patches it.

Conditions follow kstatus (Flux) and Argo CD's expectations:
- `Ready`: True once the resource reached what it was asked for (Succeeded; serving Ready).
- `Reconciling`: True while work is under way (waiting, pending, running).
- `Stalled`: True when no progress will happen without a change (failed).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kubeforge.api import (
    KINDS,
    Benchmark,
    BenchmarkStatus,
    DatasetVersion,
    InferenceService,
    InferenceServiceStatus,
    PredictionJobStatus,
    Resource,
    TrainingJob,
)
from kubeforge.api.common import Phase, RunPhase, RunRecord, StatusBase, now_rfc3339
from kubeforge.api.owned import benchmark_name
from kubeforge.steps.runs import output_prefix
from kubeforge.steps.spec import PredictRun, ServeRun, StepRun
from kubeforge.store import layout

SUCCEEDED = "Succeeded"
SERVING = "Serving"
STEP_FAILED = "StepFailed"
INVALID_RESULT = "InvalidResult"
# A Benchmark with spec.gate: whether its current run's promotion gate passed (kubeforge.evaluation.gate).
GATE_PASSED = "GatePassed"
GATE_FAILED = "GateFailed"
GATE_EVALUATING = "Evaluating"
GATE_RUN_FAILED = "RunFailed"
MAX_MESSAGE = 1024


class InvalidResult(ValueError):
    """A step's result is not a valid partial status of its kind; the message names the field."""


def status_class(kind: str) -> type[StatusBase]:
    annotation = KINDS[kind].model_fields["status"].annotation
    return annotation.__args__[0]  # type: ignore[union-attr, no-any-return]  # `XStatus | None`


def truncate(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else "…" + message[-(limit - 1):]


def parse_status(kind: str, data: dict[str, Any] | None) -> StatusBase:
    """A stored status as its model; a status this version cannot read starts over (never raises)."""
    cls = status_class(kind)
    try:
        return cls.model_validate(data or {})
    except ValidationError:
        return cls()


def _conditions(phase: Phase, reason: str, message: str, ready: bool) -> list[tuple[str, bool, str, str]]:
    if phase == Phase.SUCCEEDED or ready:
        return [("Ready", True, reason, message), ("Reconciling", False, reason, ""), ("Stalled", False, reason, "")]
    if phase == Phase.FAILED:
        return [("Ready", False, reason, message), ("Reconciling", False, reason, ""),
                ("Stalled", True, reason, message)]
    if phase == Phase.STOPPED:
        return [("Ready", False, reason, message), ("Reconciling", False, reason, ""), ("Stalled", False, reason, "")]
    return [("Ready", False, reason, message), ("Reconciling", True, reason, message),
            ("Stalled", False, reason, "")]


def set_phase(status: StatusBase, phase: Phase, reason: str, message: str, generation: int | None,
              ready: bool = False) -> StatusBase:
    """Phase, message, observedGeneration and the kstatus conditions (lastTransitionTime kept when a
    condition's status did not change). `ready`: a long-running resource (serving) that is Ready."""
    status.phase = phase
    status.message = truncate(message)
    status.observed_generation = generation
    for type_, value, why, text in _conditions(phase, reason, message, ready):
        status.set_condition(type_, value, why, truncate(text), generation)
    if phase in (Phase.SUCCEEDED, Phase.FAILED) and status.completion_time is None:
        status.completion_time = now_rfc3339()
    return status


def _set_run_phase(status: StatusBase, phase: RunPhase, message: str = "") -> None:
    record = status.find_run(status.run_id) if status.run_id else None
    if record is None:
        return
    record.phase = phase
    record.message = truncate(message)
    if phase in ("Succeeded", "Failed", "Superseded"):
        record.completion_time = record.completion_time or now_rfc3339()
    status.runs = list(status.runs)  # re-validated (validate_assignment)


# What a new run of a step kind carries over from the last status; the rest described the last run.
# `promoted` (Benchmark) is the winner of the latest run whose gate passed: it stands until another passes.
KEPT_ACROSS_RUNS = ("conditions", "runs", "phase", "message", "observed_generation", "promoted")


def start_run(status: StatusBase, run: StepRun, generation: int | None) -> tuple[StatusBase, list[RunRecord]]:
    """Make `run` the current run: (the new status, the runs it superseded). An unfinished earlier run is
    superseded (its record stays; the runtime stops its work). The last run's results leave the status
    (they stay in `runs` and the store), except for a served model, which keeps serving until replaced."""
    assert run.run_id, "run specs built by kubeforge.steps.runs carry a run id"
    superseded = []
    for record in status.runs:
        if record.id != run.run_id and record.phase in ("Pending", "Running"):
            record.phase = "Superseded"
            record.message = f"superseded by run {run.run_id} (generation {generation})"
            record.completion_time = now_rfc3339()
            superseded.append(record)
    if not isinstance(run, ServeRun):
        status = type(status).model_validate({k: getattr(status, k) for k in KEPT_ACROSS_RUNS
                                              if k in type(status).model_fields})
        if isinstance(status, BenchmarkStatus) and any(c.type == GATE_PASSED for c in status.conditions):
            status.set_condition(GATE_PASSED, None, GATE_EVALUATING, truncate(
                f"run {run.run_id} is being evaluated; status.promoted stays as it is until a run's gate passes"),
                generation)
    existing = status.find_run(run.run_id)
    if existing is None:
        status.runs = [*status.runs, RunRecord(id=run.run_id, generation=generation,
                                               output_prefix=output_prefix(run), start_time=now_rfc3339())]
    else:  # the same inputs again (a retry after a failure): the same run, resumed
        existing.phase, existing.message, existing.completion_time = "Pending", "", None
        existing.generation = generation
        status.runs = list(status.runs)
    status.run_id = run.run_id
    status.output_prefix = output_prefix(run)
    status.start_time = now_rfc3339()
    status.completion_time = None
    if isinstance(run, ServeRun) and isinstance(status, InferenceServiceStatus):
        status.training_run, status.experiment_prefix = run.training_run, run.experiment_prefix
        status.training_job = run.training_job or run.spec.model.training_job
        _served_extras(status, run)
    if isinstance(run, PredictRun) and isinstance(status, PredictionJobStatus):
        # Known before the step starts: what predicts on what (the printer columns show them while it runs).
        status.model, status.input = run.model.label, run.spec.input.label
        status.training_job, status.training_run = run.model.training_job, run.model.training_run
        status.inference_service = run.model.inference_service
    return status, superseded


def _served_extras(status: InferenceServiceStatus, run: ServeRun) -> None:
    """The Triton versions and the canary a serve run builds (spec.model.versions, spec.canary)."""
    from kubeforge.api.inference_service import CanaryStatus, ServedVersion

    status.versions = [ServedVersion(version=v.version or 1, training_run=v.training_run,
                                     experiment_prefix=v.experiment_prefix) for v in run.versions] or None
    if run.canary is None:
        status.canary = None
        return
    old = status.canary
    status.canary = CanaryStatus(training_job=run.canary.training_job or "", training_run=run.canary.training_run,
                                 experiment_prefix=run.canary.experiment_prefix,
                                 requests=old.requests if old and old.training_run == run.canary.training_run
                                 else None)


def served_run_notice(res: InferenceService, before: str | None, status: StatusBase,
                      before_job: str | None = None) -> str | None:
    """What to tell the user when a new serve run swaps the served TrainingJob run (never silently):
    None when nothing was served before or the same run is served. `before_job`: the TrainingJob served
    before (a Benchmark's winner may be another TrainingJob)."""
    now = status.training_run if isinstance(status, InferenceServiceStatus) else None
    if not before or before == now:
        return None
    if res.spec.model.benchmark is not None:
        job = status.training_job if isinstance(status, InferenceServiceStatus) else None
        was = f"TrainingJob {before_job} run {before}" if before_job else f"run {before}"
        return (f"Benchmark {res.spec.model.benchmark} promoted a new winner: serving TrainingJob {job} run {now} "
                f"instead of {was}")
    pin = "" if res.spec.model.run else "; set spec.model.run to pin a run"
    return f"TrainingJob {res.spec.model.training_job}: serving run {now} instead of run {before}{pin}"


def mark_running(status: StatusBase) -> None:
    _set_run_phase(status, "Running")


def fail(status: StatusBase, reason: str, message: str, generation: int | None) -> StatusBase:
    """The current run failed (or never started); Stalled until the spec or its inputs change."""
    _set_run_phase(status, "Failed", message)
    status.completion_time = None
    if isinstance(status, BenchmarkStatus) and any(c.type == GATE_PASSED for c in status.conditions):
        # A run that fails judges nothing: its gate did not pass, and what an earlier run promoted stands.
        kept = (f"; still promoted: {status.promoted.training_job} (Benchmark run {status.promoted.benchmark_run})"
                if status.promoted is not None else "")
        status.set_condition(GATE_PASSED, False, GATE_RUN_FAILED,
                             truncate(f"run {status.run_id} failed before its gate was judged{kept}"), generation)
    return set_phase(status, Phase.FAILED, reason, message, generation)


def apply_result(res: Resource, status: StatusBase, result: Any, generation: int | None,
                 ) -> StatusBase:
    """The current run succeeded with `result` (the step's partial status, camelCase): merged into the
    status and validated against the kind's status model; InvalidResult names the field otherwise."""
    if not isinstance(result, dict):
        raise InvalidResult(f"expected a JSON object (a partial status), got {type(result).__name__}")
    merged = {**status.dump(), **result}
    if isinstance(res, TrainingJob) and res.spec.benchmark.enabled:
        merged["benchmark"] = benchmark_name(res)
    try:
        out = type(status).model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidResult(f"status.{field}: {first['msg']}") from None
    if isinstance(res, DatasetVersion) and isinstance(result.get("digest"), str):
        # Known only now: the content-addressed version the step wrote (or found already there).
        out.output_prefix = layout.dataset_version_prefix(res.spec.dataset, result["digest"])
        record = out.find_run(out.run_id) if out.run_id else None
        if record is not None:
            record.output_prefix = out.output_prefix
    if isinstance(res, Benchmark) and isinstance(out, BenchmarkStatus):
        _gate_condition(res, out, generation)
    _set_run_phase(out, "Succeeded")
    out.completion_time = None
    if isinstance(res, InferenceService):
        return out  # serving: Ready once its server answers, which the runtime reports
    return set_phase(out, Phase.SUCCEEDED, SUCCEEDED, "", generation)


def _gate_condition(res: Benchmark, status: BenchmarkStatus, generation: int | None) -> None:
    """GatePassed, only for a Benchmark with spec.gate: True/False with the numbers that decided it.
    (status.gate is there either way: without a gate the winner is the best model, and it is promoted.)"""
    if not res.spec.gate:
        status.conditions = [c for c in status.conditions if c.type != GATE_PASSED]
        return
    if status.gate is None:
        return  # a step that does not evaluate gates (an older image): nothing to say
    gate = status.gate
    message = gate.message
    if not gate.passed and status.promoted is not None:
        message += (f"; still promoted: {status.promoted.training_job} (Benchmark run "
                    f"{status.promoted.benchmark_run})")
    status.set_condition(GATE_PASSED, gate.passed, GATE_PASSED if gate.passed else GATE_FAILED,
                         truncate(message), generation)


def every_output_prefix(status: StatusBase) -> list[str]:
    """What every run of a resource wrote (artifactPolicy: Delete removes these), newest first."""
    prefixes = [r.output_prefix for r in reversed(status.runs) if r.output_prefix]
    if status.output_prefix and status.output_prefix not in prefixes:
        prefixes.insert(0, status.output_prefix)
    return [p.rstrip("/") + "/" for p in prefixes if not p.startswith("blobs/")]

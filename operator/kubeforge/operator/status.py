"""Pure status logic: a Job and its pods -> phase, reason, message; conditions for kstatus.

Conditions follow kstatus (Flux) and Argo CD's expectations:
- `Ready`: True once the resource reached what it was asked for (Succeeded; serving Ready).
- `Reconciling`: True while work is under way (waiting, pending, running).
- `Stalled`: True when no progress will happen without a change (failed, spec change refused).
Every condition carries `observedGeneration`; status carries it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeforge.api.common import Phase, StatusBase

# Reasons (CamelCase), shared with the handlers and the tests.
WAITING_FOR_DATASET_VERSION = "WaitingForDatasetVersion"
WAITING_FOR_MODELS = "WaitingForModels"
WAITING_FOR_EXPORT = "WaitingForExport"
JOB_CREATED = "JobCreated"
JOB_PENDING = "JobPending"
JOB_RUNNING = "JobRunning"
JOB_SUSPENDED = "JobSuspended"
JOB_SUCCEEDED = "Succeeded"
JOB_FAILED = "JobFailed"
JOB_DELETED = "JobDeleted"  # the step Job was deleted before it finished
DEADLINE_EXCEEDED = "DeadlineExceeded"
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
OOM_KILLED = "OOMKilled"
SPEC_CHANGE_REFUSED = "SpecChangeRefused"
INVALID_SPEC = "InvalidSpec"
RESULT_MISSING = "ResultMissing"
DEPLOYMENT_PROGRESSING = "DeploymentProgressing"
SERVING = "Serving"

MAX_MESSAGE = 1024


@dataclass(frozen=True)
class JobOutcome:
    phase: Phase  # PENDING, RUNNING, SUCCEEDED or FAILED
    reason: str
    message: str = ""


def _true(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_ and c.get("status") == "True"), None)


def _terminations(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every terminated state of every container, newest pods first."""
    out = []
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True):
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            for where in ("state", "lastState"):
                term = (cs.get(where) or {}).get("terminated")
                if term:
                    out.append(term)
    return out


def failure_from_pods(pods: list[dict[str, Any]]) -> tuple[str | None, str]:
    """(OOMKilled or None, the step's termination message) from the Job's pods."""
    terms = _terminations(pods)
    oom = any(t.get("reason") == OOM_KILLED for t in terms)
    message = next((t.get("message", "").strip() for t in terms if (t.get("message") or "").strip()), "")
    return (OOM_KILLED if oom else None), message


def job_outcome(job: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> JobOutcome:
    """Where a step Job stands. A failed Job's reason: OOMKilled beats the Job's own reason
    (BackoffLimitExceeded hides why the pods died); the trainer's termination message wins the message."""
    status = job.get("status") or {}
    conditions = status.get("conditions") or []
    if _true(conditions, "Complete") or (_true(conditions, "SuccessCriteriaMet") and not status.get("active")):
        return JobOutcome(Phase.SUCCEEDED, JOB_SUCCEEDED, "the step finished")
    failed = _true(conditions, "Failed") or _true(conditions, "FailureTarget")
    if failed:
        job_reason = failed.get("reason") or JOB_FAILED
        oom, term_message = failure_from_pods(pods or [])
        reason = oom or (job_reason if job_reason in (DEADLINE_EXCEEDED, BACKOFF_LIMIT_EXCEEDED) else JOB_FAILED)
        parts = [p for p in (term_message, failed.get("message") or "") if p]
        if oom and not term_message:
            parts.insert(0, "the step's container was killed for exceeding its memory limit")
        return JobOutcome(Phase.FAILED, reason, truncate("; ".join(parts) or job_reason))
    if _true(conditions, "Suspended") or (job.get("spec") or {}).get("suspend"):
        return JobOutcome(Phase.PENDING, JOB_SUSPENDED, "the Job is suspended (spec.suspend or its queue)")
    if status.get("active") or status.get("ready"):
        return JobOutcome(Phase.RUNNING, JOB_RUNNING, f"{status.get('active', 0)} pod(s) active")
    return JobOutcome(Phase.PENDING, JOB_PENDING, "waiting for the Job's pods to start")


def truncate(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else "…" + message[-(limit - 1):]


def kstatus(phase: Phase, reason: str, message: str) -> list[tuple[str, bool, str, str]]:
    """(type, status, reason, message) of Ready, Reconciling and Stalled for a phase."""
    if phase == Phase.SUCCEEDED:
        return [("Ready", True, reason, message), ("Reconciling", False, reason, ""), ("Stalled", False, reason, "")]
    if phase == Phase.FAILED:
        return [("Ready", False, reason, message), ("Reconciling", False, reason, ""),
                ("Stalled", True, reason, message)]
    return [("Ready", False, reason, message), ("Reconciling", True, reason, message),
            ("Stalled", False, reason, "")]


def status_patch(existing: dict[str, Any] | None, phase: Phase, reason: str, message: str,
                 generation: int | None, extra: dict[str, Any] | None = None, ready: bool = False) -> dict[str, Any]:
    """The status to patch: phase, message, observedGeneration and kstatus conditions merged into the
    existing ones (lastTransitionTime kept when a condition's status did not change), plus `extra`.

    `ready`: a long-running resource (a serving InferenceService) that is Running and Ready."""
    conds = (existing or {}).get("conditions") or []
    holder = StatusBase.model_validate({"conditions": [c for c in conds if isinstance(c, dict)]})
    for type_, value, why, text in kstatus(Phase.SUCCEEDED if ready else phase, reason, message):
        holder.set_condition(type_, value, why, text, generation)
    out: dict[str, Any] = {
        "phase": phase.value, "message": truncate(message), "observedGeneration": generation,
        "conditions": [c.dump() for c in holder.conditions],
    }
    out.update(extra or {})
    return out


def refused_patch(existing: dict[str, Any] | None, generation: int | None, message: str) -> dict[str, Any]:
    """A spec change that cannot be applied: Stalled=True (SpecChangeRefused); phase and Ready stay."""
    conds = (existing or {}).get("conditions") or []
    holder = StatusBase.model_validate({"conditions": [c for c in conds if isinstance(c, dict)]})
    holder.set_condition("Stalled", True, SPEC_CHANGE_REFUSED, message, generation)
    return {"observedGeneration": generation, "conditions": [c.dump() for c in holder.conditions]}


def phase_changed(existing: dict[str, Any] | None, phase: Phase) -> bool:
    return (existing or {}).get("phase") != phase.value


def progress_status(progress: Any) -> dict[str, Any] | None:
    """`status.progress` from a progress.json snapshot, or None when it is not one."""
    if not isinstance(progress, dict):
        return None
    try:
        metrics = {str(k): float(v) for k, v in (progress.get("metrics") or {}).items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        return {"epoch": int(progress.get("epoch") or 0), "epochs": int(progress.get("epochs") or 0),
                "metrics": metrics}
    except (TypeError, ValueError, AttributeError):
        return None  # a progress file from a newer trainer: keep the last good one

"""Pure status logic of the cluster runtime: a Job and its pods -> phase, reason, message.

Phases, conditions, runs and step results are the shared core's (`kubeforge.core.status`);
this module only reads what Kubernetes says about a step's Job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeforge.api.common import Phase
from kubeforge.core.status import truncate

# Reasons (CamelCase) of the cluster runtime; the shared ones (Waiting…, Succeeded, StepFailed,
# InvalidResult, Serving) are the core's and the API's.
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
INVALID_SPEC = "InvalidSpec"
RESULT_MISSING = "ResultMissing"
DEPLOYMENT_PROGRESSING = "DeploymentProgressing"


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

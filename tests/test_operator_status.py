"""Pure status logic of the cluster runtime: Job status -> phase, reason, message.

Phases, kstatus conditions and runs are the core's: tests/test_core_status.py."""

from __future__ import annotations

from typing import Any

from kubeforge.api.common import Phase
from kubeforge.core.status import MAX_MESSAGE
from kubeforge.operator import status as st


def job(conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    return {"spec": {}, "status": {"conditions": conditions or [], **status}}


def pod(reason: str, message: str = "", where: str = "state", created: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created},
            "status": {"containerStatuses": [{where: {"terminated": {"reason": reason, "message": message,
                                                                      "exitCode": 1}}}]}}


def test_pending_running_succeeded() -> None:
    assert st.job_outcome(job()).phase == Phase.PENDING
    assert st.job_outcome(job()).reason == st.JOB_PENDING
    running = st.job_outcome(job(active=1))
    assert (running.phase, running.reason) == (Phase.RUNNING, st.JOB_RUNNING)
    done = st.job_outcome(job([{"type": "Complete", "status": "True"}], succeeded=1))
    assert (done.phase, done.reason) == (Phase.SUCCEEDED, st.JOB_SUCCEEDED)


def test_suspended_job_is_pending_with_its_reason() -> None:
    out = st.job_outcome({"spec": {"suspend": True}, "status": {}})
    assert (out.phase, out.reason) == (Phase.PENDING, st.JOB_SUSPENDED)


def test_failure_carries_the_trainer_termination_message() -> None:
    failed = job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                   "message": "Job has reached the specified backoff limit"}])
    out = st.job_outcome(failed, [pod("Error", "train: class 'dog' not in dataset")])
    assert out.phase == Phase.FAILED and out.reason == st.BACKOFF_LIMIT_EXCEEDED
    assert out.message.startswith("train: class 'dog' not in dataset")
    assert "backoff limit" in out.message


def test_oom_killed_beats_backoff_limit() -> None:
    failed = job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    out = st.job_outcome(failed, [pod("Completed", where="state"), pod("OOMKilled", where="lastState")])
    assert out.reason == st.OOM_KILLED and "memory limit" in out.message


def test_deadline_exceeded_and_unknown_reasons() -> None:
    dl = st.job_outcome(job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                              "message": "Job was active longer than specified deadline"}]))
    assert (dl.reason, dl.message) == (st.DEADLINE_EXCEEDED, "Job was active longer than specified deadline")
    other = st.job_outcome(job([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]))
    assert (other.reason, other.message) == (st.JOB_FAILED, "PodFailurePolicy")


def test_long_messages_are_truncated_from_the_front() -> None:
    out = st.job_outcome(job([{"type": "Failed", "status": "True"}]), [pod("Error", "x" * 5000 + "END")])
    assert len(out.message) <= MAX_MESSAGE and out.message.endswith("END")

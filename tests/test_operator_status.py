"""Pure status logic: Job status -> phase, reason, message; kstatus conditions; progress."""

from __future__ import annotations

from typing import Any

from kubeforge.api.common import Phase
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
    assert len(out.message) <= st.MAX_MESSAGE and out.message.endswith("END")


def cond(patch: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in patch["conditions"] if c["type"] == type_)


def test_kstatus_conditions_per_phase() -> None:
    waiting = st.status_patch(None, Phase.WAITING, st.WAITING_FOR_DATASET_VERSION, "shapes-v1 is not Ready", 3)
    assert waiting["phase"] == "Waiting" and waiting["observedGeneration"] == 3
    assert cond(waiting, "Ready")["status"] == "False"
    assert cond(waiting, "Ready")["reason"] == st.WAITING_FOR_DATASET_VERSION
    assert cond(waiting, "Reconciling")["status"] == "True" and cond(waiting, "Stalled")["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in waiting["conditions"])
    failed = st.status_patch(waiting, Phase.FAILED, st.OOM_KILLED, "killed", 3)
    assert cond(failed, "Stalled")["status"] == "True" and cond(failed, "Reconciling")["status"] == "False"
    assert cond(failed, "Ready")["message"] == "killed"
    done = st.status_patch(None, Phase.SUCCEEDED, st.JOB_SUCCEEDED, "ok", 1, {"digest": "abc"})
    assert cond(done, "Ready")["status"] == "True" and done["digest"] == "abc"


def test_transition_time_kept_when_status_unchanged() -> None:
    first = st.status_patch(None, Phase.PENDING, st.JOB_PENDING, "", 1)
    first["conditions"] = [{**c, "lastTransitionTime": "2000-01-01T00:00:00Z"} for c in first["conditions"]]
    second = st.status_patch(first, Phase.RUNNING, st.JOB_RUNNING, "1 pod(s) active", 1)
    assert cond(second, "Ready")["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    assert cond(second, "Ready")["reason"] == st.JOB_RUNNING
    third = st.status_patch(second, Phase.SUCCEEDED, st.JOB_SUCCEEDED, "", 1)
    assert cond(third, "Ready")["lastTransitionTime"] != "2000-01-01T00:00:00Z"


def test_refused_spec_change_is_stalled_and_keeps_phase() -> None:
    base = st.status_patch(None, Phase.RUNNING, st.JOB_RUNNING, "", 1)
    refused = st.refused_patch(base, 2, "spec.hyperparameters changed after the Job started")
    assert "phase" not in refused and refused["observedGeneration"] == 2
    assert cond(refused, "Stalled") == {**cond(refused, "Stalled"), "status": "True",
                                        "reason": st.SPEC_CHANGE_REFUSED, "observedGeneration": 2}
    assert cond(refused, "Reconciling")["status"] == "True"  # the run itself goes on


def test_progress_from_progress_json() -> None:
    assert st.progress_status({"epoch": 2, "epochs": 8, "metrics": {"loss": 0.5, "flag": True, "x": "n/a"},
                               "phase": "Training"}) == {"epoch": 2, "epochs": 8, "metrics": {"loss": 0.5}}
    assert st.progress_status({"epoch": "two"}) is None
    assert st.progress_status([1, 2]) is None
    assert st.phase_changed({"phase": "Running"}, Phase.SUCCEEDED)
    assert not st.phase_changed({"phase": "Running"}, Phase.RUNNING)

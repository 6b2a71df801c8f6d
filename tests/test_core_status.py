"""The core's statuses (both runtimes): kstatus conditions, runs, step results, progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubeforge.api import TrainingJob, TrainingJobStatus, parse_resource
from kubeforge.api.common import Phase
from kubeforge.core import status as cs
from kubeforge.core.progress import progress_status, read_progress, settle_progress
from kubeforge.steps.runs import train_run
from kubeforge.steps.spec import DatasetRef
from kubeforge.store import LocalStore

GV = "kubeforge.io/v1alpha1"
DATA = DatasetRef(dataset="shapes", digest="a" * 64)


def job(epochs: int = 2, **spec: Any) -> TrainingJob:
    res = parse_resource({"apiVersion": GV, "kind": "TrainingJob", "metadata": {"name": "det", "namespace": "ml"},
                          "spec": {"datasetVersion": "v1", "task": "classification", "model": {"name": "resnet18"},
                                   "hyperparameters": {"epochs": epochs}, **spec}})
    assert isinstance(res, TrainingJob)
    return res


def cond(status: Any, type_: str) -> Any:
    return next(c for c in status.conditions if c.type == type_)


def test_kstatus_conditions_per_phase() -> None:
    waiting = cs.set_phase(TrainingJobStatus(), Phase.WAITING, "WaitingForDatasetVersion", "v1 is not Ready", 3)
    assert waiting.phase == Phase.WAITING and waiting.observed_generation == 3
    assert (cond(waiting, "Ready").status, cond(waiting, "Ready").reason) == ("False", "WaitingForDatasetVersion")
    assert cond(waiting, "Reconciling").status == "True" and cond(waiting, "Stalled").status == "False"
    assert all(c.observed_generation == 3 for c in waiting.conditions)
    failed = cs.set_phase(waiting, Phase.FAILED, "OOMKilled", "killed", 3)
    assert cond(failed, "Stalled").status == "True" and cond(failed, "Reconciling").status == "False"
    assert cond(failed, "Ready").message == "killed" and failed.completion_time is not None
    serving = cs.set_phase(TrainingJobStatus(), Phase.RUNNING, cs.SERVING, "up", 1, ready=True)
    assert cond(serving, "Ready").status == "True" and serving.phase == Phase.RUNNING


def test_transition_time_kept_while_a_condition_keeps_its_status() -> None:
    status = cs.set_phase(TrainingJobStatus(), Phase.PENDING, "JobPending", "", 1)
    for c in status.conditions:
        c.last_transition_time = "2000-01-01T00:00:00Z"
    cs.set_phase(status, Phase.RUNNING, "JobRunning", "1 pod(s) active", 1)
    assert cond(status, "Ready").last_transition_time == "2000-01-01T00:00:00Z"
    assert cond(status, "Ready").reason == "JobRunning"
    cs.set_phase(status, Phase.SUCCEEDED, "Succeeded", "", 1)
    assert cond(status, "Ready").last_transition_time != "2000-01-01T00:00:00Z"


def test_a_new_run_supersedes_an_unfinished_one_and_keeps_the_history() -> None:
    res = job()
    first = train_run(res, "file:///s", DATA)
    status, superseded = cs.start_run(TrainingJobStatus(), first, 1)
    assert superseded == [] and status.run_id == first.run_id and status.output_prefix == first.experiment_prefix
    assert first.experiment_prefix.endswith(f"/runs/{first.run_id}")
    cs.mark_running(status)
    second = train_run(job(epochs=5), "file:///s", DATA)
    assert second.run_id != first.run_id and second.experiment_prefix != first.experiment_prefix
    status, superseded = cs.start_run(status, second, 2)
    assert [r.id for r in superseded] == [first.run_id]
    assert [(r.id, r.phase) for r in status.runs] == [(first.run_id, "Superseded"), (second.run_id, "Pending")]
    # The same inputs again are the same run (a retry resumes it), not a third one.
    status = cs.fail(status, cs.STEP_FAILED, "boom", 2)
    assert status.runs[-1].phase == "Failed" and status.phase == Phase.FAILED
    status, _ = cs.start_run(status, train_run(job(epochs=5), "file:///s", DATA), 2)
    assert len(status.runs) == 2 and status.runs[-1].phase == "Pending" and status.runs[-1].message == ""


def test_a_result_is_validated_against_the_status_model_and_settles_the_run() -> None:
    res = job(benchmark={"enabled": True})
    run = train_run(res, "file:///s", DATA)
    status, _ = cs.start_run(TrainingJobStatus(), run, 1)
    with pytest.raises(cs.InvalidResult, match=r"status\.bestMetric\.epoch"):
        cs.apply_result(res, status, {"bestMetric": {"name": "accuracy", "value": 0.9}}, 1)
    with pytest.raises(cs.InvalidResult, match="expected a JSON object"):
        cs.apply_result(res, status, [1, 2], 1)  # type: ignore[arg-type]
    done = cs.apply_result(res, status, {"bestMetric": {"name": "accuracy", "value": 0.9, "epoch": 2}}, 1)
    assert isinstance(done, TrainingJobStatus) and done.best_metric is not None
    assert done.phase == Phase.SUCCEEDED and done.benchmark == "det-benchmark"
    assert done.latest_succeeded() is not None and done.latest_succeeded().id == run.run_id  # type: ignore[union-attr]
    # A new run's status starts clean: the last run's results live in its record and the store.
    fresh, _ = cs.start_run(done, train_run(job(epochs=9), "file:///s", DATA), 2)
    assert isinstance(fresh, TrainingJobStatus) and fresh.best_metric is None and len(fresh.runs) == 2
    assert cs.every_output_prefix(fresh) == [f"{p}/" for p in (fresh.runs[1].output_prefix, run.experiment_prefix)]


def test_progress_reads_and_settles_after_a_stop(tmp_path: Path) -> None:
    assert progress_status({"epoch": 2, "epochs": 8, "metrics": {"loss": 0.5, "flag": True, "x": "n/a"},
                            "phase": "Training"}).dump() == {"epoch": 2, "epochs": 8, "metrics": {"loss": 0.5}}  # type: ignore[union-attr]
    assert progress_status({"epoch": "two"}) is None and progress_status([1, 2]) is None
    store = LocalStore(tmp_path)
    store.put_bytes("exp/progress.json", json.dumps({"epoch": 1, "epochs": 4, "phase": "Training"}).encode())
    assert read_progress(store, "exp") is not None
    assert settle_progress(store, "exp", "Failed", "interrupted") is True
    assert store.get_json("exp/progress.json")["phase"] == "Failed"
    assert settle_progress(store, "exp", "Stopped", "again") is False  # final already: left alone
    assert settle_progress(store, "missing", "Failed", "x") is False


def test_a_serve_run_records_the_training_run_it_serves_and_a_swap_is_announced() -> None:
    from kubeforge.api import InferenceService, InferenceServiceStatus
    from kubeforge.steps.runs import serve_run

    svc = parse_resource({"apiVersion": GV, "kind": "InferenceService", "metadata": {"name": "svc"},
                          "spec": {"model": {"trainingJob": "det"}}})
    assert isinstance(svc, InferenceService)
    first = serve_run(svc, "file:///s", "experiments/x/runs/aaaaaa1111", "aaaaaa1111")
    status, _ = cs.start_run(InferenceServiceStatus(url="http://x"), first, 1)
    assert isinstance(status, InferenceServiceStatus)
    assert (status.training_run, status.experiment_prefix) == ("aaaaaa1111", "experiments/x/runs/aaaaaa1111")
    assert status.url == "http://x"  # a served model keeps serving while its next run builds
    assert cs.served_run_notice(svc, None, status) is None  # the first model served: nothing swapped
    second = serve_run(svc, "file:///s", "experiments/x/runs/bbbbbb2222", "bbbbbb2222")
    status, _ = cs.start_run(status, second, 1)
    notice = cs.served_run_notice(svc, "aaaaaa1111", status)
    assert notice == ("TrainingJob det: serving run bbbbbb2222 instead of run aaaaaa1111; "
                      "set spec.model.run to pin a run")
    assert cs.served_run_notice(svc, "bbbbbb2222", status) is None

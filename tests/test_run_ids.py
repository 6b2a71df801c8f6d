"""Run ids survive upgrades: fields added to a kind later do not change the id of a spec that leaves them
at their default (else every Benchmark would evaluate again and every service roll after an upgrade)."""

from __future__ import annotations

from typing import Any

from kubeforge.api import Benchmark, InferenceService
from kubeforge.steps.runs import SERVE_RUN_IGNORES, run_id

BENCH_INPUTS = {"dataset": {"dataset": "shapes", "digest": "ab" * 32}, "experiments": ["e/a", "e/b"]}


def _bench(**spec: Any) -> Benchmark:
    return Benchmark.model_validate({
        "apiVersion": "kubeforge.io/v1alpha1", "kind": "Benchmark", "metadata": {"name": "cmp"},
        "spec": {"models": [{"trainingJob": "a"}, {"trainingJob": "b", "checkpoint": "last"}], "split": "val",
                 **spec}})


def _service(**model: Any) -> InferenceService:
    return InferenceService.model_validate({
        "apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService", "metadata": {"name": "svc"},
        "spec": {"model": model or {"trainingJob": "a"}, "runtime": {"maxBatchSize": 4}}})


def test_ids_of_specs_written_before_the_evaluation_fields_are_unchanged() -> None:
    # The ids the release before issue 11 (commit 13df5ae) computed for these very specs.
    assert run_id("Benchmark", _bench().spec, BENCH_INPUTS) == "988b6090cd"
    assert run_id("InferenceService", _service().spec, {"experiment": "e/a"}, SERVE_RUN_IGNORES) == "e58ae74aab"
    # Written out at their defaults (as a cluster's API server fills them in): still the same run.
    explicit = _bench(bootstrap={"resamples": 1000, "seed": 0, "confidence": 0.95}, gate=[])
    assert run_id("Benchmark", explicit.spec, BENCH_INPUTS) == "988b6090cd"
    pick = _service(trainingJob="a", pick="best")
    assert run_id("InferenceService", pick.spec, {"experiment": "e/a"}, SERVE_RUN_IGNORES) == "e58ae74aab"


def test_new_fields_set_to_something_else_are_a_new_run() -> None:
    base = run_id("Benchmark", _bench().spec, BENCH_INPUTS)
    ids = {
        run_id("Benchmark", _bench(gate=[{"metric": "AP50", "min": 0.5}]).spec, BENCH_INPUTS),
        run_id("Benchmark", _bench(bootstrap={"resamples": 10}).spec, BENCH_INPUTS),
        run_id("Benchmark", _bench(speed={"enabled": False}).spec, BENCH_INPUTS),
    }
    assert base not in ids and len(ids) == 3
    by_benchmark = run_id("InferenceService", _service(benchmark="cmp").spec, {"experiment": "e/a"}, SERVE_RUN_IGNORES)
    assert by_benchmark != "e58ae74aab"

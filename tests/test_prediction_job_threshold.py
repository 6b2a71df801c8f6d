"""The predict step's default threshold: with no spec.threshold it applies the F1-optimal threshold the model's
Benchmark recorded (a real Benchmark run of the grey-grid detector of test_predict_threshold, whose scores are
known: a correct detection at 0.369 that 0.5 would hide, the best threshold 0.353), says where it came from in
the result and in predictions.json, and keeps it for the whole run; spec.threshold overrides it; without a
Benchmark the default applies, saying so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kubeforge.api.dataset_operations import DatasetOperation
from kubeforge.datasets.operations import apply_operations
from kubeforge.datasets.versions import load_manifest
from kubeforge.predict import to_dataset
from kubeforge.predict.threshold import DEFAULT_THRESHOLD
from kubeforge.steps import predict
from kubeforge.steps.spec import PredictRun
from kubeforge.store import LocalStore, layout
from tests.test_predict_threshold import BEST, JOB, NS, benchmarked

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, str, str]:
    return benchmarked(tmp_path_factory.mktemp("pred-threshold"))


def run_spec(store: LocalStore, experiment: str, digest: str, name: str, **spec: Any) -> PredictRun:
    run_id = "0123456789"  # one run per PredictionJob name here
    return PredictRun.model_validate({
        "store": store.uri, "namespace": NS, "name": name, "run_id": run_id,
        "spec": {"model": {"trainingJob": JOB}, "input": {"datasetVersion": "circles-v1"}, **spec},
        "model": {"experiment_prefix": experiment, "training_job": JOB, "training_run": "t1"},
        "dataset": {"dataset": "circles", "digest": digest, "name": "circles-v1"},
        "output_prefix": layout.run_output_prefix(layout.prediction_prefix(NS, name), run_id),
        "output_dataset": name})


def scores(store: LocalStore, result: dict[str, Any]) -> list[float]:
    manifest = load_manifest(store, result["dataset"], result["digest"])
    return sorted(round(float(t.split("=")[1]), 3) for a in manifest.annotations for t in a.tags
                  if t.startswith("score="))


def test_no_threshold_uses_the_benchmarks_and_says_so(world: tuple[LocalStore, str, str]) -> None:
    store, experiment, digest = world
    result = predict.run(run_spec(store, experiment, digest, "by-benchmark"))
    assert result["threshold"] == pytest.approx(BEST, abs=1e-3)
    assert f"Benchmark {NS}/{JOB}-benchmark, run b1" in result["thresholdSource"]
    # The two faint objects (0.353, 0.369) are kept: 0.5 would have dropped them; the false positive is not.
    assert scores(store, result) == [0.353, 0.369, 0.76, 0.846]
    source = to_dataset.read_source(store, result["dataset"], result["digest"])
    assert source is not None and source["threshold"] == result["threshold"]
    assert source["thresholdSource"] == result["thresholdSource"]
    assert source["parents"][0]["digest"] == digest


def test_spec_threshold_overrides_it(world: tuple[LocalStore, str, str]) -> None:
    store, experiment, digest = world
    result = predict.run(run_spec(store, experiment, digest, "by-spec", threshold=0.5))
    assert (result["threshold"], result["thresholdSource"]) == (0.5, "spec.threshold")
    assert scores(store, result) == [0.76, 0.846]


def test_a_run_keeps_the_threshold_its_first_attempt_chose(world: tuple[LocalStore, str, str]) -> None:
    """A Benchmark recorded after the first attempt does not change a resumed run's threshold."""
    store, experiment, digest = world
    spec = run_spec(store, experiment, digest, "kept")
    store.put_json(f"{spec.output_prefix}/{predict.THRESHOLD_FILE}", {"value": 0.6, "source": "chosen earlier"})
    result = predict.run(spec)
    assert (result["threshold"], result["thresholdSource"]) == (0.6, "chosen earlier")


def test_without_a_benchmark_the_default_applies(world: tuple[LocalStore, str, str], tmp_path: Path) -> None:
    store, experiment, digest = world
    other = experiment.replace("/runs/t1", "/runs/t2")  # a run no Benchmark evaluated
    for name in (layout.ONNX_EXPORT, layout.MODEL_META):
        store.put_bytes(f"{other}/{name}", store.get_bytes(f"{experiment}/{name}"))
    result = predict.run(run_spec(store, other, digest, "by-default"))
    assert result["threshold"] == DEFAULT_THRESHOLD and "no Benchmark" in result["thresholdSource"]


def test_filter_min_score_keeps_the_confident_predictions(world: tuple[LocalStore, str, str]) -> None:
    """A reviewed version derived from the predictions: `filter: {minScore: 0.5, minAnnotations: 1}`."""
    store, experiment, digest = world
    result = predict.run(run_spec(store, experiment, digest, "to-review"))
    predicted = load_manifest(store, result["dataset"], result["digest"])
    ops = [DatasetOperation.model_validate({"filter": {"minScore": 0.5}})]
    confident = apply_operations([predicted], ops, "reviewed")
    kept = sorted(round(float(t.split("=")[1]), 3) for a in confident.annotations for t in a.tags)
    assert kept == [0.76, 0.846] and len(confident.images) == len(predicted.images)  # objects go, images stay
    both = [DatasetOperation.model_validate({"filter": {"minScore": 0.5, "minAnnotations": 1}})]
    reviewed = apply_operations([predicted], both, "reviewed")
    assert len(reviewed.images) == 2 and len(reviewed.annotations) == 2  # the images left without an object go
    # An object without a score tag (a human's box merged in) is kept whatever the bar.
    unscored = predicted.model_copy(update={"annotations": [a.model_copy(update={"tags": []})
                                                            for a in predicted.annotations]})
    assert len(apply_operations([unscored], ops, "reviewed").annotations) == 4
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        DatasetOperation.model_validate({"filter": {"minScore": 1.5}})

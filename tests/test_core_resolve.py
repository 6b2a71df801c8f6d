"""The core's reference resolution (pure), the same for the local runner and the operator."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.api import DatasetVersion, InferenceService, Resource, TrainingJob, parse_resource
from kubeforge.api.references import WAITING_FOR_EXPORT, WAITING_FOR_MODELS, references
from kubeforge.core.resolve import Waiting, build_run
from kubeforge.core.usage import dataset_version_in_use
from kubeforge.operator.reconcile import data_version_object, implicit_benchmark, may_name

STORE = "s3://bucket/prefix"
GV = "kubeforge.io/v1alpha1"


def res(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> Resource:
    body: dict[str, Any] = {"apiVersion": GV, "kind": kind,
                            "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"}, "spec": spec}
    if status is not None:
        body["status"] = status
    return parse_resource(body)


def version(name: str, digest: str | None, **spec: Any) -> Resource:
    status = {"phase": "Succeeded", "digest": digest} if digest else {"phase": "Running"}
    return res("DatasetVersion", name, {"dataset": "shapes", "source": {"uri": "s3://raw/x/", "format": "coco"},
                                        **spec}, status)


def trained(name: str, *runs: tuple[str, str], dataset: str = "v1") -> Resource:
    records = [{"id": rid, "phase": phase, "outputPrefix": f"experiments/ml_shapes/{name}_torchvision/runs/{rid}"}
               for rid, phase in runs]
    return res("TrainingJob", name, {"datasetVersion": dataset, "task": "classification",
                                     "model": {"name": "resnet18"}},
               {"phase": runs[-1][1] if runs else "Pending", "runs": records, "runId": runs[-1][0] if runs else None})


def lookup(*items: Resource):  # type: ignore[no-untyped-def]
    index = {(r.kind, r.namespace, r.name): r for r in items}
    return lambda kind, ns, name: index.get((kind, ns, name))


def test_derived_version_resolves_every_parent_in_order() -> None:
    child = res("DatasetVersion", "child", {"dataset": "shapes", "parents": ["a", "b"], "operations": [{"merge": {}}]})
    assert isinstance(child, DatasetVersion)
    run = build_run(child, lookup(version("a", "1" * 64), version("b", "2" * 64)), STORE)
    assert [p.digest for p in run.parents] == ["1" * 64, "2" * 64]  # type: ignore[union-attr]
    assert run.parent is not None and run.parent.name == "a"  # type: ignore[union-attr]
    with pytest.raises(Waiting, match=r"spec\.parents\[1\]: DatasetVersion 'b' does not exist"):
        build_run(child, lookup(version("a", "1" * 64)), STORE)
    with pytest.raises(Waiting, match="'b' is Running"):
        build_run(child, lookup(version("a", "1" * 64), version("b", None)), STORE)


def test_a_parent_can_be_the_version_a_prediction_job_produced() -> None:
    child = res("DatasetVersion", "reviewed", {"dataset": "reviewed", "parents": ["PredictionJob/pred", "a"],
                                               "operations": [{"merge": {}}, {"filter": {"minScore": 0.8}}]})
    assert [(r.kind, r.name, r.field) for r in references(child)] == [
        ("PredictionJob", "pred", "spec.parents[0]"), ("DatasetVersion", "a", "spec.parents[1]")]
    pred = {"model": {"trainingJob": "clf"}, "input": {"datasetVersion": "a"}}
    with pytest.raises(Waiting, match=r"spec\.parents\[0\]: PredictionJob 'pred' is Running") as waiting:
        build_run(child, lookup(res("PredictionJob", "pred", pred, {"phase": "Running"}), version("a", "1" * 64)),
                  STORE)
    assert waiting.value.reason == "WaitingForPredictions"
    done = res("PredictionJob", "pred", pred, {"phase": "Succeeded", "dataset": "pred-out", "digest": "2" * 64})
    run = build_run(child, lookup(done, version("a", "1" * 64)), STORE)
    assert [(p.name, p.dataset, p.digest) for p in run.parents] == [  # type: ignore[union-attr]
        ("PredictionJob/pred", "pred-out", "2" * 64), ("a", "shapes", "1" * 64)]
    # The operator finds it among the resources that may name the PredictionJob that just succeeded.
    assert may_name(child.spec.model_dump(by_alias=True), "pred") and not may_name({"x": "pred2"}, "pred")


def test_training_from_a_source_owns_and_waits_for_its_data_version() -> None:
    job = res("TrainingJob", "det", {"source": {"dataset": "shapes", "uri": "s3://raw/shapes/", "format": "coco"},
                                     "task": "object-detection", "model": {"name": "ssdlite320_mobilenet_v3_large"},
                                     "benchmark": {"enabled": True}})
    assert isinstance(job, TrainingJob)
    dsv = data_version_object(job)
    assert dsv["kind"] == "DatasetVersion" and dsv["metadata"]["name"] == "det-data"
    owner = dsv["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "TrainingJob" and owner["uid"] == "uid-det" and owner["controller"] is True
    parse_resource(dsv)  # what the operator creates validates against the API models
    with pytest.raises(Waiting, match="'det-data'") as waiting:
        build_run(job, lookup(), STORE)
    assert waiting.value.reason == "WaitingForDatasetVersion"
    run = build_run(job, lookup(version("det-data", "3" * 64)), STORE)
    assert run.dataset.digest == "3" * 64  # type: ignore[union-attr]
    assert implicit_benchmark(job)["spec"]["datasetVersion"] == "det-data"


def test_models_resolve_to_their_latest_successful_run_or_a_pinned_one() -> None:
    job = trained("clf", ("aaaaaa1111", "Succeeded"), ("bbbbbb2222", "Succeeded"), ("cccccc3333", "Running"))
    svc = res("InferenceService", "svc", {"model": {"trainingJob": "clf"}})
    run = build_run(svc, lookup(job), STORE)
    assert run.experiment_prefix.endswith("/runs/bbbbbb2222")  # type: ignore[union-attr]  # retraining: keeps the last good
    pinned = res("InferenceService", "svc", {"model": {"trainingJob": "clf", "run": "aaaaaa1111"}})
    assert build_run(pinned, lookup(job), STORE).experiment_prefix.endswith("/runs/aaaaaa1111")  # type: ignore[union-attr]
    assert build_run(pinned, lookup(job), STORE).run_id != run.run_id  # another model served: another serve run
    missing = res("InferenceService", "svc", {"model": {"trainingJob": "clf", "run": "dddddd4444"}})
    with pytest.raises(Waiting, match=r"run 'dddddd4444' of TrainingJob 'clf' does not exist \(its runs: aaaaaa1111"):
        build_run(missing, lookup(job), STORE)
    with pytest.raises(Waiting, match="no successful run yet") as waiting:
        build_run(svc, lookup(trained("clf", ("cccccc3333", "Failed"))), STORE)
    assert waiting.value.reason == WAITING_FOR_EXPORT


def test_benchmark_defaults_to_the_first_models_data_and_names_each_model() -> None:
    bench = res("Benchmark", "cmp", {"models": [{"trainingJob": "a"}, {"trainingJob": "b"}]})
    a, b = trained("a", ("aaaaaa1111", "Succeeded"), dataset="v1"), trained("b", ("bbbbbb2222", "Running"))
    with pytest.raises(Waiting, match=r"spec\.models\[1\]\.trainingJob: TrainingJob 'b'") as waiting:
        build_run(bench, lookup(a, b, version("v1", "1" * 64)), STORE)
    assert waiting.value.reason == WAITING_FOR_MODELS
    b = trained("b", ("bbbbbb2222", "Succeeded"))
    run = build_run(bench, lookup(a, b, version("v1", "1" * 64)), STORE)
    assert run.dataset.digest == "1" * 64 and run.output_prefix.endswith(f"/runs/{run.run_id}")  # type: ignore[union-attr]
    assert [m.experiment_prefix.rsplit("/", 1)[1] for m in run.models] == ["aaaaaa1111", "bbbbbb2222"]  # type: ignore[union-attr]


def test_references_are_declared_once_for_every_kind() -> None:
    svc = res("InferenceService", "svc", {"model": {"trainingJob": "clf"}})
    assert isinstance(svc, InferenceService)
    assert [(r.role, r.field, r.kind, r.name) for r in references(svc)] == [
        ("served", "spec.model.trainingJob", "TrainingJob", "clf")]
    job = res("TrainingJob", "ft", {"datasetVersion": "v1", "task": "classification",
                                    "model": {"name": "resnet18", "fromTrainingJob": "base"}})
    assert [(r.role, r.name) for r in references(job)] == [("dataset", "v1"), ("init", "base")]


def test_a_version_another_resource_references_is_in_use() -> None:
    base = version("base", "1" * 64)
    derived = res("DatasetVersion", "derived", {"dataset": "shapes", "parents": ["other", "base"],
                                                "operations": [{"merge": {}}]})
    assert dataset_version_in_use(base, [derived]) == "DatasetVersion derived references it (spec.parents[1])"
    assert dataset_version_in_use(base, [trained("t", dataset="base")]) == \
        "TrainingJob t references it (spec.datasetVersion)"
    assert dataset_version_in_use(base, [version("twin", "1" * 64)]) == \
        "DatasetVersion ml/twin has the same digest"
    assert dataset_version_in_use(base, [version("unrelated", "2" * 64), base]) is None


def test_a_model_that_succeeded_before_runs_were_recorded_still_resolves() -> None:
    """After an operator upgrade, a TrainingJob that succeeded without `runs` is served from its outputPrefix."""
    old = res("TrainingJob", "clf", {"datasetVersion": "v1", "task": "classification", "model": {"name": "resnet18"}},
              {"phase": "Succeeded", "outputPrefix": "experiments/ml_shapes/clf_torchvision"})
    svc = res("InferenceService", "svc", {"model": {"trainingJob": "clf"}})
    assert build_run(svc, lookup(old), STORE).experiment_prefix == "experiments/ml_shapes/clf_torchvision"  # type: ignore[union-attr]


def test_every_waiting_message_is_marked_so_the_operator_logs_it_as_a_state() -> None:
    import logging

    from kubeforge.core.resolve import WAITING_MARK
    from kubeforge.operator.handlers import WaitingIsNotAnError

    with pytest.raises(Waiting) as waiting:
        build_run(res("InferenceService", "svc", {"model": {"trainingJob": "clf"}}), lookup(), STORE)
    assert WAITING_MARK in waiting.value.message
    record = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "Handler %r failed temporarily: %s",
                               ("reconcile", waiting.value.message), None)
    assert WaitingIsNotAnError().filter(record) and record.levelname == "INFO"
    store_error = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "Handler %r failed temporarily: %s",
                                    ("reconcile", "reading the result: timed out"), None)
    assert WaitingIsNotAnError().filter(store_error) and store_error.levelname == "ERROR"

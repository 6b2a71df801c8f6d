"""Reference resolution and ordering (pure: no files, no processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubeforge.api import parse_resource
from kubeforge.local.graph import build_plan
from kubeforge.local.manifests import LoadedResource, ManifestError

GV = "kubeforge.io/v1alpha1"


def dsv(name: str, parent: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"dataset": "shapes", "source": {"uri": "s3://raw/shapes/", "format": "coco"}}
    if parent:
        spec["parent"] = parent
    return {"apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": name}, "spec": spec}


def tj(name: str, dataset: str, *, bench: bool = False, base: str | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "resnet18"}
    if base:
        model["fromTrainingJob"] = base
    return {"apiVersion": GV, "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"datasetVersion": dataset, "task": "classification", "model": model,
                     "benchmark": {"enabled": bench}}}


def bench(name: str, *jobs: str, dataset: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"models": [{"trainingJob": j} for j in jobs]}
    if dataset:
        spec["datasetVersion"] = dataset
    return {"apiVersion": GV, "kind": "Benchmark", "metadata": {"name": name}, "spec": spec}


def isvc(name: str, job: str) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "InferenceService", "metadata": {"name": name},
            "spec": {"model": {"trainingJob": job}}}


def loaded(*docs: dict[str, Any]) -> list[LoadedResource]:
    return [LoadedResource(parse_resource(d), Path("m.yaml"), i, len(docs)) for i, d in enumerate(docs, start=1)]


def labels(docs: list[LoadedResource], **kw: Any) -> list[str]:
    return [n.label for n in build_plan(docs, **kw).nodes]


def test_order_follows_references_then_kind_then_name() -> None:
    # "a" names its parent "z": the reference wins over name order.
    docs = loaded(isvc("svc", "b-job"), bench("cmp", "b-job", "a-job"), tj("b-job", "z"), tj("a-job", "a"),
                  dsv("a", parent="z"), dsv("z"))
    assert labels(docs) == ["DatasetVersion/z", "DatasetVersion/a", "TrainingJob/a-job", "TrainingJob/b-job",
                            "Benchmark/cmp", "InferenceService/svc"]


def test_benchmark_defaults_to_the_first_models_dataset() -> None:
    plan = build_plan(loaded(dsv("v1"), dsv("v2"), tj("a", "v2"), tj("b", "v1"), bench("cmp", "a", "b")))
    node = plan.get(("Benchmark", "default", "cmp"))
    assert node is not None
    dataset = node.dep("dataset")
    assert dataset is not None and dataset.key == ("DatasetVersion", "default", "v2")
    assert [d.key[2] for d in node.deps_with("model")] == ["a", "b"]


def test_implicit_benchmark_is_owned_by_its_job_and_runs_after_it() -> None:
    plan = build_plan(loaded(tj("det", "v1", bench=True), dsv("v1")))
    assert [n.label for n in plan.nodes] == ["DatasetVersion/v1", "TrainingJob/det", "Benchmark/det-benchmark"]
    node = plan.nodes[2]
    assert node.owner == ("TrainingJob", "default", "det")
    assert node.resource.spec.split == "val"  # type: ignore[union-attr]
    assert node.resource.spec.dataset_version == "v1"  # type: ignore[union-attr]


def test_implicit_benchmark_name_clash_is_an_error() -> None:
    with pytest.raises(ManifestError, match=r"TrainingJob/det: spec.benchmark.enabled: the implicit Benchmark "
                                            r"'det-benchmark' clashes"):
        build_plan(loaded(dsv("v1"), tj("det", "v1", bench=True), bench("det-benchmark", "det")))


def test_references_can_be_satisfied_by_succeeded_state() -> None:
    existing = {("DatasetVersion", "default", "v1"): parse_resource(dsv("v1"))}
    plan = build_plan(loaded(tj("a", "v1")), existing)
    assert plan.nodes[0].deps[0].in_plan is False
    assert set(plan.existing) == {("DatasetVersion", "default", "v1")}


def test_every_missing_reference_is_reported_with_its_field() -> None:
    with pytest.raises(ManifestError) as info:
        build_plan(loaded(tj("a", "nope", base="gone"), isvc("svc", "missing-job")))
    assert info.value.problems == [
        "m.yaml (document 1): TrainingJob/a: spec.datasetVersion: DatasetVersion 'nope' not found in namespace "
        "'default'; it is neither in the applied manifests nor Succeeded in the state directory",
        "m.yaml (document 1): TrainingJob/a: spec.model.fromTrainingJob: TrainingJob 'gone' not found in namespace "
        "'default'; it is neither in the applied manifests nor Succeeded in the state directory",
        "m.yaml (document 2): InferenceService/svc: spec.model.trainingJob: TrainingJob 'missing-job' not found in "
        "namespace 'default'; it is neither in the applied manifests nor Succeeded in the state directory",
    ]


def test_references_do_not_cross_namespaces() -> None:
    other = dsv("v1")
    other["metadata"]["namespace"] = "team-b"
    with pytest.raises(ManifestError, match="DatasetVersion 'v1' not found in namespace 'default'"):
        build_plan(loaded(other, tj("a", "v1")))


def test_cycles_are_errors() -> None:
    with pytest.raises(ManifestError, match=r"DatasetVersion/v1: spec.parent: reference cycle: "
                                            r"DatasetVersion/v1 \(spec.parent\) -> DatasetVersion/v1"):
        build_plan(loaded(dsv("v1", parent="v1")))
    with pytest.raises(ManifestError, match=r"reference cycle: TrainingJob/a \(spec.model.fromTrainingJob\) -> "
                                            r"TrainingJob/b \(spec.model.fromTrainingJob\) -> TrainingJob/a"):
        build_plan(loaded(dsv("v1"), tj("a", "v1", base="b"), tj("b", "v1", base="a")))

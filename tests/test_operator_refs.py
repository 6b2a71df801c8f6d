"""Reference resolution in the operator (pure): derived versions and training from a source."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.api import DatasetVersion, TrainingJob, parse_resource
from kubeforge.operator.reconcile import data_version_object, implicit_benchmark
from kubeforge.operator.refs import Waiting, build_run

STORE = "s3://bucket/prefix"
GV = "kubeforge.io/v1alpha1"


def body(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"apiVersion": GV, "kind": kind, "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
           "spec": spec}
    if status is not None:
        out["status"] = status
    return out


def ready_version(name: str, digest: str) -> dict[str, Any]:
    return body("DatasetVersion", name, {"dataset": "shapes", "source": {"uri": "s3://raw/x/", "format": "coco"}},
                {"phase": "Succeeded", "digest": digest})


def getter(*bodies: dict[str, Any]):  # type: ignore[no-untyped-def]
    index = {(b["kind"], b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies}
    return lambda kind, ns, name: index.get((kind, ns, name))


def test_derived_version_resolves_every_parent_in_order() -> None:
    child = parse_resource(body("DatasetVersion", "child", {
        "dataset": "shapes", "parents": ["a", "b"], "operations": [{"merge": {}}]}))
    assert isinstance(child, DatasetVersion)
    get = getter(ready_version("a", "1" * 64), ready_version("b", "2" * 64))
    run = build_run(child, get, STORE)
    assert [p.digest for p in run.parents] == ["1" * 64, "2" * 64]  # type: ignore[union-attr]
    assert run.parent is not None and run.parent.digest == "1" * 64  # type: ignore[union-attr]
    with pytest.raises(Waiting, match="DatasetVersion 'b' does not exist"):
        build_run(child, getter(ready_version("a", "1" * 64)), STORE)


def test_training_from_a_source_owns_and_waits_for_its_data_version() -> None:
    job = parse_resource(body("TrainingJob", "det", {
        "source": {"dataset": "shapes", "uri": "s3://raw/shapes/", "format": "coco"},
        "task": "object-detection", "model": {"name": "ssdlite320_mobilenet_v3_large"},
        "benchmark": {"enabled": True}}))
    assert isinstance(job, TrainingJob)
    dsv = data_version_object(job)
    assert dsv["kind"] == "DatasetVersion" and dsv["metadata"]["name"] == "det-data"
    assert dsv["spec"]["source"]["uri"] == "s3://raw/shapes/" and dsv["spec"]["dataset"] == "shapes"
    owner = dsv["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "TrainingJob" and owner["uid"] == "uid-det" and owner["controller"] is True
    parse_resource(dsv)  # what the operator creates validates against the API models

    with pytest.raises(Waiting, match="'det-data'"):
        build_run(job, getter(), STORE)
    run = build_run(job, getter(ready_version("det-data", "3" * 64)), STORE)
    assert run.dataset.digest == "3" * 64  # type: ignore[union-attr]
    assert implicit_benchmark(job)["spec"]["datasetVersion"] == "det-data"


def test_owned_names_fit_a_dns_label_and_the_local_runner_uses_the_same() -> None:
    from kubeforge.local import graph

    long = "j" * 60
    job = parse_resource(body("TrainingJob", long, {
        "source": {"dataset": "shapes", "uri": "s3://raw/shapes/", "format": "coco"},
        "task": "object-detection", "model": {"name": "ssdlite320_mobilenet_v3_large"},
        "benchmark": {"enabled": True}}))
    assert isinstance(job, TrainingJob)
    bench, dsv = implicit_benchmark(job), data_version_object(job)
    assert len(bench["metadata"]["name"]) <= 63 and len(dsv["metadata"]["name"]) <= 63
    assert bench["spec"]["datasetVersion"] == dsv["metadata"]["name"]
    assert graph.implicit_benchmark(job).name == bench["metadata"]["name"]
    assert graph.implicit_dataset_version(job).name == dsv["metadata"]["name"]

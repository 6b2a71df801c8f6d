"""Build a step's run spec from a resource and what its references produced (pure).

The operator builds the same specs from the same inputs; only where the upstream records
come from differs (the state directory here, the API server there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubeforge.api import Benchmark, DatasetVersion, InferenceService, TrainingJob
from kubeforge.local.graph import Node
from kubeforge.local.manifests import ResourceKey, resource_label
from kubeforge.local.state import Record
from kubeforge.steps import runs
from kubeforge.steps.runs import STEP_NAMES
from kubeforge.steps.spec import DatasetRef, StepRun

__all__ = ["STEP_NAMES", "RunSpecError", "build_run", "upstream_fingerprint"]


class RunSpecError(RuntimeError):
    """An upstream resource succeeded but did not record what this one needs."""


def _dataset_ref(node: Node, role: str, records: Mapping[ResourceKey, Record]) -> DatasetRef:
    dep = node.dep(role)
    assert dep is not None, f"{node.label}: the plan resolved no {role}"
    dsv = records[dep.key].resource
    digest = dsv.status.digest if isinstance(dsv, DatasetVersion) and dsv.status else None
    if not isinstance(dsv, DatasetVersion) or not digest:
        raise RunSpecError(f"{node.label}: {dep.field}: {resource_label(*dep.key)} recorded no status.digest")
    return DatasetRef(dataset=dsv.spec.dataset, digest=digest)


def _parent_refs(node: Node, records: Mapping[ResourceKey, Record]) -> list[DatasetRef]:
    """spec.parent, or every spec.parents entry, in order."""
    refs = []
    for dep in node.deps_with("parent"):
        dsv = records[dep.key].resource
        digest = dsv.status.digest if isinstance(dsv, DatasetVersion) and dsv.status else None
        if not isinstance(dsv, DatasetVersion) or not digest:
            raise RunSpecError(f"{node.label}: {dep.field}: {resource_label(*dep.key)} recorded no status.digest")
        refs.append(DatasetRef(dataset=dsv.spec.dataset, digest=digest, name=dsv.name))
    return refs


def _experiment(node: Node, key: ResourceKey, field: str, records: Mapping[ResourceKey, Record]) -> str:
    prefix = records[key].prefixes.get("experiment")
    if not prefix:
        raise RunSpecError(f"{node.label}: {field}: {resource_label(*key)} recorded no experiment prefix")
    return prefix


def upstream_fingerprint(node: Node, records: Mapping[ResourceKey, Record]) -> dict[str, Any]:
    """What each reference produced, for the spec hash: a change here reruns this resource."""
    out: dict[str, Any] = {}
    for dep in node.deps:
        rec = records[dep.key]
        status = rec.resource.status
        if isinstance(rec.resource, DatasetVersion):
            # The content digest: rebuilding the same data changes nothing downstream.
            out[f"{dep.role}:{dep.key[0]}/{dep.key[2]}"] = {"digest": status.digest if status else None}
        else:
            # A retrained model is a new model even with the same spec.
            out[f"{dep.role}:{dep.key[0]}/{dep.key[2]}"] = {
                "specHash": rec.spec_hash, "completionTime": status.completion_time if status else None,
            }
    return out


def build_run(node: Node, records: Mapping[ResourceKey, Record], store_uri: str) -> tuple[StepRun, dict[str, str]]:
    """The run spec for `node`, and the store prefixes it will write (recorded in state)."""
    res = node.resource
    if isinstance(res, DatasetVersion):
        refs = _parent_refs(node, records)
        # source.uri was made absolute when the manifest was loaded.
        derived = refs if res.spec.parents else []
        return runs.dataset_version_run(res, store_uri, refs[0] if refs else None, derived), {}
    if isinstance(res, TrainingJob):
        base = node.dep("fromTrainingJob")
        init = _experiment(node, base.key, base.field, records) if base is not None else None
        train = runs.train_run(res, store_uri, _dataset_ref(node, "dataset", records), init)
        return train, {"experiment": train.experiment_prefix}
    if isinstance(res, Benchmark):
        experiments = [_experiment(node, dep.key, dep.field, records) for dep in node.deps_with("model")]
        bench = runs.benchmark_run(res, store_uri, _dataset_ref(node, "dataset", records), experiments)
        return bench, {"output": bench.output_prefix}
    if isinstance(res, InferenceService):
        dep = node.dep("trainingJob")
        assert dep is not None
        serve = runs.serve_run(res, store_uri, _experiment(node, dep.key, dep.field, records))
        return serve, {"experiment": serve.experiment_prefix, "output": serve.output_prefix}
    raise TypeError(f"no step for {type(res).__name__}")

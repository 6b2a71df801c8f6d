"""The resources a TrainingJob owns, defined once for the local runner and the operator.

`spec.source` makes a DatasetVersion `<job>-data`; `spec.benchmark.enabled` makes a
Benchmark `<job>-benchmark`. Both runtimes create the same objects under the same names.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kubeforge import GROUP_VERSION
from kubeforge.api.benchmark import Benchmark, BenchmarkModelRef, BenchmarkSpec
from kubeforge.api.common import ObjectMeta, ResourceBase
from kubeforge.api.dataset_version import DatasetSource, DatasetVersion, DatasetVersionSpec
from kubeforge.api.training_job import TrainingJob

OWNER_LABEL = "kubeforge.io/owned-by"


def child_name(base: str, suffix: str, max_len: int = 63) -> str:
    """`<base>-<suffix>`, or a prefix of it plus an 8-hex hash of the whole when too long (deterministic)."""
    full = f"{base}-{suffix}" if suffix else base
    if len(full) <= max_len:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: max_len - 9].rstrip('-.')}-{digest}"


def data_version_name(job: TrainingJob) -> str:
    """The DatasetVersion a job trains on: spec.datasetVersion, or the one made from spec.source."""
    return job.spec.dataset_version or child_name(job.name, "data")


def benchmark_name(job: TrainingJob) -> str:
    return child_name(job.name, "benchmark")


def owner_reference(owner: ResourceBase) -> dict[str, Any]:
    """The controller reference of what `owner` makes (garbage-collected with it, adoptable by no one
    else); the uid only where an API server set one (the local runner has none)."""
    ref: dict[str, Any] = {"apiVersion": GROUP_VERSION, "kind": owner.kind, "name": owner.name, "controller": True}
    if owner.metadata.uid:
        ref |= {"uid": owner.metadata.uid, "blockOwnerDeletion": True}
    return ref


def _owned_meta(job: TrainingJob, name: str) -> ObjectMeta:
    return ObjectMeta(name=name, namespace=job.namespace, labels={OWNER_LABEL: f"TrainingJob.{job.name}"},
                      ownerReferences=[owner_reference(job)])


def implicit_dataset_version(job: TrainingJob) -> DatasetVersion:
    """The DatasetVersion a TrainingJob with `source` owns, so its run records the exact data it saw."""
    if job.spec.source is None:
        raise ValueError(f"{job.key()}: spec.source is not set")
    source = job.spec.source.model_dump(exclude={"dataset"}, exclude_unset=True)
    spec = DatasetVersionSpec(dataset=job.spec.source.dataset, source=DatasetSource.model_validate(source))
    return DatasetVersion(metadata=_owned_meta(job, data_version_name(job)), spec=spec)


def implicit_benchmark(job: TrainingJob) -> Benchmark:
    """The Benchmark a TrainingJob with `benchmark.enabled` owns: its best checkpoint on its val split."""
    spec = BenchmarkSpec(
        dataset_version=data_version_name(job), split="val", models=[BenchmarkModelRef(training_job=job.name)]
    )
    return Benchmark(metadata=_owned_meta(job, benchmark_name(job)), spec=spec)

"""The API models: the single source of truth for the resource kinds.

CRDs are generated from these (``kubeforge crds generate``), and both the local runner
and the operator validate manifests with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each name is imported from its module on first use (PEP 562), so importing one kind's module
# (`kubeforge.api.dataset_version`, what `kubeforge datasets import` needs) does not load them all.
_WHERE = {
    "Benchmark": "benchmark", "BenchmarkSpec": "benchmark", "BenchmarkStatus": "benchmark",
    "Condition": "common", "ObjectMeta": "common", "Phase": "common",
    "DatasetVersion": "dataset_version", "DatasetVersionSpec": "dataset_version",
    "DatasetVersionStatus": "dataset_version",
    "InferenceService": "inference_service", "InferenceServiceSpec": "inference_service",
    "InferenceServiceStatus": "inference_service",
    "PredictionJob": "prediction_job", "PredictionJobSpec": "prediction_job",
    "PredictionJobStatus": "prediction_job",
    "KINDS": "registry", "Resource": "registry", "kind_for": "registry", "parse_resource": "registry",
    "TrainingJob": "training_job", "TrainingJobSpec": "training_job", "TrainingJobStatus": "training_job",
}

if TYPE_CHECKING:
    from kubeforge.api.benchmark import Benchmark, BenchmarkSpec, BenchmarkStatus
    from kubeforge.api.common import Condition, ObjectMeta, Phase
    from kubeforge.api.dataset_version import DatasetVersion, DatasetVersionSpec, DatasetVersionStatus
    from kubeforge.api.inference_service import InferenceService, InferenceServiceSpec, InferenceServiceStatus
    from kubeforge.api.prediction_job import PredictionJob, PredictionJobSpec, PredictionJobStatus
    from kubeforge.api.registry import KINDS, Resource, kind_for, parse_resource
    from kubeforge.api.training_job import TrainingJob, TrainingJobSpec, TrainingJobStatus


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"kubeforge.api.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "KINDS",
    "Benchmark",
    "BenchmarkSpec",
    "BenchmarkStatus",
    "Condition",
    "DatasetVersion",
    "DatasetVersionSpec",
    "DatasetVersionStatus",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "ObjectMeta",
    "Phase",
    "PredictionJob",
    "PredictionJobSpec",
    "PredictionJobStatus",
    "Resource",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "kind_for",
    "parse_resource",
]

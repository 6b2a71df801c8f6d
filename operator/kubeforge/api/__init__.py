"""The API models: the single source of truth for the four resource kinds.

CRDs are generated from these (``kubeforge crds generate``), and both the local runner
and the operator validate manifests with them.
"""

from kubeforge.api.benchmark import Benchmark, BenchmarkSpec, BenchmarkStatus
from kubeforge.api.common import Condition, ObjectMeta, Phase
from kubeforge.api.dataset_version import DatasetVersion, DatasetVersionSpec, DatasetVersionStatus
from kubeforge.api.inference_service import InferenceService, InferenceServiceSpec, InferenceServiceStatus
from kubeforge.api.registry import KINDS, Resource, kind_for, parse_resource
from kubeforge.api.training_job import TrainingJob, TrainingJobSpec, TrainingJobStatus

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
    "Resource",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "kind_for",
    "parse_resource",
]

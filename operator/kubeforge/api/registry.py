"""Kind lookup and parsing of raw manifests into API models."""

from __future__ import annotations

from typing import Any

from kubeforge import GROUP_VERSION
from kubeforge.api.benchmark import Benchmark
from kubeforge.api.dataset_version import DatasetVersion
from kubeforge.api.inference_service import InferenceService
from kubeforge.api.prediction_job import PredictionJob
from kubeforge.api.training_job import TrainingJob

Resource = DatasetVersion | TrainingJob | Benchmark | InferenceService | PredictionJob

# Dependency order: what each kind may reference comes before it.
KINDS: dict[str, type[Resource]] = {
    "DatasetVersion": DatasetVersion,
    "TrainingJob": TrainingJob,
    "Benchmark": Benchmark,
    "InferenceService": InferenceService,
    "PredictionJob": PredictionJob,  # may predict through an InferenceService
}


def kind_for(name: str) -> type[Resource]:
    """Resolve a kind from its name, plural or short name, case-insensitively."""
    wanted = name.lower()
    for kind, cls in KINDS.items():
        if wanted in (kind.lower(), cls.plural, *cls.short_names) or wanted == kind.lower() + "s":
            return cls
    raise KeyError(f"unknown kind {name!r}; expected one of {', '.join(KINDS)}")


def kinds_for(name: str) -> list[type[Resource]]:
    """One kind (as `kind_for`), or every kind in a category (`kubeforge`), like `kubectl get`."""
    wanted = name.lower()
    in_category = [cls for cls in KINDS.values() if wanted in cls.categories]
    if in_category:
        return in_category
    try:
        return [kind_for(name)]
    except KeyError:
        categories = sorted({c for cls in KINDS.values() for c in cls.categories})
        raise KeyError(f"unknown kind {name!r}; expected one of {', '.join(KINDS)} "
                       f"(or a plural or short name), or the category {', '.join(categories)}") from None


def parse_resource(obj: dict[str, Any]) -> Resource:
    """Validate one manifest. Raises ValueError for a foreign kind, ValidationError for bad fields."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a mapping with apiVersion and kind, got {type(obj).__name__}")
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if api_version != GROUP_VERSION:
        raise ValueError(f"apiVersion: expected {GROUP_VERSION!r}, got {api_version!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return KINDS[kind].model_validate(obj)

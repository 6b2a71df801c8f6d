"""What each kind references, declared once: the field, the kind it names, and why a resource waits.

Both runtimes read these declarations: the local runner orders manifests by them and refuses a
reference to nothing; the operator waits on them; the shared core (`kubeforge.core.resolve`) turns
them into a step's run spec; deletion (`artifactPolicy: Delete`) keeps what another resource names.
A new kind or reference is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kubeforge.api.benchmark import Benchmark
from kubeforge.api.dataset_version import DatasetVersion, parent_kind_and_name
from kubeforge.api.inference_service import InferenceService
from kubeforge.api.owned import data_version_name
from kubeforge.api.prediction_job import PredictionJob
from kubeforge.api.registry import Resource
from kubeforge.api.training_job import TrainingJob

# Condition reasons while a reference has not produced what it must.
WAITING_FOR_DATASET_VERSION = "WaitingForDatasetVersion"
WAITING_FOR_MODELS = "WaitingForModels"
WAITING_FOR_EXPORT = "WaitingForExport"
WAITING_FOR_PROMOTION = "WaitingForPromotion"  # a Benchmark whose gate has not passed in any run yet
WAITING_FOR_SERVICE = "WaitingForService"  # a PredictionJob's InferenceService is not Ready
WAITING_FOR_PREDICTIONS = "WaitingForPredictions"  # a derived version's PredictionJob has not succeeded

# What the referencing step uses the reference for:
# parent: a DatasetVersion's parent(s) (a DatasetVersion, or the version a PredictionJob produced); dataset:
# the data a step reads; init: fromTrainingJob's
# checkpoint; model: a Benchmark's model; served: an InferenceService's model (a TrainingJob's run, or
# the winner a Benchmark's promotion gate promoted); canary: an InferenceService's spec.canary model;
# predict: the model a PredictionJob applies (a TrainingJob's run, or a Ready InferenceService).
Role = Literal["parent", "dataset", "init", "model", "served", "canary", "predict"]


@dataclass(frozen=True)
class Reference:
    role: Role
    field: str  # where the user wrote it, e.g. "spec.models[1].trainingJob"
    kind: str  # "DatasetVersion" (must have a digest), "TrainingJob" (must have a successful run),
    # "Benchmark" (must have promoted a model: a run whose gate passed), "InferenceService" (must be Ready)
    # or "PredictionJob" (must have succeeded: its output version)
    name: str
    reason: str  # the condition reason while it is not ready
    run: str | None = None  # a TrainingJob run pinned by id (InferenceService spec.model.run)

    @property
    def needs(self) -> str:
        """What the referenced resource must have produced, in words."""
        if self.kind == "DatasetVersion":
            return "succeed (a dataset digest)"
        if self.kind == "Benchmark":
            return "promote a model (a run whose gate passes)"
        if self.kind == "InferenceService":
            return "be Ready (serving, with an endpoint)"
        if self.kind == "PredictionJob":
            return "succeed (the version of its predictions)"
        return f"succeed in run {self.run!r}" if self.run else "have a successful run"


# A lookup of another resource's spec, for references that depend on it (a Benchmark's default data).
SpecLookup = Callable[[str, str], Resource | None]  # (kind, name) -> resource in the same namespace


def references(res: Resource, lookup: SpecLookup | None = None) -> list[Reference]:
    """Every reference `res` makes, in the order its step uses them.

    A Benchmark without `datasetVersion` evaluates on its first model's training data: that reference
    is known only through `lookup`; without one (or while the model is unknown) it is left out, and the
    model reference itself is what waits or fails.
    """
    if isinstance(res, DatasetVersion):
        if res.spec.parents:
            return [Reference("parent", f"spec.parents[{i}]", kind, name,
                              WAITING_FOR_PREDICTIONS if kind == "PredictionJob" else WAITING_FOR_DATASET_VERSION)
                    for i, (kind, name) in enumerate(map(parent_kind_and_name, res.spec.parents))]
        if res.spec.parent:
            return [Reference("parent", "spec.parent", "DatasetVersion", res.spec.parent,
                              WAITING_FOR_DATASET_VERSION)]
        return []
    if isinstance(res, TrainingJob):
        field = "spec.datasetVersion" if res.spec.source is None else "spec.source (implicit DatasetVersion)"
        out = [Reference("dataset", field, "DatasetVersion", data_version_name(res), WAITING_FOR_DATASET_VERSION)]
        if res.spec.model.from_training_job:
            out.append(Reference("init", "spec.model.fromTrainingJob", "TrainingJob",
                                 res.spec.model.from_training_job, WAITING_FOR_MODELS))
        return out
    if isinstance(res, Benchmark):
        out = [Reference("model", f"spec.models[{i}].trainingJob", "TrainingJob", m.training_job, WAITING_FOR_MODELS)
               for i, m in enumerate(res.spec.models)]
        if res.spec.dataset_version:
            out.append(Reference("dataset", "spec.datasetVersion", "DatasetVersion", res.spec.dataset_version,
                                 WAITING_FOR_DATASET_VERSION))
        elif lookup is not None:
            first = res.spec.models[0].training_job
            job = lookup("TrainingJob", first)
            if isinstance(job, TrainingJob):
                out.append(Reference("dataset", f"spec.models[0].trainingJob ({first}).spec.datasetVersion",
                                     "DatasetVersion", data_version_name(job), WAITING_FOR_DATASET_VERSION))
        return out
    if isinstance(res, InferenceService):
        if res.spec.model.benchmark is not None:
            out = [Reference("served", "spec.model.benchmark", "Benchmark", res.spec.model.benchmark,
                             WAITING_FOR_PROMOTION)]
        else:
            assert res.spec.model.training_job is not None  # the model refuses neither or both
            out = [Reference("served", "spec.model.trainingJob", "TrainingJob", res.spec.model.training_job,
                             WAITING_FOR_EXPORT, run=res.spec.model.run)]
        canary = res.spec.canary
        if canary is not None and canary.model.training_job is not None:
            out.append(Reference("canary", "spec.canary.model.trainingJob", "TrainingJob",
                                 canary.model.training_job, WAITING_FOR_EXPORT, run=canary.model.run))
        return out
    if isinstance(res, PredictionJob):
        model = res.spec.model
        if model.inference_service is not None:
            out = [Reference("predict", "spec.model.inferenceService", "InferenceService", model.inference_service,
                             WAITING_FOR_SERVICE)]
        else:
            assert model.training_job is not None  # the model refuses neither or both
            out = [Reference("predict", "spec.model.trainingJob", "TrainingJob", model.training_job,
                             WAITING_FOR_MODELS, run=model.run)]
        if res.spec.input.dataset_version is not None:
            out.append(Reference("dataset", "spec.input.datasetVersion", "DatasetVersion",
                                 res.spec.input.dataset_version, WAITING_FOR_DATASET_VERSION))
        return out
    raise TypeError(f"no references declared for {type(res).__name__}")

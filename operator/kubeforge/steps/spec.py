"""Run specs: what a step entrypoint is given (`kubeforge step KIND --spec run.json`).

The local runner and the operator both build these from a resource plus what its
references resolved to; a step needs nothing else (no Kubernetes API, no runner state).
Store credentials never appear here: they come from the environment.
Each step writes its result, a partial status of its resource (camelCase), to
`--result FILE` and returns it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kubeforge.api.benchmark import BenchmarkSpec
from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.api.inference_service import InferenceServiceSpec
from kubeforge.api.prediction_job import PredictionJobSpec
from kubeforge.api.training_job import TrainingJobSpec


class _Run(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="Store URI: file:///dir or s3://bucket/prefix.")
    namespace: str
    name: str
    run_id: str | None = Field(default=None, description="The run's id (kubeforge.steps.runs.run_id).")


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    digest: str
    name: str | None = Field(default=None, description="The DatasetVersion it was resolved from (for status).")


class DatasetVersionRun(_Run):
    step: Literal["dataset-version"] = "dataset-version"
    spec: DatasetVersionSpec = Field(description="source.uri is absolute (resolved by the runner).")
    parent: DatasetRef | None = Field(
        default=None, description="spec.parent, or the first of spec.parents: diffed against; same content: Unchanged."
    )
    parents: list[DatasetRef] = Field(default_factory=list, description="spec.parents resolved, in order.")


class TrainRun(_Run):
    step: Literal["train"] = "train"
    spec: TrainingJobSpec
    dataset: DatasetRef
    experiment_prefix: str
    init_checkpoint: str | None = Field(default=None, description="Store key of a checkpoint to start from.")


class BenchmarkModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    training_job: str
    experiment_prefix: str
    checkpoint: Literal["best", "last"] = "best"
    run: str | None = Field(default=None, description="The TrainingJob run evaluated (its id in status.runs).")


class BenchmarkTriton(BaseModel):
    """spec.speed.inferenceService as it was when the run was built (not part of the run id: never waited for)."""

    model_config = ConfigDict(extra="forbid")

    service: str
    ready: bool = False
    url: str | None = None
    model_name: str | None = None
    experiment_prefix: str | None = Field(default=None, description="The TrainingJob run it serves.")


class BenchmarkRun(_Run):
    step: Literal["benchmark"] = "benchmark"
    spec: BenchmarkSpec
    dataset: DatasetRef
    models: list[BenchmarkModel] = Field(min_length=1)
    output_prefix: str
    triton: BenchmarkTriton | None = Field(default=None, description="Where spec.speed times Triton.")


class ServedRun(BaseModel):
    """One TrainingJob run a serve step builds into a repository: a Triton version, or the canary."""

    model_config = ConfigDict(extra="forbid")

    training_run: str
    experiment_prefix: str
    training_job: str | None = None
    version: int | None = Field(default=None, description="Its Triton model version (spec.model.versions).")


class ServeRun(_Run):
    step: Literal["serve"] = "serve"
    spec: InferenceServiceSpec
    experiment_prefix: str = Field(description="The served TrainingJob run's prefix (its export, model_meta.json).")
    training_run: str | None = Field(default=None, description="The id of that TrainingJob run.")
    training_job: str | None = Field(
        default=None, description="The served TrainingJob when it is not spec.model.trainingJob: the winner "
        "a Benchmark promoted (spec.model.benchmark).")
    output_prefix: str = Field(description="Where the Triton model repository goes.")
    model_name: str = Field(description="The Triton model name.")
    versions: list[ServedRun] = Field(
        default_factory=list, description="spec.model.versions resolved: each run's export in <model>/<n>/.")
    canary: ServedRun | None = Field(default=None, description="spec.canary's run: built under <prefix>/canary/.")


class PredictModel(BaseModel):
    """The model a PredictionJob applies, as resolved: a TrainingJob run's export, or a served model."""

    model_config = ConfigDict(extra="forbid")

    experiment_prefix: str = Field(description="The TrainingJob run's prefix (its export and model_meta.json).")
    training_job: str | None = None
    training_run: str | None = Field(default=None, description="The id of that TrainingJob run.")
    inference_service: str | None = Field(default=None, description="Set: predict through this service.")
    url: str | None = Field(default=None, description="The service's endpoint when the run was built.")
    model_name: str | None = Field(default=None, description="The Triton model name.")

    @property
    def label(self) -> str:
        run = f" run {self.training_run}" if self.training_run else ""
        if self.inference_service:
            return f"InferenceService/{self.inference_service} (TrainingJob/{self.training_job}{run})"
        return f"TrainingJob/{self.training_job}{run}"


class PredictRun(_Run):
    step: Literal["predict"] = "predict"
    spec: PredictionJobSpec
    model: PredictModel
    dataset: DatasetRef | None = Field(default=None, description="spec.input.datasetVersion resolved.")
    output_prefix: str = Field(description="Where the run writes its predictions and progress.")
    output_dataset: str = Field(description="The dataset the output version belongs to.")
    caller: Literal["PredictionJob", "kubeforge predict"] = Field(  # "kubeforge predict": CLI_CALLER
        default="PredictionJob", description="Who runs it: a PredictionJob, or `kubeforge predict --format dataset` "
        "(messages, predictions.json and the threshold's source say which).")


CLI_CALLER = "kubeforge predict"  # PredictRun.caller of `kubeforge predict --format dataset`

StepRun = DatasetVersionRun | TrainRun | BenchmarkRun | ServeRun | PredictRun

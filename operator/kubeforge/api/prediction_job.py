"""PredictionJob: applies a model (a served InferenceService, or a TrainingJob's ONNX export run in-process)
to a DatasetVersion, a folder or S3 prefix of images, or a video; its output is a DatasetVersion of the
predictions whose parent is the input version."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from kubeforge import GROUP_VERSION
from kubeforge.api.common import DNS_LABEL_PATTERN, ApiModel, ArtifactPolicy, PrinterColumn, ResourceBase, StatusBase
from kubeforge.api.dataset_operations import ParentVersion
from kubeforge.api.dataset_version import SkippedFile
from kubeforge.api.job_policy import JobPolicy

RUN_PATTERN = r"^[0-9a-f]{6,64}$"


class PredictionModelRef(ApiModel):
    """The model to apply: a served InferenceService, or a TrainingJob's export run with ONNX Runtime."""

    # The same rules as _one_model, for the API server (kubectl apply is refused, not left Failed).
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.inferenceService) != has(self.trainingJob)",
         "message": "set exactly one of inferenceService or trainingJob"},
        {"rule": "!has(self.run) || has(self.trainingJob)",
         "message": "run pins a run of trainingJob; it cannot go with inferenceService"},
    ]})

    inference_service: str | None = Field(
        default=None, min_length=1,
        description="Predict through this InferenceService's endpoint (it must be Ready).")
    training_job: str | None = Field(
        default=None, min_length=1,
        description="Run this TrainingJob's ONNX export in the step's own process (ONNX Runtime, no server).")
    run: str | None = Field(
        default=None, pattern=RUN_PATTERN,
        description="With trainingJob: this run (an id from its status.runs). Default: its latest successful run.")

    @model_validator(mode="after")
    def _one_model(self) -> PredictionModelRef:
        if (self.inference_service is None) == (self.training_job is None):
            raise ValueError("spec.model: set exactly one of inferenceService or trainingJob")
        if self.run is not None and self.training_job is None:
            raise ValueError("spec.model.run pins a run of spec.model.trainingJob; it cannot go with "
                             "inferenceService")
        return self


class PredictionSource(ApiModel):
    """A folder or an S3 prefix of image files (read recursively; hidden files are left out)."""

    uri: str = Field(min_length=1, description="A local path (absolute, or relative to the manifest file) or an "
                     "S3 prefix (s3://bucket/prefix/).")


class PredictionInput(ApiModel):
    """What the model is applied to: exactly one of datasetVersion, source or video."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.datasetVersion) ? 1 : 0) + (has(self.source) ? 1 : 0) + (has(self.video) ? 1 : 0) == 1",
         "message": "set exactly one of datasetVersion, source or video"},
    ]})

    dataset_version: str | None = Field(
        default=None, min_length=1, description="Every image of this DatasetVersion (the output's parent).")
    source: PredictionSource | None = Field(default=None, description="A folder or S3 prefix of images.")
    video: str | None = Field(
        default=None, min_length=1, description="A video file (local path or s3:// URI): every frame, with its "
        "timestamp.")

    @model_validator(mode="after")
    def _one_input(self) -> PredictionInput:
        given = [n for n in ("dataset_version", "source", "video") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("spec.input: set exactly one of datasetVersion, source or video")
        return self

    @property
    def label(self) -> str:
        """The input in a few words (status.input, the printer column)."""
        if self.dataset_version is not None:
            return f"DatasetVersion/{self.dataset_version}"
        if self.source is not None:
            return self.source.uri
        return f"video {self.video}"


class PredictionOutput(ApiModel):
    """Where the predictions go: a new version of a dataset in the store."""

    dataset: str | None = Field(
        default=None, pattern=DNS_LABEL_PATTERN, max_length=63,
        description="The dataset the predictions are a version of (default: the PredictionJob's name).")


class PredictionJobSpec(JobPolicy):
    """Which model to apply to which images, at which confidence threshold."""

    model: PredictionModelRef
    input: PredictionInput
    threshold: float | None = Field(
        default=None, ge=0, le=1,
        description="Detections scoring below this are left out (default: the F1-optimal threshold the model's "
        "Benchmark found, else 0.5).")
    output: PredictionOutput = Field(default_factory=PredictionOutput)
    on_invalid_image: Literal["Fail", "Skip"] = Field(
        default="Fail",
        description="Fail: an unreadable image or frame fails the run (the predictions made stay; a rerun "
        "continues from them). Skip: it is left out and listed in status.skipped.")
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN

    def output_dataset(self, job_name: str) -> str:
        return self.output.dataset or job_name


class PredictionProgress(ApiModel):
    """How far the current run is, mirrored from its progress.json while it runs."""

    done: int = Field(default=0, ge=0, description="Images (or frames) predicted, those of earlier attempts "
                      "of this run included.")
    total: int | None = Field(default=None, ge=0, description="Images to predict (unknown for a video until "
                              "it is read).")
    skipped: int = Field(default=0, ge=0)
    images_per_second: float | None = Field(default=None, ge=0, description="This attempt's throughput.")
    summary: str = Field(default="", description="e.g. '120/400 (35.2 img/s)'.")


class PredictionJobStatus(StatusBase):
    """The model applied, the progress, and the DatasetVersion of the predictions."""

    model: str | None = Field(default=None, description="What predicts, e.g. 'TrainingJob/det run 1a2b3c4d5e'.")
    input: str | None = Field(default=None, description="What it predicts on.")
    training_job: str | None = Field(default=None, description="The TrainingJob whose model predicts.")
    training_run: str | None = Field(default=None, description="That TrainingJob's run.")
    inference_service: str | None = None
    threshold: float | None = Field(default=None, description="The confidence threshold applied.")
    threshold_source: str | None = Field(default=None, description="Where it came from: spec.threshold, the "
                                         "model's Benchmark (which one, which run), or the default.")
    progress: PredictionProgress | None = None
    predictions_uri: str | None = Field(default=None, description="The predictions as JSON lines, written as "
                                        "they are made (what a rerun continues from).")
    dataset: str | None = Field(default=None, description="The output version's dataset.")
    digest: str | None = Field(default=None, description="The output version's digest.")
    manifest_uri: str | None = None
    source_uri: str | None = Field(default=None, description="predictions.json beside the version: its parent, "
                                   "model, TrainingJob run and threshold.")
    parents: list[ParentVersion] = Field(default_factory=list, description="The input version, as resolved.")
    images: int | None = None
    predictions: int | None = Field(default=None, description="Objects (detection) or labels (classification).")
    skipped: list[SkippedFile] = Field(default_factory=list)
    resumed: int | None = Field(default=None, description="Images an earlier attempt of this run had predicted.")


class PredictionJob(ResourceBase):
    plural: ClassVar[str] = "predictionjobs"
    short_names: ClassVar[list[str]] = ["kfpred"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Model", type="string", json_path=".status.model"),
        PrinterColumn(name="Input", type="string", json_path=".status.input"),
        PrinterColumn(name="Progress", type="string", json_path=".status.progress.summary"),
        PrinterColumn(name="Digest", type="string", json_path=".status.digest", priority=1),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    api_version: Literal["kubeforge.io/v1alpha1"] = GROUP_VERSION
    kind: Literal["PredictionJob"] = "PredictionJob"
    spec: PredictionJobSpec
    status: PredictionJobStatus | None = None

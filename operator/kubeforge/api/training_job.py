"""TrainingJob: trains one model on one DatasetVersion and exports it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kubeforge import GROUP_VERSION
from kubeforge.api.common import DNS_LABEL_PATTERN, ApiModel, ArtifactPolicy, PrinterColumn, ResourceBase, StatusBase
from kubeforge.api.dataset_version import DatasetSource
from kubeforge.api.job_policy import DistributedSpec, JobPolicy
from kubeforge.models import catalog
from kubeforge.models.catalog import Framework, Task


class ModelSpec(ApiModel):
    """The architecture to train and what it starts from (`kubeforge models list` lists the architectures)."""

    framework: Framework | None = Field(
        default=None,
        description="torchvision, timm, smp (segmentation-models-pytorch) or custom; default: the registry's "
        "framework for `name`.",
    )
    name: str = Field(min_length=1, description="Architecture, e.g. resnet18, fasterrcnn_resnet50_fpn_v2, unet11.")
    encoder: str | None = Field(default=None, description="smp deeplabv3plus and fpn: the encoder (default resnet34).")
    pretrained: bool = Field(
        default=False, description="Start from the framework's published weights (downloaded at run time)."
    )
    image_size: int | None = Field(
        default=None, ge=32, le=4096, description="Square input size in pixels (default: the model's own)."
    )
    checkpoint: str | None = Field(default=None, description="Start from this checkpoint URI instead.")
    from_training_job: str | None = Field(default=None, description="Start from this TrainingJob's best checkpoint.")


class SplitSpec(ApiModel):
    """How images are split into train and val (recorded in train_val_split.json of each run)."""

    method: Literal["random"] = "random"
    train_percent: float = Field(default=80.0, gt=0, lt=100)
    seed: int = 0


class OptimizerSpec(ApiModel):
    """The optimizer and its settings."""

    type: Literal["SGD", "AdamW"] = "AdamW"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only.")


class SchedulerSpec(ApiModel):
    """The learning-rate schedule, per iteration, with an optional linear warm-up."""

    type: Literal["none", "step", "cosine"] = "cosine"
    step_size: int = Field(default=10, ge=1, description="step: epochs between decays.")
    gamma: float = Field(default=0.1, gt=0, le=1, description="step: decay factor.")
    warmup_iterations: int = Field(default=0, ge=0, description="Linear warm-up, in iterations.")


class Hyperparameters(ApiModel):
    """Training hyperparameters. Changing any of them is a new run (earlier runs stay)."""

    epochs: int = Field(default=10, ge=1, le=100000)
    batch_size: int = Field(default=8, ge=1, le=4096)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    num_workers: int = Field(default=0, ge=0, le=64)
    checkpoint_every: int | None = Field(default=None, ge=1, description="Also keep a checkpoint every N epochs.")


class ResourcesSpec(ApiModel):
    """What one training pod requests (cluster mode): GPUs, CPU and memory."""

    gpu: int = Field(default=0, ge=0)
    cpu: str | None = None
    memory: str | None = None


class BenchmarkToggle(ApiModel):
    """Evaluate the best checkpoint when training succeeds (a Benchmark `<job>-benchmark`)."""

    enabled: bool = False


class TrainingDataSource(DatasetSource):
    """Raw data for a TrainingJob: a DatasetVersion source plus the dataset it is a version of."""

    dataset: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The dataset this is a version of.")


class TrainingJobSpec(JobPolicy):
    """What to train, on which data, how, and what to export."""

    dataset_version: str | None = Field(
        default=None, min_length=1, description="The DatasetVersion to train on. Exactly one of this or source."
    )
    source: TrainingDataSource | None = Field(
        default=None,
        description="Train on raw data: the runner creates (or reuses) the DatasetVersion <name>-data from it, "
        "so the run still records the exact data it saw.",
    )
    task: Task
    model: ModelSpec
    classes: list[str] | None = Field(
        default=None, min_length=1,
        description="Train on these classes only, in this output order (default: every category of the dataset, "
        "by id). Semantic segmentation puts the background class __bg__ in front (index 0).",
    )
    split: SplitSpec = Field(default_factory=SplitSpec)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    export: list[Literal["onnx"]] = Field(default_factory=lambda: ["onnx"])
    benchmark: BenchmarkToggle = Field(default_factory=BenchmarkToggle)
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)

    @model_validator(mode="after")
    def _one_data_reference(self) -> TrainingJobSpec:
        if (self.dataset_version is None) == (self.source is None):
            raise ValueError("give exactly one of datasetVersion (an existing DatasetVersion) or source (raw data)")
        return self

    @model_validator(mode="after")
    def _registered_model(self) -> TrainingJobSpec:
        # Refused here, when manifests are read, not after a step started.
        if self.model.framework is None:
            self.model.framework = catalog.default_framework(self.model.name, self.task)  # type: ignore[assignment]
        catalog.check_model(self.model.framework, self.model.name, self.task, self.model.encoder)
        return self


class Progress(ApiModel):
    """The last finished epoch of the current run, mirrored from its progress.json."""

    epoch: int = 0
    epochs: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)


class BestMetric(ApiModel):
    """The best validation metric of the current run and the epoch it was reached."""

    name: str
    value: float
    epoch: int


class TrainingJobStatus(StatusBase):
    """What the current run produced; every run is listed in `runs`."""

    dataset_digest: str | None = None
    experiment_uri: str | None = None
    progress: Progress | None = None
    best_metric: BestMetric | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    onnx_uri: str | None = None
    onnx_parity_max_abs_diff: float | None = None
    benchmark: str | None = Field(default=None, description="The Benchmark created for the best checkpoint.")


class TrainingJob(ResourceBase):
    plural: ClassVar[str] = "trainingjobs"
    short_names: ClassVar[list[str]] = ["tj"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Dataset", type="string", json_path=".spec.datasetVersion"),
        PrinterColumn(name="Model", type="string", json_path=".spec.model.name"),
        PrinterColumn(name="Epochs", type="integer", json_path=".spec.hyperparameters.epochs"),
        PrinterColumn(name="Epoch", type="integer", json_path=".status.progress.epoch"),
        PrinterColumn(name="Metric", type="string", json_path=".status.bestMetric.name"),
        PrinterColumn(name="Best", type="number", json_path=".status.bestMetric.value"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Run", type="string", json_path=".status.runId", priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    api_version: Literal["kubeforge.io/v1alpha1"] = GROUP_VERSION
    kind: Literal["TrainingJob"] = "TrainingJob"
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None

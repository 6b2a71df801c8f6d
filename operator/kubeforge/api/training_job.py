"""TrainingJob: trains one model on one DatasetVersion and exports it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from kubeforge import GROUP_VERSION
from kubeforge.api.augmentations import Augmentation
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
    name: str = Field(
        min_length=1, description="Architecture, e.g. resnet18, fasterrcnn_resnet50_fpn_v2, unet11 (framework custom: "
        "a name in the trainer's models.yaml)."
    )
    encoder: str | None = Field(default=None, description="smp deeplabv3plus and fpn: the encoder (default resnet34).")
    pretrained: bool = Field(
        default=False, description="Start from the framework's published weights (downloaded at run time)."
    )
    image_size: int | None = Field(
        default=None, ge=32, le=4096,
        description="Square input size in pixels (default: the model's own). Faster R-CNN, RetinaNet, FCOS and "
        "Mask R-CNN take a multiple of 32 of at least 64 (their feature pyramid's coarsest stride).",
    )
    checkpoint: str | None = Field(
        default=None,
        description="Start from these weights in the store (a key, or a URI inside the store): a Kubeforge "
        "checkpoint or a plain state dict such as a published .pth, for clusters that cannot download weights.",
    )
    from_training_job: str | None = Field(default=None, description="Start from this TrainingJob's best checkpoint.")
    freeze_encoder: bool = Field(
        default=False,
        description="Train the head (and detector necks) only: the backbone/encoder keeps the weights it starts "
        "from (pretrained, checkpoint or fromTrainingJob) and the optimizer never sees its parameters.",
    )
    # Custom models (framework: custom; docs/custom-models.md).
    image: str | None = Field(
        default=None, min_length=1,
        description="framework custom: the container image holding the trainer (built FROM the Kubeforge trainer "
        "image); the training Job runs it. Required for custom, refused otherwise.",
    )
    entrypoint: str | None = Field(
        default=None, min_length=1, pattern=r"^[A-Za-z_][\w.-]*(:[A-Za-z_][\w.]*)?$",
        description="framework custom: the trainer, as its name in the `kubeforge.trainers` entry-point group "
        "(e.g. tinycnn) or as an import path `package.module:function`. Required for custom, refused otherwise.",
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="framework custom: the trainer's own hyperparameters, merged over its hyperparameters.yaml "
        "defaults, passed to its train function and recorded in the run (free-form; spec.hyperparameters does not "
        "apply to custom models).",
    )

    @model_validator(mode="after")
    def _custom_fields(self) -> ModelSpec:
        custom_only = [f for f in ("image", "entrypoint", "parameters") if getattr(self, f) is not None]
        if self.framework == "custom":
            missing = [f for f in ("image", "entrypoint") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"spec.model.{missing[0]}: required when framework is custom "
                                 "(see docs/custom-models.md)")
        elif custom_only:
            raise ValueError(f"spec.model.{custom_only[0]}: only for framework custom, "
                             f"but framework is {self.framework or 'the registry default'}")
        return self


class SplitSpec(ApiModel):
    """How images are split into train and val (recorded in train_val_split.json of each run)."""

    method: Literal["auto", "random", "dataset"] = Field(
        default="auto",
        description="random: a seeded random cut at trainPercent. dataset: the split the DatasetVersion records "
        "(train = images tagged train, val = images tagged val; images tagged test or untagged are not used). "
        "auto: dataset when the version records a split (some image is tagged train or val), else random.",
    )
    train_percent: float = Field(default=80.0, gt=0, lt=100, description="method random: the share of images "
                                 "trained on, in percent.")
    seed: int = Field(default=0, description="method random: the shuffle's seed.")


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


class EarlyStoppingSpec(ApiModel):
    """Stop training when the validation metric stops improving."""

    patience: int = Field(
        default=5, ge=1, le=100000, description="Epochs without an improvement of at least minDelta before stopping."
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="The smallest change of the validation metric that counts as an improvement."
    )


class Hyperparameters(ApiModel):
    """Training hyperparameters. Changing any of them is a new run (earlier runs stay)."""

    epochs: int = Field(default=10, ge=1, le=100000)
    batch_size: int = Field(default=8, ge=1, le=4096)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    num_workers: int = Field(default=0, ge=0, le=64)
    checkpoint_every: int | None = Field(default=None, ge=1, description="Also keep a checkpoint every N epochs.")
    validation_metric: str | None = Field(
        default=None, min_length=1,
        description="The validation metric that picks the best checkpoint and drives early stopping; default: "
        "the task's (classification val_accuracy, object-detection val_AP, instance-segmentation val_mask_AP, "
        "semantic-segmentation val_mIoU). val_loss is minimised, every other metric maximised.",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None,
        description="Stop when the validation metric has not improved for `patience` epochs (default: train "
        "all epochs). The best checkpoint is kept either way.",
    )
    gradient_clip_norm: float | None = Field(
        default=None, gt=0, le=1e6,
        description="Clip the global L2 norm of the gradients to this value before each optimizer step.",
    )
    gradient_accumulation: int = Field(
        default=1, ge=1, le=1024,
        description="Batches per optimizer step: the effective batch is batchSize x this. The learning-rate "
        "schedule (warmupIterations included) counts optimizer steps.",
    )
    mixed_precision: bool = Field(
        default=False,
        description="On a GPU: float16 autocast with a gradient scaler. On a CPU it stays off (recorded in "
        "experiment_info.json).",
    )
    channels_last: bool = Field(
        default=False, description="On a GPU: channels-last memory format (faster convolutions on tensor cores)."
    )
    deterministic: bool = Field(
        default=False,
        description="Deterministic algorithms only (torch.use_deterministic_algorithms, cuDNN without autotuning): "
        "the same run spec gives the same weights on the same hardware, usually somewhat slower on a GPU. An "
        "operation with no deterministic implementation is logged as a warning, not refused.",
    )


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
    augmentations: list[Augmentation] | None = Field(
        default=None, max_length=32,
        description="Training-time augmentations, applied in order to images, boxes and masks together "
        "(validation images are never augmented). Absent: a horizontal flip with p 0.5. An empty list: none.",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    export: list[Literal["onnx", "openvino", "tensorrt"]] = Field(
        default_factory=lambda: ["onnx"],
        description="Formats to export the best checkpoint to. openvino and tensorrt are converted from the ONNX "
        "export (so need onnx); tensorrt needs TensorRT and a GPU and is skipped, with the reason in "
        "status.exports, elsewhere.",
    )
    benchmark: BenchmarkToggle = Field(default_factory=BenchmarkToggle)
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)

    @model_validator(mode="after")
    def _one_data_reference(self) -> TrainingJobSpec:
        if (self.dataset_version is None) == (self.source is None):
            raise ValueError("give exactly one of datasetVersion (an existing DatasetVersion) or source (raw data)")
        return self

    @model_validator(mode="after")
    def _one_starting_point(self) -> TrainingJobSpec:
        if self.model.checkpoint and self.model.from_training_job:
            raise ValueError("model: give at most one of checkpoint and fromTrainingJob")
        return self

    @model_validator(mode="after")
    def _exports_from_onnx(self) -> TrainingJobSpec:
        if self.export and "onnx" not in self.export:
            raise ValueError(f"export: {self.export} are converted from the ONNX export; add onnx to the list")
        if len(set(self.export)) != len(self.export):
            raise ValueError(f"export: duplicate formats in {self.export}")
        return self

    @model_validator(mode="after")
    def _reported_validation_metric(self) -> TrainingJobSpec:
        metric = self.hyperparameters.validation_metric
        reported = catalog.REPORTED_METRICS[self.task]
        if metric is not None and metric not in reported:
            raise ValueError(f"hyperparameters.validationMetric: {self.task} reports {list(reported)}; "
                             f"got {metric!r}")
        return self

    @model_validator(mode="after")
    def _registered_model(self) -> TrainingJobSpec:
        # Refused here, when manifests are read, not after a step started.
        if self.model.framework is None:
            self.model.framework = catalog.default_framework(self.model.name, self.task)  # type: ignore[assignment]
        catalog.check_model(self.model.framework, self.model.name, self.task, self.model.encoder)
        catalog.check_image_size(self.model.framework, self.model.name, self.model.image_size)
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


class ExportStatus(ApiModel):
    """One exported format of the current run: where it is and how close it is to torch, or why it is not."""

    format: str
    uri: str | None = None
    parity_max_abs_diff: float | None = Field(default=None, description="Largest difference from torch on val images.")
    skipped: str | None = Field(default=None, description="Why this format was not produced here.")


class TrainingJobStatus(StatusBase):
    """What the current run produced; every run is listed in `runs`."""

    dataset_digest: str | None = None
    experiment_uri: str | None = None
    progress: Progress | None = None
    best_metric: BestMetric | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    onnx_uri: str | None = None
    onnx_parity_max_abs_diff: float | None = None
    exports: list[ExportStatus] = Field(default_factory=list, description="Every exported format (onnx included).")
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

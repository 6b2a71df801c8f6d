"""The trainer SDK: what a custom model implements to run as a TrainingJob.

A trainer declares its `name` (the spec's `model.framework`), the `models` it can build (name
-> task), its `default_hyperparameters`, and a `train(ctx)` that reads data from the context,
reports progress through `ctx.progress`, writes files under `ctx.output_dir` and returns a
`TrainResult`. It never touches Kubernetes or the store: the `train` step does that.

    from kubeforge_trainers.sdk import Trainer, TrainResult, register_trainer

    @register_trainer
    class MyTrainer(Trainer):
        name = "mylab"
        models = {"tiny-cnn": "classification"}
        def train(self, ctx): ...

Trainers in other packages are found through the `kubeforge.trainers` entry-point group.
A TrainingJob names one with `model: {framework: custom, entrypoint: ...}`, which may also be a plain
`train` function with its models.yaml (`kubeforge_trainers.custom`, docs/custom-models.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from kubeforge.api.training_job import Hyperparameters
from kubeforge.datasets.manifest import Manifest
from kubeforge.models.meta import ModelMeta
from kubeforge_trainers.data import SelectedClass
from kubeforge_trainers.progress import ProgressReporter
from kubeforge_trainers.split import Split

ENTRY_POINT_GROUP = "kubeforge.trainers"


@dataclass
class TrainContext:
    """Everything a trainer gets. Images live at `data.blob_path(image_dir, image.blob)`."""

    task: str
    model_name: str
    manifest: Manifest
    image_dir: Path
    split: Split
    classes: list[SelectedClass]
    hyperparameters: Hyperparameters
    output_dir: Path
    progress: ProgressReporter
    image_size: int | None = None
    pretrained: bool = False
    # smp architectures that take an encoder (spec.model.encoder).
    encoder: str | None = None
    # Local path of a checkpoint to initialise weights from (fine-tuning another run).
    init_checkpoint: Path | None = None
    # Local path of this run's own last checkpoint to continue from (a restarted pod).
    resume_from: Path | None = None
    device: str = "cpu"
    export: list[str] = field(default_factory=lambda: ["onnx"])
    # Plain JSON of the run spec; stored in checkpoints as `args` to replay the run.
    run_args: dict[str, Any] = field(default_factory=dict)
    # What the run trains with (Trainer.run_parameters): custom trainers read their hyperparameters here.
    parameters: dict[str, Any] = field(default_factory=dict)
    # spec.augmentations (kubeforge.api.augmentations models): None = the default flip, [] = none.
    augmentations: list[Any] | None = None
    # spec.resources.cpu: the CPU budget when the container has no cgroup quota (kubeforge_trainers.threads).
    cpu: str | None = None
    # spec.model.freezeEncoder: train the head only.
    freeze_encoder: bool = False

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


@dataclass
class MetricValue:
    name: str
    value: float
    epoch: int


@dataclass
class TrainResult:
    """What a trainer produced. Paths are under `ctx.output_dir`; keys of `files` are relative to it."""

    best_metric: MetricValue
    metrics: dict[str, float]
    epochs_run: int
    seconds_per_epoch: float | None
    files: dict[str, Path]
    model_meta: ModelMeta | None = None
    onnx: Path | None = None
    parity: dict[str, Any] | None = None
    # Formats after ONNX (export_formats.ExportRecord): OpenVINO, TensorRT (or why it was skipped).
    exports: list[Any] = field(default_factory=list)
    # Processes that trained (torchrun's WORLD_SIZE) and the training samples each saw over the run.
    world_size: int = 1
    samples_per_rank: list[int] | None = None
    # How the run trained (camelCase JSON, in experiment_info.json as `training`): what was asked and what
    # the device allowed (mixed precision, threads), where and why it stopped early.
    training: dict[str, Any] = field(default_factory=dict)


class Trainer(ABC):
    name: ClassVar[str]
    models: ClassVar[dict[str, str]]  # model name -> task

    def default_hyperparameters(self, model: str) -> Hyperparameters:
        return Hyperparameters()

    def run_parameters(self, model: str, hyperparameters: Hyperparameters,
                       parameters: dict[str, Any] | None) -> dict[str, Any]:
        """What the run trains with, recorded in hyperparameters.yaml and run_spec.json (built-ins:
        spec.hyperparameters; custom trainers: their defaults under spec.model.parameters)."""
        return hyperparameters.dump()

    def check_model(self, model: str, task: str, encoder: str | None = None) -> None:
        """Refuse a model this trainer cannot build for `task`; the message names the field."""
        if self.models.get(model) is None:
            known = sorted(n for n, t in self.models.items() if t == task)
            raise ValueError(f"spec.model.name: {self.name} has no model {model!r} for {task}; it has {known}")
        if self.models[model] != task:
            raise ValueError(f"spec.model.name: {model!r} is a {self.models[model]} model but spec.task is {task}")
        if encoder is not None:
            raise ValueError(f"spec.model.encoder: {self.name} models take no encoder")

    @abstractmethod
    def train(self, ctx: TrainContext) -> TrainResult: ...


_REGISTRY: dict[str, Trainer] = {}
_plugins_loaded = False


def register_trainer(cls: type[Trainer]) -> type[Trainer]:
    """Register a trainer class (usable as a decorator). A later registration of a name replaces it."""
    if not getattr(cls, "name", None) or not isinstance(getattr(cls, "models", None), dict):
        raise TypeError(f"{cls.__name__}: a trainer needs a `name` and a `models` dict (model name -> task)")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import kubeforge_trainers.builtin_trainer  # noqa: F401  (registers the built-ins)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def get_trainer(framework: str, model: str, task: str, encoder: str | None = None,
                entrypoint: str | None = None) -> Trainer:
    """The trainer for `model.framework` (`custom`: the one `model.entrypoint` names); errors say what exists."""
    if framework == "custom":
        from kubeforge_trainers.custom import load_custom_trainer

        custom = load_custom_trainer(entrypoint)
        custom.check_model(model, task, encoder)
        return custom
    _load_plugins()
    trainer = _REGISTRY.get(framework)
    if trainer is None:
        raise ValueError(f"spec.model.framework: no trainer {framework!r}; registered: {sorted(_REGISTRY)}")
    trainer.check_model(model, task, encoder)
    return trainer


def registered() -> dict[str, Trainer]:
    _load_plugins()
    return dict(_REGISTRY)

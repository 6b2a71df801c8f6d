"""Custom models from YAML: a user's `train` function, run as a TrainingJob with `framework: custom`.

A custom trainer is a Python package with three things side by side (docs/custom-models.md):

- `models.yaml`: the architectures it trains (name, task, default input size) and the data format
  its `train` function reads (`dataFormat`: coco, voc, yolo, imagefolder, supervisely or manifest);
- `hyperparameters.yaml` (optional): its default hyperparameters, free-form; `spec.model.parameters`
  is merged over them and the result is recorded in the run (hyperparameters.yaml, run_spec.json);
- a function `train(data, hyperparameters, log, model, output_dir)` returning what it produced:
  `{"onnx": path, "checkpoint": path, "metrics": {...}, "bestMetric": {"name", "value", "epoch"}}`
  (or a `TrainOutput`). Paths may be relative to `output_dir`.

`spec.model.entrypoint` names the function: its name in the `kubeforge.trainers` entry-point group, or
`package.module:function`. The files are found beside the function's module. Kubeforge prepares the
data (the split's images and annotations of the selected classes, in the asked format, with category
ids renumbered to class indices), validates what comes back (each missing file or field is named),
checks the ONNX export against the model contract (`kubeforge.models.meta`) by running it on
validation images as the Benchmark does, and writes model_meta.json; the train step uploads it all
into the standard layout and writes experiment_info.json last, as for a built-in model.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.api.training_job import Hyperparameters
from kubeforge.datasets.export import EXPORT_FORMATS, WRITERS
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.models.catalog import Task
from kubeforge.models.meta import InputSpec, ModelMeta
from kubeforge.store import layout
from kubeforge_trainers.data import SelectedClass, blob_path
from kubeforge_trainers.progress import ProgressReporter, Stopwatch
from kubeforge_trainers.sdk import ENTRY_POINT_GROUP, MetricValue, TrainContext, Trainer, TrainResult

MODELS_FILE = "models.yaml"
HYPERPARAMETERS_FILE = "hyperparameters.yaml"
# The raw manifest (manifest.json, images at their file names) for trainers that read no standard format.
MANIFEST_FORMAT = "manifest"
# What a trainer may ask for: every format `kubeforge datasets export` writes, and the manifest.
DATA_FORMATS = (*EXPORT_FORMATS, MANIFEST_FORMAT)
# What the train step writes itself: a trainer's extra `files` may not replace them.
RESERVED = frozenset({layout.EXPERIMENT_INFO, layout.MODEL_META, layout.HYPERPARAMETERS, layout.TRAIN_VAL_SPLIT,
                      layout.RUN_SPEC, layout.PROGRESS, layout.METRICS_LOG})
RESERVED_FOLDERS = frozenset({"checkpoints", "export", "logs", "runs"})
# Validation images the export is run on before it is accepted.
SMOKE_IMAGES = 4

T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class CustomModel(_Model):
    """One architecture of a custom trainer (an entry of models.yaml)."""

    name: str = Field(min_length=1)
    task: Task
    image_size: int = Field(ge=32, le=4096, description="Default square input size; spec.model.imageSize wins.")
    description: str = ""


class ModelsFile(_Model):
    """models.yaml."""

    data_format: str
    models: list[CustomModel] = Field(min_length=1)

    @field_validator("data_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in DATA_FORMATS:
            raise ValueError(f"expected one of {list(DATA_FORMATS)}, got {value!r}")
        return value

    @field_validator("models")
    @classmethod
    def _unique(cls, models: list[CustomModel]) -> list[CustomModel]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return models


class BestMetricOut(_Model):
    name: str = Field(min_length=1)
    value: float
    epoch: int = Field(ge=0)


class TrainOutput(_Model):
    """What a custom `train` returns (a dict with these camelCase keys works the same)."""

    onnx: Path | None = Field(default=None, description="The ONNX export (required unless spec.export is []).")
    checkpoint: Path = Field(description="The trained weights; torch.load(..., weights_only=True) must read it.")
    metrics: dict[str, float] = Field(description="Final validation metrics.")
    best_metric: BestMetricOut
    files: dict[str, Path] = Field(default_factory=dict, description="More files to keep: experiment path -> file.")


@dataclass
class ModelChoice:
    """The architecture the TrainingJob asked for."""

    name: str
    task: str
    image_size: int
    pretrained: bool
    device: str
    # A checkpoint to start from (spec.model.checkpoint or fromTrainingJob), else None.
    init_checkpoint: Path | None = None


@dataclass
class PreparedDataset:
    """The TrainingJob's data in the trainer's format: `train` and `val` are two folders in that format.

    Class `i` is `classes[i]`: category id `i` wherever a format writes ids (COCO, YOLO, the manifest);
    VOC, Supervisely and ImageFolder write the class names.
    """

    root: Path
    format: str
    task: str
    classes: list[str]
    train: Path
    val: Path
    train_manifest: Manifest
    val_manifest: Manifest

    @property
    def class_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}


class Logger:
    """Progress and metrics of a custom run: progress.json, metrics.jsonl and the TrainingJob's status."""

    def __init__(self, progress: ProgressReporter) -> None:
        self._progress = progress
        self._watch = Stopwatch()

    @property
    def epochs(self) -> int:
        return self._progress.epochs

    @epochs.setter
    def epochs(self, value: int) -> None:
        self._progress.epochs = value

    def metrics(self, epoch: int, values: Mapping[str, float], seconds: float | None = None) -> None:
        """After each epoch: its metrics (validation metrics start with `val_`); seconds default to the wall time
        since the previous call."""
        if seconds is None:
            seconds = self._watch.seconds()
        self._watch = Stopwatch()
        self._progress.epoch_end(epoch, {k: float(v) for k, v in values.items()}, seconds)

    def phase(self, name: str) -> None:
        self._progress.phase(name)

    def progress(self, items: Iterable[T], total: int, description: str) -> Iterator[T]:
        """Iterate with a progress bar (batches of an epoch, say)."""
        return self._progress.track(items, total, description)

    def info(self, message: str) -> None:
        self._progress.console.print(message)


TrainFunction = Callable[..., "TrainOutput | Mapping[str, Any]"]


class FunctionTrainer(Trainer):
    """A `train` function with its models.yaml and hyperparameters.yaml, as an SDK Trainer."""

    def __init__(self, entrypoint: str, function: TrainFunction) -> None:
        self.name = entrypoint  # type: ignore[misc]
        self.function = function
        self.home = Path(inspect.getfile(function)).resolve().parent
        self.models_file = _read_models(self.home / MODELS_FILE, entrypoint)
        self.models = {m.name: m.task for m in self.models_file.models}  # type: ignore[misc]
        self.defaults = _read_defaults(self.home / HYPERPARAMETERS_FILE)

    def model(self, name: str) -> CustomModel:
        return next(m for m in self.models_file.models if m.name == name)

    def run_parameters(self, model: str, hyperparameters: Hyperparameters,
                       parameters: dict[str, Any] | None) -> dict[str, Any]:
        return merge(self.defaults, parameters or {})

    def train(self, ctx: TrainContext) -> TrainResult:
        from kubeforge_trainers import distributed

        if distributed.current().world_size > 1:
            raise ValueError("spec.distributed: a custom trainer trains in one process; distributed training is for "
                             "the built-in trainers")
        chosen = self.model(ctx.model_name)
        size = ctx.image_size or chosen.image_size
        who = f"custom trainer {self.name!r}"
        ctx.progress.phase("Preparing")
        try:
            data = prepare_dataset(ctx, self.models_file.data_format, ctx.output_dir / "data")
        except ExportError as exc:
            raise ValueError(f"{self.home / MODELS_FILE}: dataFormat {self.models_file.data_format} cannot hold "
                             f"this {ctx.task} dataset: {exc}") from exc
        if not data.val_manifest.images:
            raise ValueError(f"split: the validation split has no images of the selected classes {data.classes}")
        work = ctx.output_dir / "trainer"
        work.mkdir(parents=True, exist_ok=True)
        model = ModelChoice(name=chosen.name, task=ctx.task, image_size=size, pretrained=ctx.pretrained,
                            device=ctx.device, init_checkpoint=ctx.init_checkpoint)
        ctx.progress.phase("Training")
        returned = self.function(data=data, hyperparameters=ctx.parameters, log=Logger(ctx.progress), model=model,
                                 output_dir=work)
        out = check_output(returned, work, who, onnx_required="onnx" in ctx.export)
        files: dict[str, Path] = {layout.CHECKPOINT_BEST: out.checkpoint}
        if ctx.progress.sink is not None:
            # Published now, as the built-in trainers publish checkpoints while they train: the step does not
            # upload a checkpoint again, so a retried run must not find an earlier attempt's there.
            ctx.progress.sink.put_file(layout.CHECKPOINT_BEST, out.checkpoint)
        meta = None
        if out.onnx is not None:
            ctx.progress.phase("Exporting")
            meta = model_meta_for(out.onnx, chosen.name, ctx.task, data.classes, size, who)
            check_export(out.onnx, meta, data, ctx.image_dir, who)
            meta_path = ctx.output_dir / layout.MODEL_META
            meta_path.write_text(meta.model_dump_json(indent=2))
            files[layout.ONNX_EXPORT] = out.onnx
            files[layout.MODEL_META] = meta_path
        for rel, path in out.files.items():
            parts = rel.split("/")
            if rel in RESERVED or parts[0] in RESERVED_FOLDERS or rel.startswith("/") or ".." in parts:
                raise ValueError(f"{who}: returned files[{rel!r}]: expected a path inside the experiment that is none "
                                 f"of Kubeforge's own ({sorted(RESERVED)}, {sorted(RESERVED_FOLDERS)}/)")
            files[rel] = path
        seconds = ctx.progress.epoch_seconds
        best = out.best_metric
        return TrainResult(
            best_metric=MetricValue(best.name, best.value, best.epoch), metrics=out.metrics,
            epochs_run=len(ctx.progress.history), seconds_per_epoch=sum(seconds) / len(seconds) if seconds else None,
            files=files, model_meta=meta, onnx=out.onnx,
        )


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, mappings merged key by key (so `optimizer: {lr: ...}` keeps its other keys)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())


def _read_models(path: Path, entrypoint: str) -> ModelsFile:
    if not path.is_file():
        raise ValueError(f"spec.model.entrypoint: {entrypoint!r} has no {MODELS_FILE}: expected {path} beside the "
                         "module of its train function (see docs/custom-models.md)")
    try:
        return ModelsFile.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as exc:
        detail = _errors(exc) if isinstance(exc, ValidationError) else str(exc)
        raise ValueError(f"{path}: not a valid {MODELS_FILE}: {detail}") from exc


def _read_defaults(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hyperparameter names to values, got {type(data).__name__}")
    return data


def load_custom_trainer(entrypoint: str | None) -> Trainer:
    """The trainer `spec.model.entrypoint` names: an entry-point name or `package.module:function`.

    The object may be a train function (with its YAML files beside it) or an SDK `Trainer` class.
    """
    if not entrypoint:
        raise ValueError("spec.model.entrypoint: required when framework is custom")
    if ":" in entrypoint:
        module_name, _, attr = entrypoint.partition(":")
        try:
            obj = getattr(import_module(module_name), attr)
        except ImportError as exc:
            raise ValueError(f"spec.model.entrypoint: cannot import {module_name!r} ({exc}); is the trainer's package "
                             "installed in the image (or this environment)?") from exc
        except AttributeError:
            raise ValueError(f"spec.model.entrypoint: module {module_name!r} has no {attr!r}") from None
    else:
        found = list(entry_points(group=ENTRY_POINT_GROUP, name=entrypoint))
        if not found:
            known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
            raise ValueError(f"spec.model.entrypoint: no trainer {entrypoint!r} in the {ENTRY_POINT_GROUP!r} "
                             f"entry-point group; installed: {known} (or give package.module:function)")
        obj = found[0].load()
    if isinstance(obj, type) and issubclass(obj, Trainer):
        return obj()
    if inspect.isfunction(obj):
        return FunctionTrainer(entrypoint, obj)
    raise ValueError(f"spec.model.entrypoint: {entrypoint!r} is a {type(obj).__name__}; expected a train function "
                     "or a kubeforge_trainers.sdk.Trainer class")


def _subset(manifest: Manifest, names: Iterable[str], classes: list[SelectedClass]) -> Manifest:
    """The named images with annotations of the selected classes, category ids renumbered to class indices.

    Classification drops images of other classes; detection keeps every image (those with no selected
    object are background).
    """
    new_id = {c.category_id: i for i, c in enumerate(classes)}
    wanted = set(names)
    index: dict[int, int] = {}
    images = []
    for i, img in enumerate(manifest.images):
        if img.file_name not in wanted:
            continue
        if manifest.task == "classification":
            if img.category_id not in new_id:
                continue
            img = img.model_copy(update={"category_id": new_id[img.category_id]})
        if any(t in SPLIT_TAGS for t in img.tags):
            # Each part is one split already: a recorded split would make the exporters write the
            # part back into split folders (`instances_val.json` inside data.train).
            img = img.model_copy(update={"tags": [t for t in img.tags if t not in SPLIT_TAGS]})
        index[i] = len(images)
        images.append(img)
    anns = [a.model_copy(update={"image": index[a.image], "category_id": new_id[a.category_id]})
            for a in manifest.annotations if a.image in index and a.category_id in new_id]
    cats = [Category(id=i, name=c.name) for i, c in enumerate(classes)]
    return Manifest(dataset=manifest.dataset, task=manifest.task, categories=cats, images=images, annotations=anns)


def _write(manifest: Manifest, fmt: str, root: Path, image_dir: Path) -> None:
    """One split in `fmt` under `root`, images linked (or copied) from the step's download cache."""
    tree = ExportTree(root)
    if fmt == MANIFEST_FORMAT:
        tree.text("manifest.json", manifest.model_dump_json(indent=2))
        for img in manifest.images:
            tree.image(img.file_name, img.blob)
    else:
        WRITERS[fmt](manifest, tree)
    for rel, blob in tree.images.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blob_path(image_dir, blob), dest)
        except OSError:  # another filesystem
            shutil.copyfile(blob_path(image_dir, blob), dest)


def prepare_dataset(ctx: TrainContext, fmt: str, root: Path) -> PreparedDataset:
    train = _subset(ctx.manifest, ctx.split.train, ctx.classes)
    val = _subset(ctx.manifest, ctx.split.val, ctx.classes)
    for name, part in (("train", train), ("val", val)):
        _write(part, fmt, root / name, ctx.image_dir)
    return PreparedDataset(root=root, format=fmt, task=ctx.task, classes=ctx.class_names, train=root / "train",
                           val=root / "val", train_manifest=train, val_manifest=val)


def check_output(returned: Any, work: Path, who: str, onnx_required: bool) -> TrainOutput:
    """Validate what `train` returned: every missing or malformed field and every missing file is named."""
    if isinstance(returned, TrainOutput):
        returned = returned.model_dump(by_alias=True)
    if not isinstance(returned, Mapping):
        raise ValueError(f"{who}: train() returned {type(returned).__name__}; expected a mapping with keys "
                         f"{[f.alias for f in TrainOutput.model_fields.values()]} or a TrainOutput")
    try:
        out = TrainOutput.model_validate(returned)
    except ValidationError as exc:
        raise ValueError(f"{who}: train() returned an invalid result: {_errors(exc)}") from exc
    if onnx_required and out.onnx is None:
        raise ValueError(f"{who}: train() returned no 'onnx' (the export), but spec.export asks for onnx")

    def existing(path: Path, what: str) -> Path:
        full = path if path.is_absolute() else work / path
        if not full.is_file():
            raise ValueError(f"{who}: train() returned {what} {str(path)!r}, but there is no such file ({full})")
        return full

    out.checkpoint = existing(out.checkpoint, "checkpoint")
    if out.onnx is not None:
        out.onnx = existing(out.onnx, "onnx")
    out.files = {rel: existing(p, f"files[{rel!r}]") for rel, p in out.files.items()}
    import torch

    try:
        # Fine-tuning another run reads it the same way: plain tensors and containers, no pickled code.
        torch.load(out.checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for what it refuses
        raise ValueError(f"{who}: checkpoint {out.checkpoint}: torch.load(..., weights_only=True) cannot read it "
                         f"(save tensors, e.g. {{'model': model.state_dict()}}): {exc}") from exc
    return out


def model_meta_for(onnx_path: Path, architecture: str, task: str, classes: list[str], size: int,
                   who: str) -> ModelMeta:
    """model_meta.json of a custom export: the graph's one input at `size`, the task's outputs."""
    import onnx

    from kubeforge_trainers.tasks import task_kind

    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is no model
        raise ValueError(f"{who}: onnx {onnx_path}: not an ONNX model: {exc}") from exc
    graph = proto.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"{who}: onnx {onnx_path}: expected one input (float32 RGB [B, 3, H, W] in [0, 1]), "
                         f"the graph has {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, -1) or dims[2] not in (size, -1) or dims[3] not in (size, -1):
        raise ValueError(f"{who}: onnx {onnx_path}: input {inputs[0].name!r} has shape {dims}; expected "
                         f"[B, 3, {size}, {size}] (the model's size: spec.model.imageSize or {MODELS_FILE} imageSize)")
    kind = task_kind(task)
    batched = dims[0] == -1
    if not kind.batched_export and dims[0] != 1:
        raise ValueError(f"{who}: onnx {onnx_path}: a {task} export takes one image per call; the input's batch "
                         f"dimension must be 1, it is {dims[0]}")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return ModelMeta(
        task=task,  # type: ignore[arg-type]
        framework="custom", architecture=architecture, classes=classes,
        input=InputSpec(name=inputs[0].name, dtype="float32", shape=[dims[0], 3, size, size], height=size, width=size,
                        dynamic_batch=batched),
        outputs=kind.outputs(classes, size), onnx_opset=opset,
    )


def check_export(onnx_path: Path, meta: ModelMeta, data: PreparedDataset, image_dir: Path, who: str) -> None:
    """Run the export on validation images exactly as the Benchmark will; its contract errors name the output."""
    from kubeforge.evaluation.inference import OnnxModel
    from kubeforge.models.preprocess import load_rgb

    images = [load_rgb(blob_path(image_dir, img.blob)) for img in data.val_manifest.images[:SMOKE_IMAGES]]
    try:
        model = OnnxModel.load(onnx_path, meta)
        if meta.task == "classification":
            model.classify(images)
        elif meta.task == "object-detection":
            for img in images:
                model.detect(img)
    except Exception as exc:  # ORT's own error types, and the contract's ValueErrors
        raise ValueError(f"{who}: the returned onnx does not meet the {meta.task} contract "
                         f"(docs/custom-models.md): {exc}") from exc


__all__ = ["CustomModel", "FunctionTrainer", "Logger", "ModelChoice", "ModelsFile", "PreparedDataset",
           "TrainOutput", "load_custom_trainer", "merge", "prepare_dataset"]

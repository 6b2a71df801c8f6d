"""The model registry: every architecture a TrainingJob can name, by framework and task.

This module is the one list, and it imports nothing heavy: the API validates `spec.model`
against it when a manifest is read (before anything runs), `kubeforge models list` prints it,
and the trainers build from it (`kubeforge_trainers.builders` maps each entry to code; a test
checks that every entry builds and that `params_m` is what it builds).

`timm` takes any model timm knows (`timm.list_models()`), checked when timm is installed; the
entries listed here are the ones we test. `custom` models are listed by their own trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

Task = Literal["classification", "object-detection", "instance-segmentation", "semantic-segmentation"]
TASKS: tuple[Task, ...] = get_args(Task)
Framework = Literal["torchvision", "timm", "smp", "custom"]
FRAMEWORKS: tuple[Framework, ...] = get_args(Framework)

# Parameter counts are for a head of this many classes (heads differ per dataset).
REFERENCE_CLASSES = 10
# Encoders for the smp architectures that take one (`spec.model.encoder`); all have ImageNet weights.
SMP_ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2", "efficientnet-b0",
                "efficientnet-b3", "vgg11", "vgg16")
DEFAULT_SMP_ENCODER = "resnet34"
# Every validation metric a task's evaluation reports (`spec.hyperparameters.validationMetric` picks one);
# the first is the task's default, the one that picks the best checkpoint and stops early.
REPORTED_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("val_accuracy", "val_loss"),
    "object-detection": ("val_AP", "val_AP50"),
    "instance-segmentation": ("val_mask_AP", "val_mask_AP50", "val_AP", "val_AP50"),
    "semantic-segmentation": ("val_mIoU", "val_pixel_accuracy", "val_loss"),
}
VALIDATION_METRIC: dict[str, str] = {task: metrics[0] for task, metrics in REPORTED_METRICS.items()}
# Metrics where lower is better; every other one is maximised.
MINIMISED_METRICS = frozenset({"val_loss"})


@dataclass(frozen=True)
class BenchmarkMetrics:
    """What a Benchmark reports of a task (metrics.json keys, `metrics.<key>` of a model entry).

    headline: the model entry's `headline` and the status metrics, in order; each gets a bootstrap
        interval, so only metrics a resample recomputes cheaply belong here. The first is the one the
        status line shows and the one a gate without conditions picks the winner on.
    report_extra: more scalars the report's headline table shows after them, without an interval.
    per_image: the per-image score (`perImage.metric`) the galleries and disagreements rank by.
    per_class: the keys of a `perClass` row the report's per-class table shows, in order.
    per_class_compared: the per-class key a comparison of models plots class by class.
    minimised: metric names (as a gate names them) where lower is better.
    """

    headline: tuple[str, ...]
    report_extra: tuple[str, ...]
    per_image: str
    per_class: tuple[str, ...]
    per_class_compared: str
    minimised: frozenset[str] = frozenset()


# COCO's AP at IoU .50:.95, .50 and .75: what a bootstrap resample recomputes (evaluation.cocoeval's one cell).
_BOX_AP = ("AP", "AP50", "AP75")
# The operating point (evaluation.detection): the F1-optimal confidence and what it yields.
_OPERATING_POINT = ("precision", "recall", "f1", "threshold")
# COCO's AP by object size and AR: a full accumulation each, too slow per resample.
_BOX_EXTRA = ("APs", "APm", "APl", "AR1", "AR10", "AR100")
# Calibration errors (metrics.calibration), by their short and their dotted name.
_CALIBRATION_MINIMISED = frozenset({"ece", "mce", "calibration.ece", "calibration.mce"})
# Per-class rows of detection: COCO AP, then the operating point's numbers (evaluation.detection).
_BOX_PER_CLASS = ("AP", "AP50", "precision", "recall", "f1", "tp", "fp", "fn", "support")
BENCHMARK_METRICS: dict[str, BenchmarkMetrics] = {
    "object-detection": BenchmarkMetrics((*_BOX_AP, *_OPERATING_POINT), _BOX_EXTRA, "f1", _BOX_PER_CLASS, "AP",
                                         _CALIBRATION_MINIMISED),
    # Masks first: COCO's segm AP is the primary number of instance segmentation.
    "instance-segmentation": BenchmarkMetrics((*(f"mask{k}" for k in _BOX_AP), *_BOX_AP, *_OPERATING_POINT),
                                              _BOX_EXTRA, "f1", ("maskAP", "maskAP50", *_BOX_PER_CLASS), "maskAP",
                                              _CALIBRATION_MINIMISED),
    "classification": BenchmarkMetrics(("accuracy", "macroPrecision", "macroRecall", "macroF1", "weightedF1"),
                                       ("weightedPrecision", "weightedRecall"), "trueClassProbability",
                                       ("precision", "recall", "f1", "rocAuc", "support"), "f1",
                                       _CALIBRATION_MINIMISED),
    "semantic-segmentation": BenchmarkMetrics(("mIoU", "meanDice", "pixelAccuracy"), ("backgroundIoU",), "mIoU",
                                              ("iou", "boundaryIoU", "dice", "truthPixels", "predictedPixels"),
                                              "iou"),
}
# Every name a gate may use for a lower-is-better Benchmark metric.
BENCHMARK_MINIMISED = frozenset().union(*(m.minimised for m in BENCHMARK_METRICS.values()))
# Benchmark metrics that live below `metrics` in a model entry, by the name a gate uses.
BENCHMARK_NESTED: dict[str, tuple[str, ...]] = {
    "ece": ("calibration", "ece"),
    "mce": ("calibration", "mce"),
    "calibration.ece": ("calibration", "ece"),
    "calibration.mce": ("calibration", "mce"),
    "matchedIoU": ("matchedIoU",),
    "boundaryIoU": ("boundaryIoU",),
    "rocAuc": ("rocAuc",),
    "top1": ("topK", "top1"),
    "top3": ("topK", "top3"),
    "top5": ("topK", "top5"),
}

# What `Benchmark.spec.gate[].metric` may name (any task's), and those with bootstrap intervals, which
# `significant: true` needs (the threshold is a setting, not a score).
GATE_METRICS = frozenset().union(*((*m.headline, *m.report_extra) for m in BENCHMARK_METRICS.values()),
                                 BENCHMARK_NESTED) - {"threshold"}
INTERVAL_METRICS = frozenset().union(*(m.headline for m in BENCHMARK_METRICS.values())) - {"threshold"}


def benchmark_best(doc_models: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> dict[str, str]:
    """metrics.json `comparison.best`: for each metric of the models' headlines and their tasks' report_extra
    (the threshold, a setting, left out), the model with the highest value, or the lowest for a minimised
    metric; the first in `order` on ties."""
    out: dict[str, str] = {}
    for m in order:
        spec = BENCHMARK_METRICS.get(doc_models[m].get("task", ""))
        for k in (*doc_models[m]["headline"], *(spec.report_extra if spec else ())):
            if k in out or k == "threshold":
                continue
            # The headline's rounded value where it has one: the value the table and the status show.
            values = {n: v for n in order if isinstance(
                v := doc_models[n]["headline"].get(k, (doc_models[n].get("metrics") or {}).get(k)), int | float)}
            if values:
                pick = min if k in BENCHMARK_MINIMISED else max
                out[k] = pick(values, key=lambda n, values=values: values[n])
    return out


# The dataset-version task each training task reads: segmentation trains on object annotations
# whose `segmentation` (polygons or RLE) carries the masks.
DATASET_TASK: dict[str, str] = {
    "classification": "classification",
    "object-detection": "object-detection",
    "instance-segmentation": "object-detection",
    "semantic-segmentation": "object-detection",
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: Task
    framework: Framework
    family: str
    default_image_size: int
    params_m: float  # millions, at REFERENCE_CLASSES classes
    pretrained_weights: bool  # published weights exist (ImageNet backbone or the whole model)
    description: str = ""
    # smp architectures that take `spec.model.encoder`; others refuse it.
    encoder: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "task": self.task, "framework": self.framework, "family": self.family,
                "defaultImageSize": self.default_image_size, "parametersM": self.params_m,
                "pretrainedWeights": self.pretrained_weights, "encoder": self.encoder,
                "description": self.description}


def _e(name: str, task: Task, framework: Framework, family: str, size: int, params_m: float, weights: bool = True,
       description: str = "", encoder: str | None = None) -> ModelEntry:
    return ModelEntry(name, task, framework, family, size, params_m, weights, description, encoder)


_C: Task = "classification"
_D: Task = "object-detection"
_I: Task = "instance-segmentation"
_S: Task = "semantic-segmentation"

ENTRIES: tuple[ModelEntry, ...] = (
    # Classification, torchvision. 64 px by default: the generated shapes and CPU runs; set
    # imageSize: 224 with pretrained weights on real photos.
    _e("resnet18", _C, "torchvision", "ResNet", 64, 11.18),
    _e("resnet34", _C, "torchvision", "ResNet", 64, 21.29),
    _e("resnet50", _C, "torchvision", "ResNet", 64, 23.53),
    _e("resnet101", _C, "torchvision", "ResNet", 64, 42.52),
    _e("efficientnet_b0", _C, "torchvision", "EfficientNet", 64, 4.02),
    _e("efficientnet_b1", _C, "torchvision", "EfficientNet", 64, 6.53),
    _e("efficientnet_b2", _C, "torchvision", "EfficientNet", 64, 7.72),
    _e("efficientnet_b3", _C, "torchvision", "EfficientNet", 64, 10.71),
    _e("efficientnet_v2_s", _C, "torchvision", "EfficientNet", 64, 20.19),
    _e("convnext_tiny", _C, "torchvision", "ConvNeXt", 64, 27.83),
    _e("convnext_small", _C, "torchvision", "ConvNeXt", 64, 49.46),
    _e("mobilenet_v2", _C, "torchvision", "MobileNet", 64, 2.24),
    _e("mobilenet_v3_small", _C, "torchvision", "MobileNet", 64, 1.53),
    _e("mobilenet_v3_large", _C, "torchvision", "MobileNet", 64, 4.21),
    # Classification, timm: any timm name works; these are the ones the tests train.
    _e("resnet18", _C, "timm", "timm", 64, 11.18, description="any timm model name is accepted"),
    _e("efficientnet_b0", _C, "timm", "timm", 64, 4.02, description="any timm model name is accepted"),
    _e("mobilenetv3_small_050", _C, "timm", "timm", 64, 0.58, description="any timm model name is accepted"),
    # Detection, torchvision.
    _e("ssdlite320_mobilenet_v3_large", _D, "torchvision", "SSD", 160, 2.33,
       description="ImageNet backbone weights"),
    _e("fasterrcnn_resnet50_fpn_v2", _D, "torchvision", "Faster R-CNN", 512, 43.3),
    _e("fasterrcnn_mobilenet_v3_large_fpn", _D, "torchvision", "Faster R-CNN", 320, 19.0),
    _e("retinanet_resnet50_fpn_v2", _D, "torchvision", "RetinaNet", 512, 36.54),
    _e("fcos_resnet50_fpn", _D, "torchvision", "FCOS", 512, 32.14),
    # Instance segmentation, torchvision.
    _e("maskrcnn_resnet50_fpn_v2", _I, "torchvision", "Mask R-CNN", 512, 45.93),
    # Semantic segmentation: the UNet family as the UNet training apps name it, on smp.
    _e("unet", _S, "smp", "UNet", 128, 1.94, weights=False,
       description="vanilla UNet (5 levels, 16-256 channels), trained from scratch"),
    _e("unet11", _S, "smp", "UNet", 256, 18.26, description="UNet with a VGG11 encoder"),
    _e("unet16", _S, "smp", "UNet", 256, 23.75, description="UNet with a VGG16 encoder"),
    _e("albunet", _S, "smp", "UNet", 256, 24.44, description="UNet with a ResNet34 encoder"),
    _e("linknet34", _S, "smp", "LinkNet", 256, 21.77, description="LinkNet with a ResNet34 encoder"),
    _e("deeplabv3plus", _S, "smp", "DeepLabV3+", 256, 22.44, encoder=DEFAULT_SMP_ENCODER,
       description="spec.model.encoder picks the encoder"),
    _e("fpn", _S, "smp", "FPN", 256, 23.16, encoder=DEFAULT_SMP_ENCODER,
       description="spec.model.encoder picks the encoder"),
)


def entries(task: str | None = None, framework: str | None = None) -> list[ModelEntry]:
    return [e for e in ENTRIES if (task is None or e.task == task) and (framework is None or e.framework == framework)]


def find(framework: str, name: str) -> ModelEntry | None:
    for e in ENTRIES:
        if e.framework == framework and e.name == name:
            return e
    return None


def frameworks_of(name: str) -> list[str]:
    return sorted({e.framework for e in ENTRIES if e.name == name})


def _names(task: str) -> str:
    listed = [f"{e.name} ({e.framework})" for e in entries(task)]
    return ", ".join(listed) if listed else "none"


def default_framework(name: str, task: str) -> str:
    """The framework a bare `model.name` means: the registry's framework for it (torchvision first)."""
    for framework in FRAMEWORKS:
        entry = find(framework, name)
        if entry is not None and entry.task == task:
            return framework
    owners = frameworks_of(name)
    return owners[0] if owners else "torchvision"


def check_model(framework: str, name: str, task: str, encoder: str | None = None) -> ModelEntry | None:
    """Refuse what the registry lacks; the message names the field and lists what `task` has.

    Returns the entry (None for `custom` and for timm names that are not listed but timm knows).
    """
    if task not in TASKS:
        raise ValueError(f"spec.task: expected one of {list(TASKS)}, got {task!r}")
    if framework not in FRAMEWORKS:
        raise ValueError(f"spec.model.framework: expected one of {list(FRAMEWORKS)}, got {framework!r}")
    if framework == "custom":
        return None
    entry = find(framework, name)
    if entry is None and framework == "timm":
        if task != "classification":
            raise ValueError(f"spec.model.framework: timm models are classifiers; spec.task is {task}. "
                             f"Models for {task}: {_names(task)}")
        _check_timm_name(name)
        if encoder is not None:
            raise ValueError("spec.model.encoder: only the smp architectures deeplabv3plus and fpn take an encoder")
        return None
    if entry is None:
        also = [f for f in frameworks_of(name) if f != framework]
        hint = f" ({name!r} is a {also[0]} model: set spec.model.framework: {also[0]})" if also else ""
        raise ValueError(f"spec.model.name: no {framework} model {name!r} for {task}{hint}. "
                         f"Models for {task}: {_names(task)}")
    if entry.task != task:
        raise ValueError(f"spec.model.name: {name!r} is a {entry.task} model, but spec.task is {task}. "
                         f"Models for {task}: {_names(task)}")
    if encoder is not None and entry.encoder is None:
        takes = [e.name for e in ENTRIES if e.encoder is not None]
        raise ValueError(f"spec.model.encoder: {name!r} has a fixed encoder; only {takes} take one")
    if encoder is not None and encoder not in SMP_ENCODERS:
        raise ValueError(f"spec.model.encoder: expected one of {list(SMP_ENCODERS)}, got {encoder!r}")
    return entry


def _check_timm_name(name: str) -> None:
    """timm's own list, when timm is installed here; otherwise the trainer checks it when the run starts."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return
    import timm

    if not timm.list_models(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ValueError(f"spec.model.name: timm has no model {name!r}; similar names: {close} "
                         "(`python -c 'import timm; print(timm.list_models())'` lists them all)")


def trains_on(task: str, dataset_task: str) -> bool:
    """Whether a dataset version of `dataset_task` holds what a `task` model learns from (DATASET_TASK)."""
    return DATASET_TASK[task] == dataset_task


# Families whose feature pyramid halves the input five times (strides 4-32, RetinaNet/FCOS add 64 and 128
# as extra levels on P5): an input that is not a multiple of 32 would be padded inside the graph, so the
# export would compute on pixels nobody sent and the mask head would paste onto a padded canvas.
SIZE_MULTIPLE: dict[str, int] = {"Faster R-CNN": 32, "RetinaNet": 32, "FCOS": 32, "Mask R-CNN": 32}
# Below this the FPN's coarsest level (stride 32) is a single cell: nothing left to detect at.
MIN_FPN_SIZE = 64


def check_image_size(framework: str, name: str, size: int | None) -> None:
    """Refuse an input size the model's feature pyramid cannot take; the message names the field."""
    entry = find(framework, name)
    if entry is None or size is None:
        return
    multiple = SIZE_MULTIPLE.get(entry.family)
    if multiple is None:
        return
    if size % multiple or size < MIN_FPN_SIZE:
        below = max(MIN_FPN_SIZE, size // multiple * multiple)
        above = max(MIN_FPN_SIZE, -(-size // multiple) * multiple)
        hint = f"{below}" if below == above else f"{below} or {above}"
        raise ValueError(f"spec.model.imageSize: {name} ({entry.family}) takes a multiple of {multiple} (its feature "
                         f"pyramid's coarsest stride) of at least {MIN_FPN_SIZE} px, got {size}; try {hint}")


def as_json(task: str | None = None) -> list[dict[str, object]]:
    return [e.to_json() for e in entries(task)]


__all__ = ["ENTRIES", "FRAMEWORKS", "TASKS", "ModelEntry", "check_model", "entries", "find"]

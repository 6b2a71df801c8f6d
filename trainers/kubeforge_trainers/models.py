"""Builds every model of the registry (`kubeforge.models.catalog`) from its framework's code.

Every built model takes float32 RGB in [0, 1]: normalisation is part of the module (or of the
detector's own transform), so training, checkpoints and the ONNX export share one graph and
consumers only scale pixels (`kubeforge.models.preprocess`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from kubeforge.models import catalog
from kubeforge.models.catalog import ModelEntry

# ImageNet statistics: torchvision/timm classifiers and smp encoders expect them.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# SSDlite rescales [0, 1] to [-1, 1] inside its own transform (torchvision's choice).
SSDLITE_MEAN = [0.5, 0.5, 0.5]
SSDLITE_STD = [0.5, 0.5, 0.5]
# Detections kept per image: enough for AP, small enough for a cheap ONNX NMS (RECIPES).
DETECTIONS_PER_IMAGE = 100


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry with what building it needs to know."""

    entry: ModelEntry
    mean: list[float]
    std: list[float]
    build: Callable[[int, int, bool, str | None], nn.Module]  # (num_classes, size, pretrained, encoder)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def task(self) -> str:
        return self.entry.task

    @property
    def framework(self) -> str:
        return self.entry.framework

    @property
    def default_image_size(self) -> int:
        return self.entry.default_image_size


class PretrainedWeightsError(RuntimeError):
    """The published weights could not be fetched (offline, no cache)."""


WEIGHTS_WAYS_OUT = ("Pre-populate the cache ($TORCH_HOME/hub/checkpoints for torchvision, $HF_HOME for timm and "
                    "smp encoders), start from a checkpoint in the store (spec.model.checkpoint), or set "
                    "pretrained: false.")


def _with_weights(name: str, fn: Callable[[], nn.Module]) -> nn.Module:
    try:
        return fn()
    except (OSError, RuntimeError, ValueError) as exc:  # urllib's URLError is an OSError; HF raises its own
        text = str(exc).lower()
        if isinstance(exc, OSError) or any(w in text for w in ("download", "connect", "offline", "resolve")):
            raise PretrainedWeightsError(
                f"spec.model.pretrained: could not fetch the published weights for {name!r} ({exc}). "
                + WEIGHTS_WAYS_OUT
            ) from exc
        raise


class Normalized(nn.Module):
    """A network taking [0, 1] input: normalisation is part of the module.

    Training, checkpoints and the ONNX export then share one graph, so the export cannot
    drift from what was trained and consumers only scale pixels to [0, 1].
    """

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


# --- classification -------------------------------------------------------------------------

def _torchvision_classifier(name: str) -> Callable[[int, int, bool, str | None], nn.Module]:
    def build(num_classes: int, image_size: int, pretrained: bool, encoder: str | None) -> nn.Module:
        ctor = getattr(torchvision.models, name)
        if not pretrained:
            net = ctor(weights=None, num_classes=num_classes)
        else:
            # Published heads have 1000 classes: load them, then replace the last layer.
            net = _with_weights(name, lambda: ctor(weights="DEFAULT"))
            _replace_head(net, num_classes)
        return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)

    return build


def _replace_head(model: nn.Module, num_classes: int) -> None:
    if isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)  # type: ignore[union-attr]
        return
    last = model.classifier[-1]  # type: ignore[index]
    model.classifier[-1] = nn.Linear(last.in_features, num_classes)  # type: ignore[index]


def timm_classifier(name: str) -> Callable[[int, int, bool, str | None], nn.Module]:
    def build(num_classes: int, image_size: int, pretrained: bool, encoder: str | None) -> nn.Module:
        import timm

        if not timm.list_models(name):
            raise ValueError(f"spec.model.name: timm has no model {name!r}")
        if pretrained:
            net = _with_weights(name, lambda: timm.create_model(name, pretrained=True, num_classes=num_classes))
        else:
            net = timm.create_model(name, pretrained=False, num_classes=num_classes)
        cfg = getattr(net, "pretrained_cfg", None) or {}
        mean = list(cfg.get("mean", IMAGENET_MEAN))
        std = list(cfg.get("std", IMAGENET_STD))
        return Normalized(net, mean, std)

    return build


# --- detection and instance segmentation ----------------------------------------------------

def _fixed_transform(model: nn.Module, size: int, mean: list[float], std: list[float], divisible: int) -> None:
    # Constructors resize to their own sizes (800-1333, 320): train and export at S x S so no
    # resize happens inside the graph and boxes come out in input pixels.
    model.transform = GeneralizedRCNNTransform(
        size, size, mean, std, size_divisible=divisible, fixed_size=(size, size)
    )


def _ssdlite(num_classes: int, image_size: int, pretrained: bool, encoder: str | None) -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    # +1: torchvision detectors reserve label 0 for background.
    if pretrained:
        model = _with_weights(
            "ssdlite320_mobilenet_v3_large",
            lambda: ssdlite320_mobilenet_v3_large(
                weights=None, weights_backbone="DEFAULT", num_classes=num_classes + 1
            ),
        )
    else:
        model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    # RECIPES: 160 px trains ~4x faster than 320.
    _fixed_transform(model, image_size, SSDLITE_MEAN, SSDLITE_STD, 1)
    model.detections_per_img = DETECTIONS_PER_IMAGE
    return model


def _torchvision_detector(name: str) -> Callable[[int, int, bool, str | None], nn.Module]:
    """Faster R-CNN, RetinaNet, FCOS, Mask R-CNN: ImageNet backbone weights when pretrained."""

    def build(num_classes: int, image_size: int, pretrained: bool, encoder: str | None) -> nn.Module:
        catalog.check_image_size("torchvision", name, image_size)
        ctor = getattr(torchvision.models.detection, name)
        kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes + 1}
        if pretrained:
            model = _with_weights(name, lambda: ctor(weights_backbone="DEFAULT", **kwargs))
        else:
            model = ctor(weights_backbone=None, **kwargs)
        _fixed_transform(model, image_size, IMAGENET_MEAN, IMAGENET_STD, 32)
        for attr in ("detections_per_img",):  # RetinaNet / FCOS
            if hasattr(model, attr):
                setattr(model, attr, DETECTIONS_PER_IMAGE)
        roi_heads = getattr(model, "roi_heads", None)
        if roi_heads is not None:  # Faster / Mask R-CNN
            roi_heads.detections_per_img = DETECTIONS_PER_IMAGE
        return model

    return build


# --- semantic segmentation ------------------------------------------------------------------

class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class VanillaUNet(nn.Module):
    """Ronneberger et al.'s UNet (5 levels, widths 16-256; batch norm). smp has no encoder-free UNet."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down.append(_DoubleConv(cin, w))
            cin = w
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.fuse.append(_DoubleConv(2 * w, w))
            cin = w
        self.head = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1]), strict=True):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def _vanilla_unet(num_classes: int, image_size: int, pretrained: bool, encoder: str | None) -> nn.Module:
    if pretrained:
        raise PretrainedWeightsError("spec.model.pretrained: the vanilla unet has no published weights; "
                                     "set pretrained: false or pick unet11, unet16, albunet or linknet34")
    return Normalized(VanillaUNet(num_classes), IMAGENET_MEAN, IMAGENET_STD)


# name -> (smp architecture, fixed encoder or None for spec.model.encoder)
SMP_ARCHITECTURES: dict[str, tuple[str, str | None]] = {
    "unet11": ("Unet", "vgg11"),
    "unet16": ("Unet", "vgg16"),
    "albunet": ("Unet", "resnet34"),
    "linknet34": ("Linknet", "resnet34"),
    "deeplabv3plus": ("DeepLabV3Plus", None),
    "fpn": ("FPN", None),
}


def _smp(name: str) -> Callable[[int, int, bool, str | None], nn.Module]:
    def build(num_classes: int, image_size: int, pretrained: bool, encoder: str | None) -> nn.Module:
        import segmentation_models_pytorch as smp

        arch, fixed = SMP_ARCHITECTURES[name]
        encoder_name = fixed or encoder or catalog.DEFAULT_SMP_ENCODER
        ctor = getattr(smp, arch)
        weights = "imagenet" if pretrained else None
        net = _with_weights(f"{name} ({encoder_name} encoder)",
                            lambda: ctor(encoder_name=encoder_name, encoder_weights=weights, classes=num_classes))
        return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)

    return build


def _builder(entry: ModelEntry) -> Callable[[int, int, bool, str | None], nn.Module]:
    if entry.framework == "timm":
        return timm_classifier(entry.name)
    if entry.framework == "smp":
        return _vanilla_unet if entry.name == "unet" else _smp(entry.name)
    if entry.task == "classification":
        return _torchvision_classifier(entry.name)
    if entry.name == "ssdlite320_mobilenet_v3_large":
        return _ssdlite
    return _torchvision_detector(entry.name)


def _norm(entry: ModelEntry) -> tuple[list[float], list[float]]:
    if entry.name == "ssdlite320_mobilenet_v3_large":
        return SSDLITE_MEAN, SSDLITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


MODELS: dict[tuple[str, str], ModelInfo] = {
    (e.framework, e.name): ModelInfo(e, *_norm(e), _builder(e)) for e in catalog.ENTRIES
}


def model_info(name: str, task: str, framework: str = "torchvision", encoder: str | None = None) -> ModelInfo:
    """The registry's entry; errors name the field and list what exists for the task."""
    entry = catalog.check_model(framework, name, task, encoder)
    if entry is not None:
        return MODELS[(framework, name)]
    # A timm name that is not listed but timm knows.
    unlisted = ModelEntry(name, "classification", "timm", "timm", 224, 0.0, True)
    return ModelInfo(unlisted, IMAGENET_MEAN, IMAGENET_STD, timm_classifier(name))


def build_model(name: str, task: str, num_classes: int, image_size: int | None, pretrained: bool,
                framework: str = "torchvision", encoder: str | None = None) -> nn.Module:
    info = model_info(name, task, framework, encoder)
    return info.build(num_classes, image_size or info.default_image_size, pretrained, encoder)


@dataclass(frozen=True)
class ModelParts:
    """Module names (prefixes of state_dict keys) of a built model's parts, for fine-tuning.

    `head`: what maps features to this dataset's classes; re-initialised when the classes change.
    `encoder`: the backbone/encoder `spec.model.freezeEncoder` freezes (a classifier's whole network
    but its head; a detector's backbone body, not its FPN or heads).
    """

    head: tuple[str, ...]
    encoder: tuple[str, ...]

    @staticmethod
    def covers(prefixes: tuple[str, ...], key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    def is_head(self, key: str) -> bool:
        return self.covers(self.head, key)

    def is_encoder(self, key: str) -> bool:
        return self.covers(self.encoder, key) and not self.is_head(key)


def model_parts(model: nn.Module) -> ModelParts:
    """The head and encoder of every family the registry builds (the one place that knows their names)."""
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, GeneralizedRCNN):  # Faster R-CNN, Mask R-CNN: box (and mask) class predictors
        head = ("roi_heads.box_predictor", "roi_heads.mask_predictor.mask_fcn_logits")
        encoder: tuple[str, ...] = ("backbone.body",)
    elif isinstance(model, RetinaNet | FCOS):
        head, encoder = ("head.classification_head.cls_logits",), ("backbone.body",)
    elif isinstance(model, SSD):  # SSDlite: per-level class convolutions; MobileNet features (not the extras)
        head, encoder = ("head.classification_head",), ("backbone.features",)
    elif isinstance(model, Normalized) and isinstance(model.net, VanillaUNet):
        head, encoder = ("net.head",), ("net.down",)
    elif isinstance(model, Normalized) and hasattr(model.net, "segmentation_head"):  # smp
        head, encoder = ("net.segmentation_head",), ("net.encoder",)
    elif isinstance(model, Normalized) and getattr(model.net, "pretrained_cfg", None):  # timm names its own head
        head, encoder = (f"net.{model.net.pretrained_cfg['classifier']}",), ("net",)
    elif isinstance(model, Normalized) and isinstance(getattr(model.net, "fc", None), nn.Linear):  # ResNet
        head, encoder = ("net.fc",), ("net",)
    elif isinstance(model, Normalized) and isinstance(getattr(model.net, "classifier", None), nn.Sequential):
        # EfficientNet, ConvNeXt, MobileNet: the classifier's last Linear (ConvNeXt's norm before it is shared).
        last = max(i for i, m in enumerate(model.net.classifier) if isinstance(m, nn.Linear))
        head, encoder = (f"net.classifier.{last}",), ("net",)
    else:
        raise ValueError(f"{type(model).__name__}: no known head and encoder (kubeforge_trainers.models.model_parts)")
    names = {n for n, _ in model.named_modules()}
    return ModelParts(tuple(h for h in head if h in names), encoder)


def load_matching(model: nn.Module, state: dict[str, Any], keep_fresh: tuple[str, ...] = ()) -> list[str]:
    """Load the tensors whose names and shapes match (fine-tuning); returns the names kept fresh.

    `state` is a checkpoint's `model` or a plain state dict of the bare network (a published `.pth`),
    whose names lack the `net.` prefix of the normalising wrapper: both readings are tried and the one
    that matches more tensors wins; matching nothing is an error (weights of another architecture).
    Tensors under `keep_fresh` (module names) keep the new model's initialisation even when their
    shapes match: a head trained on other classes, say, whose outputs would mean the wrong classes.
    """
    own = model.state_dict()

    def usable(prefix: str) -> dict[str, torch.Tensor]:
        return {prefix + k: v for k, v in state.items()
                if prefix + k in own and isinstance(v, torch.Tensor) and v.shape == own[prefix + k].shape
                and not ModelParts.covers(keep_fresh, prefix + k)}

    best = max((usable(""), usable("net.")), key=len)
    if not best:
        raise ValueError(f"the starting weights match none of the model's {len(own)} tensors by name and shape "
                         f"(they have {len(state)}, e.g. {sorted(state)[:3]}): weights of another architecture?")
    model.load_state_dict(best, strict=False)
    return sorted(set(own) - set(best))


def init_from_checkpoint(model: nn.Module, checkpoint: dict[str, Any], classes: list[str]) -> tuple[list[str], bool]:
    """Fine-tuning: load another run's weights; its head starts fresh when it was trained on other classes
    (or the same ones in another order), since it would answer for the wrong classes even where its shape
    fits. Returns the names kept fresh and whether the head was."""
    other_classes = checkpoint.get("classes") is not None and list(checkpoint["classes"]) != list(classes)
    fresh = model_parts(model).head if other_classes else ()
    return load_matching(model, checkpoint["model"], fresh), other_classes


def freeze_encoder(model: nn.Module) -> int:
    """`spec.model.freezeEncoder`: no gradients for the encoder; returns how many tensors were frozen."""
    parts = model_parts(model)
    frozen = 0
    for name, param in model.named_parameters():
        if parts.is_encoder(name):
            param.requires_grad_(False)
            frozen += 1
    for name, module in model.named_modules():
        if parts.is_encoder(name) and isinstance(module, nn.modules.batchnorm._BatchNorm):
            # Its running statistics are part of the weights it starts from: momentum 0 keeps them.
            module.momentum = 0.0
    return frozen

"""The built-in model registry: torchvision architectures by name, with their defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

# ImageNet statistics: torchvision classifiers expect them; the export puts them in the graph.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# SSDlite rescales [0, 1] to [-1, 1] inside its own transform (torchvision's choice).
SSDLITE_MEAN = [0.5, 0.5, 0.5]
SSDLITE_STD = [0.5, 0.5, 0.5]
# Detections kept per image: enough for AP, small enough for a cheap ONNX NMS (RECIPES).
DETECTIONS_PER_IMAGE = 100


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    default_image_size: int
    # mean/std that the model (or its export wrapper) applies to [0, 1] input.
    mean: list[float]
    std: list[float]
    build: Callable[[int, int, bool], nn.Module]  # (num_classes, image_size, pretrained)


class PretrainedWeightsError(RuntimeError):
    """The published weights could not be fetched (offline, no cache)."""


def _with_weights(name: str, fn: Callable[[], nn.Module]) -> nn.Module:
    try:
        return fn()
    except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError
        if "download" in str(exc).lower() or isinstance(exc, OSError):
            raise PretrainedWeightsError(
                f"spec.model.pretrained: could not fetch torchvision's published weights for {name!r} "
                f"({exc}). Pre-populate $TORCH_HOME/hub/checkpoints or set pretrained: false."
            ) from exc
        raise


class NormalizedClassifier(nn.Module):
    """A classifier taking [0, 1] input: normalisation is part of the module.

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


def _classifier(name: str) -> Callable[[int, int, bool], nn.Module]:
    def build(num_classes: int, image_size: int, pretrained: bool) -> nn.Module:
        ctor = getattr(torchvision.models, name)
        if not pretrained:
            net = ctor(weights=None, num_classes=num_classes)
        else:
            # Published heads have 1000 classes: load them, then replace the last layer.
            net = _with_weights(name, lambda: ctor(weights="DEFAULT"))
            _replace_head(net, num_classes)
        return NormalizedClassifier(net, IMAGENET_MEAN, IMAGENET_STD)

    return build


def _replace_head(model: nn.Module, num_classes: int) -> None:
    if isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)  # type: ignore[union-attr]
        return
    last = model.classifier[-1]  # type: ignore[index]
    model.classifier[-1] = nn.Linear(last.in_features, num_classes)  # type: ignore[index]


def _ssdlite(num_classes: int, image_size: int, pretrained: bool) -> nn.Module:
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
    # The constructor fixes 320x320; train and export at S x S so no resize happens inside the
    # graph and boxes come out in input pixels (RECIPES: 160 px trains ~4x faster than 320).
    model.transform = GeneralizedRCNNTransform(
        image_size, image_size, SSDLITE_MEAN, SSDLITE_STD, size_divisible=1, fixed_size=(image_size, image_size)
    )
    model.detections_per_img = DETECTIONS_PER_IMAGE
    return model


MODELS: dict[str, ModelInfo] = {
    name: ModelInfo(name, "classification", 64, IMAGENET_MEAN, IMAGENET_STD, _classifier(name))
    for name in ("resnet18", "mobilenet_v3_small", "mobilenet_v3_large")
}
MODELS["ssdlite320_mobilenet_v3_large"] = ModelInfo(
    "ssdlite320_mobilenet_v3_large", "object-detection", 160, SSDLITE_MEAN, SSDLITE_STD, _ssdlite
)


def model_info(name: str, task: str) -> ModelInfo:
    """Look up a built-in model; errors list what exists for the task."""
    info = MODELS.get(name)
    known = sorted(n for n, m in MODELS.items() if m.task == task)
    if info is None:
        raise ValueError(f"spec.model.name: unknown model {name!r} for task {task}; built-in models are {known}")
    if info.task != task:
        raise ValueError(
            f"spec.model.name: {name!r} is a {info.task} model, but spec.task is {task}; use one of {known}"
        )
    return info


def build_model(name: str, task: str, num_classes: int, image_size: int | None, pretrained: bool) -> nn.Module:
    info = model_info(name, task)
    return info.build(num_classes, image_size or info.default_image_size, pretrained)


def load_matching(model: nn.Module, state: dict[str, Any]) -> list[str]:
    """Load the tensors whose names and shapes match (fine-tuning from another run); returns skipped names."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))

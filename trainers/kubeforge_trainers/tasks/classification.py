"""Image classification: cross-entropy on logits, accuracy on the val split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubeforge.datasets.manifest import Manifest
from kubeforge.models.meta import TensorSpec
from kubeforge_trainers.data import Augment, ClassificationDataset, SelectedClass
from kubeforge_trainers.tasks.base import TaskKind, Track, plain


class Classification(TaskKind):
    name = "classification"
    parity_images = 8

    def dataset(self, manifest: Manifest, names: Sequence[str], classes: Sequence[SelectedClass], image_dir: Path,
                size: int, train: bool, augment: Augment | None = None) -> torch.utils.data.Dataset:
        return ClassificationDataset(manifest, names, classes, image_dir, size, train=train, augment=augment)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, labels = batch
        return nn.functional.cross_entropy(model(images.to(device)), labels.to(device)), len(images)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, loader: torch.utils.data.DataLoader,
                 device: torch.device, num_classes: int, track: Track = plain) -> dict[str, float]:
        model.eval()
        loss, correct, count = 0.0, 0, 0
        for images, labels in track(loader, len(loader), "val"):
            logits = model(images.to(device))
            labels = labels.to(device)
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
        return {"val_loss": loss / max(count, 1), "val_accuracy": correct / max(count, 1)}

    def outputs(self, classes: list[str], size: int) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=[-1, len(classes)])]

    def parity(self, model: nn.Module, onnx_outputs: Callable[[torch.Tensor], list[Any]],
               images: list[torch.Tensor]) -> Any:
        from kubeforge_trainers.export import Parity

        batch = torch.stack(images)
        with torch.no_grad():
            expected = model(batch).numpy()
        (got,) = onnx_outputs(batch)
        diff = float(np.abs(expected - got).max())
        return Parity(max_abs_diff=diff, images=len(images), per_output={"logits": diff})

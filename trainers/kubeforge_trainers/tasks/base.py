"""What differs between tasks, behind one interface the trainer loop calls.

A task says how to build its datasets from a manifest, how a batch becomes a loss, how the
val split becomes metrics, what its ONNX export outputs and how the export is checked against
torch. The loop in `builtin_trainer` (epochs, checkpoints, early stopping, progress) is shared.
A new task is a module here registered in `tasks.TASKS`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from kubeforge.datasets.manifest import Manifest
from kubeforge.models import catalog
from kubeforge.models.meta import TensorSpec
from kubeforge_trainers.data import Augment, SelectedClass

Track = Callable[[Iterable[Any], int, str], Iterator[Any]]


def plain(items: Iterable[Any], total: int, description: str) -> Iterator[Any]:
    yield from items


class TaskKind(ABC):
    """One task's datasets, loss, evaluation and export contract."""

    name: ClassVar[str]
    # Real validation images the ONNX parity check runs.
    parity_images: ClassVar[int] = 8
    # False when the model takes a list of images (torchvision detectors): export one image per call.
    batched_export: ClassVar[bool] = True
    # Detectors: the score down to which the parity check compares when the export keeps nothing.
    parity_score_threshold: ClassVar[float | None] = None

    @property
    def metric(self) -> str:
        return catalog.VALIDATION_METRIC[self.name]

    def output_classes(self, classes: list[str]) -> list[str]:
        """The model's output classes for the selected ones (semantic segmentation adds `__bg__`)."""
        return classes

    @abstractmethod
    def dataset(self, manifest: Manifest, names: Sequence[str], classes: Sequence[SelectedClass], image_dir: Path,
                size: int, train: bool, augment: Augment | None = None) -> torch.utils.data.Dataset:
        """`augment` applies to training samples (default: `data.flip_augment`)."""

    def collate(self) -> Callable[[list[Any]], Any] | None:
        return None

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        """The batch's training loss and how many images it held."""

    @abstractmethod
    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, loader: torch.utils.data.DataLoader,
                 device: torch.device, num_classes: int, track: Track = plain) -> dict[str, float]:
        """Validation metrics (names start with `val_`; `self.metric` among them)."""

    @abstractmethod
    def outputs(self, classes: list[str], size: int) -> list[TensorSpec]:
        """The ONNX export's outputs (model_meta.json)."""

    def export_module(self, model: nn.Module) -> nn.Module:
        """What the ONNX export traces: [B,3,S,S] in [0, 1] -> the outputs."""
        return model

    def dynamic_axes(self, classes: list[str]) -> dict[str, dict[int, str]] | None:
        from kubeforge_trainers.export import INPUT_NAME

        if not self.batched_export:
            return None
        return {INPUT_NAME: {0: "batch"}} | {o: {0: "batch"} for o in self.output_names(classes)}

    def output_names(self, classes: list[str]) -> list[str]:
        return [o.name for o in self.outputs(classes, 1)]

    def lowered_score_threshold(self, model: nn.Module, threshold: float) -> contextlib.AbstractContextManager[None]:
        """The model keeps detections down to `threshold` inside the block (detectors only)."""
        raise NotImplementedError(f"{self.name} has no score threshold")

    @abstractmethod
    def parity(self, model: nn.Module, onnx_outputs: Callable[[torch.Tensor], list[Any]],
               images: list[torch.Tensor]) -> Any:
        """Compare torch with the export on real images; returns `export.Parity`."""

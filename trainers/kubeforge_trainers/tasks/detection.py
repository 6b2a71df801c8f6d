"""Object detection with torchvision detectors: their own losses, COCO AP on the val split.

The export takes one image per call (torchvision detectors take a list of images) and returns
`boxes` xyxy in input pixels, `scores` and 0-based `labels`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubeforge.datasets.manifest import Manifest
from kubeforge.models.meta import TensorSpec
from kubeforge_trainers import engine
from kubeforge_trainers.data import Augment, DetectionDataset, SelectedClass, detection_collate
from kubeforge_trainers.tasks.base import TaskKind, Track, plain


class DetectionExport(nn.Module):
    """One image in, `boxes` xyxy (input pixels), `scores`, `labels` (0-based) out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        det = self.model([images[0]])[0]
        # torchvision reserves 0 for background; consumers index `classes` from 0.
        return det["boxes"], det["scores"], det["labels"] - 1


def _score_threshold_owners(model: nn.Module) -> list[tuple[Any, str]]:
    """Where a torchvision detector keeps its score threshold (SSD/RetinaNet/FCOS on the model, R-CNNs in roi_heads)."""
    owners = [(m, attr) for m in (model, getattr(model, "roi_heads", None)) if m is not None
              for attr in ("score_thresh",) if hasattr(m, attr)]
    if not owners:
        raise ValueError(f"{type(model).__name__}: no score_thresh attribute to lower for the parity check")
    return owners


@contextlib.contextmanager
def lowered_score_threshold(model: nn.Module, threshold: float) -> Iterator[None]:
    owners = _score_threshold_owners(model)
    saved = [getattr(m, attr) for m, attr in owners]
    try:
        for m, attr in owners:
            setattr(m, attr, threshold)
        yield
    finally:
        for (m, attr), value in zip(owners, saved, strict=True):
            setattr(m, attr, value)


class Detection(TaskKind):
    name = "object-detection"
    parity_images = 3
    batched_export = False
    # Every candidate (torchvision keeps scores strictly above the threshold): a head one epoch old may
    # score everything as background, far below any threshold that still means something.
    parity_score_threshold = 0.0

    def lowered_score_threshold(self, model: nn.Module, threshold: float) -> contextlib.AbstractContextManager[None]:
        return lowered_score_threshold(model, threshold)

    def dataset(self, manifest: Manifest, names: Sequence[str], classes: Sequence[SelectedClass], image_dir: Path,
                size: int, train: bool, augment: Augment | None = None) -> torch.utils.data.Dataset:
        return DetectionDataset(manifest, names, classes, image_dir, size, train=train, augment=augment)

    def collate(self) -> Callable[[list[Any]], Any] | None:
        return detection_collate

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, targets = batch
        images = [img.to(device) for img in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        return sum(losses.values()), len(images)  # type: ignore[return-value]

    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, loader: torch.utils.data.DataLoader,
                 device: torch.device, num_classes: int, track: Track = plain) -> dict[str, float]:
        predictions = engine.predict_detections(model, loader, device, track)
        return engine.coco_ap(dataset.coco_ground_truth(num_classes),  # type: ignore[attr-defined]
                              engine.coco_detection_results(predictions))

    def outputs(self, classes: list[str], size: int) -> list[TensorSpec]:
        return [TensorSpec(name="boxes", dtype="float32", shape=[-1, 4]),
                TensorSpec(name="scores", dtype="float32", shape=[-1]),
                TensorSpec(name="labels", dtype="int64", shape=[-1])]

    def export_module(self, model: nn.Module) -> nn.Module:
        return DetectionExport(model)

    def parity(self, model: nn.Module, onnx_outputs: Callable[[torch.Tensor], list[Any]],
               images: list[torch.Tensor]) -> Any:
        """Matched detections only: see `export.match_detections`."""
        from kubeforge_trainers.export import Parity, match_detections

        wrapper = DetectionExport(model).eval()
        worst = {"boxes": 0.0, "scores": 0.0}
        mismatches = []
        matched = unmatched = 0
        for i, img in enumerate(images):
            with torch.no_grad():
                tb, ts, tl = (t.numpy() for t in wrapper(img[None]))
            ob, os_, ol = onnx_outputs(img[None])
            if len(tb) != len(ob):
                mismatches.append({"image": i, "torch": len(tb), "onnx": len(ob)})
            pairs = match_detections(tb, tl, ob, ol)
            matched += len(pairs)
            unmatched += len(tb) - len(pairs)
            for t_idx, o_idx in pairs:
                worst["boxes"] = max(worst["boxes"], float(np.abs(tb[t_idx] - ob[o_idx]).max()))
                worst["scores"] = max(worst["scores"], float(abs(ts[t_idx] - os_[o_idx])))
        return Parity(max_abs_diff=max(worst.values()), images=len(images), per_output=worst,
                      count_mismatches=mismatches, matched=matched, unmatched=unmatched)

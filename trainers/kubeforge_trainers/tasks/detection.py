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


@contextlib.contextmanager
def lowered_score_threshold(model: nn.Module, threshold: float) -> Iterator[None]:
    """`score_thresh` set to `threshold` inside the block (SSD, RetinaNet, FCOS keep it on the model,
    Faster/Mask R-CNN in `roi_heads`)."""
    owners = [m for m in (model, getattr(model, "roi_heads", None)) if m is not None and hasattr(m, "score_thresh")]
    if not owners:
        raise ValueError(f"{type(model).__name__}: no score_thresh attribute to lower for the parity check")
    saved = [m.score_thresh for m in owners]
    try:
        for m in owners:
            m.score_thresh = threshold
        yield
    finally:
        for m, value in zip(owners, saved, strict=True):
            m.score_thresh = value


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
        """Matched detections only: see `export.match_detections`.

        `maxAbsDiff` is the worst of boxes (input pixels) and scores; `pair_figures` says what each
        matched pair contributes to `perOutput`.
        """
        from kubeforge_trainers.export import Parity, match_detections

        names = self.output_names([])
        worst = {"boxes": 0.0, "scores": 0.0}
        mismatches = []
        matched = unmatched = 0
        for i, img in enumerate(images):
            with torch.no_grad():
                det = model.eval()([img])[0]
            ours = {k: v.numpy() for k, v in det.items()}
            ours["labels"] = ours["labels"] - 1  # as the export returns them
            theirs = dict(zip(names, onnx_outputs(img[None]), strict=True))
            if len(ours["boxes"]) != len(theirs["boxes"]):
                mismatches.append({"image": i, "torch": len(ours["boxes"]), "onnx": len(theirs["boxes"])})
            pairs = match_detections(ours["boxes"], ours["labels"], theirs["boxes"], theirs["labels"])
            matched += len(pairs)
            unmatched += len(ours["boxes"]) - len(pairs)
            for t_idx, o_idx in pairs:
                for name, value in self.pair_figures(ours, theirs, t_idx, o_idx).items():
                    worst[name] = max(worst.get(name, 0.0), value)
        return Parity(max_abs_diff=max(worst["boxes"], worst["scores"]), images=len(images), per_output=worst,
                      count_mismatches=mismatches, matched=matched, unmatched=unmatched)

    def pair_figures(self, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], t_idx: int,
                     o_idx: int) -> dict[str, float]:
        """How far apart one matched pair is: torch's raw outputs (`ours`) vs the export's (`theirs`)."""
        return {"boxes": float(np.abs(ours["boxes"][t_idx] - theirs["boxes"][o_idx]).max()),
                "scores": float(abs(ours["scores"][t_idx] - theirs["scores"][o_idx]))}

"""Semantic segmentation: a class per pixel from the objects' masks; mIoU on the val split.

Datasets are `object-detection` versions whose objects carry `segmentation` (polygons or COCO
RLE); `kubeforge.evaluation.segmentation` turns them into class masks (background `__bg__` at
index 0, larger objects painted first, objects without a mask as their box, crowds ignored)
and counts the metrics, the same code the benchmark uses.

Export outputs: `logits` float32 [B, C, S, S] and `mask` uint8 [B, S, S] (argmax of the
logits, class indices into model_meta `classes`); the batch dimension is dynamic.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubeforge.datasets.manifest import Manifest
from kubeforge.evaluation.segmentation import IGNORE, MaskStats, class_mask, scores, with_background
from kubeforge.models.meta import TensorSpec
from kubeforge_trainers.data import Augment, SelectedClass, _ManifestImages, to_tensor
from kubeforge_trainers.tasks.base import TaskKind, Track, plain

# Weight of a soft Dice term added to pixel cross-entropy. Off: on the generated shapes (vanilla
# UNet, 64 px, from scratch) cross-entropy alone trained faster in our runs; Dice can lift small
# objects on data where the background dominates even more.
DICE_WEIGHT = 0.0


class SemanticDataset(_ManifestImages):
    """(image [3,S,S], mask int64 [S,S] class indices, `IGNORE` for crowd pixels)."""

    def __init__(
        self, manifest: Manifest, file_names: Sequence[str], classes: Sequence[SelectedClass],
        cache_dir: Path, size: int, train: bool = False, augment: Augment | None = None,
    ) -> None:
        super().__init__(manifest, file_names, cache_dir, size, train, augment)
        index_of = {c.category_id: k + 1 for k, c in enumerate(classes)}
        per_image = manifest.annotations_by_image()
        self.stats = MaskStats()
        self.masks: list[np.ndarray] = []
        for i in range(len(self)):
            mask, stats = class_mask(self.image(i), per_image[self.indices[i]], index_of, (size, size))
            self.masks.append(mask)
            self.stats.add(stats)
        if self.stats.boxes_filled:
            print(f"semantic-segmentation: {self.stats.boxes_filled} of {self.stats.objects} objects have no "
                  "segmentation; their boxes are filled", file=sys.stderr, flush=True)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        arr, _, mask = self.augmented(self.pixels(i), None, self.masks[i])
        assert mask is not None
        return to_tensor(arr), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))


class SemanticExport(nn.Module):
    """[B,3,S,S] in [0, 1] -> `logits` [B,C,S,S] and `mask` uint8 [B,S,S]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        return logits, logits.argmax(dim=1).to(torch.uint8)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the object classes present in the batch (ignored pixels left out)."""
    valid = (target != IGNORE).unsqueeze(1)
    probs = logits.softmax(dim=1) * valid
    onehot = nn.functional.one_hot(target.clamp_max(logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2)
    onehot = onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims)[1:] > 0
    if not present.any():
        return logits.new_zeros(())
    dice = (2 * inter[1:] + 1.0) / (total[1:] + 1.0)
    return 1 - dice[present].mean()


class SemanticSegmentation(TaskKind):
    name = "semantic-segmentation"
    parity_images = 8

    def output_classes(self, classes: list[str]) -> list[str]:
        return with_background(classes)

    def dataset(self, manifest: Manifest, names: Sequence[str], classes: Sequence[SelectedClass], image_dir: Path,
                size: int, train: bool, augment: Augment | None = None) -> torch.utils.data.Dataset:
        return SemanticDataset(manifest, names, classes, image_dir, size, train=train, augment=augment)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, masks = batch
        logits = model(images.to(device))
        masks = masks.to(device)
        loss = nn.functional.cross_entropy(logits, masks, ignore_index=IGNORE)
        if DICE_WEIGHT:
            loss = loss + DICE_WEIGHT * dice_loss(logits, masks)
        return loss, len(images)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, loader: torch.utils.data.DataLoader,
                 device: torch.device, num_classes: int, track: Track = plain) -> dict[str, float]:
        """`num_classes` counts `__bg__`. mIoU as `evaluation.segmentation.scores` defines it (object
        classes only, classes absent from truth and prediction left out); 0 when no class is present."""
        model.eval()
        cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
        loss, pixels = 0.0, 0
        for images, masks in track(loader, len(loader), "val"):
            logits = model(images.to(device))
            masks = masks.to(device)
            valid = masks != IGNORE
            loss += float(nn.functional.cross_entropy(logits, masks, ignore_index=IGNORE, reduction="sum"))
            pixels += int(valid.sum())
            truth, pred = masks[valid], logits.argmax(dim=1)[valid]
            cm += torch.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
        s = scores(cm.reshape(num_classes, num_classes).cpu().numpy())
        return {"val_loss": loss / max(pixels, 1), "val_mIoU": s["mIoU"] or 0.0,
                "val_pixel_accuracy": s["pixelAccuracy"]}

    def outputs(self, classes: list[str], size: int) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=[-1, len(classes), size, size]),
                TensorSpec(name="mask", dtype="uint8", shape=[-1, size, size])]

    def export_module(self, model: nn.Module) -> nn.Module:
        return SemanticExport(model)

    def parity(self, model: nn.Module, onnx_outputs: Callable[[torch.Tensor], list[Any]],
               images: list[torch.Tensor]) -> Any:
        """`logits`: max abs difference; `mask`: the fraction of pixels whose argmax differs (near-ties
        may flip between runtimes)."""
        from kubeforge_trainers.export import Parity

        batch = torch.stack(images)
        with torch.no_grad():
            logits, mask = (t.numpy() for t in SemanticExport(model.eval())(batch))
        got_logits, got_mask = onnx_outputs(batch)
        diff = float(np.abs(logits - got_logits).max())
        flipped = float((mask != got_mask).mean())
        return Parity(max_abs_diff=diff, images=len(images), per_output={"logits": diff, "mask": flipped})

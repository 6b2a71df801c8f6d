"""Instance segmentation with torchvision Mask R-CNN: its own losses, COCO mask AP on the val split.

Targets come from the manifest's object annotations: `segmentation` polygons or COCO RLE, drawn at
the image's size by `kubeforge.evaluation.segmentation.object_mask` (as semantic segmentation and
the benchmark do), then resized nearest-neighbour. An object without a segmentation trains as its
filled box; the dataset counts those (`boxes_as_masks`) so a
dataset of boxes only is visible in the training log rather than silently learning rectangles.

The export takes one image per call and returns `boxes` xyxy in input pixels, `scores`,
`labels` (0-based) and `masks` uint8 [N, S, S] (the mask head's probabilities pasted into the
image and thresholded at MASK_THRESHOLD, see `kubeforge.models.meta`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubeforge.datasets.formats.common import mask_to_rle, rle_to_mask
from kubeforge.datasets.manifest import Manifest
from kubeforge.evaluation.segmentation import box_mask, object_mask
from kubeforge.models.meta import MASK_THRESHOLD, TensorSpec
from kubeforge.models.preprocess import mask_to_image
from kubeforge_trainers import engine
from kubeforge_trainers.data import Augment, SelectedClass, _ManifestImages, input_objects, kept_boxes, to_tensor
from kubeforge_trainers.tasks.base import Track, plain
from kubeforge_trainers.tasks.detection import Detection

# Probabilities this close to the threshold may land on either side in another runtime.
PARITY_MASK_MARGIN = 1e-3


class InstanceDataset(_ManifestImages):
    """(image [3,S,S], {boxes xyxy [N,4], labels 1..K int64, masks uint8 [N,S,S]}) for Mask R-CNN.

    Selection as in `DetectionDataset` (crowd regions and unselected classes dropped, images without
    objects kept as negatives). Training samples go through `augmented(image, boxes, masks)`; boxes the
    augmentation leaves thinner than MIN_BOX_SIDE are dropped with their labels and masks.
    """

    def __init__(
        self, manifest: Manifest, file_names: Sequence[str], classes: Sequence[SelectedClass],
        cache_dir: Path, size: int, train: bool = False, augment: Augment | None = None,
    ) -> None:
        super().__init__(manifest, file_names, cache_dir, size, train, augment)
        label_of = {c.category_id: k + 1 for k, c in enumerate(classes)}
        per_image = manifest.annotations_by_image()
        self.boxes_as_masks = 0
        # Masks kept as RLE (decoded per sample): [N, S, S] bytes for every image would be ~1 MB per
        # object at 512 px.
        self.targets: list[tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]] = []
        self.areas: list[list[float]] = []
        for i in range(len(self)):
            img = self.image(i)
            boxes, labels, masks, areas = [], [], [], []
            for ann, box, label in input_objects(per_image[self.indices[i]], img, label_of, size):
                full = object_mask(ann, img)
                mask = mask_to_image(full, size, size) > 0 if full is not None else None
                if mask is None or not mask.any():
                    # No segmentation, or one too thin to cover a pixel at this size: its box stands in.
                    self.boxes_as_masks += 1
                    mask = box_mask(box, size, size)
                boxes.append(box)
                labels.append(label)
                masks.append(mask_to_rle(mask))
                areas.append(float(mask.sum()))
            self.targets.append((
                np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64), masks,
            ))
            self.areas.append(areas)

    def masks(self, i: int) -> np.ndarray:
        """Image i's instance masks, uint8 [N, S, S]."""
        rles = self.targets[i][2]
        if not rles:
            return np.zeros((0, self.size, self.size), dtype=np.uint8)
        return np.stack([rle_to_mask(r) for r in rles]).astype(np.uint8)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        boxes, labels, _ = self.targets[i]
        arr, moved, moved_masks = self.augmented(self.pixels(i), boxes, self.masks(i))
        assert moved is not None and moved_masks is not None
        keep = kept_boxes(moved)
        return to_tensor(arr), {
            "boxes": torch.from_numpy(np.ascontiguousarray(moved[keep], dtype=np.float32)),
            "labels": torch.from_numpy(labels[keep]),
            "masks": torch.from_numpy(np.ascontiguousarray(moved_masks[keep], dtype=np.uint8)),
        }

    def coco_ground_truth(self, num_classes: int) -> dict[str, Any]:
        """The val targets as a COCO dict with RLE segmentations (input pixels, category ids 1..K)."""
        images = [{"id": i, "width": self.size, "height": self.size} for i in range(len(self))]
        anns = []
        for i, (boxes, labels, rles) in enumerate(self.targets):
            for box, label, rle, area in zip(boxes.tolist(), labels.tolist(), rles, self.areas[i], strict=True):
                anns.append({
                    "id": len(anns) + 1, "image_id": i, "category_id": label,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "segmentation": rle, "area": area, "iscrowd": 0,
                })
        cats = [{"id": k} for k in range(1, num_classes + 1)]
        return {"images": images, "annotations": anns, "categories": cats}


class InstanceExport(nn.Module):
    """One image in; `boxes`, `scores`, `labels` (0-based) and `masks` uint8 [N, S, S] out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        det = self.model([images[0]])[0]
        masks = (det["masks"][:, 0] > MASK_THRESHOLD).to(torch.uint8)
        return det["boxes"], det["scores"], det["labels"] - 1, masks


@torch.no_grad()
def predict_instances(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
                      track: Track = plain) -> list[dict[str, Any]]:
    """Mask R-CNN on the val loader; masks are thresholded and RLE-encoded per image as they come.

    Keeping probabilities instead would hold [100, 1, S, S] floats per image (100 MB at 512 px).
    """
    model.eval()
    out: list[dict[str, Any]] = []
    for images, _ in track(loader, len(loader), "val"):
        for det in model([img.to(device) for img in images]):
            masks = (det["masks"][:, 0] > MASK_THRESHOLD).cpu().numpy()
            out.append({"boxes": det["boxes"].cpu().numpy(), "scores": det["scores"].cpu().numpy(),
                        "labels": det["labels"].cpu().numpy(), "rles": [mask_to_rle(m) for m in masks]})
    return out


def coco_segm_results(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`predict_instances` output (labels 1..K) -> COCO segm result dicts."""
    results = []
    for image_id, det in enumerate(predictions):
        for rle, score, label in zip(det["rles"], det["scores"].tolist(), det["labels"].tolist(), strict=True):
            results.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                            "segmentation": rle})
    return results


def confident_disagreement(probs: np.ndarray, mask: np.ndarray) -> float:
    """Share of a mask's pixels (union of both) where `mask` contradicts probabilities clear of the threshold.

    Pixels within PARITY_MASK_MARGIN of MASK_THRESHOLD may round either way in another runtime (an
    untrained mask head puts most of them there), so they are not counted.
    """
    ours = probs > MASK_THRESHOLD
    union = np.logical_or(ours, mask).sum()
    confident = np.abs(probs - MASK_THRESHOLD) > PARITY_MASK_MARGIN
    return float(((ours != mask) & confident).sum() / union) if union else 0.0


class InstanceSegmentation(Detection):
    name = "instance-segmentation"
    parity_images = 3

    def dataset(self, manifest: Manifest, names: Sequence[str], classes: Sequence[SelectedClass], image_dir: Path,
                size: int, train: bool, augment: Augment | None = None) -> torch.utils.data.Dataset:
        ds = InstanceDataset(manifest, names, classes, image_dir, size, train=train, augment=augment)
        if ds.boxes_as_masks:
            # stderr: a step's stdout carries its result.
            print(f"{'train' if train else 'val'} split: {ds.boxes_as_masks} object(s) have no segmentation; "
                  "they count as their filled boxes", file=sys.stderr, flush=True)
        return ds

    def evaluate(self, model: nn.Module, dataset: torch.utils.data.Dataset, loader: torch.utils.data.DataLoader,
                 device: torch.device, num_classes: int, track: Track = plain) -> dict[str, float]:
        predictions = predict_instances(model, loader, device, track)
        truth = dataset.coco_ground_truth(num_classes)  # type: ignore[attr-defined]
        return (engine.coco_ap(truth, engine.coco_detection_results(predictions))
                | engine.coco_ap(truth, coco_segm_results(predictions), iou_type="segm"))

    def outputs(self, classes: list[str], size: int) -> list[TensorSpec]:
        return [*super().outputs(classes, size), TensorSpec(name="masks", dtype="uint8", shape=[-1, size, size])]

    def export_module(self, model: nn.Module) -> nn.Module:
        return InstanceExport(model)

    def pair_figures(self, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], t_idx: int,
                     o_idx: int) -> dict[str, float]:
        """Detection's figures plus `masks`: the share of the pair's mask pixels that disagree where torch's
        probability is clear of the threshold (`confident_disagreement`); 0 when the runtimes agree."""
        masks = confident_disagreement(ours["masks"][t_idx, 0], theirs["masks"][o_idx] > 0)
        return super().pair_figures(ours, theirs, t_idx, o_idx) | {"masks": masks}

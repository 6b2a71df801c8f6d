"""Instance-segmentation metrics: the detection suite on boxes plus the COCO suite on masks.

Boxes are judged exactly as for detection (`detection.detection_metrics`: COCO AP, operating
point, per-class rows). Masks add COCO's `segm` suite (faster-coco-eval, checked against
pycocotools in the tests): ground truth as the manifest holds it (polygons or RLE, in image
pixels; an object without a segmentation is its filled box, as in training), predictions as
RLE at the image's size. In the result, `maskAP`, `maskAP50`, `maskAP75` are the headline and
`mask` holds the whole segm suite; `perClass` rows gain `maskAP` and `maskAP50`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubeforge.datasets.formats.common import mask_to_rle
from kubeforge.datasets.manifest import Manifest, Segmentation
from kubeforge.evaluation.cocoeval import STAT_NAMES, CocoEvaluator
from kubeforge.evaluation.detection import (
    ImageDetections,
    ImageMatches,
    ImageTruth,
    coco_stats,
    detection_metrics,
    evaluator_suite,
    to_coco,
)
from kubeforge.evaluation.groundtruth import ClassMap
from kubeforge.evaluation.segmentation import box_mask, object_mask


@dataclass
class ImageInstances:
    """A model's instances on one image: detections plus one mask per detection (COCO RLE, image size)."""

    detections: ImageDetections
    masks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.masks) != len(self.detections.scores):
            raise ValueError(f"ImageInstances: {len(self.detections.scores)} detections but {len(self.masks)} masks")

    @classmethod
    def from_masks(cls, detections: ImageDetections, masks: np.ndarray) -> ImageInstances:
        """Binary masks [N, H, W] (the image's size) -> RLE."""
        return cls(detections, [mask_to_rle(m.astype(bool)) for m in masks])


def truth_segmentations(manifest: Manifest, indices: Sequence[int], classes: ClassMap) -> list[list[Segmentation]]:
    """Per selected image, the mask (COCO RLE, image size) of each annotation `groundtruth.detection_truth` keeps,
    in its order: drawn as training draws it (`segmentation.object_mask`, the filled box when there is none)."""
    per_image = manifest.annotations_by_image()
    out = []
    for i in indices:
        image = manifest.images[i]
        masks = []
        for a in per_image[i]:
            if a.category_id not in classes.category_to_model:
                continue
            mask = object_mask(a, image)
            if mask is None:
                x, y, w, h = a.bbox
                mask = box_mask((x, y, x + w, y + h), image.height, image.width)
            masks.append(mask_to_rle(mask))
        out.append(masks)
    return out


def segm_coco(truths: Sequence[ImageTruth], segmentations: Sequence[Sequence[Segmentation]],
              instances: Sequence[ImageInstances], class_names: Sequence[str]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The `segm` COCO inputs: `to_coco`'s with masks as segmentations and no result boxes."""
    gt_dict, results = to_coco(truths, [inst.detections for inst in instances], class_names)
    # to_coco lists annotations and results image by image in their given order: attach masks alike.
    gt_segms = [seg for per_image in segmentations for seg in per_image]
    if len(gt_segms) != len(gt_dict["annotations"]):
        raise ValueError(f"{len(gt_dict['annotations'])} ground-truth objects but {len(gt_segms)} segmentations")
    for ann, seg in zip(gt_dict["annotations"], gt_segms, strict=True):
        ann["segmentation"] = seg
    rles = [rle for inst in instances for rle in inst.masks]
    for res, rle in zip(results, rles, strict=True):
        res["segmentation"] = rle
        # A segm result is its mask; COCO derives the box and area from it (a box here would set the area).
        del res["bbox"]
    return gt_dict, results


def segm_suite(truths: Sequence[ImageTruth], segmentations: Sequence[Sequence[Segmentation]],
               instances: Sequence[ImageInstances], class_names: Sequence[str]) -> dict[str, Any]:
    """COCO's suite on masks (AP, AP50, ..., perClass), as floats or None."""
    return coco_stats(*segm_coco(truths, segmentations, instances, class_names), len(class_names), "segm")


def instance_metrics(truths: Sequence[ImageTruth], segmentations: Sequence[Sequence[Segmentation]],
                     instances: Sequence[ImageInstances], class_names: Sequence[str],
                     iou_threshold: float = 0.5, box: CocoEvaluator | None = None,
                     segm: CocoEvaluator | None = None, matched: Sequence[ImageMatches] | None = None
                     ) -> dict[str, Any]:
    """The detection suite on boxes plus the mask suite (see the module docstring), JSON-ready.

    `box`, `segm` (the evaluators of `to_coco` and `segm_coco`) and `matched` are reused when given."""
    metrics = detection_metrics(truths, [inst.detections for inst in instances], class_names, iou_threshold,
                                box, matched)
    mask = (evaluator_suite(segm, len(class_names)) if segm is not None
            else segm_suite(truths, segmentations, instances, class_names))
    for row, ap in zip(metrics["perClass"], mask.pop("perClass"), strict=True):
        row["maskAP"], row["maskAP50"] = ap["AP"], ap["AP50"]
    metrics.update({f"mask{k}": mask[k] for k in STAT_NAMES[:3]}, mask=mask)
    return metrics

"""Semantic segmentation: class masks from a manifest's objects, and the metrics on them.

One module for both sides, so training (`kubeforge_trainers.tasks.semantic`) and the
benchmark rasterise ground truth and count IoU the same way.

Class masks (uint8 [H, W], one class index per pixel):
- index 0 is the background class `BACKGROUND` ("__bg__"), added in front of the selected
  classes the way the UNet training apps do; object class k of the selection is index k + 1;
- overlapping objects: larger objects are painted first and smaller ones over them, so a small
  object lying on a large one stays visible (ties keep annotation order; the later one wins);
- an object without `segmentation` is painted as its filled box (counted in `MaskStats`);
- crowd regions (`iscrowd: 1`) are painted `IGNORE`: their pixels count neither in the loss nor
  in the metrics (COCO's convention for crowds, as detection evaluation does);
- objects of classes that are not selected stay background: the model learns not to mark them.

Metrics (from a confusion matrix over every evaluated pixel; truth `IGNORE` pixels left out):
- pixel accuracy: correct pixels / all pixels;
- IoU_c = TP / (TP + FP + FN) and Dice_c = 2 TP / (2 TP + FP + FN) per class;
- a class absent from both truth and prediction has no IoU (None in the per-class table) and is
  left out of the means rather than counted as 0 or 1: nothing was there to get right or wrong;
- mean IoU / mean Dice average the object classes only: `__bg__` is reported per class but does
  not count in the means, because on typical data it covers most pixels and would hide how well
  objects are segmented.
- the pixel confusion matrix (`confusionMatrix`, rows = truth) holds every class, `__bg__` too.

Boundary IoU (Cheng et al. 2021, "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation"): a mask's boundary region is the mask minus its erosion by d pixels (a (2d+1)
square, i.e. d steps of the 3x3 erosion; outside the image counts as not-mask, so pixels at the
image edge are boundary), with d = 2% of the image diagonal rounded, at least 1. For class c
per image: G = boundary of truth == c, P = boundary of prediction == c; pixels whose truth is
ignored are left out of both; intersection |G & P| and union |G | P| are summed over the images
and boundary IoU_c = sum of intersections / sum of unions (null when every union is empty).
`boundaryIoU` is the mean over the object classes that have one (as mIoU, `__bg__` left out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubeforge.datasets.formats.common import polygons_to_mask, rle_to_mask
from kubeforge.datasets.manifest import ManifestAnnotation, ManifestImage
from kubeforge.models.catalog import BENCHMARK_METRICS
from kubeforge.models.preprocess import mask_to_image

BACKGROUND = "__bg__"
# Truth pixels that are neither right nor wrong (crowd regions); also the loss's ignore_index.
IGNORE = 255
MAX_CLASSES = IGNORE  # indices 0..254, __bg__ included


def with_background(classes: Sequence[str]) -> list[str]:
    """The model's output classes: `__bg__` first, then the selected classes."""
    if BACKGROUND in classes:
        raise ValueError(f"spec.classes: {BACKGROUND!r} is reserved for the background of semantic segmentation")
    if len(classes) + 1 > MAX_CLASSES:
        raise ValueError(f"spec.classes: {len(classes)} classes; semantic segmentation masks hold at most "
                         f"{MAX_CLASSES - 1} (uint8 indices, {IGNORE} marks ignored pixels)")
    return [BACKGROUND, *classes]


@dataclass
class MaskStats:
    """What rasterising a set of images did, for logs and reports."""

    objects: int = 0
    boxes_filled: int = 0  # objects without a mask, painted as their box
    crowd: int = 0

    def add(self, other: MaskStats) -> None:
        self.objects += other.objects
        self.boxes_filled += other.boxes_filled
        self.crowd += other.crowd


def object_mask(ann: ManifestAnnotation, image: ManifestImage) -> np.ndarray | None:
    """The object's bool mask at the image's size, or None when it has no `segmentation`."""
    seg = ann.segmentation
    if seg is None or (isinstance(seg, list) and not seg):
        return None
    h, w = image.height, image.width
    if isinstance(seg, dict):
        size = seg.get("size")
        if size is None or "counts" not in seg:
            raise ValueError(f"{image.file_name}: an annotation's segmentation RLE needs 'size' and 'counts'")
        if list(size) != [h, w]:
            raise ValueError(f"{image.file_name}: segmentation RLE size {list(size)} is not the image's "
                             f"[height, width] [{h}, {w}]")
        return rle_to_mask(seg)
    for poly in seg:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"{image.file_name}: a segmentation polygon has {len(poly)} coordinates; expected an "
                             "even count of at least 6 (x1, y1, x2, y2, x3, y3, ...)")
    return polygons_to_mask(seg, h, w)


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """A filled xyxy box (pixels) as a bool mask: what an object without a segmentation is painted as."""
    mask = np.zeros((height, width), dtype=bool)
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    mask[y0:y1, x0:x1] = True
    return mask


def class_mask(image: ManifestImage, annotations: Sequence[ManifestAnnotation], index_of: Mapping[int, int],
               size: tuple[int, int] | None = None) -> tuple[np.ndarray, MaskStats]:
    """uint8 [H, W] class indices for one image (see the module docstring for the rules).

    `index_of` maps manifest category ids to class indices (1.. for objects; 0 is `__bg__`);
    `size` (height, width) resizes the mask nearest-neighbour (the image is stretched the same way).
    """
    stats = MaskStats()
    painted: list[tuple[float, int, np.ndarray, int]] = []
    for order, ann in enumerate(annotations):
        if ann.category_id not in index_of:
            continue
        mask = object_mask(ann, image)
        if mask is None:
            x, y, bw, bh = ann.bbox
            mask = box_mask((x, y, x + bw, y + bh), image.height, image.width)
            stats.boxes_filled += 1
        value = IGNORE if ann.iscrowd else index_of[ann.category_id]
        stats.crowd += bool(ann.iscrowd)
        stats.objects += 1
        painted.append((float(mask.sum()), order, mask, value))
    out = np.zeros((image.height, image.width), dtype=np.uint8)
    # Larger first, so smaller objects on top of them stay visible; equal areas in annotation order.
    for _, _, mask, value in sorted(painted, key=lambda p: (-p[0], p[1])):
        out[mask] = value
    if size is not None:
        out = mask_to_image(out, size[1], size[0])
    return out, stats


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None = IGNORE) -> np.ndarray:
    """int64 [C, C]: rows = truth class, columns = predicted class; `ignore_index` truth pixels left out."""
    truth = np.asarray(truth).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"truth has {truth.size} pixels, prediction {pred.size}; expected the same")
    keep = truth != ignore_index if ignore_index is not None else np.ones_like(truth, dtype=bool)
    truth, pred = truth[keep], pred[keep]
    bad = (truth < 0) | (truth >= num_classes) | (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise ValueError(f"class indices outside 0..{num_classes - 1}: truth {np.unique(truth[bad]).tolist()[:5]}, "
                         f"prediction {np.unique(pred[bad]).tolist()[:5]}")
    return np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                              num_classes)


def _mean(values: np.ndarray) -> float | None:
    present = values[~np.isnan(values)]
    return float(present.mean()) if len(present) else None


def pixel_sums(cm: np.ndarray) -> np.ndarray:
    """[3, C]: correct, truth and predicted pixels per class: everything the scores need of a confusion
    matrix, so a per-image record for the bootstrap is 3C numbers, not C² (150 classes: 450, not 22,500)."""
    cm = np.asarray(cm)
    return np.stack([np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)])


def scores(cm: np.ndarray) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU and Dice (NaN when a class is absent from truth and prediction),
    and their means over the object classes (index 1..; see the module docstring)."""
    return scores_of_sums(pixel_sums(cm))


def scores_of_sums(sums: np.ndarray) -> dict[str, Any]:
    """`scores` from `pixel_sums` (possibly weighted and added over images)."""
    tp, truth, predicted = (np.asarray(row, dtype=np.float64) for row in sums)
    fp = predicted - tp
    fn = truth - tp
    total = truth.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return {
        "pixelAccuracy": float(tp.sum() / total) if total else 0.0,
        "iou": iou, "dice": dice,
        "mIoU": _mean(iou[1:]), "meanDice": _mean(dice[1:]),
        "truthPixels": truth.astype(np.int64), "predictedPixels": predicted.astype(np.int64),
    }


BOUNDARY_RATIO = 0.02


def boundary_width(height: int, width: int) -> int:
    """d of boundary IoU: 2% of the image diagonal, rounded, at least 1 pixel."""
    return max(1, round(BOUNDARY_RATIO * float(np.hypot(height, width))))


def _erode(mask: np.ndarray, d: int) -> np.ndarray:
    try:
        from scipy.ndimage import minimum_filter
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn
        out = mask.copy()
        for _ in range(d):
            padded = np.pad(out, 1, constant_values=False)
            out = np.ones_like(out)
            for dy in range(3):
                for dx in range(3):
                    out &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
        return out
    return minimum_filter(mask.astype(np.uint8), size=2 * d + 1, mode="constant", cval=0).astype(bool)


def mask_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """The pixels of `mask` within d pixels of its contour: the mask minus its erosion."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~_erode(mask, d)


def boundary_counts(truth: np.ndarray, pred: np.ndarray, num_classes: int,
                    ignore_index: int | None = IGNORE) -> tuple[np.ndarray, np.ndarray]:
    """Per class (int64 [C] each) the intersection and union of the truth and predicted boundary regions
    of one image (module docstring); classes in neither mask have 0 and 0."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape}: expected two masks of one size")
    d = boundary_width(*truth.shape)
    counted = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, dtype=bool)
    inter = np.zeros(num_classes, dtype=np.int64)
    union = np.zeros(num_classes, dtype=np.int64)
    present = np.union1d(np.unique(truth[counted]), np.unique(pred))
    for c in present[present < num_classes]:
        g = mask_boundary(truth == c, d) & counted
        p = mask_boundary(pred == c, d) & counted
        inter[c] = int((g & p).sum())
        union[c] = int((g | p).sum())
    return inter, union


def boundary_iou(inter: np.ndarray, union: np.ndarray) -> tuple[list[float | None], float | None]:
    """Per-class boundary IoU (None where the union is empty) and their mean over the object classes (1..)."""
    per_class = [float(i / u) if u else None for i, u in zip(inter, union, strict=True)]
    objects = [v for v in per_class[1:] if v is not None]
    return per_class, (float(np.mean(objects)) if objects else None)


def headline(cm: np.ndarray, classes: Sequence[int] | None = None) -> dict[str, float | None]:
    """mIoU, meanDice, pixelAccuracy of a (possibly weighted) confusion matrix; see `headline_of_sums`."""
    return headline_of_sums(pixel_sums(cm), classes)


def headline_of_sums(sums: np.ndarray, classes: Sequence[int] | None = None) -> dict[str, float | None]:
    """mIoU, meanDice, pixelAccuracy of `pixel_sums` (possibly weighted and added over images).

    `classes` (object class indices, 1..) restricts them for a comparison between models trained
    on different class sets: the means run over those classes, and pixel accuracy over the pixels
    whose truth is background or one of them.
    """
    s = scores_of_sums(sums)
    if classes is None:
        return {k: s[k] for k in BENCHMARK_METRICS["semantic-segmentation"].headline}
    keep = np.asarray(list(classes), dtype=np.int64)
    tp, truth = np.asarray(sums[0], dtype=np.float64), np.asarray(sums[1], dtype=np.float64)
    rows = np.r_[0, keep]
    total = truth[rows].sum()
    return {"mIoU": _mean(s["iou"][keep]) if len(keep) else None,
            "meanDice": _mean(s["dice"][keep]) if len(keep) else None,
            "pixelAccuracy": float(tp[rows].sum() / total) if total else 0.0}


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str],
                         boundary: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The benchmark's metrics document entry for a confusion matrix (classes[0] is `__bg__`);
    `boundary` = summed (intersection, union) of `boundary_counts` adds boundary IoU."""
    s = scores(cm)
    per_class = [
        {"class": name, "iou": None if np.isnan(s["iou"][k]) else float(s["iou"][k]),
         "dice": None if np.isnan(s["dice"][k]) else float(s["dice"][k]),
         "truthPixels": int(s["truthPixels"][k]), "predictedPixels": int(s["predictedPixels"][k])}
        for k, name in enumerate(class_names)
    ]
    out = {"mIoU": s["mIoU"], "meanDice": s["meanDice"], "pixelAccuracy": s["pixelAccuracy"],
           "backgroundIoU": per_class[0]["iou"], "perClass": per_class,
           "confusionMatrix": {"labels": list(class_names), "matrix": np.asarray(cm, dtype=np.int64).tolist()}}
    if boundary is not None:
        rows, mean = boundary_iou(*boundary)
        out["boundaryIoU"] = mean
        for row, value in zip(per_class, rows, strict=True):
            row["boundaryIoU"] = value
    return out

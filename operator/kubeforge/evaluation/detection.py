"""Object-detection metrics: the COCO AP suite and the operating point.

The COCO suite (AP, AP50, AP75, APs/m/l, AR1/10/100, per-class AP) is what papers and
torchvision's references report; it is computed by `evaluation.cocoeval` (our vectorised
evaluator, identical to pycocotools on the tests' inputs and `benchmarks/coco_eval.py`'s).

AP says nothing about which confidence threshold to deploy with, so we also report the
operating point: precision, recall and F1 at the confidence threshold that maximises F1,
at one IoU (`spec.iouThreshold`). Matching there is COCO's greedy rule (per image and
class, detections by descending score, each takes the best still-free ground truth with
IoU >= threshold; crowd regions absorb detections without counting them), so its recall at
the lowest threshold equals COCO's recall at that IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubeforge.evaluation.cocoeval import IOU_THRS, MAX_DETS, CocoEvaluator, iou_cap

CURVE_POINTS = 200  # enough to draw smooth curves without bloating metrics.json


@dataclass
class ImageTruth:
    """Ground truth of one image. `labels` are 0-based indices into the evaluated classes."""

    width: int
    height: int
    boxes: np.ndarray  # float [M, 4] xyxy, image pixels
    labels: np.ndarray  # int [M]
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    areas: np.ndarray | None = None  # COCO's `area` (sets APs/m/l); default: box area

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.iscrowd.size == 0:
            self.iscrowd = np.zeros(len(self.labels), dtype=bool)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool).reshape(-1)
        if self.areas is None:
            self.areas = _box_areas(self.boxes)
        if not (len(self.boxes) == len(self.labels) == len(self.iscrowd) == len(self.areas)):
            raise ValueError("ImageTruth: boxes, labels, iscrowd and areas must have the same length")


@dataclass
class ImageDetections:
    """A model's detections on one image, in the same class indexing as ImageTruth.

    Model output is judged, not refused: a detection with a NaN or infinite box or score (a diverged or
    broken model) is dropped and counted in `invalid`, and a box whose corners are swapped (x2 < x1)
    covers nothing (x2 = x1), so it matches no object instead of failing COCO's size check."""

    boxes: np.ndarray  # float [N, 4] xyxy, image pixels
    scores: np.ndarray  # float [N]
    labels: np.ndarray  # int [N]
    invalid: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.labels)):
            raise ValueError(
                f"ImageDetections: {len(self.boxes)} boxes, {len(self.scores)} scores and "
                f"{len(self.labels)} labels; expected the same count"
            )
        finite = np.isfinite(self.boxes).all(axis=1) & np.isfinite(self.scores)
        if not finite.all():
            self.invalid = int((~finite).sum())
            self.boxes, self.scores, self.labels = self.boxes[finite], self.scores[finite], self.labels[finite]
        self.boxes[:, 2] = np.maximum(self.boxes[:, 2], self.boxes[:, 0])
        self.boxes[:, 3] = np.maximum(self.boxes[:, 3], self.boxes[:, 1])


def _box_areas(xyxy: np.ndarray) -> np.ndarray:
    return np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)


def _xywh(xyxy: np.ndarray) -> list[list[float]]:
    return [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in xyxy]


def to_coco(
    truths: Sequence[ImageTruth], detections: Sequence[ImageDetections], class_names: Sequence[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """COCO ground-truth dict and result list (ids are 1-based: image i -> i+1, class k -> k+1)."""
    if len(truths) != len(detections):
        raise ValueError(f"{len(truths)} ground-truth images but detections for {len(detections)}")
    images, annotations, results = [], [], []
    for i, (gt, dt) in enumerate(zip(truths, detections, strict=True)):
        images.append({"id": i + 1, "width": gt.width, "height": gt.height})
        for box, label, crowd, area in zip(_xywh(gt.boxes), gt.labels, gt.iscrowd, gt.areas, strict=True):
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                "bbox": box, "area": float(area), "iscrowd": int(crowd),
            })
        for box, score, label in zip(_xywh(dt.boxes), dt.scores, dt.labels, strict=True):
            results.append({"image_id": i + 1, "category_id": int(label) + 1, "bbox": box, "score": float(score)})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def coco_suite(
    truths: Sequence[ImageTruth], detections: Sequence[ImageDetections], class_names: Sequence[str]
) -> dict[str, Any]:
    """AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l and per-class AP (IoU .50:.95), as floats or None."""
    return evaluator_suite(CocoEvaluator.from_dicts(*to_coco(truths, detections, class_names), "bbox"),
                           len(class_names))


def coco_stats(gt_dict: dict[str, Any], results: list[dict[str, Any]], num_classes: int,
               iou_type: str) -> dict[str, Any]:
    """The COCO suite of `to_coco`-shaped inputs for boxes ("bbox") or masks ("segm", RLE or polygons)."""
    return evaluator_suite(CocoEvaluator.from_dicts(gt_dict, results, iou_type), num_classes)  # type: ignore[arg-type]


def evaluator_suite(evaluator: CocoEvaluator, num_classes: int) -> dict[str, Any]:
    """The COCO suite (the 12 numbers and perClass AP, AP50) of an evaluator built on `to_coco`-shaped inputs."""
    out: dict[str, Any] = dict(evaluator.stats())
    # precision: [iouThr, recall, class, areaRange, maxDets]; area "all" = 0, maxDets 100 = last.
    precision = evaluator.precision()
    iou50 = int(np.argmin(np.abs(IOU_THRS - 0.5)))
    per_class = []
    for k in range(num_classes):
        p_all = precision[:, :, k, 0, -1]
        p50 = precision[iou50, :, k, 0, -1]
        per_class.append({
            "AP": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else None,
            "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else None,
        })
    out["perClass"] = per_class
    return out


def _iou_matrix(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU [D, G] as COCO computes it: for a crowd region the union is the detection's area."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    ix1 = np.maximum(dt[:, None, 0], gt[None, :, 0])
    iy1 = np.maximum(dt[:, None, 1], gt[None, :, 1])
    ix2 = np.minimum(dt[:, None, 2], gt[None, :, 2])
    iy2 = np.minimum(dt[:, None, 3], gt[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    dt_area = _box_areas(dt)[:, None]
    union = np.where(crowd[None, :], dt_area, dt_area + _box_areas(gt)[None, :] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class Matches:
    """Every kept detection with its verdict at one IoU threshold, plus ground-truth counts."""

    scores: np.ndarray  # float [D]
    labels: np.ndarray  # int [D]
    tp: np.ndarray  # bool [D]: matched a non-crowd ground truth
    num_gt: np.ndarray  # int [C]: non-crowd ground truths per class


@dataclass
class ImageMatches:
    """One image's COCO matching at one IoU: kept (not crowd-absorbed) detections and their objects."""

    scores: np.ndarray  # float [D]
    labels: np.ndarray  # int [D]
    matched: np.ndarray  # int [D]: index into the image's ground truth of the TP match, -1 for none
    iou: np.ndarray  # float [D]: IoU with the matched object (0 without)
    boxes: np.ndarray  # float [D, 4]
    truth: ImageTruth


def match_image(gt: ImageTruth, dt: ImageDetections, num_classes: int, iou_threshold: float) -> ImageMatches:
    """COCO's greedy matching of one image at one IoU, keeping which object each detection matched;
    detections matched to crowd regions are dropped (neither right nor wrong)."""
    threshold = iou_cap(iou_threshold)
    scores, labels, matched, ious, boxes = [], [], [], [], []
    for c in range(num_classes):
        g_idx = np.flatnonzero(gt.labels == c)
        # Non-crowd ground truths first, as COCO sorts them, so a real match beats a crowd one.
        g_idx = g_idx[np.argsort(gt.iscrowd[g_idx], kind="mergesort")]
        crowd = gt.iscrowd[g_idx]
        d_idx = np.flatnonzero(dt.labels == c)
        # COCO's detection cap holds per image and class.
        d_idx = d_idx[np.argsort(-dt.scores[d_idx], kind="mergesort")][:MAX_DETS[-1]]
        if len(d_idx) == 0:
            continue
        iou = _iou_matrix(dt.boxes[d_idx], gt.boxes[g_idx], crowd)
        taken = np.zeros(len(g_idx), dtype=bool)
        for d in range(len(d_idx)):
            best, m = threshold, -1
            for g in range(len(g_idx)):
                if taken[g] and not crowd[g]:
                    continue
                # Once matched to a real object, never trade it for a crowd region.
                if m > -1 and not crowd[m] and crowd[g]:
                    break
                if iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m > -1 and crowd[m]:
                continue  # absorbed by a crowd region: neither right nor wrong
            if m > -1:
                taken[m] = True
            scores.append(dt.scores[d_idx[d]])
            labels.append(c)
            matched.append(int(g_idx[m]) if m > -1 else -1)
            ious.append(float(iou[d, m]) if m > -1 else 0.0)
            boxes.append(dt.boxes[d_idx[d]])
    return ImageMatches(
        scores=np.asarray(scores, dtype=np.float64), labels=np.asarray(labels, dtype=np.int64),
        matched=np.asarray(matched, dtype=np.int64), iou=np.asarray(ious, dtype=np.float64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), truth=gt,
    )


def match_all(truths: Sequence[ImageTruth], detections: Sequence[ImageDetections], num_classes: int,
              iou_threshold: float) -> list[ImageMatches]:
    return [match_image(gt, dt, num_classes, iou_threshold) for gt, dt in zip(truths, detections, strict=True)]


def to_matches(images: Sequence[ImageMatches], num_classes: int, classes: Sequence[int] | None = None) -> Matches:
    """The pooled `Matches` (for `operating_point`), optionally of a subset of classes."""
    keep = set(range(num_classes) if classes is None else classes)
    scores, labels, tp = [], [], []
    num_gt = np.zeros(num_classes, dtype=np.int64)
    for im in images:
        sel = np.isin(im.labels, list(keep))
        scores.append(im.scores[sel])
        labels.append(im.labels[sel])
        tp.append(im.matched[sel] >= 0)
        real = ~im.truth.iscrowd
        num_gt += np.bincount(im.truth.labels[real], minlength=num_classes)[:num_classes]
    mask = np.isin(np.arange(num_classes), list(keep))
    return Matches(scores=np.concatenate(scores) if scores else np.zeros(0),
                   labels=np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
                   tp=np.concatenate(tp) if tp else np.zeros(0, dtype=bool),
                   num_gt=np.where(mask, num_gt, 0))


def match_detections(
    truths: Sequence[ImageTruth], detections: Sequence[ImageDetections], num_classes: int, iou_threshold: float
) -> Matches:
    """COCO's greedy matching at one IoU, pooled over the images (`match_all`, `to_matches`)."""
    return to_matches(match_all(truths, detections, num_classes, iou_threshold), num_classes)


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.divide(2 * p * r, p + r, out=np.zeros_like(p, dtype=np.float64), where=(p + r) > 0)


def operating_point(matches: Matches, class_names: Sequence[str]) -> dict[str, Any]:
    """Precision, recall, F1 (over all classes) at the F1-optimal confidence, the curve, per-class values.

    A threshold t keeps detections with score >= t, so the curve is sampled only where the
    score changes (tied scores enter together).
    """
    order = np.argsort(-matches.scores, kind="mergesort")
    scores, tp = matches.scores[order], matches.tp[order]
    total_gt = int(matches.num_gt.sum())
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    last_of_tie = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True]) if len(scores) else np.zeros(0, int)
    thr = scores[last_of_tie]
    precision = ctp[last_of_tie] / np.maximum(ctp[last_of_tie] + cfp[last_of_tie], 1)
    recall = ctp[last_of_tie] / total_gt if total_gt else np.zeros(len(last_of_tie))
    f1 = _f1(precision, recall)
    out: dict[str, Any] = {"numGroundTruth": total_gt, "numDetections": len(scores)}
    if len(thr) == 0 or total_gt == 0:
        out.update(threshold=None, precision=0.0, recall=0.0, f1=0.0)
        best_thr = np.inf
    else:
        best = int(np.argmax(f1))  # first maximum = the highest threshold reaching it
        best_thr = float(thr[best])
        out.update(threshold=best_thr, precision=float(precision[best]), recall=float(recall[best]),
                   f1=float(f1[best]))
    keep = np.unique(np.linspace(0, len(thr) - 1, min(len(thr), CURVE_POINTS)).round().astype(int))
    out["curve"] = {
        "confidence": thr[keep].tolist(), "precision": precision[keep].tolist(),
        "recall": recall[keep].tolist(), "f1": f1[keep].tolist(),
    }
    per_class = []
    kept = matches.scores >= best_thr
    for c, name in enumerate(class_names):
        sel = kept & (matches.labels == c)
        n_tp = int((matches.tp & sel).sum())
        n_fp = int(sel.sum()) - n_tp
        n_gt = int(matches.num_gt[c])
        p = n_tp / (n_tp + n_fp) if n_tp + n_fp else 0.0
        r = n_tp / n_gt if n_gt else 0.0
        per_class.append({"class": name, "precision": p, "recall": r, "f1": float(_f1(np.array([p]), np.array([r]))[0]),
                          "tp": n_tp, "fp": n_fp, "fn": n_gt - n_tp, "support": n_gt})
    out["perClass"] = per_class
    return out


def detection_metrics(
    truths: Sequence[ImageTruth],
    detections: Sequence[ImageDetections],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    evaluator: CocoEvaluator | None = None,
    matched: Sequence[ImageMatches] | None = None,
) -> dict[str, Any]:
    """The whole detection suite, JSON-ready: COCO stats, operating point, per-class rows, curve.

    `evaluator` (the "bbox" CocoEvaluator of `to_coco(truths, detections, class_names)`) and `matched`
    (`match_all` at `iou_threshold`) are reused when the caller already has them."""
    if evaluator is None:
        evaluator = CocoEvaluator.from_dicts(*to_coco(truths, detections, class_names), "bbox")
    if matched is None:
        matched = match_all(truths, detections, len(class_names), iou_threshold)
    suite = evaluator_suite(evaluator, len(class_names))
    point = operating_point(to_matches(matched, len(class_names)), class_names)
    per_class = [
        {**row, "AP": ap["AP"], "AP50": ap["AP50"]}
        for row, ap in zip(point.pop("perClass"), suite.pop("perClass"), strict=True)
    ]
    return {
        **suite,
        "iouThreshold": iou_threshold,
        "threshold": point["threshold"],
        "precision": point["precision"],
        "recall": point["recall"],
        "f1": point["f1"],
        "numGroundTruth": point["numGroundTruth"],
        "numDetections": point["numDetections"],
        "curve": point["curve"],
        "perClass": per_class,
    }

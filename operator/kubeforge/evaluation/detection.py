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

MAX_DETS = 100  # COCO's per-image (per-class for matching) detection cap
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


STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _none_if_absent(value: float) -> float | None:
    # COCO marks "no ground truth to measure against" with -1; JSON gets null, not a fake score.
    return None if value < 0 else float(value)


def coco_suite(
    truths: Sequence[ImageTruth], detections: Sequence[ImageDetections], class_names: Sequence[str]
) -> dict[str, Any]:
    """AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l and per-class AP (IoU .50:.95), as floats or None."""
    gt_dict, results = to_coco(truths, detections, class_names)
    return coco_stats(gt_dict, results, len(class_names), "bbox")


def coco_stats(gt_dict: dict[str, Any], results: list[dict[str, Any]], num_classes: int,
               iou_type: str) -> dict[str, Any]:
    """The COCO suite of `to_coco`-shaped inputs for boxes ("bbox") or masks ("segm", RLE or polygons)."""
    from kubeforge.evaluation.cocoeval import IOU_THRS, CocoEvaluator

    evaluator = CocoEvaluator.from_dicts(gt_dict, results, iou_type)  # type: ignore[arg-type]
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


def match_detections(
    truths: Sequence[ImageTruth], detections: Sequence[ImageDetections], num_classes: int, iou_threshold: float
) -> Matches:
    """COCO's greedy matching at one IoU; detections matched to crowd regions are dropped."""
    scores, labels, tps = [], [], []
    num_gt = np.zeros(num_classes, dtype=np.int64)
    threshold = min(iou_threshold, 1 - 1e-10)
    for gt, dt in zip(truths, detections, strict=True):
        for c in range(num_classes):
            g_idx = np.flatnonzero(gt.labels == c)
            # Non-crowd ground truths first, as COCO sorts them, so a real match beats a crowd one.
            g_idx = g_idx[np.argsort(gt.iscrowd[g_idx], kind="mergesort")]
            crowd = gt.iscrowd[g_idx]
            num_gt[c] += int((~crowd).sum())
            d_idx = np.flatnonzero(dt.labels == c)
            d_idx = d_idx[np.argsort(-dt.scores[d_idx], kind="mergesort")][:MAX_DETS]
            if len(d_idx) == 0:
                continue
            ious = _iou_matrix(dt.boxes[d_idx], gt.boxes[g_idx], crowd)
            taken = np.zeros(len(g_idx), dtype=bool)
            for d in range(len(d_idx)):
                best, m = threshold, -1
                for g in range(len(g_idx)):
                    if taken[g] and not crowd[g]:
                        continue
                    # Once matched to a real object, never trade it for a crowd region.
                    if m > -1 and not crowd[m] and crowd[g]:
                        break
                    if ious[d, g] < best:
                        continue
                    best, m = ious[d, g], g
                if m > -1 and crowd[m]:
                    continue  # absorbed by a crowd region: neither right nor wrong
                if m > -1:
                    taken[m] = True
                scores.append(dt.scores[d_idx[d]])
                labels.append(c)
                tps.append(m > -1)
    return Matches(
        scores=np.asarray(scores, dtype=np.float64),
        labels=np.asarray(labels, dtype=np.int64),
        tp=np.asarray(tps, dtype=bool),
        num_gt=num_gt,
    )


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
) -> dict[str, Any]:
    """The whole detection suite, JSON-ready: COCO stats, operating point, per-class rows, curve."""
    suite = coco_suite(truths, detections, class_names)
    point = operating_point(match_detections(truths, detections, len(class_names), iou_threshold), class_names)
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

"""What the detection numbers are made of: counts, confusion with background, calibration, matched IoU,
results by object size, per-class PR curves, per-image scores and the pieces the bootstrap resamples.

Everything here is at one IoU (`spec.iouThreshold`) and the operating point (the F1-optimal
confidence of `detection.operating_point`): a detection is kept when its score is at least
that threshold. Matching is `detection.match_all`, COCO's greedy rule, the operating point's too
(per image and class, detections by descending score, at most 100 per class; crowd regions
absorb detections, which are then neither right nor wrong), so the TP count here is the
operating point's.

Confusion matrix with background (rows = truth, columns = prediction, the last row and column
`background`), per image:
1. the same-class matching above: each TP counts in (class, class);
2. each kept detection left unmatched, by descending score, takes the still-unmatched non-crowd
   object of ANOTHER class it overlaps most (IoU >= the threshold; ties: the first object):
   it counts in (truth class, predicted class) and that object is no longer missed;
3. kept detections still unmatched were invented: (background, predicted class); objects still
   unmatched were missed: (truth class, background).
So row c sums to the class's non-crowd objects and column c (background row included) to its
kept detections not absorbed by a crowd; `counts` are tp = the diagonal, fp = kept detections
that are not TPs (steps 2 and 3), fn = objects not found by their own class.

Per-image score (`perImage`): the image's F1 at the operating point, 2 TP / (2 TP + FP + FN),
1.0 when it has neither objects nor kept detections.

By size: COCO's area ranges (small [0, 32^2], medium [32^2, 96^2], large [96^2, inf), bounds
inclusive as in pycocotools); AP/AR are COCO's APs/APm/APl and ARs/ARm/ARl, `numGroundTruth`
the non-crowd objects in the range and `recall` the share of them found at the operating point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kubeforge.evaluation.calibration import calibration
from kubeforge.evaluation.cocoeval import AREA_LBL, AREA_RNG, IOU_THRS, CocoEvaluator, iou_cap
from kubeforge.evaluation.detection import (  # noqa: F401 - match_all, to_matches: this module's API too
    ImageMatches,
    ImageTruth,
    _iou_matrix,
    match_all,
    operating_point,
    to_matches,
)

# COCO's object-size ranges, "all" left out.
SIZES = dict(zip(AREA_LBL[1:], AREA_RNG[1:], strict=True))
SIZE_STATS = {"small": ("APs", "ARs"), "medium": ("APm", "ARm"), "large": ("APl", "ARl")}
TOP_PAIRS = 10
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds


def _kept(threshold: float | None) -> float:
    return np.inf if threshold is None else threshold


def per_image_counts(images: Sequence[ImageMatches], threshold: float | None,
                     classes: Sequence[int] | None = None) -> np.ndarray:
    """int64 [N, 3]: TP, FP, FN of each image at the threshold (of a subset of classes if given)."""
    t = _kept(threshold)
    out = np.zeros((len(images), 3), dtype=np.int64)
    for n, im in enumerate(images):
        real = ~im.truth.iscrowd
        sel = im.scores >= t
        gt_sel = real
        if classes is not None:
            sel = sel & np.isin(im.labels, list(classes))
            gt_sel = real & np.isin(im.truth.labels, list(classes))
        tp = int((sel & (im.matched >= 0)).sum())
        out[n] = (tp, int(sel.sum()) - tp, int(gt_sel.sum()) - tp)
    return out


def image_f1(counts: np.ndarray) -> np.ndarray:
    """Per-image F1 = 2TP / (2TP + FP + FN); 1.0 with nothing to find and nothing kept."""
    tp, fp, fn = (counts[:, k].astype(np.float64) for k in range(3))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.ones_like(den), where=den > 0)


def prf(counts: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Pooled precision, recall and F1 from per-image counts, each image weighted (bootstrap)."""
    w = np.ones(len(counts)) if weights is None else np.asarray(weights, dtype=np.float64)
    tp, fp, fn = (float(w @ counts[:, k]) for k in range(3))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def confusion_with_background(images: Sequence[ImageMatches], num_classes: int, threshold: float | None,
                              iou_threshold: float) -> np.ndarray:
    """int64 [C+1, C+1] (module docstring); index C is background."""
    t, thr = _kept(threshold), iou_cap(iou_threshold)
    bg = num_classes
    cm = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for im in images:
        gt = im.truth
        kept = im.scores >= t
        found = np.zeros(len(gt.labels), dtype=bool)
        for d in np.flatnonzero(kept & (im.matched >= 0)):
            cm[im.labels[d], im.labels[d]] += 1
            found[im.matched[d]] = True
        loose = np.flatnonzero(kept & (im.matched < 0))
        loose = loose[np.argsort(-im.scores[loose], kind="mergesort")]
        iou = _iou_matrix(im.boxes[loose], gt.boxes, np.zeros(len(gt.labels), dtype=bool))
        for row, d in enumerate(loose):
            free = ~found & ~gt.iscrowd & (gt.labels != im.labels[d]) & (iou[row] >= thr)
            if free.any():
                g = int(np.argmax(np.where(free, iou[row], -1.0)))
                cm[gt.labels[g], im.labels[d]] += 1
                found[g] = True
            else:
                cm[bg, im.labels[d]] += 1
        for g in np.flatnonzero(~found & ~gt.iscrowd):
            cm[gt.labels[g], bg] += 1
    return cm


def confused_pairs(cm: np.ndarray, class_names: Sequence[str], top: int = TOP_PAIRS) -> list[dict[str, Any]]:
    """The most frequent (truth, predicted) pairs of different classes, background left out."""
    k = len(class_names)
    pairs = [(int(cm[a, b]), a, b) for a in range(k) for b in range(k) if a != b and cm[a, b] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"truth": class_names[a], "predicted": class_names[b], "count": n} for n, a, b in pairs[:top]]


def matched_iou(images: Sequence[ImageMatches], threshold: float | None) -> float | None:
    """Mean IoU of the TP pairs at the operating point."""
    t = _kept(threshold)
    values = np.concatenate([im.iou[(im.scores >= t) & (im.matched >= 0)] for im in images]) if images else []
    return float(np.mean(values)) if len(values) else None


def by_size(images: Sequence[ImageMatches], threshold: float | None, suite: dict[str, Any]) -> dict[str, Any]:
    """{small|medium|large: {AP, AR, numGroundTruth, recall}} (module docstring)."""
    t = _kept(threshold)
    out = {}
    for size, (low, high) in SIZES.items():
        total = found = 0
        for im in images:
            area = np.asarray(im.truth.areas)
            in_range = ~im.truth.iscrowd & (area >= low) & (area <= high)
            total += int(in_range.sum())
            hits = im.matched[(im.scores >= t) & (im.matched >= 0)]
            found += int(in_range[hits].sum())
        ap, ar = SIZE_STATS[size]
        out[size] = {"AP": suite.get(ap), "AR": suite.get(ar), "numGroundTruth": total,
                     "recall": found / total if total else None}
    return out


def detection_calibration(images: Sequence[ImageMatches]) -> dict[str, Any]:
    """Calibration of every detection not absorbed by a crowd (all confidences; correct = TP at the IoU threshold)."""
    scores = np.concatenate([im.scores for im in images]) if images else np.zeros(0)
    correct = np.concatenate([im.matched >= 0 for im in images]) if images else np.zeros(0, dtype=bool)
    return calibration(scores, correct)


def pr_curves(precision: np.ndarray | None, num_classes: int) -> list[dict[str, list[float]]]:
    """Per class COCO's 101-point precision at IoU 0.5, area all, the largest maxDets; -1 entries dropped.

    `precision` is COCO's accumulated [T, R, K, A, M] array (T: IoU .50:.05:.95, so IoU 0.5 is first)."""
    if precision is None or len(precision) == 0 or len(RECALL_POINTS) != np.asarray(precision).shape[1]:
        return [{"recall": [], "precision": []} for _ in range(num_classes)]
    t = 0
    out = []
    for k in range(num_classes):
        p = np.asarray(precision)[t, :, k, 0, -1]
        ok = p > -1
        out.append({"recall": RECALL_POINTS[ok].tolist(), "precision": p[ok].astype(float).tolist()})
    return out


def analysis(images: Sequence[ImageMatches], class_names: Sequence[str], threshold: float | None,
             iou_threshold: float, suite: dict[str, Any]) -> dict[str, Any]:
    """counts, confusion, confusedPairs, calibration, matchedIoU and bySize for the metrics document."""
    cm = confusion_with_background(images, len(class_names), threshold, iou_threshold)
    counts = per_image_counts(images, threshold).sum(axis=0)
    return {
        "counts": {"tp": int(counts[0]), "fp": int(counts[1]), "fn": int(counts[2])},
        "confusion": {"labels": [*class_names, "background"], "matrix": cm.tolist()},
        "confusedPairs": confused_pairs(cm, class_names),
        "calibration": detection_calibration(images),
        "matchedIoU": matched_iou(images, threshold),
        "bySize": by_size(images, threshold, suite),
    }


def subset_coco(gt_dict: dict[str, Any], results: list[dict[str, Any]], classes: Sequence[int] | None
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`to_coco`-shaped inputs restricted to some classes (0-based; category ids are class + 1)."""
    if classes is None:
        return gt_dict, results
    ids = {int(k) + 1 for k in classes}
    return ({**gt_dict, "annotations": [a for a in gt_dict["annotations"] if a["category_id"] in ids],
             "categories": [c for c in gt_dict["categories"] if c["id"] in ids]},
            [r for r in results if r["category_id"] in ids])


class WeightedCoco:
    """COCO's 12 numbers for image weights (bootstrap multiplicities) of one evaluation.

    Wraps an `evaluation.cocoeval.CocoEvaluator` (which accepts image weights); `available` is False
    without one, and then AP intervals are left out."""

    def __init__(self, evaluator: CocoEvaluator | None) -> None:
        self.available = evaluator is not None
        if evaluator is None:
            return
        self._evaluator = evaluator
        # Weights are given in our image order (COCO image id = position + 1).
        self._order = np.asarray([int(i) - 1 for i in evaluator.image_ids], dtype=np.int64)

    @classmethod
    def from_dicts(cls, gt_dict: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> WeightedCoco:
        try:
            return cls(CocoEvaluator.from_dicts(gt_dict, results, iou_type))  # type: ignore[arg-type]
        except ValueError:
            # Inputs the evaluator refuses: no AP intervals (`detection.coco_stats` would refuse them too).
            return cls(None)

    def stats(self, weights: np.ndarray | None = None) -> dict[str, float | None]:
        """All 12 numbers (None where COCO says -1)."""
        if not self.available:
            return {}
        w = None if weights is None else np.asarray(weights)[self._order]
        raw = self._evaluator.stats(w)
        return {k: (None if v is None or v < 0 else float(v)) for k, v in raw.items()}

    def headline(self, weights: np.ndarray | None = None) -> dict[str, float | None]:
        """AP, AP50, AP75 only: what a bootstrap resample needs, about 12 times faster than `stats`
        (the evaluator accumulates the one cell these read: area "all", 100 detections)."""
        if not self.available:
            return {}
        w = None if weights is None else np.asarray(weights, dtype=np.int64)[self._order]
        precision = self._evaluator.precision(w, area="all", max_dets=100)[:, :, :, 0, -1]
        ap50 = int(np.flatnonzero(IOU_THRS == 0.5)[0])
        ap75 = int(np.flatnonzero(IOU_THRS == 0.75)[0])

        def mean(p: np.ndarray) -> float | None:
            valid = p[p > -1]
            return float(np.mean(valid)) if valid.size else None

        return {"AP": mean(precision), "AP50": mean(precision[ap50]), "AP75": mean(precision[ap75])}

    def precision(self) -> np.ndarray:
        """COCO's accumulated precision [T, R, K, A, M] (IoU thresholds .50:.05:.95)."""
        if not self.available:
            raise ValueError("no COCO evaluation: the evaluator refused these inputs")
        return np.asarray(self._evaluator.precision(None))


class ObjectStats:
    """The headline metrics of a detection (or instance-segmentation) evaluation for image weights and,
    for comparisons across class sets, a subset of classes (then COCO AP is over those categories and
    the operating threshold is the F1-optimal one of their detections).

    `box` and `mask`: the evaluators of `coco` and `segm` with every class, when the caller has them
    (each COCO evaluation is then built once per model)."""

    def __init__(self, truths: Sequence[ImageTruth], images: Sequence[ImageMatches], coco: tuple[dict[str, Any],
                 list[dict[str, Any]]], class_names: Sequence[str], threshold: float | None,
                 segm: tuple[dict[str, Any], list[dict[str, Any]]] | None = None, *,
                 box: CocoEvaluator | None = None, mask: CocoEvaluator | None = None) -> None:
        self.images, self.class_names, self.threshold = list(images), list(class_names), threshold
        self._coco, self._segm = coco, segm
        self._evaluators = (box, mask)
        self._cache: dict[tuple[int, ...] | None, tuple[np.ndarray, WeightedCoco, WeightedCoco | None]] = {}
        self._pools: dict[tuple[str, tuple[int, ...] | None], tuple[np.ndarray, ...]] = {}

    def _pool(self, classes: tuple[int, ...] | None) -> tuple[np.ndarray, ...]:
        """Every kept detection by descending score (stable): its image, TP flag; the tie-group ends;
        the non-crowd objects per image."""
        images, scores, tps = [], [], []
        gt = np.zeros(len(self.images))
        for n, im in enumerate(self.images):
            sel = np.ones(len(im.labels), dtype=bool) if classes is None else np.isin(im.labels, classes)
            scores.append(im.scores[sel])
            tps.append(im.matched[sel] >= 0)
            images.append(np.full(int(sel.sum()), n))
            real = ~im.truth.iscrowd
            gt[n] = (real if classes is None else real & np.isin(im.truth.labels, classes)).sum()
        s = np.concatenate(scores) if scores else np.zeros(0)
        order = np.argsort(-s, kind="mergesort")
        s = s[order]
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, dtype=np.int64)
        return (np.concatenate(images)[order].astype(np.int64) if len(s) else np.zeros(0, dtype=np.int64),
                np.concatenate(tps)[order] if len(s) else np.zeros(0, dtype=bool), s, ends, gt)

    def threshold_for(self, weights: np.ndarray, classes: Sequence[int] | None = None) -> float | None:
        """The F1-optimal confidence of a resample (`detection.operating_point` with each image counted
        `weights[i]` times): how stable the chosen operating point is."""
        key = None if classes is None else tuple(sorted(int(k) for k in classes))
        if ("pool", key) not in self._pools:
            self._pools["pool", key] = self._pool(key)
        image, tp, scores, ends, gt = self._pools["pool", key]
        w = np.asarray(weights, dtype=np.float64)
        total = float(w @ gt)
        if not len(ends) or total == 0:
            return None
        wd = w[image]
        ctp = np.cumsum(tp * wd)[ends]
        cfp = np.cumsum(~tp * wd)[ends]
        precision = ctp / np.maximum(ctp + cfp, 1)
        recall = ctp / total
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                       where=(precision + recall) > 0)
        return float(scores[ends][int(np.argmax(f1))])

    def _parts(self, classes: Sequence[int] | None) -> tuple[np.ndarray, WeightedCoco, WeightedCoco | None]:
        key = None if classes is None else tuple(sorted(int(k) for k in classes))
        if key not in self._cache:
            threshold = self.threshold
            if key is not None:
                threshold = operating_point(to_matches(self.images, len(self.class_names), key),
                                            self.class_names)["threshold"]
            counts = per_image_counts(self.images, threshold, key)
            given_box, given_mask = self._evaluators if key is None else (None, None)
            box = WeightedCoco(given_box) if given_box is not None else WeightedCoco.from_dicts(
                *subset_coco(*self._coco, key), "bbox")
            mask = None
            if given_mask is not None:
                mask = WeightedCoco(given_mask)
            elif self._segm is not None:
                mask = WeightedCoco.from_dicts(*subset_coco(*self._segm, key), "segm")
            self._cache[key] = (counts, box, mask)
        return self._cache[key]

    def __call__(self, weights: np.ndarray | None, classes: Sequence[int] | None = None) -> dict[str, float | None]:
        counts, box, mask = self._parts(classes)
        out: dict[str, float | None] = {}
        if mask is not None:
            out.update({f"mask{k}": v for k, v in mask.headline(weights).items()})
        out.update(box.headline(weights))
        out.update(prf(counts, weights))
        out["threshold"] = self.threshold_for(np.ones(len(self.images)) if weights is None else weights, classes)
        return out

    def precision(self) -> np.ndarray:
        return self._parts(None)[1].precision()


def mask_by_size(images: Sequence[ImageMatches], mask_suite: dict[str, Any]) -> dict[str, Any]:
    """bySize of the segm suite: its APs/m/l and ARs/m/l and the objects per size range; `recall` is null
    (the operating point is a box one)."""
    out = by_size(images, None, mask_suite)
    for row in out.values():
        row["recall"] = None
    return out

"""Detection metrics: the COCO suite and recall against pycocotools on random scenes, and the
F1-optimal operating point on hand-built cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from kubeforge.evaluation.cocoeval import STAT_NAMES
from kubeforge.evaluation.detection import (
    ImageDetections,
    ImageTruth,
    detection_metrics,
    match_detections,
    operating_point,
)
from kubeforge.testing.coco_reference import pycocotools_bbox


def _random_scene(rng: np.random.Generator, num_classes: int) -> tuple[ImageTruth, ImageDetections]:
    width, height = int(rng.integers(200, 640)), int(rng.integers(200, 480))
    m = int(rng.integers(0, 8))
    # Sizes spread over COCO's small (<32^2), medium and large (>96^2) ranges.
    wh = rng.choice([12.0, 40.0, 120.0], size=(m, 2)) * rng.uniform(0.6, 1.4, size=(m, 2))
    xy = rng.uniform(0, 1, size=(m, 2)) * np.maximum(np.array([width, height]) - wh, 1)
    gt_boxes = np.concatenate([xy, xy + wh], axis=1)
    gt_labels = rng.integers(0, num_classes, m)
    crowd = rng.random(m) < 0.1
    boxes, scores, labels = [], [], []
    for box, label in zip(gt_boxes, gt_labels, strict=True):
        for _ in range(int(rng.integers(0, 3))):  # misses, hits and duplicates
            jitter = rng.normal(0, 0.15, 4) * np.array([box[2] - box[0], box[3] - box[1]] * 2)
            boxes.append(box + jitter)
            labels.append(label if rng.random() < 0.85 else rng.integers(0, num_classes))
            scores.append(rng.random())
    for _ in range(int(rng.integers(0, 4))):  # background false positives
        x, y = rng.uniform(0, width - 50), rng.uniform(0, height - 50)
        boxes.append(np.array([x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 50)]))
        labels.append(rng.integers(0, num_classes))
        scores.append(rng.random())
    truth = ImageTruth(width=width, height=height, boxes=gt_boxes, labels=gt_labels, iscrowd=crowd)
    dets = ImageDetections(np.array(boxes).reshape(-1, 4), np.array(scores), np.array(labels))
    return truth, dets


def _pycocotools(truths, dets, names):  # type: ignore[no-untyped-def]
    return pycocotools_bbox(truths, dets, names)


@pytest.mark.parametrize("seed", range(25))
def test_coco_suite_and_recall_match_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 5))
    names = [f"class{k}" for k in range(num_classes)]
    scenes = [_random_scene(rng, num_classes) for _ in range(int(rng.integers(1, 9)))]
    truths, dets = [s[0] for s in scenes], [s[1] for s in scenes]
    if seed % 2:  # tied scores: the order among equal scores must follow COCO's stable sort
        dets = [ImageDetections(d.boxes, np.round(d.scores, 1), d.labels) for d in dets]
    if sum(len(d.scores) for d in dets) == 0:  # pycocotools' loadRes cannot take an empty list
        dets[0] = ImageDetections(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0.5]), np.array([0]))

    got = detection_metrics(truths, dets, names, iou_threshold=0.5)
    ref = _pycocotools(truths, dets, names)

    for name, value in zip(STAT_NAMES, ref.stats, strict=True):
        assert got[name] == (None if value < 0 else pytest.approx(value, abs=1e-9)), name
    for k in range(num_classes):
        p = ref.eval["precision"][:, :, k, 0, -1]
        expected = p[p > -1].mean() if (p > -1).any() else None
        assert got["perClass"][k]["AP"] == (None if expected is None else pytest.approx(expected, abs=1e-9))

    # At the lowest threshold every kept detection counts: per-class recall must be COCO's
    # recall at that IoU (same greedy matching, same crowd handling, same 100-per-image cap).
    for iou in (0.5, 0.75):
        t = int(np.argmin(np.abs(ref.params.iouThrs - iou)))
        matches = match_detections(truths, dets, num_classes, iou)
        for k in range(num_classes):
            coco_recall = ref.eval["recall"][t, k, 0, -1]
            if coco_recall < 0:
                assert matches.num_gt[k] == 0
                continue
            assert matches.tp[matches.labels == k].sum() / matches.num_gt[k] == pytest.approx(coco_recall)


def _scene(gt: list[tuple[list[float], int]], dets: list[tuple[list[float], float, int]], crowd=()):  # type: ignore[no-untyped-def]
    truth = ImageTruth(
        width=100, height=100,
        boxes=np.array([b for b, _ in gt], dtype=float).reshape(-1, 4),
        labels=np.array([c for _, c in gt], dtype=int),
        iscrowd=np.array([i in crowd for i in range(len(gt))], dtype=bool),
    )
    return truth, ImageDetections(
        np.array([b for b, _, _ in dets], dtype=float).reshape(-1, 4),
        np.array([s for _, s, _ in dets]), np.array([c for _, _, c in dets], dtype=int),
    )


A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]


def _point(scenes, num_classes=1, iou=0.5):  # type: ignore[no-untyped-def]
    truths, dets = zip(*scenes, strict=True)
    names = [f"c{k}" for k in range(num_classes)]
    return operating_point(match_detections(truths, dets, num_classes, iou), names)


def test_best_f1_threshold_skips_a_confident_false_positive() -> None:
    # Curve: .9 P1 R.5 | .8 P.5 R.5 | .7 P.67 R1 (F1 .8) | .3 P.5 R1.
    point = _point([_scene([(A, 0), (B, 0)], [(A, 0.9, 0), (C, 0.8, 0), (B, 0.7, 0), (C, 0.3, 0)])])
    assert point["threshold"] == pytest.approx(0.7)
    assert point["precision"] == pytest.approx(2 / 3)
    assert point["recall"] == pytest.approx(1.0)
    assert point["f1"] == pytest.approx(0.8)
    assert point["perClass"][0] | {"precision": 0, "recall": 0, "f1": 0} == {
        "class": "c0", "precision": 0, "recall": 0, "f1": 0, "tp": 2, "fp": 1, "fn": 0, "support": 2
    }


def test_duplicates_wrong_class_and_two_images() -> None:
    scenes = [
        # A found twice (second is a duplicate = FP), B missed.
        _scene([(A, 0), (B, 0)], [(A, 0.95, 0), (A, 0.9, 0)]),
        # Right box, wrong class: an FP for class 1 and a miss for class 0.
        _scene([(C, 0)], [(C, 0.85, 1)]),
    ]
    point = _point(scenes, num_classes=2)
    # At .95: TP1 FP0 of 3 GT -> F1 .5; lower thresholds only add FPs.
    assert point["threshold"] == pytest.approx(0.95)
    assert (point["precision"], point["recall"], point["f1"]) == pytest.approx((1.0, 1 / 3, 0.5))
    assert [r["fp"] for r in point["perClass"]] == [0, 0]  # FPs below the threshold are not counted
    assert point["numGroundTruth"] == 3 and point["numDetections"] == 3


def test_iou_threshold_decides_a_loose_box() -> None:
    loose = [0, 0, 10, 15]  # IoU with A = 100/150 = 0.667
    scenes = [_scene([(A, 0)], [(loose, 0.6, 0)])]
    assert _point(scenes, iou=0.5)["f1"] == pytest.approx(1.0)
    at_075 = _point(scenes, iou=0.75)
    assert at_075["f1"] == 0.0 and at_075["recall"] == 0.0


def test_crowd_region_absorbs_detections_without_counting() -> None:
    # Two detections inside a crowd region: neither TP nor FP; the crowd is not a miss.
    crowd_box = [0, 0, 40, 40]
    scenes = [_scene([(crowd_box, 0), (C, 0)], [(A, 0.9, 0), (B, 0.8, 0), (C, 0.7, 0)], crowd=(0,))]
    point = _point(scenes)
    assert point["numGroundTruth"] == 1 and point["numDetections"] == 1
    assert (point["precision"], point["recall"], point["threshold"]) == pytest.approx((1.0, 1.0, 0.7))


def test_tied_scores_enter_together() -> None:
    # Two detections at 0.5, one right one wrong: no threshold keeps only the right one.
    point = _point([_scene([(A, 0)], [(A, 0.5, 0), (C, 0.5, 0)])])
    assert point["curve"]["confidence"] == [0.5]
    assert point["precision"] == pytest.approx(0.5)


def test_nothing_detected_gives_zero_and_no_threshold() -> None:
    point = _point([_scene([(A, 0)], [])])
    assert point["threshold"] is None and point["f1"] == 0.0 and point["curve"]["confidence"] == []


def test_perfect_detections_score_one_everywhere() -> None:
    truths, dets = zip(*[_scene([(A, 0), ([40, 40, 90, 90], 1)], [(A, 0.9, 0), ([40, 40, 90, 90], 0.8, 1)])],
                       strict=True)
    got = detection_metrics(list(truths), list(dets), ["a", "b"], iou_threshold=0.5)
    assert got["AP"] == pytest.approx(1.0) and got["AP50"] == pytest.approx(1.0)
    assert got["f1"] == pytest.approx(1.0) and got["threshold"] == pytest.approx(0.8)
    assert got["APl"] is None  # no ground truth over 96^2 px: COCO's -1 becomes null


def test_mismatched_lengths_are_rejected_with_counts() -> None:
    with pytest.raises(ValueError, match="3 boxes, 2 scores and 3 labels"):
        ImageDetections(np.zeros((3, 4)), np.zeros(2), np.zeros(3, dtype=int))


def test_broken_model_output_is_judged_not_refused() -> None:
    """A diverged model's NaN boxes are dropped and counted; swapped corners make an empty box (a FP)."""
    truth = ImageTruth(100, 100, np.array([[10.0, 10.0, 40.0, 40.0]]), np.array([0]))
    dets = ImageDetections(np.array([[10.0, 10.0, 40.0, 40.0], [np.nan, 0, 5, 5], [50.0, 50.0, 20.0, 20.0]]),
                           np.array([0.9, 0.8, 0.95]), np.array([0, 0, 0]))
    assert dets.invalid == 1 and len(dets.scores) == 2
    assert dets.boxes[1].tolist() == [50.0, 50.0, 50.0, 50.0]
    m = detection_metrics([truth], [dets], ["a"])
    assert m["numDetections"] == 2 and m["AP50"] is not None
    # The empty box outranks the real match: a false positive before the true positive.
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(1.0)

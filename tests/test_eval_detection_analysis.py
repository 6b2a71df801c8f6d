"""Detection analysis (kubeforge.evaluation.detection_analysis) against brute-force per-image loops and
pycocotools, on many random scenes: crowds, images without objects or detections, absent classes, ties."""

from __future__ import annotations

import copy
import io
from contextlib import redirect_stdout

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kubeforge.evaluation import detection_analysis as da
from kubeforge.evaluation.detection import ImageDetections, ImageTruth, detection_metrics, match_detections, to_coco
from kubeforge.testing.coco_reference import pycocotools_bbox


def _scene(rng: np.random.Generator, num_classes: int, kind: int) -> tuple[ImageTruth, ImageDetections]:
    width, height = int(rng.integers(100, 400)), int(rng.integers(100, 300))
    m = 0 if kind == 1 else int(rng.integers(0, 7))
    wh = rng.choice([12.0, 40.0, 110.0], size=(m, 2)) * rng.uniform(0.6, 1.4, size=(m, 2))
    xy = rng.uniform(0, 1, size=(m, 2)) * np.maximum(np.array([width, height]) - wh, 1)
    gt = np.concatenate([xy, xy + wh], axis=1)
    # The last class never appears in the truth.
    labels = rng.integers(0, max(1, num_classes - 1), m)
    crowd = rng.random(m) < 0.15
    boxes, scores, dlabels = [], [], []
    if kind != 2:  # kind 2: no detections at all
        for box, label in zip(gt, labels, strict=True):
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.12, 4) * np.array([box[2] - box[0], box[3] - box[1]] * 2)
                boxes.append(box + jitter)
                dlabels.append(label if rng.random() < 0.7 else rng.integers(0, num_classes))
                scores.append(rng.random())
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, width - 40), rng.uniform(0, height - 40)
            boxes.append(np.array([x, y, x + rng.uniform(5, 40), y + rng.uniform(5, 40)]))
            dlabels.append(rng.integers(0, num_classes))
            scores.append(rng.random())
    s = np.array(scores)
    if kind == 3:
        s = np.full(len(s), 0.5)  # all-equal scores
    elif kind == 4:
        s = np.round(s, 1)  # ties
    return (ImageTruth(width, height, gt, labels, crowd),
            ImageDetections(np.array(boxes).reshape(-1, 4), s, np.array(dlabels, dtype=np.int64)))


def _scenes(seed: int) -> tuple[list[ImageTruth], list[ImageDetections], list[str]]:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 5))
    scenes = [_scene(rng, num_classes, int(rng.integers(0, 5)) if seed % 3 else seed % 5)
              for _ in range(int(rng.integers(1, 9)))]
    return [s[0] for s in scenes], [s[1] for s in scenes], [f"c{k}" for k in range(num_classes)]


def _iou(a: np.ndarray, b: np.ndarray, crowd: bool) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a if crowd else area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _brute_force(truths, dets, num_classes, iou_thr, score_thr):  # type: ignore[no-untyped-def]
    """COCO's greedy matching then the background rules of the module, one image and detection at a time.

    Returns (confusion, TP (iou) pairs, per-image (tp, fp, fn), [(score, correct)] of all matched-or-not
    detections)."""
    t = min(iou_thr, 1 - 1e-10)
    bg = num_classes
    cm = np.zeros((num_classes + 1, num_classes + 1), dtype=int)
    pairs, per_image, scored = [], [], []
    for gt, dt in zip(truths, dets, strict=True):
        status: dict[int, int] = {}  # detection -> matched gt (-1 none); absorbed ones absent
        for c in range(num_classes):
            gts = [g for g in range(len(gt.labels)) if gt.labels[g] == c]
            gts = [g for g in gts if not gt.iscrowd[g]] + [g for g in gts if gt.iscrowd[g]]
            ds = sorted([d for d in range(len(dt.labels)) if dt.labels[d] == c], key=lambda d: -dt.scores[d])[:100]
            taken: set[int] = set()
            for d in ds:
                best, m = t, -1
                for g in gts:
                    if g in taken and not gt.iscrowd[g]:
                        continue
                    if m > -1 and not gt.iscrowd[m] and gt.iscrowd[g]:
                        break
                    iou = _iou(dt.boxes[d], gt.boxes[g], bool(gt.iscrowd[g]))
                    if iou < best:
                        continue
                    best, m = iou, g
                if m > -1 and gt.iscrowd[m]:
                    continue
                if m > -1:
                    taken.add(m)
                status[d] = m
        for d, m in status.items():
            scored.append((dt.scores[d], m > -1))
        kept = {d: m for d, m in status.items() if dt.scores[d] >= score_thr}
        found = set()
        tp = 0
        for d, m in kept.items():
            if m > -1:
                cm[dt.labels[d], dt.labels[d]] += 1
                found.add(m)
                tp += 1
                pairs.append(_iou(dt.boxes[d], gt.boxes[m], False))
        loose = sorted([d for d, m in kept.items() if m == -1], key=lambda d: -dt.scores[d])
        for d in loose:
            best_g, best_iou = -1, -1.0
            for g in range(len(gt.labels)):
                if g in found or gt.iscrowd[g] or gt.labels[g] == dt.labels[d]:
                    continue
                iou = _iou(dt.boxes[d], gt.boxes[g], False)
                if iou >= t and iou > best_iou:
                    best_g, best_iou = g, iou
            if best_g > -1:
                cm[gt.labels[best_g], dt.labels[d]] += 1
                found.add(best_g)
            else:
                cm[bg, dt.labels[d]] += 1
        real = [g for g in range(len(gt.labels)) if not gt.iscrowd[g]]
        for g in real:
            if g not in found:
                cm[gt.labels[g], bg] += 1
        per_image.append((tp, len(kept) - tp, len(real) - tp))
    return cm, pairs, per_image, scored


@pytest.mark.parametrize("seed", range(40))
def test_analysis_matches_brute_force(seed: int) -> None:
    truths, dets, names = _scenes(seed)
    k = len(names)
    iou_thr = [0.5, 0.3, 0.75][seed % 3]
    metrics = detection_metrics(truths, dets, names, iou_threshold=iou_thr)
    threshold = metrics["threshold"]
    images = da.match_all(truths, dets, k, iou_thr)
    ref = match_detections(truths, dets, k, iou_thr)  # the operating point's pooled matching
    got = da.analysis(images, names, threshold, iou_thr, metrics)
    cm, pairs, per_image, scored = _brute_force(truths, dets, k, iou_thr,
                                                np.inf if threshold is None else threshold)
    assert got["confusion"]["labels"] == [*names, "background"]
    assert got["confusion"]["matrix"] == cm.tolist()
    # Rows: every non-crowd object once; the diagonal is the operating point's TPs.
    assert cm[:k].sum(axis=1).tolist() == ref.num_gt.tolist()
    rows = metrics["perClass"]
    assert np.diag(cm)[:k].tolist() == [r["tp"] for r in rows]
    assert got["counts"] == {"tp": sum(r["tp"] for r in rows), "fp": sum(r["fp"] for r in rows),
                             "fn": sum(r["fn"] for r in rows)}
    assert got["counts"]["tp"] + got["counts"]["fp"] == int(cm[:, :k].sum())
    assert got["matchedIoU"] == (pytest.approx(np.mean(pairs)) if pairs else None)
    want_pairs = sorted([(int(cm[a, b]), a, b) for a in range(k) for b in range(k) if a != b and cm[a, b]],
                        key=lambda p: (-p[0], p[1], p[2]))[:10]
    assert got["confusedPairs"] == [{"truth": names[a], "predicted": names[b], "count": n} for n, a, b in want_pairs]
    f1 = da.image_f1(da.per_image_counts(images, threshold))
    for value, (tp, fp, fn) in zip(f1, per_image, strict=True):
        assert value == (pytest.approx(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0)
    conf = np.array([s for s, _ in scored])
    ok = np.array([c for _, c in scored], dtype=bool)
    from kubeforge.evaluation.calibration import calibration

    assert got["calibration"] == calibration(conf, ok)
    # By size: COCO's numbers and the non-crowd objects of each range (bounds inclusive).
    for size, (low, high) in da.SIZES.items():
        row = got["bySize"][size]
        ap, ar = da.SIZE_STATS[size]
        assert (row["AP"], row["AR"]) == (metrics[ap], metrics[ar])
        n = sum(int(((~t.iscrowd) & (t.areas >= low) & (t.areas <= high)).sum()) for t in truths)
        assert row["numGroundTruth"] == n
        if n == 0:
            assert row["recall"] is None


def _pycocotools_matches(truths, dets, names, iou_thr):  # type: ignore[no-untyped-def]
    """pycocotools' evaluateImg at one IoU (area "all", 100 detections): per image, (class, score, matched
    annotation id or 0) of each detection it does not ignore (a crowd match is ignored), in its order."""
    gt_dict, results = to_coco(truths, dets, names)
    out: list[list[tuple[int, float, int]]] = [[] for _ in truths]
    if not results:  # pycocotools' loadRes cannot take an empty list
        return out
    gt = COCO()
    gt.dataset = copy.deepcopy(gt_dict)
    with redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        evaluator.params.iouThrs = np.array([iou_thr])
        evaluator.evaluate()
    # evalImgs runs category by category, then area range, then image: per image, classes in order.
    for e in evaluator.evalImgs:
        if e is None or e["aRng"] != evaluator.params.areaRng[0]:
            continue
        for score, m, ignored in zip(e["dtScores"], e["dtMatches"][0], e["dtIgnore"][0], strict=True):
            if not ignored:
                out[e["image_id"] - 1].append((e["category_id"] - 1, score, int(m)))
    return out


@pytest.mark.parametrize("seed", range(60))
def test_matching_is_pycocotools(seed: int) -> None:
    """detection.match_all (the one greedy matcher: operating point, analysis, bootstrap) is COCO's
    evaluateImg at the same IoU: same detections kept, same objects matched."""
    truths, dets, names = _scenes(seed)
    if seed % 2:  # ties: scores on a coarse grid
        dets = [ImageDetections(d.boxes, np.round(d.scores, 1), d.labels) for d in dets]
    iou_thr = [0.5, 0.3, 0.75, 0.95][seed % 4]
    first_id = np.cumsum([0] + [len(t.labels) for t in truths])  # to_coco numbers annotations from 1
    got = [[(int(c), float(s), int(first_id[i] + m + 1) if m >= 0 else 0)
            for c, s, m in zip(im.labels, im.scores, im.matched, strict=True)]
           for i, im in enumerate(da.match_all(truths, dets, len(names), iou_thr))]
    assert got == _pycocotools_matches(truths, dets, names, iou_thr)
    pooled = match_detections(truths, dets, len(names), iou_thr)
    assert pooled.tp.tolist() == [m > 0 for image in got for _, _, m in image]
    assert pooled.num_gt.tolist() == [sum(int(((t.labels == c) & ~t.iscrowd).sum()) for t in truths)
                                      for c in range(len(names))]


def _pycocotools_precision(truths, dets, names):  # type: ignore[no-untyped-def]
    return pycocotools_bbox(truths, dets, names).eval["precision"]


@pytest.mark.parametrize("seed", range(15))
def test_per_class_curves_are_cocos_precision(seed: int) -> None:
    truths, dets, names = _scenes(seed)
    if sum(len(d.scores) for d in dets) == 0:  # pycocotools' loadRes cannot take an empty list
        dets[0] = ImageDetections(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0.5]), np.array([0]))
    coco = da.WeightedCoco.from_dicts(*to_coco(truths, dets, names), "bbox")
    curves = da.pr_curves(coco.precision(), len(names))
    ref = _pycocotools_precision(truths, dets, names)
    for k, curve in enumerate(curves):
        p = ref[0, :, k, 0, -1]
        keep = p > -1
        assert curve["recall"] == pytest.approx(np.linspace(0, 1, 101)[keep].tolist())
        assert curve["precision"] == pytest.approx(p[keep].tolist(), abs=1e-9)
    # The class that never appears in the truth has no curve.
    if not any((t.labels == len(names) - 1).any() for t in truths):
        assert curves[-1] == {"recall": [], "precision": []}


@pytest.mark.parametrize("seed", range(15))
def test_weighted_operating_point_is_the_repeated_images(seed: int) -> None:
    truths, dets, names = _scenes(seed)
    metrics = detection_metrics(truths, dets, names)
    images = da.match_all(truths, dets, len(names), 0.5)
    stats = da.ObjectStats(truths, images, to_coco(truths, dets, names), names, metrics["threshold"])
    point = stats(None)
    for k in ("precision", "recall", "f1", "threshold"):
        assert point[k] == (None if metrics[k] is None else pytest.approx(metrics[k]))
    weights = np.random.default_rng(seed).integers(0, 3, len(truths))
    got = stats(weights)
    rep_t = [t for t, w in zip(truths, weights, strict=True) for _ in range(w)]
    rep_d = [d for d, w in zip(dets, weights, strict=True) for _ in range(w)]
    counts = da.per_image_counts(da.match_all(rep_t, rep_d, len(names), 0.5), metrics["threshold"]).sum(axis=0)
    tp, fp, fn = (float(c) for c in counts)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    assert (got["precision"], got["recall"]) == pytest.approx((p, r))
    assert got["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    # The threshold of a resample: the operating point of the repeated images.
    from kubeforge.evaluation.detection import operating_point

    want = operating_point(match_detections(rep_t, rep_d, len(names), 0.5), names)["threshold"]
    assert got["threshold"] == (None if want is None else pytest.approx(want))


def test_edge_cases() -> None:
    names = ["a", "b"]
    empty_truth = ImageTruth(50, 50, np.zeros((0, 4)), np.zeros(0, dtype=int))
    no_dets = ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int))
    images = da.match_all([empty_truth], [no_dets], 2, 0.5)
    got = da.analysis(images, names, None, 0.5, {})
    assert got["counts"] == {"tp": 0, "fp": 0, "fn": 0} and got["matchedIoU"] is None
    assert got["confusion"]["matrix"] == [[0, 0, 0]] * 3 and got["confusedPairs"] == []
    assert da.image_f1(da.per_image_counts(images, None)).tolist() == [1.0]
    assert got["calibration"]["bestCalibratedConfidence"] is None
    # A detection of class b on an object of class a: counted as (a, b), not as a miss plus an invention.
    truth = ImageTruth(50, 50, np.array([[0, 0, 20, 20.0]]), np.array([0]))
    wrong = ImageDetections(np.array([[0, 0, 20, 20.0]]), np.array([0.9]), np.array([1]))
    got = da.analysis(da.match_all([truth], [wrong], 2, 0.5), names, 0.9, 0.5, {})
    assert got["confusion"]["matrix"] == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert got["confusedPairs"] == [{"truth": "a", "predicted": "b", "count": 1}]
    assert got["counts"] == {"tp": 0, "fp": 1, "fn": 1}
    # A detection inside a crowd region of its class is neither right nor wrong.
    crowd = ImageTruth(50, 50, np.array([[0, 0, 40, 40.0]]), np.array([0]), np.array([True]))
    inside = ImageDetections(np.array([[5, 5, 15, 15.0]]), np.array([0.8]), np.array([0]))
    got = da.analysis(da.match_all([crowd], [inside], 2, 0.5), names, 0.8, 0.5, {})
    assert got["counts"] == {"tp": 0, "fp": 0, "fn": 0} and got["confusion"]["matrix"] == [[0, 0, 0]] * 3


@pytest.mark.parametrize("seed", range(20))
def test_weighted_ap_is_the_repeated_images(seed: int) -> None:
    truths, dets, names = _scenes(seed)
    if not any((~t.iscrowd).any() for t in truths):
        truths[0] = ImageTruth(300, 300, np.array([[10, 10, 60, 60.0]]), np.array([0]))
    weights = np.random.default_rng(seed + 100).integers(0, 4, len(truths))
    weights[0] = max(weights[0], 1)
    coco = da.WeightedCoco.from_dicts(*to_coco(truths, dets, names), "bbox")
    assert coco.available
    fast, full = coco.headline(weights), coco.stats(weights)
    assert fast == {k: full[k] for k in ("AP", "AP50", "AP75")}  # the fast path: the same operations, ties too
    # Against literally repeating the images: exact when no two detections of an image and class tie
    # (pycocotools would interleave tied detections of an image's copies; the weighted evaluation keeps
    # each detection's copies together).
    rng = np.random.default_rng(seed)
    dets = [ImageDetections(d.boxes, d.scores + rng.random(len(d.scores)) * 1e-6, d.labels) for d in dets]
    fast = da.WeightedCoco.from_dicts(*to_coco(truths, dets, names), "bbox").headline(weights)
    rep_t = [t for t, w in zip(truths, weights, strict=True) for _ in range(w)]
    rep_d = [d for d, w in zip(dets, weights, strict=True) for _ in range(w)]
    want = detection_metrics(rep_t, rep_d, names)
    for k in ("AP", "AP50", "AP75"):
        assert fast[k] == (None if want[k] is None else pytest.approx(want[k], abs=1e-12))
    stats = da.ObjectStats(truths, da.match_all(truths, dets, len(names), 0.5), to_coco(truths, dets, names), names,
                           detection_metrics(truths, dets, names)["threshold"])
    got = stats(weights)
    assert {k: got[k] for k in ("AP", "AP50", "AP75")} == fast


def test_subset_of_classes_is_a_fresh_evaluation() -> None:
    truths, dets, names = _scenes(11)
    while len(names) < 3:
        truths, dets, names = _scenes(len(names) * 7 + 13)
    stats = da.ObjectStats(truths, da.match_all(truths, dets, len(names), 0.5), to_coco(truths, dets, names), names,
                           detection_metrics(truths, dets, names)["threshold"])
    keep = [0, 2]
    sub_t = [ImageTruth(t.width, t.height, t.boxes[np.isin(t.labels, keep)],
                        np.searchsorted(keep, t.labels[np.isin(t.labels, keep)]), t.iscrowd[np.isin(t.labels, keep)])
             for t in truths]
    sub_d = [ImageDetections(d.boxes[np.isin(d.labels, keep)], d.scores[np.isin(d.labels, keep)],
                             np.searchsorted(keep, d.labels[np.isin(d.labels, keep)])) for d in dets]
    want = detection_metrics(sub_t, sub_d, [names[k] for k in keep])
    got = stats(None, keep)
    for k in ("AP", "AP50", "AP75", "precision", "recall", "f1"):
        assert got[k] == (None if want[k] is None else pytest.approx(want[k]))

"""Semantic segmentation ground truth and metrics (kubeforge.evaluation.segmentation) against
direct NumPy counts on random masks, with the edge cases the module documents."""

from __future__ import annotations

import numpy as np
import pytest

from kubeforge.datasets.formats.common import mask_to_rle
from kubeforge.datasets.manifest import ManifestAnnotation, ManifestImage
from kubeforge.evaluation.segmentation import (
    BACKGROUND,
    IGNORE,
    class_mask,
    confusion,
    segmentation_metrics,
    with_background,
)


def _direct(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int | None) -> dict[str, object]:
    """Per-class IoU/Dice by boolean masks, the textbook way, no confusion matrix."""
    keep = truth != ignore if ignore is not None else np.ones(truth.shape, dtype=bool)
    t, p = truth[keep], pred[keep]
    iou, dice = [], []
    for c in range(num_classes):
        inter = np.logical_and(t == c, p == c).sum()
        union = np.logical_or(t == c, p == c).sum()
        size = (t == c).sum() + (p == c).sum()
        iou.append(inter / union if union else None)
        dice.append(2 * inter / size if size else None)
    objects = [v for v in iou[1:] if v is not None]
    dices = [v for v in dice[1:] if v is not None]
    return {"acc": (t == p).mean(), "iou": iou, "dice": dice,
            "miou": sum(objects) / len(objects) if objects else None,
            "mdice": sum(dices) / len(dices) if dices else None}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_direct_numpy_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = [BACKGROUND, "a", "b", "absent", "c"]
    k = len(names)
    truth = rng.integers(0, k, size=(4, 33, 47))
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, k, size=truth.shape))
    # Class 3 is absent from truth and prediction everywhere: no IoU, left out of the means.
    truth[truth == 3] = 1
    pred[pred == 3] = 2
    # Some ignored truth pixels (crowd regions): whatever is predicted there does not count.
    truth[rng.random(truth.shape) < 0.1] = IGNORE
    cm = sum(confusion(t, p, k) for t, p in zip(truth, pred, strict=True))
    got = segmentation_metrics(cm, names)
    want = _direct(truth, pred, k, IGNORE)
    assert got["pixelAccuracy"] == pytest.approx(want["acc"])
    for c in range(k):
        row = got["perClass"][c]
        assert row["class"] == names[c]
        if want["iou"][c] is None:
            assert row["iou"] is None and row["dice"] is None
        else:
            assert row["iou"] == pytest.approx(want["iou"][c]) and row["dice"] == pytest.approx(want["dice"][c])
    assert got["perClass"][3]["iou"] is None
    assert got["mIoU"] == pytest.approx(want["miou"]) and got["meanDice"] == pytest.approx(want["mdice"])
    assert got["backgroundIoU"] == pytest.approx(want["iou"][0])
    assert sum(map(sum, got["confusionMatrix"]["matrix"])) == int((truth != IGNORE).sum())


def test_perfect_and_all_wrong_predictions() -> None:
    truth = np.array([[0, 1], [2, 2]])
    perfect = segmentation_metrics(confusion(truth, truth, 3), [BACKGROUND, "x", "y"])
    assert perfect["mIoU"] == 1.0 and perfect["pixelAccuracy"] == 1.0 and perfect["meanDice"] == 1.0
    wrong = segmentation_metrics(confusion(truth, (truth + 1) % 3, 3), [BACKGROUND, "x", "y"])
    assert wrong["mIoU"] == 0.0 and wrong["pixelAccuracy"] == 0.0
    # Only background anywhere: no object class to average.
    empty = segmentation_metrics(confusion(np.zeros((3, 3)), np.zeros((3, 3)), 2), [BACKGROUND, "x"])
    assert empty["mIoU"] is None and empty["backgroundIoU"] == 1.0


def test_confusion_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="pixels"):
        confusion(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        confusion(np.array([0, 5]), np.array([0, 1]), 2)


def test_with_background_reserves_the_name() -> None:
    assert with_background(["cat", "dog"]) == [BACKGROUND, "cat", "dog"]
    with pytest.raises(ValueError, match=r"spec\.classes: .* is reserved"):
        with_background(["cat", BACKGROUND])


def _image(w: int = 20, h: int = 10) -> ManifestImage:
    return ManifestImage(file_name="a.png", blob="0" * 64, width=w, height=h, bytes=1)


def _ann(cat: int, bbox: list[float], seg: object = None, crowd: int = 0) -> ManifestAnnotation:
    return ManifestAnnotation(image=0, category_id=cat, bbox=bbox, area=bbox[2] * bbox[3], segmentation=seg,
                              iscrowd=crowd)


def test_class_mask_paints_larger_objects_first_and_fills_boxes() -> None:
    img = _image()
    big = _ann(1, [0, 0, 20, 10], [[0, 0, 20, 0, 20, 10, 0, 10]])
    small = np.zeros((10, 20), dtype=bool)
    small[2:5, 3:7] = True
    small_rle = _ann(2, [3, 2, 4, 3], mask_to_rle(small))
    boxed = _ann(3, [15, 6, 3, 2])  # no segmentation: its box is filled
    other = _ann(9, [0, 0, 5, 5], [[0, 0, 5, 0, 5, 5, 0, 5]])  # class not selected: stays as it was
    # The small object comes first in the list and must still end up on top of the big one.
    mask, stats = class_mask(img, [small_rle, big, boxed, other], {1: 1, 2: 2, 3: 3})
    assert mask.dtype == np.uint8 and mask.shape == (10, 20)
    assert (mask[small] == 2).all()
    assert (mask[6:8, 15:18] == 3).all()
    rest = np.ones((10, 20), dtype=bool)
    rest[small] = False
    rest[6:8, 15:18] = False
    assert (mask[rest] == 1).all()
    assert (stats.objects, stats.boxes_filled, stats.crowd) == (3, 1, 0)


def test_class_mask_ignores_crowds_and_resizes_nearest() -> None:
    img = _image(20, 10)
    crowd = _ann(1, [10, 0, 10, 10], [[10, 0, 20, 0, 20, 10, 10, 10]], crowd=1)
    obj = _ann(2, [0, 0, 10, 10], [[0, 0, 10, 0, 10, 10, 0, 10]])
    mask, stats = class_mask(img, [crowd, obj], {1: 1, 2: 2}, size=(4, 8))
    assert mask.shape == (4, 8) and set(np.unique(mask)) == {2, IGNORE}
    assert (mask[:, :4] == 2).all() and (mask[:, 4:] == IGNORE).all() and stats.crowd == 1


def test_class_mask_names_the_file_for_bad_segmentation() -> None:
    img = _image()
    with pytest.raises(ValueError, match=r"a.png: segmentation RLE size \[5, 5\]"):
        class_mask(img, [_ann(1, [0, 0, 1, 1], mask_to_rle(np.zeros((5, 5), dtype=bool)))], {1: 1})
    with pytest.raises(ValueError, match=r"a\.png: a segmentation polygon has 4 coordinates; expected an even count "
                                         r"of at least 6"):
        class_mask(img, [_ann(1, [0, 0, 1, 1], [[0, 0, 1, 1]])], {1: 1})


def test_dice_loss_is_zero_for_a_perfect_prediction_and_ignores_crowd_pixels() -> None:
    import torch

    from kubeforge_trainers.tasks.semantic import dice_loss

    target = torch.tensor([[[0, 1], [2, IGNORE]]])
    perfect = torch.nn.functional.one_hot(target.clamp_max(2), 3).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    # Whatever is predicted on the ignored pixel does not change the loss.
    noisy = perfect.clone()
    noisy[0, :, 1, 1] = torch.tensor([0.0, 50.0, 0.0])
    assert float(dice_loss(noisy, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(dice_loss(torch.zeros(1, 3, 2, 2), target)) > 0.3


def _erode_direct(mask: np.ndarray, d: int) -> np.ndarray:
    """d steps of the 3x3 erosion, outside the image = not mask (the reference implementation pads with 0)."""
    out = mask.copy()
    h, w = mask.shape
    for _ in range(d):
        padded = np.zeros((h + 2, w + 2), dtype=bool)
        padded[1:-1, 1:-1] = out
        step = np.ones_like(out)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                step &= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        out = step
    return out


def _boundary_iou_direct(truths: list[np.ndarray], preds: list[np.ndarray], k: int) -> list[float | None]:
    """Cheng et al. 2021, image by image, summed over images: d = round(2% of the diagonal), at least 1."""
    inter, union = np.zeros(k), np.zeros(k)
    for t, p in zip(truths, preds, strict=True):
        d = max(1, round(0.02 * float(np.sqrt(t.shape[0] ** 2 + t.shape[1] ** 2))))
        counted = t != IGNORE
        for c in range(k):
            g = (t == c) & ~_erode_direct(t == c, d) & counted
            q = (p == c) & ~_erode_direct(p == c, d) & counted
            inter[c] += (g & q).sum()
            union[c] += (g | q).sum()
    return [inter[c] / union[c] if union[c] else None for c in range(k)]


def _blobs(rng: np.random.Generator, h: int, w: int, k: int) -> np.ndarray:
    """A few rectangles and discs of random classes on background: masks with real boundaries."""
    out = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(0, 6))):
        c = int(rng.integers(1, k))
        if rng.random() < 0.5:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            out[y0:y0 + rng.integers(1, h), x0:x0 + rng.integers(1, w)] = c
        else:
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, max(2, min(h, w) // 2))
            out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = c
    return out


@pytest.mark.parametrize("seed", range(25))
def test_boundary_iou_and_confusion_match_direct_numpy(seed: int) -> None:
    from kubeforge.evaluation.segmentation import boundary_counts, boundary_width

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    names = [BACKGROUND, *(f"c{i}" for i in range(1, k))]
    truths, preds = [], []
    for _ in range(int(rng.integers(1, 4))):
        h, w = int(rng.integers(3, 90)), int(rng.integers(3, 90))
        t = _blobs(rng, h, w, k)
        p = _blobs(rng, h, w, k) if rng.random() < 0.3 else t.copy()
        if rng.random() < 0.7:  # shift part of the prediction: boundaries move
            p = np.roll(p, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
        if rng.random() < 0.5:  # crowd pixels
            t[rng.random(t.shape) < 0.05] = IGNORE
        truths.append(t)
        preds.append(p)
    cms = [confusion(t, p, k) for t, p in zip(truths, preds, strict=True)]
    for t, p, cm in zip(truths, preds, cms, strict=True):
        keep = t != IGNORE
        want = np.bincount(t[keep].astype(np.int64) * k + p[keep], minlength=k * k).reshape(k, k)
        assert (cm == want).all()
    inter = sum(boundary_counts(t, p, k)[0] for t, p in zip(truths, preds, strict=True))
    union = sum(boundary_counts(t, p, k)[1] for t, p in zip(truths, preds, strict=True))
    got = segmentation_metrics(sum(cms), names, (inter, union))
    want = _boundary_iou_direct(truths, preds, k)
    for c in range(k):
        assert got["perClass"][c]["boundaryIoU"] == (None if want[c] is None else pytest.approx(want[c]))
    objects = [v for v in want[1:] if v is not None]
    assert got["boundaryIoU"] == (pytest.approx(np.mean(objects)) if objects else None)
    assert got["confusionMatrix"]["matrix"] == sum(cms).tolist()
    assert boundary_width(*truths[0].shape) >= 1


def test_boundary_iou_edge_cases() -> None:
    from kubeforge.evaluation.segmentation import boundary_counts, boundary_width, mask_boundary

    assert boundary_width(10, 10) == 1 and boundary_width(480, 640) == 16  # 2% of 800
    full = np.ones((6, 6), dtype=bool)
    assert mask_boundary(full, 1).sum() == 20  # the image edge is a boundary: a 1-pixel frame
    assert mask_boundary(np.zeros((4, 4), dtype=bool), 1).sum() == 0
    t = np.zeros((20, 20), dtype=np.uint8)
    t[5:15, 5:15] = 1
    inter, union = boundary_counts(t, t, 3)
    assert (inter == union).all() and inter[2] == 0  # class 2 in neither: 0/0
    got = segmentation_metrics(confusion(t, t, 3), [BACKGROUND, "a", "b"], (inter, union))
    assert got["boundaryIoU"] == 1.0 and got["perClass"][2]["boundaryIoU"] is None
    # A prediction that misses the object: boundary IoU 0 for it.
    inter, union = boundary_counts(t, np.zeros_like(t), 3)
    assert inter[1] == 0 and union[1] > 0
    # Ignored truth pixels count for neither side.
    crowd = np.full((20, 20), IGNORE, dtype=np.uint8)
    inter, union = boundary_counts(crowd, t, 3)
    assert inter.sum() == 0 and union.sum() == 0


@pytest.mark.parametrize("seed", range(10))
def test_weighted_headline_is_the_repeated_images(seed: int) -> None:
    from kubeforge.evaluation.segmentation import headline

    rng = np.random.default_rng(seed)
    k = 5
    truths = rng.integers(0, k, size=(6, 9, 11))
    preds = np.where(rng.random(truths.shape) < 0.6, truths, rng.integers(0, k, size=truths.shape))
    cms = np.stack([confusion(t, p, k) for t, p in zip(truths, preds, strict=True)])
    weights = rng.integers(0, 3, 6)
    got = headline(np.tensordot(weights, cms, axes=1))
    rep = segmentation_metrics(sum(cms[i] for i in range(6) for _ in range(weights[i])) if weights.sum()
                               else np.zeros((k, k)), [BACKGROUND, "a", "b", "c", "d"])
    assert got == {"mIoU": pytest.approx(rep["mIoU"]) if rep["mIoU"] is not None else None,
                   "meanDice": pytest.approx(rep["meanDice"]) if rep["meanDice"] is not None else None,
                   "pixelAccuracy": pytest.approx(rep["pixelAccuracy"])}
    # Restricted to classes 1 and 3: means over those, accuracy over pixels whose truth is 0, 1 or 3.
    sub = headline(cms.sum(axis=0), [1, 3])
    full = segmentation_metrics(cms.sum(axis=0), [BACKGROUND, "a", "b", "c", "d"])
    assert sub["mIoU"] == pytest.approx((full["perClass"][1]["iou"] + full["perClass"][3]["iou"]) / 2)
    keep = np.isin(truths, [0, 1, 3])
    assert sub["pixelAccuracy"] == pytest.approx((truths[keep] == preds[keep]).mean())


def test_pixel_sums_give_the_confusion_matrix_scores_and_add_over_images() -> None:
    """The bootstrap keeps 3C sums per image instead of a CxC matrix: summed with weights they must give
    what the weighted confusion matrix gives, computed here straight from the matrix."""
    from kubeforge.evaluation.segmentation import headline_of_sums, pixel_sums

    rng = np.random.default_rng(5)
    for _ in range(50):
        c = int(rng.integers(2, 7))
        cms = rng.integers(0, 30, size=(int(rng.integers(1, 6)), c, c)) * (rng.random((1, c, c)) < 0.7)
        weights = rng.integers(0, 4, size=len(cms))
        total = np.tensordot(weights, cms, axes=1).astype(np.float64)
        summed = np.tensordot(weights, np.stack([pixel_sums(m) for m in cms]), axes=1)
        subset = [k for k in range(1, c) if rng.random() < 0.6] or [1]
        got = headline_of_sums(summed, subset)
        ious, dices = [], []
        for k in subset:
            tp, union = total[k, k], total[k].sum() + total[:, k].sum() - total[k, k]
            if union > 0:
                ious.append(tp / union)
                dices.append(2 * tp / (union + tp))
        rows = [0, *subset]
        pixels = total[rows].sum()
        assert got["mIoU"] == (pytest.approx(np.mean(ious)) if ious else None)
        assert got["meanDice"] == (pytest.approx(np.mean(dices)) if dices else None)
        assert got["pixelAccuracy"] == pytest.approx(sum(total[k, k] for k in rows) / pixels if pixels else 0.0)

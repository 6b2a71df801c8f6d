"""Bootstrap intervals (kubeforge.evaluation.bootstrap): seeded, percentile, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from kubeforge.evaluation import bootstrap
from kubeforge.evaluation.classification import weighted_headline


def _mean_of(values: np.ndarray):  # type: ignore[no-untyped-def]
    return lambda w: {"mean": float(w @ values / w.sum()) if w.sum() else None}


@pytest.mark.parametrize("seed", range(10))
def test_weights_are_draws_of_images(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, r = int(rng.integers(1, 60)), int(rng.integers(1, 50))
    w = bootstrap.resample_weights(n, r, seed)
    assert w.shape == (r, n) and (w.sum(axis=1) == n).all() and (w >= 0).all()
    # The same draws as indexing with the generator directly.
    idx = np.random.default_rng(seed).integers(0, n, size=(r, n))
    assert (w == np.stack([np.bincount(row, minlength=n) for row in idx])).all()
    assert (bootstrap.resample_weights(n, r, seed) == w).all()
    assert bootstrap.resample_weights(n, 0, seed).shape == (0, n)
    assert bootstrap.resample_weights(0, r, seed).shape == (r, 0)


def test_percentile_interval_is_numpy_quantile() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        v = rng.normal(size=int(rng.integers(1, 500)))
        c = float(rng.uniform(0.5, 0.99))
        low, high = bootstrap.percentile_interval(v, c)  # type: ignore[misc]
        want = (np.percentile(v, 100 * (1 - c) / 2), np.percentile(v, 100 * (1 + c) / 2))
        assert (low, high) == pytest.approx(want, abs=1e-12)
    assert bootstrap.percentile_interval(np.array([np.nan, np.nan]), 0.95) is None
    assert bootstrap.percentile_interval(np.array([np.nan, 1.0, 3.0]), 0.5) == (1.5, 2.5)


@pytest.mark.parametrize("seed", range(20))
def test_intervals_contain_the_estimate_and_are_reproducible(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 200))
    num_classes = int(rng.integers(2, 6))
    y_true = rng.integers(0, num_classes, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, num_classes, n))

    def stats(w: np.ndarray) -> dict:
        return weighted_headline(y_true, y_pred, num_classes, w)

    point = stats(np.ones(n))
    w = bootstrap.resample_weights(n, 300, seed)
    reps = bootstrap.replicate(stats, w)
    iv = bootstrap.intervals(reps, point, 0.95)
    assert set(iv) == set(point)
    for k, bounds in iv.items():
        assert bounds["low"] <= point[k] <= bounds["high"]
    again = bootstrap.intervals(bootstrap.replicate(stats, bootstrap.resample_weights(n, 300, seed)), point, 0.95)
    assert again == iv
    other = bootstrap.intervals(bootstrap.replicate(stats, bootstrap.resample_weights(n, 300, seed + 1000)), point,
                                0.95)
    assert other != iv


def test_intervals_shrink_with_more_images() -> None:
    rng = np.random.default_rng(7)
    widths = []
    for n in (25, 100, 400, 1600):
        values = (rng.random(n) < 0.6).astype(float)
        reps = bootstrap.replicate(_mean_of(values), bootstrap.resample_weights(n, 500, 3))
        iv = bootstrap.intervals(reps, {"mean": values.mean()}, 0.95)["mean"]
        widths.append(iv["high"] - iv["low"])
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < widths[0] / 4  # ~1/sqrt(n)


def test_higher_confidence_is_wider() -> None:
    values = np.random.default_rng(2).random(80)
    reps = bootstrap.replicate(_mean_of(values), bootstrap.resample_weights(80, 1000, 0))
    narrow = bootstrap.intervals(reps, {"mean": values.mean()}, 0.5)["mean"]
    wide = bootstrap.intervals(reps, {"mean": values.mean()}, 0.99)["mean"]
    assert wide["low"] < narrow["low"] < narrow["high"] < wide["high"]


def test_paired_difference_with_itself_is_exactly_zero() -> None:
    values = np.random.default_rng(4).random(50)
    w = bootstrap.resample_weights(50, 200, 9)
    a = bootstrap.replicate(_mean_of(values), w)["mean"]
    b = bootstrap.replicate(_mean_of(values), w)["mean"]
    d = bootstrap.difference(values.mean(), values.mean(), a, b, 0.95, paired=True)
    assert d == {"difference": 0.0, "low": 0.0, "high": 0.0, "excludesZero": False, "paired": True}


def test_paired_difference_sees_a_small_consistent_gain() -> None:
    rng = np.random.default_rng(5)
    base = rng.random(200)
    better = base + 0.02  # the same images, each a little better: paired excludes zero
    w = bootstrap.resample_weights(200, 500, 1)
    ra, rb = (bootstrap.replicate(_mean_of(v), w)["mean"] for v in (better, base))
    paired = bootstrap.difference(better.mean(), base.mean(), ra, rb, 0.95, paired=True)
    assert paired["excludesZero"] is True and paired["low"] == pytest.approx(0.02)
    # Resampled independently, the image-to-image spread hides it.
    rb2 = bootstrap.replicate(_mean_of(base), bootstrap.resample_weights(200, 500, 2))["mean"]
    unpaired = bootstrap.difference(better.mean(), base.mean(), ra, rb2, 0.95, paired=False)
    assert unpaired["excludesZero"] is False and unpaired["paired"] is False
    assert unpaired["low"] < 0 < unpaired["high"]


def test_no_resamples_no_intervals() -> None:
    values = np.arange(5.0)
    reps = bootstrap.replicate(_mean_of(values), bootstrap.resample_weights(5, 0, 0), ["mean"])
    assert bootstrap.intervals(reps, {"mean": 2.0}, 0.95) == {}
    d = bootstrap.difference(1.0, 0.5, reps["mean"], reps["mean"], 0.95, paired=True)
    assert (d["low"], d["high"], d["excludesZero"]) == (None, None, None)
    # A metric without a value in some resamples: those are left out; with none at all, no interval.
    none = bootstrap.replicate(lambda w: {"m": None}, bootstrap.resample_weights(5, 10, 0), ["m"])
    assert bootstrap.intervals(none, {"m": 1.0}, 0.95) == {}
    assert bootstrap.Plan().to_json() == {"resamples": 1000, "seed": 0, "confidence": 0.95}


def test_every_headline_metric_is_resampled() -> None:
    """Each task's headline (catalog.BENCHMARK_METRICS) is what its per-resample statistics return, so every
    headline metric gets an interval; report_extra metrics are not resampled."""
    from kubeforge.evaluation.detection import ImageDetections, ImageTruth, match_all, to_coco
    from kubeforge.evaluation.detection_analysis import ObjectStats
    from kubeforge.evaluation.segmentation import headline
    from kubeforge.models.catalog import BENCHMARK_METRICS

    y = np.array([0, 1, 1, 2])
    assert list(weighted_headline(y, y[::-1], 3, np.ones(4))) == list(BENCHMARK_METRICS["classification"].headline)
    assert list(headline(np.eye(3))) == list(BENCHMARK_METRICS["semantic-segmentation"].headline)
    truths = [ImageTruth(64, 64, np.array([[2.0, 2, 30, 30]]), np.array([0]))]
    dets = [ImageDetections(np.array([[3.0, 2, 30, 31]]), np.array([0.9]), np.array([0]))]
    gt_dict, results = to_coco(truths, dets, ["a"])
    rle = {"segmentation": {"size": [64, 64], "counts": "0"}}
    segm = ({**gt_dict, "annotations": [a | rle for a in gt_dict["annotations"]]},
            [{k: v for k, v in r.items() if k != "bbox"} | rle for r in results])
    for task, masks in (("object-detection", None), ("instance-segmentation", segm)):
        stats = ObjectStats(truths, match_all(truths, dets, 1, 0.5), (gt_dict, results), ["a"], 0.9, masks)
        spec = BENCHMARK_METRICS[task]
        assert list(stats(np.ones(1))) == list(spec.headline), task
        assert not set(spec.report_extra) & set(stats(np.ones(1)))


def test_unpaired_differences_pair_independent_draws() -> None:
    """Two models on different images of the same count, resampled from the same seed: their r-th draws
    are the same positions, so without care the difference of near-identical data would look precise. The
    interval must be as wide as for independent draws (about sqrt(2) times one model's)."""
    values = np.random.default_rng(6).random(201)
    a_vals, b_vals = values[:200], np.r_[values[:199], values[200]]  # one image differs: unpaired
    ra = bootstrap.replicate(_mean_of(a_vals), bootstrap.resample_weights(200, 2000, 3))["mean"]
    rb = bootstrap.replicate(_mean_of(b_vals), bootstrap.resample_weights(200, 2000, 3))["mean"]
    one = np.subtract(*bootstrap.percentile_interval(ra, 0.95)[::-1])
    d = bootstrap.difference(a_vals.mean(), b_vals.mean(), ra, rb, 0.95, paired=False)
    assert d["high"] - d["low"] == pytest.approx(one * np.sqrt(2), rel=0.15)
    assert d["excludesZero"] is False

"""Confidence intervals by bootstrapping images (seeded percentile intervals; paired differences).

A resample draws N of the N evaluated images with replacement; it is handed to a metric as
a weight per image (how many times the image was drawn), so a task recomputes its numbers
from per-image pieces without copying data: summed confusion matrices, per-image TP/FP/FN,
or COCO's evaluation with image multiplicities (`cocoeval.CocoEvaluator.stats(weights)`).

- The resamples are `numpy.random.default_rng(seed)` draws of image indices: the same seed,
  resample count and image count give the same weights, so intervals are reproducible.
- The interval is the percentile interval: the (1 - confidence)/2 and (1 + confidence)/2
  quantiles (numpy's default linear interpolation) of the metric over the resamples. Resamples
  where the metric has no value (e.g. no ground truth drawn) are left out; a metric with no
  value in any resample has no interval.
- A difference between two models a - b evaluated on the same images is paired: both are
  recomputed on the same resampled images, and the interval is that of the per-resample
  differences; on different images each model is resampled on its own and the per-resample
  differences of those are used (unpaired). `excludesZero` says whether the interval lies
  strictly above or strictly below 0. A model compared with itself gives exactly [0, 0].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

StatsFn = Callable[[np.ndarray], Mapping[str, float | None]]


@dataclass(frozen=True)
class Plan:
    """spec.bootstrap: resamples (0: no intervals), seed, confidence."""

    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def to_json(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "seed": self.seed, "confidence": self.confidence}


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """int64 [resamples, n]: how many times each image is drawn in each resample (rows sum to n)."""
    if n == 0 or resamples == 0:
        return np.zeros((resamples, n), dtype=np.int64)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, size=(resamples, n))
    flat = drawn + (np.arange(resamples, dtype=np.int64) * n)[:, None]
    return np.bincount(flat.reshape(-1), minlength=resamples * n).reshape(resamples, n)


def replicate(stats_for: StatsFn, weights: np.ndarray, metrics: list[str] | None = None) -> dict[str, np.ndarray]:
    """Each metric over the resamples: float [R], NaN where a resample gives it no value."""
    rows = [stats_for(w) for w in weights]
    names = metrics if metrics is not None else sorted({k for r in rows for k in r})
    return {k: np.array([np.nan if r.get(k) is None else float(r[k]) for r in rows]) for k in names}  # type: ignore[arg-type]


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The percentile interval of the finite values, or None when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(v, [alpha, 1 - alpha])
    return float(low), float(high)


def intervals(samples: Mapping[str, np.ndarray], point: Mapping[str, float | None], confidence: float
              ) -> dict[str, dict[str, float]]:
    """{metric: {"low", "high"}} for each metric with a point value and an interval."""
    out = {}
    for name, value in point.items():
        if value is None or name not in samples:
            continue
        iv = percentile_interval(samples[name], confidence)
        if iv is not None:
            out[name] = {"low": iv[0], "high": iv[1]}
    return out


def difference(a: float, b: float, samples_a: np.ndarray | None, samples_b: np.ndarray | None,
               confidence: float, paired: bool) -> dict[str, Any]:
    """a - b with the interval of the per-resample differences (None bounds without resamples).

    Paired: resample r of both models drew the same images, so their difference is taken resample by
    resample. Unpaired (different images): both models' resamples came from the same seed, so their r-th
    draws are related; b's resamples are shuffled (a fixed permutation) to pair independent draws."""
    iv = None
    if samples_a is not None and samples_b is not None and len(samples_a) and len(samples_a) == len(samples_b):
        b_samples = np.asarray(samples_b)
        if not paired:
            b_samples = b_samples[np.random.default_rng(len(b_samples)).permutation(len(b_samples))]
        iv = percentile_interval(np.asarray(samples_a) - b_samples, confidence)
    return {
        "difference": float(a - b),
        "low": iv[0] if iv else None,
        "high": iv[1] if iv else None,
        "excludesZero": (iv[0] > 0 or iv[1] < 0) if iv else None,
        "paired": paired,
    }

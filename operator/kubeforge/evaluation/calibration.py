"""Calibration: does a confidence of 0.8 mean right 80% of the time? (ECE, MCE, reliability bins)

Predictions (detections, or classified images) are put in `BINS` equal-width bins by
confidence: bin b is [b/10, (b+1)/10), except the last, which also holds 1.0. Per populated
bin: `confidence` = mean confidence, `accuracy` = share of correct predictions; an empty bin
has `null` for both.

- ECE (expected calibration error) = sum over bins of count/N * |accuracy - confidence|
  (Guo et al. 2017); 0 when there are no predictions.
- MCE (maximum calibration error) = the largest |accuracy - confidence| of a populated bin.
- `bestCalibratedConfidence` = the centre of the populated bin with the smallest
  |accuracy - confidence|; bins holding fewer than `MIN_BEST_COUNT` predictions (or, when every
  bin is that small, none) only compete when no bin is large enough, so a lone lucky
  prediction does not win; ties go to the bin holding more predictions, then the lower bin.
  `null` when there are no predictions.

What "correct" means is the caller's: for detection a TP at the IoU threshold, for
classification the arg-max class being the true one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 10
MIN_BEST_COUNT = 5


def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin of each confidence: [k/bins, (k+1)/bins), the last bin closed at 1.0 (values clipped to [0, 1])."""
    c = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    edges = np.arange(bins + 1) / bins  # k/bins is the float nearest to the decimal edge
    return np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """ECE, MCE, the best-calibrated confidence and the reliability bins, JSON-ready (module docstring)."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"calibration: {conf.size} confidences but {ok.size} correctness flags")
    idx = bin_index(conf, bins)
    counts = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    ok_sum = np.bincount(idx, weights=ok.astype(np.float64), minlength=bins)
    populated = counts > 0
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(bins), where=populated)
    accuracy = np.divide(ok_sum, counts, out=np.zeros(bins), where=populated)
    gap = np.abs(accuracy - mean_conf)
    total = int(counts.sum())
    ece = float((counts * gap).sum() / total) if total else 0.0
    mce = float(gap[populated].max()) if total else 0.0
    best: float | None = None
    if total:
        large = populated & (counts >= MIN_BEST_COUNT)
        candidates = np.flatnonzero(large if large.any() else populated)
        # Smallest gap, then the most predictions, then the lowest bin.
        pick = min(candidates, key=lambda b: (gap[b], -counts[b], b))
        best = (pick + 0.5) / bins
    return {
        "ece": ece,
        "mce": mce,
        "bestCalibratedConfidence": best,
        "bins": [
            {"low": k / bins, "high": (k + 1) / bins, "count": int(counts[k]),
             "confidence": float(mean_conf[k]) if populated[k] else None,
             "accuracy": float(accuracy[k]) if populated[k] else None}
            for k in range(bins)
        ],
    }

"""Calibration (kubeforge.evaluation.calibration) against a direct loop over the bins, on many random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from kubeforge.evaluation.calibration import MIN_BEST_COUNT, calibration


def _direct(conf: list[float], correct: list[bool], bins: int = 10) -> dict:
    """The textbook definition, one prediction at a time: bin [low, high), the last closed at 1.0."""
    rows = []
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [(c, ok) for c, ok in zip(conf, correct, strict=True)
                   if low <= c < high or (b == bins - 1 and c == 1.0)]
        if members:
            mc = sum(c for c, _ in members) / len(members)
            acc = sum(ok for _, ok in members) / len(members)
            rows.append((b, len(members), mc, acc))
    n = len(conf)
    ece = sum(cnt / n * abs(acc - mc) for _, cnt, mc, acc in rows) if n else 0.0
    mce = max((abs(acc - mc) for _, _, mc, acc in rows), default=0.0)
    large = [r for r in rows if r[1] >= MIN_BEST_COUNT] or rows
    best = None
    if large:
        b = min(large, key=lambda r: (abs(r[3] - r[2]), -r[1], r[0]))[0]
        best = (b + 0.5) / bins
    return {"ece": ece, "mce": mce, "best": best, "rows": {r[0]: r for r in rows}}


@pytest.mark.parametrize("seed", range(60))
def test_matches_direct_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    kind = seed % 4
    if kind == 0:
        conf = rng.random(n)
    elif kind == 1:  # on the bin edges, 0 and 1 included
        conf = rng.integers(0, 11, n) / 10
    elif kind == 2:  # all equal
        conf = np.full(n, float(rng.integers(0, 11)) / 10)
    else:  # few distinct values, some bins empty
        conf = rng.choice([0.05, 0.55, 0.95, 1.0], n)
    correct = rng.random(n) < conf
    got = calibration(conf, correct)
    want = _direct(conf.tolist(), correct.tolist())
    assert got["ece"] == pytest.approx(want["ece"], abs=1e-12)
    assert got["mce"] == pytest.approx(want["mce"], abs=1e-12)
    assert got["bestCalibratedConfidence"] == (None if want["best"] is None else pytest.approx(want["best"]))
    assert sum(b["count"] for b in got["bins"]) == n
    for b, row in enumerate(got["bins"]):
        assert (row["low"], row["high"]) == (pytest.approx(b / 10), pytest.approx((b + 1) / 10))
        if b in want["rows"]:
            _, cnt, mc, acc = want["rows"][b]
            assert (row["count"], row["confidence"], row["accuracy"]) == (cnt, pytest.approx(mc), pytest.approx(acc))
        else:
            assert row == {**row, "count": 0, "confidence": None, "accuracy": None}


def test_edges_and_empty() -> None:
    got = calibration(np.array([0.0, 0.1, 0.3, 0.7, 0.9, 1.0]), np.ones(6, dtype=bool))
    assert [b["count"] for b in got["bins"]] == [1, 1, 0, 1, 0, 0, 0, 1, 0, 2]
    empty = calibration(np.zeros(0), np.zeros(0, dtype=bool))
    assert (empty["ece"], empty["mce"], empty["bestCalibratedConfidence"]) == (0.0, 0.0, None)
    # Perfectly calibrated in one populated bin: gap 0 -> that bin is the best.
    perfect = calibration(np.full(10, 0.5), np.arange(10) < 5)
    assert perfect["ece"] == pytest.approx(0.0) and perfect["bestCalibratedConfidence"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="3 confidences but 2"):
        calibration(np.zeros(3), np.zeros(2, dtype=bool))


def test_small_bins_do_not_win_the_best_confidence() -> None:
    # One lucky prediction at 0.95 (gap 0.05) beside a large bin at 0.45 with gap 0.1: the large bin wins.
    conf = np.r_[np.full(20, 0.45), 0.95]
    correct = np.r_[np.arange(20) < 11, True]
    assert calibration(conf, correct)["bestCalibratedConfidence"] == pytest.approx(0.45)

"""Tracking scores (kubeforge.predict.track_eval): known cases by hand, and MOTA / IDF1 against py-motmetrics
(an independent implementation) on many random sequences."""

from __future__ import annotations

import numpy as np
import pytest

from kubeforge.predict.track_eval import evaluate, tracks_from_predictions
from kubeforge.serving.client import Detection, Prediction
from kubeforge.testing.moving_shapes import render


@pytest.fixture(scope="module")
def truth() -> list[list[tuple[int, tuple[float, float, float, float]]]]:
    video = render(n_frames=80, size=96, n_objects=6, seed=4)
    return [[(b.track_id, b.box) for b in frame] for frame in video.truth]


def test_perfect_tracks_score_one(truth) -> None:  # type: ignore[no-untyped-def]
    # Other id numbers, same tracks: ids are labels, only their consistency counts.
    relabelled = [[(i * 10 + 3, box) for i, box in frame] for frame in truth]
    scores = evaluate(truth, relabelled)
    assert (scores.hota, scores.mota, scores.idf1, scores.deta, scores.assa) == pytest.approx((1, 1, 1, 1, 1))
    assert (scores.id_switches, scores.false_positives, scores.misses) == (0, 0, 0)
    assert scores.true_tracks == scores.predicted_tracks == 6 and scores.frames == 80


def test_an_identity_swap_lowers_association_not_detection(truth) -> None:  # type: ignore[no-untyped-def]
    # Two objects present together in the middle of the video trade ids from then on.
    together = [f for f, frame in enumerate(truth) if {1, 2} <= {i for i, _ in frame}]
    at = together[len(together) // 2]
    swapped = [[({1: 2, 2: 1}.get(i, i) if f >= at else i, box) for i, box in frame] for f, frame in enumerate(truth)]
    scores = evaluate(truth, swapped)
    assert scores.deta == pytest.approx(1.0) and scores.id_switches == 2
    assert scores.idf1 < 0.95 and scores.assa < 0.95 and scores.hota < 0.97
    n = sum(len(frame) for frame in truth)
    assert scores.mota == pytest.approx(1 - 2 / n)


def test_misplaced_boxes_are_misses_and_false_positives(truth) -> None:  # type: ignore[no-untyped-def]
    # Every box of track 1 moved by its own width: IoU 0, so each is a miss and a false positive.
    moved = [[(i, (b[0] + (b[2] - b[0]), b[1], b[2] + (b[2] - b[0]), b[3]) if i == 1 else b) for i, b in frame]
             for frame in truth]
    n1 = sum(1 for frame in truth for i, _ in frame if i == 1)
    scores = evaluate(truth, moved)
    assert (scores.misses, scores.false_positives) == (n1, n1)
    n = sum(len(frame) for frame in truth)
    assert scores.mota == pytest.approx(1 - 2 * n1 / n)
    assert evaluate(truth, [[] for _ in truth]).mota == pytest.approx(0.0)


def test_frame_counts_must_agree(truth) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="truth has 80 frames, tracks have 79"):
        evaluate(truth, truth[:-1])


def test_only_tracked_detections_are_tracks() -> None:
    preds = [Prediction(image="v#frame=0", width=10, height=10, task="object-detection", detections=[
        Detection("circle", 0, 0.9, [0, 0, 5, 5], track_id=4), Detection("circle", 0, 0.2, [5, 5, 9, 9])])]
    assert tracks_from_predictions(preds) == [[(4, [0, 0, 5, 5])]]


def _random_sequence(rng: np.random.Generator) -> tuple[list, list]:
    """Objects drifting about; tracks that jitter, miss, add false boxes and sometimes change id."""
    n_frames, n_objects = int(rng.integers(5, 30)), int(rng.integers(1, 6))
    pos = rng.uniform(0, 80, (n_objects, 2))
    vel = rng.uniform(-2, 2, (n_objects, 2))
    alive = rng.uniform(0, 1, n_objects) < 0.9
    ids = np.arange(1, n_objects + 1) * 7
    truth, tracks = [], []
    for _ in range(n_frames):
        pos += vel
        gt, tr = [], []
        for k in range(n_objects):
            if not alive[k] and rng.random() < 0.5:
                continue
            box = (pos[k, 0], pos[k, 1], pos[k, 0] + 20, pos[k, 1] + 20)
            gt.append((k + 1, box))
            if rng.random() < 0.85:
                if rng.random() < 0.05:
                    ids[k] = int(rng.integers(100, 110))  # an id switch (sometimes onto a used id)
                tr.append((int(ids[k]), tuple(np.array(box) + rng.normal(0, 3, 4))))
        for _ in range(rng.poisson(0.5)):
            x, y = rng.uniform(0, 80, 2)
            tr.append((int(rng.integers(200, 203)), (x, y, x + 20, y + 20)))
        truth.append(gt)
        tracks.append(_unique_ids(tr))
    return truth, tracks


def _unique_ids(frame: list) -> list:
    seen: set[int] = set()
    return [(i, b) for i, b in frame if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


def test_mota_and_idf1_agree_with_motmetrics() -> None:
    mm = pytest.importorskip("motmetrics")
    from kubeforge.predict.track_eval import _iou

    rng = np.random.default_rng(123)
    for _ in range(40):
        truth, tracks = _random_sequence(rng)
        acc = mm.MOTAccumulator(auto_id=True)
        for gt, tr in zip(truth, tracks, strict=True):
            a = np.array([b for _, b in gt], dtype=float).reshape(-1, 4)
            b = np.array([b for _, b in tr], dtype=float).reshape(-1, 4)
            dist = 1 - _iou(a, b)
            dist[dist > 0.5] = np.nan  # motmetrics: NaN = may not match (IoU below 0.5)
            acc.update([i for i, _ in gt], [i for i, _ in tr], dist)
        ref = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "num_false_positives",
                                                        "num_misses"], name="x")
        ours = evaluate(truth, tracks)
        assert ours.mota == pytest.approx(float(ref["mota"].iloc[0]), abs=1e-9)
        assert ours.idf1 == pytest.approx(float(ref["idf1"].iloc[0]), abs=1e-9)
        assert (ours.id_switches, ours.false_positives, ours.misses) == (
            int(ref["num_switches"].iloc[0]), int(ref["num_false_positives"].iloc[0]), int(ref["num_misses"].iloc[0]))

"""Tracking by detection (BoxMOT's ByteTrack and BoT-SORT behind kubeforge.predict.tracking): what a
tracker does to a prediction, its scores on near-perfect detections, and on a real detector's detections
of the moving-shapes video against the true tracks (floors measured with benchmarks/tracking.py, minus a
margin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubeforge.predict.engine import OnnxBackend
from kubeforge.predict.track_eval import evaluate, tracks_from_predictions
from kubeforge.predict.tracking import METHODS, Tracker
from kubeforge.predict.video import VideoStats, predict_video, probe
from kubeforge.serving.client import Detection, Prediction
from kubeforge.testing.moving_shapes import MovingShapes, noisy_detections, render, train_detector

# Measured with benchmarks/tracking.py --frames 120 --objects 7 and the detector trained as below (val AP50
# 0.93): HOTA 0.43 / 0.43, MOTA 0.58 / 0.58, IDF1 0.58 / 0.60 (ByteTrack / BoT-SORT). The floors leave a
# margin for a detector trained on another machine's arithmetic.
REAL_FLOORS = {"hota": 0.33, "mota": 0.45, "idf1": 0.45}
NOISY_FLOORS = {"hota": 0.72, "mota": 0.80, "idf1": 0.88}  # measured 0.80 / 0.87 / 0.93 with both trackers


def _frame(f: int, dets: list[Detection]) -> Prediction:
    return Prediction(image=f"v.mp4#frame={f}", width=100, height=100, task="object-detection", detections=dets,
                      frame=f, timestamp=f / 25)


def test_unknown_method_and_thresholds_are_named() -> None:
    with pytest.raises(ValueError, match="tracking method 'sort': expected one of bytetrack, botsort"):
        Tracker("sort")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"low_thresh=0\.6, high_thresh=0\.5"):
        Tracker("bytetrack", low_thresh=0.6)


@pytest.mark.parametrize("method", METHODS)
def test_ids_follow_objects_and_detections_are_kept(method: str) -> None:
    tracker = Tracker(method, fps=25)  # type: ignore[arg-type]
    out = []
    for f in range(12):
        dets = [Detection("circle", 0, 0.9, [10 + 2 * f, 10, 30 + 2 * f, 30]),
                Detection("square", 1, 0.8, [70, 60 - 2 * f, 90, 80 - 2 * f]),
                Detection("triangle", 2, 0.05, [40, 40, 45, 45])]  # below every threshold: never a track
        pred = _frame(f, dets)
        tracked = tracker.update(pred)
        assert all(d.track_id is None for d in pred.detections)  # the input is not changed
        # Same detections, same order, same boxes and scores: only track ids added.
        assert [(d.box, d.score, d.label) for d in tracked.detections] == [(d.box, d.score, d.label) for d in dets]
        assert (tracked.frame, tracked.timestamp) == (f, f / 25)
        out.append(tracked)
    ids = [[d.track_id for d in p.detections] for p in out]
    assert all(row[2] is None for row in ids)
    later = ids[2:]  # confirmed by then
    assert len({row[0] for row in later}) == 1 and len({row[1] for row in later}) == 1 and later[0][0] != later[0][1]

    dropping = Tracker(method, fps=25, keep_untracked=False)  # type: ignore[arg-type]
    last = [dropping.update(_frame(f, [Detection("circle", 0, 0.9, [10, 10, 30, 30]),
                                       Detection("square", 1, 0.05, [50, 50, 60, 60])])) for f in range(4)][-1]
    assert [d.label for d in last.detections] == [0] and last.detections[0].track_id is not None


@pytest.fixture(scope="module")
def video() -> MovingShapes:
    return render(n_frames=120, size=128, n_objects=7, seed=0)


@pytest.mark.parametrize("method", METHODS)
def test_near_perfect_detections_track_well(video: MovingShapes, method: str) -> None:
    truth = [[(b.track_id, b.box) for b in frame] for frame in video.truth]
    tracker = Tracker(method, fps=video.fps)  # type: ignore[arg-type]
    preds = [tracker.update(p) for p in noisy_detections(video, seed=0)]
    scores = evaluate(truth, tracks_from_predictions(preds))
    for key, floor in NOISY_FLOORS.items():
        assert getattr(scores, key) >= floor, (key, scores)
    assert scores.id_switches <= 2 and scores.predicted_tracks <= len(video.track_ids) + 2


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBEFORGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        return train_detector(tmp_path_factory.mktemp("detector"), size=128, n_images=400, epochs=20)


@pytest.mark.slow
def test_real_detector_tracks_beat_the_floor(video: MovingShapes, detector: tuple[Path, Any], tmp_path: Path) -> None:
    clip = video.write(tmp_path / "moving-shapes.mp4")
    truth = [[(b.track_id, b.box) for b in frame] for frame in video.truth]
    backend = OnnxBackend(*detector)
    for method in METHODS:
        stats = VideoStats()
        preds = list(predict_video(backend, clip, threshold=0.1, tracker=Tracker(method, fps=video.fps),  # type: ignore[arg-type]
                                   annotated=tmp_path / f"{method}.mp4", stats=stats))
        assert [p.frame for p in preds] == list(range(120)) and stats.frames == 120
        scores = evaluate(truth, tracks_from_predictions(preds))
        for key, floor in REAL_FLOORS.items():
            assert getattr(scores, key) >= floor, (method, key, scores)
        assert probe(tmp_path / f"{method}.mp4").frames == 120


@pytest.mark.slow
def test_tracking_benchmark_prints_a_table_and_json(detector: tuple[Path, Any], tmp_path: Path) -> None:
    import json
    import os
    import shutil
    import subprocess
    import sys

    onnx, meta = detector
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(onnx, model / "model.onnx")
    (model / "model_meta.json").write_text(meta.model_dump_json(by_alias=True))
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "tracking.py"), "--model", str(model),
                           "--frames", "40", "--objects", "4", "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "160"})
    assert proc.returncode == 0, proc.stderr
    assert "HOTA" in proc.stdout and "truth+noise" in proc.stdout
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["frames"] == 40 and set(last["scores"]) == {"detector", "truth+noise"}
    for by_method in last["scores"].values():
        assert set(by_method) == set(METHODS)
        assert all(0 <= s["idf1"] <= 1 and s["frames"] == 40 for s in by_method.values())
    assert (tmp_path / "work" / "tracked-botsort.mp4").is_file()

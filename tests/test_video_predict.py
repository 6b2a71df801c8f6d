"""predict_video end to end with a real ONNX model in ONNX Runtime: one prediction per frame in order with
frame and timestamp, stride, track ids, the annotated MP4, frames per second, and what is kept when the
model fails mid-video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubeforge.predict.engine import OnnxBackend
from kubeforge.predict.tracking import Tracker
from kubeforge.predict.video import VideoDecodeError, VideoStats, predict_video, probe
from kubeforge.testing.moving_shapes import render

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(n_frames=24, size=64, n_objects=3, seed=8, fps=12).write(
        tmp_path_factory.mktemp("v") / "clip.mp4")


@pytest.fixture
def backend(tiny_detector: tuple[Path, Any]) -> OnnxBackend:
    path, meta = tiny_detector
    return OnnxBackend(path, meta, threads=1)


def test_every_frame_predicted_in_order_with_time(clip: Path, backend: OnnxBackend, tmp_path: Path) -> None:
    stats = VideoStats()
    preds = list(predict_video(backend, clip, threshold=0.0, stats=stats, annotated=tmp_path / "a.mp4",
                               concurrency=4))
    assert [p.frame for p in preds] == list(range(24))
    assert [p.timestamp for p in preds[:3]] == pytest.approx([0, 1 / 12, 2 / 12], abs=1e-4)
    assert preds[5].image == f"{clip}#frame=5" and (preds[5].width, preds[5].height) == (64, 64)
    assert stats.frames == 24 and stats.fps > 0 and stats.skipped == []
    # The tiny grid detector fires on bright cells: frames have detections, in the frame's own pixels.
    assert any(p.detections for p in preds)
    assert all(0 <= v <= 64 for p in preds for d in p.detections for v in d.box)
    info = probe(tmp_path / "a.mp4")
    assert (info.frames, info.width, info.height, info.fps) == (24, 64, 64, 12.0)


def test_stride_and_tracking(clip: Path, backend: OnnxBackend, tmp_path: Path) -> None:
    preds = list(predict_video(backend, clip, threshold=0.0, stride=3, tracker=Tracker("bytetrack", fps=4),
                               annotated=tmp_path / "s.mp4"))
    assert [p.frame for p in preds] == [0, 3, 6, 9, 12, 15, 18, 21]
    assert probe(tmp_path / "s.mp4").fps == 4.0  # the annotated video plays at the sampled rate
    tracked = [d.track_id for p in preds for d in p.detections if d.track_id is not None]
    assert tracked and all(isinstance(t, int) and t >= 1 for t in tracked)


class FailingAfter:
    """The real backend, until the service 'goes away' after `n` frames."""

    def __init__(self, inner: OnnxBackend, n: int) -> None:
        self.meta, self._inner, self._left = inner.meta, inner, n

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self._left -= 1
        if self._left < 0:
            raise ConnectionError("server went away")
        return self._inner.infer(x)

    def close(self) -> None:
        pass


def test_a_failure_keeps_what_was_predicted(clip: Path, backend: OnnxBackend, tmp_path: Path) -> None:
    got = []
    with pytest.raises(RuntimeError, match=r"clip\.mp4#frame=10: ConnectionError: server went away"):
        for pred in predict_video(FailingAfter(backend, 10), clip, threshold=0.0, annotated=tmp_path / "p.mp4",
                                  concurrency=1):
            got.append(pred.frame)
    assert got == list(range(10))
    assert probe(tmp_path / "p.mp4").frames == 10  # the annotated video so far is closed and playable


def test_unreadable_video_is_named(backend: OnnxBackend, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoDecodeError, match=r"junk\.mp4: not a readable video"):
        next(predict_video(backend, junk, threshold=0.5))

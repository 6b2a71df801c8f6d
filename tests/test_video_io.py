"""Video files: probing, frames as Items (order, names, timestamps, stride), annotated MP4s, and the errors
for missing, unreadable and truncated videos. Real files encoded and decoded by PyAV (FFmpeg)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from kubeforge.predict.video import (
    VideoDecodeError,
    frame_items,
    is_video,
    pick_codec,
    probe,
    write_annotated,
)
from kubeforge.serving.client import Detection, Prediction
from kubeforge.testing.moving_shapes import render


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    video = render(n_frames=30, size=64, n_objects=3, seed=2, fps=10)
    return video.write(tmp_path_factory.mktemp("clip") / "clip.mp4"), video


def test_probe_and_is_video(clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, _ = clip
    info = probe(path)
    assert (info.fps, info.frames, info.width, info.height) == (10.0, 30, 64, 64)
    assert info.duration == pytest.approx(3.0, abs=0.15)
    assert is_video(path) and is_video("x/clip.MOV") and not is_video("x/img.png")
    # A video under a name without a video extension is found by probing; an image is not a video.
    renamed = tmp_path / "clip.bin"
    renamed.write_bytes(path.read_bytes())
    assert not is_video(renamed) and is_video(renamed, probe=True)
    png = tmp_path / "still.png"
    Image.new("RGB", (8, 8)).save(png)
    png.rename(tmp_path / "still.dat")
    assert not is_video(tmp_path / "still.dat", probe=True)


def test_frames_in_order_with_names_timestamps_and_pixels(clip) -> None:  # type: ignore[no-untyped-def]
    path, video = clip
    items = list(frame_items(path))
    assert [i.frame for i in items] == list(range(30))
    assert [i.name for i in items[:2]] == [f"{path}#frame=0", f"{path}#frame=1"]
    assert [i.timestamp for i in items[:3]] == pytest.approx([0.0, 0.1, 0.2])
    # Near-lossless H.264: the decoded frame is the rendered one up to colour-conversion rounding.
    decoded = np.asarray(items[7].load(), dtype=np.int16)
    assert np.abs(decoded - video.frames[7].astype(np.int16)).mean() < 6.0

    strided = list(frame_items(path, stride=4))
    assert [i.frame for i in strided] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert strided[2].timestamp == pytest.approx(0.8)
    with pytest.raises(ValueError, match="stride=0"):
        next(frame_items(path, stride=0))


def test_stopping_early_stops_the_decoder(clip) -> None:  # type: ignore[no-untyped-def]
    import threading

    path, _ = clip
    frames = frame_items(path, prefetch=2)
    assert next(frames).frame == 0
    frames.close()  # the consumer stops: the decoding thread must end, not block on a full queue
    assert not [t for t in threading.enumerate() if t.name == f"decode {path.name}"]


def test_missing_unreadable_and_truncated_videos_are_named(clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, _ = clip
    with pytest.raises(VideoDecodeError, match=r"nope\.mp4: no such video file"):
        probe(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoDecodeError, match=r"junk\.mp4: not a readable video"):
        list(frame_items(junk))
    # Half an MP4 (its index, written at the end, is lost): named, never passed off as an empty video.
    cut = tmp_path / "cut.mp4"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4: not a readable video"):
        list(frame_items(cut))


def test_damaged_frames_are_skipped_and_listed(tmp_path: Path) -> None:
    """Garbage in the middle of an MPEG-TS stream: FFmpeg drops the damaged frames; the others keep their
    own indices and timestamps (no renumbering), and the dropped ones are listed."""
    video = render(n_frames=40, size=64, n_objects=2, seed=5, fps=10)
    ts = tmp_path / "clip.ts"
    with av.open(str(ts), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for pixels in video.frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(ts.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    ts.write_bytes(bytes(data))
    skipped: list[int] = []
    items = list(frame_items(ts, skipped=skipped))
    got = [i.frame for i in items]
    assert skipped and sorted(got + skipped) == list(range(max(got) + 1))
    assert all(i.timestamp == pytest.approx(i.frame / 10, abs=1e-3) for i in items)


def test_annotated_video_has_every_frame_drawn(clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, video = clip
    assert pick_codec() in ("libx264", "mpeg4")
    pairs = []
    for item in frame_items(path):
        pred = Prediction(image=item.name, width=64, height=64, task="object-detection", frame=item.frame,
                          detections=[Detection("square", 1, 0.9, [10, 10, 40, 40], track_id=3)])
        pairs.append((item.load(), pred))
    out = write_annotated(tmp_path / "out" / "annotated.mp4", pairs, fps=10)
    info = probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (30, 64, 64, 10.0)
    first = np.asarray(next(frame_items(out)).load(), dtype=np.int16)
    raw = video.frames[0].astype(np.int16)
    # The box outline is drawn (changed pixels on its edge), the inside of the frame far from it is not.
    assert np.abs(first[10, 15:35] - raw[10, 15:35]).mean() > 20
    assert np.abs(first[55:, 50:] - raw[55:, 50:]).mean() < 6


def test_odd_sized_frames_are_padded_for_the_encoder(tmp_path: Path) -> None:
    img = Image.new("RGB", (33, 21), (200, 30, 30))
    pred = Prediction(image="x", width=33, height=21, task="object-detection")
    out = write_annotated(tmp_path / "odd.mp4", [(img, pred)] * 3, fps=5)
    info = probe(out)
    assert (info.width, info.height, info.frames) == (34, 22, 3)

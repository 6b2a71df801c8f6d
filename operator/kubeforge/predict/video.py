"""Video files: probing, frames as `Item`s (decoded ahead in a thread), annotated MP4s, and prediction.

PyAV (FFmpeg) decodes and encodes. `frame_items` decodes in a background thread into a bounded queue, so
the model is never idle waiting for the decoder and memory stays bounded whatever the video's length.
`predict_video` ties it together: frames -> `predict_stream` -> optional `Tracker` -> optional annotated
MP4, yielding each frame's `Prediction` as it is made.

A frame FFmpeg cannot decode stops the run with `VideoDecodeError` naming the file and the frame; the
predictions yielded before it stand and an annotated video written so far is closed and playable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from kubeforge.predict.annotate import draw
from kubeforge.predict.engine import DEFAULT_CONCURRENCY, Backend, Item, predict_stream
from kubeforge.serving.client import Prediction

if TYPE_CHECKING:
    from kubeforge.predict.tracking import Tracker

log = logging.getLogger(__name__)

# What `kubeforge predict` treats as a video by name; anything else can still be probed (`is_video(probe=True)`).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".ts", ".mts", ".3gp", ".ogv"})
PREFETCH = 16  # decoded frames held ahead of the model
# H.264 where the FFmpeg build has an encoder for it (PyPI `av` wheels ship libx264); MPEG-4 part 2 otherwise.
VIDEO_CODECS = ("libx264", "mpeg4")


class VideoDecodeError(ValueError):
    """A video (or one of its frames) FFmpeg cannot read; names the file and the frame."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # from the container's header; estimated from duration x fps where it has none
    width: int
    height: int
    duration: float  # seconds


@dataclass
class VideoStats:
    """What a run did so far, updated while it runs (the CLI prints it; benchmarks read it)."""

    frames: int = 0
    seconds: float = 0.0
    skipped: list[int] = field(default_factory=list)  # frames FFmpeg dropped as damaged
    started: float = field(default_factory=time.perf_counter)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def is_video(path: Path | str, probe: bool = False) -> bool:
    """True for a video file name (by extension); with `probe`, also a file FFmpeg opens as video."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return True
    if not probe or not path.is_file():
        return False
    import av

    try:
        with av.open(str(path)) as container:
            # Still images open as one-frame "videos" through FFmpeg's image demuxers: not a video.
            return bool(container.streams.video) and container.format.name not in _IMAGE_DEMUXERS
    except av.error.FFmpegError:
        return False


_IMAGE_DEMUXERS = frozenset({"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "webp_pipe", "gif"})


def _open(path: Path | str) -> Any:
    import av

    try:
        container = av.open(str(path))
    except FileNotFoundError:
        raise VideoDecodeError(f"{path}: no such video file") from None
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"{path}: not a readable video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: has no video stream (expected a video file)")
    return container


def probe(path: Path | str) -> VideoInfo:
    """Frame rate, frame count, size and duration of the first video stream."""
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # microseconds (AV_TIME_BASE)
        else:
            duration = 0.0
        frames = stream.frames or round(duration * fps)
        return VideoInfo(fps=fps, frames=int(frames), width=stream.codec_context.width,
                         height=stream.codec_context.height, duration=duration)


_DONE = object()


def frame_items(path: Path | str, stride: int = 1, prefetch: int = PREFETCH,
                skipped: list[int] | None = None) -> Iterator[Item]:
    """Every `stride`-th frame of the video as an Item (`clip.mp4#frame=12`, its index and timestamp).

    Decoding runs ahead in a thread, at most `prefetch` frames; closing the iterator stops it. Frame
    indices come from the frames' timestamps, so a frame FFmpeg dropped as damaged leaves a gap instead
    of renumbering the rest: the dropped indices are logged and appended to `skipped`. A video that
    cannot be opened, or an error FFmpeg does not conceal, raises `VideoDecodeError` naming the file (and
    the frame), after the frames before it were yielded.
    """
    if stride < 1:
        raise ValueError(f"stride={stride}: expected a whole number >= 1 (every stride-th frame)")
    container = _open(path)  # fails here, before any thread, for a missing or unreadable file
    out: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    dropped = skipped if skipped is not None else []

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        import av

        index = 0
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # FFmpeg's own frame threads for codecs that have them
            start = stream.start_time if stream.start_time is not None else 0
            base = stream.time_base
            rate = float(stream.average_rate) if stream.average_rate else None
            try:
                for frame in container.decode(stream):
                    when = float((frame.pts - start) * base) if frame.pts is not None and base else None
                    if when is not None and rate:
                        at = max(index, round(when * rate))
                        if at > index:
                            log.warning("%s: frames %d..%d could not be decoded (skipped)", path, index, at - 1)
                            dropped.extend(range(index, at))
                            index = at
                    if index % stride == 0:
                        item = Item(name=f"{path}#frame={index}", load=_loader(frame.to_image()), frame=index,
                                    timestamp=round(when, 6) if when is not None else None)
                        if not put(item):
                            return
                    index += 1
            except av.error.FFmpegError as exc:
                put(VideoDecodeError(f"{path}: frame {index} cannot be decoded ({exc}); "
                                     f"frames 0..{index - 1} were read"))
                return
            put(_DONE)
        except BaseException as exc:  # hand anything else to the consumer instead of dying silently
            put(exc)
        finally:
            container.close()

    worker = threading.Thread(target=decode, name=f"decode {Path(path).name}", daemon=True)
    worker.start()
    try:
        while True:
            value = out.get()
            if value is _DONE:
                return
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
        worker.join(timeout=10)


def _loader(img: Image.Image) -> Any:
    return lambda: img


class AnnotatedVideoWriter:
    """An MP4 of frames with their predictions drawn (`annotate.draw`): boxes, masks, classes, track ids.

    Use as a context manager; closing flushes the encoder, so a run stopped by an error still leaves a
    playable file of the frames written so far.
    """

    def __init__(self, path: Path | str, fps: float, codec: str | None = None) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.codec = codec or pick_codec()
        self.fps = fps
        self.frames = 0
        self._container = av.open(str(self.path), "w")
        self._stream: Any = None

    def write(self, img: Image.Image, pred: Prediction) -> None:
        import av

        canvas = draw(img, pred)
        if self._stream is None:
            self._stream = self._container.add_stream(self.codec, rate=_rate(self.fps))
            # yuv420p (what players expect) needs even sides: odd ones get one pixel of padding.
            self._stream.width, self._stream.height = canvas.width + canvas.width % 2, canvas.height + canvas.height % 2
            self._stream.pix_fmt = "yuv420p"
        if (canvas.width, canvas.height) != (self._stream.width, self._stream.height):
            padded = Image.new("RGB", (self._stream.width, self._stream.height))
            padded.paste(canvas.crop((0, 0, min(canvas.width, self._stream.width),
                                      min(canvas.height, self._stream.height))))
            canvas = padded
        frame = av.VideoFrame.from_image(canvas)
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self._stream is not None:
            self._container.mux(self._stream.encode())  # flush the encoder's delayed frames
        self._container.close()

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)


def pick_codec() -> str:
    """The first of VIDEO_CODECS this FFmpeg build can encode."""
    import av

    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError):  # PyAV raises UnknownCodecError (a ValueError)
            continue
    raise RuntimeError(f"this FFmpeg build has none of the video encoders {VIDEO_CODECS}")


def write_annotated(out_path: Path | str, frames: Iterable[tuple[Image.Image, Prediction]], fps: float) -> Path:
    """Write (frame, prediction) pairs as an annotated MP4; returns the path."""
    with AnnotatedVideoWriter(out_path, fps) as writer:
        for img, pred in frames:
            writer.write(img, pred)
    return Path(out_path)


def predict_video(backend: Backend, path: Path | str, *, threshold: float, tracker: Tracker | None = None,
                  annotated: Path | str | None = None, stride: int = 1, top_k: int = 5,
                  concurrency: int = DEFAULT_CONCURRENCY, stats: VideoStats | None = None) -> Iterator[Prediction]:
    """One Prediction per decoded frame (every `stride`-th), in order, with `frame` and `timestamp` set.

    With a `tracker`, each prediction's detections carry track ids (frames reach the tracker in order).
    With `annotated`, an MP4 of the frames with predictions drawn is written there at the video's frame
    rate divided by `stride`. `stats` (frames, seconds, fps, skipped frames) is updated as frames come out;
    the frame rate is also logged at the end. Damaged frames FFmpeg drops are listed in `stats.skipped`;
    an error it cannot conceal stops the run after the frames before it (the annotated video is closed).
    """
    info = probe(path)
    stats = stats if stats is not None else VideoStats()
    stats.started = time.perf_counter()  # the run's own time, however long ago the caller made `stats`
    pending: deque[Item] = deque()  # frames in flight, in order: their images for the tracker and the writer

    def items() -> Iterator[Item]:
        for item in frame_items(path, stride=stride, skipped=stats.skipped):
            pending.append(item)
            yield item

    writer = AnnotatedVideoWriter(annotated, info.fps / stride) if annotated is not None else None
    try:
        for pred in predict_stream(backend, items(), threshold=threshold, top_k=top_k, concurrency=concurrency):
            item = pending.popleft()
            if tracker is not None or writer is not None:
                img = item.load()
                if tracker is not None:
                    pred = tracker.update(pred, image=img)
                if writer is not None:
                    writer.write(img, pred)
            stats.frames += 1
            stats.seconds = time.perf_counter() - stats.started
            yield pred
    finally:
        if writer is not None:
            writer.close()
        log.info("%s: %d frames in %.1f s (%.1f frames/s)", path, stats.frames, stats.seconds, stats.fps)


__all__ = [
    "VIDEO_EXTENSIONS",
    "AnnotatedVideoWriter",
    "VideoDecodeError",
    "VideoInfo",
    "VideoStats",
    "frame_items",
    "is_video",
    "pick_codec",
    "predict_video",
    "probe",
    "write_annotated",
]

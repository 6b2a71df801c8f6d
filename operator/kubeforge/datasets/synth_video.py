"""A generated video of moving shapes whose true tracks are known (`kubeforge datasets synth video`).

The frames are drawn in the style of `kubeforge.datasets.synth` (its backgrounds, its contrast rule for
shape colours, the same three classes and sizes), so a detector trained on `generate_shapes_coco` images
finds the shapes in the video. Objects move in straight lines at constant speed: some are in view from
the first frame, the others enter from an edge at staggered times, and all head through the middle of
the frame, so paths cross (the later object is drawn on top) and objects leave through the far edge.

The truth per frame lists each object whose box is at least `MIN_VISIBLE` visible (inside the frame and
not hidden by objects drawn over it), with its id, class and box clipped to the frame: what a person
labelling the video would have marked. `MovingShapes.write_truth` writes it as MOTChallenge `gt.txt`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from kubeforge.datasets.synth import DEFAULT_CLASSES, _background, _shape_color

MIN_VISIBLE = 0.5  # share of an object's pixels that must show for it to be in the truth
SIDE_FRACTION = (0.2, 0.32)  # of the frame: inside synth's (0.15, 0.45) so a detector trained there sees them


@dataclass(frozen=True)
class TrueBox:
    """One object in one frame: its track id (from 1), class and box (xyxy, clipped to the frame)."""

    track_id: int
    kind: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class _Mover:
    track_id: int
    kind: str
    side: float
    start: tuple[float, float]  # top-left corner at frame `first`
    velocity: tuple[float, float]  # pixels per frame
    first: int
    color: tuple[int, int, int]
    apex: float  # triangles: where the apex sits along the top edge (0..1)

    def corner(self, frame: int) -> tuple[float, float]:
        t = frame - self.first
        return self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t

    def draw(self, pen: ImageDraw.ImageDraw, frame: int, fill: Any) -> None:
        x, y = self.corner(frame)
        s = self.side
        if self.kind == "circle":
            pen.ellipse([x, y, x + s, y + s], fill=fill)
        elif self.kind == "square":
            pen.rectangle([x, y, x + s, y + s], fill=fill)
        else:
            pen.polygon([(x + self.apex * s, y), (x + s, y + s), (x, y + s)], fill=fill)


@dataclass
class MovingShapes:
    """The rendered frames (RGB uint8, HxWx3), the truth per frame, and the frame rate."""

    frames: list[np.ndarray]
    truth: list[list[TrueBox]]
    fps: int
    classes: tuple[str, ...] = DEFAULT_CLASSES

    @property
    def track_ids(self) -> set[int]:
        return {b.track_id for boxes in self.truth for b in boxes}

    def write(self, path: Path | str, crf: int = 12) -> Path:
        """Encode the frames as an H.264 MP4 (near-lossless, so detections match the raw frames)."""
        import av

        path = Path(path)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(self.fps))
            stream.height, stream.width = self.frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for pixels in self.frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            container.mux(stream.encode())
        return path

    def write_truth(self, path: Path | str) -> Path:
        """The true tracks as MOTChallenge `gt.txt`: `frame,id,x,y,w,h,1,class,1` (frames from 1; class is
        the 1-based index into `classes`), what TrackEval and motmetrics read."""
        path = Path(path)
        rows = []
        for f, boxes in enumerate(self.truth, start=1):
            for b in boxes:
                x1, y1, x2, y2 = b.box
                rows.append(f"{f},{b.track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,"
                            f"{self.classes.index(b.kind) + 1},1")
        path.write_text("\n".join(rows) + "\n")
        return path


def _movers(rng: np.random.Generator, size: int, n_frames: int, n_objects: int, bg_luma: float) -> list[_Mover]:
    movers = []
    for k in range(n_objects):
        kind = DEFAULT_CLASSES[int(rng.integers(0, len(DEFAULT_CLASSES)))]
        side = float(rng.uniform(*SIDE_FRACTION)) * size
        # Every object heads for a point near the middle, so paths cross there.
        target = rng.uniform(0.3 * size, 0.7 * size - side, size=2)
        speed = float(rng.uniform(0.9, 2.0)) * size / 128
        if k < 2:  # in view from the first frame, heading across
            start = rng.uniform(0.05 * size, 0.95 * size - side, size=2)
            first = 0
        else:  # enters from a random edge at a staggered time
            edge = int(rng.integers(0, 4))
            along = float(rng.uniform(0, size - side))
            start = np.array([[-side, along], [size, along], [along, -side], [along, size]][edge], dtype=float)
            first = int(rng.integers(0, max(1, int(n_frames * 0.6))))
        direction = target - start
        norm = float(np.hypot(*direction)) or 1.0
        velocity = direction / norm * speed
        movers.append(_Mover(track_id=k + 1, kind=kind, side=side, start=(float(start[0]), float(start[1])),
                             velocity=(float(velocity[0]), float(velocity[1])), first=first,
                             color=_shape_color(rng, bg_luma), apex=float(rng.uniform(0.2, 0.8))))
    return movers


def render(n_frames: int = 120, size: int = 128, n_objects: int = 7, seed: int = 0, fps: int = 25) -> MovingShapes:
    """Render the video (a pure function of the arguments) and its true tracks."""
    if n_frames < 1 or size < 32 or n_objects < 1:
        raise ValueError(f"n_frames={n_frames}, size={size}, n_objects={n_objects}: expected >=1, >=32, >=1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x51DE0]))
    bg, bg_luma = _background(rng, size)
    movers = _movers(rng, size, n_frames, n_objects, bg_luma)
    frames, truth = [], []
    for f in range(n_frames):
        img = Image.fromarray(bg, "RGB")
        pen = ImageDraw.Draw(img)
        # An id image (drawn in the same order) says which object owns each pixel: visibility under occlusion.
        owner = Image.new("I", (size, size), 0)
        owner_pen = ImageDraw.Draw(owner)
        live = [m for m in movers if f >= m.first]
        for m in live:
            m.draw(pen, f, m.color)
            m.draw(owner_pen, f, m.track_id)
        owners = np.asarray(owner)
        boxes = []
        for m in live:
            full = _full_pixels(m, f)
            shown = owners == m.track_id
            if full <= 0 or shown.sum() < MIN_VISIBLE * full:
                continue
            x, y = m.corner(f)
            box = (max(0.0, x), max(0.0, y), min(float(size), x + m.side), min(float(size), y + m.side))
            boxes.append(TrueBox(m.track_id, m.kind, tuple(round(v, 2) for v in box)))  # type: ignore[arg-type]
        frames.append(np.asarray(img).copy())
        truth.append(boxes)
    return MovingShapes(frames=frames, truth=truth, fps=fps)


def _full_pixels(m: _Mover, frame: int) -> float:
    """The pixel count the object would cover if nothing hid it and the frame were unbounded."""
    area = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}[m.kind]
    return area * m.side * m.side

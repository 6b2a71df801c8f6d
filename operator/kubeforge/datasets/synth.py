"""Seeded synthetic shapes: a small learnable dataset for the demo, tests and benchmarks.

`generate_shapes_coco` writes a COCO instances dataset:

    out/images/000000.png ...
    out/annotations.json

COCO's `file_name` is relative to the images folder (`"000000.png"`), as in the official
COCO releases; the importer finds the images in `out/images/` by default.

`generate_shapes_imagefolder` writes a classification dataset, `out/<class>/0000.png`.

The output is a pure function of the arguments: each image draws from its own random
stream (seed, image index), and PNG encoding carries no timestamps, so the same seed gives
the same bytes on every run and machine.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kubeforge.atomic_file import atomic_write_bytes

DEFAULT_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
KNOWN_SHAPES = frozenset(DEFAULT_CLASSES)
CIRCLE_VERTICES = 32  # polygon approximation of a circle: within 0.5% of its true area
MAX_OVERLAP = 0.15  # a new shape may cover at most this share of any earlier box (and vice versa)
MIN_LUMA_CONTRAST = 70.0  # on 0..255; keeps every shape clearly visible on its background


@dataclass(frozen=True)
class Shape:
    kind: str
    polygon: list[tuple[float, float]]  # closed ring, pixel coordinates
    bbox: tuple[float, float, float, float]  # xywh

    @property
    def area(self) -> float:
        return _polygon_area(self.polygon)


def _polygon_area(poly: Sequence[tuple[float, float]]) -> float:
    xs = np.array([p[0] for p in poly])
    ys = np.array([p[1] for p in poly])
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2.0)


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """A solid, gradient or lightly noisy background; returns (HxWx3 uint8, mean luma)."""
    kind = rng.integers(0, 3)
    c1 = rng.integers(0, 256, size=3).astype(np.float32)
    if kind == 0:
        img = np.broadcast_to(c1, (size, size, 3)).copy()
    else:
        # Gradients stay within a narrow luma band so one shape colour contrasts everywhere.
        c2 = np.clip(c1 + rng.integers(-60, 61, size=3), 0, 255).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
        t = (xx * math.cos(angle) + yy * math.sin(angle))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = c1 + (c2 - c1) * t[..., None]
        if kind == 2:
            img = img + rng.normal(0.0, 8.0, size=(size, size, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    mean = img.reshape(-1, 3).mean(axis=0, dtype=np.float32)
    return img, _luma(mean)


def _shape_color(rng: np.random.Generator, bg_luma: float) -> tuple[int, int, int]:
    for _ in range(64):
        color = rng.integers(0, 256, size=3)
        if abs(_luma(color) - bg_luma) >= MIN_LUMA_CONTRAST:
            return int(color[0]), int(color[1]), int(color[2])
    # Mid-grey backgrounds leave little room: fall back to black or white, whichever is farther.
    return (0, 0, 0) if bg_luma > 127 else (255, 255, 255)


def _make_shape(kind: str, rng: np.random.Generator, size: int, frac: tuple[float, float]) -> Shape:
    side = float(rng.uniform(frac[0], frac[1]) * size)
    x0 = float(rng.uniform(0, size - side))
    y0 = float(rng.uniform(0, size - side))
    if kind == "circle":
        r = side / 2
        cx, cy = x0 + r, y0 + r
        poly = [
            (cx + r * math.cos(2 * math.pi * k / CIRCLE_VERTICES), cy + r * math.sin(2 * math.pi * k / CIRCLE_VERTICES))
            for k in range(CIRCLE_VERTICES)
        ]
    elif kind == "square":
        poly = [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]
    elif kind == "triangle":
        # Apex anywhere along the top edge: varied triangles, still filling their box.
        apex = x0 + float(rng.uniform(0.2, 0.8)) * side
        poly = [(apex, y0), (x0 + side, y0 + side), (x0, y0 + side)]
    else:
        raise ValueError(f"unknown shape class {kind!r}: expected one of {sorted(KNOWN_SHAPES)}")
    xs = [p[0] for p in poly]
    ys = [p[1] for p in poly]
    bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return Shape(kind=kind, polygon=poly, bbox=bbox)


def _overlap_ok(box: tuple[float, float, float, float], placed: list[Shape]) -> bool:
    x, y, w, h = box
    for other in placed:
        ox, oy, ow, oh = other.bbox
        iw = min(x + w, ox + ow) - max(x, ox)
        ih = min(y + h, oy + oh) - max(y, oy)
        if iw > 0 and ih > 0 and iw * ih > MAX_OVERLAP * min(w * h, ow * oh):
            return False
    return True


def _draw(
    rng: np.random.Generator, size: int, kinds: Sequence[str], frac: tuple[float, float]
) -> tuple[bytes, list[Shape]]:
    bg, bg_luma = _background(rng, size)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    placed: list[Shape] = []
    for kind in kinds:
        for _ in range(30):  # rejection sampling; a crowded image simply gets fewer shapes
            shape = _make_shape(kind, rng, size, frac)
            if _overlap_ok(shape.bbox, placed):
                break
        else:
            continue
        color = _shape_color(rng, bg_luma)
        if kind == "circle":
            x, y, w, h = shape.bbox
            draw.ellipse([x, y, x + w, y + h], fill=color)
        else:
            draw.polygon(shape.polygon, fill=color)
        placed.append(shape)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast; zlib output is still deterministic
    return buf.getvalue(), placed


def _check_classes(classes: Sequence[str]) -> list[str]:
    names = list(classes)
    if not names:
        raise ValueError("classes: expected at least one shape class")
    unknown = [c for c in names if c not in KNOWN_SHAPES]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"classes {names!r}: expected distinct names from {sorted(KNOWN_SHAPES)}")
    return names




def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _r(v: float) -> float:
    return round(v, 2)


def generate_shapes_coco(
    out: Path,
    n_images: int = 500,
    size: int = 160,
    seed: int = 0,
    classes: Sequence[str] = DEFAULT_CLASSES,
    max_objects: int = 4,
) -> Path:
    """Write a COCO detection dataset of filled shapes to `out`; returns the annotations path."""
    names = _check_classes(classes)
    if n_images < 1 or size < 16 or max_objects < 1:
        raise ValueError(f"n_images={n_images}, size={size}, max_objects={max_objects}: expected >=1, >=16, >=1")
    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    for i in range(n_images):
        rng = _rng(seed, i)
        count = int(rng.integers(1, max_objects + 1))
        kinds = [names[int(k)] for k in rng.integers(0, len(names), size=count)]
        data, shapes = _draw(rng, size, kinds, (0.15, 0.45))
        file_name = f"{i:06d}.png"
        atomic_write_bytes(images_dir / file_name, data)
        images.append({"id": i + 1, "file_name": file_name, "width": size, "height": size})
        for shape in shapes:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": names.index(shape.kind) + 1,
                "bbox": [_r(v) for v in shape.bbox],
                "area": _r(shape.area),
                "segmentation": [[_r(c) for p in shape.polygon for c in p]],
                "iscrowd": 0,
            })
    coco = {
        "info": {"description": f"kubeforge synthetic shapes (seed {seed})", "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(names)],
    }
    ann_path = out / "annotations.json"
    atomic_write_bytes(ann_path, json.dumps(coco, separators=(",", ":")).encode())
    return ann_path


def generate_shapes_imagefolder(
    out: Path,
    n_per_class: int = 200,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> Path:
    """Write a classification dataset `out/<class>/0000.png`, one shape per image; returns `out`."""
    names = _check_classes(classes)
    if n_per_class < 1 or size < 16:
        raise ValueError(f"n_per_class={n_per_class}, size={size}: expected >=1 and >=16")
    out = Path(out)
    for k, name in enumerate(names):
        class_dir = out / name
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            # Offset the stream per class so classes do not share backgrounds image by image.
            data, _ = _draw(_rng(seed, k * 1_000_003 + i), size, [name], (0.35, 0.8))
            atomic_write_bytes(class_dir / f"{i:04d}.png", data)
    return out

"""Helpers the format importers and exporters share: coordinates, masks, tags, safe paths.

Canonical coordinates: every importer that derives pixel coordinates (VOC's 1-based corners,
YOLO's normalised centres, Supervisely's points) rounds them to `COORD_DECIMALS` places, and
every exporter writes enough digits to give the same rounded value back. That is what makes
import -> export -> import land on the same digest. COCO keeps its floats as written: JSON
carries them exactly.

Tags are strings: `name` or `name=value` (a valued tag). The same convention is used for image
tags (`ManifestImage.tags`) and object tags (`ManifestAnnotation.tags`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.datasets.draft import IMAGE_EXTENSIONS, DatasetImportError
from kubeforge.datasets.sources import Source

COORD_DECIMALS = 2
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def rc(v: float) -> float:
    """A pixel coordinate rounded to the canonical precision (and never -0.0)."""
    return round(float(v), COORD_DECIMALS) + 0.0


def num(v: float) -> str:
    """A number as exporters write it: integral values without '.0', others with minimal digits."""
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def finite_float(text: str | None) -> float | None:
    """A number written as text (an XML attribute or element): None unless it parses as a finite float."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def polygon_bbox(poly: Sequence[float]) -> list[float]:
    xs, ys = poly[0::2], poly[1::2]
    return [rc(min(xs)), rc(min(ys)), rc(max(xs) - min(xs)), rc(max(ys) - min(ys))]


def polygons_bbox(polys: Sequence[Sequence[float]]) -> list[float]:
    xs = [x for p in polys for x in p[0::2]]
    ys = [y for p in polys for y in p[1::2]]
    return [rc(min(xs)), rc(min(ys)), rc(max(xs) - min(xs)), rc(max(ys) - min(ys))]


def polygon_area(poly: Sequence[float]) -> float:
    pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    return round(float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0), 4)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A boolean HxW mask as compressed COCO RLE with string counts (what the manifest stores)."""
    from faster_coco_eval.core import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode()}


def rle_to_mask(seg: dict[str, Any]) -> np.ndarray:
    """Decode compressed (string counts) or uncompressed (list counts) RLE to a bool HxW mask."""
    from faster_coco_eval.core import mask as mask_utils

    h, w = seg["size"]
    if isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": [h, w], "counts": seg["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def polygons_to_mask(polys: Iterable[Sequence[float]], height: int, width: int) -> np.ndarray:
    from faster_coco_eval.core import mask as mask_utils

    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polys], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def mask_bbox_area(mask: np.ndarray) -> tuple[list[float], float]:
    """The tight pixel box (xywh) and the pixel count of a mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0], 0.0
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)], float(len(xs))


def split_tag(tag: str) -> tuple[str, str | None]:
    name, sep, value = tag.partition("=")
    return (name, value) if sep else (tag, None)


def join_tag(name: str, value: Any) -> str:
    if value is None or value is True:
        return name
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{name}={value}"


def split_tags(tags: Iterable[str]) -> list[str]:
    """The split names among tags (train, val, test)."""
    return sorted({t for t in tags if t in SPLIT_TAGS})


def check_rel(where: str, what: str, rel: str) -> str:
    """A path from an annotation file, '/'-separated; rejects absolute paths and '..' escapes."""
    norm = rel.replace("\\", "/")
    parts = norm.split("/")
    if norm.startswith("/") or any(p in ("..",) for p in parts) or not norm.strip("/"):
        raise DatasetImportError(f"{where}: {what} {rel!r}: expected a path inside the source (no '..', not absolute)")
    return "/".join(p for p in parts if p not in ("", "."))


def read_json(source: Source, rel: str) -> Any:
    where = source.where(rel)
    try:
        return json.loads(source.read(rel))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetImportError(f"{where}: not valid JSON ({exc})") from None


def read_text(source: Source, rel: str) -> str:
    try:
        return source.read(rel).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetImportError(f"{source.where(rel)}: not UTF-8 text ({exc})") from None


def list_ids(source: Source, rel: str) -> Iterator[tuple[int, str]]:
    """(line number, id) per non-blank line of a VOC ImageSets list: the line's first word (a
    per-class list's `-1`/`1` after it is for the caller to ignore)."""
    for n, line in enumerate(read_text(source, rel).splitlines(), start=1):
        image_id = line.split()[0] if line.strip() else ""
        if image_id:
            yield n, image_id


def is_image(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in IMAGE_EXTENSIONS


def stem_index(files: Iterable[str]) -> dict[str, str]:
    """Image path without extension -> image path, to pair annotation files with their images."""
    out: dict[str, str] = {}
    for rel in files:
        if is_image(rel):
            out.setdefault(rel.rsplit(".", 1)[0], rel)
    return out


def set_split(image: Any, name: str, where: str) -> bool:
    """Record split `name` (any SPLIT_NAMES spelling) on a DraftImage as its one split tag.

    False when `name` is not a split name (nothing recorded); a second, different split is an
    error naming `where` (the file that gives it) and the image.
    """
    split = SPLIT_NAMES.get(name.lower())
    if split is None:
        return False
    other = [t for t in image.tags if t in SPLIT_TAGS and t != split]
    if other:
        raise DatasetImportError(
            f"{where}: image {image.path}: split {split!r}, but it is already in split {other[0]!r}; "
            "expected one split per image"
        )
    if split not in image.tags:
        image.tags.append(split)
    return True


_SPLIT_NAME = re.compile(r"(?:obj_)?([a-z]+?)(?:[-_]?\d+)?(?:_data)?")


def split_of(name: str) -> str | None:
    """The split (train, val, test) a file or folder name stands for, or None: `train`,
    `train2017`, `val_2014`, `valid`, `validation`, `test`, Darknet's `obj_train_data`."""
    m = _SPLIT_NAME.fullmatch(name.lower())
    return SPLIT_NAMES.get(m.group(1)) if m else None


def export_rest(file_name: str, split: str | None) -> str:
    """A version path without the leading folders an exporter's canonical layout supplies itself:
    `images/` and a folder naming the image's own split (`images/train/a.png`, `train/images/a.png`,
    `valid/a.png` -> `a.png` for split train/val; `images/default/a.png` -> `a.png` without one)."""
    parts = file_name.split("/")
    def own(part: str) -> bool:
        return part == "images" or (split_of(part) == split if split else part == "default")

    while len(parts) > 1 and own(parts[0]):
        parts = parts[1:]
    return "/".join(parts)


def unique_stems(paths: Sequence[str], *, keep_ext: bool = False) -> list[str]:
    """One flat name per path (for exports that hold one folder of images, e.g. VOC's JPEGImages):
    the file name (without its extension unless `keep_ext`); where two paths share it, both get
    the whole path with '/' as '_', and a '_2', '_3'... suffix if that still collides. Same input,
    same names."""

    def base(p: str) -> str:
        name = p.rpartition("/")[2]
        return name if keep_ext or "." not in name else name.rsplit(".", 1)[0]

    def whole(p: str) -> str:
        stem = p if keep_ext or "." not in p.rpartition("/")[2] else p.rsplit(".", 1)[0]
        return stem.replace("/", "_")

    counts: dict[str, int] = {}
    for p in paths:
        counts[base(p)] = counts.get(base(p), 0) + 1
    out: list[str] = []
    taken: set[str] = set()
    for p in paths:
        name = base(p) if counts[base(p)] == 1 else whole(p)
        if name in taken:
            stem, dot, ext = name.rpartition(".") if keep_ext and "." in name else (name, "", "")
            n = 2
            while f"{stem}_{n}{dot}{ext}" in taken:
                n += 1
            name = f"{stem}_{n}{dot}{ext}"
        taken.add(name)
        out.append(name)
    return out

"""What a format parser hands the importer: images to read and annotations to attach.

Parsers only read the annotation files (cheap); the importer then reads, checks and uploads
every image, and builds the manifest from the images that survived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from kubeforge.datasets.manifest import Category

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class DatasetImportError(ValueError):
    """The source is not a valid dataset; the message names the file, the entry and what was expected."""


@dataclass
class DraftImage:
    path: str  # relative to the source root, '/'-separated
    ref: Any  # how the source names it (COCO image id, or the path), for messages and annotation links
    width: int | None = None  # as the annotations declare it; checked against the decoded image
    height: int | None = None
    category_id: int | None = None  # classification label
    tags: list[str] = field(default_factory=list)
    # A problem the parser already knows of (e.g. a label file whose image is missing): the image is
    # then invalid without being read, so it fails the import or is skipped like a corrupt one.
    error: str = ""


@dataclass
class DraftAnnotation:
    image_ref: Any
    ref: Any  # the annotation id, for messages
    category_id: int
    bbox: list[float]
    area: float | None
    iscrowd: int
    segmentation: list[list[float]] | dict[str, Any] | None
    tags: list[str] = field(default_factory=list)
    where: str = ""  # the file that declares it, when not Draft.origin (one annotation file per image)
    # YOLO: bbox (cx, cy, w, h) and polygons are fractions of the image size, which is only known
    # once the image is read; the importer converts them to pixels then.
    normalized: bool = False


@dataclass
class Draft:
    task: Literal["classification", "object-detection"]
    categories: list[Category]
    images: list[DraftImage]
    annotations: list[DraftAnnotation] = field(default_factory=list)
    origin: str = ""  # the annotations file (full location), for messages
    # Files the parser left out with `spec.onInvalidImage: Skip` semantics before any image is read
    # (e.g. a file name that cannot be stored safely): (full location, reason). The importer lists
    # them in status.skipped with the images it skips itself.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def is_number(v: Any) -> bool:
    # bool is an int subclass in Python, but `true` is never a coordinate.
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)

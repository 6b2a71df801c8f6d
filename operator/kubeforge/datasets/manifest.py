"""The version manifest: images by content hash, annotations, classes.

A version's digest is the sha256 of its canonical manifest bytes, which are exactly the
bytes stored at `datasets/<dataset>/<digest>/manifest.json`. Canonical means: images
sorted by file name, annotations sorted by image then content, categories by id, keys
sorted, no whitespace. So the same content gives the same digest whatever the order
in which files were found.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # C-accelerated, ensure_ascii=False
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

FORMAT_VERSION = 1

Segmentation = list[list[float]] | dict[str, Any]  # polygons, or COCO RLE {"size": [h, w], "counts": ...}


class Category(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    name: str
    supercategory: str | None = None


class ManifestImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_name: str = Field(description="Path relative to the source root, '/'-separated.")
    blob: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the image bytes.")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    bytes: int = Field(ge=0)
    category_id: int | None = Field(default=None, description="Classification label.")
    tags: list[str] = Field(default_factory=list)


class ManifestAnnotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: int = Field(ge=0, description="Index into Manifest.images.")
    category_id: int
    bbox: list[float] = Field(min_length=4, max_length=4, description="COCO xywh in pixels.")
    area: float = Field(ge=0)
    iscrowd: int = 0
    segmentation: Segmentation | None = None
    tags: list[str] = Field(
        default_factory=list,
        description="Object tags and attributes: 'name' or 'name=value' (VOC difficult/truncated, Supervisely "
        "object tags, COCO/CVAT attributes).",
    )

    @model_serializer(mode="wrap")
    def _omit_empty_tags(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        # Left out when empty so manifests written before object tags existed keep their bytes and digest.
        data = handler(self)
        if not data.get("tags"):
            data.pop("tags", None)
        return data


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    dataset: str
    task: Literal["classification", "object-detection"]
    categories: list[Category]
    images: list[ManifestImage]
    annotations: list[ManifestAnnotation] = Field(default_factory=list)

    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def category_name(self, category_id: int) -> str:
        for cat in self.categories:
            if cat.id == category_id:
                return cat.name
        raise KeyError(category_id)

    def annotations_by_image(self) -> list[list[ManifestAnnotation]]:
        out: list[list[ManifestAnnotation]] = [[] for _ in self.images]
        for ann in self.annotations:
            out[ann.image].append(ann)
        return out

    def canonical(self) -> Manifest:
        """The same content in canonical order (image indices in annotations remapped)."""
        order = sorted(range(len(self.images)), key=lambda i: self.images[i].file_name)
        new_index = {old: new for new, old in enumerate(order)}
        images = [self.images[i].model_copy(update={"tags": sorted(set(self.images[i].tags))}) for i in order]
        anns = [
            a.model_copy(update={"image": new_index[a.image], "tags": sorted(set(a.tags))}) for a in self.annotations
        ]
        anns.sort(key=lambda a: (a.image, canonical_json(a.model_dump(mode="json"))))
        cats = sorted(self.categories, key=lambda c: c.id)
        return Manifest(
            format_version=self.format_version, dataset=self.dataset, task=self.task,
            categories=cats, images=images, annotations=anns,
        )

    def to_bytes(self) -> bytes:
        """Canonical bytes; sha256 of these is the digest."""
        return canonical_json(self.canonical().model_dump(mode="json")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        return cls.model_validate_json(data)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_chunks(*, annotation_rows: Iterable[str], categories: Iterable[Category], dataset: str,
                     format_version: int, image_rows: Iterable[str], task: str,
                     rows_per_chunk: int) -> Iterator[bytes]:
    """`Manifest.to_bytes()` built from its parts, in pieces (for the columnar forms, which never
    build a `Manifest`): rows are already canonical JSON in canonical order, categories sorted by
    id; the keys around them in sorted order. `rows_per_chunk` bounds a piece, not the bytes."""
    yield b'{"annotations":['
    yield from _joined(annotation_rows, rows_per_chunk)
    cats = [c.model_dump(mode="json") for c in categories]
    yield (f'],"categories":{canonical_json(cats)},"dataset":{encode_basestring(dataset)},'
           f'"format_version":{format_version},"images":[').encode()
    yield from _joined(image_rows, rows_per_chunk)
    yield f'],"task":{encode_basestring(task)}}}'.encode()


def chunks_digest(chunks: Iterable[bytes]) -> str:
    """The version digest of canonical bytes given in pieces."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _joined(rows: Iterable[str], rows_per_chunk: int) -> Iterator[bytes]:
    """Comma-joined rows, encoded `rows_per_chunk` at a time."""
    buf: list[str] = []
    first = True
    for row in rows:
        if first:
            first = False
        else:
            buf.append(",")
        buf.append(row)
        if len(buf) >= 2 * rows_per_chunk:
            yield "".join(buf).encode()
            buf.clear()
    if buf:
        yield "".join(buf).encode()

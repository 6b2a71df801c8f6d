"""A manifest as plain columns: built, hashed and written without one pydantic object per image.

`ManifestColumns` holds the canonical content (images sorted by file name, tags sorted and
unique, annotations remapped and sorted by image then canonical JSON) as Python lists, and
writes the canonical bytes of `Manifest.to_bytes()` for the same content directly, a row at a
time: the same bytes, so the same digest (tests/test_datasets_speed_manifest.py compares the
two on varied manifests). Only values whose JSON form is plain are taken (ints, finite floats,
strings, lists, dicts of those); `from_values` returns None for anything else, and the caller
builds the pydantic `Manifest` as before (which validates, coerces or refuses it).

Large versions go to `ColumnarManifest` (Parquet) straight from the lists; `to_manifest()` gives
the pydantic form for consumers that need it (unvalidated construction: the values were checked
here).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # C-accelerated, ensure_ascii=False
from typing import Any

from kubeforge.datasets.manifest import FORMAT_VERSION, Category, canonical_chunks, canonical_json, chunks_digest

_ROWS = 4096  # rows per encoded chunk


def _plain(value: Any) -> bool:
    """JSON-mode dumping keeps it as it is (pydantic `Any`): str, int, finite float, None, lists, dicts."""
    t = type(value)
    if t is str or t is int or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is list:
        return all(_plain(v) for v in value)
    if t is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _floats(values: Any) -> list[float] | None:
    """`list[float]` as pydantic validates and dumps it, for plain numbers only (else None)."""
    if type(values) is not list:
        return None
    out = []
    for v in values:
        t = type(v)
        if t is float:
            if not math.isfinite(v):
                return None
            out.append(v)
        elif t is int:
            out.append(float(v))
        else:
            return None
    return out


_NO_TAGS: list[str] = []  # shared by every untagged image (never mutated)


def _tags(tags: Any) -> list[str] | None:
    if type(tags) is not list or any(type(t) is not str for t in tags):
        return None
    return sorted(set(tags)) if tags else _NO_TAGS


def annotation_json(image: int, category_id: Any, bbox: Any, area: Any, iscrowd: Any, segmentation: Any,
                    tags: Any) -> dict[str, Any] | None:
    """`ManifestAnnotation(...).model_dump(mode="json")` for plain, valid values; None otherwise."""
    if type(category_id) is not int or type(iscrowd) is not int:
        return None
    box = _floats(bbox)
    if box is None or len(box) != 4:
        return None
    if area is None:
        area_f = 0.0
    elif type(area) is float and math.isfinite(area) and area >= 0:
        area_f = area
    elif type(area) is int and area >= 0:
        area_f = float(area)
    else:
        return None
    seg: Any
    if segmentation is None:
        seg = None
    elif type(segmentation) is list:
        seg = []
        for poly in segmentation:
            p = _floats(poly)
            if p is None:
                return None
            seg.append(p)
    elif type(segmentation) is dict and _plain(segmentation):
        seg = segmentation
    else:
        return None
    tag_list = _tags(tags)
    if tag_list is None:
        return None
    d: dict[str, Any] = {"area": area_f, "bbox": box, "category_id": category_id, "image": image,
                         "iscrowd": iscrowd, "segmentation": seg}
    if tag_list:
        d["tags"] = tag_list
    return d


@dataclass
class ManifestColumns:
    """A version's canonical content as lists (see the module doc)."""

    dataset: str
    task: str
    categories: list[Category]  # sorted by id
    file_name: list[str]
    blob: list[str]
    width: list[int]
    height: list[int]
    bytes: list[int]
    category_id: list[int | None]
    tags: list[list[str]]  # each sorted and unique
    annotations: list[dict[str, Any]] = field(default_factory=list)  # JSON-mode dicts, canonical order
    format_version: int = FORMAT_VERSION
    _digest: str | None = None

    @classmethod
    def from_values(
        cls, dataset: str, task: str, categories: Sequence[Category], file_name: list[str], blob: list[str],
        width: list[int], height: list[int], size: list[int], category_id: list[Any], tags: list[Any],
        annotations: Sequence[tuple[int, Any, Any, Any, Any, Any, Any]] = (),
    ) -> ManifestColumns | None:
        """Canonical columns from per-image values in any order, annotations as (image index, category_id,
        bbox, area, iscrowd, segmentation, tags); None when a value needs pydantic (see the module doc)."""
        if task not in ("classification", "object-detection") or any(type(c) is not Category for c in categories):
            return None
        if any(c is not None and type(c) is not int for c in category_id):
            return None
        order = sorted(range(len(file_name)), key=file_name.__getitem__)
        new_index = [0] * len(order)
        for new, old in enumerate(order):
            new_index[old] = new
        tag_lists = []
        for i in order:
            t = _tags(tags[i])
            if t is None:
                return None
            tag_lists.append(t)
        anns = []
        for image, cid, bbox, area, iscrowd, seg, atags in annotations:
            d = annotation_json(new_index[image], cid, bbox, area, iscrowd, seg, atags)
            if d is None:
                return None
            anns.append(d)
        if anns:
            keyed = sorted(((d["image"], canonical_json(d)), n) for n, d in enumerate(anns))
            anns = [anns[n] for _, n in keyed]
        return cls(
            dataset=dataset, task=task, categories=sorted(categories, key=lambda c: c.id),
            file_name=[file_name[i] for i in order], blob=[blob[i] for i in order],
            width=[width[i] for i in order], height=[height[i] for i in order], bytes=[size[i] for i in order],
            category_id=[category_id[i] for i in order], tags=tag_lists, annotations=anns,
        )

    def __len__(self) -> int:
        return len(self.file_name)

    # --- identity -----------------------------------------------------------------------

    def _image_rows(self) -> Iterator[str]:
        for name, blob, w, h, size, cid, tags in zip(self.file_name, self.blob, self.width, self.height,
                                                    self.bytes, self.category_id, self.tags, strict=True):
            tag_json = "[" + ",".join(encode_basestring(t) for t in tags) + "]" if tags else "[]"
            yield (f'{{"blob":"{blob}","bytes":{size},"category_id":{"null" if cid is None else cid},'
                   f'"file_name":{encode_basestring(name)},"height":{h},"tags":{tag_json},"width":{w}}}')

    def canonical_chunks(self) -> Iterator[bytes]:
        """`Manifest.to_bytes()` of the same content, in pieces."""
        return canonical_chunks(annotation_rows=(canonical_json(d) for d in self.annotations),
                                categories=self.categories, dataset=self.dataset,
                                format_version=self.format_version, image_rows=self._image_rows(),
                                task=self.task, rows_per_chunk=_ROWS)

    def to_bytes(self) -> bytes:
        return b"".join(self.canonical_chunks())

    def digest(self) -> str:
        if self._digest is None:
            self._digest = chunks_digest(self.canonical_chunks())
        return self._digest

    # --- other forms --------------------------------------------------------------------

    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def to_manifest(self) -> Any:
        """The pydantic `Manifest` (constructed without re-validation: the values were checked)."""
        from kubeforge.datasets.manifest import Manifest, ManifestAnnotation, ManifestImage

        images = [ManifestImage.model_construct(file_name=n, blob=b, width=w, height=h, bytes=s, category_id=c,
                                                tags=list(t))
                  for n, b, w, h, s, c, t in zip(self.file_name, self.blob, self.width, self.height, self.bytes,
                                                 self.category_id, self.tags, strict=True)]
        anns = [ManifestAnnotation.model_construct(**{"tags": [], **d}) for d in self.annotations]
        return Manifest.model_construct(format_version=self.format_version, dataset=self.dataset,
                                        task=self.task, categories=list(self.categories), images=images,
                                        annotations=anns)

    def to_columnar(self) -> Any:
        """The `ColumnarManifest` (Arrow tables, for Parquet), its digest already known."""
        import pyarrow as pa

        from kubeforge.datasets.columnar import ANNOTATIONS_SCHEMA, IMAGES_SCHEMA, ColumnarManifest

        images = pa.table({"file_name": self.file_name, "blob": self.blob, "width": self.width,
                           "height": self.height, "bytes": self.bytes, "category_id": self.category_id,
                           "tags": self.tags}, schema=IMAGES_SCHEMA)
        a = self.annotations
        annotations = pa.table({
            "image": [d["image"] for d in a], "category_id": [d["category_id"] for d in a],
            "bbox": [d["bbox"] for d in a], "area": [d["area"] for d in a], "iscrowd": [d["iscrowd"] for d in a],
            "segmentation": [None if d["segmentation"] is None else canonical_json(d["segmentation"]) for d in a],
            "tags": [d.get("tags", []) for d in a],
        }, schema=ANNOTATIONS_SCHEMA)
        return ColumnarManifest(dataset=self.dataset, task=self.task, categories=list(self.categories),
                                images=images, annotations=annotations, format_version=self.format_version,
                                _digest=self.digest())

    def stats(self) -> Any:
        """`compute_stats` of the same content, from the lists."""
        from kubeforge.datasets.stats import stats_from

        return stats_from(
            self.categories, self.task, image_category_ids=self.category_id,
            annotations=((d["image"], d["category_id"]) for d in self.annotations),
            widths=self.width, heights=self.height, sizes=self.bytes,
        )


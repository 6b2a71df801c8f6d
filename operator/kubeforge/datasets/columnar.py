"""Columnar manifests: a version as Arrow tables, stored as Parquet, for versions of any size.

The digest does not change meaning: it is still the sha256 of the canonical JSON manifest
(`Manifest.to_bytes`). Here that JSON is never built in memory: `digest()` streams it, row
by row from the sorted columns, into the hash. So a version has one identity whether it is
stored as `manifest.json` (small versions, JSON-era versions) or as `manifest.parquet`
(large ones), the same content gives the same digest in either form, and the Parquet bytes
themselves need not be deterministic (pyarrow versions may encode them differently): they
are checked by re-hashing the canonical stream on load.

Tables (each sorted canonically, like the JSON manifest):
- images: file_name, blob (hex), width, height, bytes, category_id (null: unlabelled), tags;
- annotations: image (row index into images), category_id, bbox, area, iscrowd,
  segmentation (its canonical JSON text, or null), tags;
- categories, dataset, task: small, kept as Python values (Parquet key-value metadata).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # C-accelerated, ensure_ascii=False
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kubeforge.datasets.manifest import FORMAT_VERSION, Category, Manifest, ManifestAnnotation, ManifestImage

IMAGES_SCHEMA = pa.schema([
    ("file_name", pa.string()), ("blob", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("bytes", pa.int64()), ("category_id", pa.int32()), ("tags", pa.list_(pa.string())),
])
ANNOTATIONS_SCHEMA = pa.schema([
    ("image", pa.int64()), ("category_id", pa.int32()), ("bbox", pa.list_(pa.float64())),
    ("area", pa.float64()), ("iscrowd", pa.int32()), ("segmentation", pa.string()),
    ("tags", pa.list_(pa.string())),
])
_META_KEY = b"kubeforge.manifest"
_BATCH = 65536  # rows per chunk when streaming: bounds the Python objects alive at once
Row = tuple[str, str, int, int, int, str | None]  # file_name, sha256, size, width, height, label


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class ColumnarManifest:
    dataset: str
    task: str
    categories: list[Category]
    images: pa.Table
    annotations: pa.Table = field(default_factory=ANNOTATIONS_SCHEMA.empty_table)
    format_version: int = FORMAT_VERSION
    _digest: str | None = None

    # --- building -----------------------------------------------------------------------

    @classmethod
    def from_manifest(cls, m: Manifest) -> ColumnarManifest:
        c = m.canonical()
        cols: dict[str, list[Any]] = {name: [] for name in IMAGES_SCHEMA.names}
        for im in c.images:
            for name in IMAGES_SCHEMA.names:
                cols[name].append(getattr(im, name))
        anns: dict[str, list[Any]] = {name: [] for name in ANNOTATIONS_SCHEMA.names}
        for a in c.annotations:
            d = a.model_dump(mode="json")
            for name in ANNOTATIONS_SCHEMA.names:
                value = d.get(name, [])
                anns[name].append(_dumps(value) if name == "segmentation" and value is not None else value)
        return cls(
            dataset=c.dataset, task=c.task, categories=list(c.categories), format_version=c.format_version,
            images=pa.table(cols, schema=IMAGES_SCHEMA), annotations=pa.table(anns, schema=ANNOTATIONS_SCHEMA),
        )

    @classmethod
    def from_rows(cls, dataset: str, rows: Iterable[Row]) -> ColumnarManifest:
        """A classification version from (file_name, sha256, size, width, height, label) rows.

        Labels become categories 1..K in name order (the ImageFolder convention); None is
        unlabelled. Rows are taken in chunks into Arrow arrays, so memory is the Arrow
        columns, not a Python object per image.
        """
        batches: list[pa.RecordBatch] = []
        labels: list[str | None] = []
        chunk: list[Row] = []

        def flush() -> None:
            names, blobs, sizes, ws, hs, labs = zip(*chunk, strict=True)
            labels.extend(labs)
            batches.append(pa.record_batch([
                pa.array(names, pa.string()), pa.array(blobs, pa.string()), pa.array(ws, pa.int32()),
                pa.array(hs, pa.int32()), pa.array(sizes, pa.int64()),
            ], names=["file_name", "blob", "width", "height", "bytes"]))
            chunk.clear()

        for row in rows:
            chunk.append(row)
            if len(chunk) >= _BATCH:
                flush()
        if chunk:
            flush()
        if not batches:
            raise ValueError(f"dataset {dataset}: no images")
        table = pa.Table.from_batches(batches)
        label_arr = pa.array(labels, pa.string())
        labels.clear()
        names = sorted(set(pc.unique(label_arr).drop_null().to_pylist()))
        ids = pc.index_in(label_arr, value_set=pa.array(names, pa.string()))
        category_id = pc.add(ids, 1).cast(pa.int32())
        table = table.append_column("category_id", category_id)
        # Every image's tags empty: offsets all zero over an empty values array (no Python lists).
        empty = pa.ListArray.from_arrays(pa.array([0] * (len(table) + 1), pa.int32()), pa.array([], pa.string()))
        table = table.append_column("tags", empty)
        table = table.select(IMAGES_SCHEMA.names).cast(IMAGES_SCHEMA)
        out = cls(dataset=dataset, task="classification",
                  categories=[Category(id=i + 1, name=n) for i, n in enumerate(names)], images=table)
        out.sort_images()
        out.check()
        return out

    def sort_images(self) -> None:
        """Images by file_name (UTF-8 byte order is code point order, as Python sorts str)."""
        if self.annotations.num_rows:
            raise ValueError("sort_images: only for versions without annotations (indices would move)")
        self.images = self.images.take(pc.sort_indices(self.images, sort_keys=[("file_name", "ascending")]))
        self._digest = None

    def check(self) -> None:
        """What the pydantic models would refuse: duplicate names, bad hashes, sizes."""
        im = self.images
        if pc.count_distinct(im["file_name"]).as_py() != im.num_rows:
            raise ValueError(f"dataset {self.dataset}: duplicate file names")
        if not pc.all(pc.match_substring_regex(im["blob"], r"^[0-9a-f]{64}$")).as_py():
            raise ValueError(f"dataset {self.dataset}: a blob is not a sha256 hex digest")
        if pc.min(im["width"]).as_py() <= 0 or pc.min(im["height"]).as_py() <= 0 or pc.min(im["bytes"]).as_py() < 0:
            raise ValueError(f"dataset {self.dataset}: widths and heights must be > 0, sizes >= 0")

    # --- identity -----------------------------------------------------------------------

    def _image_rows(self) -> Iterator[str]:
        for batch in self.images.to_batches(_BATCH):
            cols = [batch.column(n).to_pylist() for n in IMAGES_SCHEMA.names]
            for name, blob, w, h, size, cid, tags in zip(*cols, strict=True):
                tag_json = "[" + ",".join(encode_basestring(t) for t in sorted(set(tags or []))) + "]"
                yield (f'{{"blob":"{blob}","bytes":{size},"category_id":{"null" if cid is None else cid},'
                       f'"file_name":{encode_basestring(name)},"height":{h},"tags":{tag_json},"width":{w}}}')

    def _annotation_rows(self) -> Iterator[str]:
        for batch in self.annotations.to_batches(_BATCH):
            cols = [batch.column(n).to_pylist() for n in ANNOTATIONS_SCHEMA.names]
            for image, cid, bbox, area, iscrowd, seg, tags in zip(*cols, strict=True):
                d: dict[str, Any] = {"image": image, "category_id": cid, "bbox": bbox, "area": area,
                                     "iscrowd": iscrowd, "segmentation": None if seg is None else json.loads(seg)}
                if tags:
                    d["tags"] = sorted(set(tags))
                yield _dumps(d)

    def canonical_chunks(self) -> Iterator[bytes]:
        """`Manifest.to_bytes()` of the same content, in pieces (keys in sorted order)."""
        yield b'{"annotations":['
        yield from _joined(self._annotation_rows())
        cats = [c.model_dump(mode="json") for c in sorted(self.categories, key=lambda c: c.id)]
        yield (f'],"categories":{_dumps(cats)},"dataset":{encode_basestring(self.dataset)},'
               f'"format_version":{self.format_version},"images":[').encode()
        yield from _joined(self._image_rows())
        yield f'],"task":{encode_basestring(self.task)}}}'.encode()

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            for chunk in self.canonical_chunks():
                h.update(chunk)
            self._digest = h.hexdigest()
        return self._digest

    # --- use ----------------------------------------------------------------------------

    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def blobs(self) -> list[str]:
        return self.images["blob"].to_pylist()

    def to_manifest(self) -> Manifest:
        """The pydantic form (one object per image): for consumers that need it, on small versions."""
        anns = [ManifestAnnotation(**{k: v for k, v in a.items() if k != "segmentation"},
                                   segmentation=None if a["segmentation"] is None else json.loads(a["segmentation"]))
                for a in self.annotations.to_pylist()]
        return Manifest(format_version=self.format_version, dataset=self.dataset, task=self.task,  # type: ignore[arg-type]
                        categories=self.categories, images=[ManifestImage(**r) for r in self.images.to_pylist()],
                        annotations=anns)

    # --- storage ------------------------------------------------------------------------

    def _meta(self) -> dict[bytes, bytes]:
        meta = {"format_version": self.format_version, "dataset": self.dataset, "task": self.task,
                "categories": [c.model_dump(mode="json") for c in self.categories]}
        return {_META_KEY: _dumps(meta).encode()}

    def images_parquet(self) -> bytes:
        return _parquet(self.images.replace_schema_metadata(self._meta()))

    def annotations_parquet(self) -> bytes:
        return _parquet(self.annotations)

    @classmethod
    def from_parquet(cls, images: bytes, annotations: bytes | None) -> ColumnarManifest:
        table = pq.read_table(pa.BufferReader(images))
        raw = (table.schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise ValueError("not a Kubeforge manifest (no kubeforge.manifest metadata)")
        meta = json.loads(raw)
        anns = (pq.read_table(pa.BufferReader(annotations)) if annotations is not None
                else ANNOTATIONS_SCHEMA.empty_table())
        return cls(dataset=meta["dataset"], task=meta["task"], format_version=meta["format_version"],
                   categories=[Category(**c) for c in meta["categories"]],
                   images=table.replace_schema_metadata(None).cast(IMAGES_SCHEMA),
                   annotations=anns.replace_schema_metadata(None).cast(ANNOTATIONS_SCHEMA))


def _joined(rows: Iterator[str]) -> Iterator[bytes]:
    """Comma-joined rows, encoded a chunk at a time."""
    first = True
    buf: list[str] = []
    for row in rows:
        if not first:
            buf.append(",")
        buf.append(row)
        first = False
        if len(buf) >= 2 * _BATCH:
            yield "".join(buf).encode()
            buf.clear()
    if buf:
        yield "".join(buf).encode()


def _parquet(table: pa.Table) -> bytes:
    # Fixed settings so a rewrite of the same table gives the same bytes with this pyarrow;
    # the digest does not depend on them (see the module doc).
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=3, use_dictionary=["category_id"],
                   write_statistics=False, store_schema=True)
    return sink.getvalue()


def blob_column(images_parquet: bytes) -> list[str]:
    """Only the blob column: what gc's writer guard needs, without the rest of the manifest."""
    return pq.read_table(pa.BufferReader(images_parquet), columns=["blob"])["blob"].to_pylist()

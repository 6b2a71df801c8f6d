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
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kubeforge.datasets.manifest import (
    FORMAT_VERSION,
    Category,
    Manifest,
    ManifestAnnotation,
    ManifestImage,
    canonical_chunks,
    canonical_json,
    chunks_digest,
)

# pyarrow.compute (~0.07 s to import) is imported by the functions that compute: writing and
# reading a Parquet manifest, and hashing it, need none of it.
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


def pylist(arr: Any) -> list[Any]:
    """`arr.to_pylist()`, about 10x faster for strings and integers without nulls (through numpy:
    an object array of str, or machine integers, `tolist()` to Python values)."""
    if arr.null_count == 0 and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
                                or pa.types.is_integer(arr.type)):
        return arr.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
    return arr.to_pylist()  # type: ignore[no-any-return]


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
                anns[name].append(canonical_json(value) if name == "segmentation" and value is not None else value)
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
        import pyarrow.compute as pc

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
        import pyarrow.compute as pc

        if self.annotations.num_rows:
            raise ValueError("sort_images: only for versions without annotations (indices would move)")
        self.images = self.images.take(pc.sort_indices(self.images, sort_keys=[("file_name", "ascending")]))
        self._digest = None

    def check(self) -> None:
        """What the pydantic models would refuse: duplicate names, bad hashes, sizes."""
        import pyarrow.compute as pc

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
            cols = [pylist(batch.column(n)) for n in IMAGES_SCHEMA.names]
            for name, blob, w, h, size, cid, tags in zip(*cols, strict=True):
                tag_json = "[" + ",".join(encode_basestring(t) for t in sorted(set(tags or []))) + "]"
                yield (f'{{"blob":"{blob}","bytes":{size},"category_id":{"null" if cid is None else cid},'
                       f'"file_name":{encode_basestring(name)},"height":{h},"tags":{tag_json},"width":{w}}}')

    def _annotation_rows(self) -> Iterator[str]:
        for batch in self.annotations.to_batches(_BATCH):
            cols = [pylist(batch.column(n)) for n in ANNOTATIONS_SCHEMA.names]
            for image, cid, bbox, area, iscrowd, seg, tags in zip(*cols, strict=True):
                d: dict[str, Any] = {"image": image, "category_id": cid, "bbox": bbox, "area": area,
                                     "iscrowd": iscrowd, "segmentation": None if seg is None else json.loads(seg)}
                if tags:
                    d["tags"] = sorted(set(tags))
                yield canonical_json(d)

    def canonical_chunks(self) -> Iterator[bytes]:
        """`Manifest.to_bytes()` of the same content, in pieces (keys in sorted order)."""
        return canonical_chunks(annotation_rows=self._annotation_rows(),
                                categories=sorted(self.categories, key=lambda c: c.id), dataset=self.dataset,
                                format_version=self.format_version, image_rows=self._image_rows(),
                                task=self.task, rows_per_chunk=_BATCH)

    def digest(self) -> str:
        if self._digest is None:
            self._digest = chunks_digest(self.canonical_chunks())
        return self._digest

    # --- use ----------------------------------------------------------------------------

    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def blobs(self) -> list[str]:
        return pylist(self.images["blob"])

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
        return {_META_KEY: canonical_json(meta).encode()}

    def images_parquet(self) -> bytes:
        return _parquet(self.images.replace_schema_metadata(self._meta()))

    def annotations_parquet(self) -> bytes:
        return _parquet(self.annotations)

    @classmethod
    def from_parquet(cls, images: bytes, annotations: bytes | None) -> ColumnarManifest:
        table = pq.ParquetFile(pa.BufferReader(images)).read()  # read_table would import pyarrow.dataset
        raw = (table.schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise ValueError("not a Kubeforge manifest (no kubeforge.manifest metadata)")
        meta = json.loads(raw)
        anns = (pq.ParquetFile(pa.BufferReader(annotations)).read() if annotations is not None
                else ANNOTATIONS_SCHEMA.empty_table())
        return cls(dataset=meta["dataset"], task=meta["task"], format_version=meta["format_version"],
                   categories=[Category(**c) for c in meta["categories"]],
                   images=table.replace_schema_metadata(None).cast(IMAGES_SCHEMA),
                   annotations=anns.replace_schema_metadata(None).cast(ANNOTATIONS_SCHEMA))


def _parquet(table: pa.Table) -> bytes:
    # Fixed settings so a rewrite of the same table gives the same bytes with this pyarrow;
    # the digest does not depend on them (see the module doc).
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=3, use_dictionary=["category_id"],
                   write_statistics=False, store_schema=True)
    return sink.getvalue()


def blob_column(images_parquet: bytes) -> list[str]:
    """Only the blob column: what gc's writer guard needs, without the rest of the manifest."""
    return pylist(pq.ParquetFile(pa.BufferReader(images_parquet)).read(columns=["blob"])["blob"])


# --- streaming: versions larger than memory -------------------------------------------------

_RUN_ROWS = 1 << 16  # rows per sorted run on disk (~8 MB of Arrow columns for typical names)
_PY_ROWS = 1 << 13  # rows held as Python tuples at once, before they become Arrow arrays
_MERGE_ROWS = 2048  # rows a run hands the merge at a time (as Python values: this times the runs)
_RUN_SCHEMA = pa.schema([("file_name", pa.string()), ("blob", pa.string()), ("width", pa.int32()),
                         ("height", pa.int32()), ("bytes", pa.int64()), ("label", pa.string())])


def write_rows(store: Any, dataset: str, rows: Iterable[Row], *, run_rows: int = _RUN_ROWS,
               tmpdir: str | None = None) -> tuple[str, bool]:
    """Store a classification version from rows in any order, in bounded memory; (digest, created).

    The same version as `write_version(store, ColumnarManifest.from_rows(dataset, rows))` (same
    digest, same Parquet columns, same stats), without the whole table in memory: rows become
    Arrow arrays `_PY_ROWS` at a time, runs of `run_rows` are sorted by file name and written to
    temporary Arrow files, and a merge of the runs streams the sorted rows into the digest (the
    canonical JSON, row by row), the Parquet file (a row group at a time, on disk) and the stats.
    Memory is a run plus a batch per run, whatever the number of images. The caller has stored
    the blobs (as for `write_version`).
    """
    import heapq
    import tempfile

    from kubeforge.datasets.versions import parquet_keys, version_exists
    from kubeforge.store import layout

    with tempfile.TemporaryDirectory(prefix="kubeforge-rows-", dir=tmpdir) as tmp:
        runs, labels = _sorted_runs(rows, run_rows, tmp)
        if not runs:
            raise ValueError(f"dataset {dataset}: no images")
        names = sorted(labels)
        ids = {name: i + 1 for i, name in enumerate(names)}
        categories = [Category(id=i + 1, name=n) for i, n in enumerate(names)]
        shell = ColumnarManifest(dataset=dataset, task="classification", categories=categories,
                                 images=IMAGES_SCHEMA.empty_table())
        schema = IMAGES_SCHEMA.with_metadata(shell._meta())
        out_path = f"{tmp}/manifest.parquet"
        digest = hashlib.sha256()
        head = list(shell.canonical_chunks())  # [annotations, categories..images:[, ..., task]
        digest.update(b"".join(head[:-1]))  # everything before the image rows (no rows: no chunks between)
        stats = _StreamStats(len(names))
        merged = heapq.merge(*(_run_rows(path) for path in runs), key=_first)
        writer = pq.ParquetWriter(out_path, schema, compression="zstd", compression_level=3,
                                  use_dictionary=["category_id"], write_statistics=False, store_schema=True)
        try:
            previous: str | None = None
            first = True
            batch: list[tuple[str, str, int, int, int, str | None]] = []

            def flush() -> None:
                nonlocal first
                cols = list(zip(*batch, strict=True))
                cids = [None if lab is None else ids[lab] for lab in cols[5]]
                text = []
                for (name, blob, w, h, size, _), cid in zip(batch, cids, strict=True):
                    text.append(f'{{"blob":"{blob}","bytes":{size},"category_id":{"null" if cid is None else cid},'
                                f'"file_name":{encode_basestring(name)},"height":{h},"tags":[],"width":{w}}}')
                digest.update((("" if first else ",") + ",".join(text)).encode())
                first = False
                arrays = [pa.array(cols[0], pa.string()), pa.array(cols[1], pa.string()),
                          pa.array(cols[2], pa.int32()), pa.array(cols[3], pa.int32()),
                          pa.array(cols[4], pa.int64()), pa.array(cids, pa.int32()),
                          pa.ListArray.from_arrays(pa.array([0] * (len(batch) + 1), pa.int32()),
                                                   pa.array([], pa.string()))]
                rb = pa.record_batch(arrays, schema=IMAGES_SCHEMA)
                _check_batch(dataset, rb)
                stats.add(rb)
                writer.write_batch(rb)
                batch.clear()

            for row in merged:
                if row[0] == previous:
                    raise ValueError(f"dataset {dataset}: duplicate file names ({row[0]!r})")
                previous = row[0]
                batch.append(row)
                if len(batch) >= _PY_ROWS:
                    flush()
            if batch:
                flush()
        finally:
            writer.close()
        digest.update(head[-1])
        hexdigest = digest.hexdigest()
        created = not version_exists(store, dataset, hexdigest)
        if created:
            key = parquet_keys(dataset, hexdigest)[0]
            if hasattr(store, "pending"):  # a GuardedStore: its manifest write commits the blob list
                with open(out_path, "rb") as fh:
                    store.put_bytes(key, fh.read())
            else:
                store.put_file(key, Path(out_path))
        stats_key = layout.dataset_stats_key(dataset, hexdigest)
        if created or not store.exists(stats_key):
            store.put_json(stats_key, stats.result(names).dump())
    return hexdigest, created


def _sorted_runs(rows: Iterable[Row], run_rows: int, tmp: str) -> tuple[list[str], set[str]]:
    """Rows into Arrow files of up to `run_rows`, each sorted by file name; and the set of labels."""
    import pyarrow.compute as pc

    runs: list[str] = []
    labels: set[str] = set()
    batches: list[pa.RecordBatch] = []
    pending = 0
    chunk: list[Row] = []

    def to_batch() -> None:
        nonlocal pending
        names, blobs, sizes, ws, hs, labs = zip(*chunk, strict=True)
        lab_arr = pa.array(labs, pa.string())
        labels.update(pc.unique(lab_arr).drop_null().to_pylist())
        batches.append(pa.record_batch([
            pa.array(names, pa.string()), pa.array(blobs, pa.string()), pa.array(ws, pa.int32()),
            pa.array(hs, pa.int32()), pa.array(sizes, pa.int64()), lab_arr], schema=_RUN_SCHEMA))
        pending += len(chunk)
        chunk.clear()

    def to_run() -> None:
        nonlocal pending
        table = pa.Table.from_batches(batches, schema=_RUN_SCHEMA)
        batches.clear()
        pending = 0
        table = table.take(pc.sort_indices(table, sort_keys=[("file_name", "ascending")]))
        path = f"{tmp}/run{len(runs):05d}.arrow"
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, _RUN_SCHEMA) as out:
            for rb in table.to_batches(max_chunksize=_MERGE_ROWS):
                out.write_batch(rb)
        runs.append(path)

    for row in rows:
        chunk.append(row)
        if len(chunk) >= _PY_ROWS:
            to_batch()
            if pending >= run_rows:
                to_run()
    if chunk:
        to_batch()
    if batches:
        to_run()
    return runs, labels


def _run_rows(path: str) -> Iterator[tuple[str, str, int, int, int, str | None]]:
    """A run's rows in order, a batch at a time (read, not memory-mapped: mapped pages stay in the RSS)."""
    with pa.OSFile(path) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            rb = reader.get_batch(i)
            yield from zip(*(pylist(rb.column(n)) for n in _RUN_SCHEMA.names), strict=True)


def _check_batch(dataset: str, rb: pa.RecordBatch) -> None:
    """`ColumnarManifest.check`, a batch at a time (duplicates are caught by the merge)."""
    import pyarrow.compute as pc

    if not pc.all(pc.match_substring_regex(rb.column("blob"), r"^[0-9a-f]{64}$")).as_py():
        raise ValueError(f"dataset {dataset}: a blob is not a sha256 hex digest")
    if (pc.min(rb.column("width")).as_py() <= 0 or pc.min(rb.column("height")).as_py() <= 0
            or pc.min(rb.column("bytes")).as_py() < 0):
        raise ValueError(f"dataset {dataset}: widths and heights must be > 0, sizes >= 0")


class _StreamStats:
    """`columnar_stats` of a classification version, accumulated a batch at a time."""

    def __init__(self, classes: int) -> None:
        self.counts = [0] * (classes + 1)
        self.n = self.total = self.sum_w = self.sum_h = 0
        self.min_w = self.min_h = 2**31
        self.max_w = self.max_h = 0

    def add(self, rb: pa.RecordBatch) -> None:
        import pyarrow.compute as pc

        for row in pc.value_counts(rb.column("category_id").drop_null()).to_pylist():
            self.counts[row["values"]] += row["counts"]
        w, h = rb.column("width"), rb.column("height")
        self.n += rb.num_rows
        self.total += pc.sum(rb.column("bytes")).as_py() or 0
        self.sum_w += pc.sum(w).as_py() or 0
        self.sum_h += pc.sum(h).as_py() or 0
        self.min_w, self.max_w = min(self.min_w, pc.min(w).as_py()), max(self.max_w, pc.max(w).as_py())
        self.min_h, self.max_h = min(self.min_h, pc.min(h).as_py()), max(self.max_h, pc.max(h).as_py())

    def result(self, names: list[str]) -> Any:
        from kubeforge.api.dataset_version import DatasetStats, ImageSizeStats

        per_class = {name: self.counts[i + 1] for i, name in enumerate(names)}
        sizes = ImageSizeStats(min_width=self.min_w, max_width=self.max_w, min_height=self.min_h,
                               max_height=self.max_h, mean_width=round(self.sum_w / self.n, 2),
                               mean_height=round(self.sum_h / self.n, 2)) if self.n else None
        return DatasetStats(images=self.n, annotations=sum(per_class.values()), classes=len(names),
                            objects_per_class=per_class, images_per_class=dict(per_class), image_sizes=sizes,
                            total_bytes=self.total)


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]

"""What a source's files were at the last import, so unchanged files are not read again.

Per source URI, one small Parquet object in the store, `.cache/sources/<sha256(uri)>.parquet`
(outside `datasets/` and `blobs/`: no version lists it, gc ignores it): path, stamp, blob, width, height.
The stamp is what proves a file unchanged without reading it:
- a local file: `size:mtime_ns` (as git and DVC do: a rewrite that keeps both size and
  mtime to the nanosecond is not noticed);
- an S3 object: `size:ETag` from the listing (the ETag changes with the content).

Two rules keep it safe:
- racy files: a local file modified less than `RACY_NS` before the import began is not
  recorded (filesystem clocks are coarse, a rewrite within the same tick could keep its
  mtime), so it is read again next time;
- a cache is used only while the version it was written with still exists: that version
  references every blob in the cache, so gc cannot have deleted them (see integrity).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from kubeforge.store.base import Store

CACHE_PREFIX = ".cache/sources/"
RACY_NS = 100_000_000  # 100 ms: far above any filesystem timestamp granularity
_SCHEMA = pa.schema([("path", pa.string()), ("stamp", pa.string()), ("blob", pa.string()),
                     ("width", pa.int32()), ("height", pa.int32()), ("bytes", pa.int64())])


@dataclass(frozen=True)
class Entry:
    stamp: str
    blob: str
    width: int
    height: int
    bytes: int


def cache_key(uri: str) -> str:
    return f"{CACHE_PREFIX}{hashlib.sha256(uri.encode()).hexdigest()}.parquet"


def load_cache(store: Store, uri: str) -> dict[str, Entry]:
    """path -> Entry for `uri`; empty when there is none, it is unreadable, or its version is gone."""
    from kubeforge.datasets.versions import version_exists

    try:
        table = pq.read_table(pa.BufferReader(store.get_bytes(cache_key(uri))))
        meta = json.loads((table.schema.metadata or {})[b"kubeforge.cache"])
        if meta.get("uri") != uri or not version_exists(store, meta["dataset"], meta["digest"]):
            return {}
    except (KeyError, ValueError, OSError, pa.ArrowException):
        return {}  # a cache is only an optimisation: without one, everything is read
    cols = [table[n].to_pylist() for n in _SCHEMA.names]
    return {p: Entry(*rest) for p, *rest in zip(*cols, strict=True)}


def save_cache(store: Store, uri: str, dataset: str, digest: str, entries: dict[str, Entry]) -> None:
    """Record `entries` (files of version `dataset@digest`) as `uri`'s cache, replacing the last one."""
    paths = sorted(entries)
    cols = {"path": paths}
    for name in ("stamp", "blob", "width", "height", "bytes"):
        cols[name] = [getattr(entries[p], name) for p in paths]
    table = pa.table(cols, schema=_SCHEMA).replace_schema_metadata(
        {b"kubeforge.cache": json.dumps({"uri": uri, "dataset": dataset, "digest": digest}).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    store.put_bytes(cache_key(uri), sink.getvalue())


def local_stamp(size: int, mtime_ns: int, started_ns: int) -> str | None:
    """The stamp of a local file, or None when it is too recent to trust (see the module doc)."""
    if mtime_ns >= started_ns - RACY_NS:
        return None
    return f"{size}:{mtime_ns}"

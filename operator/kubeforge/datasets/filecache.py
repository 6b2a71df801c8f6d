"""What a source's files were at the last import, so unchanged files are not read again.

Per source URI, one small object in the store, `.cache/sources/<sha256(uri)>.tsv.z` (outside
`datasets/` and `blobs/`: no version lists it, gc ignores it): zlib-compressed text, a JSON header
line, then one line per file: path, stamp, blob, width, height, bytes, tab-separated (a path
holding a tab, newline, backslash or leading quote is written as a JSON string). Plain text, not
Parquet: reading it needs no pyarrow (about 0.2 s of start-up a re-import would pay), and it
loads faster than Parquet's columns turn into Python values. (Caches of older releases,
`<sha>.parquet`, are not read: the first import after an upgrade reads every file once.)
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
import json
import zlib
from dataclasses import dataclass

from kubeforge.store.base import Store

CACHE_PREFIX = ".cache/sources/"
RACY_NS = 100_000_000  # 100 ms: far above any filesystem timestamp granularity
_FORMAT = "kubeforge.cache/2"


@dataclass(frozen=True, slots=True)  # one per file: no per-instance dict
class Entry:
    stamp: str
    blob: str
    width: int
    height: int
    bytes: int


def cache_key(uri: str) -> str:
    return f"{CACHE_PREFIX}{hashlib.sha256(uri.encode()).hexdigest()}.tsv.z"


def _quoted(path: str) -> bool:
    return "\t" in path or "\n" in path or "\r" in path or "\\" in path or path.startswith('"')


def load_cache(store: Store, uri: str) -> dict[str, Entry]:
    """path -> Entry for `uri`; empty when there is none, it is unreadable, or its version is gone."""
    from kubeforge.datasets.versions import version_exists

    try:
        lines = zlib.decompress(store.get_bytes(cache_key(uri))).decode().split("\n")
        meta = json.loads(lines[0])
        if meta.get("format") != _FORMAT or meta.get("uri") != uri:
            return {}
        if not version_exists(store, meta["dataset"], meta["digest"]):
            return {}
        out: dict[str, Entry] = {}
        for line in lines[1:]:
            if not line:
                continue
            if line.startswith('"'):
                path, end = json.JSONDecoder().raw_decode(line)
                rest = line[end + 1:].split("\t")
            else:
                path, *rest = line.split("\t")
            stamp, blob, width, height, size = rest
            out[path] = Entry(stamp, blob, int(width), int(height), int(size))
        return out
    except (KeyError, ValueError, OSError, zlib.error):
        return {}  # a cache is only an optimisation: without one, everything is read


def save_cache(store: Store, uri: str, dataset: str, digest: str, entries: dict[str, Entry]) -> None:
    """Record `entries` (files of version `dataset@digest`) as `uri`'s cache, replacing the last one."""
    lines = [json.dumps({"format": _FORMAT, "uri": uri, "dataset": dataset, "digest": digest})]
    for path in sorted(entries):
        e = entries[path]
        name = json.dumps(path, ensure_ascii=False) if _quoted(path) else path
        lines.append(f"{name}\t{e.stamp}\t{e.blob}\t{e.width}\t{e.height}\t{e.bytes}")
    store.put_bytes(cache_key(uri), zlib.compress("\n".join(lines).encode(), 1))


def local_stamp(size: int, mtime_ns: int, started_ns: int) -> str | None:
    """The stamp of a local file, or None when it is too recent to trust (see the module doc)."""
    if mtime_ns >= started_ns - RACY_NS:
        return None
    return f"{size}:{mtime_ns}"

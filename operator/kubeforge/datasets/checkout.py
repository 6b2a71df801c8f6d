"""Check a version out into a working folder, in place, writing only the files that differ.

This is `dvc checkout` for Kubeforge: the folder becomes exactly the version's files at their
recorded paths (`file_name`; for ImageFolder that is the whole dataset, for annotated formats
the images only: use `export` for a complete dataset in a format). Files the version does not
name are removed. Which files already match is known without reading them from the import
cache (`filecache`) of that folder: same path, size, mtime_ns and blob. Written files are
fetched from their blobs, checked against their hash, and renamed into place.

A non-empty folder that Kubeforge never imported or checked out is refused unless `force`:
checkout deletes files, and a stray folder must not lose its content by a typo.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kubeforge.atomic_file import write_then_replace
from kubeforge.datasets.filecache import Entry, load_cache, local_stamp, save_cache
from kubeforge.datasets.sources import LocalSource
from kubeforge.store import layout
from kubeforge.store.base import Store


class CheckoutError(ValueError):
    """The checkout cannot be done as asked; the message says why."""


@dataclass
class CheckoutResult:
    folder: str
    files: int
    written: int
    removed: int


def checkout_version(store: Store, dataset: str, digest: str, folder: Path | str, *,
                     workers: int | None = None, force: bool = False) -> CheckoutResult:
    """`workers` None: 4 threads from a local store (disk and hashing bound), 16 from a remote one
    (each request waits on the network)."""
    if workers is None:
        from kubeforge.store.local import LocalStore

        workers = 4 if isinstance(getattr(store, "inner", store), LocalStore) else 16
    names, blobs = version_files(store, dataset, digest)
    root = Path(folder).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    source = LocalSource(root)
    cache = load_cache(store, source.uri)
    present = source.list()
    if present and not cache and not force:
        raise CheckoutError(f"{root}: not empty and not a folder Kubeforge imported or checked out "
                            "(its files would be replaced or removed); pass --force to check out anyway")
    started = time.time_ns()
    base = str(root)

    def unchanged(i: int) -> Entry | None:
        """The cache entry proving file i already holds its blob (same path, blob, size, mtime)."""
        hit = cache.get(names[i])
        if hit is None or hit.blob != blobs[i]:
            return None
        try:
            st = os.stat(f"{base}/{names[i]}")  # a string path: pathlib costs more than the stat
        except OSError:
            return None
        return hit if local_stamp(st.st_size, st.st_mtime_ns, started) == hit.stamp else None

    def write(i: int) -> None:
        name, blob = names[i], blobs[i]
        data = store.get_blob(blob)
        if hashlib.sha256(data).hexdigest() != blob:
            raise CheckoutError(f"{name}: blob {blob} in the store {store.uri} is corrupted (its hash differs)")
        _write_atomic(f"{base}/{name}", data)

    # One stat per file decides; only the differing files are fetched and written (in threads:
    # a remote store's reads wait on the network).
    kept = [unchanged(i) for i in range(len(names))] if cache else [None] * len(names)
    todo = [i for i, e in enumerate(kept) if e is None]
    for parent in sorted({os.path.dirname(f"{base}/{names[i]}") for i in todo}):
        os.makedirs(parent, exist_ok=True)  # once per folder, not once per file
    if len(todo) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(write, todo))
    else:
        for i in todo:
            write(i)
    done = [(names[i], kept[i], kept[i] is None) for i in range(len(names))]
    wanted = set(names)
    removed = 0
    for rel in present:
        if rel not in wanted:
            (root / rel).unlink(missing_ok=True)
            removed += 1
    _prune_empty_dirs(root)
    # Files just written are too recent to stamp (filecache's racy rule): read once next time.
    entries = {name: e for name, e, _ in done if e is not None}
    save_cache(store, source.uri, dataset, digest, entries)
    return CheckoutResult(str(root), len(names), sum(w for _, _, w in done), removed)


def version_files(store: Store, dataset: str, digest: str) -> tuple[list[str], list[str]]:
    """(file names, blobs) of a version, verified against its digest: a JSON manifest is read as
    plain JSON (no object per image, no pyarrow), a Parquet one as columns."""
    from kubeforge.datasets.versions import CorruptManifestError, load_columnar

    key = layout.dataset_manifest_key(dataset, digest)
    try:
        data = store.get_bytes(key)
    except KeyError:
        from kubeforge.datasets.columnar import pylist

        version = load_columnar(store, dataset, digest)
        return pylist(version.images["file_name"]), pylist(version.images["blob"])
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise CorruptManifestError(f"{store.url(key)}: corrupted manifest: its sha256 is {actual}, expected {digest}")
    try:
        doc = json.loads(data)
        images = doc["images"]
        names, blobs = [im["file_name"] for im in images], [im["blob"] for im in images]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptManifestError(f"{store.url(key)}: not a valid manifest ({exc})") from None
    if doc.get("dataset") != dataset:
        raise CorruptManifestError(f"{store.url(key)}: manifest says dataset {doc.get('dataset')!r}, "
                                   f"expected {dataset!r}")
    return names, blobs


def _write_atomic(path: str, data: bytes) -> None:
    """`data` to `path`: written under a temporary name beside it, then renamed over it (a reader
    never sees part of a file). `atomic_write_bytes` without its per-file mkdir, mkstemp and chmod:
    the folders exist, and the name is unique to this process and thread."""
    head, tail = os.path.split(path)
    write_then_replace(f"{head}/.tmp-{os.getpid()}-{threading.get_ident()}-{tail[-64:]}", path, data)


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        if Path(dirpath) != root and not dirnames and not filenames:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass  # not empty after all (a hidden file appeared): leave it

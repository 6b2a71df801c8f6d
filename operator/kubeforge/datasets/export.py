"""Export a stored dataset version in any supported format, to a local folder or an S3 prefix.

The export is built in a hidden temporary folder beside the destination (`.tmp-export-*`, which
no source lists), images fetched from their blobs in parallel and checked against their hash.
Then a local export is renamed into place in one step; an S3 export uploads every file and
writes `.kubeforge-export.json` last, so a prefix without that marker is an unfinished export.
A failure removes the temporary folder: no half-written folder is ever presented as complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from kubeforge.datasets.formats.registry import EXPORT_FORMATS, writer
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.versions import expand_digest, load_manifest
from kubeforge.store.base import Store

MARKER = ".kubeforge-export.json"
class _Writers(Mapping[str, Callable[[Manifest, ExportTree], None]]):
    """format -> writer, each writer's module imported on first use (a checkout needs none of them)."""

    def __getitem__(self, fmt: str) -> Callable[[Manifest, ExportTree], None]:
        if fmt not in EXPORT_FORMATS:
            raise KeyError(fmt)
        return writer(fmt)  # type: ignore[no-any-return]

    def __contains__(self, fmt: object) -> bool:
        return fmt in EXPORT_FORMATS

    def __iter__(self) -> Iterator[str]:
        return iter(EXPORT_FORMATS)

    def __len__(self) -> int:
        return len(EXPORT_FORMATS)


WRITERS = _Writers()

__all__ = ["EXPORT_FORMATS", "ExportError", "ExportResult", "export_manifest", "export_version"]


@dataclass
class ExportResult:
    location: str
    images: int
    files: int
    losses: dict[str, int] = field(default_factory=dict)  # what the format could not hold -> count


def export_version(
    store: Store, dataset: str, digest: str, fmt: str, out: str | Path, *, workers: int = 8
) -> ExportResult:
    """Write version `dataset@digest` (a unique prefix is enough) as `fmt` to `out` (a folder or s3://)."""
    digest = expand_digest(store, dataset, digest)  # UnknownVersionError (a ValueError) when it names none
    try:
        manifest = load_manifest(store, dataset, digest)
    except KeyError:
        raise ExportError(f"version {dataset}@{digest}: not in the store {store.uri}") from None
    return export_manifest(store, manifest, fmt, out, workers=workers, digest=digest)


def export_manifest(
    store: Store, manifest: Manifest, fmt: str, out: str | Path, *, workers: int = 8, digest: str | None = None
) -> ExportResult:
    if fmt not in WRITERS:
        raise ExportError(f"format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    target = str(out)
    s3 = urlparse(target).scheme == "s3"
    if s3:
        dest = _s3_destination(target)
        parent = Path(tempfile.gettempdir())
    else:
        local = Path(target).expanduser().resolve()
        if local.exists() and (not local.is_dir() or any(local.iterdir())):
            raise ExportError(f"{local}: already exists and is not an empty folder; export into a new folder")
        local.parent.mkdir(parents=True, exist_ok=True)
        parent = local.parent
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=parent))
    try:
        tree = ExportTree(tmp)
        WRITERS[fmt](manifest, tree)
        _fetch_images(store, tree, workers)
        info = {"dataset": manifest.dataset, "digest": digest or manifest.digest(), "format": fmt,
                "images": len(tree.images), "losses": tree.losses}
        files = sum(1 for p in tmp.rglob("*") if p.is_file())
        if s3:
            _upload(dest, tmp, info, workers)
            location = target
        else:
            (tmp / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
            if local.exists():
                local.rmdir()  # empty (checked above); rename cannot replace a folder
            os.rename(tmp, local)
            location = str(local)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(location=location, images=len(tree.images), files=files, losses=tree.losses)


def _fetch_images(store: Store, tree: ExportTree, workers: int) -> None:
    def fetch(item: tuple[str, str]) -> None:
        rel, blob = item
        try:
            data = store.get_blob(blob)
        except KeyError:
            raise ExportError(f"{rel}: blob {blob} is missing from the store {store.uri}") from None
        if hashlib.sha256(data).hexdigest() != blob:
            raise ExportError(f"{rel}: blob {blob} in the store {store.uri} is corrupted (its hash differs)")
        path = tree.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(fetch, sorted(tree.images.items())):
            pass


def _s3_destination(uri: str) -> Store:
    from kubeforge.store.s3 import S3Store

    dest = S3Store.from_uri(uri.rstrip("/"))
    dest.check()
    if next(iter(dest.list("")), None) is not None:
        raise ExportError(f"{uri}: the prefix is not empty; export into a new prefix")
    return dest


def _upload(dest: Store, root: Path, info: dict[str, object], workers: int) -> None:
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(lambda p: dest.put_file(p.relative_to(root).as_posix(), p), paths):
            pass
    dest.put_bytes(MARKER, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())  # last: complete

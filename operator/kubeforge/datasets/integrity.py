"""Integrity: verify a version's blobs, and collect the blobs no version needs, safely.

Garbage collection must never delete a blob a version needs, even while another version is
being written: a writer uploads blobs first and the manifest that names them last, so for a
while its blobs are referenced by nothing. The protocol (works on any strongly consistent
store: a local directory, S3):

writer (`PendingWrite`, used through `GuardedStore` by the dataset-version step and import)
  1. lists the sweep markers `datasets/.gc/*.json` (S0), writes its pending marker
     `datasets/.pending/<id>.json`, uploads (or reuses) blobs;
  2. before the manifest: rewrites its marker listing every blob the manifest names, lists
     the sweeps again (S1); if a sweep overlapped its life (new since S0, or unfinished in S0)
     it waits for it to finish, then checks every blob still exists; a missing one fails the
     write, naming the blob: nothing half-valid becomes a version;
  3. writes the manifest, then deletes its marker.
gc (`collect_garbage`)
  1. lists the blobs with their ages; 2. writes its sweep marker; 3. *then* lists every
  manifest and pending marker; 4. deletes blobs referenced by neither and older than the
  grace period; 5. marks the sweep finished.
Why it holds: if gc deletes a blob a writer needs, gc read the pending markers (3) before the
writer wrote its final marker (2), so the sweep marker (2 of gc) existed before the writer's
second listing, and the writer waits and re-checks. Blobs a writer uploaded after gc listed
blobs (1) are never candidates; those uploaded before are young (grace, default one hour).
A crashed writer's marker stops protecting its blobs after `pending_ttl`; a crashed gc's
sweep stops being waited for after `sweep_ttl`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.versions import PARQUET_MANIFEST, CorruptManifestError, is_manifest_key, load_columnar
from kubeforge.store import layout
from kubeforge.store.base import Store, StoreError

PENDING_PREFIX = "datasets/.pending/"
SWEEP_PREFIX = "datasets/.gc/"
BLOB_PREFIX = "blobs/sha256/"
DEFAULT_GRACE_S = 3600.0
DEFAULT_PENDING_TTL_S = 24 * 3600.0
DEFAULT_SWEEP_TTL_S = 600.0


class IntegrityError(RuntimeError):
    """A write lost blobs to a concurrent gc, or gc cannot tell what versions need."""


# --- verify ------------------------------------------------------------------------------


@dataclass
class BlobProblem:
    blob: str
    files: list[str]  # the manifest's file names that use this blob
    problem: str  # "missing" or "altered: its sha256 is ..."


@dataclass
class VerifyReport:
    version: str  # dataset@digest
    images: int
    blobs: int
    problems: list[BlobProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_version(store: Store, dataset: str, digest: str, *, workers: int = 8) -> VerifyReport:
    """Re-hash every blob the version names. The manifest itself is checked by `load_manifest`."""
    manifest = load_columnar(store, dataset, digest)  # columns: no object per image
    files: dict[str, list[str]] = {}
    for blob, name in zip(manifest.blobs(), manifest.images["file_name"].to_pylist(), strict=True):
        files.setdefault(blob, []).append(name)

    def check(blob: str) -> BlobProblem | None:
        try:
            data = store.get_blob(blob)
        except KeyError:
            return BlobProblem(blob, files[blob], "missing")
        actual = hashlib.sha256(data).hexdigest()
        if actual != blob:
            return BlobProblem(blob, files[blob], f"altered: its sha256 is {actual}")
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = [p for p in pool.map(check, sorted(files)) if p is not None]
    return VerifyReport(f"{dataset}@{digest}", manifest.images.num_rows, len(files), found)


# --- markers -----------------------------------------------------------------------------


def _read_markers(store: Store, prefix: str) -> dict[str, dict[str, Any]]:
    out = {}
    for key in store.list(prefix):
        if not key.endswith(".json"):
            continue
        try:
            data = store.get_json(key)
        except KeyError:
            continue  # removed between list and read: its owner finished
        except ValueError:
            data = {}  # half-visible or foreign: treat as live and unknown, i.e. protect (see gc)
        out[key] = data if isinstance(data, dict) else {}
    return out


class PendingWrite:
    """A writer's lease: protects the blobs of a version not yet visible (see the module doc)."""

    def __init__(self, store: Store, what: str, *, sweep_ttl: float = DEFAULT_SWEEP_TTL_S,
                 poll: float = 0.2, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.what = what
        self.id = uuid.uuid4().hex
        self.key = f"{PENDING_PREFIX}{self.id}.json"
        self.sweep_ttl = sweep_ttl
        self.poll = poll
        self.clock = clock
        self._sweeps_at_start: dict[str, dict[str, Any]] = {}

    def _write(self, blobs: Iterable[str]) -> None:
        self.store.put_json(self.key, {"id": self.id, "what": self.what, "updated": self.clock(),
                                       "blobs": sorted(set(blobs))})

    def start(self) -> PendingWrite:
        self._sweeps_at_start = _read_markers(self.store, SWEEP_PREFIX)
        self._write(())
        return self

    def commit(self, blobs: Iterable[str]) -> None:
        """Call before writing the manifest that names `blobs`; raises IntegrityError if gc took one."""
        blobs = sorted(set(blobs))
        self._write(blobs)
        overlapped = self._overlapping_sweeps()
        if not overlapped:
            return
        self._wait_for(overlapped)
        missing = [b for b in blobs if not self.store.exists(layout.blob_key(b))]
        if missing:
            raise IntegrityError(
                f"{self.what}: {len(missing)} blob(s) were deleted by a concurrent `kubeforge datasets gc` "
                f"(e.g. {layout.blob_key(missing[0])}); no version was written; run it again")

    def _overlapping_sweeps(self) -> list[str]:
        now = _read_markers(self.store, SWEEP_PREFIX)
        before = self._sweeps_at_start
        return sorted({k for k in now if k not in before}
                      | {k for k, v in before.items() if not v.get("finished")})

    def _wait_for(self, sweeps: list[str]) -> None:
        while True:
            live = [k for k, v in _read_markers(self.store, SWEEP_PREFIX).items()
                    if k in sweeps and not v.get("finished")
                    and self.clock() - float(v.get("started", 0)) < self.sweep_ttl]
            if not live:
                return
            time.sleep(self.poll)

    def finish(self) -> None:
        self.store.delete(self.key)


class GuardedStore(Store):
    """A store whose manifest writes follow the writer protocol; everything else passes through.

    Wrapping the store keeps the importers unaware of gc: they write blobs, then the manifest
    (`versions.write_version`), and the guard steps in just before the manifest.
    """

    def __init__(self, inner: Store, pending: PendingWrite) -> None:
        self.inner = inner
        self.pending = pending

    @property
    def uri(self) -> str:
        return self.inner.uri

    def put_bytes(self, key: str, data: bytes) -> None:
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "datasets" and parts[3] == "manifest.json":
            self.pending.commit(im.blob for im in Manifest.from_bytes(data).images)
        elif len(parts) == 4 and parts[0] == "datasets" and parts[3] == PARQUET_MANIFEST:
            from kubeforge.datasets.columnar import blob_column  # pyarrow: only when a Parquet manifest is written

            self.pending.commit(blob_column(data))
        self.inner.put_bytes(key, data)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def put_blob(self, data: bytes) -> str:
        return self.inner.put_blob(data)  # the inner store's own (faster) blob path

    def put_file(self, key: str, path: Path) -> None:
        self.inner.put_file(key, path)

    def get_file(self, key: str, path: Path) -> None:
        self.inner.get_file(key, path)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list_sizes(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def check(self) -> None:
        self.inner.check()


@contextmanager
def guarded_write(store: Store, what: str, **kwargs: Any) -> Iterator[GuardedStore]:
    """`with guarded_write(store, "dataset shapes") as gstore:` write blobs, then the manifest."""
    pending = PendingWrite(store, what, **kwargs).start()
    try:
        yield GuardedStore(store, pending)
    finally:
        # Also on failure: the uploaded blobs become ordinary orphans, collected after the grace.
        pending.finish()


# --- gc ----------------------------------------------------------------------------------


@dataclass
class GcReport:
    blobs: int = 0
    referenced: int = 0
    protected_pending: int = 0
    young: int = 0
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    dry_run: bool = False
    stale_markers: list[str] = field(default_factory=list)


def object_ages(store: Store, prefix: str, now: float) -> dict[str, tuple[int, float]]:
    """key -> (size, age in seconds by the store's own clock). A store that cannot tell reports 0."""
    from kubeforge.store.local import LocalStore

    out: dict[str, tuple[int, float]] = {}
    if isinstance(store, LocalStore):
        for key in store.list(prefix):
            try:
                st = (store.root / key).stat()
            except FileNotFoundError:
                continue  # deleted meanwhile
            out[key] = (st.st_size, now - st.st_mtime)
        return out
    client = getattr(store, "_client", None)
    if client is not None:  # S3Store: one listing gives sizes and LastModified
        full = store._list_prefix(prefix)  # type: ignore[attr-defined]
        strip = len(store.prefix) + 1 if store.prefix else 0  # type: ignore[attr-defined]
        for obj in client.list_objects(store.bucket, prefix=full, recursive=True):  # type: ignore[attr-defined]
            if obj.object_name and not obj.object_name.endswith("/"):
                modified = obj.last_modified.timestamp() if obj.last_modified else now
                out[obj.object_name[strip:]] = (int(obj.size or 0), now - modified)
        return out
    return {key: (size, 0.0) for key, size in store.list_sizes(prefix)}


def referenced_blobs(store: Store) -> set[str]:
    """Every blob named by a version manifest. Raises IntegrityError if any manifest is unreadable:
    gc cannot know what an unreadable manifest needs, so it must not run."""
    out: set[str] = set()
    for key in store.list("datasets/"):
        if not is_manifest_key(key):
            continue
        parts = key.split("/")
        try:
            manifest = load_columnar(store, parts[1], parts[2])
        except KeyError:
            continue  # deleted meanwhile
        except (CorruptManifestError, StoreError) as exc:
            raise IntegrityError(f"gc stopped, nothing deleted: {exc}") from None
        out.update(manifest.blobs())
    return out


def collect_garbage(store: Store, *, dry_run: bool = False, grace: float = DEFAULT_GRACE_S,
                    pending_ttl: float = DEFAULT_PENDING_TTL_S, clock: Callable[[], float] = time.time,
                    before_delete: Callable[[], None] | None = None) -> GcReport:
    """Delete blobs no version references (see the module doc for why this is safe).

    `before_delete` runs between deciding and deleting: tests use it to start a writer there.
    """
    report = GcReport(dry_run=dry_run)
    ages = {k.rsplit("/", 1)[-1]: v for k, v in object_ages(store, BLOB_PREFIX, clock()).items()}
    report.blobs = len(ages)
    sweep_key = f"{SWEEP_PREFIX}{uuid.uuid4().hex}.json"
    started = clock()
    if not dry_run:
        store.put_json(sweep_key, {"started": started, "finished": False})
    try:
        referenced = referenced_blobs(store)
        protected: set[str] = set()
        # A writer's marker is written before its first upload, so every blob it uploaded is
        # younger than its marker: keep blobs up to the oldest live marker's age (store clock;
        # 2 s for coarse mtimes). After its commit the marker also lists every blob by name.
        keep_younger_than = grace
        markers = _read_markers(store, PENDING_PREFIX)
        marker_ages = object_ages(store, PENDING_PREFIX, clock())
        for key, marker in markers.items():
            age = marker_ages.get(key, (0, 0.0))[1]
            if age > pending_ttl:
                report.stale_markers.append(key)
                continue
            blobs = marker.get("blobs")
            if not isinstance(blobs, list):
                raise IntegrityError(f"gc stopped, nothing deleted: {store.url(key)}: unreadable pending marker")
            protected.update(blobs)
            keep_younger_than = max(keep_younger_than, age + 2.0)
        report.referenced = len(referenced & ages.keys())
        report.protected_pending = len((protected - referenced) & ages.keys())
        candidates = []
        for blob, (size, age) in sorted(ages.items()):
            if blob in referenced or blob in protected:
                continue
            if age < keep_younger_than:
                report.young += 1
                continue
            candidates.append((blob, size))
        if before_delete is not None:
            before_delete()
        for blob, size in candidates:
            if not dry_run:
                store.delete(layout.blob_key(blob))
            report.deleted.append(blob)
            report.freed_bytes += size
        if not dry_run:
            for key in report.stale_markers:
                store.delete(key)
    finally:
        if not dry_run:
            store.put_json(sweep_key, {"started": started, "finished": True, "finishedAt": clock()})
    _prune_sweeps(store, clock(), keep=sweep_key, dry_run=dry_run)
    return report


def _prune_sweeps(store: Store, now: float, keep: str, dry_run: bool) -> None:
    """Finished sweep markers are kept a day (writers compare them), then removed."""
    if dry_run:
        return
    for key, marker in _read_markers(store, SWEEP_PREFIX).items():
        if key != keep and marker.get("finished") and now - float(marker.get("finishedAt", now)) > 86400:
            store.delete(key)


def dump_report(report: GcReport) -> dict[str, Any]:
    return json.loads(json.dumps(report.__dict__))

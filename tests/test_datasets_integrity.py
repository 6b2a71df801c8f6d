"""verify catches tampered and missing blobs; gc never deletes a blob a version needs, even mid-write."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.datasets.integrity import (
    PENDING_PREFIX,
    IntegrityError,
    collect_garbage,
    guarded_write,
    verify_version,
)
from kubeforge.datasets.manifest import Category, Manifest, ManifestImage
from kubeforge.datasets.versions import write_version
from kubeforge.store import layout
from kubeforge.store.local import LocalStore

HOUR = 3600.0


def make_version(store: LocalStore, *contents: bytes, dataset: str = "d") -> tuple[Manifest, str]:
    images = [ManifestImage(file_name=f"{i}.png", blob=store.put_blob(c), width=1, height=1, bytes=len(c))
              for i, c in enumerate(contents)]
    manifest = Manifest(dataset=dataset, task="object-detection", categories=[Category(id=1, name="x")],
                        images=images)
    digest, _ = write_version(store, manifest)
    return manifest, digest


def age(store: LocalStore, key: str, seconds: float) -> None:
    """Make an object look `seconds` old (as if written back then)."""
    t = time.time() - seconds
    os.utime(store.root / key, (t, t))


def blob_path(store: LocalStore, content: bytes) -> Path:
    import hashlib

    return store.root / layout.blob_key(hashlib.sha256(content).hexdigest())


def test_verify_catches_a_tampered_and_a_missing_blob(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _, digest = make_version(store, b"one", b"two", b"three", b"one")  # a blob used twice is read once
    report = verify_version(store, "d", digest)
    assert report.ok and (report.images, report.blobs) == (4, 3)

    blob_path(store, b"two").write_bytes(b"tampered")
    blob_path(store, b"three").unlink()
    report = verify_version(store, "d", digest)
    problems = {p.files[0]: p.problem for p in report.problems}
    assert set(problems) == {"1.png", "2.png"}
    assert problems["1.png"].startswith("altered: its sha256 is ") and problems["2.png"] == "missing"

    out = CliRunner().invoke(app, ["datasets", "verify", f"d@{digest}", "--store", str(tmp_path)])
    assert out.exit_code == 1
    assert "missing" in out.output and "2.png" in out.output and "altered" in out.output and "1.png" in out.output
    assert "2 of 3 blobs missing or altered" in out.output


def test_gc_deletes_only_old_unreferenced_blobs(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    make_version(store, b"kept-1", b"kept-2")
    old, young = store.put_blob(b"old orphan"), store.put_blob(b"young orphan")
    for key in store.list("blobs/"):
        age(store, key, 2 * HOUR)
    age(store, layout.blob_key(young), 60)

    dry = collect_garbage(store, dry_run=True)
    assert dry.deleted == [old] and store.exists(layout.blob_key(old))  # a dry run deletes nothing
    assert list(store.list("datasets/.gc/")) == []

    report = collect_garbage(store)
    assert report.deleted == [old] and report.freed_bytes == len(b"old orphan")
    assert (report.referenced, report.young) == (2, 1)
    assert not store.exists(layout.blob_key(old)) and store.exists(layout.blob_key(young))
    assert all(store.exists(layout.blob_key(b)) for b in (store.put_blob(b"kept-1"), store.put_blob(b"kept-2")))


def test_gc_refuses_to_run_with_an_unreadable_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _, digest = make_version(store, b"a")
    orphan = store.put_blob(b"orphan")
    age(store, layout.blob_key(orphan), 2 * HOUR)
    store.put_bytes(layout.dataset_manifest_key("d", digest), b"{garbage")
    with pytest.raises(IntegrityError, match=r"nothing deleted: .*corrupted manifest"):
        collect_garbage(store)
    assert store.exists(layout.blob_key(orphan))


def test_a_writer_in_progress_keeps_its_blobs_even_with_no_grace(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with guarded_write(store, "test writer") as guarded:
        images = [ManifestImage(file_name="new.png", blob=guarded.put_blob(b"in flight"), width=1, height=1,
                                bytes=9)]
        # gc runs between the upload and the manifest: the blob is referenced by nothing yet.
        report = collect_garbage(store, grace=0)
        assert report.deleted == [] and store.exists(layout.blob_key(images[0].blob))
        manifest = Manifest(dataset="w", task="object-detection", categories=[], images=images)
        digest, _ = write_version(guarded, manifest)
    assert list(store.list(PENDING_PREFIX)) == []  # the marker goes with the writer
    assert verify_version(store, "w", digest).ok
    assert collect_garbage(store, grace=0).deleted == []  # now referenced by the manifest


def test_a_writer_reusing_an_old_orphan_is_protected_by_its_marker(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    orphan = store.put_blob(b"old orphan")
    age(store, layout.blob_key(orphan), 2 * HOUR)
    with guarded_write(store, "reuser") as guarded:
        guarded.pending.commit([orphan])  # what write_version's manifest does, registered early
        assert collect_garbage(store, grace=0).deleted == []
    assert collect_garbage(store, grace=0).deleted == [orphan]  # the writer left without a version


def test_the_race_a_writer_starting_while_gc_deletes_never_writes_a_broken_version(tmp_path: Path) -> None:
    """gc has decided to delete an old orphan; a writer that reuses it starts right then.

    The writer sees the sweep in progress, waits for it, finds its blob gone and fails naming
    it: no manifest names a missing blob. (Had its marker come first, gc would have kept it.)
    """
    store = LocalStore(tmp_path)
    orphan = store.put_blob(b"old orphan")
    age(store, layout.blob_key(orphan), 2 * HOUR)
    manifest = Manifest(dataset="r", task="object-detection", categories=[], images=[
        ManifestImage(file_name="a.png", blob=orphan, width=1, height=1, bytes=10)])
    outcome: dict[str, object] = {}
    waiting = threading.Event()

    def writer() -> None:
        try:
            with guarded_write(store, "racing writer", poll=0.02) as guarded:
                waiting.set()
                outcome["digest"] = write_version(guarded, manifest)[0]
        except IntegrityError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=writer)

    def start_writer() -> None:
        thread.start()
        assert waiting.wait(5)
        time.sleep(0.2)  # the writer reaches its commit and waits for this sweep

    report = collect_garbage(store, grace=0, before_delete=start_writer)
    thread.join(10)
    assert report.deleted == [orphan]
    assert "digest" not in outcome
    assert "deleted by a concurrent `kubeforge datasets gc`" in str(outcome["error"])
    assert layout.blob_key(orphan) in str(outcome["error"])
    assert not store.exists(layout.dataset_manifest_key("r", manifest.digest()))


def test_a_stale_marker_stops_protecting_and_is_removed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    orphan = store.put_blob(b"from a crashed writer")
    store.put_json(f"{PENDING_PREFIX}crashed.json", {"id": "crashed", "blobs": [orphan]})
    age(store, layout.blob_key(orphan), 48 * HOUR)
    age(store, f"{PENDING_PREFIX}crashed.json", 48 * HOUR)
    report = collect_garbage(store)
    assert report.deleted == [orphan] and report.stale_markers == [f"{PENDING_PREFIX}crashed.json"]
    assert list(store.list(PENDING_PREFIX)) == []


def test_cli_gc_dry_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    orphan = store.put_blob(b"orphan")
    age(store, layout.blob_key(orphan), 2 * HOUR)
    out = CliRunner().invoke(app, ["datasets", "gc", "--dry-run", "--store", str(tmp_path)])
    assert out.exit_code == 0 and "would delete 1 of 1 blobs (6 bytes)" in out.output
    assert store.exists(layout.blob_key(orphan))
    out = CliRunner().invoke(app, ["datasets", "gc", "--store", str(tmp_path)])
    assert "deleted 1 of 1 blobs" in out.output and not store.exists(layout.blob_key(orphan))

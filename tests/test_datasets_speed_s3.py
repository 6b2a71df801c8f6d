"""Import into S3 and check out from it (real SeaweedFS): the blob listing instead of a stat per blob,
deduplication kept, and a checkout into an empty folder with the version's exact bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.checkout import checkout_version
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.integrity import guarded_write, verify_version
from kubeforge.datasets.synth import generate_shapes_imagefolder
from kubeforge.store import layout
from kubeforge.store.s3 import S3Store

pytestmark = pytest.mark.s3


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _blobs(store: S3Store) -> list[str]:
    return [k for k in store.list(layout.BLOB_PREFIX)]


def test_import_into_s3_lists_blobs_once_and_checks_out(s3_store: S3Store, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    generate_shapes_imagefolder(src, n_per_class=40, size=24, seed=2)  # > 64 files: the listing path
    # One image twice under another name: stored once.
    first = sorted(src.rglob("*.png"))[0]
    (first.parent / "copy.png").write_bytes(first.read_bytes())
    spec = DatasetVersionSpec.model_validate({"dataset": "d", "source": {"uri": str(src), "format": "imagefolder"}})
    asked: list[str] = []
    real_exists = S3Store.exists
    monkeypatch.setattr(S3Store, "exists", lambda self, key: asked.append(key) or real_exists(self, key))
    with guarded_write(s3_store, "test import") as guarded:
        result = import_dataset(spec, guarded, progress=False)
    assert not [k for k in asked if k.startswith(layout.BLOB_PREFIX)]  # no stat per blob
    assert s3_store._blobs is None  # the listing served this import only
    files = _files(src)
    assert result.stats.images == len(files)
    assert len(_blobs(s3_store)) == len(set(files.values())) == len(files) - 1
    assert verify_version(s3_store, "d", result.digest).ok

    # Again without the import cache: every file read, nothing stored twice, the same version.
    with guarded_write(s3_store, "test import") as guarded:
        again = import_dataset(spec, guarded, progress=False, use_cache=False)
    assert again.digest == result.digest and not again.created
    assert len(_blobs(s3_store)) == len(files) - 1

    out = checkout_version(s3_store, "d", result.digest, tmp_path / "empty")
    assert out.written == out.files == len(files)
    assert _files(tmp_path / "empty") == files
    assert not [p for p in (tmp_path / "empty").rglob(".tmp-*")]


def test_a_blob_missing_from_the_listing_is_still_stored(s3_store: S3Store) -> None:
    """index_blobs is a snapshot: a blob it did not see is uploaded, one it saw is not re-sent."""
    s3_store.put_blob(b"old")
    assert s3_store.index_blobs(limit=100)
    digest = s3_store.put_blob(b"new")
    assert s3_store.get_blob(digest) == b"new"
    assert s3_store.put_blob(b"old") == hashlib.sha256(b"old").hexdigest()
    assert len(_blobs(s3_store)) == 2
    # Past the limit it gives up: put_blob asks per blob as before.
    assert not s3_store.index_blobs(limit=1)
    assert s3_store.get_blob(s3_store.put_blob(b"third")) == b"third"

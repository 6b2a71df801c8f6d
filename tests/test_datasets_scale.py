"""Scale: columnar manifests (same digest as JSON), import cache, checkout."""

from __future__ import annotations

import hashlib
import os
import resource
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.checkout import CheckoutError, checkout_version
from kubeforge.datasets.columnar import ColumnarManifest
from kubeforge.datasets.diff import diff_manifests
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.integrity import referenced_blobs, verify_version
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.versions import (
    CorruptManifestError,
    load_columnar,
    load_manifest,
    parquet_keys,
    write_version,
)
from kubeforge.store.local import LocalStore


def _h(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _detection() -> Manifest:
    images = [ManifestImage(file_name=f"d/é{i}.png", blob=_h(i), width=20 + i, height=10, bytes=100 + i,
                            category_id=None, tags=["b", "a"] if i == 1 else []) for i in range(5)]
    anns = [ManifestAnnotation(image=i % 5, category_id=1 + i % 2, bbox=[1, 2, 3, 4.5], area=3.25,
                               segmentation=[[1, 2, 3, 4, 5, 6]] if i == 0 else None, tags=["x"] if i == 2 else [])
            for i in range(7)]
    return Manifest(dataset="d", task="object-detection", images=images, annotations=anns,
                    categories=[Category(id=2, name="b"), Category(id=1, name="a")])


def test_columnar_digest_equals_json_digest_and_survives_parquet() -> None:
    m = _detection()
    cm = ColumnarManifest.from_manifest(m)
    assert b"".join(cm.canonical_chunks()) == m.to_bytes()
    back = ColumnarManifest.from_parquet(cm.images_parquet(), cm.annotations_parquet())
    assert back.digest() == m.digest() == back.to_manifest().digest()


def test_from_rows_is_order_independent() -> None:
    rows = [(f"{lab}/{i}.png", _h(i), 100 + i, 10, 12, lab) for i, lab in enumerate("zamaq")]
    a, b = ColumnarManifest.from_rows("d", rows), ColumnarManifest.from_rows("d", list(reversed(rows)))
    assert a.digest() == b.digest() == a.to_manifest().digest()
    assert [c.name for c in a.categories] == ["a", "m", "q", "z"]
    changed = ColumnarManifest.from_rows("d", [*rows[:-1], ("q/4.png", _h(99), 104, 10, 12, "q")])
    assert changed.digest() != a.digest()


def test_json_era_and_columnar_versions_load_alike(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    m = _detection()
    d_json, _ = write_version(store, m, columnar=False)
    other = m.model_copy(update={"dataset": "e"})
    d_pq, _ = write_version(store, other, columnar=True)
    assert d_json == m.digest() and d_pq == other.digest()
    assert store.exists(parquet_keys("e", d_pq)[0]) and not store.exists(f"datasets/e/{d_pq}/manifest.json")
    assert load_manifest(store, "e", d_pq).digest() == d_pq
    assert load_columnar(store, "d", d_json).digest() == d_json
    assert _h(0) in referenced_blobs(store)
    assert diff_manifests(load_columnar(store, "d", d_json), load_columnar(store, "e", d_pq)).empty


def test_tampered_parquet_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    m = _detection()
    digest, _ = write_version(store, m, columnar=True)
    cm = ColumnarManifest.from_manifest(m)
    cm.images = cm.images.set_column(3, "height", pa.array([11] * 5, pa.int32()))  # other content, same digest name
    store.put_bytes(parquet_keys("d", digest)[0], cm.images_parquet())
    with pytest.raises(CorruptManifestError, match="hashes to"):
        load_columnar(store, "d", digest)


def test_diff_on_columnar_classification() -> None:
    rows = [(f"{lab}/{i}.png", _h(i), 100, 10, 12, lab) for i, lab in enumerate("aabb")]
    a = ColumnarManifest.from_rows("d", rows)
    b = ColumnarManifest.from_rows("d", [rows[0], ("a/1.png", _h(50), 100, 10, 12, "a"), rows[2],
                                         ("b/3.png", _h(3), 100, 10, 12, "a"), ("c/9.png", _h(9), 1, 1, 1, "c")])
    d = diff_manifests(a, b)
    assert d.images_modified == ["a/1.png"] and d.images_added == ["c/9.png"]
    # b/3.png relabelled b -> a: one object removed, one added (a change is within one class)
    assert (d.annotations_added, d.annotations_removed, d.annotations_changed) == (2, 1, 0)
    assert d.objects_per_class == {"a": 1, "b": -1, "c": 1}


def test_100k_manifest_under_memory_bound(tmp_path: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = ((f"c{i % 10}/{i:06d}.jpg", _h(i), 9000, 64, 48, f"c{i % 10}") for i in range(100_000))
    cm = ColumnarManifest.from_rows("big", rows)
    digest, _ = write_version(LocalStore(tmp_path), cm)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert load_columnar(LocalStore(tmp_path), "big", digest).images.num_rows == 100_000
    assert grown_mb < 150  # peak growth; pydantic objects would take several times this


def _png(path: Path, seed: int, side: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _spec(src: Path | str) -> DatasetVersionSpec:
    return DatasetVersionSpec.model_validate({"dataset": "s", "source": {"uri": str(src), "format": "imagefolder"}})


def _age(path: Path) -> None:
    # Older than filecache's racy window, as a file untouched since before the import is.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))


def test_unchanged_local_files_are_not_read_again(tmp_path: Path) -> None:
    src, store = tmp_path / "src", LocalStore(tmp_path / "store")
    for i in range(3):
        _png(src / "a" / f"{i}.png", i)
        _age(src / "a" / f"{i}.png")
    first = import_dataset(_spec(src), store, progress=False)
    assert first.reused == 0
    (src / "a" / "0.png").chmod(0)  # unreadable: a second import must not open it
    (src / "a" / "1.png").write_bytes((src / "a" / "1.png").read_bytes())  # same bytes, new mtime
    _png(src / "a" / "2.png", 7, side=9)  # changed content and size
    _age(src / "a" / "2.png")
    try:
        second = import_dataset(_spec(src), store, progress=False)
    finally:
        (src / "a" / "0.png").chmod(0o644)
    assert second.reused == 1  # only 0.png; 1.png (mtime) and 2.png (size) were read
    assert {im.file_name: im.width for im in second.manifest.images}["a/2.png"] == 9
    assert second.digest != first.digest


def test_unchanged_s3_objects_are_not_downloaded_again(s3_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for i in range(2):
        _png(tmp_path / f"{i}.png", i)
        s3_store.put_file(f"raw/a/{i}.png", tmp_path / f"{i}.png")
    uri = f"s3://{s3_store.bucket}/{s3_store.prefix}/raw/"
    store = LocalStore(tmp_path / "store")
    assert import_dataset(_spec(uri), store, progress=False).reused == 0
    _png(tmp_path / "x.png", 5)
    s3_store.put_file("raw/a/1.png", tmp_path / "x.png")  # same key, other content: new ETag
    second = import_dataset(_spec(uri), store, progress=False)
    assert second.reused == 1
    blob = {im.file_name: im.blob for im in second.manifest.images}["a/1.png"]
    assert blob == hashlib.sha256((tmp_path / "x.png").read_bytes()).hexdigest()


def test_checkout_restores_in_place(tmp_path: Path) -> None:
    src, store = tmp_path / "src", LocalStore(tmp_path / "store")
    for i in range(3):
        _png(src / "a" / f"{i}.png", i)
        _age(src / "a" / f"{i}.png")
    v1 = import_dataset(_spec(src), store, progress=False)
    _png(src / "a" / "0.png", 9, side=5)
    _png(src / "b" / "new.png", 3)
    v2 = import_dataset(_spec(src), store, progress=False)
    res = checkout_version(store, "s", v1.digest, src)
    assert (res.written, res.removed) == (1, 1) and not (src / "b").exists()
    assert import_dataset(_spec(src), store, progress=False).digest == v1.digest
    assert verify_version(store, "s", v2.digest).ok
    stray = tmp_path / "stray"
    _png(stray / "keep.png", 1)
    with pytest.raises(CheckoutError, match="--force"):
        checkout_version(store, "s", v1.digest, stray)

"""Dataset versions in the store: write one (after its blobs), load and verify one.

A version is stored in one of two forms with the same digest (sha256 of the canonical JSON
manifest, see `columnar`):
- `manifest.json`: the canonical JSON itself; versions under `COLUMNAR_MIN_IMAGES` images
  (readable by eye) and every version written before the columnar form existed;
- `manifest.parquet` (images) and, when there are any, `annotations.parquet` beside it
  (written first): large versions, loaded and diffed as Arrow columns.
Readers accept both; nothing needs migrating.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from kubeforge.api.dataset_version import DatasetStats, ImageSizeStats
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.manifest_columns import ManifestColumns
from kubeforge.datasets.stats import compute_stats
from kubeforge.store import layout
from kubeforge.store.base import Store

if TYPE_CHECKING:  # columnar imports pyarrow (~0.2 s): only where a Parquet manifest is read or written
    from kubeforge.datasets.columnar import ColumnarManifest

COLUMNAR_MIN_IMAGES = 5000
PARQUET_MANIFEST = "manifest.parquet"
PARQUET_ANNOTATIONS = "annotations.parquet"
MANIFEST_NAMES = ("manifest.json", PARQUET_MANIFEST)


class CorruptManifestError(ValueError):
    """The stored manifest's bytes do not hash to its digest, or do not parse."""


def parquet_keys(dataset: str, digest: str) -> tuple[str, str]:
    prefix = layout.dataset_version_prefix(dataset, digest)
    return f"{prefix}/{PARQUET_MANIFEST}", f"{prefix}/{PARQUET_ANNOTATIONS}"


def is_manifest_key(key: str) -> bool:
    """`datasets/<dataset>/<digest>/manifest.{json,parquet}` of a version (not a hidden prefix)."""
    parts = key.split("/")
    return len(parts) == 4 and parts[0] == "datasets" and not parts[1].startswith(".") and parts[3] in MANIFEST_NAMES


# Fewer digest characters name a version too loosely: 6 hex are 16.7 million values.
MIN_DIGEST_PREFIX = 6


class UnknownVersionError(ValueError):
    """A `dataset@digest` names no version of the store, or more than one."""


def list_versions(store: Store, dataset: str, prefix: str = "") -> list[str]:
    """Digests of the dataset's versions in the store (those starting with `prefix`), sorted."""
    return sorted({k.split("/")[2] for k in store.list(f"datasets/{dataset}/{prefix}") if is_manifest_key(k)})


def expand_digest(store: Store, dataset: str, digest: str) -> str:
    """The full digest of `dataset@digest`, where `digest` is the full digest or a unique prefix of
    at least MIN_DIGEST_PREFIX characters. UnknownVersionError names the candidates when it is not."""
    label = f"{dataset}@{digest}"
    if len(digest) == 64:
        return digest
    if len(digest) < MIN_DIGEST_PREFIX:
        raise UnknownVersionError(f"{label}: give at least {MIN_DIGEST_PREFIX} characters of the digest")
    found = list_versions(store, dataset, digest)
    if len(found) == 1:
        return found[0]
    if found:
        raise UnknownVersionError(f"{label}: {len(found)} versions of dataset {dataset!r} in {store.uri} start "
                                  f"with {digest!r}: {', '.join(f[:12] for f in found)}; give more characters")
    others = list_versions(store, dataset)
    known = (f"its versions: {', '.join(f[:12] for f in others[:10])}{', ...' if len(others) > 10 else ''}"
             if others else "it has no versions there")
    raise UnknownVersionError(f"{label}: no version of dataset {dataset!r} in {store.uri} starts with "
                              f"{digest!r} ({known})")


def version_exists(store: Store, dataset: str, digest: str) -> bool:
    return store.exists(layout.dataset_manifest_key(dataset, digest)) or store.exists(parquet_keys(dataset, digest)[0])


def manifest_key(store: Store, dataset: str, digest: str) -> str:
    """The key of the version's manifest in whichever form it is stored (JSON when neither is)."""
    pq_key = parquet_keys(dataset, digest)[0]
    json_key = layout.dataset_manifest_key(dataset, digest)
    return pq_key if not store.exists(json_key) and store.exists(pq_key) else json_key


def write_version(store: Store, manifest: Manifest | ColumnarManifest | ManifestColumns, *,
                  columnar: bool | None = None) -> tuple[str, bool]:
    """Store a manifest and its stats.json; returns (digest, created).

    The caller has already stored every blob the manifest names: the manifest is what makes
    the version visible, so it goes after them, and stats.json after it. A manifest already
    there (in either form: same digest = same content) is left alone; a missing stats.json
    beside it (a writer stopped in between) is recomputed, since stats follow from the
    manifest alone. `columnar` None: by size (`COLUMNAR_MIN_IMAGES`).
    """
    if isinstance(manifest, ManifestColumns):
        return _write_columns(store, manifest, columnar)
    from kubeforge.datasets.columnar import ColumnarManifest

    n = manifest.images.num_rows if isinstance(manifest, ColumnarManifest) else len(manifest.images)
    if columnar is None:
        columnar = n >= COLUMNAR_MIN_IMAGES
    if columnar:
        cm = manifest if isinstance(manifest, ColumnarManifest) else ColumnarManifest.from_manifest(manifest)
        digest = cm.digest()
        data = b""
    else:
        pm = manifest.to_manifest() if isinstance(manifest, ColumnarManifest) else manifest
        data = pm.to_bytes()
        digest = hashlib.sha256(data).hexdigest()
    stats = partial(columnar_stats, manifest) if isinstance(manifest, ColumnarManifest) \
        else partial(compute_stats, manifest)
    created = _put_version(store, manifest.dataset, digest, (lambda: cm) if columnar else None, data, stats)
    return digest, created


def _write_columns(store: Store, mc: ManifestColumns, columnar: bool | None) -> tuple[str, bool]:
    """`write_version` of plain columns: hashed from the lists; pyarrow only to write a new Parquet version."""
    if columnar is None:
        columnar = len(mc) >= COLUMNAR_MIN_IMAGES
    data = b"" if columnar else mc.to_bytes()
    digest = mc.digest()
    created = _put_version(store, mc.dataset, digest, mc.to_columnar if columnar else None, data, mc.stats)
    return digest, created


def _put_version(store: Store, dataset: str, digest: str, to_columnar: Callable[[], ColumnarManifest] | None,
                 data: bytes, stats: Callable[[], DatasetStats]) -> bool:
    """The version's objects under `digest` unless there (Parquet from `to_columnar()`, or the JSON
    `data` when it is None), then its stats.json unless there; returns whether the version is new."""
    stats_key = layout.dataset_stats_key(dataset, digest)
    created = not version_exists(store, dataset, digest)
    if created:
        if to_columnar is not None:
            cm = to_columnar()
            images_key, anns_key = parquet_keys(dataset, digest)
            if cm.annotations.num_rows:
                store.put_bytes(anns_key, cm.annotations_parquet())
            store.put_bytes(images_key, cm.images_parquet())
        else:
            store.put_bytes(layout.dataset_manifest_key(dataset, digest), data)
    if created or not store.exists(stats_key):
        store.put_json(stats_key, stats().dump())
    return created


def load_columnar(store: Store, dataset: str, digest: str) -> ColumnarManifest:
    """The version as Arrow columns, verified against its digest, from either form.

    Raises KeyError when the version is not in the store, CorruptManifestError when the
    stored bytes do not hash to `digest` or do not parse.
    """
    from kubeforge.datasets.columnar import ColumnarManifest

    images_key, anns_key = parquet_keys(dataset, digest)
    try:
        images = store.get_bytes(images_key)
    except KeyError:
        return ColumnarManifest.from_manifest(load_manifest(store, dataset, digest))
    try:
        anns: bytes | None = store.get_bytes(anns_key)
    except KeyError:
        anns = None
    try:
        cm = ColumnarManifest.from_parquet(images, anns)
    except Exception as exc:  # pyarrow raises its own error types for damaged files
        raise CorruptManifestError(f"{store.url(images_key)}: not a valid manifest ({exc})") from None
    actual = cm.digest()
    if actual != digest:
        raise CorruptManifestError(
            f"{store.url(images_key)}: corrupted manifest: its content hashes to {actual}, expected {digest}")
    if cm.dataset != dataset:
        raise CorruptManifestError(
            f"{store.url(images_key)}: manifest says dataset {cm.dataset!r}, expected {dataset!r}")
    return cm


def load_manifest(store: Store, dataset: str, digest: str) -> Manifest:
    """The manifest of `dataset` version `digest`, verified against its digest (pydantic form).

    Raises KeyError when the version is not in the store, CorruptManifestError when the
    stored bytes do not hash to `digest`.
    """
    key = layout.dataset_manifest_key(dataset, digest)
    try:
        data = store.get_bytes(key)
    except KeyError:
        if store.exists(parquet_keys(dataset, digest)[0]):
            return load_columnar(store, dataset, digest).to_manifest()
        raise
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise CorruptManifestError(
            f"{store.url(key)}: corrupted manifest: its sha256 is {actual}, expected {digest}"
        )
    try:
        manifest = Manifest.from_bytes(data)
    except ValueError as exc:
        raise CorruptManifestError(f"{store.url(key)}: not a valid manifest ({exc})") from None
    if manifest.dataset != dataset:
        raise CorruptManifestError(
            f"{store.url(key)}: manifest says dataset {manifest.dataset!r}, expected {dataset!r}"
        )
    return manifest


def columnar_stats(cm: ColumnarManifest) -> DatasetStats:
    """`compute_stats` from the columns (same result, no object per image)."""
    import pyarrow.compute as pc

    names = {c.id: c.name for c in cm.categories}
    objects = {c.name: 0 for c in cm.categories}
    images_with = {c.name: 0 for c in cm.categories}
    if cm.task == "classification":
        for row in pc.value_counts(cm.images["category_id"].drop_null()).to_pylist():
            objects[names[row["values"]]] += row["counts"]
            images_with[names[row["values"]]] += row["counts"]
        annotations = sum(objects.values())
    else:
        for row in pc.value_counts(cm.annotations["category_id"]).to_pylist():
            objects[names[row["values"]]] += row["counts"]
        pairs = cm.annotations.group_by(["category_id", "image"]).aggregate([])
        for row in pc.value_counts(pairs["category_id"]).to_pylist():
            images_with[names[row["values"]]] += row["counts"]
        annotations = cm.annotations.num_rows
    im = cm.images
    sizes = None
    if im.num_rows:
        sizes = ImageSizeStats(
            min_width=pc.min(im["width"]).as_py(), max_width=pc.max(im["width"]).as_py(),
            min_height=pc.min(im["height"]).as_py(), max_height=pc.max(im["height"]).as_py(),
            mean_width=round(pc.sum(im["width"]).as_py() / im.num_rows, 2),
            mean_height=round(pc.sum(im["height"]).as_py() / im.num_rows, 2),
        )
    return DatasetStats(
        images=im.num_rows, annotations=annotations, classes=len(cm.categories), objects_per_class=objects,
        images_per_class=images_with, image_sizes=sizes, total_bytes=pc.sum(im["bytes"]).as_py() or 0,
    )

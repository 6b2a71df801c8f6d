"""Dataset versions in the store: write one (after its blobs), load and verify one."""

from __future__ import annotations

import hashlib

from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.stats import compute_stats
from kubeforge.store import layout
from kubeforge.store.base import Store


class CorruptManifestError(ValueError):
    """The stored manifest's bytes do not hash to its digest, or do not parse."""


def write_version(store: Store, manifest: Manifest) -> tuple[str, bool]:
    """Store a manifest and its stats.json; returns (digest, created).

    The caller has already stored every blob the manifest names: the manifest is what makes
    the version visible, so it goes after them, and stats.json after it. A manifest already
    there (same digest = same bytes) is left alone; a missing stats.json beside it (a writer
    stopped in between) is recomputed, since stats follow from the manifest alone.
    """
    data = manifest.to_bytes()
    digest = hashlib.sha256(data).hexdigest()
    manifest_key = layout.dataset_manifest_key(manifest.dataset, digest)
    stats_key = layout.dataset_stats_key(manifest.dataset, digest)
    created = not store.exists(manifest_key)
    if created:
        store.put_bytes(manifest_key, data)
    if created or not store.exists(stats_key):
        store.put_json(stats_key, compute_stats(manifest).dump())
    return digest, created


def load_manifest(store: Store, dataset: str, digest: str) -> Manifest:
    """The manifest of `dataset` version `digest`, verified against its digest.

    Raises KeyError when the version is not in the store, CorruptManifestError when the
    stored bytes do not hash to `digest`.
    """
    key = layout.dataset_manifest_key(dataset, digest)
    data = store.get_bytes(key)
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

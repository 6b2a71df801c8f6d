"""Derived versions in the store: build one from its parents, record and replay its lineage.

`datasets/<dataset>/<digest>/lineage.json` sits beside a derived version's manifest: its
parents (dataset and digest) and its operations, which is everything needed to rebuild it
(`replay`). It is written before the manifest, so a visible derived version always has it.
Two specs can derive the same content (same digest); the first lineage written stays, since
replaying either gives the same manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kubeforge.api.dataset_operations import DatasetOperation, Lineage, ParentVersion
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.operations import apply_operations
from kubeforge.datasets.versions import load_manifest
from kubeforge.store import layout
from kubeforge.store.base import Store

LINEAGE_FORMAT = 1


class LineageError(ValueError):
    """A parent is missing from the store, or a lineage file is unreadable."""


def lineage_key(dataset: str, digest: str) -> str:
    return f"{layout.dataset_version_prefix(dataset, digest)}/lineage.json"


def load_parents(store: Store, parents: Sequence[ParentVersion]) -> list[Manifest]:
    out = []
    for p in parents:
        label = f"{p.name} ({p.dataset}@{p.digest})" if p.name else f"{p.dataset}@{p.digest}"
        try:
            out.append(load_manifest(store, p.dataset, p.digest))
        except KeyError:
            raise LineageError(f"parent {label}: no such version in {store.uri}") from None
    return out


def derive(store: Store, dataset: str, lineage: Lineage) -> Manifest:
    """The manifest `lineage` describes (parents loaded and verified against their digests)."""
    manifests = load_parents(store, lineage.parents)
    labels = [p.name or f"{p.dataset}@{p.digest[:12]}" for p in lineage.parents]
    return apply_operations(manifests, lineage.operations, dataset, labels)


def lineage_document(dataset: str, digest: str, lineage: Lineage) -> dict[str, Any]:
    return {"formatVersion": LINEAGE_FORMAT, "dataset": dataset, "digest": digest, **lineage.dump()}


def write_lineage(store: Store, dataset: str, digest: str, lineage: Lineage) -> str:
    """Store lineage.json for `digest` unless one is there; returns its key."""
    key = lineage_key(dataset, digest)
    if not store.exists(key):
        store.put_bytes(key, json.dumps(lineage_document(dataset, digest, lineage), indent=2,
                                        sort_keys=True).encode())
    return key


def read_lineage(store: Store, dataset: str, digest: str) -> Lineage | None:
    """The lineage of a version, or None for an imported one."""
    key = lineage_key(dataset, digest)
    try:
        data = store.get_json(key)
    except KeyError:
        return None
    except ValueError as exc:
        raise LineageError(f"{store.url(key)}: not JSON ({exc})") from None
    try:
        return Lineage.model_validate({"parents": data["parents"], "operations": data["operations"]})
    except (KeyError, TypeError, ValueError) as exc:
        raise LineageError(f"{store.url(key)}: not a lineage file ({exc})") from None


def replay(store: Store, dataset: str, digest: str) -> tuple[Manifest, bool]:
    """Rebuild a derived version from its lineage; returns (manifest, whether its digest matches)."""
    lineage = read_lineage(store, dataset, digest)
    if lineage is None:
        raise LineageError(f"{dataset}@{digest}: no lineage.json (an imported version, or not in {store.uri})")
    manifest = derive(store, dataset, lineage)
    return manifest, manifest.digest() == digest


def lineage_of(parents: Sequence[ParentVersion], operations: Sequence[DatasetOperation]) -> Lineage:
    return Lineage(parents=list(parents), operations=list(operations))

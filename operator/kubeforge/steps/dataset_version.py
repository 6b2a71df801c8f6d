"""Step `dataset-version`: import a source, or derive from parent versions, as a content-addressed version.

Returns the DatasetVersion's partial status (camelCase). Idempotent: the same content gives
the same digest, and a version already in the store is reported, not rewritten.

- source: import raw data (`importer.import_dataset`);
- parents + operations: load the parents (verified against their digests), apply the
  operations (`datasets.operations`), write lineage.json then the manifest.
The no-change rule: when the result's digest is the (first) parent's, nothing is stored and
the status says so (`unchanged: true`, condition ContentChanged=False reason Unchanged). Writes
go through `integrity.guarded_write`, so a concurrent `kubeforge datasets gc` cannot take a
blob the new manifest names.
"""

from __future__ import annotations

import sys
from typing import Any

from kubeforge.api.common import Condition
from kubeforge.api.dataset_operations import Lineage, ParentVersion
from kubeforge.api.dataset_version import SkippedFile
from kubeforge.datasets.diff import ManifestDiff, diff_manifests
from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.integrity import IntegrityError, guarded_write
from kubeforge.datasets.lineage import LineageError, derive, write_lineage
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.operations import OperationError
from kubeforge.datasets.sources import SourceError
from kubeforge.datasets.stats import compute_stats
from kubeforge.datasets.versions import CorruptManifestError, load_manifest, write_version
from kubeforge.steps.spec import DatasetRef, DatasetVersionRun
from kubeforge.store import layout, open_store
from kubeforge.store.base import Store, StoreError


def _label(ref: DatasetRef) -> str:
    return f"{ref.name} ({ref.dataset}@{ref.digest[:12]})" if ref.name else f"{ref.dataset}@{ref.digest[:12]}"


def _parent_manifest(store: Store, ref: DatasetRef) -> Manifest:
    try:
        return load_manifest(store, ref.dataset, ref.digest)
    except KeyError:
        raise LineageError(f"parent {_label(ref)}: no such version in {store.uri}") from None


def _build(spec: DatasetVersionRun, store: Store) -> tuple[Manifest, list[SkippedFile], Lineage | None, str | None]:
    """(manifest, skipped, lineage, lineage key); stores the version unless it equals its parent."""
    what = f"DatasetVersion {spec.namespace}/{spec.name}"
    with guarded_write(store, what) as guarded:
        if spec.spec.source is not None:
            result = import_dataset(spec.spec, guarded)
            return result.manifest, result.skipped, None, None
        lineage = Lineage(
            parents=[ParentVersion(name=r.name, dataset=r.dataset, digest=r.digest) for r in spec.parents],
            operations=list(spec.spec.operations or []),
        )
        manifest = derive(store, spec.spec.dataset, lineage)
        digest = manifest.digest()
        if spec.parent is not None and digest == spec.parent.digest:
            return manifest, [], lineage, None  # the no-change rule: nothing to store
        # lineage.json first: a visible derived version always has its lineage.
        key = write_lineage(guarded, spec.spec.dataset, digest, lineage)
        write_version(guarded, manifest)
        return manifest, [], lineage, key


def _changes_message(d: ManifestDiff) -> str:
    parts = [f"{len(d.images_added)} images added", f"{len(d.images_removed)} removed",
             f"{len(d.images_modified)} modified", f"{d.annotations_added} annotations added",
             f"{d.annotations_removed} removed", f"{d.annotations_changed} changed"]
    return ", ".join(parts)


def run(spec: DatasetVersionRun) -> dict[str, Any]:
    from kubeforge.steps.errors import StepFailedError

    try:
        store = open_store(spec.store)
        store.check()
        manifest, skipped, lineage, lineage_key = _build(spec, store)
        parent = _parent_manifest(store, spec.parent) if spec.parent is not None else None
    except (DatasetImportError, SourceError, StoreError, OperationError, LineageError, IntegrityError,
            CorruptManifestError) as exc:
        # These messages name the file, version, operation or endpoint: they are the status.
        raise StepFailedError(str(exc)) from None
    digest = manifest.digest()
    stats = compute_stats(manifest)
    status: dict[str, Any] = {
        "digest": digest,
        "manifestUri": store.url(layout.dataset_manifest_key(manifest.dataset, digest)),
        "task": manifest.task,
        "classes": manifest.class_names(),
        "stats": stats.dump(),
        "skipped": [s.dump() for s in skipped],
    }
    refs = spec.parents or ([spec.parent] if spec.parent is not None else [])
    if refs:
        status["parents"] = [ParentVersion(name=r.name, dataset=r.dataset, digest=r.digest).dump() for r in refs]
    if lineage is not None:
        status["lineage"] = lineage.dump()
    if lineage_key is not None:
        status["lineageUri"] = store.url(lineage_key)
    condition: Condition | None = None  # a first version (no parent) has nothing to compare with
    what = f"version {digest[:12]}"
    if parent is not None and spec.parent is not None:
        diff = diff_manifests(parent, manifest)
        status["changes"] = diff.changes(spec.parent.digest).dump()
        unchanged = digest == spec.parent.digest
        status["unchanged"] = unchanged
        if unchanged:
            condition = Condition(type="ContentChanged", status="False", reason="Unchanged",
                                  message=f"same content as {_label(spec.parent)}; nothing stored, the digest "
                                          "points at the existing version")
            what = f"unchanged: same content as {_label(spec.parent)}, version {digest[:12]}"
        else:
            condition = Condition(type="ContentChanged", status="True", reason="Changed",
                                  message=f"against {_label(spec.parent)}: {_changes_message(diff)}")
            what = f"version {digest[:12]} ({_changes_message(diff)} against {_label(spec.parent)})"
    if condition is not None:
        status["conditions"] = [condition.dump()]
    print(f"dataset {spec.spec.dataset} {what}: {stats.images} images, {stats.annotations} annotations, "
          f"{len(skipped)} skipped", file=sys.stderr)
    return status

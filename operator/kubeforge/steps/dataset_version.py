"""Step `dataset-version`: import a source into the store as a content-addressed version.

Returns the DatasetVersion's partial status (camelCase). Idempotent: the same content gives
the same digest, and a version already in the store is reported, not rewritten.
"""

from __future__ import annotations

import sys
from typing import Any

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.sources import SourceError
from kubeforge.steps.spec import DatasetVersionRun
from kubeforge.store import open_store
from kubeforge.store.base import StoreError


def run(spec: DatasetVersionRun) -> dict[str, Any]:
    from kubeforge.cli.step import StepFailedError

    try:
        store = open_store(spec.store)
        store.check()
        result = import_dataset(spec.spec, store)
    except (DatasetImportError, SourceError, StoreError) as exc:
        # These messages name the file or endpoint and what was expected: they are the status.
        raise StepFailedError(str(exc)) from None
    what = "imported" if result.created else "already in the store, unchanged:"
    print(
        f"dataset {spec.spec.dataset} version {result.digest[:12]} {what} {result.stats.images} images, "
        f"{result.stats.annotations} annotations, {len(result.skipped)} skipped",
        file=sys.stderr,
    )
    return {
        "digest": result.digest,
        "manifestUri": store.url(result.manifest_key),
        "task": result.manifest.task,
        "classes": result.manifest.class_names(),
        "stats": result.stats.dump(),
        "skipped": [s.dump() for s in result.skipped],
    }

"""What `artifactPolicy: Delete` may remove, for both runtimes (pure).

A resource's runs are its own. A DatasetVersion's data is shared by content: it stays while another
resource references the version (through any declared reference: a parent, one of a derived
version's `parents`, the data a TrainingJob or Benchmark reads) or another version has the same digest.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubeforge.api import DatasetVersion, Resource
from kubeforge.api.references import references


def dataset_version_in_use(version: DatasetVersion, others: Iterable[Resource]) -> str | None:
    """Why a DatasetVersion's store data must stay, or None."""
    digest = version.status.digest if version.status else None
    peers = [o for o in others if (o.kind, o.namespace, o.name) != (version.kind, version.namespace, version.name)]
    by_name = {(o.kind, o.name): o for o in peers if o.namespace == version.namespace}
    for other in peers:
        if digest and isinstance(other, DatasetVersion) and other.status and other.status.digest == digest:
            return f"DatasetVersion {other.namespace}/{other.name} has the same digest"
        if other.namespace != version.namespace:
            continue
        for ref in references(other, lambda kind, name: by_name.get((kind, name))):
            if ref.kind == "DatasetVersion" and ref.name == version.name:
                return f"{other.kind} {other.name} references it ({ref.field})"
    return None

"""What `artifactPolicy: Delete` may remove, for both runtimes (pure).

A resource's runs are its own. A DatasetVersion's data is shared by content: it stays while another
resource references the version (through any declared reference: a parent, one of a derived
version's `parents`, the data a TrainingJob or Benchmark reads) or another version has the same digest.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubeforge.api import DatasetVersion, Resource
from kubeforge.api.common import ArtifactPolicy
from kubeforge.api.references import references
from kubeforge.core.status import every_output_prefix


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


def artifacts_to_delete(res: Resource, others: Iterable[Resource]) -> tuple[list[str], str]:
    """(the store prefixes `artifactPolicy` removes when `res` is deleted, why or why not). Retain removes
    nothing; Delete removes every run's output, unless it is data another resource still needs."""
    if res.spec.artifact_policy != ArtifactPolicy.DELETE:
        return [], "artifactPolicy is Retain"
    if isinstance(res, DatasetVersion):
        why = dataset_version_in_use(res, others)
        if why:
            return [], f"kept: {why}"
    prefixes = every_output_prefix(res.status) if res.status is not None else []
    return prefixes, "artifactPolicy is Delete"

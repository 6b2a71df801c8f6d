"""The one reading of a dataset VERSION argument, for every `kubeforge datasets` command.

A VERSION is either
- `dataset@digest`: the full sha256 digest, or a unique prefix of at least 6 characters
  (`shapes@3fa9c2`), looked up in the store given by --store, else $KUBEFORGE_STORE, else the
  local runner's store (`local_store_uri`); or
- a DatasetVersion name of the local runner's state (--state-dir, else $KUBEFORGE_STATE_DIR, else
  ./.kubeforge): `name` in the namespace of --namespace (default `default`) or `namespace/name`.
  It must have run (its status has a digest); its data is read from the store its run used,
  unless --store says otherwise.
Errors name what was looked for and where, and list the candidates (the dataset's versions, or the
DatasetVersions of the state directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from kubeforge.store.base import Store

# No square brackets in help texts: rich reads `[ns/]` as markup and drops it.
VERSION_HELP = ("dataset@digest (a unique prefix of 6+ characters will do) or a DatasetVersion name "
                "(name, or namespace/name).")
StoreOption = Annotated[
    str | None, typer.Option("--store", help="Store URI (default: $KUBEFORGE_STORE, else the local runner's store).")
]
StateOption = Annotated[
    str | None, typer.Option("--state-dir", help="State directory for DatasetVersion names "
                             "(default: $KUBEFORGE_STATE_DIR, else ./.kubeforge).")
]
NamespaceOption = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of a DatasetVersion name.")]


class VersionRefError(ValueError):
    """A VERSION argument names no stored version (the message lists the candidates)."""


@dataclass(frozen=True)
class ResolvedVersion:
    dataset: str
    digest: str
    store: Store

    def __str__(self) -> str:
        return f"{self.dataset}@{self.digest}"


def resolve_version(ref: str, *, store: str | None = None, state_dir: str | Path | None = None,
                    namespace: str = "default") -> ResolvedVersion:
    """(dataset, full digest, open store) of a VERSION argument, by the rules above."""
    from kubeforge.datasets.versions import UnknownVersionError, expand_digest
    from kubeforge.local.state import local_store_uri
    from kubeforge.store import open_store

    if "@" in ref:
        dataset, _, prefix = ref.partition("@")
        if not dataset or not prefix:
            raise VersionRefError(f"{ref!r}: expected dataset@digest")
        st = open_store(local_store_uri(store, state_dir))
        try:
            return ResolvedVersion(dataset, expand_digest(st, dataset, prefix), st)
        except UnknownVersionError as exc:
            raise VersionRefError(str(exc)) from None
    dataset, digest, used_store = _from_state(ref, state_dir, namespace)
    return ResolvedVersion(dataset, digest, open_store(local_store_uri(store or used_store, state_dir)))


def _from_state(ref: str, state_dir: str | Path | None, namespace: str) -> tuple[str, str, str | None]:
    from kubeforge.api import DatasetVersion
    from kubeforge.local.state import StateDir, resolve_state_dir

    ns, _, name = ref.rpartition("/")
    ns = ns or namespace
    state = StateDir(resolve_state_dir(state_dir))
    record = state.load("DatasetVersion", ns, name)
    if record is None:
        known = [f"{r.resource.namespace}/{r.resource.name}" for r in state.list("DatasetVersion")]
        listed = f"DatasetVersions there: {', '.join(known)}" if known else "it has no DatasetVersions"
        raise VersionRefError(f"{ref}: no DatasetVersion {ns}/{name} in the state directory {state.root} ({listed}); "
                              "give dataset@digest for a version outside the local state")
    res = record.resource
    digest = res.status.digest if isinstance(res, DatasetVersion) and res.status is not None else None
    if not isinstance(res, DatasetVersion) or not digest:
        raise VersionRefError(f"{ref}: DatasetVersion {ns}/{name} has no digest yet (phase {record.phase or 'none'}); "
                              "`kubeforge run` imports it")
    return res.spec.dataset, digest, record.store

"""`kubeforge datasets diff | verify | gc | lineage`: compare, check and clean dataset versions.

A VERSION is `dataset@digest` (a unique digest prefix will do) or the name of a DatasetVersion
in the local runner's state (`[namespace/]name`, its recorded digest).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kubeforge.store.base import Store

StoreOption = Annotated[
    str | None, typer.Option("--store", help="Store URI [$KUBEFORGE_STORE, else the local runner's store].")
]
StateOption = Annotated[str | None, typer.Option("--state-dir", help="State directory for DatasetVersion names.")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _open(store: str | None, state_dir: str | None) -> Store:
    from kubeforge.local.state import local_store_uri
    from kubeforge.store import StoreError, open_store

    try:
        return open_store(local_store_uri(store, state_dir))
    except StoreError as exc:
        raise _fail(str(exc)) from None


def resolve_version(ref: str, store: Store, state_dir: str | None = None) -> tuple[str, str]:
    """(dataset, digest) of `dataset@digest[prefix]` or a DatasetVersion name; raises ValueError saying why not."""
    from kubeforge.datasets.versions import is_manifest_key

    if "@" in ref:
        dataset, prefix = ref.split("@", 1)
        if len(prefix) == 64:
            return dataset, prefix
        if len(prefix) < 4:
            raise ValueError(f"{ref}: give at least 4 characters of the digest")
        found = sorted({k.split("/")[2] for k in store.list(f"datasets/{dataset}/{prefix}")
                        if is_manifest_key(k)})
        if len(found) != 1:
            what = "no version" if not found else f"{len(found)} versions"
            raise ValueError(f"{ref}: {what} of dataset {dataset!r} with a digest starting {prefix!r} in {store.uri}")
        return dataset, found[0]
    from kubeforge.api import DatasetVersion
    from kubeforge.local.state import StateDir, resolve_state_dir

    namespace, _, name = ref.rpartition("/")
    state = StateDir(resolve_state_dir(state_dir))
    record = state.load("DatasetVersion", namespace or "default", name)
    res = record.resource if record is not None else None
    if not isinstance(res, DatasetVersion) or res.status is None or not res.status.digest:
        raise ValueError(f"{ref}: no DatasetVersion of that name with a digest in {state.root} "
                         "(give dataset@digest for a version outside the local state)")
    return res.spec.dataset, res.status.digest


def _load(ref: str, store: Store, state_dir: str | None):  # type: ignore[no-untyped-def]
    from kubeforge.datasets.versions import CorruptManifestError, load_columnar
    from kubeforge.store import StoreError

    try:
        dataset, digest = resolve_version(ref, store, state_dir)
        return load_columnar(store, dataset, digest)
    except KeyError:
        raise _fail(f"{ref}: not in {store.uri}") from None
    except (ValueError, CorruptManifestError, StoreError) as exc:
        raise _fail(str(exc)) from None


def diff(
    a: Annotated[str, typer.Argument(help="The old version: dataset@digest or a DatasetVersion name.")],
    b: Annotated[str, typer.Argument(help="The new version.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full diff as JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="File names listed per section.")] = 20,
    store: StoreOption = None,
    state_dir: StateOption = None,
) -> None:
    """Images added/removed/modified, annotations added/removed/changed, per-class deltas from A to B."""
    from rich.console import Console
    from rich.table import Table

    from kubeforge.datasets.diff import diff_manifests

    st = _open(store, state_dir)
    d = diff_manifests(_load(a, st, state_dir), _load(b, st, state_dir))
    if as_json:
        typer.echo(json.dumps(d.to_json(), indent=2))
        return
    console = Console()
    console.print(f"[bold]{d.a}[/] -> [bold]{d.b}[/]" + ("  (no changes)" if d.empty else ""))
    table = Table(title="changes")
    for col in ("", "added", "removed", "modified / changed"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("images", str(len(d.images_added)), str(len(d.images_removed)), str(len(d.images_modified)))
    table.add_row("annotations", str(d.annotations_added), str(d.annotations_removed), str(d.annotations_changed))
    table.add_row("classes", ", ".join(d.classes_added), ", ".join(d.classes_removed), "")
    console.print(table)
    if d.objects_per_class:
        deltas = Table(title="objects per class (B - A)")
        deltas.add_column("class")
        deltas.add_column("delta", justify="right")
        for cls, delta in d.objects_per_class.items():
            deltas.add_row(cls, f"{delta:+d}")
        console.print(deltas)
    for title, items in (("added", d.images_added), ("removed", d.images_removed),
                         ("modified", d.images_modified), ("retagged", d.images_retagged)):
        if items and limit:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            console.print(f"images {title}: " + ", ".join(items[:limit]) + more, soft_wrap=True)


def verify(
    version: Annotated[str, typer.Argument(help="dataset@digest or a DatasetVersion name.")],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel reads.")] = 8,
    store: StoreOption = None,
    state_dir: StateOption = None,
) -> None:
    """Re-hash every blob of a version; exit 1 naming every missing or altered one."""
    from kubeforge.datasets.integrity import verify_version
    from kubeforge.datasets.versions import CorruptManifestError
    from kubeforge.store import StoreError

    st = _open(store, state_dir)
    try:
        dataset, digest = resolve_version(version, st, state_dir)
        report = verify_version(st, dataset, digest, workers=workers)
    except KeyError:
        raise _fail(f"{version}: not in {st.uri}") from None
    except (ValueError, CorruptManifestError, StoreError) as exc:
        raise _fail(str(exc)) from None
    for p in report.problems:
        typer.echo(f"{p.problem}: {st.url(_blob_key(p.blob))} ({', '.join(p.files[:5])}"
                   f"{', ...' if len(p.files) > 5 else ''})", err=True)
    if not report.ok:
        raise _fail(f"{report.version}: {len(report.problems)} of {report.blobs} blobs missing or altered")
    typer.echo(f"ok: {report.version}: manifest and {report.blobs} blobs ({report.images} images) verified")


def _blob_key(blob: str) -> str:
    from kubeforge.store import layout

    return layout.blob_key(blob)


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be deleted; delete nothing.")] = False,
    grace: Annotated[float, typer.Option("--grace", min=0, help="Keep unreferenced blobs younger than this "
                                         "(seconds): a writer may be about to name them.")] = 3600.0,
    store: StoreOption = None,
    state_dir: StateOption = None,
) -> None:
    """Delete blobs no version manifest references (safe with writers running: see docs/data-versioning.md)."""
    from kubeforge.datasets.integrity import IntegrityError, collect_garbage
    from kubeforge.store import StoreError

    st = _open(store, state_dir)
    try:
        r = collect_garbage(st, dry_run=dry_run, grace=grace)
    except (IntegrityError, StoreError) as exc:
        raise _fail(str(exc)) from None
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {len(r.deleted)} of {r.blobs} blobs ({r.freed_bytes} bytes); kept {r.referenced} referenced, "
               f"{r.protected_pending} named by writers in progress, {r.young} younger than the grace period")
    for key in r.stale_markers:
        typer.echo(f"stale pending marker (a writer that stopped): {st.url(key)}", err=True)


def lineage(
    version: Annotated[str, typer.Argument(help="dataset@digest or a DatasetVersion name.")],
    check: Annotated[bool, typer.Option("--replay", help="Rebuild it from its parents; exit 1 unless the digest "
                                        "matches.")] = False,
    store: StoreOption = None,
    state_dir: StateOption = None,
) -> None:
    """Print a derived version's parents and operations (lineage.json)."""
    from kubeforge.datasets.lineage import LineageError, read_lineage, replay
    from kubeforge.datasets.operations import OperationError

    st = _open(store, state_dir)
    try:
        dataset, digest = resolve_version(version, st, state_dir)
        found = read_lineage(st, dataset, digest)
        if found is None:
            raise _fail(f"{dataset}@{digest}: no lineage.json: an imported version (a derived DatasetVersion "
                        "whose content equals its parent's points at the parent, which may be one)")
        typer.echo(json.dumps(found.dump(), indent=2))
        if check:
            _, matches = replay(st, dataset, digest)
            if not matches:
                raise _fail(f"{dataset}@{digest}: replaying the lineage gives another digest")
            typer.echo(f"replayed: {dataset}@{digest}")
    except (ValueError, LineageError, OperationError) as exc:
        raise _fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)
    app.command("verify")(verify)
    app.command("gc")(gc)
    app.command("lineage")(lineage)

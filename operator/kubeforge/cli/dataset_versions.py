"""`kubeforge datasets diff | verify | gc | lineage`: compare, check and clean dataset versions.

A VERSION argument is read by `kubeforge.cli.version_ref` (`dataset@digest` with a unique prefix
of 6+ characters, or a DatasetVersion name of the local state), as for every datasets command.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kubeforge.cli.version_ref import (
    VERSION_HELP,
    NamespaceOption,
    ResolvedVersion,
    StateOption,
    StoreOption,
    resolve_version,
)
from kubeforge.store.base import Store


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


def _resolve(ref: str, store: str | None, state_dir: str | None, namespace: str) -> ResolvedVersion:
    """resolve_version, its errors (and the store's) as one red line and exit 1."""
    from kubeforge.store import StoreError

    try:
        return resolve_version(ref, store=store, state_dir=state_dir, namespace=namespace)
    except (ValueError, StoreError) as exc:
        raise _fail(str(exc)) from None


def _load(version: ResolvedVersion):  # type: ignore[no-untyped-def]
    from kubeforge.datasets.versions import CorruptManifestError, load_columnar
    from kubeforge.store import StoreError

    try:
        return load_columnar(version.store, version.dataset, version.digest)
    except KeyError:
        raise _fail(f"{version}: not in {version.store.uri}") from None
    except (ValueError, CorruptManifestError, StoreError) as exc:
        raise _fail(str(exc)) from None


def diff(
    a: Annotated[str, typer.Argument(help=f"The old version: {VERSION_HELP}")],
    b: Annotated[str, typer.Argument(help="The new version.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full diff as JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="File names listed per section.")] = 20,
    store: StoreOption = None,
    state_dir: StateOption = None,
    namespace: NamespaceOption = "default",
) -> None:
    """Images added/removed/modified, annotations added/removed/changed, per-class deltas from A to B."""
    from rich.console import Console
    from rich.table import Table

    from kubeforge.datasets.diff import diff_manifests

    d = diff_manifests(_load(_resolve(a, store, state_dir, namespace)), _load(_resolve(b, store, state_dir, namespace)))
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
    version: Annotated[str, typer.Argument(help=VERSION_HELP)],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel reads.")] = 8,
    store: StoreOption = None,
    state_dir: StateOption = None,
    namespace: NamespaceOption = "default",
) -> None:
    """Re-hash every blob of a version; exit 1 naming every missing or altered one."""
    from kubeforge.datasets.integrity import verify_version
    from kubeforge.datasets.versions import CorruptManifestError
    from kubeforge.store import StoreError

    found = _resolve(version, store, state_dir, namespace)
    st = found.store
    try:
        report = verify_version(st, found.dataset, found.digest, workers=workers)
    except KeyError:
        raise _fail(f"{found}: not in {st.uri}") from None
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
    version: Annotated[str, typer.Argument(help=VERSION_HELP)],
    check: Annotated[bool, typer.Option("--replay", help="Rebuild it from its parents; exit 1 unless the digest "
                                        "matches.")] = False,
    store: StoreOption = None,
    state_dir: StateOption = None,
    namespace: NamespaceOption = "default",
) -> None:
    """Print a derived version's parents and operations (lineage.json)."""
    from kubeforge.datasets.lineage import LineageError, read_lineage, replay
    from kubeforge.datasets.operations import OperationError

    resolved = _resolve(version, store, state_dir, namespace)
    st, dataset, digest = resolved.store, resolved.dataset, resolved.digest
    try:
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

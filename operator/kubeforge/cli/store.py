"""`kubeforge store tree`: where every artifact went; `kubeforge store upload`: a folder into a store."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.tree import Tree

from kubeforge.store import StoreError, open_store

app = typer.Typer(no_args_is_help=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def build_tree(root_label: str, sizes: list[tuple[str, int]], max_files: int = 12) -> Tree:
    """A rich tree of keys; content-addressed blobs collapse to one line (there are thousands)."""
    tree = Tree(f"[bold]{root_label}[/]")
    blob_count = sum(1 for k, _ in sizes if k.startswith("blobs/"))
    blob_bytes = sum(s for k, s in sizes if k.startswith("blobs/"))
    if blob_count:
        tree.add(f"blobs/sha256/  [dim]{blob_count} content-addressed objects, {human_bytes(blob_bytes)}[/]")
    children: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, size in sizes:
        if not key.startswith("blobs/"):
            head, _, rest = key.partition("/")
            children[head].append((rest, size))
    for head in sorted(children):
        _add(tree, head, children[head], max_files)
    return tree


def _add(parent: Tree, name: str, entries: list[tuple[str, int]], max_files: int) -> None:
    files = [(k, s) for k, s in entries if "/" not in k]
    dirs: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, size in entries:
        if "/" in key:
            head, _, rest = key.partition("/")
            dirs[head].append((rest, size))
    if not dirs and not files:  # a plain file at the top level
        parent.add(name)
        return
    total = sum(s for _, s in entries)
    node = parent.add(f"[bold blue]{name}/[/]  [dim]{human_bytes(total)}[/]")
    for head in sorted(dirs):
        _add(node, head, dirs[head], max_files)
    for key, size in sorted(files)[:max_files]:
        node.add(f"{key}  [dim]{human_bytes(size)}[/]")
    if len(files) > max_files:
        node.add(f"[dim]… {len(files) - max_files} more files[/]")


@app.command("tree")
def tree_command(
    store: Annotated[str | None, typer.Option("--store", help="Store URI (default: the local runner's).")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Only keys under this prefix.")] = "",
    state_dir: Annotated[str | None, typer.Option("--state-dir", help="The local runner's state directory.")] = None,
) -> None:
    """Print the store's contents as a tree (blobs collapsed)."""
    from kubeforge.local.state import local_store_uri

    console = Console()
    try:
        st = open_store(local_store_uri(store, state_dir))
        st.check()
        sizes = list(st.list_sizes(prefix))
    except StoreError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(build_tree(st.uri, sizes))


@app.command("upload")
def upload_command(
    source: Annotated[Path, typer.Argument(help="A local folder (hidden files, e.g. .DS_Store, are left out).",
                                           exists=True, file_okay=False)],
    destination: Annotated[str, typer.Argument(help="s3://bucket/prefix/ (endpoint and credentials from "
                                               "KUBEFORGE_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) "
                                               "or a directory.")],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel uploads.")] = 8,
) -> None:
    """Copy a folder under a store prefix, keeping relative paths: e.g. a dataset for a cluster to import.

    A DatasetVersion in a cluster reads its `source.uri` from S3 (a step pod cannot see your disk);
    this puts a local dataset there with Kubeforge's own client, no other S3 tool needed.
    """
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(p for p in source.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(source).parts))
    console = Console(soft_wrap=True)  # an error stays one line (greppable) off a terminal
    if not files:
        console.print(f"[red]error:[/] {source}: no files to upload")
        raise typer.Exit(2)
    try:
        st = open_store(destination)
        st.check()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda p: st.put_file(p.relative_to(source).as_posix(), p), files))
    except StoreError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    size = sum(p.stat().st_size for p in files)
    console.print(f"uploaded {len(files)} files ({human_bytes(size)}) from {source} to {st.uri}", soft_wrap=True)

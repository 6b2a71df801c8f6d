"""`kubeforge crds ...`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubeforge.cli.generated import sync

app = typer.Typer(no_args_is_help=True)

@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Folder for <plural>.kubeforge.io.yaml files.")] = Path("crds"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the files differ from the API models.")
    ] = False,
) -> None:
    """Generate one CustomResourceDefinition YAML per kind from the API models."""
    from kubeforge.api.crd import generate_all

    expected = {Path(name): text for name, text in generate_all().items()}
    sync(out, expected, Path("."), check=check,
         stale=f"CRDs in {out} are out of date; run `kubeforge crds generate --out {out}`",
         done=f"{len(expected)} CRDs in {out} match the API models")


@app.command("print")
def print_(kind: Annotated[str, typer.Argument(help="Kind, plural or short name.")]) -> None:
    """Print one kind's CRD to stdout (for `kubectl apply -f -`)."""
    from kubeforge.api.crd import crd_for, render
    from kubeforge.api.registry import kind_for

    try:
        cls = kind_for(kind)
    except KeyError as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(2) from None
    typer.echo(render(crd_for(cls)), nl=False)

"""`kubeforge crds ...`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubeforge import API_GROUP

app = typer.Typer(no_args_is_help=True)

# Only files named like ours are ours: other YAML in the folder (a kustomization) is left alone.
_OURS = f"*.{API_GROUP}.yaml"


def drift(out: Path, expected: dict[str, str]) -> list[str]:
    """What differs between `out` and the generated files: 'missing X', 'differs X', 'extra X'."""
    problems = []
    for name, text in expected.items():
        path = out / name
        if not path.is_file():
            problems.append(f"missing {path}")
        elif path.read_text() != text:
            problems.append(f"differs {path}")
    for path in sorted(out.glob(_OURS)) if out.is_dir() else []:
        if path.name not in expected:
            problems.append(f"extra {path}")
    return problems


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Folder for <plural>.kubeforge.io.yaml files.")] = Path("crds"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the files differ from the API models.")
    ] = False,
) -> None:
    """Generate one CustomResourceDefinition YAML per kind from the API models."""
    from kubeforge.api.crd import generate_all

    expected = generate_all()
    if check:
        problems = drift(out, expected)
        if problems:
            for line in problems:
                typer.echo(line, err=True)
            typer.echo(f"CRDs in {out} are out of date; run `kubeforge crds generate --out {out}`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{len(expected)} CRDs in {out} match the API models")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in expected.items():
        path = out / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            typer.echo(f"wrote {path}")
    # A renamed or removed kind must not leave its old CRD behind.
    for path in sorted(out.glob(_OURS)):
        if path.name not in expected:
            path.unlink()
            typer.echo(f"removed {path}")


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

"""Files generated from the code (CRDs, the chart's copies): check for drift or write them.

Only files named like ours, in the folder we own, count as ours: other YAML there (a
kustomization) is left alone, and a stale file of ours is removed so a deleted kind is
never installed again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer

from kubeforge import API_GROUP

OURS = f"*.{API_GROUP}.yaml"


def drift(root: Path, expected: Mapping[Path, str], owned: Path) -> list[str]:
    """'missing X', 'differs X', 'extra X' for files under `root` (keys and `owned` relative to it)."""
    problems = []
    for rel, text in expected.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"missing {path}")
        elif path.read_text() != text:
            problems.append(f"differs {path}")
    folder = root / owned
    for path in sorted(folder.glob(OURS)) if folder.is_dir() else []:
        if path.relative_to(root) not in expected:
            problems.append(f"extra {path}")
    return problems


def sync(root: Path, expected: Mapping[Path, str], owned: Path, *, check: bool, stale: str, done: str) -> None:
    """With `check`, exit 1 listing the drift (`stale` says how to fix it); else write what changed."""
    if check:
        problems = drift(root, expected, owned)
        if problems:
            for line in problems:
                typer.echo(line, err=True)
            typer.echo(stale, err=True)
            raise typer.Exit(1)
        typer.echo(done)
        return
    for rel, text in expected.items():
        path = root / rel
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            typer.echo(f"wrote {path}")
    for path in sorted((root / owned).glob(OURS)):
        if path.relative_to(root) not in expected:
            path.unlink()
            typer.echo(f"removed {path}")

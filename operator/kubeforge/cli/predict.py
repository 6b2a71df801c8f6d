"""`kubeforge predict SERVICE IMAGE...`"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add predict to the top-level app."""

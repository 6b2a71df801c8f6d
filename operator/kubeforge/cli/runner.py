"""`kubeforge run`, `get`, `stop`, `delete`: the local runner's commands (registered on the main app)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add run/get/stop/delete to the top-level app."""

"""`kubeforge models list`: every architecture a TrainingJob can name (`kubeforge.models.catalog`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kubeforge.models import catalog

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_models(
    task: Annotated[str | None, typer.Option("--task", "-t", help=f"Only this task: {', '.join(catalog.TASKS)}.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list of objects (name, task, framework, ...).")]
    = False,
) -> None:
    """Name, task, framework, parameters, default input size and whether published weights exist."""
    if task is not None and task not in catalog.TASKS:
        typer.echo(f"error: --task: expected one of {', '.join(catalog.TASKS)}, got {task!r}", err=True)
        raise typer.Exit(2)
    if as_json:
        print(json.dumps(catalog.as_json(task)))
        return
    from kubeforge.local.printing import render_table

    rows = [["NAME", "TASK", "FRAMEWORK", "FAMILY", "PARAMS", "SIZE", "WEIGHTS", "NOTES"]]
    for e in catalog.entries(task):
        rows.append([e.name, e.task, e.framework, e.family, f"{e.params_m:.1f}M", str(e.default_image_size),
                     "yes" if e.pretrained_weights else "no", e.description])
    print(render_table(rows))
    print(f"\nPARAMS at {catalog.REFERENCE_CLASSES} classes; SIZE is the default spec.model.imageSize. "
          "framework timm takes any timm model name; framework custom runs your own trainer (docs/custom-models.md).")

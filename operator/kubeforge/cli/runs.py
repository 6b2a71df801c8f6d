"""`kubeforge runs KIND NAME`: every run of a resource, newest first (local mode's state directory).

A changed spec, or changed inputs, is a new run with its own id and store prefix; earlier runs stay
until `artifactPolicy` removes them. An InferenceService serves its TrainingJob's latest successful
run unless `spec.model.run` pins one of these ids. In a cluster the same list is `status.runs`
(`kubectl get trainingjob NAME -o jsonpath='{.status.runs}'`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kubeforge.cli.runner import NamespaceOpt, StateDirOpt, state_record, user_errors
from kubeforge.local import printing


@user_errors
def runs_command(
    kind: Annotated[str, typer.Argument(help="Kind, plural or short name (e.g. trainingjob, tj).")],
    name: Annotated[str, typer.Argument()],
    output: Annotated[str | None, typer.Option("--output", "-o", help="json: the status.runs list")] = None,
    namespace: NamespaceOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """List a resource's runs (the current one marked *): id, phase, generation, times, store prefix."""
    _, record = state_record(kind, name, namespace, state_dir)
    if output == "json":
        status = record.resource.status
        print(json.dumps([r.dump() for r in status.runs] if status else [], indent=2))
        return
    rows = printing.runs_rows(record)
    if len(rows) == 1:
        print(f"{printing.label(record)} has no runs yet")
        return
    print(printing.render_table(rows))
    if record.store:
        print(f"store: {record.store}")


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_command)


__all__ = ["register", "runs_command"]

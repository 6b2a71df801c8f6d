"""`kubeforge report NAME`: where a Benchmark's report.html is (and `--open` opens it); the headline
metrics with their intervals that `kubeforge get benchmark NAME` prints under its table."""

from __future__ import annotations

import webbrowser
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer

from kubeforge.api import Benchmark
from kubeforge.cli.runner import NamespaceOpt, StateDirOpt, state_record, user_errors
from kubeforge.local import printing
from kubeforge.local.state import Record, StateError

PRESIGN_FOR = timedelta(hours=1)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def headline_lines(record: Record) -> list[str]:
    """Per model of the current run, each headline metric as 'AP50 0.812 [0.774, 0.851]'."""
    status = record.resource.status
    if not isinstance(record.resource, Benchmark) or status is None or not status.metrics:  # type: ignore[union-attr]
        return []
    lines = []
    for model, metrics in status.metrics.items():  # type: ignore[union-attr]
        intervals = status.intervals.get(model, {})  # type: ignore[union-attr]
        cells = []
        for metric, value in metrics.items():
            interval = intervals.get(metric)
            shown = f"{metric} {_number(value)}"
            if interval and len(interval) == 2:
                shown += f" [{_number(interval[0])}, {_number(interval[1])}]"
            cells.append(shown)
        lines.append(f"{model}: " + ", ".join(cells))
    if any(status.intervals.values()):  # type: ignore[union-attr]
        lines.append("[low, high]: bootstrap interval over the evaluated images")
    return lines


def _presigned(uri: str) -> str:
    """An HTTP(S) URL that fetches an s3:// object for an hour (credentials from the environment)."""
    from kubeforge.store.s3 import S3Store

    parsed = urlparse(uri)
    store = S3Store.from_uri(f"s3://{parsed.netloc}", create_bucket=False)
    return store.presigned_url(parsed.path.lstrip("/"), expires=PRESIGN_FOR)


@user_errors
def report_command(
    name: Annotated[str, typer.Argument(help="The Benchmark.")],
    open_: Annotated[bool, typer.Option("--open", help="Open the report in the web browser.")] = False,
    presign: Annotated[bool, typer.Option(
        "--presign", help="S3 store: also print a presigned HTTP URL (valid for an hour).")] = False,
    namespace: NamespaceOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """Print where the Benchmark's report.html is: a file path (local store) or an s3:// URI."""
    _, record = state_record("Benchmark", name, namespace, state_dir)
    status = record.resource.status
    uri = getattr(status, "report_uri", None)
    if not uri:
        phase = status.phase.value if status is not None and status.phase is not None else "never run"
        raise StateError(f"{printing.label(record)} has no report yet (phase {phase}); `kubeforge run` it first")
    print(uri)
    if uri.startswith("s3://"):
        target = _presigned(uri) if presign or open_ else uri
        if presign:
            print(target)
    else:
        path = Path(uri)
        if not path.is_file():
            raise StateError(f"{printing.label(record)}: report {uri} does not exist (was the store removed?)")
        target = path.resolve().as_uri()
    if open_:
        print(f"opening {target}")
        if not webbrowser.open(target):
            print("no web browser found; open the address above")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


__all__ = ["headline_lines", "register", "report_command"]

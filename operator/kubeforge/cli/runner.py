"""`kubeforge run`, `get`, `describe`, `stop`, `delete`, `logs`: the local runner's commands.

Registered on the main app. User errors (bad manifests, unknown resources, an unreachable
store) print one red message and exit 2; a step that fails makes `run` exit 1.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.text import Text

from kubeforge import API_GROUP
from kubeforge.api import Benchmark, InferenceService, Phase, kind_for
from kubeforge.api.registry import kinds_for
from kubeforge.core.usage import artifacts_to_delete
from kubeforge.local import printing, serving
from kubeforge.local.manifests import ManifestError, load_manifests, resource_label
from kubeforge.local.runner import Runner, summary_table
from kubeforge.local.state import Record, StateDir, StateError, local_store_uri, resolve_state_dir
from kubeforge.store import StoreError, open_store

F = TypeVar("F", bound=Callable[..., Any])

StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="State directory (default: $KUBEFORGE_STATE_DIR or ./.kubeforge)."),
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the resource.")]


def _err() -> Console:
    # soft_wrap: a long error line stays one line (greppable, copyable) when not on a terminal.
    return Console(stderr=True, soft_wrap=True)


def _out() -> Console:
    # Off a terminal rich would assume 80 columns and squeeze the summary table.
    return Console(width=None if sys.stdout.isatty() else 160)


def user_errors(fn: F) -> F:
    """Turn the errors a user can fix into one red message and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ManifestError as exc:
            err = _err()
            count = len(exc.problems)
            err.print(Text(f"error: {count} problem{'s' if count > 1 else ''} in the manifests; nothing was run",
                           style="bold red"))
            for line in exc.problems:
                err.print(Text(f"  {line}", style="red"))
            raise typer.Exit(2) from None
        except (StateError, StoreError) as exc:
            _err().print(Text(f"error: {exc}", style="bold red"))
            raise typer.Exit(2) from None
        except KeyError as exc:  # kind_for: an unknown kind
            _err().print(Text(f"error: {exc.args[0] if exc.args else exc}", style="bold red"))
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _state(state_dir: Path | None) -> StateDir:
    return StateDir(resolve_state_dir(state_dir))


def state_record(kind: str, name: str, namespace: str, state_dir: Path | None) -> tuple[StateDir, Record]:
    """The state directory and one resource's record in it (a clear StateError when it is not there)."""
    state = _state(state_dir)
    return state, state.get(kind_for(kind).model_fields["kind"].default, namespace, name)


@user_errors
def run_command(
    file: Annotated[list[Path], typer.Option(
        "--filename", "-f", help="A manifest file or a directory of *.yaml; repeat for several.")],
    store: Annotated[str | None, typer.Option(
        "--store", help="Store URI (default: $KUBEFORGE_STORE or file://<state-dir>/store).")] = None,
    state_dir: StateDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; run nothing.")] = False,
) -> None:
    """Validate the manifests, order them by their references, and run every step that changed."""
    state = _state(state_dir)
    store_uri = local_store_uri(store, state.root)
    console = _out()
    loaded = load_manifests(file)
    runner = Runner(state, store_uri, console)
    plan = runner.plan(loaded)
    if dry_run:
        rows = [["#", "RESOURCE", "ACTION", "DEPENDS ON", "FROM"]]
        for i, (node, action) in enumerate(runner.preview(plan), start=1):
            deps = ", ".join(f"{d.key[0]}/{d.key[2]}" + ("" if d.in_plan else " (state)") for d in node.deps)
            rows.append([str(i), node.label, action, deps or "-", node.where])
        print(f"Plan (dry run, nothing runs; state {state.root}, store {store_uri}):")
        print(printing.render_table(rows))
        return
    open_store(store_uri).check()  # an unreachable store fails here, before any step starts
    try:
        outcomes = runner.run(plan)
    except KeyboardInterrupt:
        _err().print("[red]interrupted[/]")
        raise typer.Exit(130) from None
    console.print(summary_table(outcomes))
    failed = [o for o in outcomes if o.action in ("failed", "dependency-failed")]
    if failed:
        console.print(f"[red]{len(failed)} of {len(outcomes)} resources failed[/]; "
                      "`kubeforge logs KIND NAME` shows a step's output")
        # The table's OUTPUT column holds the reason's first line only: here is all of it, wrapped, never cut.
        for line in printing.failure_lines([o.record for o in failed]):
            console.print(Text(line, style="red"), overflow="fold")
        raise typer.Exit(1)


@user_errors
def get_command(
    kind: Annotated[str, typer.Argument(
        help="Kind, plural or short name (e.g. trainingjobs, tj), or `kubeforge` for every kind.")],
    name: Annotated[str | None, typer.Argument(help="One resource; all when left out.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="wide | yaml | json")] = None,
    namespace: NamespaceOpt = "default",
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
    state_dir: StateDirOpt = None,
) -> None:
    """List resources the way `kubectl get` does (the TrainingJob table is the experiments table)."""
    if output not in (None, "wide", "yaml", "json"):
        raise StateError(f"--output {output!r}: expected wide, yaml or json")
    classes = kinds_for(kind)
    state = _state(state_dir)
    by_kind: list[tuple[type[Any], list[Record]]] = []
    for cls in classes:
        kind_name = cls.model_fields["kind"].default
        if name is not None:
            # One name across a category: the kinds that have it (kubectl says NotFound per kind).
            found = state.load(kind_name, namespace, name)
            if found is None and len(classes) == 1:
                state.get(kind_name, namespace, name)  # raises its "not found" error
            records = [found] if found is not None else []
        else:
            records = state.list(kind_name, None if all_namespaces else namespace)
        if cls is InferenceService:  # live request counts from the local servers' metrics
            for record in records:
                serving.refresh_requests(record.resource.status)  # type: ignore[arg-type]
        by_kind.append((cls, records))
    every = [r for _, records in by_kind for r in records]
    if name is not None and not every:
        raise StateError(f"no resource named {name!r} of the kinds {', '.join(c.__name__ for c in classes)} "
                         f"in namespace {namespace} of the state directory {state.root}")
    if output in ("json", "yaml"):
        single = name is not None and len(classes) == 1
        obj = every[0].resource.dump() if single else printing.list_object(every)
        print(json.dumps(obj, indent=2) if output == "json" else yaml.safe_dump(obj, sort_keys=False), end="\n")
        return
    if not every:
        where = "any namespace" if all_namespaces else f"{namespace} namespace"
        _err().print(f"No resources found in {where}.")
        return
    tables = []
    for cls, records in by_kind:
        if not records:
            continue
        rows = printing.table_rows(cls, records, wide=output == "wide", all_namespaces=all_namespaces)
        if len(classes) > 1:
            # As kubectl prints several kinds: NAME is `kind.group/name`, one table per kind.
            col = rows[0].index("NAME")
            for row in rows[1:]:
                row[col] = f"{cls.__name__.lower()}.{API_GROUP}/{row[col]}"
        tables.append(printing.render_table(rows))
    print("\n\n".join(tables))
    if name is not None and classes == [Benchmark]:  # one Benchmark: its headline metrics with intervals
        from kubeforge.cli.report import headline_lines

        lines = headline_lines(every[0])
        if lines:
            print("\n" + "\n".join(lines))


@user_errors
def describe_command(
    kind: Annotated[str, typer.Argument(help="Kind, plural or short name.")],
    name: Annotated[str, typer.Argument()],
    namespace: NamespaceOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """Show one resource's spec, status, conditions and artifact URIs."""
    state, record = state_record(kind, name, namespace, state_dir)
    run_dir = state.run_dir(*record.key)
    print(printing.describe(record, str(run_dir) if run_dir.is_dir() else None))


def _stop_service(state: StateDir, record: Record) -> bool:
    status = record.resource.status
    was_running = serving.stop(status)  # type: ignore[arg-type]
    if status is not None:
        status.phase = Phase.STOPPED
        status.ready = False  # type: ignore[union-attr]
        status.pid = None  # type: ignore[union-attr]
        status.url = None  # type: ignore[union-attr]
        status.grpc_url = None  # type: ignore[union-attr]
        status.set_condition("Ready", False, "Stopped", "stopped with `kubeforge stop`")
        state.save(record)
    return was_running


@user_errors
def stop_command(
    kind: Annotated[str, typer.Argument(help="inferenceservice (the only kind with a process to stop).")],
    name: Annotated[str, typer.Argument()],
    namespace: NamespaceOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """End a served model's tritonserver process (phase Stopped); `run` starts it again."""
    if kind_for(kind) is not InferenceService:
        raise StateError(f"stop: only inferenceservices run a process; got kind {kind!r}")
    state = _state(state_dir)
    record = state.get("InferenceService", namespace, name)
    label = resource_label("InferenceService", namespace, name)
    if _stop_service(state, record):
        print(f"{label} stopped")
    else:
        print(f"{label} was not running; marked Stopped")


def _delete_artifacts(state: StateDir, record: Record, going: set[tuple[str, str, str]]) -> list[str]:
    """artifactPolicy: Delete removes every run's store output (the operator's rule: kubeforge.core.usage)."""
    others = [r.resource for r in state.list() if r.key not in going]
    prefixes, _ = artifacts_to_delete(record.resource, others)
    if not prefixes or not record.store:
        return []
    store = open_store(record.store)
    for prefix in prefixes:
        for key in list(store.list(prefix)):
            store.delete(key)
    return prefixes


@user_errors
def delete_command(
    kind: Annotated[str, typer.Argument(help="Kind, plural or short name.")],
    name: Annotated[str, typer.Argument()],
    namespace: NamespaceOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """Forget a resource (and what it owns); a served model is stopped first. Store artifacts are kept,
    unless its spec.artifactPolicy is Delete (then every run's output goes, but never data still in use)."""
    state, record = state_record(kind, name, namespace, state_dir)
    owned = [r for r in state.list(namespace=namespace)
             if any(o.get("kind") == record.resource.kind and o.get("name") == name
                    for o in (r.resource.metadata.model_extra or {}).get("ownerReferences") or [])]
    going = {r.key for r in [*owned, record]}
    for rec in [*owned, record]:
        if isinstance(rec.resource, InferenceService):
            _stop_service(state, rec)
        removed = _delete_artifacts(state, rec, going)
        state.delete(*rec.key)
        print(f'{rec.resource.kind.lower()}.kubeforge.io "{rec.resource.name}" deleted')
        for prefix in removed:
            print(f"  removed {rec.store.rstrip('/')}/{prefix} (artifactPolicy: Delete)")  # type: ignore[union-attr]


@user_errors
def logs_command(
    kind: Annotated[str, typer.Argument(help="Kind, plural or short name.")],
    name: Annotated[str, typer.Argument()],
    server: Annotated[bool, typer.Option("--server", help="InferenceService: tritonserver's log.")] = False,
    namespace: NamespaceOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """Print the output of a resource's last step run (or its tritonserver log with --server)."""
    state, record = state_record(kind, name, namespace, state_dir)
    path = state.run_dir(*record.key) / ("triton.log" if server else "step.log")
    if not path.is_file():
        raise StateError(f"{resource_label(*record.key)}: no {path.name} at {path} (has it run?)")
    print(path.read_text(errors="replace"), end="")


def register(app: typer.Typer) -> None:
    """Add run/get/describe/stop/delete/logs to the top-level app."""
    app.command("run")(run_command)
    app.command("get")(get_command)
    app.command("describe")(describe_command)
    app.command("stop")(stop_command)
    app.command("delete")(delete_command)
    app.command("logs")(logs_command)

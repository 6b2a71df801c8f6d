"""`kubeforge step KIND --spec run.json --result result.json`: the entrypoint a Job (or the
local runner) calls. It reads the run spec, runs the step, writes the result atomically."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from kubeforge.atomic_file import atomic_write_text
from kubeforge.steps.errors import StepFailedError
from kubeforge.steps.spec import BenchmarkRun, DatasetVersionRun, PredictRun, ServeRun, TrainRun
from kubeforge.store import StoreError, open_store

app = typer.Typer(no_args_is_help=True, help="Run one step (what a Kubernetes Job runs).")

# step name -> (run spec model, module whose `run(spec) -> dict` does the work)
STEPS: dict[str, tuple[type, str]] = {
    "dataset-version": (DatasetVersionRun, "kubeforge.steps.dataset_version"),
    "train": (TrainRun, "kubeforge.steps.train"),
    "benchmark": (BenchmarkRun, "kubeforge.steps.benchmark"),
    "serve": (ServeRun, "kubeforge.steps.serve"),
    "predict": (PredictRun, "kubeforge.steps.predict"),
}

TERMINATION_LOG = Path("/dev/termination-log")
# Overrides TERMINATION_LOG where a "pod" is a plain local process (the test pod runner plays the
# kubelet and reads the message from a file of its own): it must never write into the host's /dev.
TERMINATION_LOG_ENV = "KUBEFORGE_TERMINATION_LOG"


def termination_log_path() -> Path:
    """Where the kubelet reads the termination message: the container's `terminationMessagePath`."""
    return Path(os.environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG)


def run_step(step: str, spec_path: Path) -> dict[str, Any]:
    model, module_name = STEPS[step]
    try:
        spec = model.model_validate_json(spec_path.read_text())
    except (OSError, ValidationError) as exc:
        raise StepFailedError(f"{spec_path}: invalid {step} run spec: {exc}") from exc
    module = importlib.import_module(module_name)
    return module.run(spec)


class StepTerminatedError(BaseException):
    """SIGTERM: the pod was deleted or evicted, or the local runner is stopping the step.

    A BaseException (like KeyboardInterrupt) so no `except Exception` in a step swallows it, and
    the step's own cleanup runs (a training marks progress.json Failed) before it exits; Python's
    default for SIGTERM is to die on the spot, leaving progress.json saying "Training".
    """


SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # what a container killed by SIGTERM reports


def _raise_on_sigterm(signum: int, _frame: object) -> None:
    raise StepTerminatedError(f"the step was stopped by signal {signal.Signals(signum).name} (its pod was "
                              "deleted or evicted, or its runner stopped it)")


def _default_sigterm_in_child() -> None:
    # A library's forked helper (OpenVINO's telemetry sender, say) must die on SIGTERM as usual: with our
    # Python handler inherited, a child stuck in C code never runs it, its parent's terminate() is lost,
    # and the step hangs at exit joining it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def install_sigterm_handler() -> None:
    """SIGTERM raises StepTerminatedError in this process; processes it forks keep the default."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    os.register_at_fork(after_in_child=_default_sigterm_in_child)


def _report_failure(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    # Kubernetes copies this file into the pod status; the operator puts it in the condition.
    path = termination_log_path()
    if path.parent.is_dir() and os.access(path.parent, os.W_OK):
        try:
            path.write_text(message[-4000:])
        except OSError:
            pass


def _store_result(spec_path: Path, key: str, text: str) -> None:
    # The operator reads results from the store: a pod has no API credentials to write status.
    store_uri = json.loads(spec_path.read_text())["store"]
    open_store(store_uri).put_bytes(key, text.encode())


def is_result_writer(env: dict[str, str] | None = None) -> bool:
    """Whether this process writes the step's result: only global rank 0 of a distributed run.

    torchrun starts every process with this command and sets `RANK` (global); without torchrun a
    pod of an indexed Job still has `NODE_RANK` (its completion index). Neither set: a plain run.
    """
    env = dict(os.environ) if env is None else env
    for name in ("RANK", "NODE_RANK"):
        value = (env.get(name) or "").strip()
        if value:
            return value == "0"
    return True


def _make_command(step: str) -> None:
    @app.command(step)
    def command(
        spec: Annotated[Path, typer.Option("--spec", help="The run spec (JSON).")],
        result: Annotated[Path | None, typer.Option("--result", help="Write the status result here.")] = None,
        result_key: Annotated[
            str | None,
            typer.Option("--result-key", "--result-store-key",
                         help="Also write the result to this key of the run spec's store (cluster mode)."),
        ] = None,
    ) -> None:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            install_sigterm_handler()
        try:
            out = run_step(step, spec)
        except (StepFailedError, ValueError, KeyError, OSError) as exc:
            _report_failure(str(exc) if not isinstance(exc, KeyError) else f"missing: {exc}")
            raise typer.Exit(1) from None
        except StepTerminatedError as exc:
            _report_failure(str(exc))
            raise typer.Exit(SIGTERM_EXIT_CODE) from None
        text = json.dumps(out, indent=2, sort_keys=True)
        if not is_result_writer():
            # Every rank would otherwise write (and race on) the same result: rank 0 speaks for the run.
            print(f"rank {os.environ.get('RANK') or os.environ.get('NODE_RANK')}: the result is rank 0's to write",
                  file=sys.stderr)
            return
        if result_key:
            try:
                _store_result(spec, result_key, text)
            except (StoreError, OSError, ValueError) as exc:
                _report_failure(f"writing the result to the store key {result_key!r}: {exc}")
                raise typer.Exit(1) from None
        if result is not None:
            atomic_write_text(result, text)
        else:
            print(text)

    command.__doc__ = f"Run the {step} step."


for _step in STEPS:
    _make_command(_step)

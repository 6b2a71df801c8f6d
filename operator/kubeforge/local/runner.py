"""Run a plan: each resource's step as a subprocess, in order, with status in the state dir.

The subprocess is the same entrypoint a Kubernetes Job runs (`kubeforge step NAME --spec
run.json --result result.json`), so local mode exercises exactly the cluster's code path.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from kubeforge.api import InferenceService, InferenceServiceStatus, Phase, Resource
from kubeforge.api.common import StatusBase, now_rfc3339
from kubeforge.api.references import WAITING_FOR_PROMOTION
from kubeforge.api.training_job import Progress
from kubeforge.atomic_file import atomic_write_text
from kubeforge.core import status as cs
from kubeforge.core.progress import PROGRESS_KINDS, read_progress, settle_progress
from kubeforge.core.resolve import Lookup, Waiting, build_run
from kubeforge.local import serving
from kubeforge.local.graph import Node, Plan, build_plan
from kubeforge.local.manifests import LoadedResource, ResourceKey, display_path
from kubeforge.local.progress import POLL_SECONDS, ProgressWatcher
from kubeforge.local.state import Record, StateDir, creation_timestamp, run_digest
from kubeforge.steps.runs import STEP_NAMES
from kubeforge.steps.spec import ServeRun, StepRun
from kubeforge.store import open_store

DEFAULT_STEP_COMMAND = (sys.executable, "-m", "kubeforge.cli.main", "step")
# Environment variables whose values must never reach a log, a status or the terminal.
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
SECRET_MARKERS = ("SECRET", "PASSWORD", "TOKEN")


def secret_values(env: Mapping[str, str]) -> list[str]:
    values = {v for k, v in env.items() if (k in SECRET_ENV or any(m in k.upper() for m in SECRET_MARKERS))
              and len(v) >= 4}
    return sorted(values, key=len, reverse=True)  # longest first: a secret may contain another


def redact(text: str, secrets: Sequence[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


def key_output(resource: Resource) -> str:
    """The one thing a user wants to see per resource in the summary."""
    st = resource.status
    if st is None:
        return ""
    if st.phase == Phase.FAILED:
        return st.message.splitlines()[0][:100] if st.message else ""
    data = st.dump()
    if resource.kind == "DatasetVersion" and data.get("digest"):
        images = (data.get("stats") or {}).get("images")
        return f"digest {data['digest'][:12]}" + (f", {images} images" if images is not None else "")
    if resource.kind == "TrainingJob" and data.get("bestMetric"):
        best = data["bestMetric"]
        return f"{best['name']}={best['value']:.4g} (epoch {best['epoch']})"
    if resource.kind == "Benchmark":
        return data.get("headline") or ""
    if resource.kind == "InferenceService":
        return data.get("url") or ""
    if resource.kind == "PredictionJob" and data.get("digest"):
        return (f"{data.get('dataset')}@{data['digest'][:12]}, {data.get('images')} images, "
                f"{data.get('predictions')} predictions")
    return ""


@dataclass
class Outcome:
    key: ResourceKey
    action: str  # unchanged | succeeded | waiting | failed | dependency-failed
    seconds: float
    record: Record


class Runner:
    """Runs plans against one state directory and one store."""

    def __init__(self, state: StateDir, store_uri: str, console: Console | None = None,
                 step_command: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                 progress_interval: float = POLL_SECONDS) -> None:
        self.state = state
        self.store_uri = store_uri
        self.console = console or Console()
        # Tests substitute a stand-in for the real steps; the default is the Job entrypoint.
        self.step_command = list(step_command or DEFAULT_STEP_COMMAND)
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.secrets = secret_values(self.env)
        self.progress_interval = progress_interval

    def plan(self, loaded: list[LoadedResource]) -> Plan:
        return build_plan(loaded, self.state.succeeded())

    def _existing_records(self, plan: Plan) -> dict[ResourceKey, Record]:
        return {key: self.state.get(*key) for key in plan.existing}

    def _lookup(self, records: Mapping[ResourceKey, Record]) -> Lookup:
        """The core's view of other resources: what this run produced so far, else the state directory."""
        def get(kind: str, namespace: str, name: str) -> Resource | None:
            record = records.get((kind, namespace, name)) or self.state.load(kind, namespace, name)
            return record.resource if record is not None else None
        return get

    def _unchanged(self, prev: Record | None, digest: str) -> bool:
        if prev is None or prev.spec_hash != digest:  # the run spec names the store too
            return False
        status = prev.resource.status
        if isinstance(prev.resource, InferenceService):
            # A served model is Running while its process lives.
            return status is not None and status.phase == Phase.RUNNING and serving.is_alive(status)
        return prev.phase == Phase.SUCCEEDED

    def preview(self, plan: Plan) -> list[tuple[Node, str]]:
        """What `run` would do with each resource, without running anything (for --dry-run)."""
        records = self._existing_records(plan)
        will_run: set[ResourceKey] = set()
        out = []
        for node in plan.nodes:
            prev = self.state.load(*node.key)
            if any(d.key in will_run for d in node.deps):
                action = "run (an upstream resource runs first)"
            else:
                try:
                    run: StepRun | None = build_run(node.resource, self._lookup(records), self.store_uri)
                except Waiting:
                    run = None
                if run is not None and self._unchanged(prev, run_digest(run)):
                    action = "unchanged"
                    records[node.key] = prev  # type: ignore[assignment]
                elif prev is None:
                    action = "run (new)"
                elif prev.phase not in (Phase.SUCCEEDED, Phase.RUNNING):
                    action = f"run (last run {prev.phase})"
                else:
                    action = "run (spec or upstream changed)"
            if action != "unchanged":
                will_run.add(node.key)
            out.append((node, action))
        return out

    def run(self, plan: Plan) -> list[Outcome]:
        """Run every resource that changed; stops dependents of a failure, not independent ones."""
        with self.state.lock():
            records = self._existing_records(plan)
            outcomes: list[Outcome] = []
            failed: set[ResourceKey] = set()
            for node in plan.nodes:
                outcome = self._run_node(node, records, failed)
                records[node.key] = outcome.record
                if outcome.action in ("failed", "dependency-failed"):
                    failed.add(node.key)
                outcomes.append(outcome)
            return outcomes

    def _new_record(self, node: Node, prev: Record | None, digest: str | None) -> Record:
        """The record of a new attempt: the applied resource with the last status (its runs) carried over."""
        res = node.resource.model_copy(deep=True)
        extra = res.metadata.model_extra if res.metadata.model_extra is not None else {}
        extra["creationTimestamp"] = (creation_timestamp(prev.resource) if prev else None) or now_rfc3339()
        generation = (prev.resource.metadata.generation or 1) if prev else 1
        if prev is not None and prev.resource.spec.dump() != res.spec.dump():
            generation += 1
        res.metadata.generation = generation
        if prev is not None and prev.resource.status is not None:
            res.status = prev.resource.status.model_copy(deep=True)  # type: ignore[assignment]
        else:
            res.status = cs.status_class(res.kind)()  # type: ignore[assignment]
        manifest = display_path(node.path) if node.path else None
        return Record(res, digest, manifest, self.store_uri)

    def _save(self, record: Record, status: StatusBase) -> None:
        record.resource.status = status  # type: ignore[assignment]
        self.state.save(record)

    @staticmethod
    def _status(record: Record) -> StatusBase:
        assert record.resource.status is not None  # _new_record sets one
        return record.resource.status

    def _last_progress(self, record: Record) -> None:
        """A failed run's progress as the step last wrote it (how far it got: a rerun continues from there)."""
        status, kind = self._status(record), record.resource.kind
        if kind in PROGRESS_KINDS and status.output_prefix:
            progress = read_progress(open_store(self.store_uri), status.output_prefix, kind)
            if progress is not None:
                status.progress = progress  # type: ignore[attr-defined]

    def _stopped(self, record: Record, message: str) -> None:
        """progress.json agrees with the status after any stop (the trainer did not get to say so)."""
        prefix = self._status(record).output_prefix
        if record.resource.kind in PROGRESS_KINDS and prefix:
            settle_progress(open_store(self.store_uri), prefix, "Failed", message)

    def _run_node(self, node: Node, records: dict[ResourceKey, Record], failed: set[ResourceKey]) -> Outcome:
        t0 = time.monotonic()
        prev = self.state.load(*node.key)
        broken = [d for d in node.deps if d.key in failed]
        if broken:
            record = self._new_record(node, prev, None)
            names = ", ".join(f"{d.key[0]}/{d.key[2]} ({d.field})" for d in broken)
            self._save(record, cs.set_phase(self._status(record), Phase.FAILED, "DependencyFailed",
                                            f"not run: {names} failed", record.resource.metadata.generation))
            self.console.print(f"[red]✗[/] {node.label}: not run, depends on failed {names}")
            return Outcome(node.key, "dependency-failed", 0.0, record)

        try:
            run = build_run(node.resource, self._lookup(records), self.store_uri)
        except Waiting as exc:  # an upstream resource succeeded but did not record what this one needs
            if exc.reason == WAITING_FOR_PROMOTION:
                return self._wait(node, prev, exc, t0)
            record = self._new_record(node, prev, None)
            self._save(record, cs.set_phase(self._status(record), Phase.FAILED, "InvalidReference", exc.message,
                                            record.resource.metadata.generation))
            self.console.print(f"[red]✗[/] {node.label}: {exc.message}")
            return Outcome(node.key, "failed", time.monotonic() - t0, record)
        digest = run_digest(run)
        if self._unchanged(prev, digest):
            assert prev is not None
            self.console.print(f"[dim]•[/] {node.label}: unchanged")
            return Outcome(node.key, "unchanged", 0.0, prev)

        record = self._new_record(node, prev, digest)
        before = getattr(record.resource.status, "training_run", None)
        before_job = getattr(record.resource.status, "training_job", None)
        status, _ = cs.start_run(self._status(record), run, record.resource.metadata.generation)
        if isinstance(node.resource, InferenceService):
            notice = cs.served_run_notice(node.resource, before, status, before_job)
            if notice:
                self.console.print(f"[yellow]![/] {node.label}: {notice}")
        cs.mark_running(status)
        cs.set_phase(status, Phase.RUNNING, "Running", f"{STEP_NAMES[node.resource.kind]} step running, run "
                     f"{run.run_id}", record.resource.metadata.generation)
        self._save(record, status)
        run_dir = self.state.run_dir(*node.key)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "result.json").unlink(missing_ok=True)
        # exclude_unset: the step sees what the user wrote, as a Job would see the custom resource;
        # steps tell "left at its default" from "set" (e.g. optimizer.momentum with AdamW).
        atomic_write_text(run_dir / "run.json", run.model_dump_json(indent=2, exclude_unset=True) + "\n")

        if isinstance(prev.resource if prev else None, InferenceService) and prev is not None:
            # The old server would keep serving the repository the step is about to replace.
            serving.stop(prev.resource.status)  # type: ignore[arg-type]

        try:
            error = self._execute(node, run_dir, record)
        except KeyboardInterrupt:
            # Not left "Running" forever: the next run sees a failed attempt and retries it.
            message = "interrupted (Ctrl-C) while the step ran"
            self._save(record, cs.fail(self._status(record), "Interrupted", message,
                                       record.resource.metadata.generation))
            self._stopped(record, message)
            raise
        result: Any = {}
        if error is None:
            result, error = self._read_result(run_dir)
        if error is None:
            error = self._succeed(node, record, result, run_dir, run)
        seconds = time.monotonic() - t0
        if error is not None:
            self._last_progress(record)
            self._save(record, cs.fail(self._status(record), cs.STEP_FAILED, error,
                                       record.resource.metadata.generation))
            self._stopped(record, error)
            self.console.print(f"[red]✗[/] {node.label} failed after {seconds:.1f}s: {error}")
            return Outcome(node.key, "failed", seconds, record)
        self.console.print(f"[green]✓[/] {node.label} {record.phase.lower() if record.phase else ''} "
                           f"in {seconds:.1f}s  {key_output(record.resource)}")
        return Outcome(node.key, "succeeded", seconds, record)

    def _wait(self, node: Node, prev: Record | None, exc: Waiting, t0: float) -> Outcome:
        """A Benchmark's gate has not passed in any run (an InferenceService with model.benchmark): not a
        failure, the service waits (a later `kubeforge run` serves the winner once a run's gate passes).
        A server left from before (the spec named a TrainingJob) is stopped: only a promoted model is served."""
        record = self._new_record(node, prev, None)
        status = self._status(record)
        if isinstance(status, InferenceServiceStatus) and status.pid is not None:
            serving.stop(status)
            status.pid, status.ready = None, False
        self._save(record, cs.set_phase(status, Phase.WAITING, exc.reason, exc.message,
                                        record.resource.metadata.generation))
        self.console.print(f"[yellow]…[/] {node.label}: waiting ({exc.reason}): {exc.message}")
        return Outcome(node.key, "waiting", time.monotonic() - t0, record)

    def _watch(self, node: Node, record: Record, spinner: Status) -> contextlib.AbstractContextManager[Any]:
        """For a TrainingJob (PredictionJob), mirror the store's progress.json into its status while it runs."""
        experiment = self._status(record).output_prefix
        kind = node.resource.kind
        if kind not in PROGRESS_KINDS or not experiment:
            return contextlib.nullcontext()

        def update(progress: Any) -> None:
            status = self._status(record)
            status.progress = progress  # type: ignore[attr-defined]
            self._save(record, status)
            where = (f"epoch {progress.epoch}/{progress.epochs}" if isinstance(progress, Progress)
                     else progress.summary)
            spinner.update(f"[bold]{node.label}[/]: {STEP_NAMES[kind]} step running, {where}")

        return ProgressWatcher(self.store_uri, experiment, update, self.progress_interval, kind)

    def _execute(self, node: Node, run_dir: Path, record: Record) -> str | None:
        """Run the step, streaming its output; returns None on success or the error message."""
        step = STEP_NAMES[node.resource.kind]
        cmd = [*self.step_command, step, "--spec", str(run_dir / "run.json"),
               "--result", str(run_dir / "result.json")]
        last_error = ""
        last_line = ""
        with open(run_dir / "step.log", "w") as log, \
                self.console.status(f"[bold]{node.label}[/]: {step} step running") as spinner, \
                self._watch(node, record, spinner):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=self.env, bufsize=1, errors="replace")
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = redact(raw.rstrip("\n"), self.secrets)
                    log.write(line + "\n")
                    log.flush()
                    self.console.print(Text(f"  │ {line}", style="dim"), soft_wrap=True)
                    if line.strip():
                        last_line = line.strip()
                        if line.lstrip().lower().startswith("error:"):
                            last_error = line.strip()[len("error:"):].strip()
                code = proc.wait()
            except BaseException:  # Ctrl-C: leave no orphaned step behind
                proc.terminate()
                proc.wait(timeout=30)
                raise
        if code == 0:
            return None
        return last_error or last_line or f"{step} step exited with code {code}"

    def _read_result(self, run_dir: Path) -> tuple[Any, str | None]:
        path = run_dir / "result.json"
        try:
            text = redact(path.read_text(), self.secrets)
        except FileNotFoundError:
            return {}, f"the step exited 0 but wrote no result to {path}"
        atomic_write_text(path, text)  # keep only the redacted form on disk
        try:
            return json.loads(text), None  # what it must be is the core's to say (apply_result)
        except json.JSONDecodeError as exc:
            return {}, f"{path}: not JSON ({exc})"

    def _succeed(self, node: Node, record: Record, result: Any, run_dir: Path, run: StepRun
                 ) -> str | None:
        res = node.resource
        generation = record.resource.metadata.generation
        try:
            status = cs.apply_result(res, self._status(record), result, generation)
        except cs.InvalidResult as exc:
            return f"the step's result {run_dir / 'result.json'}: {exc}"
        if isinstance(res, InferenceService):
            assert isinstance(status, InferenceServiceStatus) and isinstance(run, ServeRun)
            try:
                fields = serving.start(self.store_uri, run.output_prefix, res.name, run_dir, self.env,
                                       canary=status.canary)
            except Exception as exc:  # the launcher's failures vary (timeout, exit, bad repository)
                return f"tritonserver did not become ready: {redact(str(exc), self.secrets)}"
            status = InferenceServiceStatus.model_validate({**status.dump(), **fields})
            served = f"{fields['url']} model {fields['modelName']}"
            if status.canary is not None:
                served += f"; canary {status.canary.training_job} at {status.canary.url}"
            cs.set_phase(status, Phase.RUNNING, cs.SERVING, served, generation, ready=True)
        self._save(record, status)
        return None


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="kubeforge run", show_lines=False)
    for col in ("RESOURCE", "PHASE", "ACTION", "DURATION", "OUTPUT"):
        table.add_column(col)
    colors = {"succeeded": "green", "unchanged": "dim", "waiting": "yellow", "failed": "red",
              "dependency-failed": "red"}
    for out in outcomes:
        res = out.record.resource
        phase = str(out.record.phase or "")
        table.add_row(f"{res.kind}/{res.name}", phase, f"[{colors[out.action]}]{out.action}[/]",
                      f"{out.seconds:.1f}s" if out.action != "unchanged" else "-", key_output(res))
    return table


def run_manifests(loaded: list[LoadedResource], runner: Runner) -> list[Outcome]:
    """Plan and run; the caller prints the summary. Raises ManifestError before anything runs."""
    return runner.run(runner.plan(loaded))


__all__ = ["Outcome", "Runner", "key_output", "redact", "run_manifests", "secret_values", "summary_table"]

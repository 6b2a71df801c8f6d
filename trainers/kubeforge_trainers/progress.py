"""Progress reporting: `progress.json` and `metrics.jsonl` after every epoch, a rich bar on stderr.

The reporter writes through an `ArtifactSink` so the same trainer code publishes to the
experiment's store prefix in a pod, or to a plain directory when run by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kubeforge.atomic_file import atomic_write_bytes
from kubeforge.store import layout

T = TypeVar("T")


class ArtifactSink(Protocol):
    """Where a run publishes files, by path relative to the experiment root."""

    def put_bytes(self, rel: str, data: bytes) -> None: ...

    def put_file(self, rel: str, path: Path) -> None: ...

    def get_bytes(self, rel: str) -> bytes | None:
        """Existing content (for resuming a metrics log), or None."""
        ...


class DirSink:
    """A sink into a local directory (custom trainers run by hand, tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put_bytes(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(self.root / rel, data)

    def put_file(self, rel: str, path: Path) -> None:
        dest = self.root / rel
        if dest.resolve() != path.resolve():
            self.put_bytes(rel, path.read_bytes())

    def get_bytes(self, rel: str) -> bytes | None:
        path = self.root / rel
        return path.read_bytes() if path.is_file() else None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProgressReporter:
    """Reports what a run is doing. `epoch_end` after every epoch; `phase` between stages."""

    def __init__(self, sink: ArtifactSink | None, epochs: int, show_bar: bool | None = None) -> None:
        self.sink = sink
        self.epochs = epochs
        self.epoch = 0
        self.metrics: dict[str, float] = {}
        self.current_phase = "Pending"
        self.history: list[dict[str, object]] = []
        self.console = Console(stderr=True)
        # In a pod or under a test, stderr is no terminal: a bar would print blank lines into the log.
        self.show_bar = self.console.is_terminal if show_bar is None else show_bar
        self.epoch_seconds: list[float] = []

    def resume(self, epoch: int) -> None:
        """Continue after `epoch`: keep the metrics log lines of epochs up to it."""
        self.epoch = epoch
        old = self.sink.get_bytes(layout.METRICS_LOG) if self.sink else None
        if old:
            lines = [json.loads(x) for x in old.decode().splitlines() if x.strip()]
            self.history = [x for x in lines if int(x.get("epoch", 0)) <= epoch]
            if self.history:
                self.metrics = {k: float(v) for k, v in self.history[-1]["metrics"].items()}  # type: ignore[union-attr]

    def phase(self, name: str) -> None:
        self.current_phase = name
        self._write_progress()

    def track(self, items: Iterable[T], total: int, description: str) -> Iterator[T]:
        """Iterate with a progress bar on stderr (transient, so logs stay readable)."""
        if not self.show_bar:
            yield from items
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)

    def epoch_end(self, epoch: int, metrics: dict[str, float], seconds: float) -> None:
        self.epoch = epoch
        self.metrics = dict(metrics)
        self.epoch_seconds.append(seconds)
        record = {"epoch": epoch, "epochs": self.epochs, "metrics": self.metrics,
                  "seconds": round(seconds, 3), "time": _now()}
        self.history.append(record)
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        self.console.print(f"epoch {epoch}/{self.epochs} {shown} ({seconds:.1f}s)")
        if self.sink:
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.history)
            # Object stores have no append: rewrite the whole (small) log each epoch.
            self.sink.put_bytes(layout.METRICS_LOG, text.encode())
        self._write_progress()

    def snapshot(self) -> dict[str, object]:
        return {"epoch": self.epoch, "epochs": self.epochs, "metrics": self.metrics,
                "phase": self.current_phase, "updated": _now()}

    def _write_progress(self) -> None:
        if self.sink:
            self.sink.put_bytes(layout.PROGRESS, json.dumps(self.snapshot(), indent=2, sort_keys=True).encode())


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start

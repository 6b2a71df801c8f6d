"""Mirror a running TrainingJob's (or PredictionJob's) `progress.json` from the store into its status.

The step never talks to the runner (as a pod never talks to the API server); the runner
reads progress from the store, as the operator does, so `kubeforge get trainingjobs` in
another terminal shows the epoch while training runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from kubeforge.core.progress import read_progress
from kubeforge.store import open_store

POLL_SECONDS = 2.0


class ProgressWatcher:
    """Polls `<run prefix>/progress.json` on a daemon thread and calls `on_progress` when it changes."""

    def __init__(self, store_uri: str, run_prefix: str, on_progress: Callable[[Any], None],
                 interval: float = POLL_SECONDS, kind: str = "TrainingJob") -> None:
        self.store = open_store(store_uri)
        self.run_prefix = run_prefix
        self.on_progress = on_progress
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubeforge-progress", daemon=True)
        self.kind = kind
        self._last: Any = None

    def poll(self) -> Any:
        """One read (the core's, as the operator's timer reads it); the progress when it changed."""
        progress = read_progress(self.store, self.run_prefix, self.kind)
        if progress is None or progress == self._last:
            return None
        self._last = progress
        return progress

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            progress = self.poll()
            if progress is not None:
                self.on_progress(progress)

    def __enter__(self) -> ProgressWatcher:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

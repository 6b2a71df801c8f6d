"""Mirror a running TrainingJob's `progress.json` from the store into its status.

The step never talks to the runner (as a pod never talks to the API server); the runner
reads progress from the store, as the operator does, so `kubeforge get trainingjobs` in
another terminal shows the epoch while training runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from kubeforge.api.training_job import Progress
from kubeforge.core.progress import read_progress
from kubeforge.store import open_store

POLL_SECONDS = 2.0


class ProgressWatcher:
    """Polls `<run prefix>/progress.json` on a daemon thread and calls `on_progress` when it changes."""

    def __init__(self, store_uri: str, run_prefix: str, on_progress: Callable[[Progress], None],
                 interval: float = POLL_SECONDS) -> None:
        self.store = open_store(store_uri)
        self.run_prefix = run_prefix
        self.on_progress = on_progress
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubeforge-progress", daemon=True)
        self._last: Progress | None = None

    def poll(self) -> Progress | None:
        """One read (the core's, as the operator's timer reads it); the progress when it changed."""
        progress = read_progress(self.store, self.run_prefix)
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

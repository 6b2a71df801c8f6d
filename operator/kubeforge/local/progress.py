"""Mirror a running TrainingJob's `progress.json` from the store into its status.

The step never talks to the runner (as a pod never talks to the API server); the runner
reads progress from the store, as the operator does, so `kubeforge get trainingjobs` in
another terminal shows the epoch while training runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from kubeforge.store import StoreError, layout, open_store

POLL_SECONDS = 2.0


class ProgressWatcher:
    """Polls `<experiment>/progress.json` on a daemon thread and calls `on_progress` when it changes."""

    def __init__(self, store_uri: str, experiment_prefix: str, on_progress: Callable[[dict[str, Any]], None],
                 interval: float = POLL_SECONDS) -> None:
        self.store_uri = store_uri
        self.key = f"{experiment_prefix.rstrip('/')}/{layout.PROGRESS}"
        self.on_progress = on_progress
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubeforge-progress", daemon=True)
        self._last: bytes | None = None

    def poll(self) -> dict[str, Any] | None:
        """One read; returns the progress when it changed since the last read."""
        try:
            data = open_store(self.store_uri).get_bytes(self.key)
        except (KeyError, StoreError):
            return None  # not written yet, or the store blinked: the next poll tries again
        if data == self._last:
            return None
        self._last = data
        try:
            progress = json.loads(data)
        except json.JSONDecodeError:
            return None
        return progress if isinstance(progress, dict) else None

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

"""A running TrainingJob's `progress.json` (written by the trainer) as status, for both runtimes."""

from __future__ import annotations

import json
from typing import Any

from kubeforge.api.training_job import Progress
from kubeforge.store import Store, StoreError, layout

# Trainer phases after which progress.json changes no more.
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Stopped"})


def progress_status(data: Any) -> Progress | None:
    """`status.progress` from a progress.json snapshot, or None when it is not one."""
    if not isinstance(data, dict):
        return None
    try:
        metrics = {str(k): float(v) for k, v in (data.get("metrics") or {}).items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        return Progress(epoch=int(data.get("epoch") or 0), epochs=int(data.get("epochs") or 0), metrics=metrics)
    except (TypeError, ValueError, AttributeError):
        return None  # a progress file from a newer trainer: keep the last good one


def read_progress(store: Store, run_prefix: str) -> Progress | None:
    try:
        return progress_status(store.get_json(f"{run_prefix.rstrip('/')}/{layout.PROGRESS}"))
    except (KeyError, StoreError, ValueError):
        return None  # not written yet, or the store blinked: the next look tries again


def settle_progress(store: Store, run_prefix: str, phase: str, message: str) -> bool:
    """After a run ended without its trainer saying so (killed, interrupted, its Job deleted), make
    progress.json agree with the status: its phase becomes `phase` unless it is already final.
    Returns True when it rewrote the file."""
    key = f"{run_prefix.rstrip('/')}/{layout.PROGRESS}"
    try:
        data = store.get_json(key)
    except (KeyError, StoreError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("phase") in FINAL_PHASES:
        return False
    data.update(phase=phase, message=message[:500])
    try:
        store.put_bytes(key, json.dumps(data, indent=2, sort_keys=True).encode())
    except StoreError:
        return False
    return True

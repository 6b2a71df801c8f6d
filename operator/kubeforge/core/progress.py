"""A running step's `progress.json` as status, for both runtimes: a TrainingJob's (written by the trainer,
epochs) and a PredictionJob's (written by the predict step, images done of total)."""

from __future__ import annotations

import json
from typing import Any

from kubeforge.api.prediction_job import PredictionProgress
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


def prediction_progress_status(data: Any) -> PredictionProgress | None:
    """A PredictionJob's `status.progress` from its progress.json snapshot, or None when it is not one."""
    if not isinstance(data, dict):
        return None
    try:
        return PredictionProgress.model_validate({k: data[k] for k in PredictionProgress.model_fields
                                                  if k in data})
    except ValueError:
        return None


# kind -> how its progress.json becomes status.progress (kinds not here have none)
PROGRESS_KINDS: dict[str, Any] = {"TrainingJob": progress_status, "PredictionJob": prediction_progress_status}


def read_progress(store: Store, run_prefix: str, kind: str = "TrainingJob") -> Any:
    """`status.progress` of a `kind` (Progress, PredictionProgress) from its run's progress.json, or None."""
    try:
        data = store.get_json(f"{run_prefix.rstrip('/')}/{layout.PROGRESS}")
    except (KeyError, StoreError, ValueError):
        return None  # not written yet, or the store blinked: the next look tries again
    return PROGRESS_KINDS[kind](data)


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

"""The validation metric a run is judged by: which epoch is best, and when to stop early.

Best (the checkpoint kept) is any strict improvement; early stopping counts epochs since the
metric last improved by at least `minDelta` (Keras' rule), so a string of tiny gains still stops.
Its state goes into every checkpoint, so a resumed run stops where the uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kubeforge.api.training_job import EarlyStoppingSpec
from kubeforge.models.catalog import MINIMISED_METRICS


@dataclass
class MetricJudge:
    name: str
    early_stopping: EarlyStoppingSpec | None = None
    best_value: float = math.nan
    best_epoch: int = 0
    # The value and epoch of the last improvement by at least minDelta.
    reference: float = math.nan
    reference_epoch: int = 0

    @property
    def minimise(self) -> bool:
        return self.name in MINIMISED_METRICS

    def _better(self, value: float, than: float, delta: float = 0.0) -> bool:
        if math.isnan(than):
            return not math.isnan(value)
        return (than - value if self.minimise else value - than) > delta

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is the best so far."""
        delta = self.early_stopping.min_delta if self.early_stopping else 0.0
        if self._better(value, self.reference, delta):
            self.reference, self.reference_epoch = value, epoch
        if self._better(value, self.best_value):
            self.best_value, self.best_epoch = value, epoch
            return True
        return False

    def stop_reason(self, epoch: int) -> str | None:
        """Why training stops after `epoch`, or None to go on."""
        if self.early_stopping is None or epoch - self.reference_epoch < self.early_stopping.patience:
            return None
        return (f"early stopping: {self.name} did not improve by more than {self.early_stopping.min_delta:g} for "
                f"{epoch - self.reference_epoch} epochs (patience {self.early_stopping.patience}); best "
                f"{self.best_value:.4g} at epoch {self.best_epoch}")

    def state(self) -> dict[str, Any]:
        return {"reference": self.reference, "reference_epoch": self.reference_epoch}

    def restore(self, best: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.best_value, self.best_epoch = float(best["value"]), int(best["epoch"])
        if state is None:  # a checkpoint from before early stopping existed
            self.reference, self.reference_epoch = self.best_value, self.best_epoch
        else:
            self.reference, self.reference_epoch = float(state["reference"]), int(state["reference_epoch"])

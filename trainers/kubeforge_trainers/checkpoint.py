"""Checkpoints: one resumable dict (torchvision references), best and last, optionally periodic.

Everything in the dict is a tensor or a plain Python value so that it loads with
`torch.load(..., weights_only=True)`: no pickled classes, nothing executed on load.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubeforge.atomic_file import atomic_path
from kubeforge.store import layout
from kubeforge_trainers.progress import ArtifactSink

KEYS = ("model", "optimizer", "lr_scheduler", "epoch", "args", "classes", "best")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check a checkpoint; errors name the file and what is missing."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f"{path}: not a loadable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: expected a checkpoint dict with keys {list(KEYS)}")
    return ckpt


def load_weights(path: Path) -> dict[str, Any]:
    """Weights to start from, as `{"model": state dict, "classes": list or None}`: a Kubeforge
    checkpoint, or a plain state dict (a published `.pth`, which names no classes)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not loadable weights ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return {"model": data["model"], "classes": data.get("classes")}
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"model": data, "classes": None}
    raise ValueError(f"{path}: expected a Kubeforge checkpoint (a dict with 'model') or a state dict of tensors")


def restore(
    ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Restore all state from a checkpoint; returns the epoch it finished (resume after it)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    return int(ckpt["epoch"])


@dataclass
class CheckpointManager:
    """Writes last.pt every epoch, best.pt when the metric improves, and epoch_NNNN.pt every N.

    Each file goes to the sink as soon as it is written, so a restarted pod resumes from the store.
    """

    root: Path
    sink: ArtifactSink | None
    every: int | None = None
    written: dict[str, Path] = field(default_factory=dict)

    def save(self, state: dict[str, Any], epoch: int, is_best: bool) -> None:
        missing = [k for k in KEYS if k not in state]
        if missing:
            raise ValueError(f"checkpoint for epoch {epoch} lacks {missing}")
        self._write(layout.CHECKPOINT_LAST, state)
        if is_best:
            self._copy(layout.CHECKPOINT_LAST, layout.CHECKPOINT_BEST)
        if self.every and epoch % self.every == 0:
            self._copy(layout.CHECKPOINT_LAST, f"checkpoints/epoch_{epoch:04d}.pt")

    def _write(self, rel: str, state: dict[str, Any]) -> None:
        path = self.root / rel
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        self._publish(rel, path)

    def _copy(self, src_rel: str, rel: str) -> None:
        path = self.root / rel
        with atomic_path(path) as tmp:  # a reader of best.pt never sees half a copy
            shutil.copyfile(self.root / src_rel, tmp)
        self._publish(rel, path)

    def _publish(self, rel: str, path: Path) -> None:
        self.written[rel] = path
        if self.sink:
            self.sink.put_file(rel, path)

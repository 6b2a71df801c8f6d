"""The hyperparameters that depend on the device: mixed precision, channels-last, deterministic mode.

Each is resolved once against the device the run got, and what was asked next to what was done
is recorded (experiment_info.json `training`), so a manifest written for a GPU still runs on a
CPU and says what it skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from kubeforge.api.training_job import Hyperparameters
from kubeforge_trainers.engine import StepSettings
from kubeforge_trainers.threads import ThreadPlan

# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2).
CUBLAS_WORKSPACE = ":4096:8"


def step_settings(hp: Hyperparameters, device: torch.device) -> StepSettings:
    on_gpu = device.type == "cuda"
    amp = hp.mixed_precision and on_gpu
    return StepSettings(
        accumulation=hp.gradient_accumulation, clip_norm=hp.gradient_clip_norm, autocast=amp,
        scaler=torch.amp.GradScaler("cuda") if amp else None, channels_last=hp.channels_last and on_gpu,
    )


@contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the run when asked; the process's previous mode is restored after."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    # warn_only: an op without a deterministic kernel warns (naming it) instead of failing the run hours in.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def record(hp: Hyperparameters, step: StepSettings, plan: ThreadPlan) -> dict[str, Any]:
    """What was asked and what this device did, for experiment_info.json."""
    return {
        "gradientAccumulation": step.accumulation,
        "gradientClipNorm": step.clip_norm,
        "mixedPrecision": {"requested": hp.mixed_precision, "used": step.autocast},
        "channelsLast": {"requested": hp.channels_last, "used": step.channels_last},
        "deterministic": hp.deterministic,
        "threads": {"intraOp": plan.intra_op, "interOp": plan.inter_op, "cpuBudget": plan.budget.cpus,
                    "budgetFrom": plan.budget.source, "dataLoaderWorkers": plan.workers,
                    "dataLoaderWorkersRequested": plan.workers_requested},
    }

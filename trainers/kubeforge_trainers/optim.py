"""Optimizers and learning-rate schedules from the TrainingJob's hyperparameters.

The schedule is one per-iteration LambdaLR: a linear warm-up multiplied by the main
schedule (none, step by epochs, cosine over all iterations). One object means one
state_dict to checkpoint and resume.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kubeforge.api.training_job import Hyperparameters, OptimizerSpec, SchedulerSpec

# Tasks whose torchvision models train batch norm on per-image feature maps (the batch-size rule below).
BATCH_NORM_DETECTORS = ("object-detection", "instance-segmentation")
# Warm-up starts at this fraction of the base lr (torchvision references use 0.001-0.01).
WARMUP_START_FACTOR = 0.001


def validate_hyperparameters(hp: Hyperparameters, num_train: int, task: str) -> None:
    """Reject combinations the fields' own ranges cannot express; errors name the field."""
    opt, sched = hp.optimizer, hp.scheduler
    # Compared with the field defaults, not "was it set": run specs arrive with every field filled in.
    if opt.type != "SGD" and opt.momentum != _default(OptimizerSpec, "momentum"):
        raise ValueError(
            f"hyperparameters.optimizer.momentum applies to SGD only; optimizer.type is {opt.type}"
        )
    if num_train < 1:
        raise ValueError("split: the training split is empty after class selection")
    if task in BATCH_NORM_DETECTORS and min(hp.batch_size, num_train) < 2:
        # Batch norm in train mode cannot normalise one image's 1x1 feature maps.
        raise ValueError(
            f"hyperparameters.batchSize: {task} needs at least 2 images per batch, got "
            f"batchSize={hp.batch_size} with {num_train} training images"
        )
    steps = optimizer_steps_per_epoch(num_train, hp.batch_size, hp.gradient_accumulation)
    iters = hp.epochs * steps
    if sched.warmup_iterations >= iters:
        raise ValueError(
            f"hyperparameters.scheduler.warmupIterations ({sched.warmup_iterations}) must be smaller than the "
            f"total optimizer steps ({iters} = epochs {hp.epochs} x {steps} per epoch"
            + (f" with gradientAccumulation {hp.gradient_accumulation})" if hp.gradient_accumulation > 1 else ")")
        )
    if sched.type == "step" and sched.step_size >= hp.epochs:
        raise ValueError(
            f"hyperparameters.scheduler.stepSize ({sched.step_size}) must be smaller than epochs ({hp.epochs}) "
            "for the step schedule to decay at all"
        )
    changed = [f for f in ("step_size", "gamma") if getattr(sched, f) != _default(SchedulerSpec, f)]
    if sched.type != "step" and changed:
        raise ValueError(f"hyperparameters.scheduler.stepSize/gamma apply to type step only; type is {sched.type}")


def _default(model: type[OptimizerSpec] | type[SchedulerSpec], name: str) -> object:
    return model.model_fields[name].default


def iterations_per_epoch(num_train: int, batch_size: int) -> int:
    # drop_last when there is more than one batch (see engine.train_loader): a size-1 tail batch
    # breaks batch norm in detectors.
    return max(1, num_train // batch_size) if num_train > batch_size else 1


def optimizer_steps_per_epoch(num_train: int, batch_size: int, accumulation: int = 1) -> int:
    """What the lr schedule counts: one step per `accumulation` batches, a short last group included."""
    return math.ceil(iterations_per_epoch(num_train, batch_size) / accumulation)


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.type == "SGD":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.type == "AdamW":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    raise ValueError(f"hyperparameters.optimizer.type: expected SGD or AdamW, got {spec.type!r}")


def lr_factor(spec: SchedulerSpec, iteration: int, iters_per_epoch: int, total_iters: int) -> float:
    """The multiplier of the base lr at `iteration` (0-based). Pure, so it is tested directly."""
    if spec.type == "none":
        main = 1.0
    elif spec.type == "step":
        main = spec.gamma ** ((iteration // iters_per_epoch) // spec.step_size)
    elif spec.type == "cosine":
        main = 0.5 * (1.0 + math.cos(math.pi * min(iteration, total_iters) / total_iters))
    else:
        raise ValueError(f"hyperparameters.scheduler.type: expected none, step or cosine, got {spec.type!r}")
    warm = spec.warmup_iterations
    if warm and iteration < warm:
        main *= WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * iteration / warm
    return main


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: SchedulerSpec, epochs: int, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step (engine.train_one_epoch does it); `iters_per_epoch` counts those."""
    total = epochs * iters_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(spec, it, iters_per_epoch, total)
    )

"""One epoch of training, and evaluation on the val split (torchvision references' engine.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from kubeforge_trainers.tasks.base import TaskKind

Track = Callable[[Iterable[Any], int, str], Iterator[Any]]


def _plain(items: Iterable[Any], total: int, description: str) -> Iterator[Any]:
    yield from items


def train_loader(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int,
                 collate: Callable[[list[Any]], Any] | None, seed: int,
                 sampler: torch.utils.data.DistributedSampler | None = None) -> torch.utils.data.DataLoader:
    """Shuffled batches; with a `sampler` (distributed), only this rank's shard, which it shuffles."""
    # drop_last only when there is more than one batch: a size-1 tail batch breaks batch norm.
    # Counted on what this process iterates: its shard when distributed.
    drop_last = (len(sampler) if sampler is not None else len(dataset)) > batch_size  # type: ignore[arg-type]
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, drop_last=drop_last,
        num_workers=num_workers, collate_fn=collate, generator=torch.Generator().manual_seed(seed),
    )


def eval_loader(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int,
                collate: Callable[[list[Any]], Any] | None) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=collate)


@dataclass
class StepSettings:
    """How batches become optimizer steps (hyperparameters gradientAccumulation, gradientClipNorm,
    mixedPrecision, channelsLast), as `training_modes` resolved them for the device."""

    accumulation: int = 1
    clip_norm: float | None = None
    # float16 autocast on CUDA; with it a GradScaler, so small float16 gradients do not flush to zero.
    autocast: bool = False
    scaler: torch.amp.GradScaler | None = None
    # The model and its inputs in channels-last memory format (set by the trainer, on CUDA).
    channels_last: bool = False
    # The largest gradient norm seen this epoch, before clipping (None when not clipping).
    max_grad_norm: float | None = field(default=None, init=False)


def train_one_epoch(
    model: nn.Module, loader: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, task: TaskKind,
    epoch: int, track: Track = _plain, settings: StepSettings | None = None,
) -> dict[str, float]:
    """Returns the mean training loss and the lr at the end of the epoch.

    With accumulation k, k consecutive batches make one optimizer (and scheduler) step; each batch's
    loss is divided by the size of its group, so the step's gradient is the mean over the group's
    batches (a short last group of the epoch included) — the gradient of one k-times larger batch.
    """
    settings = settings or StepSettings()
    model.train()
    total, count = 0.0, 0
    batches = len(loader)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(track(loader, batches, f"epoch {epoch} train")):
        group_start = i - i % settings.accumulation
        group_size = min(settings.accumulation, batches - group_start)
        with torch.autocast(device.type, dtype=torch.float16, enabled=settings.autocast):
            loss, n = task.loss(model, batch, device)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"epoch {epoch}: training loss is {value}; lower hyperparameters.optimizer.lr or add warm-up"
            )
        scaled = loss / group_size
        (settings.scaler.scale(scaled) if settings.scaler is not None else scaled).backward()
        total += value * n
        count += n
        if i + 1 - group_start < group_size:
            continue
        if settings.scaler is not None:
            settings.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        if settings.clip_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, settings.clip_norm))
            settings.max_grad_norm = max(settings.max_grad_norm or 0.0, norm)
        if settings.scaler is not None:
            settings.scaler.step(optimizer)
            settings.scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return {"train_loss": total / max(count, 1), "lr": float(optimizer.param_groups[0]["lr"])}


@torch.no_grad()
def predict_detections(
    model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, track: Track = _plain
) -> list[dict[str, np.ndarray]]:
    model.eval()
    out: list[dict[str, np.ndarray]] = []
    for images, _ in track(loader, len(loader), "val"):
        for det in model([img.to(device) for img in images]):
            out.append({k: v.cpu().numpy() for k, v in det.items()})
    return out


def coco_detection_results(predictions: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """torchvision outputs (xyxy, labels 1..K) -> COCO result dicts (xywh, category_id = label)."""
    results = []
    for image_id, det in enumerate(predictions):
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(),
                                     strict=True):
            results.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    return results


# COCO iouType -> the metric names it reports.
AP_NAMES = {"bbox": ("val_AP", "val_AP50"), "segm": ("val_mask_AP", "val_mask_AP50")}


def coco_ap(ground_truth: dict[str, Any], results: list[dict[str, Any]], iou_type: str = "bbox") -> dict[str, float]:
    """COCO AP (0.5:0.95) and AP50 of boxes or, with iou_type "segm", of RLE masks (kubeforge.evaluation.cocoeval).

    0 when nothing was detected."""
    from kubeforge.evaluation.detection import coco_stats

    if not ground_truth["annotations"]:
        raise ValueError("val split has no boxes of the selected classes: AP is undefined")
    ap, ap50 = AP_NAMES[iou_type]
    if not results:
        return {ap: 0.0, ap50: 0.0}
    # The Benchmark's COCO suite; None would mean "no ground truth" (excluded above).
    stats = coco_stats(ground_truth, results, len(ground_truth["categories"]), iou_type)
    return {ap: max(stats["AP"] or 0.0, 0.0), ap50: max(stats["AP50"] or 0.0, 0.0)}

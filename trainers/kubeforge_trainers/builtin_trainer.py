"""The built-in trainers (torchvision, timm, smp): one loop over the registry's models, per task.

Written against the SDK like a custom trainer; what differs per task is in `tasks`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from kubeforge.api.training_job import Hyperparameters, OptimizerSpec, SchedulerSpec
from kubeforge.models import catalog
from kubeforge.store import layout
from kubeforge_trainers import distributed, engine, threads, training_modes
from kubeforge_trainers.augment import build_augment
from kubeforge_trainers.checkpoint import CheckpointManager, load_checkpoint, load_weights, restore
from kubeforge_trainers.export import check_parity, export_onnx, model_meta
from kubeforge_trainers.export_formats import extra_exports
from kubeforge_trainers.models import ModelInfo, freeze_encoder, init_from_checkpoint, model_info
from kubeforge_trainers.optim import (
    build_optimizer,
    build_scheduler,
    optimizer_steps_per_epoch,
    validate_hyperparameters,
)
from kubeforge_trainers.preview import save_preview
from kubeforge_trainers.progress import Stopwatch
from kubeforge_trainers.sdk import MetricValue, TrainContext, Trainer, TrainResult, register_trainer
from kubeforge_trainers.stopping import MetricJudge
from kubeforge_trainers.tasks import task_kind


class BuiltinTrainer(Trainer):
    """The registry's models of one framework (`kubeforge.models.catalog`)."""

    def check_model(self, model: str, task: str, encoder: str | None = None) -> None:
        catalog.check_model(self.name, model, task, encoder)

    def default_hyperparameters(self, model: str) -> Hyperparameters:
        # Detection: the measured from-scratch recipe (RECIPES.md): AdamW 1e-3, 50 warm-up, cosine.
        # On 400 synthetic 160 px shapes, 2 shared cores: 8 epochs ~15 s each -> val AP50 0.94;
        # 12 epochs -> 0.97.
        if self.models.get(model) in ("object-detection", "instance-segmentation"):
            return Hyperparameters(
                epochs=8, batch_size=8, optimizer=OptimizerSpec(type="AdamW", lr=1e-3, weight_decay=1e-4),
                scheduler=SchedulerSpec(type="cosine", warmup_iterations=50),
            )
        return Hyperparameters(
            epochs=10, batch_size=32, optimizer=OptimizerSpec(type="AdamW", lr=1e-3, weight_decay=1e-4),
            scheduler=SchedulerSpec(type="cosine", warmup_iterations=20),
        )

    def train(self, ctx: TrainContext) -> TrainResult:
        hp = ctx.hyperparameters
        plan = threads.configure(ctx.cpu, hp.num_workers)
        if plan.workers < plan.workers_requested:
            ctx.progress.console.print(
                f"hyperparameters.numWorkers {plan.workers_requested} -> {plan.workers}: the CPU budget is "
                f"{plan.budget.cpus} ({plan.budget.source}) and the training loop keeps one core"
            )
        with training_modes.deterministic_mode(hp.deterministic, distributed.device_for(ctx.device)):
            return self._train(ctx, plan)

    def _train(self, ctx: TrainContext, plan: threads.ThreadPlan) -> TrainResult:
        info = model_info(ctx.model_name, ctx.task, self.name, ctx.encoder)
        size = ctx.image_size or info.default_image_size
        kind = task_kind(ctx.task)
        # What the model outputs: the selected classes, plus `__bg__` first for semantic segmentation.
        class_names = kind.output_classes(ctx.class_names)
        hp = ctx.hyperparameters
        dist_env = distributed.current()
        device = distributed.device_for(ctx.device)
        augment = build_augment(ctx.augmentations)
        train_ds = kind.dataset(ctx.manifest, ctx.split.train, ctx.classes, ctx.image_dir, size, train=True,
                                augment=augment)
        val_ds = kind.dataset(ctx.manifest, ctx.split.val, ctx.classes, ctx.image_dir, size, train=False)
        if len(val_ds) == 0:
            raise ValueError(f"split: the validation split has no images of the selected classes {ctx.class_names}")
        validate_hyperparameters(hp, len(train_ds), ctx.task)
        files: dict[str, Path] = _preview(ctx, train_ds) if dist_env.is_main else {}
        model = _initial_model(ctx, info, size, class_names)
        step = training_modes.step_settings(hp, device)
        if step.channels_last:
            model.to(memory_format=torch.channels_last)
        model.to(device)
        # Every rank shuffles with the same seed and takes its own shard (None in a single process).
        sampler = distributed.sampler(train_ds, ctx.split.seed)
        steps = optimizer_steps_per_epoch(len(sampler) if sampler is not None else len(train_ds), hp.batch_size,
                                          hp.gradient_accumulation)
        optimizer = build_optimizer(model, hp.optimizer)
        scheduler = build_scheduler(optimizer, hp.scheduler, hp.epochs, steps)

        judge = MetricJudge(hp.validation_metric or kind.metric, hp.early_stopping)
        start_epoch = 0
        manager = CheckpointManager(ctx.output_dir, ctx.progress.sink, hp.checkpoint_every)
        if ctx.resume_from is not None:
            ckpt = load_checkpoint(ctx.resume_from)
            start_epoch = restore(ckpt, model, optimizer, scheduler)
            judge.restore(ckpt["best"], ckpt.get("early_stopping"))
            if step.scaler is not None and ckpt.get("scaler"):
                step.scaler.load_state_dict(ckpt["scaler"])
            ctx.progress.resume(start_epoch)
            if (ctx.output_dir / layout.CHECKPOINT_BEST).is_file():
                manager.written[layout.CHECKPOINT_BEST] = ctx.output_dir / layout.CHECKPOINT_BEST
            manager.written[layout.CHECKPOINT_LAST] = ctx.resume_from
        # Wrapped after restore and after the optimizer holds the module's parameters: DDP syncs
        # gradients of those same tensors. `model` stays the plain module for eval, save and export.
        trained = distributed.wrap(model, device)
        samples = 0

        def counted(items: Iterable[Any], total: int, description: str) -> Iterator[Any]:
            nonlocal samples
            for batch in ctx.progress.track(items, total, description):
                samples += len(batch[0])
                yield batch

        val_loader = engine.eval_loader(val_ds, hp.batch_size, plan.workers, kind.collate())
        ctx.progress.phase("Training")
        metrics = dict(ctx.progress.metrics)
        # A resumed run that had already decided to stop goes straight to the export.
        stop = judge.stop_reason(start_epoch) if start_epoch else None
        last_epoch = start_epoch
        for epoch in range(start_epoch + 1, hp.epochs + 1):
            if stop is not None:
                break
            watch = Stopwatch()
            # Seeded per epoch, so a resumed run sees the same batches, augmentations and dropout it would have
            # (augment.py draws from these generators). Offset by rank (0 in a single process) so shards do not
            # share one augmentation/dropout pattern.
            random.seed(ctx.split.seed * 100_003 + epoch + dist_env.rank)
            torch.manual_seed(ctx.split.seed * 100_003 + epoch + dist_env.rank)
            if sampler is not None:
                sampler.set_epoch(epoch)  # a new permutation each epoch, the same one on every rank
            loader = engine.train_loader(train_ds, hp.batch_size, plan.workers, kind.collate(),
                                         ctx.split.seed + epoch, sampler)
            metrics = engine.train_one_epoch(trained, loader, optimizer, scheduler, device, kind, epoch, counted,
                                             step)
            metrics["train_loss"] = distributed.mean(metrics["train_loss"])
            if step.max_grad_norm is not None:
                metrics["grad_norm_max"] = step.max_grad_norm
                step.max_grad_norm = None
            if dist_env.is_main:
                # Rank 0 evaluates the whole val split on the plain module: a DDP forward would wait
                # for collectives the idle ranks never join.
                metrics |= kind.evaluate(model, val_ds, val_loader, device, len(class_names), ctx.progress.track)
                if judge.name not in metrics:
                    raise ValueError(f"hyperparameters.validationMetric: {ctx.task} evaluation reported "
                                     f"{sorted(k for k in metrics if k.startswith('val_'))}, not {judge.name!r}")
                is_best = judge.update(metrics[judge.name], epoch)
                state = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "args": ctx.run_args,
                    "classes": class_names, "best": vars(judge_best(judge)).copy(),
                    "early_stopping": judge.state(),
                }
                if step.scaler is not None:
                    state["scaler"] = step.scaler.state_dict()
                manager.save(state, epoch, is_best)
            # Rank 0's metrics on every rank; also the barrier that keeps ranks in the same epoch.
            metrics, judge = distributed.broadcast((metrics, judge))
            ctx.progress.epoch_end(epoch, metrics, watch.seconds())
            last_epoch = epoch
            stop = judge.stop_reason(epoch)
            if stop is not None and epoch < hp.epochs:
                ctx.progress.console.print(f"epoch {epoch}: {stop}")
        stopped_early = stop is not None and last_epoch < hp.epochs
        best = judge_best(judge)
        training = training_modes.record(hp, step, plan) | {
            "validationMetric": judge.name,
            "stoppedEarly": {"epoch": last_epoch, "reason": stop} if stopped_early else None,
            "freezeEncoder": ctx.freeze_encoder,
        }
        epochs_run = last_epoch - start_epoch

        samples_per_rank = distributed.gather(samples)
        if not dist_env.is_main:
            # The export and model_meta are rank 0's to write.
            return TrainResult(best_metric=best, metrics=metrics, epochs_run=epochs_run,
                               seconds_per_epoch=None, files={}, world_size=dist_env.world_size,
                               samples_per_rank=samples_per_rank, training=training)
        files |= manager.written
        meta = model_meta(info, class_names, size)
        meta_path = ctx.output_dir / layout.MODEL_META
        meta_path.write_text(json.dumps(meta.model_dump(mode="json"), indent=2))
        files[layout.MODEL_META] = meta_path
        onnx_path, parity, exports = None, None, []
        if "onnx" in ctx.export:
            ctx.progress.phase("Exporting")
            # Export what the best checkpoint holds: that is the model the run reports.
            best_path = files.get(layout.CHECKPOINT_BEST)
            if best_path is not None:
                model.load_state_dict(load_checkpoint(best_path)["model"])
            # The export traces the plain contiguous fp32 model on the CPU.
            model.to(memory_format=torch.contiguous_format)
            onnx_path = ctx.output_dir / layout.ONNX_EXPORT
            export_onnx(model, meta, onnx_path)
            samples = [val_ds[i][0] for i in range(min(len(val_ds), kind.parity_images))]
            parity = check_parity(model, meta, onnx_path, samples).to_json()
            files[layout.ONNX_EXPORT] = onnx_path
            exports = extra_exports(ctx.export, model, meta, onnx_path, ctx.output_dir, samples)
            for record in exports:
                files.update(record.files)
        seconds = [float(r["seconds"]) for r in ctx.progress.history if "seconds" in r]  # type: ignore[arg-type]
        return TrainResult(
            best_metric=best, metrics=metrics, epochs_run=epochs_run,
            seconds_per_epoch=sum(seconds) / len(seconds) if seconds else None,
            files=files, model_meta=meta, onnx=onnx_path, parity=parity, exports=exports,
            world_size=dist_env.world_size, samples_per_rank=samples_per_rank, training=training,
        )


def _preview(ctx: TrainContext, train_ds: torch.utils.data.Dataset) -> dict[str, Path]:
    """The grid of augmented training samples, published before the first epoch."""
    path = ctx.output_dir / layout.AUGMENTATION_PREVIEW
    if not save_preview(train_ds, ctx.class_names, path, ctx.split.seed):
        return {}
    if ctx.progress.sink is not None:
        ctx.progress.sink.put_file(layout.AUGMENTATION_PREVIEW, path)
    return {layout.AUGMENTATION_PREVIEW: path}


def _initial_model(ctx: TrainContext, info: ModelInfo, size: int, class_names: list[str]) -> torch.nn.Module:
    """Seeded initial weights (the same run spec replays the same run on the same hardware), then what
    fine-tuning asks: another run's weights, a frozen encoder."""
    torch.manual_seed(ctx.split.seed)
    model = info.build(len(class_names), size, ctx.pretrained, ctx.encoder)
    if ctx.init_checkpoint is not None:
        init = load_weights(ctx.init_checkpoint)
        skipped, other_classes = init_from_checkpoint(model, init, class_names)
        ctx.progress.console.print(
            f"initialised from {ctx.init_checkpoint.name}; {len(skipped)} tensors kept fresh"
            + (f" (classes {init['classes']} -> {class_names}: new head)" if other_classes else "")
        )
    if ctx.freeze_encoder:
        ctx.progress.console.print(f"encoder frozen: {freeze_encoder(model)} parameter tensors")
    return model


def judge_best(judge: MetricJudge) -> MetricValue:
    return MetricValue(judge.name, judge.best_value, judge.best_epoch)


def _register(framework: str) -> None:
    register_trainer(type(f"{framework.title()}Trainer", (BuiltinTrainer,), {
        "name": framework, "models": {e.name: e.task for e in catalog.entries(framework=framework)},
    }))


for _framework in ("torchvision", "timm", "smp"):
    _register(_framework)

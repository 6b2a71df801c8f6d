"""The built-in trainers (torchvision, timm, smp): one loop over the registry's models, per task.

Written against the SDK like a custom trainer; what differs per task is in `tasks`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from kubeforge.api.training_job import Hyperparameters, OptimizerSpec, SchedulerSpec
from kubeforge.models import catalog
from kubeforge.store import layout
from kubeforge_trainers import distributed, engine
from kubeforge_trainers.checkpoint import CheckpointManager, load_checkpoint, restore
from kubeforge_trainers.export import check_parity, export_onnx, model_meta
from kubeforge_trainers.models import load_matching, model_info
from kubeforge_trainers.optim import build_optimizer, build_scheduler, iterations_per_epoch, validate_hyperparameters
from kubeforge_trainers.progress import Stopwatch
from kubeforge_trainers.sdk import MetricValue, TrainContext, Trainer, TrainResult, register_trainer
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
        info = model_info(ctx.model_name, ctx.task, self.name, ctx.encoder)
        size = ctx.image_size or info.default_image_size
        kind = task_kind(ctx.task)
        # What the model outputs: the selected classes, plus `__bg__` first for semantic segmentation.
        class_names = kind.output_classes(ctx.class_names)
        hp = ctx.hyperparameters
        dist_env = distributed.current()
        device = distributed.device_for(ctx.device)
        train_ds = kind.dataset(ctx.manifest, ctx.split.train, ctx.classes, ctx.image_dir, size, train=True)
        val_ds = kind.dataset(ctx.manifest, ctx.split.val, ctx.classes, ctx.image_dir, size, train=False)
        if len(val_ds) == 0:
            raise ValueError(f"split: the validation split has no images of the selected classes {ctx.class_names}")
        validate_hyperparameters(hp, len(train_ds), ctx.task)

        # Seeded initial weights: the same run spec replays the same run (on the same hardware).
        torch.manual_seed(ctx.split.seed)
        model = info.build(len(class_names), size, ctx.pretrained, ctx.encoder)
        if ctx.init_checkpoint is not None:
            skipped = load_matching(model, load_checkpoint(ctx.init_checkpoint)["model"])
            ctx.progress.console.print(
                f"initialised from {ctx.init_checkpoint.name}; {len(skipped)} tensors kept fresh"
            )
        model.to(device)
        # Every rank shuffles with the same seed and takes its own shard (None in a single process).
        sampler = distributed.sampler(train_ds, ctx.split.seed)
        iters = iterations_per_epoch(len(sampler) if sampler is not None else len(train_ds), hp.batch_size)
        optimizer = build_optimizer(model, hp.optimizer)
        scheduler = build_scheduler(optimizer, hp.scheduler, hp.epochs, iters)

        metric_name = kind.metric
        best = MetricValue(metric_name, float("-inf"), 0)
        start_epoch = 0
        manager = CheckpointManager(ctx.output_dir, ctx.progress.sink, hp.checkpoint_every)
        if ctx.resume_from is not None:
            ckpt = load_checkpoint(ctx.resume_from)
            start_epoch = restore(ckpt, model, optimizer, scheduler)
            best = MetricValue(**ckpt["best"])
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

        val_loader = engine.eval_loader(val_ds, hp.batch_size, hp.num_workers, kind.collate())
        ctx.progress.phase("Training")
        metrics = dict(ctx.progress.metrics)
        for epoch in range(start_epoch + 1, hp.epochs + 1):
            watch = Stopwatch()
            # Seeded per epoch, so a resumed run sees the same batches, flips and dropout it would have.
            # Offset by rank (0 in a single process) so shards do not share one flip/dropout pattern.
            random.seed(ctx.split.seed * 100_003 + epoch + dist_env.rank)
            torch.manual_seed(ctx.split.seed * 100_003 + epoch + dist_env.rank)
            if sampler is not None:
                sampler.set_epoch(epoch)  # a new permutation each epoch, the same one on every rank
            loader = engine.train_loader(train_ds, hp.batch_size, hp.num_workers, kind.collate(),
                                         ctx.split.seed + epoch, sampler)
            metrics = engine.train_one_epoch(trained, loader, optimizer, scheduler, device, kind, epoch, counted)
            metrics["train_loss"] = distributed.mean(metrics["train_loss"])
            if dist_env.is_main:
                # Rank 0 evaluates the whole val split on the plain module: a DDP forward would wait
                # for collectives the idle ranks never join.
                metrics |= kind.evaluate(model, val_ds, val_loader, device, len(class_names), ctx.progress.track)
                is_best = metrics[metric_name] > best.value
                if is_best:
                    best = MetricValue(metric_name, metrics[metric_name], epoch)
                state = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "args": ctx.run_args,
                    "classes": class_names, "best": vars(best).copy(),
                }
                manager.save(state, epoch, is_best)
            # Rank 0's metrics on every rank; also the barrier that keeps ranks in the same epoch.
            metrics, best = distributed.broadcast((metrics, best))
            ctx.progress.epoch_end(epoch, metrics, watch.seconds())

        samples_per_rank = distributed.gather(samples)
        if not dist_env.is_main:
            # The export and model_meta are rank 0's to write.
            return TrainResult(best_metric=best, metrics=metrics, epochs_run=hp.epochs - start_epoch,
                               seconds_per_epoch=None, files={}, world_size=dist_env.world_size,
                               samples_per_rank=samples_per_rank)
        files = dict(manager.written)
        meta = model_meta(info, class_names, size)
        meta_path = ctx.output_dir / layout.MODEL_META
        meta_path.write_text(json.dumps(meta.model_dump(mode="json"), indent=2))
        files[layout.MODEL_META] = meta_path
        onnx_path, parity = None, None
        if "onnx" in ctx.export:
            ctx.progress.phase("Exporting")
            # Export what the best checkpoint holds: that is the model the run reports.
            best_path = files.get(layout.CHECKPOINT_BEST)
            if best_path is not None:
                model.load_state_dict(load_checkpoint(best_path)["model"])
            onnx_path = ctx.output_dir / layout.ONNX_EXPORT
            export_onnx(model, meta, onnx_path)
            samples = [val_ds[i][0] for i in range(min(len(val_ds), kind.parity_images))]
            parity = check_parity(model, meta, onnx_path, samples).to_json()
            files[layout.ONNX_EXPORT] = onnx_path
        seconds = [float(r["seconds"]) for r in ctx.progress.history if "seconds" in r]  # type: ignore[arg-type]
        return TrainResult(
            best_metric=best, metrics=metrics, epochs_run=hp.epochs - start_epoch,
            seconds_per_epoch=sum(seconds) / len(seconds) if seconds else None,
            files=files, model_meta=meta, onnx=onnx_path, parity=parity,
            world_size=dist_env.world_size, samples_per_rank=samples_per_rank,
        )


def _register(framework: str) -> None:
    register_trainer(type(f"{framework.title()}Trainer", (BuiltinTrainer,), {
        "name": framework, "models": {e.name: e.task for e in catalog.entries(framework=framework)},
    }))


for _framework in ("torchvision", "timm", "smp"):
    _register(_framework)

"""Training behaviour every task shares: gradient accumulation and clipping, the validation metric
and early stopping, deterministic runs, fine-tuning (a fresh head for other classes, a frozen encoder).

The loop tests run the real built-in trainer on a tiny classification dataset (16 images, 32 px, CPU).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import TypeAdapter, ValidationError
from torch import nn

from kubeforge.api.augmentations import Augmentation
from kubeforge.api.training_job import EarlyStoppingSpec, Hyperparameters, TrainingJobSpec
from kubeforge.datasets.manifest import Category, Manifest, ManifestImage
from kubeforge.models import catalog
from kubeforge.store import layout
from kubeforge_trainers import engine, optim
from kubeforge_trainers.checkpoint import load_checkpoint
from kubeforge_trainers.data import blob_path, resolve_classes
from kubeforge_trainers.models import build_model, freeze_encoder, init_from_checkpoint, model_parts
from kubeforge_trainers.progress import DirSink, ProgressReporter
from kubeforge_trainers.sdk import TrainContext, TrainResult, get_trainer
from kubeforge_trainers.split import random_split
from kubeforge_trainers.stopping import MetricJudge
from kubeforge_trainers.tasks import TASKS
from kubeforge_trainers.tasks.classification import Classification

torch.set_num_threads(2)


# ---------------------------------------------------------------- accumulation and clipping

def _linear_run(batch_size: int, accumulation: int, samples: int = 16, clip: float | None = None,
                lr: float = 0.1) -> tuple[nn.Module, torch.optim.lr_scheduler.LambdaLR, engine.StepSettings]:
    """One epoch of SGD on a model without batch norm; returns the trained model."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(samples, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (samples,), generator=gen)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch_size)
    settings = engine.StepSettings(accumulation=accumulation, clip_norm=clip)
    engine.train_one_epoch(model, loader, optimizer, scheduler, torch.device("cpu"), Classification(), 1,
                           settings=settings)
    return model, scheduler, settings


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulating_two_batches_of_4_steps_like_one_batch_of_8() -> None:
    acc, sched_acc, _ = _linear_run(batch_size=4, accumulation=2)
    big, sched_big, _ = _linear_run(batch_size=8, accumulation=1)
    small, _, _ = _linear_run(batch_size=4, accumulation=1)
    torch.testing.assert_close(_weights(acc), _weights(big), rtol=0, atol=1e-6)
    assert not torch.allclose(_weights(small), _weights(big), atol=1e-4)  # four steps are not two
    # The schedule counts optimizer steps.
    assert sched_acc.last_epoch == sched_big.last_epoch == 2


def test_a_short_last_group_is_the_mean_of_its_own_batches() -> None:
    # 12 samples, batches of 4, accumulation 2: groups of 2 and 1 batches, like batches of 8 and 4.
    acc, sched, _ = _linear_run(batch_size=4, accumulation=2, samples=12)
    assert sched.last_epoch == 2
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (12,), generator=gen)
    torch.manual_seed(1)
    ref = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for part in (slice(0, 8), slice(8, 12)):
        opt.zero_grad()
        nn.functional.cross_entropy(ref(images[part]), labels[part]).backward()
        opt.step()
    torch.testing.assert_close(_weights(acc), _weights(ref), rtol=0, atol=1e-6)


def test_clipping_bounds_the_step_and_reports_the_raw_norm() -> None:
    start = _weights(_linear_run(batch_size=16, accumulation=1, lr=0.0)[0])
    free, _, free_settings = _linear_run(batch_size=16, accumulation=1, lr=1.0)
    clipped, _, settings = _linear_run(batch_size=16, accumulation=1, clip=0.05, lr=1.0)
    raw = float((_weights(free) - start).norm())
    assert free_settings.max_grad_norm is None
    assert raw > 0.05 and settings.max_grad_norm == pytest.approx(raw, rel=1e-4)
    # SGD with lr 1: the step is the (clipped) gradient.
    assert float((_weights(clipped) - start).norm()) == pytest.approx(0.05, rel=1e-3)


def test_warmup_is_checked_against_optimizer_steps() -> None:
    hp = Hyperparameters.model_validate({"epochs": 2, "batchSize": 4, "gradientAccumulation": 2,
                                         "scheduler": {"warmupIterations": 4}})
    # 16 images: 4 batches, 2 optimizer steps per epoch, 4 in all.
    assert optim.optimizer_steps_per_epoch(16, 4, 2) == 2
    with pytest.raises(ValueError, match=r"warmupIterations \(4\).*4 = epochs 2 x 2 per epoch with gradientAcc"):
        optim.validate_hyperparameters(hp, 16, "classification")
    assert optim.optimizer_steps_per_epoch(20, 4, 2) == 3  # 5 batches: groups of 2, 2, 1


# ---------------------------------------------------------------- validation metric and early stopping

def test_early_stopping_on_a_scripted_sequence() -> None:
    judge = MetricJudge("val_accuracy", EarlyStoppingSpec(patience=2, min_delta=0.01))
    stops, bests = [], []
    for epoch, value in enumerate([0.5, 0.6, 0.605, 0.609, 0.4, 0.9], start=1):
        bests.append(judge.update(value, epoch))
        stops.append(judge.stop_reason(epoch))
    # 0.605 and 0.609 are better than 0.6 but not by more than 0.01: epochs 3 and 4 count as stale,
    # though each is the best checkpoint so far.
    assert [s is not None for s in stops] == [False, False, False, True, True, False]
    assert bests == [True, True, True, True, False, True]
    assert (judge.best_value, judge.best_epoch) == (0.9, 6)
    assert "patience 2" in stops[3] and "val_accuracy" in stops[3]


def test_a_loss_is_minimised() -> None:
    judge = MetricJudge("val_loss", EarlyStoppingSpec(patience=1))
    assert judge.update(1.0, 1) and judge.update(0.5, 2) and not judge.update(0.7, 3)
    assert judge.stop_reason(3) is not None and judge.best_epoch == 2
    never = MetricJudge("val_accuracy")
    never.update(0.1, 1)
    assert never.stop_reason(100) is None


def test_unknown_validation_metric_is_refused_when_the_manifest_is_read() -> None:
    spec = {"datasetVersion": "x", "task": "object-detection", "model": {"name": "ssdlite320_mobilenet_v3_large"}}
    with pytest.raises(ValidationError, match=r"hyperparameters\.validationMetric: object-detection reports "
                                              r"\['val_AP', 'val_AP50'\]; got 'val_accuracy'"):
        TrainingJobSpec.model_validate(spec | {"hyperparameters": {"validationMetric": "val_accuracy"}})
    ok = TrainingJobSpec.model_validate(spec | {"hyperparameters": {"validationMetric": "val_AP50"}})
    assert ok.hyperparameters.validation_metric == "val_AP50"
    with pytest.raises(ValidationError, match=r"earlyStopping\.patience"):
        Hyperparameters.model_validate({"earlyStopping": {"patience": 0}})


# ---------------------------------------------------------------- the loop, on a tiny dataset

def _png(color: tuple[int, int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(color) + rng.integers(-30, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _manifest(cache: Path) -> Manifest:
    images = []
    for i in range(16):
        data = _png((200, 40, 40) if i % 2 else (40, 40, 200), i)
        blob = hashlib.sha256(data).hexdigest()
        blob_path(cache, blob).parent.mkdir(parents=True, exist_ok=True)
        blob_path(cache, blob).write_bytes(data)
        images.append(ManifestImage(file_name=f"{i}.png", blob=blob, width=32, height=32, bytes=len(data),
                                    category_id=1 + i % 2))
    return Manifest(dataset="tiny", task="classification", images=images,
                    categories=[Category(id=1, name="blue"), Category(id=2, name="red")])


def _train(tmp: Path, name: str, hp: dict[str, Any], seed: int = 3, augmentations: list[dict[str, Any]] | None = None,
           classes: list[str] | None = None, **ctx_fields: Any) -> tuple[TrainResult, Path]:
    manifest = _manifest(tmp / "cache")
    out = tmp / name
    out.mkdir(exist_ok=True)
    ctx = TrainContext(
        task="classification", model_name="resnet18", manifest=manifest, image_dir=tmp / "cache",
        split=random_split([i.file_name for i in manifest.images], 75, seed),
        classes=resolve_classes(manifest, classes),
        hyperparameters=Hyperparameters.model_validate({"batchSize": 4, "scheduler": {"type": "none"}} | hp),
        output_dir=out, progress=ProgressReporter(DirSink(out), hp.get("epochs", 10)), image_size=32, export=[],
        augmentations=None if augmentations is None else TypeAdapter(list[Augmentation]).validate_python(augmentations),
        # One thread: these runs are tiny, and the test machine is shared.
        **({"cpu": "1"} | ctx_fields),
    )
    return get_trainer("torchvision", "resnet18", "classification").train(ctx), out


class _Scripted(Classification):
    """Classification whose val_accuracy follows a script: the loop's decisions are what is tested."""

    def __init__(self, script: list[float]) -> None:
        self.script = script
        self.calls = 0

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        real = super().evaluate(*args, **kwargs)
        self.calls += 1
        return real | {"val_accuracy": self.script[self.calls - 1]}


def test_the_loop_stops_early_and_keeps_the_best_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = _Scripted([0.5, 0.7, 0.65, 0.7, 0.69, 0.99, 0.99])
    monkeypatch.setitem(TASKS, "classification", scripted)
    result, out = _train(tmp_path, "run", {"epochs": 7, "earlyStopping": {"patience": 3}})
    assert result.epochs_run == 5 and scripted.calls == 5
    assert result.best_metric.value == 0.7 and result.best_metric.epoch == 2
    assert result.training["stoppedEarly"]["epoch"] == 5
    assert "did not improve" in result.training["stoppedEarly"]["reason"]
    assert load_checkpoint(out / layout.CHECKPOINT_BEST)["epoch"] == 2
    assert load_checkpoint(out / layout.CHECKPOINT_LAST)["epoch"] == 5
    assert [json.loads(x)["epoch"] for x in (out / layout.METRICS_LOG).read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert result.training["validationMetric"] == "val_accuracy"
    assert result.training["mixedPrecision"] == {"requested": False, "used": False}
    assert (out / layout.AUGMENTATION_PREVIEW).is_file() and layout.AUGMENTATION_PREVIEW in result.files


def test_val_loss_as_the_validation_metric(tmp_path: Path) -> None:
    result, out = _train(tmp_path, "run", {"epochs": 3, "validationMetric": "val_loss", "mixedPrecision": True})
    assert result.best_metric.name == "val_loss"
    losses = [json.loads(x)["metrics"]["val_loss"] for x in (out / layout.METRICS_LOG).read_text().splitlines()]
    # Minimised: the best is the lowest loss of all epochs, at its epoch.
    assert result.best_metric.value == min(losses)
    assert result.best_metric.epoch == losses.index(min(losses)) + 1
    # Asked for on a CPU: recorded as not used.
    assert result.training["mixedPrecision"] == {"requested": True, "used": False}
    assert set(catalog.REPORTED_METRICS["classification"]) <= set(result.metrics)


def test_deterministic_runs_give_identical_weights(tmp_path: Path) -> None:
    hp = {"epochs": 2, "deterministic": True, "gradientAccumulation": 2, "gradientClipNorm": 1.0}
    augs = [{"kind": "rotate", "degrees": 20}, {"kind": "scaleCrop"}, {"kind": "colorJitter"}, {"kind": "cutout"}]
    weights = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        _, out = _train(tmp_path / name, "run", hp, seed=seed, augmentations=augs)
        weights.append(load_checkpoint(out / layout.CHECKPOINT_LAST)["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0] if weights[0][k].is_floating_point())
    assert not torch.are_deterministic_algorithms_enabled()  # the mode ends with the run


class _Interrupted(Classification):
    """A pod killed during epoch 2's evaluation: epoch 1's checkpoint is the last one written."""

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            raise KeyboardInterrupt("killed")
        return super().evaluate(*args, **kwargs)


def test_a_resumed_run_replays_the_augmentations_it_would_have_drawn(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    hp = {"epochs": 2, "deterministic": True}
    augs = [{"kind": "rotate", "degrees": 30, "p": 0.8}, {"kind": "scaleCrop"}, {"kind": "cutout"}]
    _, straight = _train(tmp_path / "straight", "run", hp, augmentations=augs)
    with monkeypatch.context() as patch:
        patch.setitem(TASKS, "classification", _Interrupted())
        with pytest.raises(KeyboardInterrupt):
            _train(tmp_path / "resumed", "run", hp, augmentations=augs)
    resumed_dir = tmp_path / "resumed" / "run"
    assert load_checkpoint(resumed_dir / layout.CHECKPOINT_LAST)["epoch"] == 1
    result, _ = _train(tmp_path / "resumed", "run", hp, augmentations=augs,
                       resume_from=resumed_dir / layout.CHECKPOINT_LAST)
    assert result.epochs_run == 1
    a = load_checkpoint(straight / layout.CHECKPOINT_LAST)["model"]
    b = load_checkpoint(resumed_dir / layout.CHECKPOINT_LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- fine-tuning

def _shifted(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("name", "task", "size"), [
    ("resnet18", "classification", 32), ("mobilenet_v3_small", "classification", 32),
    ("ssdlite320_mobilenet_v3_large", "object-detection", 64), ("unet", "semantic-segmentation", 32),
])
def test_a_head_trained_on_other_classes_starts_fresh(name: str, task: str, size: int) -> None:
    framework = catalog.default_framework(name, task)
    torch.manual_seed(0)
    trained = build_model(name, task, 2, size, False, framework)
    checkpoint = {"model": _shifted(trained), "classes": ["cat", "dog"]}
    torch.manual_seed(1)
    fresh = build_model(name, task, 2, size, False, framework)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    parts = model_parts(fresh)
    assert parts.head

    same = build_model(name, task, 2, size, False, framework)
    _, new_head = init_from_checkpoint(same, checkpoint, ["cat", "dog"])
    assert not new_head and all(torch.equal(v, checkpoint["model"][k]) for k, v in same.state_dict().items())

    skipped, new_head = init_from_checkpoint(fresh, checkpoint, ["dog", "cat"])  # same shapes, other order
    assert new_head and skipped and all(parts.is_head(k) for k in skipped)
    for key, value in fresh.state_dict().items():
        expected = initial[key] if parts.is_head(key) else checkpoint["model"][key]
        assert torch.equal(value, expected), key


def test_freeze_encoder_trains_the_head_only(tmp_path: Path) -> None:
    model = build_model("resnet18", "classification", 2, 32, False)
    frozen = freeze_encoder(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["net.fc.weight", "net.fc.bias"] and frozen > 50
    detector = build_model("fasterrcnn_mobilenet_v3_large_fpn", "object-detection", 2, 64, False)
    freeze_encoder(detector)
    names = [n for n, p in detector.named_parameters() if p.requires_grad]
    assert not any(n.startswith("backbone.body.") for n in names)
    assert any(n.startswith("backbone.fpn.") for n in names) and any(n.startswith("roi_heads.") for n in names)

    # Through the loop: the encoder's weights do not move, the head's do.
    start = build_model("resnet18", "classification", 2, 32, False)
    torch.save({"model": start.state_dict(), "classes": ["blue", "red"]}, tmp_path / "init.pt")
    _, out = _train(tmp_path, "run", {"epochs": 1}, init_checkpoint=tmp_path / "init.pt", freeze_encoder=True)
    after = load_checkpoint(out / layout.CHECKPOINT_LAST)["model"]
    before = start.state_dict()
    assert torch.equal(after["net.layer1.0.conv1.weight"], before["net.layer1.0.conv1.weight"])
    assert torch.equal(after["net.bn1.running_mean"], before["net.bn1.running_mean"])  # statistics too
    assert not torch.equal(after["net.fc.weight"], before["net.fc.weight"])
    assert math.isfinite(float(after["net.fc.weight"].abs().sum()))


def test_the_gradient_scaler_path_clips_the_unscaled_gradients() -> None:
    """The mixed-precision step order (scale, unscale, clip, step) on the CPU's GradScaler: same weights as
    without it. The GPU's autocast itself needs a GPU (none here)."""
    plain, _, _ = _linear_run(batch_size=4, accumulation=2, clip=0.05, lr=1.0)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (16,), generator=gen)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=4)
    settings = engine.StepSettings(accumulation=2, clip_norm=0.05, scaler=torch.amp.GradScaler("cpu", init_scale=1024))
    engine.train_one_epoch(model, loader, optimizer, scheduler, torch.device("cpu"), Classification(), 1,
                           settings=settings)
    torch.testing.assert_close(_weights(model), _weights(plain), rtol=0, atol=1e-6)

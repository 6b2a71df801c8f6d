"""The train runtime's deciding parts: split, class selection, preprocessing, optimisers and
schedules, COCO AP against pycocotools, checkpoints and the trainer registry."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kubeforge.api.training_job import Hyperparameters, OptimizerSpec, SchedulerSpec
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.models.preprocess import load_rgb, to_input
from kubeforge_trainers import engine, optim
from kubeforge_trainers.checkpoint import CheckpointManager, load_checkpoint
from kubeforge_trainers.data import (
    ClassificationDataset,
    DetectionDataset,
    blob_path,
    resolve_classes,
)
from kubeforge_trainers.export import model_meta
from kubeforge_trainers.models import MODELS, build_model, model_info
from kubeforge_trainers.sdk import Trainer, get_trainer, register_trainer, registered
from kubeforge_trainers.split import Split, random_split

torch.set_num_threads(2)
CATS = [Category(id=3, name="triangle"), Category(id=1, name="circle"), Category(id=2, name="square")]


def _png(seed: int, w: int, h: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _put(cache: Path, data: bytes) -> str:
    import hashlib

    blob = hashlib.sha256(data).hexdigest()
    path = blob_path(cache, blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return blob


# ---------------------------------------------------------------- split

def test_split_is_deterministic_and_order_free() -> None:
    names = [f"img_{i:03d}.png" for i in range(100)]
    a = random_split(names, 80, seed=7)
    b = random_split(list(reversed(names)), 80, seed=7)
    assert a.train == b.train and a.val == b.val
    assert len(a.train) == 80 and len(a.val) == 20
    assert set(a.train).isdisjoint(a.val) and set(a.train) | set(a.val) == set(names)
    assert random_split(names, 80, seed=8).val != a.val


@pytest.mark.parametrize(("n", "percent", "train"), [(10, 70, 7), (7, 50, 4), (2, 99, 1), (2, 1, 1), (50, 33.3, 17)])
def test_split_percentages_keep_both_parts(n: int, percent: float, train: int) -> None:
    split = random_split([f"{i}.png" for i in range(n)], percent, seed=0)
    assert len(split.train) == train and len(split.val) == n - train


def test_split_rejects_bad_input_and_round_trips(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trainPercent"):
        random_split(["a", "b"], 100, seed=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        random_split(["a"], 50, seed=0)
    split = random_split([f"{i}.png" for i in range(9)], 60, seed=3)
    split.save(tmp_path / "train_val_split.json")
    assert Split.load(tmp_path / "train_val_split.json") == split


# ---------------------------------------------------------------- classes and datasets

def _detection_manifest(cache: Path) -> Manifest:
    images = []
    for i, (w, h) in enumerate([(100, 50), (40, 40), (64, 80)]):
        data = _png(i, w, h)
        images.append(ManifestImage(file_name=f"{i}.png", blob=_put(cache, data), width=w, height=h, bytes=len(data)))
    anns = [
        ManifestAnnotation(image=0, category_id=2, bbox=[10, 5, 20, 10], area=200),   # square
        ManifestAnnotation(image=0, category_id=3, bbox=[50, 20, 30, 20], area=600),  # triangle: dropped
        ManifestAnnotation(image=0, category_id=1, bbox=[0, 0, 0.1, 40], area=4),     # too thin once resized
        ManifestAnnotation(image=1, category_id=1, bbox=[4, 4, 8, 8], area=64),       # circle
        ManifestAnnotation(image=2, category_id=3, bbox=[1, 1, 5, 5], area=25),       # only a triangle
    ]
    return Manifest(dataset="toy", task="object-detection", categories=CATS, images=images, annotations=anns)


def test_resolve_classes_orders_and_validates(tmp_path: Path) -> None:
    manifest = _detection_manifest(tmp_path)
    assert [c.name for c in resolve_classes(manifest, None)] == ["circle", "square", "triangle"]
    chosen = resolve_classes(manifest, ["square", "circle"])
    assert [(c.category_id, c.name) for c in chosen] == [(2, "square"), (1, "circle")]
    with pytest.raises(ValueError, match=r"spec\.classes.*hexagon"):
        resolve_classes(manifest, ["hexagon"])
    with pytest.raises(ValueError, match=r"spec\.classes.*empty"):
        resolve_classes(manifest, [])


def test_detection_dataset_selects_reindexes_and_scales(tmp_path: Path) -> None:
    manifest = _detection_manifest(tmp_path)
    classes = resolve_classes(manifest, ["square", "circle"])
    ds = DetectionDataset(manifest, ["0.png", "1.png", "2.png"], classes, tmp_path, size=80)
    img, target = ds[0]
    assert img.shape == (3, 80, 80) and img.dtype == torch.float32
    # square (x 10..30 of 100, y 5..15 of 50) at 80 px; label 1 = first selected class; triangle dropped.
    assert target["labels"].tolist() == [1]
    assert torch.allclose(target["boxes"], torch.tensor([[8.0, 8.0, 24.0, 24.0]]))
    assert ds[1][1]["labels"].tolist() == [2]  # circle is the second selected class
    assert ds[2][1]["boxes"].shape == (0, 4)  # an image left without boxes stays as a negative
    gt = ds.coco_ground_truth(len(classes))
    assert len(gt["annotations"]) == 2 and {c["id"] for c in gt["categories"]} == {1, 2}


def test_classification_dataset_drops_other_classes(tmp_path: Path) -> None:
    images = []
    for i, cat in enumerate([1, 2, 3, 2]):
        data = _png(10 + i, 30, 20)
        images.append(ManifestImage(file_name=f"c{i}.png", blob=_put(tmp_path, data), width=30, height=20,
                                    bytes=len(data), category_id=cat))
    manifest = Manifest(dataset="toy", task="classification", categories=CATS, images=images)
    classes = resolve_classes(manifest, ["square", "triangle"])
    ds = ClassificationDataset(manifest, [f"c{i}.png" for i in range(4)], classes, tmp_path, size=16)
    assert len(ds) == 3 and ds.labels == [0, 1, 0]


def test_pixels_match_the_export_preprocessing(tmp_path: Path) -> None:
    """Training input is bit-identical to what every consumer of the export feeds it."""
    manifest = _detection_manifest(tmp_path)
    ds = DetectionDataset(manifest, ["0.png"], resolve_classes(manifest, None), tmp_path, size=48)
    meta = model_meta(model_info("ssdlite320_mobilenet_v3_large", "object-detection"), ["a", "b", "c"], 48)
    expected = to_input(load_rgb(blob_path(tmp_path, manifest.images[0].blob)), meta)
    np.testing.assert_array_equal(ds[0][0].numpy(), expected)


# ---------------------------------------------------------------- optimisers and schedules

def _hp(**kw: object) -> Hyperparameters:
    return Hyperparameters.model_validate(kw)


def test_lr_factor_warmup_then_cosine_and_step() -> None:
    cos = SchedulerSpec(type="cosine", warmup_iterations=10)
    assert optim.lr_factor(cos, 0, 5, 100) == pytest.approx(optim.WARMUP_START_FACTOR)
    assert optim.lr_factor(cos, 5, 5, 100) < optim.lr_factor(cos, 9, 5, 100) < optim.lr_factor(cos, 10, 5, 100)
    assert optim.lr_factor(cos, 50, 5, 100) == pytest.approx(0.5)
    assert optim.lr_factor(cos, 100, 5, 100) == pytest.approx(0.0, abs=1e-12)
    step = SchedulerSpec(type="step", step_size=2, gamma=0.5)
    assert [optim.lr_factor(step, it, 10, 100) for it in (0, 19, 20, 39, 40)] == [1, 1, 0.5, 0.5, 0.25]
    assert optim.lr_factor(SchedulerSpec(type="none"), 77, 10, 100) == 1.0


def test_scheduler_drives_the_optimizer_lr() -> None:
    model = torch.nn.Linear(2, 2)
    opt = optim.build_optimizer(model, OptimizerSpec(type="SGD", lr=0.1, momentum=0.5))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    sched = optim.build_scheduler(opt, SchedulerSpec(type="cosine", warmup_iterations=4), epochs=2, iters_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 * optim.WARMUP_START_FACTOR)
    assert lrs[:5] == sorted(lrs[:5]) and lrs[4:] == sorted(lrs[4:], reverse=True)
    adamw = optim.build_optimizer(model, OptimizerSpec(type="AdamW", lr=0.01, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05


@pytest.mark.parametrize(("hp", "n", "task", "field"), [
    ({"optimizer": {"type": "AdamW", "momentum": 0.5}}, 40, "classification", "optimizer.momentum"),
    ({"epochs": 1, "batchSize": 8, "scheduler": {"warmupIterations": 5}}, 40, "classification",
     "scheduler.warmupIterations"),
    ({"epochs": 3, "scheduler": {"type": "step", "stepSize": 3}}, 40, "classification", "scheduler.stepSize"),
    ({"scheduler": {"type": "cosine", "gamma": 0.5}}, 40, "classification", "scheduler.stepSize/gamma"),
    ({"batchSize": 1}, 40, "object-detection", "batchSize"),
])
def test_bad_hyperparameter_combinations_name_the_field(hp: dict, n: int, task: str, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"hyperparameters.{field}")):
        optim.validate_hyperparameters(_hp(**hp), n, task)
    optim.validate_hyperparameters(_hp(epochs=3, scheduler={"warmupIterations": 5}), n, task)  # a good one passes


# ---------------------------------------------------------------- COCO AP against the reference

def test_coco_ap_matches_pycocotools() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    for trial in range(3):
        images = [{"id": i, "width": 100, "height": 100} for i in range(15)]
        gts, dets = [], []
        for i in range(15):
            for _ in range(int(rng.integers(1, 4))):
                x, y, w, h = rng.uniform(0, 60), rng.uniform(0, 60), rng.uniform(8, 40), rng.uniform(8, 40)
                cat = int(rng.integers(1, 4))
                gts.append({"id": len(gts) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                            "area": w * h, "iscrowd": 0})
                jit = rng.normal(0, 3 + 3 * trial, 4)
                dets.append({"image_id": i, "category_id": cat if rng.random() < 0.8 else 1 + cat % 3,
                             "bbox": [x + jit[0], y + jit[1], max(w + jit[2], 1), max(h + jit[3], 1)],
                             "score": float(rng.random())})
        gt = {"images": images, "annotations": gts, "categories": [{"id": k} for k in (1, 2, 3)]}
        ours = engine.coco_ap(gt, [dict(d) for d in dets])
        ref_gt = COCO()
        ref_gt.dataset = {k: list(v) for k, v in gt.items()}
        ref_gt.createIndex()
        ev = COCOeval(ref_gt, ref_gt.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ours["val_AP"] == pytest.approx(ev.stats[0], abs=1e-6)
        assert ours["val_AP50"] == pytest.approx(ev.stats[1], abs=1e-6)


def test_parity_matching_pairs_same_detections_only() -> None:
    from kubeforge_trainers.export import match_detections as _match

    torch_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 13]], np.float32)
    onnx_boxes = np.array([[20, 20, 30, 30.5], [0, 0, 10, 10.2], [70, 70, 80, 80]], np.float32)
    pairs = _match(torch_boxes, np.array([1, 1, 2, 1]), onnx_boxes, np.array([1, 1, 2]))
    # [0,0,10,13] overlaps the ONNX box of the same label less than its true partner does: unmatched;
    # [50..60] has no ONNX box of label 2 nearby: unmatched.
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert _match(torch_boxes, np.array([1, 1, 2, 1]), onnx_boxes, np.array([3, 3, 3])) == []


# ---------------------------------------------------------------- checkpoints, models, registry

def test_checkpoints_best_last_periodic_load_weights_only(tmp_path: Path) -> None:
    model = build_model("mobilenet_v3_small", "classification", 3, 32, pretrained=False)
    opt = optim.build_optimizer(model, OptimizerSpec())
    sched = optim.build_scheduler(opt, SchedulerSpec(), 2, 1)
    manager = CheckpointManager(tmp_path, sink=None, every=2)
    for epoch, best in [(1, True), (2, False)]:
        manager.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                      "epoch": epoch, "args": {"a": 1}, "classes": ["x", "y", "z"],
                      "best": {"name": "val_accuracy", "value": 0.5, "epoch": 1}}, epoch, best)
    assert sorted(manager.written) == ["checkpoints/best.pt", "checkpoints/epoch_0002.pt", "checkpoints/last.pt"]
    assert load_checkpoint(tmp_path / "checkpoints/best.pt")["epoch"] == 1
    last = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["classes"] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="lacks"):
        manager.save({"model": {}}, 3, False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_model_registry_and_shapes() -> None:
    assert MODELS[("torchvision", "ssdlite320_mobilenet_v3_large")].default_image_size == 160
    assert MODELS[("torchvision", "resnet18")].default_image_size == 64
    logits = build_model("resnet18", "classification", 5, None, False).eval()(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 5)
    det = build_model("ssdlite320_mobilenet_v3_large", "object-detection", 2, 96, False).eval()
    assert det.transform.fixed_size == (96, 96)
    with pytest.raises(ValueError, match=r"spec\.model\.name.*object-detection"):
        model_info("resnet18", "object-detection")


def test_custom_trainer_registers_through_the_sdk() -> None:
    class Tiny(Trainer):
        name = "tiny-lab"
        models = {"tiny": "classification"}

        def train(self, ctx):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    register_trainer(Tiny)
    assert isinstance(get_trainer("tiny-lab", "tiny", "classification"), Tiny)
    assert "torchvision" in registered()
    assert get_trainer("torchvision", "resnet18", "classification").default_hyperparameters("resnet18").epochs >= 1
    with pytest.raises(ValueError, match=r"spec\.model\.framework"):
        get_trainer("nope", "tiny", "classification")
    with pytest.raises(ValueError, match="is a classification model"):
        get_trainer("tiny-lab", "tiny", "object-detection")

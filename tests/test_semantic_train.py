"""Semantic segmentation training through the train step: the UNet reaches a useful mIoU on the
generated shapes within the time budget; an smp encoder model trains, exports with ONNX parity
recorded, and resumes from checkpoints/last.pt."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kubeforge.datasets.manifest import Category, Manifest, ManifestImage
from kubeforge.datasets.versions import write_version
from kubeforge.evaluation.segmentation import BACKGROUND
from kubeforge.models.catalog import REPORTED_METRICS
from kubeforge.models.meta import ModelMeta
from kubeforge.steps import train
from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import shapes_version
from kubeforge.testing.train_runs import stop_after_first_epoch, train_run_spec

torch.set_num_threads(2)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("step_cache")]

# The UNet recipe the mIoU test holds to (measured on 2 shared cores; see docs/segmentation.md).
UNET_IMAGES, UNET_SIZE, UNET_EPOCHS, UNET_BATCH, UNET_LR = 200, 64, 20, 8, 3e-3
MIN_MIOU = 0.6


def run_spec(store: LocalStore, ref: DatasetRef, name: str, job: dict[str, Any]) -> TrainRun:
    return train_run_spec(store, ref, name, job)


def test_unet_reaches_the_miou_target_on_shapes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ref = shapes_version(store, tmp_path / "src", UNET_IMAGES, UNET_SIZE)
    spec = run_spec(store, ref, "unet", {
        "datasetVersion": "shapes-v1", "task": "semantic-segmentation",
        "model": {"name": "unet", "framework": "smp", "imageSize": UNET_SIZE},
        "hyperparameters": {"epochs": UNET_EPOCHS, "batchSize": UNET_BATCH,
                            "optimizer": {"type": "AdamW", "lr": UNET_LR, "weightDecay": 1e-4},
                            "scheduler": {"type": "cosine", "warmupIterations": 40}},
    })
    start = time.perf_counter()
    result = train.run(spec)
    seconds = time.perf_counter() - start
    best = result["bestMetric"]
    assert best["name"] == "val_mIoU"
    assert best["value"] >= MIN_MIOU, result
    # The "under two minutes on 2 cores" is a cost, not an assertion (no timing in tests): say it.
    print(f"unet {UNET_SIZE} px, {UNET_EPOCHS} epochs: {seconds:.0f} s, val mIoU {best['value']:.3f}")
    assert result["metrics"]["val_pixel_accuracy"] > 0.9
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{spec.experiment_prefix}/{layout.MODEL_META}"))
    assert meta.classes == [BACKGROUND, "circle", "square", "triangle"]


def test_smp_model_trains_exports_and_resumes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ref = shapes_version(store, tmp_path / "src", 24, 64)
    spec = run_spec(store, ref, "unet11", {
        "datasetVersion": "shapes-v1", "task": "semantic-segmentation",
        "model": {"name": "unet11", "framework": "smp", "imageSize": 64}, "classes": ["triangle", "circle"],
        "hyperparameters": {"epochs": 2, "batchSize": 4, "checkpointEvery": 1,
                            "scheduler": {"type": "cosine", "warmupIterations": 2}},
    })
    result = train.run(spec)
    prefix = spec.experiment_prefix
    assert result["bestMetric"]["name"] == "val_mIoU"
    assert set(result["metrics"]) >= {"val_mIoU", "val_pixel_accuracy", "val_loss", "train_loss"}
    assert {k for k in result["metrics"] if k.startswith("val_")} == set(REPORTED_METRICS["semantic-segmentation"])

    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    assert meta.task == "semantic-segmentation" and meta.classes == [BACKGROUND, "triangle", "circle"]
    assert [(o.name, o.dtype, o.shape) for o in meta.outputs] == [
        ("logits", "float32", [-1, 3, 64, 64]), ("mask", "uint8", [-1, 64, 64])]
    assert meta.input.dynamic_batch and meta.input.shape == [-1, 3, 64, 64]
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    parity = info["onnxParity"]
    assert parity["images"] > 0 and parity["perOutput"]["logits"] < 1e-3 and parity["perOutput"]["mask"] < 0.01
    assert result["onnxParityMaxAbsDiff"] < 1e-3

    # The export runs a batch of any size and its mask is the argmax of its logits.
    onnx = tmp_path / "model.onnx"
    store.get_file(f"{prefix}/{layout.ONNX_EXPORT}", onnx)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    logits, mask = session.run(["logits", "mask"], {"images": x})
    assert logits.shape == (3, 3, 64, 64) and mask.shape == (3, 64, 64) and mask.dtype == np.uint8
    assert (mask == logits.argmax(1)).mean() > 0.999

    ckpt = torch.load(Path(store.url(f"{prefix}/{layout.CHECKPOINT_LAST}")), weights_only=True)
    assert ckpt["classes"] == meta.classes and ckpt["epoch"] == 2

    # Stopped after epoch 1: the rerun continues from checkpoints/last.pt and trains epoch 2 only.
    stop_after_first_epoch(store, prefix)
    again = train.run(spec)
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    assert info["resumed"] is True and info["epochsRun"] == 1
    assert again["progress"]["epoch"] == 2


def test_a_classification_dataset_is_refused_for_semantic_segmentation(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = b"not read"
    manifest = Manifest(dataset="cls", task="classification", categories=[Category(id=1, name="a")],
                        images=[ManifestImage(file_name="a.png", blob=store.put_blob(data), width=8, height=8,
                                              bytes=len(data), category_id=1)])
    ref = DatasetRef(dataset="cls", digest=write_version(store, manifest)[0])
    spec = run_spec(store, ref, "bad", {"datasetVersion": "cls-v1", "task": "semantic-segmentation",
                                        "model": {"name": "unet", "framework": "smp"}})
    with pytest.raises(ValueError, match=r"spec\.task is semantic-segmentation but dataset version .* classification"):
        train.run(spec)

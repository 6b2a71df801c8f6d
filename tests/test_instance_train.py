"""Mask R-CNN through the train step: one-iteration epochs on 10 generated 64 px images, a run killed
after epoch 1 resuming from checkpoints/last.pt, the 4-output ONNX export and its parity (boxes,
scores and masks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kubeforge.models.catalog import REPORTED_METRICS
from kubeforge.models.meta import ModelMeta
from kubeforge.steps import train
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import shapes_version
from kubeforge.testing.train_runs import train_run_spec
from kubeforge_trainers import engine

torch.set_num_threads(2)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("step_cache")]
SIZE = 64


class Killed(BaseException):
    """Stands for the process being killed: nothing in the trainer may catch it."""


def test_mask_rcnn_trains_resumes_exports_and_matches_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "store")
    # An object-detection manifest (a COCO import): its polygons are the masks Mask R-CNN learns.
    ref = shapes_version(store, tmp_path / "src", n_images=10, size=SIZE)
    spec = train_run_spec(store, ref, "masks", {
        "datasetVersion": "shapes-v1", "task": "instance-segmentation",
        "model": {"name": "maskrcnn_resnet50_fpn_v2", "imageSize": SIZE},
        "split": {"trainPercent": 70, "seed": 3},
        "hyperparameters": {"epochs": 2, "batchSize": 4, "checkpointEvery": 1, "scheduler": {"type": "none"}}})
    # Killed as epoch 2 starts (in process: the real epoch loop, stopped where a SIGKILL could land).
    original = engine.train_one_epoch

    def killed_at_epoch_2(*args: Any) -> dict[str, float]:
        if args[6] == 2:  # (model, loader, optimizer, scheduler, device, task, epoch, track)
            raise Killed
        return original(*args)

    monkeypatch.setattr(engine, "train_one_epoch", killed_at_epoch_2)
    with pytest.raises(Killed):
        train.run(spec)
    monkeypatch.setattr(engine, "train_one_epoch", original)
    prefix = spec.experiment_prefix
    assert torch.load(store.url(f"{prefix}/{layout.CHECKPOINT_LAST}"), weights_only=True)["epoch"] == 1
    first = store.get_bytes(f"{prefix}/{layout.METRICS_LOG}").decode().splitlines()
    assert not store.exists(f"{prefix}/{layout.EXPERIMENT_INFO}")

    # The rerun resumes from checkpoints/last.pt and trains epoch 2 only.
    result = train.run(spec)
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    assert info["resumed"] is True and info["epochsRun"] == 1
    relog = store.get_bytes(f"{prefix}/{layout.METRICS_LOG}").decode().splitlines()
    assert [json.loads(x)["epoch"] for x in relog] == [1, 2] and relog[0] == first[0]
    assert torch.load(store.url(f"{prefix}/{layout.CHECKPOINT_LAST}"), weights_only=True)["epoch"] == 2
    assert result["bestMetric"]["name"] == "val_mask_AP"
    assert {k for k in result["metrics"] if k.startswith("val_")} == set(REPORTED_METRICS["instance-segmentation"])
    assert {"val_mask_AP", "val_mask_AP50", "val_AP", "val_AP50"} <= set(result["metrics"])
    assert all(0.0 <= result["metrics"][k] <= 1.0 for k in ("val_mask_AP", "val_AP"))

    meta = ModelMeta.model_validate(store.get_json(f"{prefix}/{layout.MODEL_META}"))
    assert meta.task == "instance-segmentation" and meta.input.shape == [1, 3, SIZE, SIZE]
    assert [(o.name, o.dtype, o.shape) for o in meta.outputs] == [
        ("boxes", "float32", [-1, 4]), ("scores", "float32", [-1]), ("labels", "int64", [-1]),
        ("masks", "uint8", [-1, SIZE, SIZE])]
    session = ort.InferenceSession(store.url(f"{prefix}/{layout.ONNX_EXPORT}"), providers=["CPUExecutionProvider"])
    boxes, scores, labels, masks = session.run(None, {"images": np.random.default_rng(0).random(
        (1, 3, SIZE, SIZE), dtype=np.float32)})
    assert masks.dtype == np.uint8 and masks.shape == (len(boxes), SIZE, SIZE) and set(np.unique(masks)) <= {0, 1}
    assert len(scores) == len(labels) == len(boxes)

    parity = info["onnxParity"]
    assert parity["images"] == 3 and parity["matched"] >= 3, parity
    assert parity["perOutput"]["boxes"] < 1e-2 and parity["perOutput"]["scores"] < 1e-3, parity
    # No mask pixel whose probability is clear of the threshold came out differently in ONNX Runtime.
    assert parity["perOutput"]["masks"] == 0.0, parity

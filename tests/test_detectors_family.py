"""The torchvision detector family beyond SSDlite: one epoch from a manifest, ONNX export, parity.

Tiny on purpose (10 generated 64 px images, one iteration): what is tested is that each family
trains through the detection task, exports with the trace exporter and matches ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kubeforge.api.training_job import TrainingJobSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.steps import train
from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import shapes_version
from kubeforge.testing.train_runs import train_run_spec

torch.set_num_threads(2)
SIZE = 64

pytestmark = pytest.mark.usefixtures("step_cache")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("detectors") / "store")


@pytest.fixture(scope="module")
def shapes(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    return shapes_version(store, tmp_path_factory.mktemp("src"), n_images=10, size=SIZE)


def one_epoch(store: LocalStore, ref: DatasetRef, name: str, task: str, model: str) -> TrainRun:
    return train_run_spec(store, ref, name, {
        "datasetVersion": "shapes-v1", "task": task, "model": {"name": model, "imageSize": SIZE},
        "split": {"trainPercent": 70, "seed": 3},
        "hyperparameters": {"epochs": 1, "batchSize": 4, "scheduler": {"type": "none"}}})


def check_export(store: LocalStore, spec: TrainRun) -> tuple[ModelMeta, dict]:
    """The export runs in ONNX Runtime with the meta's shapes; returns the meta and the recorded parity."""
    prefix = spec.experiment_prefix
    meta = ModelMeta.model_validate(store.get_json(f"{prefix}/{layout.MODEL_META}"))
    assert meta.input.shape == [1, 3, SIZE, SIZE] and meta.classes == ["circle", "square", "triangle"]
    session = ort.InferenceSession(store.url(f"{prefix}/{layout.ONNX_EXPORT}"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [o.name for o in meta.outputs]
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    for out, arr in zip(meta.outputs, session.run(None, {"images": x}), strict=True):
        assert str(arr.dtype) == out.dtype and all(s in (-1, a) for s, a in zip(out.shape, arr.shape, strict=True))
    ckpt = torch.load(store.url(f"{prefix}/{layout.CHECKPOINT_LAST}"), weights_only=True)
    assert ckpt["epoch"] == 1
    return meta, store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")["onnxParity"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2",
                                   "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn"])
def test_detector_trains_exports_and_matches_onnx(store: LocalStore, shapes: DatasetRef, model: str) -> None:
    spec = one_epoch(store, shapes, model.replace("_", "-"), "object-detection", model)
    result = train.run(spec)
    assert result["bestMetric"]["name"] == "val_AP" and 0.0 <= result["bestMetric"]["value"] <= 1.0
    meta, parity = check_export(store, spec)
    assert [o.name for o in meta.outputs] == ["boxes", "scores", "labels"]
    # Something was compared: at the export's own threshold, or (a head one epoch old may keep
    # nothing) on the same weights keeping low-score detections.
    assert parity["images"] == 3 and parity["matched"] >= 3, parity
    assert parity.get("scoreThreshold") in (None, 0.0)
    # Boxes in input pixels (64 px) and scores of matched detections agree between the runtimes.
    assert parity["perOutput"]["boxes"] < 1e-2 and parity["perOutput"]["scores"] < 1e-3, parity


@pytest.mark.parametrize(("model", "size"), [("retinanet_resnet50_fpn_v2", 80), ("maskrcnn_resnet50_fpn_v2", 32)])
def test_fpn_models_refuse_sizes_their_pyramid_cannot_take(model: str, size: int) -> None:
    task = "instance-segmentation" if model.startswith("mask") else "object-detection"
    with pytest.raises(ValueError, match=rf"spec\.model\.imageSize: {model} .* multiple of 32 .* got {size}"):
        TrainingJobSpec.model_validate({"datasetVersion": "v1", "task": task,
                                        "model": {"name": model, "imageSize": size}})
    # Sizes that fit are accepted.
    TrainingJobSpec.model_validate({"datasetVersion": "v1", "task": task, "model": {"name": model, "imageSize": 96}})

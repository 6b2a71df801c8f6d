"""Augmentations through the train step and into the Benchmark report: the preview grid of augmented
training samples is published with the experiment and embedded in the model's report section."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from kubeforge.steps import benchmark, train
from kubeforge.steps.spec import BenchmarkModel, BenchmarkRun, DatasetRef, TrainRun
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import shapes_version

torch.set_num_threads(2)
pytestmark = pytest.mark.slow


def _shapes(store: LocalStore, src: Path) -> DatasetRef:
    return shapes_version(store, src, n_images=24, size=64, seed=4)


def test_preview_is_published_recorded_and_shown_in_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv(train.ENV_CACHE_DIR, str(tmp_path / "cache"))
    store = LocalStore(tmp_path / "store")
    ref = _shapes(store, tmp_path / "src")
    spec = TrainRun.model_validate({
        "store": store.uri, "namespace": "default", "name": "aug", "dataset": ref.model_dump(),
        "experiment_prefix": layout.experiment_prefix("default", ref.dataset, "aug", "torchvision"), "spec": {
        "datasetVersion": "shapes-v1", "task": "object-detection",
        "model": {"name": "ssdlite320_mobilenet_v3_large", "imageSize": 64},
        "hyperparameters": {"epochs": 1, "batchSize": 4, "gradientAccumulation": 2,
                            "earlyStopping": {"patience": 1}, "scheduler": {"type": "none"}},
        "augmentations": [{"kind": "flip", "vertical": True}, {"kind": "rotate", "degrees": 10},
                          {"kind": "scaleCrop", "scale": [0.6, 1.0]}, {"kind": "colorJitter"},
                          {"kind": "blur", "p": 0.2}, {"kind": "cutout", "p": 0.2}],
        "resources": {"cpu": "1"},
    }})
    train.run(spec)
    prefix = spec.experiment_prefix
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    key = f"{prefix}/{layout.AUGMENTATION_PREVIEW}"
    assert info["artifacts"][layout.AUGMENTATION_PREVIEW] == key
    grid = Image.open(io.BytesIO(store.get_bytes(key)))
    assert grid.format == "PNG" and grid.width > 4 * 64
    training = info["training"]
    assert training["validationMetric"] == "val_AP" and training["gradientAccumulation"] == 2
    assert training["stoppedEarly"] is None  # one epoch: nothing to stop
    # resources.cpu sized the thread pool (a container's cgroup quota would come first).
    plan = training["threads"]
    assert plan["budgetFrom"] == "cgroup" or (plan["budgetFrom"], plan["intraOp"]) == ("resources.cpu", 1), plan
    assert info["result"]["bestMetric"]["name"] == "val_AP"

    run = BenchmarkRun.model_validate({
        "store": store.uri, "namespace": "default", "name": "aug-bench",
        "spec": {"split": "val", "models": [{"trainingJob": "aug"}]}, "dataset": ref.model_dump(),
        "models": [BenchmarkModel(training_job="aug", experiment_prefix=prefix).model_dump()],
        "output_prefix": layout.benchmark_prefix("default", "aug-bench"),
    })
    benchmark.run(run)
    out = layout.benchmark_prefix("default", "aug-bench")
    metrics = store.get_json(f"{out}/{benchmark.METRICS_FILE}")
    assert metrics["models"]["aug"]["augmentationPreviewUri"] == store.url(key)
    report = store.get_bytes(f"{out}/{benchmark.REPORT_FILE}").decode()
    assert "Training augmentations" in report
    assert base64.b64encode(store.get_bytes(key)).decode() in report

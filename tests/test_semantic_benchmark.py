"""The benchmark step on semantic segmentation exports: metrics.json, the report section and the
status, checked against masks rasterised and counted here directly from the polygons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from kubeforge.datasets.formats.common import polygons_to_mask
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.versions import load_manifest
from kubeforge.evaluation import metrics_schema
from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import load_rgb, to_input
from kubeforge.steps import benchmark
from kubeforge.steps.spec import BenchmarkModel, BenchmarkRun, DatasetRef
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import shapes_version
from kubeforge_trainers.export import export_onnx, model_meta
from kubeforge_trainers.models import model_info

NS = "default"
SIZE = 32


class Speckle(torch.nn.Module):
    """A fixed random conv: per-pixel classes that are partly right, partly wrong (non-trivial metrics)."""

    def __init__(self, classes: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, classes, 5, padding=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def _experiment(store: LocalStore, job: str, classes: list[str], seed: int, tmp: Path,
                split: dict[str, list[str]]) -> str:
    prefix = layout.experiment_prefix(NS, "shapes", job, "smp")
    meta = model_meta(model_info("unet", "semantic-segmentation", "smp"), classes, SIZE)
    onnx = tmp / f"{job}.onnx"
    export_onnx(Speckle(len(classes), seed), meta, onnx)
    store.put_file(f"{prefix}/{layout.ONNX_EXPORT}", onnx)
    store.put_bytes(f"{prefix}/{layout.MODEL_META}", meta.model_dump_json().encode())
    store.put_bytes(f"{prefix}/{layout.TRAIN_VAL_SPLIT}", json.dumps(split).encode())
    return prefix


def _expected(store: LocalStore, manifest: Manifest, prefix: str, names: list[str], classes: list[str]
              ) -> dict[str, Any]:
    """Truth painted from the polygons (larger first), predictions from ONNX Runtime resized nearest."""
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    session = ort.InferenceSession(Path(store.url(f"{prefix}/{layout.ONNX_EXPORT}")).as_posix())
    index = {c.id: classes.index(c.name) for c in manifest.categories if c.name in classes}
    per_image = manifest.annotations_by_image()
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    for i, img in enumerate(manifest.images):
        if img.file_name not in names:
            continue
        truth = np.zeros((img.height, img.width), dtype=np.int64)
        objects = [(polygons_to_mask(a.segmentation, img.height, img.width), index[a.category_id])
                   for a in per_image[i] if a.category_id in index]
        for mask, value in sorted(objects, key=lambda o: -int(o[0].sum())):
            truth[mask] = value
        pixels = load_rgb(store.get_blob(img.blob))
        (pred,) = session.run(["mask"], {"images": to_input(pixels, meta)[None]})
        pred = np.asarray(Image.fromarray(pred[0]).resize((img.width, img.height), Image.NEAREST))
        for t in range(k):
            for p in range(k):
                cm[t, p] += int(((truth == t) & (pred == p)).sum())
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = [tp[c] / union[c] if union[c] else None for c in range(k)]
    objects = [v for v in iou[1:] if v is not None]
    return {"pixelAccuracy": tp.sum() / cm.sum(), "iou": iou, "mIoU": sum(objects) / len(objects)}


def test_benchmark_semantic_exports(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ref: DatasetRef = shapes_version(store, tmp_path / "src", 10, 48, seed=4)
    manifest = load_manifest(store, ref.dataset, ref.digest)
    files = [img.file_name for img in manifest.images]
    split = {"train": files[:6], "val": files[6:]}
    all_classes = ["__bg__", "circle", "square", "triangle"]
    # The second model knows two of the dataset's classes, in its own order: matched by name,
    # objects of the class it lacks are background for it.
    two = ["__bg__", "triangle", "circle"]
    prefixes = {"seg-a": _experiment(store, "seg-a", all_classes, 0, tmp_path, split),
                "seg-b": _experiment(store, "seg-b", two, 1, tmp_path, split)}
    run = BenchmarkRun.model_validate({
        "store": store.uri, "namespace": NS, "name": "seg-compare",
        "spec": {"split": "val", "models": [{"trainingJob": j} for j in prefixes]},
        "dataset": ref.model_dump(),
        "models": [BenchmarkModel(training_job=j, experiment_prefix=p).model_dump() for j, p in prefixes.items()],
        "output_prefix": layout.benchmark_prefix(NS, "seg-compare"),
    })
    status = benchmark.run(run)
    doc = store.get_json(f"{layout.benchmark_prefix(NS, 'seg-compare')}/metrics.json")
    metrics_schema.validate(doc)  # what the step writes follows the shipped schema
    for job, classes in (("seg-a", all_classes), ("seg-b", two)):
        entry = doc["models"][job]
        want = _expected(store, manifest, prefixes[job], split["val"], classes)
        got = entry["metrics"]
        assert entry["task"] == "semantic-segmentation" and entry["imageCount"] == 4
        assert got["pixelAccuracy"] == pytest.approx(want["pixelAccuracy"])
        assert got["mIoU"] == pytest.approx(want["mIoU"])
        assert [r["class"] for r in got["perClass"]] == classes
        for row, iou in zip(got["perClass"], want["iou"], strict=True):
            assert row["iou"] == (pytest.approx(iou) if iou is not None else None)
        assert 0 < got["mIoU"] < 1 and got["meanDice"] >= got["mIoU"]
        assert "__bg__" not in entry["modelClassesNotInDataset"]
        assert status["metrics"][job]["mIoU"] == pytest.approx(got["mIoU"], abs=1e-6)
    assert doc["models"]["seg-b"]["datasetClassesNotInModel"] == ["square"]
    assert status["headline"].startswith("mIoU=")
    report = store.get_bytes(f"{layout.benchmark_prefix(NS, 'seg-compare')}/report.html").decode()
    # The spread of samples, plus the best/worst galleries and the disagreement images.
    assert "IoU per class" in report and "left: ground truth" in report and report.count("<img") >= 8
    # metrics.json v2 (issue 11): boundary IoU, per-image mIoU, intervals; compared on the shared classes.
    for job in ("seg-a", "seg-b"):
        entry = doc["models"][job]
        assert entry["perImage"]["metric"] == "mIoU" and len(entry["perImage"]["values"]) == 4
        assert "boundaryIoU" in entry["metrics"] and "boundaryIoU" in entry["metrics"]["perClass"][1]
        assert "pixelAccuracy" in entry["intervals"]
        assert set(entry["intervals"]) <= {"mIoU", "meanDice", "pixelAccuracy"}
    comparison = doc["comparison"]
    assert comparison["classSetsDiffer"] is True and sorted(comparison["sharedClasses"]) == sorted(two)
    assert comparison["differences"]["pixelAccuracy"][0]["paired"] is True


def test_benchmark_refuses_a_semantic_model_on_a_classification_dataset(tmp_path: Path) -> None:
    from kubeforge.datasets.manifest import Category, ManifestImage
    from kubeforge.datasets.versions import write_version

    store = LocalStore(tmp_path / "store")
    data = b"x"
    manifest = Manifest(dataset="cls", task="classification", categories=[Category(id=1, name="circle")],
                        images=[ManifestImage(file_name="a.png", blob=store.put_blob(data), width=8, height=8,
                                              bytes=1, category_id=1)])
    ref = DatasetRef(dataset="cls", digest=write_version(store, manifest)[0])
    prefix = _experiment(store, "seg", ["__bg__", "circle"], 0, tmp_path, {"train": [], "val": ["a.png"]})
    run = BenchmarkRun.model_validate({
        "store": store.uri, "namespace": NS, "name": "bad", "spec": {"models": [{"trainingJob": "seg"}]},
        "dataset": ref.model_dump(), "models": [{"training_job": "seg", "experiment_prefix": prefix}],
        "output_prefix": layout.benchmark_prefix(NS, "bad"),
    })
    with pytest.raises(ValueError, match="task is 'semantic-segmentation' but dataset 'cls' is 'classification'"):
        benchmark.run(run)

"""The benchmark step on an instance-segmentation export whose answers are known in advance.

The model is a real ONNX export of a module returning fixed boxes, scores, labels and uint8
masks (64 px input, the same detections for each 128 px image), so the mask AP is exact: a
square found with its exact mask, an object annotated with a box only found with that box, and
a circle whose predicted mask is its bounding box (mask IoU pi/4 ~ 0.78: a hit at IoU
0.50-0.75, a miss above).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.evaluation import metrics_schema
from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec
from kubeforge.steps import benchmark
from kubeforge.steps.spec import BenchmarkModel, BenchmarkRun, DatasetRef
from kubeforge.store import LocalStore, layout

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]
NS = "team-a"
SQUARE = (20, 20, 60, 60)  # image pixels (128 x 128); the model sees 64 x 64, so everything halves
CIRCLE = (90, 70, 30)  # centre x, y and radius
BOX_ONLY = (64, 16, 104, 48)


def _png() -> bytes:
    img = Image.new("RGB", (128, 128), (30, 30, 30))
    ImageDraw.Draw(img).rectangle(SQUARE, fill=(200, 200, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _dataset(store: LocalStore) -> DatasetRef:
    data = _png()
    images = [ManifestImage(file_name=f"v{i}.png", blob=store.put_blob(data), width=128, height=128, bytes=len(data))
              for i in range(2)]
    x0, y0, x1, y1 = SQUARE
    cx, cy, r = CIRCLE
    angles = [2 * math.pi * k / 32 for k in range(32)]
    ring = [c for a in angles for c in (cx + r * math.cos(a), cy + r * math.sin(a))]
    bx0, by0, bx1, by1 = BOX_ONLY
    anns = [
        ManifestAnnotation(image=0, category_id=4, bbox=[x0, y0, x1 - x0, y1 - y0], area=1600,
                           segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]]),
        ManifestAnnotation(image=0, category_id=2, bbox=[cx - r, cy - r, 2 * r, 2 * r], area=2800, segmentation=[ring]),
        ManifestAnnotation(image=1, category_id=4, bbox=[bx0, by0, bx1 - bx0, by1 - by0], area=1280),  # no mask
    ]
    manifest = Manifest(dataset="masks", task="object-detection", images=images, annotations=anns,
                        categories=[Category(id=2, name="circle"), Category(id=4, name="square")])
    digest = manifest.digest()
    store.put_bytes(layout.dataset_manifest_key("masks", digest), manifest.to_bytes())
    return DatasetRef(dataset="masks", digest=digest)


def _box_mask(xyxy: tuple[float, ...]) -> np.ndarray:
    """A filled box given in image pixels, at the model's 64 px input."""
    m = np.zeros((64, 64), dtype=np.uint8)
    x0, y0, x1, y1 = (int(v / 2) for v in xyxy)
    m[y0:y1, x0:x1] = 1
    return m


def _export(path: Path) -> ModelMeta:
    import torch
    from torch import nn

    cx, cy, r = CIRCLE
    circle_box = (cx - r, cy - r, cx + r, cy + r)
    # Classes: circle 0, square 1. Same detections on both images; the square of image 0 is absent
    # from image 1 (a false positive there) and the box-only object is absent from image 0.
    rows = [(SQUARE, 0.9, 1), (circle_box, 0.8, 0), (BOX_ONLY, 0.7, 1)]

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("boxes", torch.tensor([[v / 2 for v in b] for b, _, _ in rows], dtype=torch.float32))
            self.register_buffer("scores", torch.tensor([s for _, s, _ in rows]))
            self.register_buffer("labels", torch.tensor([k for _, _, k in rows], dtype=torch.int64))
            self.register_buffer("masks", torch.from_numpy(np.stack([_box_mask(b) for b, _, _ in rows])))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            zero = x.mean() * 0  # ties the outputs to the input so the graph has a real input
            return self.boxes + zero, self.scores + zero, self.labels + zero.long(), self.masks + zero.to(torch.uint8)

    torch.onnx.export(Fixed().eval(), (torch.rand(1, 3, 64, 64),), str(path), input_names=["images"],
                      output_names=["boxes", "scores", "labels", "masks"], opset_version=17, dynamo=False)
    return ModelMeta(
        task="instance-segmentation", framework="torch", architecture="fixed-masks", classes=["circle", "square"],
        input=InputSpec(name="images", dtype="float32", shape=[1, 3, 64, 64], height=64, width=64,
                        dynamic_batch=False),
        outputs=[TensorSpec(name="boxes", dtype="float32", shape=[-1, 4]),
                 TensorSpec(name="scores", dtype="float32", shape=[-1]),
                 TensorSpec(name="labels", dtype="int64", shape=[-1]),
                 TensorSpec(name="masks", dtype="uint8", shape=[-1, 64, 64])],
    )


def test_mask_ap_is_the_known_answer(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ref = _dataset(store)
    prefix = layout.experiment_prefix(NS, "masks", "masks", "torch")
    meta = _export(tmp_path / "model.onnx")
    store.put_file(f"{prefix}/{layout.ONNX_EXPORT}", tmp_path / "model.onnx")
    store.put_bytes(f"{prefix}/{layout.MODEL_META}", meta.model_dump_json().encode())
    run = BenchmarkRun.model_validate({
        "store": store.uri, "namespace": NS, "name": "masks-bench",
        "spec": {"split": "all", "models": [{"trainingJob": "masks"}]}, "dataset": ref.model_dump(),
        "models": [BenchmarkModel(training_job="masks", experiment_prefix=prefix).model_dump()],
        "output_prefix": layout.benchmark_prefix(NS, "masks-bench"),
    })
    result = benchmark.run(run)
    doc = store.get_json(f"{layout.benchmark_prefix(NS, 'masks-bench')}/metrics.json")
    metrics_schema.validate(doc)  # what the step writes follows the shipped schema
    m = doc["models"]["masks"]["metrics"]
    # Boxes (exact): circle AP 1 (its one object, found first). Square, by score: 0.9 hit (image 0),
    # 0.9 false (image 1), 0.7 false (image 0), 0.7 hit (image 1): precision 1 up to recall 0.5, then
    # 0.5 -> (51 + 50 * 0.5) / 101 of COCO's recall points.
    square = 76 / 101
    assert (m["AP"], m["AP50"]) == pytest.approx(((1 + square) / 2, (1 + square) / 2))
    # Masks: the square's are exact (same AP as its boxes); the circle's box-shaped mask (IoU ~0.78)
    # is a hit at 6 of COCO's 10 IoU thresholds (0.50-0.75) -> 0.6.
    assert m["perClass"][0]["maskAP"] == pytest.approx(0.6) and m["mask"]["AP50"] == m["maskAP50"]
    assert m["perClass"][1]["maskAP"] == pytest.approx(square)
    expected = ((0.6 + square) / 2, (1 + square) / 2, (1 + square) / 2)
    assert (m["maskAP"], m["maskAP50"], m["maskAP75"]) == pytest.approx(expected)
    assert result["headline"] == f"maskAP={expected[0]:.3f}"
    assert result["metrics"]["masks"]["maskAP"] == pytest.approx(expected[0], abs=1e-6)
    assert list(result["metrics"]["masks"])[:4] == ["maskAP", "maskAP50", "maskAP75", "AP"]
    # metrics.json v2 (issue 11): mask sizes, intervals of the mask AP too.
    entry = doc["models"]["masks"]
    assert set(m["mask"]["bySize"]) == {"small", "medium", "large"} and m["counts"]["tp"] >= 1
    assert {"maskAP", "maskAP50", "AP", "f1"} <= set(entry["intervals"])
    for k, bounds in entry["intervals"].items():
        assert bounds["low"] <= m[k] <= bounds["high"]
    report = store.get_bytes(f"{layout.benchmark_prefix(NS, 'masks-bench')}/report.html").decode()
    assert "maskAP" in report

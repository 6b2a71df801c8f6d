"""ONNX export, its parity check against torch, and model_meta.json.

The export takes float32 RGB in [0, 1] NCHW at the model's square size (the contract in
`kubeforge.models.meta`); normalisation lives inside the graph.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec
from kubeforge_trainers.models import ModelInfo

OPSET = 17
INPUT_NAME = "images"


class DetectionExport(nn.Module):
    """One image in, `boxes` xyxy (input pixels), `scores`, `labels` (0-based) out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        det = self.model([images[0]])[0]
        # torchvision reserves 0 for background; consumers index `classes` from 0.
        return det["boxes"], det["scores"], det["labels"] - 1


def model_meta(info: ModelInfo, classes: list[str], size: int) -> ModelMeta:
    detection = info.task == "object-detection"
    batch = 1 if detection else -1
    if detection:
        outputs = [TensorSpec(name="boxes", dtype="float32", shape=[-1, 4]),
                   TensorSpec(name="scores", dtype="float32", shape=[-1]),
                   TensorSpec(name="labels", dtype="int64", shape=[-1])]
    else:
        outputs = [TensorSpec(name="logits", dtype="float32", shape=[-1, len(classes)])]
    return ModelMeta(
        task=info.task,  # type: ignore[arg-type]
        framework="torchvision", architecture=info.name, classes=classes,
        input=InputSpec(name=INPUT_NAME, dtype="float32", shape=[batch, 3, size, size], height=size, width=size,
                        dynamic_batch=not detection),
        outputs=outputs, normalization={"mean": list(info.mean), "std": list(info.std)}, onnx_opset=OPSET,
    )


def export_onnx(model: nn.Module, meta: ModelMeta, path: Path) -> None:
    """Trace-based export (`dynamo=False`): the path that handles torchvision's detection NMS."""
    model = model.eval().cpu()
    size = meta.input.height
    path.parent.mkdir(parents=True, exist_ok=True)
    detection = meta.task == "object-detection"
    module: nn.Module = DetectionExport(model) if detection else model
    example = torch.rand(1 if detection else 2, 3, size, size)
    dynamic = None if detection else {INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        # Tracing warns about Python control flow that is constant for a fixed input size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), input_names=[INPUT_NAME], output_names=[o.name for o in meta.outputs],
            dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )


@dataclass
class Parity:
    """ONNX Runtime vs torch on the same real inputs."""

    max_abs_diff: float
    images: int
    per_output: dict[str, float] = field(default_factory=dict)
    count_mismatches: list[dict[str, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"maxAbsDiff": self.max_abs_diff, "images": self.images, "perOutput": self.per_output,
                "countMismatches": self.count_mismatches}


def check_parity(model: nn.Module, meta: ModelMeta, path: Path, images: list[torch.Tensor]) -> Parity:
    """Run both on `images` ([3,S,S] each); detection compares matched detections only."""
    import onnxruntime as ort

    if not images:
        raise ValueError("parity check: no validation images to run")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.eval().cpu()
    if meta.task == "classification":
        batch = torch.stack(images)
        with torch.no_grad():
            expected = model(batch).numpy()
        (got,) = session.run(["logits"], {INPUT_NAME: batch.numpy()})
        diff = float(np.abs(expected - got).max())
        return Parity(max_abs_diff=diff, images=len(images), per_output={"logits": diff})
    wrapper = DetectionExport(model).eval()
    worst = {"boxes": 0.0, "scores": 0.0}
    mismatches = []
    for i, img in enumerate(images):
        with torch.no_grad():
            tb, ts, tl = (t.numpy() for t in wrapper(img[None]))
        ob, os_, ol = session.run(["boxes", "scores", "labels"], {INPUT_NAME: img[None].numpy()})
        if len(tb) != len(ob):
            mismatches.append({"image": i, "torch": len(tb), "onnx": len(ob)})
        for t_idx, o_idx in _match(tb, tl, ob, ol):
            worst["boxes"] = max(worst["boxes"], float(np.abs(tb[t_idx] - ob[o_idx]).max()))
            worst["scores"] = max(worst["scores"], float(abs(ts[t_idx] - os_[o_idx])))
    return Parity(max_abs_diff=max(worst.values()), images=len(images), per_output=worst,
                  count_mismatches=mismatches)


def _match(tb: np.ndarray, tl: np.ndarray, ob: np.ndarray, ol: np.ndarray) -> list[tuple[int, int]]:
    """Pair each torch detection with the unused ONNX detection of the same label nearest to it.

    Both lists are sorted by score, so ties in score may swap order; matching by box keeps the
    comparison about numbers, not ordering.
    """
    used: set[int] = set()
    pairs = []
    for t in range(len(tb)):
        candidates = [o for o in range(len(ob)) if o not in used and ol[o] == tl[t]]
        if not candidates:
            continue
        best = min(candidates, key=lambda o: float(np.abs(tb[t] - ob[o]).max()))
        used.add(best)
        pairs.append((t, best))
    return pairs

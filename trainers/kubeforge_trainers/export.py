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
# Detections overlapping at least this much (same label) are the same detection in both runtimes.
MATCH_IOU = 0.5


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
    # Detection only: how many torch detections were compared, and how many found no ONNX partner.
    matched: int = 0
    unmatched: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"maxAbsDiff": self.max_abs_diff, "images": self.images, "perOutput": self.per_output,
                "countMismatches": self.count_mismatches, "matched": self.matched, "unmatched": self.unmatched}


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
    matched = unmatched = 0
    for i, img in enumerate(images):
        with torch.no_grad():
            tb, ts, tl = (t.numpy() for t in wrapper(img[None]))
        ob, os_, ol = session.run(["boxes", "scores", "labels"], {INPUT_NAME: img[None].numpy()})
        if len(tb) != len(ob):
            mismatches.append({"image": i, "torch": len(tb), "onnx": len(ob)})
        pairs = _match(tb, tl, ob, ol)
        matched += len(pairs)
        unmatched += len(tb) - len(pairs)
        for t_idx, o_idx in pairs:
            worst["boxes"] = max(worst["boxes"], float(np.abs(tb[t_idx] - ob[o_idx]).max()))
            worst["scores"] = max(worst["scores"], float(abs(ts[t_idx] - os_[o_idx])))
    return Parity(max_abs_diff=max(worst.values()), images=len(images), per_output=worst,
                  count_mismatches=mismatches, matched=matched, unmatched=unmatched)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _match(tb: np.ndarray, tl: np.ndarray, ob: np.ndarray, ol: np.ndarray) -> list[tuple[int, int]]:
    """Pair torch and ONNX detections of the same label by overlap, one to one.

    Why not compare by position: scores that differ in the last bit reorder near-ties, and at the
    tail (the score threshold, the per-image cap, NMS between near-equal boxes) a low-score
    detection can be in one list and not the other. Those are reported as unmatched; everything
    that pairs up (IoU >= MATCH_IOU, same label) must agree numerically.
    """
    if len(tb) == 0 or len(ob) == 0:
        return []
    iou = _iou(tb, ob) * (tl[:, None] == ol[None, :])
    # Most-overlapping pairs first, so a detection present in only one list cannot take the
    # partner of one present in both.
    ts, os_ = np.nonzero(iou >= MATCH_IOU)
    order = np.argsort(-iou[ts, os_], kind="stable")
    used_t: set[int] = set()
    used_o: set[int] = set()
    pairs = []
    for t, o in zip(ts[order].tolist(), os_[order].tolist(), strict=True):
        if t not in used_t and o not in used_o:
            used_t.add(t)
            used_o.add(o)
            pairs.append((t, o))
    return pairs

"""ONNX export, its parity check against torch, and model_meta.json.

The export takes float32 RGB in [0, 1] NCHW at the model's square size (the contract in
`kubeforge.models.meta`); normalisation lives inside the graph.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubeforge.models.meta import InputSpec, ModelMeta
from kubeforge_trainers.models import ModelInfo

OPSET = 17
INPUT_NAME = "images"
# Detections overlapping at least this much (same label) are the same detection in both runtimes.
MATCH_IOU = 0.5


def model_meta(info: ModelInfo, classes: list[str], size: int) -> ModelMeta:
    from kubeforge_trainers.tasks import task_kind

    kind = task_kind(info.task)
    batched = kind.batched_export
    return ModelMeta(
        task=info.task,  # type: ignore[arg-type]
        framework=info.framework, architecture=info.name, classes=classes,
        input=InputSpec(name=INPUT_NAME, dtype="float32", shape=[-1 if batched else 1, 3, size, size], height=size,
                        width=size, dynamic_batch=batched),
        outputs=kind.outputs(classes, size), normalization={"mean": list(info.mean), "std": list(info.std)},
        onnx_opset=OPSET,
    )


def export_onnx(model: nn.Module, meta: ModelMeta, path: Path) -> None:
    """Trace-based export (`dynamo=False`): the path that handles torchvision's detection NMS."""
    from kubeforge_trainers.tasks import task_kind

    kind = task_kind(meta.task)
    model = model.eval().cpu()
    size = meta.input.height
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2 if kind.batched_export else 1, 3, size, size)
    with warnings.catch_warnings():
        # Tracing warns about Python control flow that is constant for a fixed input size.
        warnings.simplefilter("ignore")
        # eval() on the wrapper too: the exporter restores the mode of the module it was given, and a
        # fresh wrapper is in training mode, which would leave `model` training after the export.
        torch.onnx.export(
            kind.export_module(model).eval(), (example,), str(path), input_names=[INPUT_NAME],
            output_names=[o.name for o in meta.outputs], dynamic_axes=kind.dynamic_axes(meta.classes),
            opset_version=OPSET, dynamo=False,
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
    # Set when the export itself detected nothing to compare and the check ran on a copy of it that
    # keeps detections down to this score (see `check_parity`).
    score_threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"maxAbsDiff": self.max_abs_diff, "images": self.images, "perOutput": self.per_output,
               "countMismatches": self.count_mismatches, "matched": self.matched, "unmatched": self.unmatched}
        if self.score_threshold is not None:
            out["scoreThreshold"] = self.score_threshold
        return out


# A runtime for the parity check: (exported file, its meta) -> a function from a batch to the outputs.
Runner = Callable[[Path, ModelMeta], Callable[[torch.Tensor], list[Any]]]


def check_parity(model: nn.Module, meta: ModelMeta, path: Path, images: list[torch.Tensor],
                 runner: Runner | None = None) -> Parity:
    """Run torch and the export (ONNX Runtime unless `runner` says otherwise) on the same real images
    ([3,S,S] each); the task compares them."""
    from kubeforge_trainers.tasks import task_kind

    if not images:
        raise ValueError("parity check: no validation images to run")
    run_export = runner or onnx_runner
    kind = task_kind(meta.task)
    model = model.eval().cpu()
    parity = kind.parity(model, run_export(path, meta), images)
    if parity.matched or kind.parity_score_threshold is None:
        return parity
    # A detector trained from scratch for an epoch or two may keep nothing above its score threshold,
    # and "0 of 0 detections agree" proves nothing. The threshold is a constant in the graph, so export
    # the same weights once more keeping low-score detections and compare those: every op (backbone,
    # heads, box decoding, NMS) is the export's; only that constant differs.
    with tempfile.TemporaryDirectory(prefix="kubeforge-parity-") as tmp, \
            kind.lowered_score_threshold(model, kind.parity_score_threshold):
        low = Path(tmp) / "parity.onnx"
        export_onnx(model, meta, low)
        parity = kind.parity(model, run_export(low, meta), images)
    parity.score_threshold = kind.parity_score_threshold
    return parity


def onnx_runner(path: Path, meta: ModelMeta) -> Callable[[torch.Tensor], list[Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Mask R-CNN's paste loop grows its output per detection; ORT warns about every step of it.
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in meta.outputs]

    def onnx_outputs(batch: torch.Tensor) -> list[Any]:
        return list(session.run(names, {INPUT_NAME: batch.numpy()}))

    return onnx_outputs


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_detections(tb: np.ndarray, tl: np.ndarray, ob: np.ndarray, ol: np.ndarray) -> list[tuple[int, int]]:
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

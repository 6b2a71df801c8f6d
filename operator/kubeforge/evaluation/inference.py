"""Run an ONNX export through ONNX Runtime, exactly as a user of the export would.

The export's contract is `kubeforge.models.meta` (inputs, output names and shapes) and the
preprocessing is `kubeforge.models.preprocess`, the same code Triton and `predict` use, so
what the benchmark measures is what serving returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from kubeforge.evaluation.detection import ImageDetections
from kubeforge.evaluation.instances import ImageInstances
from kubeforge.models.meta import ModelMeta
from kubeforge.models.outputs import class_mask, instance_masks
from kubeforge.models.preprocess import scale_boxes_to_image, to_input

# The outputs each task's export must have (model_meta.py); others fall back to detection's.
OUTPUTS = {"classification": ["logits"], "instance-segmentation": ["boxes", "scores", "labels", "masks"],
           "semantic-segmentation": ["mask"]}
DEFAULT_BATCH = 16  # images per ORT call when the batch dimension is dynamic


@dataclass
class Timings:
    """Where the time went; seconds unless named otherwise."""

    load_s: float = 0.0
    preprocess_s: float = 0.0
    inference_s: float = 0.0
    images: int = 0
    calls: int = 0

    def to_json(self) -> dict[str, float | int]:
        per_image = self.inference_s / self.images if self.images else 0.0
        return {
            "loadSeconds": round(self.load_s, 4),
            "preprocessSeconds": round(self.preprocess_s, 4),
            "inferenceSeconds": round(self.inference_s, 4),
            "images": self.images,
            "calls": self.calls,
            "msPerImage": round(per_image * 1000, 3),
            "imagesPerSecond": round(self.images / self.inference_s, 2) if self.inference_s > 0 else 0.0,
        }


@dataclass
class OnnxModel:
    """An ONNX Runtime session bound to the export's model_meta.json."""

    path: Path
    meta: ModelMeta
    session: ort.InferenceSession
    timings: Timings = field(default_factory=Timings)

    @classmethod
    def load(cls, path: Path, meta: ModelMeta, threads: int | None = None) -> OnnxModel:
        start = time.perf_counter()
        options = ort.SessionOptions()
        # Default ORT spawns one thread per core of the host; in a pod that is the node's
        # cores, not the pod's CPU limit. Let the operator cap it with an env variable.
        threads = threads or int(os.environ.get("KUBEFORGE_ORT_THREADS", "0") or 0)
        if threads:
            options.intra_op_num_threads = threads
        # Errors only: Mask R-CNN's paste loop grows an output per detection and ORT warns at every step.
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
        except Exception as exc:  # ORT raises its own types (InvalidGraph, Fail, ...)
            raise ValueError(f"{path}: ONNX Runtime cannot load the model: {exc}") from exc
        model = cls(path=path, meta=meta, session=session)
        model._check_contract()
        model.timings.load_s = time.perf_counter() - start
        return model

    def _check_contract(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != self.meta.input.name:
            raise ValueError(
                f"{self.path}: expected one input named {self.meta.input.name!r} (model_meta.json input.name), "
                f"the graph has {[i.name for i in inputs]}"
            )
        wanted = OUTPUTS.get(self.meta.task, ["boxes", "scores", "labels"])
        have = [o.name for o in self.session.get_outputs()]
        missing = [name for name in wanted if name not in have]
        if missing:
            raise ValueError(f"{self.path}: a {self.meta.task} export needs outputs {wanted}; missing {missing}")

    def _run(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        start = time.perf_counter()
        result = self.session.run(outputs, {self.meta.input.name: batch})
        self.timings.inference_s += time.perf_counter() - start
        self.timings.calls += 1
        return result

    def _prepare(self, img: Image.Image) -> np.ndarray:
        start = time.perf_counter()
        arr = to_input(img, self.meta)
        self.timings.preprocess_s += time.perf_counter() - start
        return arr

    def classify(self, images: Iterable[Image.Image], batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Logits float32 [N, C] for RGB images, several images per ORT call when the batch is dynamic."""
        if self.meta.task != "classification":
            raise ValueError(f"{self.path}: classify() on a {self.meta.task} model")
        size = batch_size if self.meta.input.dynamic_batch else 1
        num_classes = len(self.meta.classes)
        chunks: list[np.ndarray] = []
        pending: list[np.ndarray] = []

        def flush() -> None:
            (logits,) = self._run(np.stack(pending), ["logits"])
            if logits.ndim != 2 or logits.shape != (len(pending), num_classes):
                raise ValueError(
                    f"{self.path}: output 'logits' has shape {list(logits.shape)}; expected "
                    f"[{len(pending)}, {num_classes}] (batch, len(model_meta.json classes))"
                )
            chunks.append(logits.astype(np.float32, copy=False))
            self.timings.images += len(pending)
            pending.clear()

        for img in images:
            pending.append(self._prepare(img))
            if len(pending) == size:
                flush()
        if pending:
            flush()
        return np.concatenate(chunks) if chunks else np.zeros((0, num_classes), dtype=np.float32)

    def detect(self, img: Image.Image) -> ImageDetections:
        """One image per call (the detection contract); boxes scaled back to the image's pixels."""
        if self.meta.task != "object-detection":
            raise ValueError(f"{self.path}: detect() on a {self.meta.task} model")
        boxes, scores, labels = self._run(self._prepare(img)[None], ["boxes", "scores", "labels"])
        self.timings.images += 1
        return self._detections(boxes, scores, labels, img)

    def instances(self, img: Image.Image) -> ImageInstances:
        """One image per call: detections and their masks, both scaled back to the image's pixels."""
        if self.meta.task != "instance-segmentation":
            raise ValueError(f"{self.path}: instances() on a {self.meta.task} model")
        boxes, scores, labels, masks = self._run(self._prepare(img)[None], OUTPUTS["instance-segmentation"])
        self.timings.images += 1
        detections = self._detections(boxes, scores, labels, img)
        try:
            scaled = instance_masks(masks, len(detections.scores), self.meta, img.width, img.height)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        return ImageInstances.from_masks(detections, scaled)

    def _detections(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    img: Image.Image) -> ImageDetections:
        # Tolerate a leading batch axis of 1 ([1, N, 4]); anything else breaks the contract.
        if boxes.ndim == 3 and boxes.shape[0] == 1:
            boxes, scores, labels = boxes[0], scores.reshape(-1), labels.reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (len(boxes),) or labels.shape != (len(boxes),):
            raise ValueError(
                f"{self.path}: detection outputs boxes {list(boxes.shape)}, scores {list(scores.shape)}, "
                f"labels {list(labels.shape)}; expected [N, 4], [N], [N]"
            )
        num_classes = len(self.meta.classes)
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{self.path}: output 'labels' has values {int(labels.min())}..{int(labels.max())}; expected "
                f"0-based indices into the {num_classes} classes of model_meta.json"
            )
        scaled = scale_boxes_to_image(boxes, self.meta, img.width, img.height)
        return ImageDetections(boxes=scaled, scores=scores, labels=labels.astype(np.int64))

    def detect_all(
        self, images: Sequence[Image.Image], progress: Callable[[int], None] | None = None
    ) -> list[ImageDetections]:
        out = []
        for i, img in enumerate(images):
            out.append(self.detect(img))
            if progress:
                progress(i + 1)
        return out

    def segment(self, images: Iterable[Image.Image], batch_size: int = DEFAULT_BATCH) -> Iterator[np.ndarray]:
        """Semantic segmentation: per image, uint8 [H, W] class indices at the image's own size.

        Several images per ORT call when the batch is dynamic; the export's `mask` (input size) is
        resized nearest-neighbour to each image, as `predict` does.
        """
        if self.meta.task != "semantic-segmentation":
            raise ValueError(f"{self.path}: segment() on a {self.meta.task} model")
        size = batch_size if self.meta.input.dynamic_batch else 1
        pending: list[tuple[np.ndarray, int, int]] = []

        def flush() -> Iterator[np.ndarray]:
            (masks,) = self._run(np.stack([x for x, _, _ in pending]), ["mask"])
            if len(masks) != len(pending):
                raise ValueError(f"{self.path}: output 'mask' has {len(masks)} masks for {len(pending)} images")
            self.timings.images += len(pending)
            for mask, (_, w, h) in zip(masks, pending, strict=True):
                try:
                    yield class_mask(mask, self.meta, w, h)
                except ValueError as exc:
                    raise ValueError(f"{self.path}: {exc}") from None
            pending.clear()

        for img in images:
            pending.append((self._prepare(img), img.width, img.height))
            if len(pending) == size:
                yield from flush()
        if pending:
            yield from flush()


def onnxruntime_version() -> str:
    return ort.__version__

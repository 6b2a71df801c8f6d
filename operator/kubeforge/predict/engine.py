"""Run a model over many inputs: backends (Triton, ONNX Runtime), decoding, and the prediction stream.

This first version is the contract other parts build on (see the package docstring); its
throughput work (gRPC, bounded concurrency, overlapping decode and inference) keeps these names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import to_input
from kubeforge.serving import client as triton_client
from kubeforge.serving.client import Prediction

DEFAULT_CONCURRENCY = 8


@dataclass
class Item:
    """One input: a name for outputs (a path, an s3:// URI, or `video.mp4#frame=12`), and how to open it."""

    name: str
    load: Callable[[], Image.Image]  # RGB; raises ValueError naming `name` when unreadable
    frame: int | None = None  # video frames: the index in the video
    timestamp: float | None = None  # video frames: seconds from the start


class Backend(Protocol):
    """A model that answers one preprocessed input [1, 3, H, W] with its named outputs."""

    meta: ModelMeta

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def output_names(meta: ModelMeta) -> list[str]:
    """The outputs decoding needs (semantic segmentation: the mask, not the logits)."""
    return triton_client.REQUESTED_OUTPUTS.get(meta.task) or [o.name for o in meta.outputs]


class TritonBackend:
    """A model served by Triton (HTTP, Open Inference Protocol)."""

    def __init__(self, url: str, model_name: str, meta: ModelMeta, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.meta = meta
        self.model_name = model_name
        self._client = triton_client._client(url, concurrency=concurrency)

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        inputs, outputs = triton_client.encode_request(x, self.meta)
        result = self._client.infer(self.model_name, inputs, outputs=outputs)
        return {name: result.as_numpy(name) for name in output_names(self.meta)}

    def close(self) -> None:
        self._client.close()


class OnnxBackend:
    """A TrainingJob's export run in-process by ONNX Runtime (no server)."""

    def __init__(self, model_path: Path, meta: ModelMeta, threads: int | None = None) -> None:
        from kubeforge.evaluation.inference import OnnxModel

        self.meta = meta
        self._model = OnnxModel.load(model_path, meta, threads=threads)

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        names = output_names(self.meta)
        return dict(zip(names, self._model._run(x, names), strict=True))

    def close(self) -> None:
        pass


def decode(meta: ModelMeta, outputs: dict[str, np.ndarray], name: str, width: int, height: int,
           threshold: float, top_k: int = 5) -> Prediction:
    """A backend's outputs for one image -> its Prediction in the image's own pixels."""
    pred = Prediction(image=name, width=width, height=height, task=meta.task)
    if meta.task == "classification":
        pred.classes = triton_client.decode_classification(outputs["logits"], meta, top_k)
    elif meta.task == "instance-segmentation":
        pred.detections = triton_client.decode_instances(
            outputs["boxes"], outputs["scores"], outputs["labels"], outputs["masks"], meta, width, height, threshold)
    elif meta.task == "semantic-segmentation":
        pred.mask, pred.pixels = triton_client.decode_segmentation(outputs["mask"], meta, width, height)
    else:
        pred.detections = triton_client.decode_detection(
            outputs["boxes"], outputs["scores"], outputs["labels"], meta, width, height, threshold)
    return pred


def predict_stream(backend: Backend, items: Iterable[Item], *, threshold: float, top_k: int = 5,
                   concurrency: int = DEFAULT_CONCURRENCY) -> Iterator[Prediction]:
    """One Prediction per item, in input order, with at most `concurrency` items in flight.

    A failure on one item (unreadable image, server error) raises from here naming the item; the
    predictions yielded before it stand (callers that must resume record them as they come).
    """
    meta = backend.meta

    def one(item: Item) -> Prediction:
        img = item.load()
        outputs = backend.infer(to_input(img, meta)[None])
        pred = decode(meta, outputs, item.name, img.width, img.height, threshold, top_k)
        pred.frame, pred.timestamp = item.frame, item.timestamp
        return pred

    window: list[tuple[Item, Future[Prediction]]] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for item in items:
            window.append((item, pool.submit(one, item)))
            if len(window) >= concurrency:
                yield _result(*window.pop(0))
        while window:
            yield _result(*window.pop(0))


def _result(item: Item, future: Future[Prediction]) -> Prediction:
    try:
        return future.result()
    except ValueError:
        raise
    except Exception as exc:  # server and runtime errors have their own types
        raise RuntimeError(f"{item.name}: {type(exc).__name__}: {exc}") from exc


def file_item(path: Path | str) -> Item:
    """An image file as an Item."""
    from kubeforge.models.preprocess import load_rgb

    return Item(name=str(path), load=lambda: load_rgb(path))


__all__ = ["Backend", "Item", "OnnxBackend", "TritonBackend", "decode", "file_item", "predict_stream"]

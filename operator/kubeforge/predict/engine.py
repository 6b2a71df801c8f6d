"""Run a model over many inputs: backends (Triton, ONNX Runtime), decoding, and the prediction stream.

This first version is the contract other parts build on (see the package docstring); its
throughput work (gRPC, bounded concurrency, overlapping decode and inference) keeps these names.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import to_input
from kubeforge.serving import client as triton_client
from kubeforge.serving import triton_repo
from kubeforge.serving.client import Prediction

DEFAULT_CONCURRENCY = 8
DEFAULT_BATCH = 8  # images per request when the served model batches


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
    """A model served by Triton: gRPC (`host:port` or `grpc://host:port`) or HTTP (`http://host:port`).

    Requests go out asynchronously (`submit`), so a single client keeps `concurrency` of them in
    flight; tritonclient's clients are not thread-safe, async calls are their way to overlap.
    `max_batch_size` is the served config's: above 0, `predict_stream` stacks images into one request.
    """

    def __init__(self, url: str, model_name: str, meta: ModelMeta | None,
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        """`meta` None: the one kubeforge embedded in the served config (`triton_repo.META_PARAMETER`)."""
        self.model_name = model_name
        self.url = url
        self.grpc = not url.startswith(("http://", "https://"))
        if self.grpc:
            import tritonclient.grpc as grpcclient

            self._module: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(url.removeprefix("grpc://"))
            self.config: dict[str, Any] = self._client.get_model_config(model_name, as_json=True)["config"]
        else:
            import tritonclient.http as httpclient

            self._module = httpclient
            self._client = triton_client._client(url)
            self.config = self._client.get_model_config(model_name)
            self._http_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kubeforge-http")
            self._local = threading.local()
            self._http_clients: list[Any] = []
        parameters = self.config.get("parameters") or {}
        self.meta: ModelMeta = meta or triton_repo.meta_from_parameters(parameters)
        # The default threshold recorded at serving (predict.threshold), None when no Benchmark found one.
        self.threshold = triton_repo.threshold_from_parameters(parameters)
        self.max_batch_size = int(self.config.get("max_batch_size", 0) or 0)
        self._names = output_names(self.meta)

    def _request(self, x: np.ndarray) -> tuple[list[Any], list[Any]]:
        inp = self._module.InferInput(self.meta.input.name, list(x.shape), triton_client.triton_dtype(self.meta))
        inp.set_data_from_numpy(x)
        return [inp], [self._module.InferRequestedOutput(name) for name in self._names]

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.submit(x).result()

    def submit(self, x: np.ndarray) -> Future[dict[str, np.ndarray]]:
        """Send one request [B,3,H,W] without waiting; the future holds its outputs."""
        future: Future[dict[str, np.ndarray]] = Future()
        inputs, outputs = self._request(x)

        def done(result: Any, error: Any) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result({name: result.as_numpy(name) for name in self._names})

        if self.grpc:
            self._client.async_infer(self.model_name, inputs, done, outputs=outputs)
        else:  # HTTP async results live on gevent greenlets bound to one thread: a client per thread instead
            self._http_pool.submit(self._http_infer, inputs, outputs, done)
        return future

    def _http_infer(self, inputs: list[Any], outputs: list[Any], done: Callable[[Any, Any], None]) -> None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = triton_client._client(self.url)
            self._http_clients.append(client)
        try:
            result = client.infer(self.model_name, inputs, outputs=outputs)
        except Exception as exc:
            done(None, exc)
        else:
            done(result, None)

    def close(self) -> None:
        if not self.grpc:
            self._http_pool.shutdown(wait=True)
            for client in self._http_clients:
                client.close()
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


ErrorHandler = Callable[[Item, Exception], None]


@dataclass
class _Prepared:
    item: Item
    x: np.ndarray  # [3, H, W]
    width: int
    height: int


def _prepare(item: Item, meta: ModelMeta) -> _Prepared:
    img = item.load()
    return _Prepared(item, to_input(img, meta), img.width, img.height)


def batch_size_of(backend: Backend, requested: int | None = None) -> int:
    """Images per request: 1 unless the served model batches (then its max_batch_size, capped by `requested`)."""
    most = int(getattr(backend, "max_batch_size", 0) or 0)
    if most <= 0:
        return 1
    return max(1, min(most, requested or DEFAULT_BATCH))


def predict_stream(backend: Backend, items: Iterable[Item], *, threshold: float, top_k: int = 5,
                   concurrency: int = DEFAULT_CONCURRENCY, batch_size: int | None = None,
                   workers: int | None = None, on_error: ErrorHandler | None = None) -> Iterator[Prediction]:
    """One Prediction per item, in input order: a pipeline, not a loop.

    Worker threads decode and resize upcoming items while up to `concurrency` requests are at the
    model (asynchronous calls where the backend has `submit`, else threads); a model that batches
    gets up to `batch_size` images per request. Memory stays bounded: only a window of
    `concurrency * batch + workers` items is open at a time, however long `items` is.

    A failure on one item (unreadable image, server error) raises from here naming the item, or,
    with `on_error`, is handed to it and the item skipped; the predictions yielded before it stand
    (callers that must resume record them as they come).
    """
    meta = backend.meta
    batch = batch_size_of(backend, batch_size)
    workers = workers or min(8, (os.cpu_count() or 2) + 2)
    lookahead = concurrency * batch + workers
    source = iter(items)
    prepared: deque[tuple[Item, Future[_Prepared]]] = deque()
    in_flight: deque[tuple[list[_Prepared], Future[dict[str, np.ndarray]]]] = deque()
    submit = getattr(backend, "submit", None)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubeforge-decode") as decode_pool, \
            ThreadPoolExecutor(max_workers=1 if submit else concurrency) as infer_pool:
        send = submit or (lambda x: infer_pool.submit(backend.infer, x))
        exhausted = False
        while True:
            while not exhausted and len(prepared) < lookahead:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                prepared.append((item, decode_pool.submit(_prepare, item, meta)))
            if prepared and len(in_flight) < concurrency:
                # Keep the model busy first: the next batch goes out as soon as its images are ready.
                group: list[_Prepared] = []
                failed: tuple[Item, Exception] | None = None
                while prepared and len(group) < batch:
                    item, future = prepared.popleft()
                    try:
                        group.append(future.result())
                    except Exception as exc:
                        if on_error is None:
                            failed = (item, exc)
                            break
                        _fail(item, exc, on_error)
                if group:
                    x = np.stack([p.x for p in group]) if len(group) > 1 else group[0].x[None]
                    in_flight.append((group, send(x)))
                if failed is not None:
                    # Everything before the failed item is answered first: the predictions made stand.
                    while in_flight:
                        yield from _answers(meta, *in_flight.popleft(), threshold, top_k, on_error)
                    _fail(*failed, None)
                continue
            if not in_flight:
                break
            yield from _answers(meta, *in_flight.popleft(), threshold, top_k, on_error)


def _answers(meta: ModelMeta, group: list[_Prepared], future: Future[dict[str, np.ndarray]], threshold: float,
             top_k: int, on_error: ErrorHandler | None) -> Iterator[Prediction]:
    """The predictions of one request, in order."""
    try:
        outputs = future.result()
    except Exception as exc:
        for p in group:
            _fail(p.item, exc, on_error)
        return
    for i, p in enumerate(group):
        one = {k: v[i:i + 1] for k, v in outputs.items()} if len(group) > 1 else outputs
        try:
            pred = decode(meta, one, p.item.name, p.width, p.height, threshold, top_k)
        except Exception as exc:
            _fail(p.item, exc, on_error)
            continue
        pred.frame, pred.timestamp = p.item.frame, p.item.timestamp
        yield pred


def _fail(item: Item, exc: Exception, on_error: ErrorHandler | None) -> None:
    """Hand a failed item to `on_error`, or raise naming it (ValueErrors already name it)."""
    if item.name not in str(exc):
        kind = ValueError if isinstance(exc, ValueError) else RuntimeError
        exc = kind(f"{item.name}: {type(exc).__name__}: {exc}")
    if on_error is None:
        raise exc
    on_error(item, exc)


def file_item(path: Path | str) -> Item:
    """An image file as an Item."""
    from kubeforge.models.preprocess import load_rgb

    return Item(name=str(path), load=lambda: load_rgb(path))


__all__ = ["Backend", "Item", "OnnxBackend", "TritonBackend", "batch_size_of", "decode", "file_item", "predict_stream"]

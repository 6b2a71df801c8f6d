"""Request encoding and result decoding for a served model (Open Inference Protocol over HTTP).

The data plane only: images in, `Prediction`s out. Building repositories lives in
`triton_repo`, the process in `triton_server`, the command in `cli/predict.py`.
Every image goes out as its own request, sent concurrently, so Triton's dynamic batcher
(not the client) decides how to batch, and detection models get one image per call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kubeforge.models.meta import ModelMeta
from kubeforge.models.outputs import class_mask, instance_masks
from kubeforge.models.preprocess import load_rgb, scale_boxes_to_image, to_input
from kubeforge.serving import triton_repo

_NP_TO_TRITON = {"float32": "FP32", "int64": "INT64", "int32": "INT32", "uint8": "UINT8"}
DEFAULT_CONCURRENCY = 8
# What a client asks for when the export has more outputs than it decodes (semantic: not the logits).
REQUESTED_OUTPUTS = {"semantic-segmentation": ["mask"]}


@dataclass
class ClassScore:
    class_name: str
    index: int
    probability: float


@dataclass
class Detection:
    class_name: str
    label: int
    score: float
    box: list[float]  # xyxy in the original image's pixels
    # Instance segmentation: the mask at the original image's size (left out of to_dict), its pixel
    # count, and the PNG it was written to (`kubeforge predict --masks-dir`).
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    mask_pixels: int | None = None
    mask_file: str | None = None
    track_id: int | None = None  # tracking by detection (kubeforge.predict.tracking)


@dataclass
class ClassPixels:
    class_name: str
    index: int
    fraction: float  # of the image's pixels


@dataclass
class Prediction:
    image: str
    width: int
    height: int
    task: str
    classes: list[ClassScore] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    # Semantic segmentation: pixel share per class, and the class-index mask at the image's size.
    pixels: list[ClassPixels] = field(default_factory=list)
    mask: np.ndarray | None = field(default=None, repr=False)
    # Video frames: the frame index and its time in seconds from the start.
    frame: int | None = None
    timestamp: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("frame", "timestamp"):
            if out[key] is None:
                del out[key]
        for det in out["detections"]:
            det.pop("mask")
            if det["track_id"] is None:
                del det["track_id"]
            if det["mask_pixels"] is None:  # detection models: the same JSON as before masks existed
                del det["mask_pixels"], det["mask_file"]
        out.pop("mask")
        if self.task != "semantic-segmentation":
            out.pop("pixels")
        return out


def _host(url: str) -> str:
    # tritonclient wants host:port; users and status give http://host:port.
    return url.removeprefix("http://").removeprefix("https://").rstrip("/")


def _client(url: str, concurrency: int = 1) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(_host(url), concurrency=concurrency, network_timeout=120.0)


def fetch_config(url: str, model_name: str) -> dict[str, Any]:
    """The served model's config (Triton's JSON form), over HTTP."""
    client = _client(url)
    try:
        return dict(client.get_model_config(model_name))
    finally:
        client.close()


def fetch_meta(url: str, model_name: str) -> ModelMeta:
    """The ModelMeta a kubeforge-built repository embeds in its config (see triton_repo)."""
    return triton_repo.meta_from_parameters(fetch_config(url, model_name).get("parameters", {}))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def decode_classification(logits: np.ndarray, meta: ModelMeta, top_k: int) -> list[ClassScore]:
    """Logits [C] (or [1, C]) -> the top-k classes by softmax probability."""
    probs = softmax(np.asarray(logits, dtype=np.float64).reshape(-1))
    if probs.shape[0] != len(meta.classes):
        raise ValueError(f"output 'logits' has {probs.shape[0]} values; model_meta.json lists "
                         f"{len(meta.classes)} classes")
    order = np.argsort(-probs, kind="stable")[: max(top_k, 1)]
    return [ClassScore(meta.classes[i], int(i), float(probs[i])) for i in order]


def decode_detection(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, meta: ModelMeta,
    width: int, height: int, threshold: float,
) -> list[Detection]:
    """Export outputs (input pixels) -> detections in original-image pixels, score >= threshold, best first."""
    return [det for _, det in _decode(boxes, scores, labels, meta, width, height, threshold)]


def _decode(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, meta: ModelMeta,
    width: int, height: int, threshold: float,
) -> list[tuple[int, Detection]]:
    """`decode_detection` with each detection's index in the export's outputs."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    kept = np.flatnonzero(scores >= threshold)
    scaled = scale_boxes_to_image(boxes[kept], meta, width, height)
    out = []
    for index, box, score, label in zip(kept.tolist(), scaled, scores[kept], labels[kept], strict=True):
        if not 0 <= label < len(meta.classes):
            raise ValueError(f"output 'labels' has class index {label}; model_meta.json lists "
                             f"{len(meta.classes)} classes")
        out.append((index, Detection(meta.classes[label], int(label), float(score), [float(v) for v in box])))
    return sorted(out, key=lambda pair: -pair[1].score)


def decode_instances(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray, meta: ModelMeta,
    width: int, height: int, threshold: float,
) -> list[Detection]:
    """As `decode_detection`, each detection with its mask (uint8 [N, H, W] at the input size) at the image's size."""
    masks = np.asarray(masks)
    count = np.asarray(scores).size
    if masks.shape[:1] != (count,):
        raise ValueError(f"output 'masks' has shape {list(masks.shape)}; expected one mask per detection ({count})")
    decoded = _decode(boxes, scores, labels, meta, width, height, threshold)
    # Only the detections above the threshold are resized.
    scaled = instance_masks(masks[[i for i, _ in decoded]], len(decoded), meta, width, height)
    for (_, det), mask in zip(decoded, scaled, strict=True):
        det.mask, det.mask_pixels = mask, int(mask.sum())
    return [det for _, det in decoded]


def decode_segmentation(mask: np.ndarray, meta: ModelMeta, width: int, height: int
                        ) -> tuple[np.ndarray, list[ClassPixels]]:
    """Export `mask` ([H, W] or [1, H, W], input size) -> uint8 class indices at the image's size
    (nearest neighbour) and each present class's share of the pixels, largest first."""
    full = class_mask(mask, meta, width, height)
    counts = np.bincount(full.reshape(-1), minlength=len(meta.classes))
    total = max(int(counts.sum()), 1)
    present = [k for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    return full, [ClassPixels(meta.classes[k], int(k), float(counts[k] / total)) for k in present]


def _open(image: Image.Image | Path | str) -> tuple[str, Image.Image]:
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or "<image>", image.convert("RGB")
    return str(image), load_rgb(image)


def triton_dtype(meta: ModelMeta) -> str:
    """The input's datatype name in the inference protocol (FP32, ...)."""
    return _NP_TO_TRITON[meta.input.dtype]


def encode_request(x: np.ndarray, meta: ModelMeta) -> tuple[list[Any], list[Any]]:
    """One [1,3,H,W] input -> tritonclient inputs and requested outputs."""
    import tritonclient.http as httpclient

    inp = httpclient.InferInput(meta.input.name, list(x.shape), _NP_TO_TRITON[meta.input.dtype])
    inp.set_data_from_numpy(x, binary_data=True)
    names = REQUESTED_OUTPUTS.get(meta.task) or [o.name for o in meta.outputs]
    outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in names]
    return [inp], outputs


def predict_images(
    url: str, model_name: str, meta: ModelMeta, images: list[Image.Image | Path | str],
    top_k: int = 5, threshold: float = 0.5, concurrency: int = DEFAULT_CONCURRENCY,
) -> list[Prediction]:
    """Send each image as its own request (concurrently) and decode the answers, in input order."""
    opened = [_open(img) for img in images]
    client = _client(url, concurrency=max(1, min(concurrency, len(opened))))
    try:
        pending = []
        for _, img in opened:
            inputs, outputs = encode_request(to_input(img, meta)[None], meta)
            pending.append(client.async_infer(model_name, inputs, outputs=outputs))
        results = [p.get_result() for p in pending]
    finally:
        client.close()
    predictions = []
    for (name, img), result in zip(opened, results, strict=True):
        pred = Prediction(image=name, width=img.width, height=img.height, task=meta.task)
        if meta.task == "classification":
            pred.classes = decode_classification(result.as_numpy("logits"), meta, top_k)
        elif meta.task == "instance-segmentation":
            pred.detections = decode_instances(
                result.as_numpy("boxes"), result.as_numpy("scores"), result.as_numpy("labels"),
                result.as_numpy("masks"), meta, img.width, img.height, threshold,
            )
        elif meta.task == "semantic-segmentation":
            pred.mask, pred.pixels = decode_segmentation(result.as_numpy("mask"), meta, img.width, img.height)
        else:
            pred.detections = decode_detection(
                result.as_numpy("boxes"), result.as_numpy("scores"), result.as_numpy("labels"),
                meta, img.width, img.height, threshold,
            )
        predictions.append(pred)
    return predictions


def render_table(predictions: list[Prediction]) -> Any:
    """A rich Table: one row per class (classification) or detection, grouped by image."""
    from rich.table import Table

    table = Table(title="predictions")
    table.add_column("image")
    table.add_column("class")
    if predictions and predictions[0].task == "semantic-segmentation":
        table.add_column("pixels", justify="right")
        for pred in predictions:
            for rank, px in enumerate(pred.pixels):
                table.add_row(Path(pred.image).name if rank == 0 else "", px.class_name, f"{px.fraction:.1%}")
        return table
    if predictions and predictions[0].task == "classification":
        table.add_column("probability", justify="right")
        for pred in predictions:
            for rank, cls in enumerate(pred.classes):
                table.add_row(Path(pred.image).name if rank == 0 else "", cls.class_name, f"{cls.probability:.3f}")
        return table
    table.add_column("score", justify="right")
    table.add_column("box (x1, y1, x2, y2)")
    masks = bool(predictions) and predictions[0].task == "instance-segmentation"
    if masks:
        table.add_column("mask px", justify="right")
        table.add_column("mask file")
    for pred in predictions:
        if not pred.detections:
            table.add_row(Path(pred.image).name, "(none)", "", "", *(["", ""] if masks else []))
        for rank, det in enumerate(pred.detections):
            box = ", ".join(f"{v:.1f}" for v in det.box)
            extra = [str(det.mask_pixels), det.mask_file or ""] if masks else []
            table.add_row(Path(pred.image).name if rank == 0 else "", det.class_name, f"{det.score:.3f}", box, *extra)
    return table


def write_masks(predictions: list[Prediction], out_dir: Path) -> list[Path]:
    """The masks as PNGs at the image's size; returns the files written.

    Semantic segmentation: one per image, `<image stem>.png`, grayscale class indices (pixel value = index
    into model_meta `classes`). Instance segmentation: one per detection (0/255),
    `<image stem>_<rank>_<class>.png`, best first; sets `Detection.mask_file`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for pred in predictions:
        if pred.task == "semantic-segmentation":
            if pred.mask is None:
                raise ValueError(f"{pred.image}: a {pred.task} prediction has no mask")
            path = out_dir / f"{Path(pred.image).stem}.png"
            Image.fromarray(pred.mask).save(path)  # uint8 [H, W]: 8-bit grayscale
            written.append(path)
        for rank, det in enumerate(pred.detections):
            if det.mask is None:
                continue
            path = out_dir / f"{Path(pred.image).stem}_{rank:03d}_{det.class_name}.png"
            Image.fromarray(det.mask.astype(np.uint8) * 255).save(path)
            det.mask_file = str(path)
            written.append(path)
    return written

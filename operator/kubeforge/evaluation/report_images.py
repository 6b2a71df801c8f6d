"""Sample images for the report: ground truth and predictions drawn, embedded as base64 PNG."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from kubeforge.datasets.formats.common import rle_to_mask
from kubeforge.evaluation.detection import ImageDetections, ImageTruth
from kubeforge.evaluation.segmentation import IGNORE

GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 40, 40)
MAX_SIDE = 320  # thumbnails keep report.html small; detail is in metrics.json


@dataclass
class Sample:
    """One picture for the report with a plain-text caption (escaped when rendered).

    `group`: "sample" (the spread of the evaluated images), "best" / "worst" (the highest and lowest
    per-image scores) or "disagree" (a comparison's images where the models differ most)."""

    file_name: str
    png_base64: str
    caption: str
    group: str = "sample"
    scored: bool = False  # the caption already gives the image's per-image score


def _thumbnail(img: Image.Image) -> tuple[Image.Image, float]:
    # Shrink big images; enlarge tiny ones (up to 3x) so boxes and labels stay legible.
    scale = min(3.0, MAX_SIDE / max(img.width, img.height))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.BILINEAR if scale < 1 else Image.NEAREST), scale


def _encode(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _draw_boxes(
    draw: ImageDraw.ImageDraw, boxes: np.ndarray, names: list[str], color: tuple[int, int, int], scale: float
) -> None:
    for box, name in zip(boxes, names, strict=True):
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        draw.text((x1 + 2, y1 + 1), name, fill=color)


def detection_sample(
    file_name: str,
    img: Image.Image,
    truth: ImageTruth,
    dets: ImageDetections,
    class_names: list[str],
    threshold: float | None,
    truth_masks: Sequence[dict[str, Any]] | None = None,
    masks: Sequence[dict[str, Any]] | None = None,
) -> Sample:
    """Ground truth in green, detections at or above the operating threshold in red; instance masks
    (COCO RLE at the image's size, one per object / detection) tinted in the same colours."""
    keep = dets.scores >= (threshold if threshold is not None else np.inf)
    if truth_masks or masks:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
        for rle in truth_masks or []:
            tint(arr, rle_to_mask(rle), np.array(GT_COLOR, dtype=np.uint8))
        for rle, kept in zip(masks or [], keep, strict=False):
            if kept:
                tint(arr, rle_to_mask(rle), np.array(PRED_COLOR, dtype=np.uint8))
        img = Image.fromarray(arr)
    thumb, scale = _thumbnail(img)
    draw = ImageDraw.Draw(thumb)
    _draw_boxes(draw, truth.boxes, [class_names[k] for k in truth.labels], GT_COLOR, scale)
    names = [f"{class_names[k]} {s:.2f}" for k, s in zip(dets.labels[keep], dets.scores[keep], strict=True)]
    _draw_boxes(draw, dets.boxes[keep], names, PRED_COLOR, scale)
    caption = f"{file_name}: {len(truth.labels)} ground truth, {int(keep.sum())} predicted"
    return Sample(file_name=file_name, png_base64=_encode(thumb), caption=caption)


def classification_sample(file_name: str, img: Image.Image, truth: str, predicted: str, score: float) -> Sample:
    thumb, _ = _thumbnail(img)
    verdict = "correct" if truth == predicted else "wrong"
    caption = f"{file_name}: true {truth}, predicted {predicted} ({score:.2f}), {verdict}"
    return Sample(file_name=file_name, png_base64=_encode(thumb), caption=caption)


# Class colours for mask overlays; index 0 (`__bg__`) is left transparent.
MASK_PALETTE = np.array([(0, 0, 0), (230, 40, 40), (40, 120, 230), (0, 200, 0), (240, 180, 0), (160, 60, 200),
                         (0, 190, 190), (230, 100, 160), (120, 80, 30)], dtype=np.uint8)


def class_colors(index: np.ndarray | int) -> np.ndarray:
    """The colour of object class `index` (1..K, the model's 0-based class + 1), cycling through the palette."""
    return MASK_PALETTE[1:][(np.asarray(index, dtype=np.int64) - 1) % (len(MASK_PALETTE) - 1)]


def tint(arr: np.ndarray, painted: np.ndarray, colors: np.ndarray) -> None:
    """Blend `colors` into the uint8 RGB `arr` where `painted`, in place: the one mask overlay of reports
    and training previews."""
    colors = colors[painted] if colors.ndim == 3 else colors
    arr[painted] = (0.45 * arr[painted] + 0.55 * colors).astype(np.uint8)


def spread(n: int, k: int) -> list[int]:
    """k positions spread evenly over range(n), so samples are not all from one corner of the set."""
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(min(n, k))}) if n else []


def _overlay(img: Image.Image, mask: np.ndarray) -> Image.Image:
    painted = (mask > 0) & (mask != IGNORE)
    arr = np.asarray(img, dtype=np.uint8).copy()
    tint(arr, painted, class_colors(mask))
    return Image.fromarray(arr)


def segmentation_sample(file_name: str, img: Image.Image, truth: np.ndarray, predicted: np.ndarray,
                        iou: float | None) -> Sample:
    """Ground truth (left) and the predicted mask (right) over the image, one colour per class."""
    left, _ = _thumbnail(_overlay(img, truth))
    right, _ = _thumbnail(_overlay(img, predicted))
    both = Image.new("RGB", (left.width * 2 + 6, left.height), (255, 255, 255))
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 6, 0))
    score = "n/a" if iou is None else f"{iou:.2f}"
    return Sample(file_name=file_name, png_base64=_encode(both), caption=f"{file_name}: object mIoU {score}",
                  scored=True)

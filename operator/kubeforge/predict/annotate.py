"""Draw a Prediction on its image: boxes, masks, classes, scores and track ids (annotated images and video)."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from kubeforge.serving.client import Prediction

MASK_ALPHA = 0.45


def color(index: int) -> tuple[int, int, int]:
    """A stable, well-spread colour per class (or per track id)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw(img: Image.Image, pred: Prediction) -> Image.Image:
    """A copy of `img` (RGB, the prediction's own size) with the prediction drawn on it."""
    out = np.asarray(img.convert("RGB"), dtype=np.float32).copy()
    if pred.mask is not None:  # semantic: every non-background class tinted
        for index in np.unique(pred.mask):
            if index == 0:
                continue
            where = pred.mask == index
            out[where] = out[where] * (1 - MASK_ALPHA) + np.array(color(int(index))) * MASK_ALPHA
    for det in pred.detections:
        if det.mask is not None:
            key = det.track_id if det.track_id is not None else det.label
            where = det.mask.astype(bool)
            out[where] = out[where] * (1 - MASK_ALPHA) + np.array(color(key)) * MASK_ALPHA
    canvas = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(canvas)
    for det in pred.detections:
        key = det.track_id if det.track_id is not None else det.label
        x1, y1, x2, y2 = det.box
        pen.rectangle([x1, y1, x2, y2], outline=color(key), width=2)
        label = f"{det.class_name} {det.score:.2f}"
        if det.track_id is not None:
            label = f"#{det.track_id} {label}"
        pen.text((x1 + 2, max(0.0, y1 - 11)), label, fill=color(key))
    if pred.classes:
        top = pred.classes[0]
        pen.text((4, 4), f"{top.class_name} {top.probability:.2f}", fill=color(top.index))
    return canvas

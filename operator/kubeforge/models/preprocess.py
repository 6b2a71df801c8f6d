"""The one preprocessing every consumer of an export uses (benchmark, Triton, predict, parity)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from kubeforge.models.meta import ModelMeta


def load_rgb(source: bytes | Path | str) -> Image.Image:
    """Open an image from bytes or a path as RGB; raises ValueError naming what failed."""
    try:
        if isinstance(source, bytes):
            img = Image.open(io.BytesIO(source))
        else:
            img = Image.open(source)
        img.load()
    except Exception as exc:  # PIL raises many types for bad data
        where = "<bytes>" if isinstance(source, bytes) else str(source)
        raise ValueError(f"{where}: not a readable image ({exc})") from exc
    return img.convert("RGB")


def to_input(img: Image.Image, meta: ModelMeta) -> np.ndarray:
    """RGB image -> float32 [3, H, W] in [0, 1] at the model's input size (no batch dim)."""
    resized = img.resize((meta.input.width, meta.input.height), Image.BILINEAR)
    arr = np.asarray(resized, dtype=np.float32) * np.float32(meta.input.scale)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def scale_boxes_to_image(boxes: np.ndarray, meta: ModelMeta, width: int, height: int) -> np.ndarray:
    """Boxes in input pixels (xyxy) -> boxes in the original image's pixels."""
    sx = width / meta.input.width
    sy = height / meta.input.height
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] *= sx
    out[:, [1, 3]] *= sy
    return out


def scale_masks_to_image(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Instance masks [N, H, W] at the input size -> bool [N, height, width] (nearest neighbour, like the boxes'
    stretch undone)."""
    masks = np.asarray(masks)
    if not len(masks):
        return np.zeros((0, height, width), dtype=bool)
    return np.stack([mask_to_image(m, width, height) > 0 for m in masks])


def mask_to_image(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A mask (class indices, or 0/1) at one size -> width x height, nearest neighbour: the one mask resize."""
    mask = np.asarray(mask)
    if mask.dtype != np.uint8:
        mask = mask.astype(np.uint8)
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST), dtype=np.uint8)

"""A PNG grid of augmented training samples with their labels drawn: what the model is shown.

Drawn from the training dataset itself (its `__getitem__`, augmentation included), so a box or
mask that drifted off its object shows here before hours of training on it. The draws use
their own seed and leave the global generators as they were: the preview never changes the
run's augmentations.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from kubeforge.evaluation.report_images import class_colors, spread, tint
from kubeforge.evaluation.segmentation import IGNORE

PREVIEW_SAMPLES = 12
COLUMNS = 4
# Tiles are scaled to this many pixels: 64 px inputs stay readable, 512 px ones keep the report small.
TILE = 160
def _color(k: int) -> tuple[int, int, int]:
    """Class k's (0-based) colour: the reports' palette."""
    r, g, b = class_colors(k + 1).tolist()
    return r, g, b


def _name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)


def draw_sample(image: torch.Tensor, target: Any, classes: Sequence[str]) -> Image.Image:
    """One training sample: float [3,H,W] in [0, 1] and its target as the task's dataset returns it.

    Targets: a class index (classification), {boxes, labels 1..K[, masks]} (detection, instances),
    or a [H,W] class-id mask (semantic segmentation, 0 = background).
    """
    tile = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8).copy()
    caption = ""
    boxes: list[tuple[list[float], int]] = []
    if isinstance(target, dict):
        labels = [int(v) for v in target.get("labels", torch.zeros(0)).tolist()]
        masks = target.get("masks")
        if masks is not None:
            for k, m in enumerate(torch.as_tensor(masks).numpy().astype(bool)):
                tint(tile, m, np.asarray(_color(labels[k] - 1 if k < len(labels) else k)))
        boxes = [(box, label) for box, label in zip(target["boxes"].tolist(), labels, strict=True)]
    elif isinstance(target, torch.Tensor | np.ndarray) and np.ndim(target) == 2:
        ids = torch.as_tensor(target).numpy()
        for k in np.unique(ids):
            if 0 < k != IGNORE:
                tint(tile, ids == k, np.asarray(_color(int(k) - 1)))
        caption = ", ".join(_name(classes, int(k) - 1) for k in np.unique(ids) if 0 < k != IGNORE)
    else:
        caption = _name(classes, int(target))
    scale = TILE / tile.shape[0]
    resample = Image.NEAREST if scale >= 1 else Image.BILINEAR
    picture = Image.fromarray(tile).resize((round(tile.shape[1] * scale), TILE), resample)
    draw = ImageDraw.Draw(picture)
    for (x1, y1, x2, y2), label in boxes:
        left, top = x1 * scale, y1 * scale
        right, bottom = max(left, x2 * scale - 1), max(top, y2 * scale - 1)
        draw.rectangle([left, top, right, bottom], outline=_color(label - 1), width=2)
        draw.text((left + 2, top + 1), _name(classes, label - 1), fill=_color(label - 1))
    if caption:
        draw.rectangle([0, 0, picture.width, 12], fill=(0, 0, 0))
        draw.text((2, 0), caption, fill=(255, 255, 255))
    return picture


def save_preview(dataset: torch.utils.data.Dataset, classes: Sequence[str], path: Path, seed: int,
                 count: int = PREVIEW_SAMPLES) -> int:
    """Write the grid of `count` samples spread over the dataset; returns how many it holds."""
    total = len(dataset)  # type: ignore[arg-type]
    if total == 0:
        return 0
    picks = spread(total, count)
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            torch.manual_seed(seed)
            tiles = [draw_sample(*dataset[i], classes) for i in picks]
    finally:
        random.setstate(state)
    width, height = tiles[0].size
    rows = -(-len(tiles) // COLUMNS)
    grid = Image.new("RGB", (COLUMNS * width + (COLUMNS - 1) * 4, rows * height + (rows - 1) * 4), (255, 255, 255))
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % COLUMNS) * (width + 4), (k // COLUMNS) * (height + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG", optimize=True)
    return len(tiles)

"""Mask outputs of an export, checked against model_meta.json and brought to the image's size.

The one reading of the segmentation contract (`kubeforge.models.meta`): the Benchmark
(`evaluation.inference.OnnxModel`) and the serving client (`serving.client`) both call these,
so what is evaluated is exactly what `kubeforge predict` returns.
"""

from __future__ import annotations

import numpy as np

from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import mask_to_image, scale_masks_to_image


def instance_masks(masks: np.ndarray, count: int, meta: ModelMeta, width: int, height: int) -> np.ndarray:
    """`masks` uint8 [N, S, S] (input size, one per detection) -> bool [N, height, width]."""
    masks = np.asarray(masks)
    expected = (count, meta.input.height, meta.input.width)
    if masks.shape != expected:
        raise ValueError(f"output 'masks' has shape {list(masks.shape)}; expected {list(expected)} "
                         "(one mask per detection, at the model's input size)")
    return scale_masks_to_image(masks, width, height)


def class_mask(mask: np.ndarray, meta: ModelMeta, width: int, height: int) -> np.ndarray:
    """One image's `mask` ([S, S] or [1, S, S], class indices at the input size) -> uint8 [height, width]."""
    mask = np.asarray(mask)
    expected = (meta.input.height, meta.input.width)
    if mask.shape[-2:] != expected or mask.size != expected[0] * expected[1]:
        raise ValueError(f"output 'mask' has shape {list(mask.shape)}; expected {list(expected)} (model input size)")
    if mask.size and int(mask.max()) >= len(meta.classes):
        raise ValueError(f"output 'mask' has class index {int(mask.max())}; model_meta.json lists "
                         f"{len(meta.classes)} classes")
    return mask_to_image(mask.reshape(expected), width, height)

"""`spec.augmentations` as a `data.Augment`: torchvision.transforms.v2 over tv_tensors.

Image, boxes and masks are wrapped as `tv_tensors` and go through one v2 pipeline, so every
geometric step moves them together: masks with nearest-neighbour sampling (class ids never
blend) and background 0 where a rotation uncovers corners; pixel-only steps (colour, blur,
cutout) leave boxes and masks alone. Boxes are clamped to the image at the end but never
dropped here: the dataset drops the degenerate ones with their labels (the `Augment` contract).

Every random draw comes from torch's global generator (v2 draws nothing from elsewhere, and
`Cutout` below follows suit), which the trainer seeds per epoch: a resumed run replays the
augmentations of the epochs it redoes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from kubeforge.api.augmentations import (
    BlurAugmentation,
    ColorJitterAugmentation,
    CutoutAugmentation,
    FlipAugmentation,
    RotateAugmentation,
    ScaleCropAugmentation,
)
from kubeforge_trainers.data import Augment

# What a geometric step writes where it uncovers the canvas: black pixels, background class.
FILL: dict[type, int] = {tv_tensors.Image: 0, tv_tensors.Mask: 0}


class Cutout(v2.Transform):
    """Black out `holes` random squares of side `size` x the shorter image side (pixels only)."""

    def __init__(self, holes: int, size: float) -> None:
        super().__init__()
        self.holes = holes
        self.size = size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.functional.get_size(next(i for i in flat_inputs if isinstance(i, tv_tensors.Image)))
        side = max(1, round(self.size * min(height, width)))
        # Centres anywhere on the image (a hole may hang over the edge), as in DeVries & Taylor 2017.
        ys = torch.randint(0, height, (self.holes,)).tolist()
        xs = torch.randint(0, width, (self.holes,)).tolist()
        return {"side": side, "centres": list(zip(ys, xs, strict=True))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        out = inpt.clone()
        half = params["side"] // 2
        for y, x in params["centres"]:
            out[..., max(0, y - half):y - half + params["side"], max(0, x - half):x - half + params["side"]] = 0
        return tv_tensors.wrap(out, like=inpt)


def _step(spec: Any, size: tuple[int, int]) -> v2.Transform:
    """One declared augmentation as a v2 transform for (height, width) images, applied with probability p."""
    if isinstance(spec, FlipAugmentation):
        flips: list[v2.Transform] = []
        if spec.horizontal:
            flips.append(v2.RandomHorizontalFlip(spec.p))
        if spec.vertical:
            flips.append(v2.RandomVerticalFlip(spec.p))
        return v2.Compose(flips)
    if isinstance(spec, RotateAugmentation):
        # Not expanded: the output keeps the input's size (the Augment contract).
        step: v2.Transform = v2.RandomRotation(spec.degrees, interpolation=v2.InterpolationMode.BILINEAR,
                                               fill=FILL)  # type: ignore[arg-type]
    elif isinstance(spec, ScaleCropAugmentation):
        step = v2.RandomResizedCrop(size, scale=tuple(spec.scale), ratio=tuple(spec.ratio), antialias=True)
    elif isinstance(spec, ColorJitterAugmentation):
        step = v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)
    elif isinstance(spec, BlurAugmentation):
        step = v2.GaussianBlur(spec.kernel_size, tuple(spec.sigma))
    elif isinstance(spec, CutoutAugmentation):
        step = Cutout(spec.holes, spec.size)
    else:
        raise ValueError(f"spec.augmentations: unknown augmentation {spec!r}")
    return v2.RandomApply([step], p=spec.p)


class V2Augment:
    """A `data.Augment` running the declared steps as one v2 pipeline over (image, boxes, mask)."""

    def __init__(self, specs: Sequence[Any]) -> None:
        self.specs = list(specs)
        self.empty = not self.specs
        # Per image size: scaleCrop resizes back to the input's own size.
        self._pipelines: dict[tuple[int, int], v2.Compose] = {}

    def pipeline(self, size: tuple[int, int]) -> v2.Compose:
        if size not in self._pipelines:
            self._pipelines[size] = v2.Compose([*(_step(s, size) for s in self.specs), v2.ClampBoundingBoxes()])
        return self._pipelines[size]

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None, mask: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        if self.empty:
            return image, boxes, mask
        height, width = image.shape[:2]
        # Copies: the datasets' cached arrays are read-only, and no step may write into them.
        sample: dict[str, Any] = {"image": tv_tensors.Image(torch.from_numpy(image.copy()).permute(2, 0, 1))}
        if boxes is not None:
            sample["boxes"] = tv_tensors.BoundingBoxes(torch.from_numpy(boxes.copy()), format="XYXY",
                                                       canvas_size=(height, width))
        if mask is not None:
            sample["mask"] = tv_tensors.Mask(torch.from_numpy(mask.copy()))
        out = self.pipeline((height, width))(sample)
        moved_boxes = out["boxes"].numpy().astype(np.float32) if boxes is not None else None
        moved_mask = out["mask"].numpy().astype(mask.dtype) if mask is not None else None
        return out["image"].permute(1, 2, 0).numpy(), moved_boxes, moved_mask


def build_augment(specs: Sequence[Any] | None) -> Augment | None:
    """The spec's augmentations; None (not declared) keeps the datasets' default horizontal flip."""
    if specs is None:
        return None
    return V2Augment(specs)

"""Torch datasets built from a dataset-version manifest whose image blobs sit in a local cache.

Images are resized (stretched) to the model's square input and scaled to [0, 1] exactly
like `kubeforge.models.preprocess.to_input`, so what the model trains on is what every
consumer of the export feeds it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kubeforge.datasets.manifest import Manifest, ManifestAnnotation, ManifestImage
from kubeforge.models.preprocess import load_rgb
from kubeforge.store import layout

# Same constant as ModelMeta.input.scale's default and `to_input`: multiply in float32.
PIXEL_SCALE = np.float32(1 / 255)
# Boxes smaller than this (input pixels) after resizing carry no signal and trip torchvision's checks.
MIN_BOX_SIDE = 1.0


# (image uint8 HWC, boxes xyxy float32 [N,4] or None, mask [H,W] class ids or [N,H,W] instances or None)
# -> the same, augmented. The one place training data is augmented, so images, boxes and masks always
# move together. Contract: the output has the input's size and the same N boxes/instances in the same
# order (clipped to the image, possibly degenerate); the dataset then drops boxes thinner than
# MIN_BOX_SIDE together with their labels and masks, so labels never need to pass through here.
Augment = Callable[[np.ndarray, np.ndarray | None, np.ndarray | None],
                   tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]


def flip_augment(image: np.ndarray, boxes: np.ndarray | None, mask: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Horizontal flip with probability 0.5: the default when the spec declares no augmentations."""
    if random.random() >= 0.5:
        return image, boxes, mask
    width = image.shape[1]
    image = image[:, ::-1]
    if boxes is not None:
        boxes = boxes.copy()
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if mask is not None:
        mask = mask[..., ::-1]
    return image, boxes, mask


def kept_boxes(boxes: np.ndarray) -> np.ndarray:
    """Which augmented boxes still carry signal (both sides at least MIN_BOX_SIDE): a bool index for
    the boxes and everything that goes with them (labels, instance masks)."""
    return ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)


def input_objects(annotations: Sequence[ManifestAnnotation], img: ManifestImage, label_of: Mapping[int, int],
                  size: int) -> list[tuple[ManifestAnnotation, np.ndarray, int]]:
    """One image's trainable objects with their boxes in input pixels (xyxy, clipped) and labels.

    Crowd regions and classes outside `label_of` are dropped, and so are boxes thinner than
    MIN_BOX_SIDE at this size: they carry no signal and trip torchvision's checks.
    """
    sx, sy = size / img.width, size / img.height
    out = []
    for ann in annotations:
        if ann.iscrowd or ann.category_id not in label_of:
            continue
        x, y, w, h = ann.bbox
        box = np.clip([x * sx, y * sy, (x + w) * sx, (y + h) * sy], 0, size)
        if box[2] - box[0] >= MIN_BOX_SIDE and box[3] - box[1] >= MIN_BOX_SIDE:
            out.append((ann, box, label_of[ann.category_id]))
    return out


@dataclass(frozen=True)
class SelectedClass:
    category_id: int
    name: str


def resolve_classes(manifest: Manifest, selected: Sequence[str] | None) -> list[SelectedClass]:
    """The classes to train on, in output order: `selected` as given, else all categories by id."""
    by_name = {c.name: c.id for c in manifest.categories}
    if selected is None:
        chosen = [SelectedClass(c.id, c.name) for c in sorted(manifest.categories, key=lambda c: c.id)]
    else:
        unknown = [n for n in selected if n not in by_name]
        if unknown:
            raise ValueError(
                f"spec.classes: {unknown} not in dataset {manifest.dataset!r}; it has {sorted(by_name)}"
            )
        if len(set(selected)) != len(selected):
            raise ValueError(f"spec.classes: duplicate names in {list(selected)}")
        chosen = [SelectedClass(by_name[n], n) for n in selected]
    if not chosen:
        raise ValueError(f"spec.classes: the selection is empty (dataset {manifest.dataset!r} has no categories)")
    return chosen


def blob_path(cache_dir: Path, blob: str) -> Path:
    """Where a downloaded image blob lives in the local cache (mirrors the store layout)."""
    return cache_dir / layout.blob_key(blob)


def load_resized(path: Path, size: int) -> np.ndarray:
    """uint8 HWC RGB at size x size, resized like `to_input` (PIL bilinear stretch)."""
    return np.asarray(load_rgb(path).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float32 CHW in [0, 1], bit-identical to `to_input`."""
    return torch.from_numpy(np.ascontiguousarray((arr.astype(np.float32) * PIXEL_SCALE).transpose(2, 0, 1)))


class _ManifestImages(torch.utils.data.Dataset):
    """Shared part: picks images by file name and keeps their resized pixels in memory.

    Datasets here are small enough (hundreds of images at 64-320 px) that decoding once
    beats decoding every epoch, which dominated the epoch time on 2 cores.
    """

    def __init__(
        self, manifest: Manifest, file_names: Sequence[str], cache_dir: Path, size: int, train: bool,
        augment: Augment | None = None,
    ) -> None:
        index = {img.file_name: i for i, img in enumerate(manifest.images)}
        missing = [n for n in file_names if n not in index]
        if missing:
            raise ValueError(f"split names {missing[:3]} (of {len(missing)}) are not in the manifest")
        self.manifest = manifest
        self.indices = [index[n] for n in file_names]
        self.cache_dir = cache_dir
        self.size = size
        self.train = train
        self.augment = augment or flip_augment
        self._pixels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> ManifestImage:
        return self.manifest.images[self.indices[i]]

    def pixels(self, i: int) -> np.ndarray:
        if i not in self._pixels:
            img = self.image(i)
            path = blob_path(self.cache_dir, img.blob)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image blob of {img.file_name!r} is not in the local cache")
            self._pixels[i] = load_resized(path, self.size)
        return self._pixels[i]

    def augmented(self, image: np.ndarray, boxes: np.ndarray | None = None, mask: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Training samples go through `augment`; validation samples are returned as they are."""
        return self.augment(image, boxes, mask) if self.train else (image, boxes, mask)


class ClassificationDataset(_ManifestImages):
    """(image [3,S,S], label 0..K-1); images whose class is not selected are dropped."""

    def __init__(
        self, manifest: Manifest, file_names: Sequence[str], classes: Sequence[SelectedClass],
        cache_dir: Path, size: int, train: bool = False, augment: Augment | None = None,
    ) -> None:
        label_of = {c.category_id: k for k, c in enumerate(classes)}
        by_name = {img.file_name: img for img in manifest.images}
        kept = [n for n in file_names if n in by_name and by_name[n].category_id in label_of]
        super().__init__(manifest, kept, cache_dir, size, train, augment)
        self.labels = [label_of[self.image(i).category_id] for i in range(len(self))]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        arr, _, _ = self.augmented(self.pixels(i))
        return to_tensor(arr), self.labels[i]


class DetectionDataset(_ManifestImages):
    """(image [3,S,S], {boxes xyxy float32 [N,4] in input pixels, labels int64 1..K}).

    Labels start at 1 because torchvision detectors reserve 0 for background. Annotations of
    classes outside the selection and crowd regions are dropped; images left without boxes stay
    as negatives.
    """

    def __init__(
        self, manifest: Manifest, file_names: Sequence[str], classes: Sequence[SelectedClass],
        cache_dir: Path, size: int, train: bool = False, augment: Augment | None = None,
    ) -> None:
        super().__init__(manifest, file_names, cache_dir, size, train, augment)
        label_of = {c.category_id: k + 1 for k, c in enumerate(classes)}
        per_image = manifest.annotations_by_image()
        self.targets: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(len(self)):
            objects = input_objects(per_image[self.indices[i]], self.image(i), label_of, size)
            self.targets.append((
                np.asarray([box for _, box, _ in objects], dtype=np.float32).reshape(-1, 4),
                np.asarray([label for _, _, label in objects], dtype=np.int64),
            ))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        boxes, labels = self.targets[i]
        arr, moved, _ = self.augmented(self.pixels(i), boxes)
        assert moved is not None
        keep = kept_boxes(moved)
        return to_tensor(arr), {"boxes": torch.from_numpy(np.ascontiguousarray(moved[keep])),
                                "labels": torch.from_numpy(labels[keep])}

    def coco_ground_truth(self, num_classes: int) -> dict[str, Any]:
        """The val targets as a COCO dict (input pixels, category ids 1..K) for AP."""
        images = [{"id": i, "width": self.size, "height": self.size} for i in range(len(self))]
        anns = []
        for i, (boxes, labels) in enumerate(self.targets):
            for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
                w, h = box[2] - box[0], box[3] - box[1]
                anns.append({
                    "id": len(anns) + 1, "image_id": i, "category_id": label,
                    "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
                })
        cats = [{"id": k} for k in range(1, num_classes + 1)]
        return {"images": images, "annotations": anns, "categories": cats}


def detection_collate(batch: list[Any]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)

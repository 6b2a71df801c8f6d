"""Ground truth for one model from a DatasetVersion manifest: which images, which classes.

Models and datasets meet BY CLASS NAME: a model's `classes` (model_meta.json) are its
output order, the manifest's categories have their own ids; a name present in both is
evaluated, anything else is set aside and counted so the report can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from kubeforge.datasets.manifest import Manifest
from kubeforge.evaluation.detection import ImageTruth

Split = Literal["val", "train", "all"]


def select_images(
    manifest: Manifest, split: Split, split_doc: dict[str, Any] | None, source: str
) -> tuple[list[int], list[str]]:
    """Manifest image indices to evaluate, and the split's file names the manifest lacks.

    `split_doc` is the model's train_val_split.json (`{"train": [file_name...], "val": [...]}`);
    `source` names it in errors. A file name the dataset version does not hold is reported,
    not fatal, so a model can be benchmarked on a newer version of its data.
    """
    if split == "all":
        return list(range(len(manifest.images))), []
    if split_doc is None:
        raise ValueError(f"{source}: needed for split {split!r} but not found")
    names = split_doc.get(split)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{source}: expected key {split!r} with a list of manifest file names")
    index = {img.file_name: i for i, img in enumerate(manifest.images)}
    wanted = list(dict.fromkeys(names))  # keep order, drop duplicates
    selected = sorted(index[n] for n in wanted if n in index)
    missing = [n for n in wanted if n not in index]
    if not selected:
        raise ValueError(
            f"{source}: none of the {len(wanted)} {split!r} images is in dataset {manifest.dataset!r} "
            f"(e.g. {wanted[:3]}); was the model trained on another dataset?"
        )
    return selected, missing


@dataclass
class ClassMap:
    """Model class index <-> dataset category, matched by name."""

    model_classes: list[str]
    category_to_model: dict[int, int]  # manifest category id -> model class index
    not_in_dataset: list[str] = field(default_factory=list)  # model classes the dataset lacks
    not_in_model: list[str] = field(default_factory=list)  # dataset categories the model lacks

    @classmethod
    def build(cls, manifest: Manifest, model_classes: Sequence[str], source: str,
              implicit: Sequence[str] = ()) -> ClassMap:
        """`implicit`: model classes no dataset names because they are what is left (semantic `__bg__`)."""
        by_name: dict[str, int] = {}
        for cat in manifest.categories:
            by_name.setdefault(cat.name, cat.id)
        model_index = {name: k for k, name in enumerate(model_classes)}
        mapping = {cat.id: model_index[cat.name] for cat in manifest.categories if cat.name in model_index}
        if not mapping:
            raise ValueError(
                f"{source}: none of the model's classes {list(model_classes)} is a category of dataset "
                f"{manifest.dataset!r} ({manifest.class_names()}); classes are matched by name"
            )
        return cls(
            model_classes=list(model_classes),
            category_to_model=mapping,
            not_in_dataset=[n for n in model_classes if n not in by_name and n not in implicit],
            not_in_model=sorted({c.name for c in manifest.categories if c.name not in model_index}),
        )

    def evaluated(self) -> list[int]:
        """Model class indices that the dataset also has, in model order."""
        return sorted(set(self.category_to_model.values()))


def classification_truth(manifest: Manifest, indices: Sequence[int], classes: ClassMap) -> tuple[list[int], np.ndarray]:
    """(kept manifest indices, their labels as model class indices); unlabeled/unknown images dropped."""
    kept, labels = [], []
    for i in indices:
        cat = manifest.images[i].category_id
        if cat is not None and cat in classes.category_to_model:
            kept.append(i)
            labels.append(classes.category_to_model[cat])
    return kept, np.asarray(labels, dtype=np.int64)


def detection_truth(manifest: Manifest, indices: Sequence[int], classes: ClassMap) -> list[ImageTruth]:
    """ImageTruth per selected image, labels as positions in `classes.evaluated()`.

    Annotations of categories the model does not know are dropped: the model was never asked
    to find them, so they are neither misses nor crowd regions.
    """
    position = {k: p for p, k in enumerate(classes.evaluated())}
    per_image = manifest.annotations_by_image()
    out = []
    for i in indices:
        img = manifest.images[i]
        anns = [a for a in per_image[i] if a.category_id in classes.category_to_model]
        boxes = np.array([[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]] for a in anns])
        out.append(ImageTruth(
            width=img.width,
            height=img.height,
            boxes=boxes.reshape(-1, 4),
            labels=np.array([position[classes.category_to_model[a.category_id]] for a in anns], dtype=np.int64),
            iscrowd=np.array([bool(a.iscrowd) for a in anns], dtype=bool),
            # An importer that left area at 0 would put every object in APs; fall back to the box.
            areas=np.array([a.area or a.bbox[2] * a.bbox[3] for a in anns], dtype=np.float64),
        ))
    return out

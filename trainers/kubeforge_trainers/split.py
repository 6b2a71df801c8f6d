"""Train/val split: random (seeded, by image file name, the same on every machine) or the dataset's own.

`method: dataset` uses the split the version records: the image tags `train` and `val` (set from
the source's layout by the importers: COCO `instances_<split>.json`, YOLO lists and split folders,
VOC image sets, ... or by the `assignSplit` operation). Images tagged `test`, or with no split tag,
are used for neither. With `method: auto` (the default), a version that records a split (some image
tagged train or val) is split by it; any other is split at random.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubeforge.api.dataset_operations import SPLIT_TAGS


@dataclass(frozen=True)
class Split:
    """File names (manifest `file_name`) of the training and validation images."""

    train: list[str]
    val: list[str]
    method: str = "random"
    train_percent: float = 80.0
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        if self.method == "dataset":
            head: dict[str, object] = {"method": self.method}
        else:
            head = {"method": self.method, "trainPercent": self.train_percent, "seed": self.seed}
        return {**head, **self.extra, "train": self.train, "val": self.val}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: Path) -> Split:
        data = json.loads(path.read_text())
        extra = {k: v for k, v in data.items() if k not in ("method", "trainPercent", "seed", "train", "val")}
        return cls(
            train=list(data["train"]), val=list(data["val"]), method=data.get("method", "random"),
            train_percent=float(data.get("trainPercent", 80.0)), seed=int(data.get("seed", 0)), extra=extra,
        )


def random_split(file_names: list[str], train_percent: float, seed: int) -> Split:
    """Shuffle the sorted names with `seed` and cut at `train_percent`.

    Sorting first makes the result independent of the order the images were listed in; both
    parts keep at least one image when there are two or more, so validation never runs empty.
    """
    if not 0 < train_percent < 100:
        raise ValueError(f"split.trainPercent: expected a value in (0, 100), got {train_percent}")
    names = sorted(set(file_names))
    if len(names) < 2:
        raise ValueError(f"split: need at least 2 images to split into train and val, found {len(names)}")
    # A string seed through sha256 gives the same stream on every Python version and platform.
    rng = random.Random(int(hashlib.sha256(f"kubeforge-split:{seed}".encode()).hexdigest(), 16))
    rng.shuffle(names)
    n_train = round(len(names) * train_percent / 100)
    n_train = min(max(n_train, 1), len(names) - 1)
    return Split(
        train=sorted(names[:n_train]), val=sorted(names[n_train:]),
        train_percent=train_percent, seed=seed,
    )


def recorded_splits(images: Iterable[tuple[str, Sequence[str]]]) -> dict[str, list[str]]:
    """File names by the split the version records: {"train", "val", "test", "untagged"} -> sorted names.

    `images`: (file_name, image tags). An image tagged with two different splits is an error naming it.
    """
    groups: dict[str, list[str]] = {name: [] for name in (*SPLIT_TAGS, "untagged")}
    for file_name, tags in images:
        found = sorted({t for t in tags if t in SPLIT_TAGS})
        if len(found) > 1:
            raise ValueError(f"{file_name}: image tags {found}: an image belongs to one split "
                             f"(one of the tags {', '.join(SPLIT_TAGS)})")
        groups[found[0] if found else "untagged"].append(file_name)
    return {k: sorted(set(v)) for k, v in groups.items()}


def records_split(groups: dict[str, list[str]]) -> bool:
    """Whether a version records a split: some image is tagged train or val."""
    return bool(groups["train"] or groups["val"])


def _counts(groups: dict[str, list[str]]) -> str:
    return (f"{len(groups['train'])} train, {len(groups['val'])} val, {len(groups['test'])} test, "
            f"{len(groups['untagged'])} untagged")


def dataset_split(groups: dict[str, list[str]], requested: str = "dataset") -> Split:
    """The version's recorded split: train = images tagged train, val = images tagged val. `requested`: what
    spec.split.method said (dataset, or auto), recorded beside the method used."""
    if not groups["train"] or not groups["val"]:
        missing = "val" if groups["train"] else "train" if groups["val"] else "train and val"
        said = ("spec.split.method is dataset" if requested == "dataset" else
                "spec.split.method is auto (the default) and the version records a split")
        raise ValueError(
            f"{said}, but the dataset version records no {missing} images "
            f"({_counts(groups)} images by their split tags); tag them (the source's split files or folders, "
            "or the assignSplit operation of a derived DatasetVersion) or set spec.split.method: random"
        )
    return Split(train=groups["train"], val=groups["val"], method="dataset",
                 extra={"requested": requested, "unused": {"test": len(groups["test"]),
                                                           "untagged": len(groups["untagged"])}})


def choose_split(method: str | None, images: Sequence[tuple[str, Sequence[str]]], train_percent: float,
                 seed: int) -> tuple[Split, str]:
    """The split of a TrainingJob's `spec.split` over a version's (file_name, tags), and a log line
    that says which method was used, why, and how many images went where."""
    groups = recorded_splits(images)
    requested = method or "auto"
    if requested == "auto":
        method = "dataset" if records_split(groups) else "random"
    why = ("spec.split.method" if requested != "auto" else
           "spec.split.method auto; the version records a split" if method == "dataset" else
           "spec.split.method auto; the version records no split")
    if method == "dataset":
        split = dataset_split(groups, requested)
        unused = len(groups["test"]) + len(groups["untagged"])
        line = (f"split: dataset ({why}): {len(split.train)} train, {len(split.val)} val images by their tags; "
                f"{unused} not used ({len(groups['test'])} tagged test, {len(groups['untagged'])} untagged)")
        return split, line
    split = random_split([name for name, _ in images], train_percent, seed)
    line = (f"split: random ({why}): {len(split.train)} train, {len(split.val)} val images "
            f"(trainPercent {train_percent:g}, seed {seed})")
    return split, line

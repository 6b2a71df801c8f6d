"""Train/val split: random, seeded, by image file name, so it is the same on every machine."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path


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
        return {
            "method": self.method, "trainPercent": self.train_percent, "seed": self.seed,
            "train": self.train, "val": self.val,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: Path) -> Split:
        data = json.loads(path.read_text())
        return cls(
            train=list(data["train"]), val=list(data["val"]), method=data.get("method", "random"),
            train_percent=float(data.get("trainPercent", 80.0)), seed=int(data.get("seed", 0)),
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

"""Synthetic shapes: deterministic, well-formed COCO and ImageFolder output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_coco_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    generate_shapes_coco(tmp_path / "a", n_images=6, size=64, seed=3)
    generate_shapes_coco(tmp_path / "b", n_images=6, size=64, seed=3)
    generate_shapes_coco(tmp_path / "c", n_images=6, size=64, seed=4)
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    assert _tree_hash(tmp_path / "a") != _tree_hash(tmp_path / "c")


def test_coco_is_well_formed(tmp_path: Path) -> None:
    ann = generate_shapes_coco(tmp_path, n_images=20, size=96, seed=1, max_objects=3)
    coco = json.loads(ann.read_text())
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle"]
    image_ids = {im["id"] for im in coco["images"]}
    assert len(coco["images"]) == 20
    per_image: dict[int, int] = {}
    for a in coco["annotations"]:
        assert a["image_id"] in image_ids and a["iscrowd"] == 0
        x, y, w, h = a["bbox"]
        # Sizes are 15-45% of the side (rounding to 0.01 px aside), inside the image.
        assert 0.15 * 96 - 0.05 <= w <= 0.45 * 96 + 0.05 and x >= -0.01 and x + w <= 96.01 and y + h <= 96.01
        poly = np.array(a["segmentation"][0]).reshape(-1, 2)
        # The polygon spans its box exactly, and the area is the polygon's.
        assert poly[:, 0].min() == pytest.approx(x, abs=0.02) and poly[:, 1].max() == pytest.approx(y + h, abs=0.02)
        assert 0 < a["area"] <= (w + 0.01) * (h + 0.01)
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert all(1 <= n <= 3 for n in per_image.values())
    for im in coco["images"]:
        with Image.open(tmp_path / "images" / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"]) == (96, 96)


def test_shapes_are_visible_in_pixels(tmp_path: Path) -> None:
    """The pixels inside a square's box differ from the background around it: the task is learnable."""
    ann = generate_shapes_coco(tmp_path, n_images=10, size=128, seed=0, classes=("square",), max_objects=1)
    coco = json.loads(ann.read_text())
    for a in coco["annotations"]:
        im = next(i for i in coco["images"] if i["id"] == a["image_id"])
        arr = np.asarray(Image.open(tmp_path / "images" / im["file_name"]).convert("L"), dtype=np.float32)
        x, y, w, h = (round(v) for v in a["bbox"])
        inside = arr[y + 2 : y + h - 2, x + 2 : x + w - 2].mean()
        mask = np.ones_like(arr, dtype=bool)
        mask[max(y - 2, 0) : y + h + 2, max(x - 2, 0) : x + w + 2] = False
        assert abs(inside - arr[mask].mean()) > 30


def test_imagefolder_layout(tmp_path: Path) -> None:
    generate_shapes_imagefolder(tmp_path / "a", n_per_class=3, size=32, seed=2, classes=("triangle", "circle"))
    generate_shapes_imagefolder(tmp_path / "b", n_per_class=3, size=32, seed=2, classes=("triangle", "circle"))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["circle", "triangle"]
    assert sorted(p.name for p in (tmp_path / "a" / "circle").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")


def test_unknown_class_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hexagon"):
        generate_shapes_coco(tmp_path, n_images=1, classes=("circle", "hexagon"))


def test_cli_synth_shapes(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "kubeforge"
    out = subprocess.run(
        [str(exe), "datasets", "synth", "shapes", "--out", str(tmp_path / "d"), "--images", "3", "--size", "48"],
        capture_output=True, text=True, check=True,
    )
    assert "wrote 3 images" in out.stdout
    assert len(list((tmp_path / "d" / "images").glob("*.png"))) == 3
    out = subprocess.run(
        [str(exe), "datasets", "synth", "shapes", "--out", str(tmp_path / "c"), "--images", "2",
         "--task", "classification"],
        capture_output=True, text=True, check=True,
    )
    assert "ImageFolder" in out.stdout
    assert len(list((tmp_path / "c").glob("*/*.png"))) == 6

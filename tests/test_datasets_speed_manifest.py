"""The manifest built as columns gives the bytes (so the digest) of the pydantic manifest.

`ManifestColumns` writes `Manifest.to_bytes()` directly from lists; a version's digest (and
every stored version and run id) depends on those bytes, so they are compared here against
the pydantic path on varied content: tags, unicode names, RLE and polygon segmentations,
classification with unlabelled images, integer coordinates, duplicates, any input order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from typing import Any

import pytest

from kubeforge.datasets.columnar import ColumnarManifest
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.manifest_columns import ManifestColumns
from kubeforge.datasets.stats import compute_stats

NAMES = ["a.png", "b/ü.jpg", "Z.png", "dir/naïve \"quoted\".png", "back\\slash.png", "日本/画像.png", "😀.png",
         "sep\u2028line.png", "tab\tname.png", "x/" + "y" * 200 + ".png", "space name.PNG", "0.png"]
TAGS = ["train", "val", "test", "é", "weather=rain", "a\"b", "z", "😀"]


def _segmentation(rng: random.Random, h: int, w: int) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return None
    if kind == 1:  # polygons, ints and floats mixed
        return [[rng.choice([rng.randrange(w), rng.random() * w]) for _ in range(2 * rng.randrange(3, 6))]
                for _ in range(rng.randrange(1, 3))]
    if kind == 2:  # compressed RLE
        return {"size": [h, w], "counts": "".join(rng.choice("0123abcXYZ[\\]") for _ in range(12))}
    return {"size": [h, w], "counts": [rng.randrange(50) for _ in range(6)]}  # uncompressed RLE


def _content(seed: int, task: str) -> dict[str, Any]:
    rng = random.Random(seed)
    n = rng.randrange(1, len(NAMES) + 1)
    names = rng.sample(NAMES, n) + [f"extra/{i:03d}.png" for i in range(rng.randrange(0, 30))]
    rng.shuffle(names)
    cats = [Category(id=i, name=f"class {i} ü", supercategory=rng.choice([None, "thing", "ünï"]))
            for i in rng.sample(range(1, 20), rng.randrange(1, 6))]
    images = []
    for name in names:
        images.append(dict(
            file_name=name, blob=hashlib.sha256(name.encode()).hexdigest(), width=rng.randrange(1, 5000),
            height=rng.randrange(1, 5000), bytes=rng.randrange(0, 10**9),
            category_id=(rng.choice([None, *[c.id for c in cats]]) if task == "classification" else None),
            tags=rng.sample(TAGS, rng.randrange(0, 4)) * rng.randrange(1, 3),
        ))
    anns = []
    if task == "object-detection":
        for _ in range(rng.randrange(0, 60)):
            i = rng.randrange(len(images))
            h, w = images[i]["height"], images[i]["width"]
            ann = (i, rng.choice(cats).id,
                   rng.choice([[1, 2, 3, 4], [rng.random() * w, rng.random() * h, 1e-7, 12345.678]]),
                   rng.choice([None, 0, 17, 3.25, 1e20]), rng.choice([0, 1]), _segmentation(rng, h, w),
                   rng.sample(TAGS, rng.randrange(0, 3)))
            anns.append(ann)
            if rng.random() < 0.1:
                anns.append(ann)  # an exact duplicate
    return {"cats": cats, "images": images, "anns": anns}


def _pydantic(c: dict[str, Any], task: str) -> Manifest:
    return Manifest(
        dataset="dätaset \"x\"", task=task, categories=c["cats"], images=[ManifestImage(**im) for im in c["images"]],
        annotations=[ManifestAnnotation(image=i, category_id=cid, bbox=bbox, area=area or 0.0, iscrowd=crowd,
                                        segmentation=seg, tags=tags)
                     for i, cid, bbox, area, crowd, seg, tags in c["anns"]],
    )


def _columns(c: dict[str, Any], task: str) -> ManifestColumns | None:
    ims = c["images"]
    return ManifestColumns.from_values(
        "dätaset \"x\"", task, c["cats"], [im["file_name"] for im in ims], [im["blob"] for im in ims],
        [im["width"] for im in ims], [im["height"] for im in ims], [im["bytes"] for im in ims],
        [im["category_id"] for im in ims], [im["tags"] for im in ims], c["anns"])


@pytest.mark.parametrize("task", ["classification", "object-detection"])
@pytest.mark.parametrize("seed", range(40))
def test_columns_write_the_pydantic_bytes(seed: int, task: str) -> None:
    content = _content(seed, task)
    pm = _pydantic(content, task)
    mc = _columns(content, task)
    assert mc is not None
    assert mc.to_bytes() == pm.to_bytes()
    assert mc.digest() == pm.digest() == hashlib.sha256(pm.to_bytes()).hexdigest()
    # The other forms: the pydantic object, the Parquet columns (hashed again from the tables), the stats.
    assert mc.to_manifest().model_dump(mode="json") == pm.canonical().model_dump(mode="json")
    assert mc.to_manifest().to_bytes() == pm.to_bytes()
    cm = dataclasses.replace(mc.to_columnar(), _digest=None)
    assert cm.digest() == pm.digest()
    roundtrip = ColumnarManifest.from_parquet(cm.images_parquet(), cm.annotations_parquet())
    assert roundtrip.digest() == pm.digest()
    assert mc.stats() == compute_stats(pm.canonical())


def test_input_order_does_not_matter() -> None:
    content = _content(7, "object-detection")
    first = _columns(content, "object-detection")
    order = list(range(len(content["images"])))
    random.Random(1).shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    shuffled = {"cats": content["cats"][::-1], "images": [content["images"][i] for i in order],
                "anns": [(where[i], *rest) for i, *rest in reversed(content["anns"])]}
    second = _columns(shuffled, "object-detection")
    assert first is not None and second is not None and first.digest() == second.digest()


@pytest.mark.parametrize("bad", [
    {"bbox": [1, 2, 3, math.nan]}, {"bbox": [1, 2, 3]}, {"bbox": [1, 2, 3, "4"]}, {"bbox": (1, 2, 3, 4)},
    {"area": -1.0}, {"area": math.inf}, {"category_id": True}, {"category_id": 1.0}, {"iscrowd": False},
    {"segmentation": [[1, 2, "3", 4, 5, 6]]}, {"segmentation": {"size": (3, 4), "counts": "x"}},
    {"segmentation": {"size": [3, 4], "counts": math.nan}}, {"tags": ["a", 1]},
])
def test_values_that_are_not_plain_go_the_pydantic_way(bad: dict[str, Any]) -> None:
    """from_values declines (None) what pydantic would coerce or refuse: the importer then builds the
    validated `Manifest` exactly as before, errors included."""
    ann = {"category_id": 1, "bbox": [1, 2, 3, 4], "area": 1.0, "iscrowd": 0, "segmentation": None, "tags": []}
    ann.update(bad)
    content = {"cats": [Category(id=1, name="a")],
               "images": [dict(file_name="a.png", blob="0" * 64, width=10, height=10, bytes=1, category_id=None,
                               tags=[])],
               "anns": [(0, ann["category_id"], ann["bbox"], ann["area"], ann["iscrowd"], ann["segmentation"],
                         ann["tags"])]}
    assert _columns(content, "object-detection") is None


def test_unlabelled_image_tags_need_strings() -> None:
    content = _content(3, "classification")
    content["images"][0]["tags"] = [1]
    assert _columns(content, "classification") is None


@pytest.mark.parametrize("fmt", ["coco", "imagefolder"])
def test_import_gives_the_pydantic_digest(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """A real import through the columns and through the pydantic fallback: one digest, same stored bytes."""
    from kubeforge.api.dataset_version import DatasetVersionSpec
    from kubeforge.datasets import importer
    from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder
    from kubeforge.datasets.versions import load_manifest
    from kubeforge.store import LocalStore

    if fmt == "coco":
        generate_shapes_coco(tmp_path / "src", n_images=12, size=48, seed=3)
    else:
        generate_shapes_imagefolder(tmp_path / "src", n_per_class=4, size=32, seed=3)
    spec = DatasetVersionSpec.model_validate({"dataset": "d", "source": {"uri": str(tmp_path / "src"), "format": fmt}})
    fast = importer.import_dataset(spec, LocalStore(tmp_path / "fast"), progress=False)
    assert isinstance(fast.version, ManifestColumns)
    monkeypatch.setattr(ManifestColumns, "from_values", classmethod(lambda cls, *a, **k: None))
    slow = importer.import_dataset(spec, LocalStore(tmp_path / "slow"), progress=False)
    assert isinstance(slow.version, Manifest)
    assert fast.digest == slow.digest and fast.stats == slow.stats
    assert fast.manifest.to_bytes() == slow.manifest.to_bytes()
    assert load_manifest(LocalStore(tmp_path / "fast"), "d", fast.digest).to_bytes() == slow.manifest.to_bytes()
    assert (tmp_path / "fast" / "datasets" / "d" / fast.digest / "manifest.json").read_bytes() == (
        tmp_path / "slow" / "datasets" / "d" / slow.digest / "manifest.json").read_bytes()

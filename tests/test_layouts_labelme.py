"""LabelMe JSON (the labelme tool): import with labels.txt or the sorted labels, every shape checked,
split folders; export and import again give the same digest."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.export import export_version
from kubeforge.datasets.formats.common import rle_to_mask
from kubeforge.store import LocalStore

from .test_datasets_formats import imp, png, write


def mask_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def shape(label: str, kind: str, points: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind,
            "flags": {}, "mask": None} | extra


def doc(image_path: str, shapes: list[dict[str, Any]], w: int = 20, h: int = 10, **extra: Any) -> dict[str, Any]:
    return {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
            "imageHeight": h, "imageWidth": w} | extra


def labelme_source(root: Path) -> Path:
    part = np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)
    write(root / "train/a.png", png(20, 10))
    write(root / "train/a.json", json.dumps(doc("a.png", [
        shape("dog", "rectangle", [[6.5, 8], [1, 2]], flags={"occluded": True, "truncated": False}),
        shape("cat", "polygon", [[10, 1], [14, 1], [14, 5]], group_id=3),
        shape("cat", "circle", [[15, 5], [17, 5]]),
        shape("dog", "mask", [[3, 4], [5, 5]], mask=mask_b64(part)),
    ], flags={"night": True, "blurry": False})))
    write(root / "val/img/b.png", png(20, 10))
    write(root / "val/ann/b.json", json.dumps(doc("../img/b.png", [shape("cat", "rectangle", [[0, 0], [4, 4]])])))
    write(root / "val/img/c.png", png(20, 10))  # no JSON: an image without objects
    return root


def test_labelme_import(tmp_path: Path) -> None:
    m = imp(labelme_source(tmp_path / "src"), "labelme", LocalStore(tmp_path / "store")).manifest
    assert m.class_names() == ["cat", "dog"]  # no labels.txt: the sorted labels
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("train/a.png", ["night", "train"]), ("val/img/b.png", ["val"]), ("val/img/c.png", ["val"])]
    a = [x for x in m.annotations if x.image == 0]
    by_kind = {("box" if x.segmentation is None else "rle" if isinstance(x.segmentation, dict)
                else len(x.segmentation[0])): x for x in a}
    assert by_kind["box"].bbox == [1.0, 2.0, 5.5, 6.0] and by_kind["box"].tags == ["occluded"]
    assert by_kind[6].segmentation == [[10.0, 1.0, 14.0, 1.0, 14.0, 5.0]] and by_kind[6].tags == ["group_id=3"]
    assert by_kind[64].bbox == [13.0, 3.0, 4.0, 4.0]  # the circle as a 32-point polygon
    expected = np.zeros((10, 20), dtype=bool)
    expected[4:6, 3:6] = [[False, True, True], [False, False, True]]
    assert np.array_equal(rle_to_mask(by_kind["rle"].segmentation), expected)  # type: ignore[arg-type]


def test_labelme_labels_txt_declares_the_classes(tmp_path: Path) -> None:
    src = labelme_source(tmp_path / "src")
    write(src / "labels.txt", "__ignore__\n_background_\ndog\ncat\nbird\n")
    m = imp(src, "labelme", LocalStore(tmp_path / "store")).manifest
    assert m.class_names() == ["dog", "cat", "bird"]
    write(src / "labels.txt", "__ignore__\n_background_\ndog\n")
    with pytest.raises(DatasetImportError, match=r"train/a.json: shape 1: label 'cat' is not in .*labels.txt; "
                                                 r"expected one of dog"):
        imp(src, "labelme", LocalStore(tmp_path / "store2"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["shapes"][0].update(shape_type="linestrip"),
     r"a.json: shape 0 \(linestrip 'dog'\): shape_type 'linestrip' is not supported; expected one of polygon, "
     r"rectangle, circle, mask"),
    (lambda d: d["shapes"][1].update(points=[[10, 1], [14, 1]]),
     r"a.json: shape 1 \(polygon 'cat'\): points: expected 3 or more \[x, y\] pairs of numbers"),
    (lambda d: d["shapes"][0].update(points=[[1, 2], [3, 4], [5, 6]]),
     r"a.json: shape 0 \(rectangle 'dog'\): points: expected 2 \[x, y\] pairs"),
    (lambda d: d["shapes"][1].update(points=[[10, 1], [14, "1"], [14, 5]]), r"shape 1 .*: points: expected"),
    (lambda d: d.update(imageWidth="20"), r"a.json: imageHeight 10, imageWidth '20': expected positive integers"),
    (lambda d: d.update(imagePath="../../x.png"), r"a.json: imagePath '../../x.png': expected a path inside"),
    (lambda d: d.update(imagePath="nothere.png"), r"train/nothere.png: file not found \(imagePath of .*a.json\)"),
    (lambda d: d.update(imageWidth=21), r"train/a.png: the annotations say 21x10, the image is 20x10"),
    (lambda d: d["shapes"][3].update(mask="not png"), r"shape 3 \(mask 'dog'\): mask: expected a base64 PNG"),
    (lambda d: d["shapes"][0].update(flags={"occluded": "yes"}), r"shape 0 .*: flags: expected an object of true"),
    (lambda d: d.pop("shapes"), r"a.json: expected a LabelMe annotation"),
])
def test_labelme_defects_are_named(change: Any, message: str, tmp_path: Path) -> None:
    src = labelme_source(tmp_path / "src")
    data = json.loads((src / "train/a.json").read_text())
    change(data)
    write(src / "train/a.json", json.dumps(data))
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError, match=message):
        imp(src, "labelme", store)
    assert list(store.list("datasets/")) == []


def test_labelme_export_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    src = labelme_source(tmp_path / "src")
    write(src / "labels.txt", "dog\ncat\n")
    first = imp(src, "labelme", store)
    export_version(store, "ds", first.digest, "labelme", tmp_path / "out")
    assert (tmp_path / "out/val/img/b.json").exists() and (tmp_path / "out/labels.txt").read_text() == "dog\ncat\n"
    once = imp(tmp_path / "out", "labelme", store)
    # b.json moved beside its image; the content is the same
    assert once.digest == first.digest

"""CVAT for images 1.1: import (labels and attributes declared first, every shape checked), subsets as
splits, CVAT's mask RLE; export read back by datumaro and by our importer (same digest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.export import export_version
from kubeforge.datasets.formats.common import rle_to_mask
from kubeforge.datasets.formats.cvat import decode_rle, encode_rle
from kubeforge.store import LocalStore

from .test_datasets_formats import imp, png, write

XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id><name>demo</name><size>3</size><mode>annotation</mode>
      <labels>
        <label><name>car</name><color>#fa3253</color><type>any</type>
          <attributes>
            <attribute><name>colour</name><mutable>False</mutable><input_type>select</input_type>
              <default_value>red</default_value><values>red
blue</values></attribute>
            <attribute><name>parked</name><mutable>False</mutable><input_type>checkbox</input_type>
              <default_value>false</default_value><values>false</values></attribute>
          </attributes>
        </label>
        <label><name>road</name><type>mask</type><attributes></attributes></label>
        <label><name>person</name><type>any</type><attributes></attributes></label>
        <label><name>night</name><type>tag</type><attributes></attributes></label>
      </labels>
    </task>
  </meta>
  <image id="0" name="a.png" width="20" height="10" subset="Train">
    <box label="car" source="manual" occluded="1" xtl="1.5" ytl="2" xbr="6.25" ybr="8" z_order="0">
      <attribute name="colour">blue</attribute>
      <attribute name="parked">true</attribute>
    </box>
    <polygon label="person" source="manual" occluded="0" points="10,1;14,1;14,5" z_order="0"></polygon>
    <mask label="road" source="manual" occluded="0" rle="1, 2, 2, 1" left="3" top="4" width="3" height="2" z_order="0">
    </mask>
    <tag label="night" source="manual"></tag>
  </image>
  <image id="1" name="sub/b.png" width="20" height="10" subset="Validation">
    <box label="car" occluded="0" xtl="8" ytl="2" xbr="12" ybr="6" rotation="90"></box>
  </image>
  <image id="2" name="c.png" width="20" height="10" subset="Custom"></image>
</annotations>
"""


def cvat_source(root: Path, xml: str = XML) -> Path:
    write(root / "annotations.xml", xml)
    for name in ("a.png", "sub/b.png", "c.png"):
        write(root / "images" / name, png(20, 10))
    return root


def test_cvat_import(tmp_path: Path) -> None:
    result = imp(cvat_source(tmp_path / "src"), "cvat", LocalStore(tmp_path / "store"))
    m = result.manifest
    assert m.class_names() == ["car", "road", "person", "night"]
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("images/a.png", ["night", "train"]), ("images/c.png", ["subset=Custom"]), ("images/sub/b.png", ["val"])]
    a = {m.category_name(x.category_id): x for x in m.annotations if x.image == 0}
    assert a["car"].bbox == [1.5, 2.0, 4.75, 6.0] and a["car"].segmentation is None
    assert a["car"].tags == ["colour=blue", "occluded", "parked=true"]
    assert a["person"].segmentation == [[10.0, 1.0, 14.0, 1.0, 14.0, 5.0]] and a["person"].bbox == [10, 1, 4, 4]
    mask = rle_to_mask(a["road"].segmentation)  # type: ignore[arg-type]
    expected = np.zeros((10, 20), dtype=bool)
    expected[4:6, 3:6] = [[False, True, True], [False, False, True]]
    assert np.array_equal(mask, expected) and a["road"].bbox == [4, 4, 2, 2] and a["road"].area == 3
    (rotated,) = [x for x in m.annotations if x.image == 2]
    assert rotated.bbox == [8.0, 2.0, 4.0, 4.0]  # a square turned 90 degrees: the same bounds
    assert len(rotated.segmentation[0]) == 8  # type: ignore[index]


def test_cvat_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (3, 5), (7, 4)):
        mask = rng.random(shape) > 0.5
        runs = encode_rle(mask)
        assert sum(runs) == mask.size and np.array_equal(decode_rle(runs, shape[1], shape[0]), mask)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('<box label="car" occluded="0" xtl="8"', '<box label="truck" occluded="0" xtl="8"',
     r"image id '1' \(sub/b.png\): shape 1 \(<box> truck\): label 'truck' is not declared in <meta> <labels>; "
     r"expected one of car, road, person, night"),
    ('<attribute name="colour">blue', '<attribute name="colour">green',
     r"image id '0' \(a.png\): shape 1 \(<box> car\): attribute 'colour' = 'green'; expected one of red, blue"),
    ('<attribute name="parked">', '<attribute name="speed">', r"attribute 'speed' is not declared for this label"),
    ('<polygon label="person" source="manual" occluded="0" points="10,1;14,1;14,5" z_order="0"></polygon>',
     '<polyline label="person" source="manual" occluded="0" points="10,1;14,1;14,5" z_order="0"></polyline>',
     r"shape 2 \(<polyline> person\): <polyline> is not supported; expected box, polygon, mask or tag"),
    ('points="10,1;14,1;14,5"', 'points="10,1;14,1"', r"shape 2 \(<polygon> person\): points='10,1;14,1': "
     r"expected 3 or more 'x,y' pairs"),
    ('xtl="1.5"', 'xtl="left"', r"shape 1 \(<box> car\): xtl='left': expected a number"),
    ('rle="1, 2, 2, 1"', 'rle="1, 2, 2"', r"shape 3 \(<mask> road\): rle: expected non-negative run lengths .* = 6"),
    ('<polygon label="person"', '<polygon label="road"',
     r"shape 2 \(<polygon> road\): label 'road' is declared as type 'mask'; found a polygon"),
    ('name="c.png" width="20"', 'name="c.png" width="-3"', r"image id '2' \(c.png\): width='-3': expected an integer"),
    ('subset="Validation"', 'subset="Validation"><tag label="night"/></image><image id="9" name="../x.png" '
     'width="2" height="2"', r"image id '9' \(../x.png\): name '../x.png': expected a path inside the source"),
])
def test_cvat_defects_are_named(old: str, new: str, message: str, tmp_path: Path) -> None:
    assert old in XML
    src = cvat_source(tmp_path / "src", XML.replace(old, new, 1))
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError, match=message) as info:
        imp(src, "cvat", store)
    assert str(src / "annotations.xml") in str(info.value)
    assert list(store.list("datasets/")) == []


def test_cvat_missing_image_and_wrong_size(tmp_path: Path) -> None:
    src = cvat_source(tmp_path / "src")
    (src / "images/c.png").unlink()
    with pytest.raises(DatasetImportError, match=r"images/c.png: file not found \(image 'c.png' of .*annotations.xml"):
        imp(src, "cvat", LocalStore(tmp_path / "s1"))
    write(src / "images/c.png", png(21, 10))
    with pytest.raises(DatasetImportError, match=r"images/c.png: the annotations say 20x10, the image is 21x10"):
        imp(src, "cvat", LocalStore(tmp_path / "s2"))


def test_cvat_export_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    first = imp(cvat_source(tmp_path / "src"), "cvat", store)
    export_version(store, "ds", first.digest, "cvat", tmp_path / "out")
    again = imp(tmp_path / "out", "cvat", store)
    # the declared types and select values are not kept (every label 'any', attributes text), the content is
    assert again.digest == first.digest


def test_cvat_export_is_read_by_datumaro(tmp_path: Path) -> None:
    from kubeforge.testing.readers import run_reader

    store = LocalStore(tmp_path / "store")
    first = imp(cvat_source(tmp_path / "src"), "cvat", store)
    export_version(store, "ds", first.digest, "cvat", tmp_path / "out")
    script = """
        import json, sys
        from datumaro.components.dataset import Dataset
        ds = Dataset.import_from(sys.argv[1], "cvat")
        labels = [c.name for c in ds.categories()[__import__("datumaro").AnnotationType.label]]
        items = {}
        for item in ds:
            anns = []
            for a in item.annotations:
                d = {"type": a.type.name, "label": labels[a.label] if a.label is not None else None,
                     "attributes": {k: v for k, v in a.attributes.items() if k not in ("z_order",)}}
                if a.type.name == "bbox":
                    d["box"] = [a.x, a.y, a.w, a.h]
                if a.type.name == "mask":
                    d["pixels"] = int(a.image.sum())
                anns.append(d)
            items[item.id] = {"subset": item.subset, "size": list(item.media.size), "anns": anns}
        print(json.dumps({"labels": labels, "items": items}))
    """
    out = run_reader("datumaro", script, str(tmp_path / "out"))
    assert out["labels"] == ["car", "road", "person", "night"]
    assert {k: (v["subset"], v["size"]) for k, v in out["items"].items()} == {
        "a": ("train", [10, 20]), "sub/b": ("val", [10, 20]), "c": ("Custom", [10, 20])}
    a = sorted(out["items"]["a"]["anns"], key=lambda d: d["type"])
    assert [(d["type"], d["label"]) for d in a] == [
        ("bbox", "car"), ("label", "night"), ("mask", "road"), ("polygon", "person")]
    assert a[0]["box"] == [1.5, 2.0, 4.75, 6.0]
    assert a[0]["attributes"] == {"occluded": True, "colour": "blue", "parked": True}  # datumaro reads "true" as True
    assert a[2]["pixels"] == 3


def test_cvat_project_export_with_subset_folders(tmp_path: Path) -> None:
    """CVAT's project export: labels under <meta><project>, images under images/<subset>/."""
    src = tmp_path / "src"
    xml = XML.replace("<task>", "<project>").replace("</task>", "<tasks><task><subset>Train</subset></task>"
                                                                 "</tasks></project>")
    write(src / "annotations.xml", xml)
    write(src / "images/Train/a.png", png(20, 10))
    write(src / "images/Validation/sub/b.png", png(20, 10))
    write(src / "images/Custom/c.png", png(20, 10))
    m = imp(src, "cvat", LocalStore(tmp_path / "store")).manifest
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("images/Custom/c.png", ["subset=Custom"]), ("images/Train/a.png", ["night", "train"]),
        ("images/Validation/sub/b.png", ["val"])]

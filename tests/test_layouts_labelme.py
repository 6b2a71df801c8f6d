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


LABELME_READ = """
    import glob, io, json, pathlib, sys
    import numpy as np, PIL.Image
    from labelme import LabelFile
    from labelme.utils import shapes_to_label
    root = pathlib.Path(sys.argv[1])
    value = {n: i + 1 for i, n in enumerate((root / "labels.txt").read_text().split())}
    out = {}
    # glob skips dotfiles (the export's marker), as labelme's own conversion scripts glob "*.json"
    for path in sorted(map(pathlib.Path, glob.glob(f"{root}/**/*.json", recursive=True))):
        lf = LabelFile(str(path))  # loads the image from imagePath, checks imageHeight/imageWidth against it
        w, h = PIL.Image.open(io.BytesIO(lf.image_data)).size
        shapes = []
        for s in lf.shapes:  # each shape rasterised alone by labelme: its own pixels
            pixels = shapes_to_label((h, w), [s], value)[0]
            shapes.append({"label": s["label"], "type": s["shape_type"], "points": s["points"],
                           "group_id": s["group_id"], "flags": s["flags"], "value": int(pixels.max()),
                           "pixels": np.argwhere(pixels > 0).tolist() if s["shape_type"] == "mask" else None})
        out[path.relative_to(root).as_posix()] = {
            "image_path": lf.image_path, "size": [w, h], "flags": lf.flags, "shapes": shapes,
            "image_bytes": len(lf.image_data)}
    print(json.dumps(out))
"""


def test_labelme_reads_the_export(tmp_path: Path) -> None:
    """labelme's own loader (`LabelFile`, `shapes_to_label`) reads every exported JSON: the image by
    imagePath at the declared size, each shape's label, type, points, flags and mask pixels."""
    from kubeforge.testing.readers import run_reader

    store = LocalStore(tmp_path / "store")
    src = labelme_source(tmp_path / "src")
    write(src / "labels.txt", "dog\ncat\n")
    write(src / "train/d.png", png(20, 10))  # a mask off the diagonal: x and y cannot be swapped unseen
    part = np.array([[1, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
    write(src / "train/d.json", json.dumps(doc("d.png", [shape("cat", "mask", [[12, 3], [15, 4]],
                                                               mask=mask_b64(part))])))
    first = imp(src, "labelme", store)
    m, out = first.manifest, tmp_path / "out"
    export_version(store, "ds", first.digest, "labelme", out)
    read = run_reader("labelme", LABELME_READ, str(out))
    assert sorted(read) == ["train/a.json", "train/d.json", "val/img/b.json", "val/img/c.json"]
    names = m.class_names()
    for im, anns in zip(m.images, m.annotations_by_image(), strict=True):
        got = read[im.file_name.rsplit(".", 1)[0] + ".json"]
        assert got["image_path"] == im.file_name.split("/")[-1] and got["size"] == [im.width, im.height]
        assert got["image_bytes"] == (out / im.file_name).stat().st_size
        assert got["flags"] == {t: True for t in im.tags if t not in ("train", "val")}
        assert [s["label"] for s in got["shapes"]] == [m.category_name(a.category_id) for a in anns]
        for s, a in zip(got["shapes"], anns, strict=True):
            assert s["value"] == names.index(s["label"]) + 1  # labelme maps the label to its class value
            x, y, w, h = a.bbox
            if a.segmentation is None:
                assert (s["type"], s["points"]) == ("rectangle", [[x, y], [x + w, y + h]])
            elif isinstance(a.segmentation, list):
                poly = a.segmentation[0]
                assert (s["type"], s["points"]) == ("polygon", [[poly[i], poly[i + 1]] for i in range(0, len(poly), 2)])
            else:
                assert s["type"] == "mask"
                assert s["pixels"] == np.argwhere(rle_to_mask(a.segmentation)).tolist()  # type: ignore[arg-type]
    a = {(s["type"], len(s["points"])): s for s in read["train/a.json"]["shapes"]}  # the source's shapes
    assert a["rectangle", 2]["points"] == [[1, 2], [6.5, 8]] and a["rectangle", 2]["flags"] == {"occluded": True}
    assert a["polygon", 3]["group_id"] == 3 and a["mask", 2]["pixels"] == [[4, 4], [4, 5], [5, 5]]
    assert len(a["polygon", 32]["points"]) == 32  # the circle
    (d,) = read["train/d.json"]["shapes"]
    assert d["points"] == [[12, 3], [15, 4]] and d["pixels"] == [[3, 12], [3, 13], [3, 14], [4, 14], [4, 15]]


LABELME_WRITE = """
    import json, pathlib, sys
    import numpy as np, PIL.Image
    from labelme import LabelFile
    from labelme.utils import img_arr_to_b64
    root = pathlib.Path(sys.argv[1])
    (root / "train").mkdir(parents=True)
    PIL.Image.new("RGB", (20, 10), (9, 9, 9)).save(root / "train/x.png")
    mask = np.array([[0, 1, 1], [0, 0, 1]], dtype=np.uint8)
    def shape(label, kind, points, **extra):  # as labelme's app serialises a Shape
        return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind,
                "flags": {}, "mask": None, **extra}
    LabelFile().save(str(root / "train/x.json"), shapes=[
        shape("dog", "rectangle", [(6.5, 8.0), (1.0, 2.0)], flags={"occluded": True}),
        shape("cat", "polygon", [(10.0, 1.0), (14.0, 1.0), (14.0, 5.0)], group_id=3),
        shape("cat", "circle", [(15.0, 5.0), (17.0, 5.0)]),
        shape("dog", "mask", [(3.0, 4.0), (5.0, 5.0)], mask=img_arr_to_b64(mask)),
    ], image_path="x.png", image_height=10, image_width=20,
       image_data=(root / "train/x.png").read_bytes(), flags={"night": True, "blurry": False})
    print(json.dumps({"version": json.loads((root / "train/x.json").read_text())["version"]}))
"""


def test_a_file_labelme_writes_imports(tmp_path: Path) -> None:
    """A JSON written by labelme's own `LabelFile.save` (image data embedded, as the app saves it)."""
    from kubeforge.testing.readers import run_reader

    assert run_reader("labelme", LABELME_WRITE, str(tmp_path / "src")) == {"version": "6.3.1"}
    m = imp(tmp_path / "src", "labelme", LocalStore(tmp_path / "store")).manifest
    assert m.class_names() == ["cat", "dog"]
    assert [(im.file_name, im.width, im.height, im.tags) for im in m.images] == [
        ("train/x.png", 20, 10, ["night", "train"])]
    kind = {None: "box", 6: "polygon", 64: "circle"}
    by = {"rle" if isinstance(a.segmentation, dict) else kind[a.segmentation and len(a.segmentation[0])]: a
          for a in m.annotations}
    box, poly, circle, mask = by["box"], by["polygon"], by["circle"], by["rle"]
    assert (m.category_name(box.category_id), box.bbox, box.tags) == ("dog", [1.0, 2.0, 5.5, 6.0], ["occluded"])
    assert poly.segmentation == [[10.0, 1.0, 14.0, 1.0, 14.0, 5.0]] and poly.tags == ["group_id=3"]
    assert circle.bbox == [13.0, 3.0, 4.0, 4.0] and m.category_name(mask.category_id) == "dog"
    expected = np.zeros((10, 20), dtype=bool)
    expected[4:6, 3:6] = [[False, True, True], [False, False, True]]
    assert np.array_equal(rle_to_mask(mask.segmentation), expected)  # type: ignore[arg-type]

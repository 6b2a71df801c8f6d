"""Bad input in every format: each case names the file and the problem, and nothing becomes a version."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.export import export_version
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.sources import SourceError
from kubeforge.datasets.synth import generate_shapes_coco
from kubeforge.store import LocalStore

from .test_datasets_formats import imp, spec, supervisely_project, voc_source, write


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean tiny source per format, made by the exporters from a synthetic COCO version."""
    root = tmp_path_factory.mktemp("bad")
    generate_shapes_coco(root / "coco", n_images=3, size=32, seed=2, max_objects=1)
    store = LocalStore(root / "store")
    digest = imp(root / "coco", "coco", store).digest
    for fmt in ("yolo", "supervisely"):
        export_version(store, "ds", digest, fmt, root / fmt)
    voc_source(root / "voc")
    return root


def copy(sources: Path, fmt: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sources / fmt, tmp_path / "src", ignore=shutil.ignore_patterns(".kubeforge-*")))


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def fails(src: Path, fmt: str, tmp_path: Path, message: str, error: type[Exception] = DatasetImportError) -> str:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(error, match=message) as info:
        import_dataset(spec(src, fmt), store, progress=False, workers=2)
    assert list(store.list("datasets/")) == []  # nothing partially imported becomes a version
    return str(info.value)


def sly_ann(src: Path) -> Path:
    """Image 000001's annotations in the exported Supervisely project (dataset folder 'images')."""
    return next(src.glob("*/ann/000001.png.json"))


@pytest.mark.parametrize(("fmt", "target"), [("coco", "annotations.json"), ("supervisely", "meta.json"),
                                             ("supervisely", "ann"), ("voc", "Annotations/a.xml")])
def test_truncated_file(fmt: str, target: str, sources: Path, tmp_path: Path) -> None:
    src = copy(sources, fmt, tmp_path)
    path = sly_ann(src) if target == "ann" else src / target
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    msg = fails(src, fmt, tmp_path, r"not valid (JSON|XML)")
    assert msg.startswith(str(path))


def test_truncated_yolo_yaml(sources: Path, tmp_path: Path) -> None:
    src = copy(sources, "yolo", tmp_path)
    (src / "data.yaml").write_text("names: [circle, square\n")
    assert fails(src, "yolo", tmp_path, "not valid YAML").startswith(str(src / "data.yaml"))


def test_annotation_pointing_at_a_missing_image(sources: Path, tmp_path: Path) -> None:
    cases = {"voc": "JPEGImages/a.png", "supervisely": "shapes/img/000001.png", "yolo": "images/000001.png"}
    for fmt, image in cases.items():
        src = copy(sources, fmt, tmp_path / fmt)
        found = next(src.rglob(Path(image).name), None) if fmt == "supervisely" else src / image
        assert found is not None
        found.unlink()
        expected = {"voc": "file not found \\(named by .*Annotations/a.xml\\)",
                    "supervisely": "file not found \\(annotated in .*ann/000001.png.json\\)",
                    "yolo": "labels/000001.txt: label file without an image"}[fmt]
        fails(src, fmt, tmp_path / fmt, expected)
        # With Skip, the version is made without it, and the record says why.
        res = import_dataset(spec(src, fmt, onInvalidImage="Skip"), LocalStore(tmp_path / fmt / "s"), progress=False)
        assert len(res.skipped) == 1 and ("not found" in res.skipped[0].reason or "without" in res.skipped[0].reason)
        assert len(res.manifest.images) == (1 if fmt == "voc" else 2)


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "supervisely"])
def test_box_outside_the_image(fmt: str, sources: Path, tmp_path: Path) -> None:
    src = copy(sources, fmt, tmp_path)
    if fmt == "coco":
        edit_json(src / "annotations.json", lambda c: c["annotations"][0].update(bbox=[20, 20, 30, 5]))
        where = src / "annotations.json"
    elif fmt == "yolo":
        where = src / "labels" / "000000.txt"
        where.write_text("0 0.9 0.5 0.5 0.2\n")
    elif fmt == "voc":
        where = src / "Annotations" / "b.xml"
        where.write_text(where.read_text().replace("<xmax>40</xmax>", "<xmax>45</xmax>"))
    else:
        where = sly_ann(src)
        edit_json(src / "meta.json", lambda m: [c.update(shape="any") for c in m["classes"]])  # any geometry
        edit_json(where, lambda a: a["objects"][0].update(
            geometryType="rectangle", points={"exterior": [[0, 0], [40, 10]], "interior": []}))
    msg = fails(src, fmt, tmp_path, r"reaches outside the \d+x\d+ image")
    assert msg.startswith(str(where)) and "onInvalidImage is Fail" in msg
    res = import_dataset(spec(src, fmt, onInvalidImage="Skip"), LocalStore(tmp_path / "s"), progress=False)
    assert [("outside" in s.reason) for s in res.skipped] == [True]


@pytest.mark.parametrize(("fmt", "message"), [
    ("yolo", r"labels/000000.txt: line 1: class id 7 is unknown: there are 3 classes"),
    ("supervisely", r"ann/000001.png.json: object 1: class 'horse' is not in meta.json classes"),
    ("voc", r"Annotations/a.xml: object 1: class 'cat' is not in .*classes.txt"),
    ("coco", r"annotations.json: annotation id 1: category_id 42 is not in 'categories'"),
])
def test_unknown_class(fmt: str, message: str, sources: Path, tmp_path: Path) -> None:
    src = copy(sources, fmt, tmp_path)
    if fmt == "yolo":
        (src / "labels" / "000000.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    elif fmt == "supervisely":
        edit_json(sly_ann(src), lambda a: a["objects"][0].update(classTitle="horse"))
    elif fmt == "voc":
        (src / "classes.txt").write_text("dog\n")
    else:
        edit_json(src / "annotations.json", lambda c: c["annotations"][0].update(category_id=42))
    fails(src, fmt, tmp_path, message)


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_path_escaping_the_root(fmt: str, sources: Path, tmp_path: Path) -> None:
    src = copy(sources, fmt, tmp_path)
    if fmt == "voc":
        xml = src / "Annotations" / "a.xml"
        xml.write_text(xml.read_text().replace("<filename>a.png</filename>", "<filename>../../etc/x.png</filename>"))
        fails(src, fmt, tmp_path, r"Annotations/a.xml: <filename> '../../etc/x.png': expected a path inside the source")
    else:
        (src / "train.txt").write_text("./images/000000.png\n../outside.png\n")
        (src / "data.yaml").write_text("names: [circle, square, triangle]\ntrain: train.txt\n")
        fails(src, fmt, tmp_path, r"train.txt: line 2: image '../outside.png': expected a path inside the source")


def test_symlink_out_of_the_root(sources: Path, tmp_path: Path) -> None:
    src = copy(sources, "voc", tmp_path)
    outside = write(tmp_path / "elsewhere.png", (src / "JPEGImages" / "a.png").read_bytes())
    (src / "JPEGImages" / "a.png").unlink()
    os.symlink(outside, src / "JPEGImages" / "a.png")
    fails(src, "voc", tmp_path, r"JPEGImages/a.png: points outside the source")


def test_symlink_loops(sources: Path, tmp_path: Path) -> None:
    src = copy(sources, "supervisely", tmp_path / "dir")
    os.symlink("..", next(src.glob("*/img")) / "up")
    fails(src, "supervisely", tmp_path / "dir", r"img/up: symlink loop", error=SourceError)
    src = copy(sources, "yolo", tmp_path / "file")
    os.symlink("self.png", src / "images" / "self.png")
    fails(src, "yolo", tmp_path / "file", r"images/self.png: symlink loop", error=SourceError)


def test_supervisely_bitmap_outside_and_bad_geometry(tmp_path: Path) -> None:
    supervisely_project(tmp_path / "src")
    ann = tmp_path / "src" / "ds1" / "ann" / "a.png.json"
    edit_json(ann, lambda a: a["objects"][3]["bitmap"].update(origin=[38, 2]))
    fails(tmp_path / "src", "supervisely", tmp_path, r"ds1/img/a.png: object 4 in .*a.png.json: bitmap at origin "
          r"\[38, 2\], 5x4, reaches outside the 40x30 image")
    edit_json(ann, lambda a: a["objects"][3]["bitmap"].update(data="bm90IGEgcG5n"))
    fails(tmp_path / "src", "supervisely", tmp_path, r"a.png.json: object 4: bitmap data: not base64 of a zlib")
    edit_json(ann, lambda a: a["objects"][0].update(geometryType="point"))
    fails(tmp_path / "src", "supervisely", tmp_path, r"a.png.json: object 1: geometry 'point' is not supported")


def test_yolo_bad_rows(sources: Path, tmp_path: Path) -> None:
    src = copy(sources, "yolo", tmp_path)
    for row, message in [("0 0.5 0.5 0.1\n", "line 1: 4 values: expected 5"),
                         ("x 0.5 0.5 0.1 0.1\n", "line 1: class id 'x': expected an integer"),
                         ("0 0.5 nan 0.1 0.1\n", "line 1: coordinates must be finite")]:
        (src / "labels" / "000000.txt").write_text(row)
        fails(src, "yolo", tmp_path, message)

"""YOLO as datasets ship: Ultralytics data.yaml, Darknet (CVAT's YOLO 1.1), Roboflow; export read by supervision."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.export import export_version
from kubeforge.datasets.importer import import_dataset
from kubeforge.store import LocalStore

from .test_datasets_formats import imp, png, spec, write

BOX = "0 0.5 0.5 0.5 0.4\n"  # on 40x20: [10, 6, 20, 8]
POLY = "1 0.1 0.1 0.4 0.1 0.4 0.9\n"  # on 40x20: [[4, 2, 16, 2, 16, 18]]


def images(root: Path, labels: dict[str, str | None], beside: bool = False) -> None:
    """Images 40x20 at the given paths; their label rows at Ultralytics' place (or beside them); None: no label."""
    for k, (rel, rows) in enumerate(labels.items()):
        write(root / rel, png(40, 20, (k * 40, 3, 90)))
        if rows is not None:
            label = rel.rsplit(".", 1)[0] + ".txt"
            if not beside:
                parts = label.split("/")
                i = len(parts) - 2 - parts[-2::-1].index("images")
                label = "/".join([*parts[:i], "labels", *parts[i + 1:]])
            write(root / label, rows)


def tags(res: Any) -> dict[str, list[str]]:
    return {im.file_name: im.tags for im in res.manifest.images}


def test_ultralytics_folders_with_a_path_from_elsewhere(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "data.yaml", "path: /home/someone/datasets/pets  # the author's machine\ntrain: images/train\n"
                             "val: images/val\ntest:\nnc: 2\nnames: {0: cat, 1: dog}\n")
    images(src, {"images/train/a.png": BOX + POLY, "images/val/b.png": None, "images/val2017/c.png": ""})
    res = imp(src, "yolo", LocalStore(tmp_path / "store"))
    # Declared splits decide: val2017/ is not declared, so c.png has no split.
    assert tags(res) == {"images/train/a.png": ["train"], "images/val/b.png": ["val"], "images/val2017/c.png": []}
    box, poly = sorted(res.manifest.annotations, key=lambda a: a.category_id)
    assert box.bbox == [10.0, 6.0, 20.0, 8.0] and box.segmentation is None
    assert poly.segmentation == [[4.0, 2.0, 16.0, 2.0, 16.0, 18.0]] and poly.bbox == [4.0, 2.0, 12.0, 16.0]


def test_ultralytics_lists_of_folders_and_image_lists(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "data.yaml", "path: sub\ntrain: [images/a, images/b]\nval: val.txt\nnames: [cat, dog]\n")
    images(src / "sub", {"images/a/1.png": BOX, "images/b/2.png": POLY, "images/c/3.png": BOX})
    write(src / "sub" / "val.txt", "./images/c/3.png\n\n")  # './': relative to the list's folder
    res = imp(src, "yolo", LocalStore(tmp_path / "store"))
    assert tags(res) == {"sub/images/a/1.png": ["train"], "sub/images/b/2.png": ["train"],
                         "sub/images/c/3.png": ["val"]}
    assert len(res.manifest.annotations) == 3


def test_darknet_as_cvat_exports_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "obj.data", "classes = 2\ntrain = data/train.txt\nvalid = data/valid.txt\nnames = data/obj.names\n"
                            "backup = backup/\n")
    write(src / "obj.names", "cat\ndog\n")
    images(src, {"obj_train_data/a.png": BOX, "obj_train_data/b.png": "", "obj_valid_data/c.png": POLY}, beside=True)
    write(src / "train.txt", "data/obj_train_data/a.png\ndata/obj_train_data/b.png\n")
    write(src / "valid.txt", "data/obj_valid_data/c.png\n")
    res = imp(src, "yolo", LocalStore(tmp_path / "store"))
    assert tags(res) == {"obj_train_data/a.png": ["train"], "obj_train_data/b.png": ["train"],
                         "obj_valid_data/c.png": ["val"]}
    assert res.manifest.class_names() == ["cat", "dog"]
    assert sorted(a.bbox for a in res.manifest.annotations) == [[4.0, 2.0, 12.0, 16.0], [10.0, 6.0, 20.0, 8.0]]


def roboflow(src: Path) -> None:
    write(src / "data.yaml", "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\n"
                             "names: ['cat', 'dog']\n\nroboflow:\n  workspace: me\n  version: 1\n")
    images(src, {"train/images/a.png": BOX, "train/images/b.png": POLY, "valid/images/c.png": BOX,
                 "test/images/d.png": ""})


def test_a_new_user_imports_a_roboflow_export_with_the_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kubeforge.cli.main import app
    from kubeforge.datasets.versions import load_manifest

    roboflow(tmp_path / "pets")
    out = CliRunner().invoke(app, ["datasets", "import", str(tmp_path / "pets"), "--dataset", "pets", "--format",
                                   "yolo", "--store", str(tmp_path / "store")])
    assert out.exit_code == 0, out.output
    m = load_manifest(LocalStore(tmp_path / "store"), "pets", out.stdout.split("pets@")[1].split()[0])
    assert {im.file_name: im.tags for im in m.images} == {
        "test/images/d.png": ["test"], "train/images/a.png": ["train"], "train/images/b.png": ["train"],
        "valid/images/c.png": ["val"]}
    assert len(m.annotations) == 3


def test_split_folders_without_data_yaml_declarations(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "classes.txt", "cat\ndog\n")
    images(src, {"images/train2017/a.png": BOX, "images/valid/b.png": BOX, "images/other/c.png": None})
    write(src / "labels" / "classes.txt", "cat\ndog\n")  # LabelImg writes one beside the labels: not a label file
    assert tags(imp(src, "yolo", LocalStore(tmp_path / "store"))) == {
        "images/other/c.png": [], "images/train2017/a.png": ["train"], "images/valid/b.png": ["val"]}


def fails(src: Path, tmp_path: Path, message: str, *, parse: bool = True) -> str:
    store = LocalStore(tempfile.mkdtemp(dir=tmp_path))
    with pytest.raises(DatasetImportError, match=message) as info:
        import_dataset(spec(src, "yolo"), store, progress=False, workers=2)
    assert list(store.list("" if parse else "datasets/")) == []  # no version; parse errors: not even a blob
    return str(info.value)


ULTRA = "train: images/train\nval: images/val\nnc: 2\nnames: [cat, dog]\n"


@pytest.mark.parametrize(("yaml", "label", "where", "message"), [
    (ULTRA, "0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n", "labels/train/a.txt",
     r"line 2: class id 2 is unknown: there are 2 classes \(0..1\)"),
    (ULTRA, "0 0.5 0.5\n", "labels/train/a.txt", r"line 1: 3 values: expected 5 \(class cx cy w h\)"),
    (ULTRA, BOX + "1 0.1 0.1 0.4 0.1 0.4\n", "labels/train/a.txt", r"line 2: 6 values: expected 5 .* or a class "
     r"and 3 or more x y points"),
    (ULTRA, "0 0.5 0.5 -0.1 0.1\n", "labels/train/a.txt", r"line 1: box width and height must not be negative"),
    (ULTRA, "-1 0.5 0.5 0.1 0.1\n", "labels/train/a.txt", r"line 1: class id '-1': expected an integer 0..1"),
    (ULTRA.replace("nc: 2", "nc: 3"), BOX, "data.yaml", r"'nc' is 3 but 'names' has 2 classes"),
    (ULTRA.replace("nc: 2", "nc: true"), BOX, "data.yaml", r"'nc' is True but 'names' has 2 classes"),
    (ULTRA.replace("[cat, dog]", "{0: cat, 2: dog}"), BOX, "data.yaml", r"'names': map keys \['0', '2'\]: expected"),
    (ULTRA.replace("[cat, dog]", "[cat, cat]"), BOX, "data.yaml", r"expected one or more distinct"),
    (ULTRA.replace("images/val", "images/nowhere"), BOX, "data.yaml", r"'val': folder 'images/nowhere' is not in"),
    (ULTRA + "test: images/val\n", BOX, "images/val/b.png",
     r"in split val \(.*data.yaml: 'val'\) and in split test \(.*data.yaml: 'test'\)"),
    (ULTRA.replace("images/val", "val.txt"), BOX, "val.txt",
     r"line 2: image './images/val/zz.png' is not in the source"),
    (ULTRA.replace("[cat, dog]", "7"), BOX, "data.yaml", r"'names': expected a list of class names"),
])
def test_declared_schema_and_every_row_checked(tmp_path: Path, yaml: str, label: str, where: str,
                                               message: str) -> None:
    src = tmp_path / "src"
    write(src / "data.yaml", yaml)
    images(src, {"images/train/a.png": label, "images/val/b.png": BOX})
    write(src / "val.txt", "./images/val/b.png\n./images/val/zz.png\n")
    msg = fails(src, tmp_path, message)
    assert msg.startswith(str(src / where) + ":"), msg


def test_darknet_declarations_checked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "obj.data", "classes = 3\ntrain = data/train.txt\nnames = data/obj.names\n")
    write(src / "obj.names", "cat\ndog\n")
    images(src, {"obj_train_data/a.png": BOX}, beside=True)
    write(src / "train.txt", "data/obj_train_data/a.png\n")
    assert fails(src, tmp_path, r"line 1: classes = 3, but .*obj.names names 2 classes").startswith(
        str(src / "obj.data"))
    write(src / "obj.data", "classes = 2\ntrain = data/missing.txt\n")
    fails(src, tmp_path, r"obj.data: line 2: train file 'data/missing.txt' is not in the source")
    write(src / "obj.data", "classes = 2\ntrain = data/train.txt\n")
    write(src / "obj_train_data" / "ghost.txt", BOX)  # a label file whose image is gone
    fails(src, tmp_path, r"obj_train_data/ghost.txt: label file without an image", parse=False)
    res = import_dataset(spec(src, "yolo", onInvalidImage="Skip"), LocalStore(tmp_path / "skip"), progress=False)
    assert [s.file for s in res.skipped] == [str(src / "obj_train_data" / "ghost.txt")]


def yolo_read(out: Path, split: str) -> tuple[list[str], dict[str, list[list[float]]]]:
    import supervision as sv

    folder = f"images/{split}" if split else "images"
    ds = sv.DetectionDataset.from_yolo(str(out / folder), str(out / folder.replace("images", "labels", 1)),
                                       str(out / "data.yaml"))
    return ds.classes, {Path(p).relative_to(out).as_posix(): sorted(d.xyxy.tolist()) for p, d in ds.annotations.items()}


def check_boxes(out: Path, manifest: Any, paths: dict[str, str], splits: list[str]) -> None:
    """supervision reads every image, box and class of the export, each box within 0.01 px."""
    got: dict[str, list[list[float]]] = {}
    for split in splits:
        classes, boxes = yolo_read(out, split)
        assert classes == manifest.class_names()
        got.update(boxes)
    expected = {paths[im.file_name]: sorted([a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                                            for a in anns)
                for im, anns in zip(manifest.images, manifest.annotations_by_image(), strict=True)}
    assert got.keys() == expected.keys()
    for k, boxes in expected.items():
        assert len(got[k]) == len(boxes)
        for a, b in zip(got[k], boxes, strict=True):
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.01, (k, a, b)


def test_export_is_the_ultralytics_layout_supervision_reads(tmp_path: Path) -> None:
    import yaml

    roboflow(tmp_path / "src")
    store = LocalStore(tmp_path / "store")
    first = imp(tmp_path / "src", "yolo", store)
    out = tmp_path / "out"
    export_version(store, "ds", first.digest, "yolo", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".kubeforge-export.json", "data.yaml", "images/test/d.png", "images/train/a.png", "images/train/b.png",
        "images/val/c.png", "labels/test/d.txt", "labels/train/a.txt", "labels/train/b.txt", "labels/val/c.txt"]
    assert yaml.safe_load((out / "data.yaml").read_text()) == {
        "path": ".", "train": "images/train", "val": "images/val", "test": "images/test", "nc": 2,
        "names": ["cat", "dog"]}
    paths = {"train/images/a.png": "images/train/a.png", "train/images/b.png": "images/train/b.png",
             "valid/images/c.png": "images/val/c.png", "test/images/d.png": "images/test/d.png"}
    check_boxes(out, first.manifest, paths, ["train", "val", "test"])
    once = imp(out, "yolo", store)
    assert tags(once) == {"images/test/d.png": ["test"], "images/train/a.png": ["train"],
                          "images/train/b.png": ["train"], "images/val/c.png": ["val"]}
    export_version(store, "ds", once.digest, "yolo", tmp_path / "again")
    assert imp(tmp_path / "again", "yolo", store).digest == once.digest


def test_export_without_splits_and_with_some(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "classes.txt", "cat\ndog\n")
    images(src, {"images/a.png": BOX, "images/sub/b.png": POLY})
    store = LocalStore(tmp_path / "store")
    first = imp(src, "yolo", store)
    export_version(store, "ds", first.digest, "yolo", tmp_path / "flat")
    assert (tmp_path / "flat" / "data.yaml").read_text().startswith("path: .\ntrain: images\nval: images\n")
    classes, boxes = yolo_read(tmp_path / "flat", "")
    assert classes == ["cat", "dog"] and list(boxes) == ["images/a.png"]  # supervision reads one folder, not sub/
    assert imp(tmp_path / "flat", "yolo", store).digest == first.digest  # train == val: no split, same paths
    mixed = tmp_path / "mixed"
    write(mixed / "data.yaml", "train: images/train\nnames: [cat, dog]\n")
    images(mixed, {"images/train/a.png": BOX, "images/extra/b.png": POLY})
    first = imp(mixed, "yolo", store)
    export_version(store, "ds", first.digest, "yolo", tmp_path / "mixed-out")
    assert sorted(p.relative_to(tmp_path / "mixed-out").as_posix()
                  for p in (tmp_path / "mixed-out" / "images").rglob("*.png")) == [
        "images/default/extra/b.png", "images/train/a.png"]
    once = imp(tmp_path / "mixed-out", "yolo", store)
    assert tags(once) == {"images/default/extra/b.png": [], "images/train/a.png": ["train"]}
    export_version(store, "ds", once.digest, "yolo", tmp_path / "mixed-again")
    assert imp(tmp_path / "mixed-again", "yolo", store).digest == once.digest

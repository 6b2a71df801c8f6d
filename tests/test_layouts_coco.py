"""COCO as datasets ship: split files in one version, Roboflow's export, the release layout on export."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.export import export_version
from kubeforge.datasets.importer import import_dataset
from kubeforge.store import LocalStore

from .test_datasets_formats import imp, png, spec, write

CATS = [{"id": 1, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog", "supercategory": "animal"}]


def coco_file(names: list[str], first_id: int = 1, cats: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Images 40x30 named `names`, one box each (and a polygon on the first), ids from `first_id`."""
    images = [{"id": first_id + i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names)]
    anns = [{"id": first_id + i, "image_id": first_id + i, "category_id": 1 + i % 2, "bbox": [2 + i, 3, 10, 5.5],
             "area": 55.0, "iscrowd": 0} for i in range(len(names))]
    anns[0]["segmentation"] = [[2, 3, 12, 3, 12, 8.5]]
    return {"images": images, "annotations": anns, "categories": cats or CATS}


def release(root: Path, folder: str, splits: dict[str, list[str]]) -> Path:
    """`annotations/instances_<split>.json` + images in `folder` (with `{split}` filled in)."""
    for n, (split, names) in enumerate(splits.items()):
        write(root / "annotations" / f"instances_{split}.json", json.dumps(coco_file(names, first_id=1)))
        for k, name in enumerate(names):
            write(root / folder.format(split=split) / name, png(40, 30, (10 * n, 20 * k, 99)))
    return root


@pytest.mark.parametrize(("folder", "splits"), [
    ("{split}", ("train", "val")),
    ("images/{split}", ("train", "val")),
    ("images", ("train", "val")),
    ("{split}", ("train2017", "val2017")),
])
def test_release_layout_imports_every_split_into_one_version(tmp_path: Path, folder: str,
                                                             splits: tuple[str, str]) -> None:
    src = release(tmp_path / "src", folder, {splits[0]: ["a.png", "b.png"], splits[1]: ["c.png"]})
    write(src / "annotations" / f"person_keypoints_{splits[0]}.json", "not read")  # other COCO files: ignored
    res = imp(src, "coco", LocalStore(tmp_path / "store"))
    m = res.manifest
    tags = {im.file_name: im.tags for im in m.images}
    f = folder.replace("{split}", "{}")
    assert tags == {f.format(splits[0]) + "/a.png": ["train"], f.format(splits[0]) + "/b.png": ["train"],
                    f.format(splits[1]) + "/c.png": ["val"]}
    assert m.class_names() == ["cat", "dog"] and len(m.annotations) == 3  # ids restart in each file: no clash
    assert sorted(a.bbox[0] for a in m.annotations) == [2.0, 2.0, 3.0]


def test_a_new_user_imports_the_standard_layout_with_the_cli(tmp_path: Path) -> None:
    """What the issue tried: the release layout, no file named, one command."""
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    src = release(tmp_path / "coco", "{split}", {"train": ["a.png", "b.png"], "val": ["c.png"]})
    out = CliRunner().invoke(app, ["datasets", "import", str(src), "--dataset", "pets", "--format", "coco",
                                   "--store", str(tmp_path / "store")])
    assert out.exit_code == 0, out.output
    digest = out.stdout.split("pets@")[1].split()[0]
    from kubeforge.datasets.versions import load_manifest

    m = load_manifest(LocalStore(tmp_path / "store"), "pets", digest)
    assert sorted((im.file_name, *im.tags) for im in m.images) == [
        ("train/a.png", "train"), ("train/b.png", "train"), ("val/c.png", "val")]


def test_roboflow_export_split_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    cats = [{"id": 0, "name": "pets", "supercategory": "none"}, {"id": 1, "name": "cat", "supercategory": "pets"},
            {"id": 2, "name": "dog", "supercategory": "pets"}]
    for n, (folder, names) in enumerate({"train": ["a.png", "b.png"], "valid": ["c.png"], "test": ["d.png"]}.items()):
        write(src / folder / "_annotations.coco.json", json.dumps(coco_file(names, first_id=0, cats=cats)))
        for k, name in enumerate(names):
            write(src / folder / name, png(40, 30, (n, k, 7)))
    write(src / "README.roboflow.txt", "exported from roboflow")
    m = imp(src, "coco", LocalStore(tmp_path / "store")).manifest
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("test/d.png", ["test"]), ("train/a.png", ["train"]), ("train/b.png", ["train"]), ("valid/c.png", ["val"])]
    assert m.class_names() == ["pets", "cat", "dog"] and len(m.annotations) == 4


def test_one_named_file_and_the_single_top_level_file_still_work(tmp_path: Path) -> None:
    src = release(tmp_path / "src", "images/{split}", {"train": ["a.png"], "val": ["b.png", "c.png"]})
    store = LocalStore(tmp_path / "store")
    named = imp(src, "coco", store, source={"uri": str(src), "format": "coco",
                                            "annotations": "annotations/instances_val.json"})
    assert [(im.file_name, im.tags) for im in named.manifest.images] == [
        ("images/val/b.png", ["val"]), ("images/val/c.png", ["val"])]
    flat = tmp_path / "flat"
    write(flat / "annotations.json", json.dumps(coco_file(["a.png"])))
    write(flat / "images" / "a.png", png(40, 30))
    assert [(im.file_name, im.tags) for im in imp(flat, "coco", store).manifest.images] == [("images/a.png", [])]


def fails(src: Path, tmp_path: Path, message: str, *, parse: bool = True) -> str:
    """The import fails naming `message`; no version is left, and when the annotations alone are at
    fault (`parse`) not even a blob: they are checked before any image is read."""
    store = LocalStore(tempfile.mkdtemp(dir=tmp_path))
    with pytest.raises(DatasetImportError, match=message) as info:
        import_dataset(spec(src, "coco"), store, progress=False, workers=2)
    assert list(store.list("" if parse else "datasets/")) == []
    return str(info.value)


def test_split_files_that_disagree_are_named(tmp_path: Path) -> None:
    src = release(tmp_path / "src", "{split}", {"train": ["a.png"], "val": ["b.png"]})
    val = src / "annotations" / "instances_val.json"
    coco = json.loads(val.read_text())
    coco["categories"][1]["name"] = "wolf"
    val.write_text(json.dumps(coco))
    msg = fails(src, tmp_path, r"instances_val.json: category id 2 \('wolf'.*disagrees with .*instances_train.json: "
                               r"category id 2 \('dog'")
    assert msg.startswith(str(val))
    coco["categories"][1]["name"] = "dog"
    coco["images"][0]["file_name"] = "../train/a.png"  # the same image file as train's
    val.write_text(json.dumps(coco))
    fails(src, tmp_path, r"image id 1: file_name '../train/a.png': expected a path inside the source")
    write(src / "images" / "a.png", png(40, 30))
    coco["images"][0]["file_name"] = "a.png"
    val.write_text(json.dumps(coco))
    (src / "val" / "b.png").unlink()
    (src / "train" / "a.png").rename(src / "images" / "a.png")  # both files now name images/a.png
    msg = fails(src, tmp_path, r"instances_val.json: image id 1: file images/a.png is also image id 1 in "
                               r".*instances_train.json")
    coco["images"][0].update(file_name="b.png", tags=["test"])
    write(src / "val" / "b.png", png(40, 30))
    val.write_text(json.dumps(coco))
    fails(src, tmp_path, r"instances_val.json: image id 1: split tags test, val \(the file is the val split\)")


def test_broken_entries_in_a_split_file_name_the_file_and_entry(tmp_path: Path) -> None:
    src = release(tmp_path / "src", "images/{split}", {"train": ["a.png"], "val": ["b.png"]})
    val = src / "annotations" / "instances_val.json"
    coco = json.loads(val.read_text())
    coco["annotations"][0]["bbox"] = [1, 2, 3]
    val.write_text(json.dumps(coco))
    assert fails(src, tmp_path, r"annotation id 1: bbox \[1, 2, 3\]: expected 4 numbers").startswith(str(val))
    coco["annotations"][0].update(bbox=[30, 3, 20, 5])  # reaches past the 40 px edge
    val.write_text(json.dumps(coco))
    msg = fails(src, tmp_path, r"annotation 1: box .* reaches outside the 40x30 image", parse=False)
    assert msg.startswith(str(val)) and "images/val/b.png" in msg
    val.write_text(json.dumps(coco)[:40])
    assert fails(src, tmp_path, "not valid JSON").startswith(str(val))
    val.unlink()
    (src / "annotations" / "instances_train.json").unlink()
    fails(src, tmp_path, r"expected exactly one \*\.json at the top \(found: none\), COCO's "
                         r"annotations/instances_<split>.json")


def test_a_missing_image_names_its_file_and_where_it_was_looked_for(tmp_path: Path) -> None:
    src = release(tmp_path / "src", "images/{split}", {"train": ["a.png", "b.png"], "val": ["c.png"]})
    (src / "images" / "train" / "b.png").unlink()
    msg = fails(src, tmp_path, r"images/train/b.png: file not found \(image id 2 in .*instances_train.json; looked in "
                               r"train/, images/train/, images/, the top\)", parse=False)
    assert msg.startswith(str(src / "images" / "train" / "b.png"))
    res = import_dataset(spec(src, "coco", onInvalidImage="Skip"), LocalStore(tmp_path / "skip"), progress=False)
    assert [s.file for s in res.skipped] == [str(src / "images" / "train" / "b.png")]
    assert sorted(im.file_name for im in res.manifest.images) == ["images/train/a.png", "images/val/c.png"]


def export_and_read(store: LocalStore, digest: str, out: Path) -> dict[str, Any]:
    """The export read back by pycocotools and supervision: split -> (image count, boxes by file)."""
    import supervision as sv
    from pycocotools.coco import COCO

    export_version(store, "ds", digest, "coco", out)
    seen: dict[str, Any] = {}
    for path in sorted((out / "annotations").glob("instances_*.json")):
        split = path.stem.removeprefix("instances_")
        folder = out / "images" / split if (out / "images" / split).is_dir() else out / "images"
        coco = COCO(str(path))
        for im in coco.dataset["images"]:
            assert (folder / im["file_name"]).is_file()
        ds = sv.DetectionDataset.from_coco(str(folder), str(path))
        boxes = {Path(p).relative_to(out).as_posix(): sorted(d.xyxy.round(3).tolist())
                 for p, d in ds.annotations.items()}
        names = [c["name"] for c in coco.loadCats(coco.getCatIds())]
        seen[split] = (len(coco.getImgIds()), len(coco.getAnnIds()), names, ds.classes, boxes)
    return seen


def test_export_writes_the_release_layout_that_reference_readers_load(tmp_path: Path) -> None:
    src = release(tmp_path / "src", "{split}2017", {"train": ["a.png", "b.png"], "val": ["c.png"]})
    store = LocalStore(tmp_path / "store")
    first = imp(src, "coco", store)
    seen = export_and_read(store, first.digest, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) == [".kubeforge-export.json", "annotations/instances_train.json",
                                      "annotations/instances_val.json", "images/train/a.png", "images/train/b.png",
                                      "images/val/c.png"]
    assert {k: v[:4] for k, v in seen.items()} == {"train": (2, 2, ["cat", "dog"], ["cat", "dog"]),
                                                    "val": (1, 1, ["cat", "dog"], ["cat", "dog"])}
    expected = {}
    for im, anns in zip(first.manifest.images, first.manifest.annotations_by_image(), strict=True):
        split = im.tags[0]
        expected[f"images/{split}/{Path(im.file_name).name}"] = sorted(
            [round(a.bbox[0], 3), round(a.bbox[1], 3), round(a.bbox[0] + a.bbox[2], 3), round(a.bbox[1] + a.bbox[3], 3)]
            for a in anns)
    got = {k: v for s in seen.values() for k, v in s[4].items()}
    assert got.keys() == expected.keys()
    for k, boxes in expected.items():
        for a, b in zip(got[k], boxes, strict=True):
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.01
    once = imp(tmp_path / "out", "coco", store)
    assert sorted((im.file_name, *im.tags) for im in once.manifest.images) == [
        ("images/train/a.png", "train"), ("images/train/b.png", "train"), ("images/val/c.png", "val")]
    export_version(store, "ds", once.digest, "coco", tmp_path / "again")
    assert imp(tmp_path / "again", "coco", store).digest == once.digest


def test_export_without_splits_is_one_instances_default_file(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write(flat / "annotations.json", json.dumps(coco_file(["a.png", "sub/b.png"])))
    write(flat / "images" / "a.png", png(40, 30))
    write(flat / "images" / "sub" / "b.png", png(40, 30, (1, 1, 1)))
    store = LocalStore(tmp_path / "store")
    first = imp(flat, "coco", store)
    seen = export_and_read(store, first.digest, tmp_path / "out")
    assert list(seen) == ["default"] and seen["default"][:2] == (2, 2)
    assert sorted(seen["default"][4]) == ["images/a.png", "images/sub/b.png"]
    assert imp(tmp_path / "out", "coco", store).digest == first.digest  # same paths, same content


def test_export_of_a_partly_split_version_puts_the_rest_in_default(tmp_path: Path) -> None:
    src = release(tmp_path / "src", "images/{split}", {"train": ["a.png"], "val": ["a.png"]})
    (src / "annotations" / "instances_val.json").rename(src / "annotations" / "instances_extra.json")
    (src / "images" / "val").rename(src / "images" / "extra")
    store = LocalStore(tmp_path / "store")
    first = imp(src, "coco", store)
    assert sorted((im.file_name, im.tags) for im in first.manifest.images) == [
        ("images/extra/a.png", []), ("images/train/a.png", ["train"])]
    seen = export_and_read(store, first.digest, tmp_path / "out")
    assert {k: sorted(v[4]) for k, v in seen.items()} == {"default": ["images/default/extra/a.png"],
                                                          "train": ["images/train/a.png"]}
    once = imp(tmp_path / "out", "coco", store)
    export_version(store, "ds", once.digest, "coco", tmp_path / "again")
    assert imp(tmp_path / "again", "coco", store).digest == once.digest

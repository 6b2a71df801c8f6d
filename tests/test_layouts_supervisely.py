"""Supervisely as projects ship: several datasets (split names record splits), split tags, older
annotation files named without the image extension; meta.json as the declared schema; the export
(one dataset per split, else ds0) read back by the Supervisely SDK in its own venv."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubeforge.datasets.export import export_version
from kubeforge.datasets.synth import generate_shapes_coco
from kubeforge.store import LocalStore
from kubeforge.testing.readers import run_reader

from .test_datasets_badinput import fails as fails_as
from .test_datasets_formats import imp, png, supervisely_project, write

META = {
    "classes": [{"title": "cat", "shape": "rectangle", "color": "#FF0000"},
                {"title": "dog", "shape": "polygon", "color": "#00FF00"}],
    "tags": [{"name": "val", "value_type": "none", "color": "#0000FF"},
             {"name": "weather", "value_type": "oneof_string", "values": ["sunny", "rain"], "color": "#000001",
              "applicable_type": "imagesOnly"},
             {"name": "score", "value_type": "any_number", "color": "#000002", "applicable_type": "objectsOnly"},
             {"name": "occluded", "value_type": "none", "color": "#000003", "classes": ["cat"]}],
    "projectType": "images",
}


def rect(title: str = "cat", tags: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"classTitle": title, "geometryType": "rectangle", "tags": tags or [],
            "points": {"exterior": [[2, 3], [11, 7]], "interior": []}}


def ann(*objects: dict[str, Any], tags: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"description": "", "size": {"width": 40, "height": 30}, "tags": tags or [],
                       "objects": list(objects)})


def project(root: Path) -> Path:
    """Datasets train (2 images), valid (1), extra (one image tagged val, one older-style ann), test-free."""
    write(root / "meta.json", json.dumps(META))
    for i, (ds, name) in enumerate([("train", "a.png"), ("train", "b.png"), ("valid", "c.png"), ("extra", "d.png"),
                                    ("extra", "e.png"), ("extra", "f.png")]):
        write(root / ds / "img" / name, png(40, 30, (i * 40, 10, 10)))
    write(root / "train" / "ann" / "a.png.json", ann(rect(tags=[{"name": "occluded", "value": None}])))
    write(root / "train" / "ann" / "b.png.json", ann())
    write(root / "valid" / "ann" / "c.png.json", ann(rect(tags=[{"name": "score", "value": 0.5}])))
    write(root / "extra" / "ann" / "d.png.json", ann(rect(), tags=[{"name": "val", "value": None},
                                                                   {"name": "weather", "value": "rain"}]))
    write(root / "extra" / "ann" / "e.json", ann(rect(), rect()))  # older projects: named without ".png"
    return root  # extra/img/f.png: no ann file, an image without objects


def test_datasets_and_tags_record_splits(tmp_path: Path) -> None:
    m = imp(project(tmp_path / "src"), "supervisely", LocalStore(tmp_path / "store")).manifest
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("extra/img/d.png", ["val", "weather=rain"]), ("extra/img/e.png", []), ("extra/img/f.png", []),
        ("train/img/a.png", ["train"]), ("train/img/b.png", ["train"]), ("valid/img/c.png", ["val"])]
    assert [len(a) for a in m.annotations_by_image()] == [1, 2, 0, 1, 0, 1]
    assert sorted(t for a in m.annotations for t in a.tags) == ["occluded", "score=0.5"]


def test_ann_named_without_the_extension(tmp_path: Path) -> None:
    src = project(tmp_path / "src")
    write(src / "extra" / "img" / "e.jpg", png(40, 30))  # e.json now names two images
    fails(src, tmp_path / "two", r"extra/ann/e.json: annotates extra/img/e.jpg and extra/img/e.png "
                                 r"\(named without an extension\)")
    (src / "extra" / "img" / "e.jpg").unlink()
    write(src / "extra" / "ann" / "e.png.json", ann())
    fails(src, tmp_path / "both", r"extra/ann/e.png.json: image extra/img/e.png is also annotated by "
                                  r".*extra/ann/e.json")


def fails(src: Path, tmp_path: Path, message: str) -> str:
    return fails_as(src, "supervisely", tmp_path, message)


@pytest.mark.parametrize(("target", "content", "message"), [
    ("train/ann/b.png.json", ann(rect(tags=[{"name": "blurry", "value": None}])),
     r"train/ann/b.png.json: object 1: tag 'blurry' is not declared in .*meta.json 'tags'"),
    ("train/ann/b.png.json", ann(tags=[{"name": "night", "value": None}]),
     r"train/ann/b.png.json: image: tag 'night' is not declared"),
    ("train/ann/b.png.json", ann(rect(), rect(tags=[{"name": "score", "value": "high"}])),
     r"train/ann/b.png.json: object 2: tag 'score': value 'high'; .*meta.json declares any_number: expected a number"),
    ("train/ann/b.png.json", ann(rect(tags=[{"name": "score", "value": True}])),
     r"object 1: tag 'score': value True; .*any_number"),
    ("train/ann/b.png.json", ann(tags=[{"name": "weather", "value": "snow"}]),
     r"image: tag 'weather': value 'snow'; .*declares oneof_string: expected one of \['sunny', 'rain'\]"),
    ("train/ann/b.png.json", ann(tags=[{"name": "val", "value": "yes"}]),
     r"image: tag 'val': value 'yes'; .*declares none: expected no value"),
    ("train/ann/b.png.json", ann(rect(tags=[{"name": "weather", "value": "sunny"}])),
     r"object 1: tag 'weather' is declared for images only"),
    ("train/ann/b.png.json", ann(tags=[{"name": "score", "value": 1}]),
     r"image: tag 'score' is declared for objects only"),
    ("train/ann/b.png.json", ann(rect("dog", tags=[{"name": "occluded", "value": None}]) | {"geometryType": "polygon",
     "points": {"exterior": [[1, 1], [5, 1], [5, 5]], "interior": []}}),
     r"object 1: tag 'occluded' is declared for classes \['cat'\] only, not 'dog'"),
    ("train/ann/b.png.json", ann(rect(), rect("dog")),
     r"train/ann/b.png.json: object 2: geometry 'rectangle'; .*meta.json declares class 'dog' as 'polygon'"),
    ("train/ann/b.png.json", ann(rect("horse")), r"object 1: class 'horse' is not in meta.json classes"),
    ("train/ann/b.png.json", ann(rect() | {"classTitle": ["cat"]}), r"object 1: class \['cat'\] is not in meta.json"),
    ("meta.json", json.dumps(META | {"tags": [{"name": "x", "classes": "cat"}]}),
     r"meta.json: tags\[0\] \(x\): 'classes': expected a list of class titles"),
    ("train/ann/b.png.json", ann(tags=[{"name": "val", "value": None}]),
     r"train/ann/b.png.json: image train/img/b.png is in split train \(dataset train\) and in split val "
     r"\(tag 'val'\); an image has one split"),
    ("meta.json", json.dumps(META | {"tags": [{"name": "x", "value_type": "any_colour"}]}),
     r"meta.json: tags\[0\] \(x\): value_type 'any_colour'; expected one of none, any_string"),
    ("meta.json", json.dumps(META | {"classes": [{"title": "cat", "shape": "blob"}]}),
     r"meta.json: class 'cat': shape 'blob' is not a Supervisely geometry"),
])
def test_meta_is_the_declared_schema(target: str, content: str, message: str, tmp_path: Path) -> None:
    src = project(tmp_path / "src")
    write(src / target, content)
    fails(src, tmp_path, message)


# --- export, read by the Supervisely SDK -----------------------------------------------------------


SDK = """
import json, sys
from collections import Counter
import supervisely as sly
project = sly.Project(sys.argv[1], sly.OpenMode.READ)
out = {"datasets": {}, "classes": [c.name for c in project.meta.obj_classes], "labels": Counter(),
       "geometry": Counter(), "image_tags": Counter(), "object_tags": Counter()}
for ds in project.datasets:
    names = sorted(ds.get_items_names())
    out["datasets"][ds.name] = names
    for name in names:
        ann = ds.get_ann(name, project.meta)
        for t in ann.img_tags:
            out["image_tags"][t.name if t.value is None else f"{t.name}={t.value}"] += 1
        for label in ann.labels:
            out["labels"][label.obj_class.name] += 1
            out["geometry"][label.geometry.geometry_name()] += 1
            for t in label.tags:
                out["object_tags"][t.name if t.value is None else f"{t.name}={t.value}"] += 1
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def split_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Any, Path]:
    """A COCO version whose images are tagged train (3) and val (1), exported as Supervisely."""
    root = tmp_path_factory.mktemp("slyexport")
    generate_shapes_coco(root / "coco", n_images=4, size=32, seed=7, max_objects=2)
    store = LocalStore(root / "store")
    manifest = imp(root / "coco", "coco", store).manifest.model_copy(deep=True)
    for i, im in enumerate(manifest.images):
        im.tags = ["train" if i < 3 else "val", "fold=1"]
    from kubeforge.datasets.versions import write_version

    digest, _ = write_version(store, manifest.canonical())
    export_version(store, "ds", digest, "supervisely", root / "sly")
    return store, manifest.canonical(), root / "sly"


def test_export_writes_one_dataset_per_split(split_export: tuple[LocalStore, Any, Path]) -> None:
    store, manifest, out = split_export
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/img/*")) == [
        "train/img/000000.png", "train/img/000001.png", "train/img/000002.png", "val/img/000003.png"]
    once = imp(out, "supervisely", store)
    assert [im.tags for im in once.manifest.images] == [["fold=1", "train"]] * 3 + [["fold=1", "val"]]
    assert len(once.manifest.annotations) == len(manifest.annotations)
    export_version(store, "ds", once.digest, "supervisely", out.parent / "again")
    assert imp(out.parent / "again", "supervisely", store).digest == once.digest


def test_sdk_reads_the_export(split_export: tuple[LocalStore, Any, Path]) -> None:
    _, manifest, out = split_export
    got = run_reader("supervisely", SDK, str(out))
    assert got["datasets"] == {"train": ["000000.png", "000001.png", "000002.png"], "val": ["000003.png"]}
    assert got["classes"] == [c.name for c in manifest.categories]
    names = {c.id: c.name for c in manifest.categories}
    counts: dict[str, int] = {}
    for a in manifest.annotations:
        counts[names[a.category_id]] = counts.get(names[a.category_id], 0) + 1
    assert got["labels"] == counts and got["geometry"] == {"polygon": len(manifest.annotations)}
    assert got["image_tags"] == {"fold=1": 4}  # the split is the dataset, not a tag


def test_sdk_reads_an_export_without_splits(tmp_path: Path) -> None:
    """No split: one dataset ds0; colliding file names made unique; tags, bitmaps and holes read."""
    supervisely_project(tmp_path / "src")
    src = tmp_path / "src"
    shutil.copytree(src / "ds1", src / "ds2")
    second = json.loads((src / "ds2" / "ann" / "a.png.json").read_text())
    second["tags"] = [t for t in second["tags"] if t["name"] != "train"]
    (src / "ds2" / "ann" / "a.png.json").write_text(json.dumps(second))
    store = LocalStore(tmp_path / "store")
    res = imp(src, "supervisely", store)
    export_version(store, "ds", res.digest, "supervisely", tmp_path / "out")
    got = run_reader("supervisely", SDK, str(tmp_path / "out"))
    assert got["datasets"] == {"ds1": ["a.png", "b.png"], "ds2": ["a.png", "b.png"]}
    assert got["labels"] == {"box": 2, "ring": 4, "blob": 2} and got["object_tags"] == {"occluded": 2, "score=3": 2}
    assert got["image_tags"] == {"train": 1, "weather=sunny": 2}

    # The same images under plain folders (not Supervisely-shaped) land in ds0 under unique names.
    from kubeforge.datasets.versions import write_version

    plain = res.manifest.model_copy(deep=True)
    for im in plain.images:
        im.file_name = im.file_name.replace("/img/", "/")
        im.tags = [t for t in im.tags if t != "train"]
    digest, _ = write_version(store, plain.canonical())
    export_version(store, "ds", digest, "supervisely", tmp_path / "flat")
    got = run_reader("supervisely", SDK, str(tmp_path / "flat"))
    assert got["datasets"] == {"ds0": ["ds1_a.png", "ds1_b.png", "ds2_a.png", "ds2_b.png"]}


SDK_COPY = """
import sys
import supervisely as sly
src = sly.Project(sys.argv[1], sly.OpenMode.READ)
dst = sly.Project(sys.argv[2], sly.OpenMode.CREATE)
dst.set_meta(src.meta)
for ds in src.datasets:
    new = dst.create_dataset(ds.name)
    for name in ds.get_items_names():
        new.add_item_file(name, ds.get_img_path(name), ann=ds.get_ann(name, src.meta))
print("{}")
"""


def test_sdk_written_project_imports(tmp_path: Path) -> None:
    """The other direction: a project the SDK writes (its own JSON and bitmap encoding) imports to the
    same version as the project it copied."""
    supervisely_project(tmp_path / "src")
    store = LocalStore(tmp_path / "store")
    res = imp(tmp_path / "src", "supervisely", store)
    export_version(store, "ds", res.digest, "supervisely", tmp_path / "out")
    run_reader("supervisely", SDK_COPY, str(tmp_path / "out"), str(tmp_path / "copy"))
    assert imp(tmp_path / "copy", "supervisely", store).digest == res.digest

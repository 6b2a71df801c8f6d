"""VOC, YOLO and Supervisely importers; exporters for all five formats; round trips by digest."""

from __future__ import annotations

import base64
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.export import ExportError, export_manifest, export_version
from kubeforge.datasets.formats.common import rle_to_mask
from kubeforge.datasets.importer import ImportResult, import_dataset
from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder
from kubeforge.store import LocalStore
from kubeforge.store.base import Store


def spec(uri: Path | str, fmt: str, **extra: Any) -> DatasetVersionSpec:
    return DatasetVersionSpec.model_validate({"dataset": "ds", "source": {"uri": str(uri), "format": fmt}} | extra)


def imp(uri: Path | str, fmt: str, store: Store, **extra: Any) -> ImportResult:
    return import_dataset(spec(uri, fmt, **extra), store, progress=False, workers=2)


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture(scope="module")
def coco_version(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, ImportResult]:
    root = tmp_path_factory.mktemp("synth")
    generate_shapes_coco(root / "src", n_images=4, size=32, seed=3, max_objects=2)
    store = LocalStore(root / "store")
    return store, imp(root / "src", "coco", store)


Version = tuple[LocalStore, ImportResult]


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo", "supervisely"])
def test_round_trip_gives_the_same_digest(fmt: str, coco_version: Version, tmp_path: Path) -> None:
    store, first = coco_version
    export_version(store, "ds", first.digest, fmt, tmp_path / "a")
    once = imp(tmp_path / "a", fmt, store)
    assert len(once.manifest.images) == 4 and len(once.manifest.annotations) == len(first.manifest.annotations)
    assert once.manifest.class_names() == ["circle", "square", "triangle"]
    export_version(store, "ds", once.digest[:12], fmt, tmp_path / "b")
    twice = imp(tmp_path / "b", fmt, store)
    assert twice.digest == once.digest
    assert not list(tmp_path.glob(".tmp-export-*"))  # temporary folders are gone
    marker = json.loads((tmp_path / "b" / ".kubeforge-export.json").read_text())
    assert marker["digest"] == once.digest and marker["format"] == fmt
    if fmt == "coco":  # COCO holds everything the manifest does: the first import comes back exactly
        assert once.digest == first.digest
    if fmt in ("yolo", "supervisely"):  # the synthetic polygons survive as polygons
        assert all(isinstance(a.segmentation, list) for a in twice.manifest.annotations)


def test_imagefolder_round_trip(tmp_path: Path) -> None:
    root = generate_shapes_imagefolder(tmp_path / "src", n_per_class=2, size=16, seed=1)
    store = LocalStore(tmp_path / "store")
    first = imp(root, "imagefolder", store)
    export_version(store, "ds", first.digest, "imagefolder", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == sorted(
        im.file_name for im in first.manifest.images)
    assert imp(tmp_path / "out", "imagefolder", store).digest == first.digest
    with pytest.raises(ExportError, match="holds objects; version ds is classification"):
        export_version(store, "ds", first.digest, "voc", tmp_path / "voc")
    assert not (tmp_path / "voc").exists()


def bitmap_data(mask: np.ndarray) -> str:
    img = Image.fromarray(mask.astype(np.uint8))
    img.putpalette([0, 0, 0, 255, 255, 255])
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0)
    return base64.b64encode(zlib.compress(buf.getvalue())).decode()


def supervisely_project(root: Path) -> np.ndarray:
    """One image with a rectangle, a polygon with a hole, a bitmap, and tags; returns the bitmap mask."""
    meta = {"classes": [{"title": "box", "shape": "rectangle"}, {"title": "ring", "shape": "polygon"},
                        {"title": "blob", "shape": "bitmap"}],
            "tags": [{"name": "train", "value_type": "none"}, {"name": "weather", "value_type": "any_string"},
                     {"name": "occluded", "value_type": "none"}, {"name": "score", "value_type": "any_number"}]}
    write(root / "meta.json", json.dumps(meta))
    write(root / "ds1" / "img" / "a.png", png(40, 30))
    write(root / "ds1" / "img" / "b.png", png(40, 30, (0, 0, 255)))  # no ann file: an image without objects
    part = np.zeros((4, 5), dtype=bool)
    part[1:3, 1:4] = True
    ann = {"size": {"width": 40, "height": 30},
           "tags": [{"name": "train", "value": None}, {"name": "weather", "value": "sunny"}],
           "objects": [
               {"classTitle": "box", "geometryType": "rectangle", "tags": [{"name": "occluded", "value": None}],
                "points": {"exterior": [[2, 3], [11, 7]], "interior": []}},
               {"classTitle": "ring", "geometryType": "polygon", "tags": [],
                "points": {"exterior": [[10, 10], [30, 10], [30, 25], [10, 25]],
                           "interior": [[[15, 14], [25, 14], [25, 20], [15, 20]]]}},
               {"classTitle": "ring", "geometryType": "polygon", "tags": [],
                "points": {"exterior": [[1, 20], [6, 20], [6, 28]], "interior": []}},
               {"classTitle": "blob", "geometryType": "bitmap", "tags": [{"name": "score", "value": 3}],
                "bitmap": {"data": bitmap_data(part), "origin": [33, 2]}},
           ]}
    write(root / "ds1" / "ann" / "a.png.json", json.dumps(ann))
    full = np.zeros((30, 40), dtype=bool)
    full[2:6, 33:38] = part
    return full


def test_supervisely_import_geometry_and_tags(tmp_path: Path) -> None:
    mask = supervisely_project(tmp_path / "src")
    store = LocalStore(tmp_path / "store")
    res = imp(tmp_path / "src", "supervisely", store)
    m = res.manifest
    assert m.class_names() == ["box", "ring", "blob"] and [im.file_name for im in m.images] == [
        "ds1/img/a.png", "ds1/img/b.png"]
    assert m.images[0].tags == ["train", "weather=sunny"] and m.images[1].tags == []
    anns = {(m.category_name(a.category_id), type(a.segmentation).__name__): a for a in m.annotations}
    rect = anns[("box", "NoneType")]
    assert rect.bbox == [2.0, 3.0, 10.0, 5.0] and rect.tags == ["occluded"]  # inclusive corners: 2..11 is 10 px
    assert anns[("ring", "list")].segmentation == [[1.0, 20.0, 6.0, 20.0, 6.0, 28.0]]
    holed = anns[("ring", "dict")]  # a hole cannot be a COCO polygon: it is stored as the mask
    holed_mask = rle_to_mask(holed.segmentation)
    assert holed_mask[12, 12] and not holed_mask[17, 20] and holed.area == float(holed_mask.sum())
    blob = anns[("blob", "dict")]
    assert np.array_equal(rle_to_mask(blob.segmentation), mask) and blob.bbox == [34.0, 3.0, 3.0, 2.0]
    assert blob.tags == ["score=3"] and blob.area == 6.0

    export_version(store, "ds", res.digest, "supervisely", tmp_path / "out")
    again = imp(tmp_path / "out", "supervisely", store)
    assert again.digest == res.digest  # rectangles, polygons, holes, bitmaps and tags all survive
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert {c["title"]: c["shape"] for c in meta["classes"]} == {"box": "rectangle", "ring": "any", "blob": "bitmap"}


def test_tags_and_masks_survive_coco_export(tmp_path: Path) -> None:
    supervisely_project(tmp_path / "src")
    store = LocalStore(tmp_path / "store")
    res = imp(tmp_path / "src", "supervisely", store)
    export_version(store, "ds", res.digest, "coco", tmp_path / "coco")
    back = imp(tmp_path / "coco", "coco", store).manifest
    assert {im.file_name: im.tags for im in back.images} == {  # the split is the file: instances_train.json
        "images/train/ds1/img/a.png": ["train", "weather=sunny"], "images/default/ds1/img/b.png": []}
    assert sorted(t for a in back.annotations for t in a.tags) == ["occluded", "score=3"]
    assert [a.segmentation for a in back.annotations] == [a.segmentation for a in res.manifest.annotations]


VOC_XML = """<annotation><folder>VOC</folder><filename>{name}</filename>
<size><width>40</width><height>30</height><depth>3</depth></size>
<object><name>cat</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
<object><name>dog</name><pose>Unspecified</pose><truncated>0</truncated><difficult>1</difficult>
<bndbox><xmin>21</xmin><ymin>5</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
</annotation>"""


def voc_source(root: Path) -> None:
    for name in ("a", "b"):
        write(root / "JPEGImages" / f"{name}.png", png(40, 30, (10, 200, 10) if name == "a" else (9, 9, 9)))
        write(root / "Annotations" / f"{name}.xml", VOC_XML.format(name=f"{name}.png"))
    write(root / "ImageSets" / "Main" / "train.txt", "a\n")
    write(root / "ImageSets" / "Main" / "val.txt", "b\n")
    write(root / "ImageSets" / "Main" / "cat_train.txt", "a  1\n")  # per-class list: not a tag


def test_voc_import_converts_one_based_corners_and_flags(tmp_path: Path) -> None:
    voc_source(tmp_path / "src")
    store = LocalStore(tmp_path / "store")
    res = imp(tmp_path / "src", "voc", store)
    m = res.manifest
    assert m.class_names() == ["cat", "dog"] and [im.tags for im in m.images] == [["train"], ["val"]]
    cat, dog = sorted(m.annotations_by_image()[0], key=lambda a: a.category_id)
    assert cat.bbox == [0.0, 0.0, 10.0, 20.0] and cat.tags == ["pose=Left", "truncated"]
    assert dog.bbox == [20.0, 4.0, 20.0, 26.0] and dog.tags == ["difficult"]  # xmax 40 = the last pixel column
    export_version(store, "ds", res.digest, "voc", tmp_path / "out")
    assert "<xmin>1</xmin>" in (tmp_path / "out" / "Annotations" / "a.xml").read_text()
    assert imp(tmp_path / "out", "voc", store).digest == res.digest


def test_yolo_import_boxes_polygons_and_splits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "data.yaml", "path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    write(src / "images" / "train" / "a.png", png(40, 20))
    write(src / "labels" / "train" / "a.txt", "0 0.5 0.5 0.5 0.4\n1 0.1 0.1 0.4 0.1 0.4 0.9\n")
    write(src / "images" / "val" / "b.png", png(40, 20, (1, 2, 3)))  # no label file: no objects
    store = LocalStore(tmp_path / "store")
    res = imp(src, "yolo", store)
    m = res.manifest
    assert m.class_names() == ["cat", "dog"] and [im.tags for im in m.images] == [["train"], ["val"]]
    box, poly = sorted(m.annotations, key=lambda a: a.category_id)
    assert box.bbox == [10.0, 6.0, 20.0, 8.0] and box.segmentation is None
    assert poly.segmentation == [[4.0, 2.0, 16.0, 2.0, 16.0, 18.0]] and poly.bbox == [4.0, 2.0, 12.0, 16.0]
    export_version(store, "ds", res.digest, "yolo", tmp_path / "out")
    assert (tmp_path / "out" / "labels" / "train" / "a.txt").read_text().startswith("0 0.5 0.5 0.5 0.4\n")
    assert imp(tmp_path / "out", "yolo", store).digest == res.digest


def test_failed_export_leaves_nothing(coco_version: tuple[LocalStore, ImportResult], tmp_path: Path) -> None:
    store, first = coco_version
    broken = first.manifest.model_copy(deep=True)
    broken.images[2].blob = "0" * 64  # a blob the store does not have
    with pytest.raises(ExportError, match=r"images/000002\.png: blob 0+ is missing"):
        export_manifest(store, broken, "yolo", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-written folder, no temporary one
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ExportError, match="already exists and is not an empty folder"):
        export_version(store, "ds", first.digest, "coco", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]


def test_cli_export_by_digest_prefix_and_by_resource_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from kubeforge.api import parse_resource
    from kubeforge.cli.main import app
    from kubeforge.local.state import Record, StateDir

    monkeypatch.setenv("KUBEFORGE_STATE_DIR", str(tmp_path / "state"))
    voc_source(tmp_path / "src")
    store = str(tmp_path / "store")
    runner = CliRunner()
    done = runner.invoke(app, ["datasets", "import", str(tmp_path / "src"), "--dataset", "pets", "--format", "voc",
                               "--store", store])
    assert done.exit_code == 0, done.output
    digest = done.stdout.split("pets@")[1].split()[0]
    out = runner.invoke(app, ["datasets", "export", f"pets@{digest[:10]}", "--format", "yolo", "--out",
                              str(tmp_path / "yolo"), "--store", store])
    assert out.exit_code == 0, out.output
    assert "exported pets@" in out.stdout and (tmp_path / "yolo" / "data.yaml").is_file()
    assert "not representable in yolo: object tags (4)" in out.stderr  # 2 images, 2 tagged objects each
    resource = parse_resource({"apiVersion": "kubeforge.io/v1alpha1", "kind": "DatasetVersion",
                               "metadata": {"name": "pets-v1", "namespace": "default"},
                               "spec": {"dataset": "pets", "source": {"uri": str(tmp_path / "src"), "format": "voc"}},
                               "status": {"phase": "Succeeded", "digest": digest}})
    StateDir(tmp_path / "state").save(Record(resource, store=LocalStore(store).uri))
    named = runner.invoke(app, ["datasets", "export", "pets-v1", "--format", "voc", "--out", str(tmp_path / "voc")])
    assert named.exit_code == 0, named.output
    assert imp(tmp_path / "voc", "voc", LocalStore(store), dataset="pets").digest == digest
    bad = runner.invoke(app, ["datasets", "export", "pets@ffffff", "--format", "voc", "--out", str(tmp_path / "x"),
                              "--store", store])
    assert bad.exit_code == 1 and "no version of dataset 'pets'" in bad.stderr


@pytest.mark.s3
def test_export_to_s3_writes_the_marker_last_and_reimports(tmp_path: Path, s3_store: Any) -> None:
    voc_source(tmp_path / "src")
    res = imp(tmp_path / "src", "voc", s3_store)
    prefix = f"{s3_store.uri.rstrip('/')}/exports/pets-voc/"
    out = export_version(s3_store, "ds", res.digest, "voc", prefix)
    keys = list(s3_store.list("exports/pets-voc/"))
    assert out.location == prefix and "exports/pets-voc/.kubeforge-export.json" in keys
    assert "exports/pets-voc/Annotations/a.xml" in keys and out.files == len(keys) - 1  # + the marker
    assert imp(prefix, "voc", s3_store).digest == res.digest  # the marker is hidden from the source
    with pytest.raises(ExportError, match="the prefix is not empty"):
        export_version(s3_store, "ds", res.digest, "voc", prefix)

"""Pascal VOC as datasets ship: the standard tree (under VOC2012/ or VOCdevkit/VOC2007/ too), flat
exports with each XML beside its image, ImageSets splits, SegmentationClass/SegmentationObject masks;
the canonical export read back by datumaro (its own venv) and supervision; every defect named."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubeforge.datasets.export import export_version
from kubeforge.datasets.formats.common import rle_to_mask
from kubeforge.datasets.formats.voc import voc_color
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.synth import generate_shapes_coco
from kubeforge.store import LocalStore
from kubeforge.testing.readers import run_reader

from .test_datasets_badinput import fails as fails_as
from .test_datasets_formats import imp, png, spec, write


def xml(name: str, objects: list[tuple[str, int, int, int, int]], size: tuple[int, int] | None = (40, 30)) -> str:
    dims = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(
        f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for c, x0, y0, x1, y1 in objects)
    return f"<annotation><folder>VOC</folder><filename>{name}</filename>{dims}{objs}</annotation>"


CAT, DOG = ("cat", 1, 1, 10, 10), ("dog", 21, 5, 40, 30)


def voc_tree(root: Path) -> Path:
    """Four images (a, b, c with XMLs; d without), standard lists train/val/trainval/test."""
    for i, name in enumerate("abcd"):
        write(root / "JPEGImages" / f"{name}.jpg", jpeg(40, 30, (10 + 60 * i, 20, 200)))
    write(root / "Annotations" / "a.xml", xml("a.jpg", [CAT, DOG]))
    write(root / "Annotations" / "b.xml", xml("b.jpg", [DOG]))
    write(root / "Annotations" / "c.xml", xml("c.jpg", [CAT]))
    sets = root / "ImageSets" / "Main"
    write(sets / "train.txt", "a\nb\n")
    write(sets / "val.txt", "c\n")
    write(sets / "trainval.txt", "a\nb\nc\n")  # adds nothing: train and val exist
    write(sets / "test.txt", "d\n")
    write(sets / "cat_train.txt", "a  1\nb -1\n")  # per-class list: ignored
    return root


def jpeg(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="JPEG")
    return buf.getvalue()


def fails(src: Path, tmp_path: Path, message: str) -> str:
    return fails_as(src, "voc", tmp_path, message)


@pytest.mark.parametrize("top", ["", "VOC2012/", "VOCdevkit/VOC2007/"])
def test_standard_tree_records_splits(top: str, tmp_path: Path) -> None:
    voc_tree(tmp_path / "src" / top)
    res = imp(tmp_path / "src", "voc", LocalStore(tmp_path / "store"))
    m = res.manifest
    assert [(im.file_name, im.tags) for im in m.images] == [
        (f"{top}JPEGImages/a.jpg", ["train"]), (f"{top}JPEGImages/b.jpg", ["train"]),
        (f"{top}JPEGImages/c.jpg", ["val"]), (f"{top}JPEGImages/d.jpg", ["test"])]
    assert m.class_names() == ["cat", "dog"] and len(m.annotations) == 4


def test_trainval_alone_is_a_tag_and_valid_is_val(tmp_path: Path) -> None:
    src = voc_tree(tmp_path / "src")
    (src / "ImageSets" / "Main" / "train.txt").unlink()
    (src / "ImageSets" / "Main" / "val.txt").rename(src / "ImageSets" / "Main" / "valid.txt")
    m = imp(src, "voc", LocalStore(tmp_path / "store")).manifest
    assert [im.tags for im in m.images] == [["trainval"], ["trainval"], ["trainval", "val"], ["test"]]


def test_flat_export_with_each_xml_beside_its_image(tmp_path: Path) -> None:
    """LabelImg / Roboflow: XML beside the image at any depth; a split folder on the way is the split."""
    src = tmp_path / "src"
    write(src / "train" / "a.jpg", jpeg(40, 30, (1, 2, 3)))
    write(src / "train" / "a.xml", xml("a.jpg", [CAT]))
    write(src / "valid" / "deep" / "er" / "b.png", png(40, 30))
    write(src / "valid" / "deep" / "er" / "b.xml", xml("b.png", [DOG, CAT]).replace(
        "</filename>", "</filename><path>/home/me/labelimg/b.png</path>"))  # LabelImg
    write(src / "valid" / "deep" / "er" / "c.png", png(40, 30, (0, 0, 0)))  # no XML: an image without objects
    write(src / "misc" / "d.jpg", jpeg(40, 30, (9, 9, 9)))
    write(src / "misc" / "d.xml", xml("renamed.jpg", [DOG]))  # stale <filename>: the image with the XML's stem
    m = imp(src, "voc", LocalStore(tmp_path / "store")).manifest
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("misc/d.jpg", []), ("train/a.jpg", ["train"]), ("valid/deep/er/b.png", ["val"]),
        ("valid/deep/er/c.png", ["val"])]
    assert [len(a) for a in m.annotations_by_image()] == [1, 1, 2, 0]


def seg_tree(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """voc_tree plus masks for a: cat = instance 1, dog = instance 2, a void border; a in
    ImageSets/Segmentation/train.txt."""
    voc_tree(root)
    inst = np.zeros((30, 40), dtype=np.uint8)
    inst[2:8, 1:9] = 1
    inst[6:28, 22:38] = 2  # overlaps the cat's box region only outside the cat's pixels
    inst[2:8, 9] = 255  # void border
    cls = np.where(inst == 1, 8, np.where(inst == 2, 12, 0)).astype(np.uint8)  # VOC indices: cat 8, dog 12
    cls[inst == 255] = 255
    for folder, data in (("SegmentationObject", inst), ("SegmentationClass", cls)):
        img = Image.fromarray(data, mode="P")
        img.putpalette([v for i in range(256) for v in voc_color(i)])
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        write(root / folder / "a.png", buf.getvalue())
    write(root / "ImageSets" / "Segmentation" / "train.txt", "a\n")
    return inst == 1, inst == 2


def test_segmentation_masks_on_the_objects(tmp_path: Path) -> None:
    cat, dog = seg_tree(tmp_path / "src")
    store = LocalStore(tmp_path / "store")
    res = imp(tmp_path / "src", "voc", store)
    first = res.manifest.annotations_by_image()[0]
    by_class = {res.manifest.category_name(a.category_id): a for a in first}
    assert np.array_equal(rle_to_mask(by_class["cat"].segmentation), cat) and by_class["cat"].area == cat.sum()
    assert np.array_equal(rle_to_mask(by_class["dog"].segmentation), dog)
    assert by_class["cat"].bbox == [0.0, 0.0, 10.0, 10.0]  # the XML's box stays
    assert all(a.segmentation is None for anns in res.manifest.annotations_by_image()[1:] for a in anns)
    # The export writes the masks back (palette PNGs, instance = object order): same digest.
    export_version(store, "ds", res.digest, "voc", tmp_path / "out")
    assert (tmp_path / "out" / "SegmentationObject" / "a.png").is_file()
    assert (tmp_path / "out" / "ImageSets" / "Segmentation" / "train.txt").read_text() == "a\n"
    assert imp(tmp_path / "out", "voc", store).digest == res.digest


# --- export, read by independent readers ---------------------------------------------------------


DATUMARO = """
import json, sys
from collections import Counter
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset
ds = Dataset.import_from(sys.argv[1], sys.argv[2])
labels = [c.name for c in ds.categories()[AnnotationType.label]]
boxes, masks, items = Counter(), Counter(), {}
for item in ds:
    items[item.id] = item.subset
    for a in item.annotations:
        if a.type == AnnotationType.bbox:
            boxes[labels[a.label]] += 1
        elif a.type == AnnotationType.mask and a.group:  # instance masks (group = instance index)
            masks[labels[a.label]] += int(a.image.sum())
print(json.dumps({"items": items, "labels": labels, "boxes": boxes, "mask_pixels": masks}))
"""


@pytest.fixture(scope="module")
def split_version(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Any, Path]:
    """A COCO version with polygons, images in train/ and val/ folders tagged by split, exported as VOC."""
    root = tmp_path_factory.mktemp("vocexport")
    generate_shapes_coco(root / "coco", n_images=4, size=32, seed=5, max_objects=2)
    store = LocalStore(root / "store")
    res = imp(root / "coco", "coco", store)
    manifest = res.manifest.model_copy(deep=True)
    for i, im in enumerate(manifest.images):  # as a split-aware import records them
        split = "train" if i < 3 else "val"
        im.file_name = f"{split}/images/{im.file_name.rpartition('/')[2]}"
        im.tags = [split]
    from kubeforge.datasets.versions import write_version

    digest, _ = write_version(store, manifest.canonical())
    export_version(store, "ds", digest, "voc", root / "voc")
    return store, manifest.canonical(), root / "voc"


def test_export_is_the_flat_canonical_layout(split_version: tuple[LocalStore, Any, Path]) -> None:
    store, manifest, out = split_version
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["000000.png", "000001.png", "000002.png",
                                                                     "000003.png"]
    assert not list((out / "JPEGImages").glob("*/"))  # no folder tree under JPEGImages
    assert (out / "ImageSets" / "Main" / "train.txt").read_text() == "000000\n000001\n000002\n"
    assert (out / "ImageSets" / "Main" / "val.txt").read_text() == "000003\n"
    assert (out / "labelmap.txt").read_text().splitlines()[1:] == [
        "background:0,0,0::", "circle:128,0,0::", "square:0,128,0::", "triangle:128,128,0::"]
    back = imp(out, "voc", store).manifest
    assert [im.tags for im in back.images] == [["train"], ["train"], ["train"], ["val"]]
    assert len(back.annotations) == len(manifest.annotations)


def test_datumaro_reads_the_export(split_version: tuple[LocalStore, Any, Path]) -> None:
    store, manifest, out = split_version
    names = {c.id: c.name for c in manifest.categories}
    counts: dict[str, int] = {}
    for a in manifest.annotations:
        counts[names[a.category_id]] = counts.get(names[a.category_id], 0) + 1
    back = imp(out, "voc", store).manifest  # the masks as the export holds them (rasterised polygons)
    pixels: dict[str, int] = {}
    for a in back.annotations:
        pixels[names[a.category_id]] = pixels.get(names[a.category_id], 0) + int(a.area or 0)
    for fmt in ("voc", "voc_detection"):
        got = run_reader("datumaro", DATUMARO, str(out), fmt)
        assert got["items"] == {"000000": "train", "000001": "train", "000002": "train", "000003": "val"}
        assert got["labels"] == ["background", "circle", "square", "triangle"]
        assert got["boxes"] == counts
        if fmt == "voc":
            assert got["mask_pixels"] == pixels  # SegmentationObject read through the same palette


def test_supervision_reads_the_export(split_version: tuple[LocalStore, Any, Path]) -> None:
    sv = pytest.importorskip("supervision")
    _, manifest, out = split_version
    ds = sv.DetectionDataset.from_pascal_voc(str(out / "JPEGImages"), str(out / "Annotations"))
    assert len(ds) == 4 and sorted(ds.classes) == sorted({c.name for c in manifest.categories
                                                          if any(a.category_id == c.id for a in manifest.annotations)})
    total = 0
    for path, _, det in ds:
        im = next(i for i in manifest.images if i.file_name.endswith("/" + Path(path).name))
        anns = [a for a in manifest.annotations if manifest.images[a.image] is im]
        assert len(det) == len(anns)
        total += len(det)
    assert total == len(manifest.annotations)


def test_export_keeps_split_tags_through_a_round_trip(tmp_path: Path) -> None:
    voc_tree(tmp_path / "src" / "VOCdevkit" / "VOC2007")
    store = LocalStore(tmp_path / "store")
    first = imp(tmp_path / "src", "voc", store)
    export_version(store, "ds", first.digest, "voc", tmp_path / "a")
    once = imp(tmp_path / "a", "voc", store)
    assert [im.tags for im in once.manifest.images] == [["train"], ["train"], ["val"], ["test"]]
    assert sorted(p.name for p in (tmp_path / "a" / "ImageSets" / "Main").iterdir()) == [
        "test.txt", "train.txt", "val.txt"]
    export_version(store, "ds", once.digest, "voc", tmp_path / "b")
    assert imp(tmp_path / "b", "voc", store).digest == once.digest


def test_export_makes_colliding_ids_unique(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for split in ("train", "valid"):
        write(src / split / "a.jpg", jpeg(40, 30, (1, 2, 3) if split == "train" else (50, 60, 70)))
        write(src / split / "a.xml", xml("a.jpg", [CAT]))
    store = LocalStore(tmp_path / "store")
    res = imp(src, "voc", store)
    export_version(store, "ds", res.digest, "voc", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "Annotations").iterdir()) == ["train_a.xml", "valid_a.xml"]
    back = imp(tmp_path / "out", "voc", store).manifest
    assert [(im.file_name, im.tags) for im in back.images] == [("JPEGImages/train_a.jpg", ["train"]),
                                                              ("JPEGImages/valid_a.jpg", ["val"])]


# --- every defect named ----------------------------------------------------------------------------


def test_image_in_two_splits_names_both_lists(tmp_path: Path) -> None:
    src = voc_tree(tmp_path / "src")
    write(src / "ImageSets" / "Main" / "val.txt", "c\nb\n")
    msg = fails(src, tmp_path, r"JPEGImages/b.jpg: image 'b' is in split train \(.*ImageSets/Main/train.txt "
                               r"\(line 2\)\) and in split val \(.*ImageSets/Main/val.txt \(line 2\)\)")
    assert "an image has one split" in msg


def test_trainval_image_in_neither_list(tmp_path: Path) -> None:
    src = voc_tree(tmp_path / "src")
    write(src / "ImageSets" / "Main" / "trainval.txt", "a\nb\nc\nd\n")
    fails(src, tmp_path, r"ImageSets/Main/trainval.txt: line 4: image 'd' is in neither .*train.txt nor .*val.txt")


@pytest.mark.parametrize(("labelmap", "message"), [
    ("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:128,0,0::\n",
     r"Annotations/a.xml: object 2: class 'dog' is not in .*labelmap.txt"),
    ("background:0,0,0::\ncat:1,1,1::\ndog:2,2,2::\ncat:3,3,3::\n",
     r"labelmap.txt: line 4: class 'cat' is already listed on line 2"),
    ("background:0,0,0::\ncat::\n:1,1,1::\n", r"labelmap.txt: line 3: expected a class name"),
])
def test_label_map_is_the_declared_schema(labelmap: str, message: str, tmp_path: Path) -> None:
    src = voc_tree(tmp_path / "src" / "VOC2012")
    write(src / "labelmap.txt", labelmap)
    fails(tmp_path / "src", tmp_path, message)


def test_label_map_orders_the_classes(tmp_path: Path) -> None:
    src = voc_tree(tmp_path / "src")
    write(src / "labelmap.txt", "background:0,0,0::\ndog:1,1,1::\ncat:2,2,2::\nbird:3,3,3::\n")
    m = imp(src, "voc", LocalStore(tmp_path / "store")).manifest
    assert m.class_names() == ["dog", "cat", "bird"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace("<width>40</width>", "<width>41</width>"),
     r"JPEGImages/a.jpg: the annotations say 41x30, the image is 40x30"),
    (lambda s: s.replace("<width>40</width>", "<width>40.5</width>"),
     r"Annotations/a.xml: <size> <width> '40.5': expected a whole number of pixels"),
    (lambda s: s.replace("</annotation>", ""), r"Annotations/a.xml: not valid XML"),
    (lambda s: s.replace("<xmin>21</xmin>", "<xmin>two</xmin>"), r"Annotations/a.xml: object 2: <xmin> 'two'"),
    (lambda s: s.replace("<xmin>21</xmin>", "<xmin>nan</xmin>"), r"Annotations/a.xml: object 2: <xmin> 'nan'"),
    (lambda s: '<?xml version="1.0" encoding="bogus"?>' + s, r"Annotations/a.xml: not valid XML \(LookupError"),
    (lambda s: s.replace("<difficult>0</difficult>", "<difficult>maybe</difficult>", 1),
     r"Annotations/a.xml: object 1: <difficult> 'maybe': expected 0 or 1"),
    (lambda s: s.replace("<name>dog</name>", "<name></name>"), r"Annotations/a.xml: object 2: expected a <name>"),
    (lambda s: s.replace("<annotation>", "<annotations>").replace("</annotation>", "</annotations>"),
     r"Annotations/a.xml: expected an <annotation> root element"),
])
def test_bad_xml_names_the_file_and_object(edit: Any, message: str, tmp_path: Path) -> None:
    src = voc_tree(tmp_path / "src")
    path = src / "Annotations" / "a.xml"
    path.write_text(edit(path.read_text()))
    fails(src, tmp_path, message)


def test_flat_xml_without_its_image(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "x" / "a.jpg", jpeg(40, 30, (1, 2, 3)))
    write(src / "x" / "a.xml", xml("a.jpg", [CAT]))
    write(src / "x" / "b.xml", xml("b.jpg", [CAT]))
    fails(src, tmp_path, r"x/b.jpg: file not found \(named by .*x/b.xml\)")
    res = import_dataset(spec(src, "voc", onInvalidImage="Skip"), LocalStore(tmp_path / "s"), progress=False)
    assert [im.file_name for im in res.manifest.images] == ["x/a.jpg"] and len(res.skipped) == 1


def test_list_naming_an_unknown_image(tmp_path: Path) -> None:
    src = voc_tree(tmp_path / "src")
    write(src / "ImageSets" / "Segmentation" / "val.txt", "c\nzz\n")
    fails(src, tmp_path, r"ImageSets/Segmentation/val.txt: line 2: image 'zz' has no Annotations/zz.xml")


def _seg(root: Path, folder: str, data: np.ndarray) -> None:
    img = Image.fromarray(data.astype(np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in voc_color(i)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write(root / folder / "a.png", buf.getvalue())


def test_bad_segmentation_pngs(tmp_path: Path) -> None:
    base = tmp_path / "base"
    cat, dog = seg_tree(base)
    inst = np.where(cat, 1, np.where(dog, 2, 0))

    def case(name: str) -> Path:
        src = tmp_path / name
        shutil.copytree(base, src)
        return src

    src = case("extra")
    _seg(src, "SegmentationObject", np.where(dog, 3, inst))
    fails(src, tmp_path / "e1", r"SegmentationObject/a.png: instance 3: .*Annotations/a.xml has 2 objects")
    src = case("class")
    _seg(src, "SegmentationClass", np.where(cat, 12, np.where(dog, 12, 0)))  # the cat's pixels say dog
    fails(src, tmp_path / "e2", r"SegmentationClass/a.png: instance 1 \(object 1 of .*a.xml, 'cat'\): "
                                r"the class PNG says 'dog'; expected 'cat'")
    src = case("size")
    _seg(src, "SegmentationObject", np.zeros((20, 40)))
    fails(src, tmp_path / "e3", r"SegmentationObject/a.png: 40x20, but .*a.xml says 40x30")
    src = case("alone")
    (src / "SegmentationObject" / "a.png").unlink()
    fails(src, tmp_path / "e4", r"SegmentationClass/a.png: no SegmentationObject/a.png")
    src = case("broken")
    write(src / "SegmentationObject" / "a.png", b"\x89PNG not really")
    fails(src, tmp_path / "e5", r"SegmentationObject/a.png: not a readable PNG")
    src = case("orphan")
    shutil.copy(src / "SegmentationObject" / "a.png", src / "SegmentationObject" / "zz.png")
    fails(src, tmp_path / "e6", r"SegmentationObject/zz.png: no Annotations/zz.xml")


DATUMARO_EXPORT = """
import json, sys
from datumaro.components.dataset import Dataset
Dataset.import_from(sys.argv[1], "voc").export(sys.argv[2], sys.argv[3], save_media=True)
print("{}")
"""


def test_datumaro_export_imports(split_version: tuple[LocalStore, Any, Path], tmp_path: Path) -> None:
    """The other direction: what datumaro writes as VOC (detection) imports with the same images, splits
    (ImageSets/Main/<subset>.txt), classes (labelmap.txt) and boxes (its float32 corners round back)."""
    store, _, out = split_version
    run_reader("datumaro", DATUMARO_EXPORT, str(out), str(tmp_path / "dm"), "voc_detection")
    ours = imp(out, "voc", store).manifest
    theirs = imp(tmp_path / "dm", "voc", store).manifest
    assert [(im.file_name, im.blob, im.tags) for im in theirs.images] == [
        (im.file_name, im.blob, im.tags) for im in ours.images]
    assert theirs.categories == ours.categories
    assert [(a.image, a.category_id, a.bbox) for a in theirs.annotations] == [
        (a.image, a.category_id, a.bbox) for a in ours.annotations]


def test_two_roots_rgb_masks_and_default_list(tmp_path: Path) -> None:
    """VOC2007 and VOC2012 side by side are one version; masks saved as RGB (datumaro writes them so)
    read through the VOC palette; datumaro's ImageSets/Main/default.txt (no subset) is not a tag."""
    src = tmp_path / "src"
    voc_tree(src / "VOCdevkit" / "VOC2007")
    v12 = src / "VOCdevkit" / "VOC2012"
    cat, dog = seg_tree(v12)
    for folder in ("SegmentationObject", "SegmentationClass"):
        path = v12 / folder / "a.png"
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
        path.write_bytes(buf.getvalue())
    write(v12 / "ImageSets" / "Main" / "default.txt", "d\n")
    (v12 / "ImageSets" / "Main" / "test.txt").unlink()
    m = imp(src, "voc", LocalStore(tmp_path / "store")).manifest
    assert len(m.images) == 8 and [im.tags for im in m.images[4:]] == [["train"], ["train"], ["val"], []]
    masks = {m.category_name(a.category_id): rle_to_mask(a.segmentation) for a in m.annotations_by_image()[4]}
    assert np.array_equal(masks["cat"], cat) and np.array_equal(masks["dog"], dog)
    rgb = np.zeros((30, 40, 3), dtype=np.uint8)
    rgb[0, 0] = (1, 2, 3)
    write(v12 / "SegmentationObject" / "a.png", _png_bytes(Image.fromarray(rgb)))
    fails(src, tmp_path / "bad", r"VOC2012/SegmentationObject/a.png: pixel \(x=0, y=0\): colour #010203 is not in "
                                 r"the VOC palette")


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_lowercase_annotations_and_images_folders(tmp_path: Path) -> None:
    """Kaggle's layout: `annotations/*.xml` beside `images/*.png` is the standard tree."""
    src = tmp_path / "src"
    write(src / "images" / "m0.png", png(40, 30))
    write(src / "images" / "m1.png", png(40, 30, (0, 0, 0)))
    write(src / "annotations" / "m0.xml", xml("m0.png", [CAT, DOG]))
    m = imp(src, "voc", LocalStore(tmp_path / "store")).manifest
    assert [im.file_name for im in m.images] == ["images/m0.png", "images/m1.png"] and len(m.annotations) == 2
    write(src / "Annotations" / "m1.xml", xml("m1.png", [CAT]))
    fails(src, tmp_path / "two", r"annotations/m0.xml: Annotations/ and annotations/ both hold annotations")

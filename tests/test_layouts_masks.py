"""Semantic-segmentation masks (VOC palette PNGs, images/ + masks/ with a class map): import, splits,
the class masks the semantic trainer paints from the version equal to the source masks pixel for pixel."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.formats.masks import VOC_CLASSES, voc_palette
from kubeforge.datasets.importer import ImportResult
from kubeforge.evaluation.segmentation import class_mask
from kubeforge.store import LocalStore

from .test_datasets_formats import imp, png, write


def mask_png(index: np.ndarray, mode: str = "P", colours: list[tuple[int, int, int]] | None = None) -> bytes:
    buf = io.BytesIO()
    if mode == "P":
        img = Image.fromarray(index.astype(np.uint8), mode="P")
        img.putpalette([v for c in voc_palette() for v in c])
    elif mode == "RGB":
        assert colours is not None
        table = np.array([colours[i] if i < len(colours) else (224, 224, 192) for i in range(256)], dtype=np.uint8)
        img = Image.fromarray(table[index])
    else:
        img = Image.fromarray(index.astype(np.uint8), mode="L")
    img.save(buf, format="PNG")
    return buf.getvalue()


def scene(seed: int, h: int = 12, w: int = 16, classes: tuple[int, ...] = (1, 15), void: bool = True) -> np.ndarray:
    """Background with one rectangle per class, each ringed by a 1-pixel void band (as VOC draws it)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w), dtype=np.uint8)
    for k, c in enumerate(classes):
        y0, x0 = int(rng.integers(1, h // 2)), 1 + k * (w // 2)
        y1, x1 = min(h - 1, y0 + int(rng.integers(2, h // 2))), x0 + int(rng.integers(2, w // 2 - 2))
        if void:
            out[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = 255
        out[y0:y1, x0:x1] = c
    return out


def painted(result: ImportResult, file_name: str) -> np.ndarray:
    """What the semantic trainer reads: every class selected, class index = the class's mask index."""
    m = result.manifest
    i = next(k for k, im in enumerate(m.images) if im.file_name == file_name)
    index_of = {c.id: c.id for c in m.categories}
    return class_mask(m.images[i], m.annotations_by_image()[i], index_of)[0]


def voc_masks(root: Path) -> dict[str, np.ndarray]:
    truth = {"2007_000001": scene(1), "2007_000002": scene(2, classes=(8,)), "2007_000003": scene(3, classes=())}
    for stem, index in truth.items():
        write(root / "JPEGImages" / f"{stem}.jpg", png(16, 12))
        write(root / "SegmentationClass" / f"{stem}.png", mask_png(index))
    write(root / "JPEGImages" / "2007_000009.jpg", png(16, 12))  # detection only: not imported
    write(root / "ImageSets/Segmentation/train.txt", "2007_000001\n2007_000003\n")
    write(root / "ImageSets/Segmentation/val.txt", "2007_000002\n")
    write(root / "ImageSets/Segmentation/trainval.txt", "2007_000001\n2007_000002\n2007_000003\n")
    return truth


def test_voc_palette_masks(tmp_path: Path) -> None:
    truth = voc_masks(tmp_path / "src")
    result = imp(tmp_path / "src", "masks", LocalStore(tmp_path / "store"))
    m = result.manifest
    assert m.task == "object-detection"
    assert m.class_names() == list(VOC_CLASSES[1:]) and [c.id for c in m.categories] == list(range(1, 21))
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("JPEGImages/2007_000001.jpg", ["train"]), ("JPEGImages/2007_000002.jpg", ["val"]),
        ("JPEGImages/2007_000003.jpg", ["train"]),
    ]
    for stem, index in truth.items():
        assert np.array_equal(painted(result, f"JPEGImages/{stem}.jpg"), index), stem
    first = [a for a in m.annotations if a.image == 0]
    assert sorted((m.category_name(a.category_id), a.iscrowd) for a in first) == [
        ("aeroplane", 0), ("aeroplane", 1), ("person", 0), ("person", 1)]
    for a in first:
        assert a.area == float((truth["2007_000001"] == (1 if a.category_id == 1 else 15)).sum()) or a.iscrowd
        assert isinstance(a.segmentation, dict) and a.segmentation["size"] == [12, 16]
    assert not [a for a in m.annotations if a.image == 2]  # background and no void: nothing stored
    # the same source gives the same digest
    assert imp(tmp_path / "src", "masks", LocalStore(tmp_path / "store2")).digest == result.digest


def test_images_and_masks_with_colours_and_split_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    write(src / "labelmap.txt", "# label:color_rgb:parts:actions\nbackground:0,0,0::\nroad:255,0,0::\n"
          "car:0,255,0::\nsky:0,0,255::\n")
    truth = {"train/a": scene(4, classes=(1, 2)), "train/sub/b": scene(5, classes=(3,), void=False),
             "val/c": scene(6, classes=(2,))}
    for stem, index in truth.items():
        write(src / "images" / f"{stem}.jpg", png(16, 12))
        write(src / "masks" / f"{stem}.png", mask_png(index, "RGB", colours))
    result = imp(src, "masks", LocalStore(tmp_path / "store"))
    m = result.manifest
    assert m.class_names() == ["road", "car", "sky"]
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("images/train/a.jpg", ["train"]), ("images/train/sub/b.jpg", ["train"]), ("images/val/c.jpg", ["val"])]
    for stem, index in truth.items():
        assert np.array_equal(painted(result, f"images/{stem}.jpg"), index), stem


def test_grey_masks_with_classes_txt_background_by_name(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "classes.txt", "cat\nbackground\ndog\n")  # background is index 1 here
    index = np.ones((12, 16), dtype=np.uint8)
    index[2:6, 2:7] = 0
    index[7:11, 9:15] = 2
    write(src / "images/x.png", png(16, 12))
    write(src / "masks/x.png", mask_png(index, "L"))
    m = imp(src, "masks", LocalStore(tmp_path / "store")).manifest
    assert [(c.id, c.name) for c in m.categories] == [(1, "cat"), (2, "dog")]
    assert sorted((a.category_id, a.bbox, a.area) for a in m.annotations) == [
        (1, [2.0, 2.0, 5.0, 4.0], 20.0), (2, [9.0, 7.0, 6.0, 4.0], 24.0)]


def fails(src: Path, tmp_path: Path, message: str) -> str:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError, match=message) as info:
        imp(src, "masks", store)
    assert list(store.list("datasets/")) == []
    return str(info.value)


def test_defects_are_named(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "images/a.png", png(16, 12))
    index = scene(1, classes=(1,))
    write(src / "masks/a.png", mask_png(index, "L"))
    fails(src, tmp_path / "1", r"no class map; expected labelmap.txt, classes.json, classes.txt or dataset_meta.json")
    write(src / "classes.txt", "background\nroad\n")
    index[0, 3] = 7
    write(src / "masks/a.png", mask_png(index, "L"))
    msg = fails(src, tmp_path / "2", r"masks/a.png: pixel \(x=3, y=0\): class index 7; expected 0..1")
    assert "classes.txt" in msg
    index[0, 3] = 0
    write(src / "masks/a.png", mask_png(index, "RGB", [(0, 0, 0), (9, 9, 9)]))
    fails(src, tmp_path / "3", r"masks/a.png: pixel \(x=\d+, y=\d+\): colour 9,9,9 is no class colour")
    write(src / "masks/a.png", mask_png(index, "L"))
    write(src / "masks/b.png", mask_png(index, "L"))  # no images/b.*
    fails(src, tmp_path / "4", r"images/b.png: file not found \(the image of mask .*masks/b.png\)")
    (src / "masks/b.png").unlink()
    write(src / "images/c.png", png(16, 12))  # no masks/c.png
    fails(src, tmp_path / "5", r"images/c.png: no mask for it \(expected masks/c.png\)")
    (src / "images/c.png").unlink()
    write(src / "images/a.png", png(20, 12))
    fails(src, tmp_path / "6", r"images/a.png: the annotations say 16x12, the image is 20x12")
    write(src / "images/a.png", png(16, 12))
    write(src / "classes.json", '["background", "road", "road"]')
    fails(src, tmp_path / "7", r"classes.json: class 'road' is listed twice")


def test_voc_split_list_names_a_missing_mask(tmp_path: Path) -> None:
    voc_masks(tmp_path / "src")
    write(tmp_path / "src/ImageSets/Segmentation/val.txt", "2007_000002\n2007_000042\n")
    fails(tmp_path / "src", tmp_path, r"val.txt: line 2: '2007_000042' has no mask SegmentationClass/2007_000042.png")
    write(tmp_path / "src/ImageSets/Segmentation/val.txt", "2007_000001\n")
    fails(tmp_path / "src", tmp_path / "b", r"val.txt: line 1: image JPEGImages/2007_000001.jpg: split 'val', "
          r"but it is already in split 'train'")


def test_the_semantic_trainer_reads_the_version(tmp_path: Path) -> None:
    """The semantic trainer's dataset (store as its blob cache) yields the source masks, void as ignored."""
    from kubeforge.models.preprocess import mask_to_image
    from kubeforge_trainers.data import resolve_classes
    from kubeforge_trainers.tasks.semantic import SemanticDataset

    truth = voc_masks(tmp_path / "src")
    m = imp(tmp_path / "src", "masks", LocalStore(tmp_path / "store")).manifest
    names = [im.file_name for im in m.images]
    ds = SemanticDataset(m, names, resolve_classes(m, None), tmp_path / "store", size=16)
    for i, name in enumerate(names):
        image, mask = ds[i]
        assert tuple(image.shape) == (3, 16, 16)
        expected = mask_to_image(truth[name.split("/")[-1][:-4]], 16, 16)
        assert np.array_equal(mask.numpy(), expected), name
    assert ds.stats.crowd == 3 and ds.stats.boxes_filled == 0


def test_classes_json_with_colours(tmp_path: Path) -> None:
    src = tmp_path / "src"
    colours = [(0, 0, 0), (10, 20, 30), (200, 100, 0)]
    write(src / "classes.json", '[{"name": "background", "color": [0, 0, 0]}, {"name": "leaf", "color": [10, 20, 30]},'
          ' {"name": "stem", "color": [200, 100, 0]}]')
    index = scene(7, classes=(1, 2))
    write(src / "images/a.jpg", png(16, 12))
    write(src / "masks/a.png", mask_png(index, "RGB", colours))
    result = imp(src, "masks", LocalStore(tmp_path / "store"))
    assert result.manifest.class_names() == ["leaf", "stem"]
    assert np.array_equal(painted(result, "images/a.jpg"), index)


def test_export_writes_masks_that_import_back_to_the_same_version(tmp_path: Path) -> None:
    from kubeforge.datasets.export import export_version

    src = tmp_path / "src"
    write(src / "classes.txt", "background\nroad\ncar\nsky\n")
    truth = {"train/a": scene(4, classes=(1, 2)), "train/sub/b": scene(5, classes=(3,), void=False),
             "val/c": scene(6, classes=(2,))}
    for stem, index in truth.items():
        write(src / "images" / f"{stem}.png", png(16, 12))
        write(src / "masks" / f"{stem}.png", mask_png(index, "L"))
    store = LocalStore(tmp_path / "store")
    first = imp(src, "masks", store)
    out = tmp_path / "out"
    result = export_version(store, first.manifest.dataset, first.digest, "masks", out)
    assert not result.losses
    assert (out / "classes.txt").read_text() == "background\nroad\ncar\nsky\n"
    assert json.loads((out / "dataset_meta.json").read_text()) == {"labels": ["background", "road", "car", "sky"]}
    for stem, index in truth.items():  # the written PNGs hold the source's class indices, void included
        assert np.array_equal(np.asarray(Image.open(out / "masks" / f"{stem}.png")), index), stem
        assert (out / "images" / f"{stem}.png").is_file()
    again = imp(out, "masks", LocalStore(tmp_path / "store2"))
    assert again.digest == first.digest


def test_export_of_a_classification_version_is_refused(tmp_path: Path) -> None:
    from kubeforge.datasets.export import export_version
    from kubeforge.datasets.formats.tree import ExportError

    for cls in ("cat", "dog"):
        write(tmp_path / "src" / cls / "x.png", png(8, 6))
    store = LocalStore(tmp_path / "store")
    first = imp(tmp_path / "src", "imagefolder", store)
    with pytest.raises(ExportError, match="format masks holds objects' masks"):
        export_version(store, first.manifest.dataset, first.digest, "masks", tmp_path / "out")
    assert not (tmp_path / "out").exists()


DATUMARO_READ = """
    import json, os, sys
    import numpy as np
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset
    ds = Dataset.import_from(sys.argv[1], "common_semantic_segmentation")
    labels = [c.name for c in ds.categories()[AnnotationType.label]]
    items = {}
    for item in ds:
        index = None
        for a in item.annotations:  # one mask per value in the PNG: value = label index
            assert a.type == AnnotationType.mask
            if index is None:
                index = np.full(a.image.shape, -1)
            index[a.image] = a.label
        media = os.path.relpath(item.media.path, sys.argv[1]) if item.media is not None else None
        items[item.id] = {"subset": item.subset, "image": media, "index": index.tolist()}
    print(json.dumps({"labels": labels, "items": items}))
"""


def test_datumaro_reads_the_export(tmp_path: Path) -> None:
    """datumaro's common_semantic_segmentation reads the export as written (dataset_meta.json for the
    classes): each item's mask holds the version's classes at the version's pixels, class by class,
    void as 255. datumaro names an item by its mask's base name and pairs the image of that name
    at the top of images/, so a version without split folders pairs every image."""
    from kubeforge.datasets.export import export_version
    from kubeforge.testing.readers import run_reader

    src = tmp_path / "src"
    write(src / "classes.txt", "background\nroad\ncar\nsky\n")
    truth = {"a": scene(4, classes=(1, 2)), "b": scene(5, classes=(3,), void=False), "c": scene(6, classes=(2,))}
    for stem, index in truth.items():
        write(src / "images" / f"{stem}.png", png(16, 12))
        write(src / "masks" / f"{stem}.png", mask_png(index, "L"))
    store = LocalStore(tmp_path / "store")
    first = imp(src, "masks", store)
    export_version(store, first.manifest.dataset, first.digest, "masks", tmp_path / "out")
    read = run_reader("datumaro", DATUMARO_READ, str(tmp_path / "out"))
    assert read["labels"] == ["background", "road", "car", "sky"]
    assert sorted(read["items"]) == ["a", "b", "c"]
    for stem, index in truth.items():
        item = read["items"][stem]
        assert item["image"] == f"images/{stem}.png"
        assert np.array_equal(np.array(item["index"]), index), stem  # background, each class and void


def test_datumaro_reads_the_masks_of_split_folders(tmp_path: Path) -> None:
    """With split folders datumaro still reads every mask's classes (by base name), not the images."""
    from kubeforge.datasets.export import export_version
    from kubeforge.testing.readers import run_reader

    src = tmp_path / "src"
    write(src / "classes.txt", "background\nroad\ncar\nsky\n")
    truth = {"train/a": scene(4, classes=(1, 2)), "val/c": scene(6, classes=(2, 3))}
    for stem, index in truth.items():
        write(src / "images" / f"{stem}.png", png(16, 12))
        write(src / "masks" / f"{stem}.png", mask_png(index, "L"))
    store = LocalStore(tmp_path / "store")
    first = imp(src, "masks", store)
    export_version(store, first.manifest.dataset, first.digest, "masks", tmp_path / "out")
    read = run_reader("datumaro", DATUMARO_READ, str(tmp_path / "out"))
    for stem, index in truth.items():
        assert np.array_equal(np.array(read["items"][stem.split("/")[1]]["index"]), index), stem


def test_datumaro_dataset_meta_with_colours(tmp_path: Path) -> None:
    """datumaro's common_semantic_segmentation layout: dataset_meta.json (label_map and its colours)."""
    src = tmp_path / "src"
    colours = [(0, 0, 0), (10, 20, 30), (200, 100, 0)]
    write(src / "dataset_meta.json", '{"label_map": {"0": "background", "2": "stem", "1": "leaf"}, '
          '"segmentation_colors": [[0, 0, 0], [10, 20, 30], [200, 100, 0]]}')
    index = scene(7, classes=(1, 2))
    write(src / "images/a.jpg", png(16, 12))
    write(src / "masks/a.png", mask_png(index, "RGB", colours))
    result = imp(src, "masks", LocalStore(tmp_path / "store"))
    assert result.manifest.class_names() == ["leaf", "stem"]
    assert np.array_equal(painted(result, "images/a.jpg"), index)
    write(src / "dataset_meta.json", '{"label_map": {"0": "background", "2": "stem"}}')
    fails(src, tmp_path / "2", r"dataset_meta.json: label_map keys \['0', '2'\]: expected the indices 0..1")
    write(src / "dataset_meta.json", '{"labels": ["background", "leaf", "stem"]}')  # VOC palette colours
    write(src / "masks/a.png", mask_png(index, "RGB", voc_palette()[:3]))
    assert np.array_equal(painted(imp(src, "masks", LocalStore(tmp_path / "s3")), "images/a.jpg"), index)

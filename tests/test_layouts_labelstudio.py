"""Label Studio JSON export: image URLs mapped to the source's files, percent coordinates, brush RLE,
choices (classification, or image tags beside regions), the labeling config as the declared schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.formats.common import rle_to_mask
from kubeforge.datasets.formats.labelstudio import decode_brush, encode_brush
from kubeforge.store import LocalStore

from .test_datasets_formats import imp, png, write


def brush(mask: np.ndarray) -> list[int]:
    return encode_brush(np.repeat(mask.astype(np.uint8).reshape(-1) * 255, 4))


def result(kind: str, value: dict[str, Any], w: int = 20, h: int = 10, name: str = "label") -> dict[str, Any]:
    return {"id": "r", "type": kind, "from_name": name, "to_name": "image", "original_width": w,
            "original_height": h, "image_rotation": 0, "value": value}


MASK = np.zeros((10, 20), dtype=bool)
MASK[4:6, 3:6] = [[False, True, True], [False, False, True]]


def detection_tasks() -> list[dict[str, Any]]:
    return [
        {"id": 11, "data": {"image": "/data/upload/3/1a2b3c4d-a.png", "split": "train"}, "annotations": [
            {"id": 1, "was_cancelled": True, "result": []},
            {"id": 2, "was_cancelled": False, "result": [
                result("rectanglelabels", {"x": 10, "y": 20, "width": 25, "height": 50, "rotation": 0,
                                           "rectanglelabels": ["car"]}),
                result("polygonlabels", {"points": [[50, 10], [70, 10], [70, 50]], "polygonlabels": ["person"]},
                       name="poly"),
                result("brushlabels", {"format": "rle", "rle": brush(MASK), "brushlabels": ["road"]},
                       name="brush"),
                {"id": "c", "type": "choices", "from_name": "weather", "to_name": "image",
                 "value": {"choices": ["night"]}},
            ]}], "predictions": []},
        {"id": 12, "data": {"image": "/data/local-files/?d=datasets/street/sub/b.png"}, "annotations": [
            {"id": 3, "result": [result("rectanglelabels", {"x": 50, "y": 0, "width": 50, "height": 50,
                                                            "rotation": 90, "rectanglelabels": ["car"]})]}]},
        {"id": 13, "data": {"image": "https://example.com/files/c.png"}, "annotations": []},
    ]


CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="car"/><Label value="bus"/></RectangleLabels>
  <PolygonLabels name="poly" toName="image"><Label value="person"/></PolygonLabels>
  <BrushLabels name="brush" toName="image"><Label value="road"/></BrushLabels>
  <Choices name="weather" toName="image"><Choice value="night"/><Choice value="day"/></Choices>
</View>
"""


def source(root: Path, tasks: list[dict[str, Any]], config: str | None = None) -> Path:
    write(root / "export.json", json.dumps(tasks))
    if config is not None:
        write(root / "label_config.xml", config)
    for name in ("upload/a.png", "sub/b.png", "other/c.png"):
        write(root / name, png(20, 10))
    return root


def test_brush_rle_decodes() -> None:
    values = np.array([0, 0, 0, 7, 7, 255, 1], dtype=np.uint8)
    assert decode_brush(encode_brush(values)).tolist() == values.tolist()


def test_labelstudio_detection(tmp_path: Path) -> None:
    m = imp(source(tmp_path / "src", detection_tasks()), "labelstudio", LocalStore(tmp_path / "store")).manifest
    assert m.task == "object-detection"
    assert m.class_names() == ["car", "person", "road"]  # no config: the sorted labels
    assert [(im.file_name, im.tags) for im in m.images] == [
        ("other/c.png", []), ("sub/b.png", []), ("upload/a.png", ["night", "train"])]
    a = {m.category_name(x.category_id): x for x in m.annotations if x.image == 2}
    assert a["car"].bbox == [2.0, 2.0, 5.0, 5.0] and a["car"].segmentation is None
    assert a["person"].segmentation == [[10.0, 1.0, 14.0, 1.0, 14.0, 5.0]]
    assert np.array_equal(rle_to_mask(a["road"].segmentation), MASK) and a["road"].area == 3  # type: ignore[arg-type]
    (rotated,) = [x for x in m.annotations if x.image == 1]
    assert rotated.bbox == [5.0, 0.0, 5.0, 10.0]  # 10x5 at x=10 turned 90 degrees clockwise about its top-left
    # with the config, its label order is the class order (declared, not only used)
    m2 = imp(source(tmp_path / "src2", detection_tasks(), CONFIG), "labelstudio", LocalStore(tmp_path / "s2")).manifest
    assert m2.class_names() == ["car", "bus", "person", "road"]


def test_labelstudio_classification(tmp_path: Path) -> None:
    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{name}"}, "annotations": [{"result": [
        {"type": "choices", "from_name": "c", "to_name": "image", "value": {"choices": [label]}}]}]}
        for i, (name, label) in enumerate([("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat")])]
    m = imp(source(tmp_path / "src", tasks), "labelstudio", LocalStore(tmp_path / "store")).manifest
    assert m.task == "classification" and m.class_names() == ["cat", "dog"]
    assert [(im.file_name, m.category_name(im.category_id)) for im in m.images] == [  # type: ignore[arg-type]
        ("other/c.png", "cat"), ("sub/b.png", "dog"), ("upload/a.png", "cat")]
    tasks[1]["annotations"] = []
    with pytest.raises(DatasetImportError, match=r"sub/b.png: no choice in its task of .*export.json"):
        imp(source(tmp_path / "src", tasks), "labelstudio", LocalStore(tmp_path / "s2"))


def _edit(path: list[Any], value: Any) -> Any:
    def change(tasks: list[dict[str, Any]]) -> None:
        node: Any = tasks
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


R = [0, "annotations", 1, "result"]


@pytest.mark.parametrize(("change", "message"), [
    (_edit([*R, 0, "value", "rectanglelabels"], ["truck"]),
     r"task 11: result 0 \('rectanglelabels'\): label 'truck' is not declared for 'label'; expected one of car, bus"),
    (_edit([*R, 0, "from_name"], "boxes"), r"result 0 .*: from_name 'boxes' is no control of the labeling config"),
    (_edit([*R, 1, "from_name"], "label"), r"result 1 .*: control 'label' is declared as rectanglelabels; "
                                           r"found polygonlabels"),
    (_edit([*R, 0, "type"], "keypointlabels"), r"result 0 .*: type 'keypointlabels' is not supported"),
    (_edit([*R, 0, "value", "x"], "10"), r"result 0 .*: x='10', y=20, width=25, height=50: expected numbers"),
    (_edit([*R, 1, "value", "points"], [[1, 2], [3, 4]]), r"result 1 .*: points: expected 3 or more"),
    (_edit([*R, 2, "value", "rle"], [1, 2, 3]), r"result 2 .*: rle: not Label Studio's brush RLE"),
    (_edit([*R, 0, "original_width"], 21), r"result 1 .*: original size 20x10; the task's other results say 21x10"),
    (_edit([*R, 0, "value", "rectanglelabels"], ["car", "bus"]), r"result 0 .*: 2 labels .*; expected one label"),
    (_edit([1, "data", "image"], "/data/upload/1/../../etc/passwd"), r"task 12: image .*: expected a path inside"),
    (_edit([1, "data"], {"text": "x"}), r"task 12: data: expected 'image'"),
])
def test_labelstudio_defects_are_named(change: Any, message: str, tmp_path: Path) -> None:
    tasks = detection_tasks()
    change(tasks)
    src = source(tmp_path / "src", tasks, CONFIG)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError, match=message) as info:
        imp(src, "labelstudio", store)
    assert "export.json" in str(info.value)
    assert list(store.list("datasets/")) == []


def test_labelstudio_images_missing_or_ambiguous(tmp_path: Path) -> None:
    src = source(tmp_path / "src", detection_tasks())
    write(src / "more/a.png", png(20, 10))  # a second a.png: the upload URL cannot tell which
    write(src / "more/b.png", png(20, 10))  # a second b.png: d=datasets/street/sub/b.png still can
    with pytest.raises(DatasetImportError, match=r"task 11: image '/data/upload/3/1a2b3c4d-a.png': 2 files "
                                                 r"end with a.png \(more/a.png, upload/a.png\); expected one"):
        imp(src, "labelstudio", LocalStore(tmp_path / "s1"))
    (src / "more/a.png").unlink()
    assert imp(src, "labelstudio", LocalStore(tmp_path / "s3")).manifest.images[1].file_name == "sub/b.png"
    (src / "other/c.png").unlink()
    with pytest.raises(DatasetImportError, match=r"src/files/c.png: file not found"):
        imp(src, "labelstudio", LocalStore(tmp_path / "s2"))


def test_labelstudio_size_disagrees_with_the_image(tmp_path: Path) -> None:
    src = source(tmp_path / "src", detection_tasks())
    write(src / "upload/a.png", png(21, 10))
    with pytest.raises(DatasetImportError, match=r"upload/a.png: the annotations say 20x10, the image is 21x10"):
        imp(src, "labelstudio", LocalStore(tmp_path / "store"))


def _round_trip(tmp_path: Path, tasks: list[dict[str, Any]], config: str | None = None) -> None:
    from kubeforge.datasets.export import export_version

    store = LocalStore(tmp_path / "store")
    first = imp(source(tmp_path / "src", tasks, config), "labelstudio", store)
    out = tmp_path / "out"
    export_version(store, first.manifest.dataset, first.digest, "labelstudio", out)
    exported = json.loads((out / "export.json").read_text())
    assert len(exported) == len(first.manifest.images)
    again = imp(out, "labelstudio", LocalStore(tmp_path / "store2"))
    assert again.digest == first.digest
    assert again.manifest.class_names() == first.manifest.class_names()


def test_labelstudio_export_imports_back_to_the_same_version(tmp_path: Path) -> None:
    # rectangles, a rotated box (a polygon), a polygon, a brush mask, choices as tags, a split
    _round_trip(tmp_path, detection_tasks(), CONFIG)


def test_labelstudio_classification_export_round_trip(tmp_path: Path) -> None:
    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{name}", "split": split}, "annotations": [{"result": [
        {"type": "choices", "from_name": "c", "to_name": "image", "value": {"choices": [label]}}]}]}
        for i, (name, label, split) in enumerate([("a.png", "cat", "train"), ("b.png", "dog", "val"),
                                                  ("c.png", "cat", "train")])]
    _round_trip(tmp_path, tasks)

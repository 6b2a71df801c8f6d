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


LS_READ = """
    import json, os, pathlib, sys, tempfile
    root = pathlib.Path(sys.argv[1])
    os.environ["LOCAL_FILES_DOCUMENT_ROOT"] = str(root)  # read at import: /data/local-files/?d= resolves here
    from label_studio_sdk.converter import Converter
    from label_studio_sdk.converter.brush import decode_from_annotation
    from label_studio_sdk.label_interface import LabelInterface
    config = (root / "label_config.xml").read_text()
    interface = LabelInterface(config)
    interface.validate()
    tasks = json.loads((root / "export.json").read_text())
    errors = [e for t in tasks for a in t["annotations"] for i, r in enumerate(a["result"])
              for e in interface.validate_region(r, return_errors=True, region_index=i)]
    converter = Converter(config=config, project_dir=str(root), download_resources=False)
    out = {"errors": errors, "brush": {}, "choices": {}}
    for item in converter.iter_from_json_file(str(root / "export.json")):
        for name, results in item["output"].items():
            for key, mask in decode_from_annotation(name, results).items():
                out["brush"][f"{item['id']}:{key}"] = [[int(y), int(x)] for y, x in zip(*mask.nonzero())]
            out["choices"].update({f"{item['id']}:{name}": r["choices"] for r in results if "choices" in r})
    if any(t in config for t in ("RectangleLabels", "PolygonLabels")):
        coco = tempfile.mkdtemp()
        converter.convert(str(root / "export.json"), coco, "COCO", is_dir=False)
        out["coco"] = json.loads((pathlib.Path(coco) / "result.json").read_text())
        for image in out["coco"]["images"]:  # relative to the COCO folder: as a path of the export
            image["file_name"] = os.path.relpath(os.path.join(coco, image["file_name"]), root)
    print(json.dumps(out))
"""


def test_label_studio_reads_the_export(tmp_path: Path) -> None:
    """Label Studio's SDK reads the export with the config we write: every region validates against
    the labeling config, its COCO converter finds each image (local-files URL) and puts boxes and
    polygons where the version has them, its brush decoder gives the masks' pixels, choices the tags."""
    from kubeforge.datasets.export import export_version
    from kubeforge.testing.readers import run_reader

    store = LocalStore(tmp_path / "store")
    first = imp(source(tmp_path / "src", detection_tasks(), CONFIG), "labelstudio", store)
    m, out = first.manifest, tmp_path / "out"
    export_version(store, m.dataset, first.digest, "labelstudio", out)
    read = run_reader("labelstudio", LS_READ, str(out))
    assert read["errors"] == []
    coco = read["coco"]
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (im.file_name, im.width, im.height) for im in m.images]  # found the image, opened it
    ls_names = {c["id"]: c["name"] for c in coco["categories"]}
    found = sorted((i["image_id"], ls_names[i["category_id"]], i["bbox"], i["segmentation"])
                   for i in coco["annotations"])
    expected = sorted((k, m.category_name(a.category_id), a.bbox, a.segmentation or [])
                      for k, anns in enumerate(m.annotations_by_image()) for a in anns
                      if not isinstance(a.segmentation, dict))
    assert len(found) == len(expected) == 3  # a box, a polygon, the rotated box (a polygon); the brush is apart
    for (k, name, bbox, seg), (k2, name2, bbox2, seg2) in zip(found, expected, strict=True):
        assert (k, name) == (k2, name2)
        assert bbox == pytest.approx(bbox2, abs=1e-6)
        assert [pytest.approx(p, abs=1e-6) for p in seg] == seg2
    a = next(k for k, im in enumerate(m.images) if im.file_name == "upload/a.png")
    assert read["brush"] == {f"{a + 1}:brush-road-0": np.argwhere(MASK).tolist()}
    assert read["choices"] == {f"{a + 1}:tags": ["night"]}


def test_label_studio_reads_the_classification_export(tmp_path: Path) -> None:
    from kubeforge.datasets.export import export_version
    from kubeforge.testing.readers import run_reader

    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{name}"}, "annotations": [{"result": [
        {"type": "choices", "from_name": "c", "to_name": "image", "value": {"choices": [label]}}]}]}
        for i, (name, label) in enumerate([("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat")])]
    store = LocalStore(tmp_path / "store")
    first = imp(source(tmp_path / "src", tasks), "labelstudio", store)
    export_version(store, first.manifest.dataset, first.digest, "labelstudio", tmp_path / "out")
    read = run_reader("labelstudio", LS_READ, str(tmp_path / "out"))
    assert read["errors"] == []
    m = first.manifest
    assert read["choices"] == {f"{k + 1}:class": [m.category_name(im.category_id)]  # type: ignore[arg-type]
                               for k, im in enumerate(m.images)}


LS_BRUSH = """
    import json, sys
    import numpy as np
    from label_studio_sdk.converter.brush import mask2rle
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[4:6, 3:6] = [[0, 255, 255], [0, 0, 255]]
    mask[0, :] = 255  # a long run: Label Studio's encoder picks another run-length size
    print(json.dumps({"rle": [int(v) for v in mask2rle(mask)]}))
"""


def test_a_brush_mask_label_studio_encodes_imports(tmp_path: Path) -> None:
    """Our decoder reads Label Studio's own brush encoder (8-bit words, run sizes 3/4/8/16 bits)."""
    from kubeforge.testing.readers import run_reader

    rle = run_reader("labelstudio", LS_BRUSH)["rle"]
    expected = MASK.copy()
    expected[0, :] = True
    tasks = [{"id": 1, "data": {"image": "/data/upload/3/1a2b3c4d-a.png"}, "annotations": [{"result": [
        result("brushlabels", {"format": "rle", "rle": rle, "brushlabels": ["road"]}, name="brush")]}]}]
    m = imp(source(tmp_path / "src", tasks), "labelstudio", LocalStore(tmp_path / "store")).manifest
    (a,) = m.annotations
    assert np.array_equal(rle_to_mask(a.segmentation), expected)  # type: ignore[arg-type]

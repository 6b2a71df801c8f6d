"""Importing COCO and ImageFolder sources into a store: counts, masks, digests, errors, dedup."""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_coco_eval.core import mask as mask_utils
from PIL import Image

from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder
from kubeforge.datasets.versions import CorruptManifestError, load_manifest
from kubeforge.store import LocalStore, layout


def spec(
    uri: Path | str, fmt: str = "coco", dataset: str = "shapes", source: dict[str, str] | None = None, **extra: Any
) -> DatasetVersionSpec:
    return DatasetVersionSpec.model_validate(
        {"dataset": dataset, "source": {"uri": str(uri), "format": fmt, **(source or {})}, **extra}
    )


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes_coco(root, n_images=8, size=48, seed=5)
    return root


def blob_keys(store: LocalStore) -> list[str]:
    return list(store.list("blobs/"))


def test_coco_import_counts_stats_and_layout(shapes: Path, tmp_path: Path) -> None:
    coco = json.loads((shapes / "annotations.json").read_text())
    store = LocalStore(tmp_path / "store")
    res = import_dataset(spec(shapes), store, progress=False)

    m = res.manifest
    assert res.created and m.task == "object-detection" and m.class_names() == ["circle", "square", "triangle"]
    assert len(m.images) == 8 and len(m.annotations) == len(coco["annotations"])
    assert [im.file_name for im in m.images] == [f"images/{i:06d}.png" for i in range(8)]
    expected = {c["name"]: 0 for c in coco["categories"]}
    for a in coco["annotations"]:
        expected[coco["categories"][a["category_id"] - 1]["name"]] += 1
    assert res.stats.objects_per_class == expected
    assert res.stats.images == 8 and res.stats.annotations == len(coco["annotations"]) and res.stats.classes == 3
    assert res.stats.image_sizes is not None and res.stats.image_sizes.max_width == 48
    assert res.stats.total_bytes == sum(p.stat().st_size for p in (shapes / "images").glob("*.png"))
    # Every image is a blob whose bytes are the source file's.
    for im in m.images:
        assert store.get_blob(im.blob) == (shapes / im.file_name).read_bytes()
    # The manifest key holds bytes that hash to the digest; stats.json sits beside it.
    raw = store.get_bytes(layout.dataset_manifest_key("shapes", res.digest))
    assert hashlib.sha256(raw).hexdigest() == res.digest
    assert store.get_json(layout.dataset_stats_key("shapes", res.digest))["objectsPerClass"] == expected
    assert load_manifest(store, "shapes", res.digest) == m


def test_boxes_polygons_and_rle_survive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "imgs").mkdir(parents=True)
    (src / "imgs" / "a.png").write_bytes(png(20, 10))
    (src / "imgs" / "b.png").write_bytes(png(20, 10, (10, 200, 10)))
    mask = np.zeros((10, 20), dtype=np.uint8, order="F")
    mask[2:6, 3:9] = 1
    compressed = mask_utils.encode(mask)
    rle_str = {"size": [10, 20], "counts": compressed["counts"].decode()}
    flat = mask.flatten(order="F")  # COCO runs go down columns, starting with a run of zeros
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    runs = np.diff(np.concatenate([[0], edges])).tolist()
    rle_list = {"size": [10, 20], "counts": runs}
    assert sum(runs) == 200 and sum(runs[1::2]) == 24
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 20, "height": 10},
                   {"id": 9, "file_name": "b.png", "width": 20, "height": 10}],
        "categories": [{"id": 3, "name": "blob"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 4, 4]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [3, 2, 6, 4],
             "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]], "area": 24},
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [3, 2, 6, 4], "segmentation": rle_str},
            {"id": 4, "image_id": 9, "category_id": 3, "bbox": [3, 2, 6, 4], "segmentation": rle_list,
             "iscrowd": 1},
        ],
    }
    (src / "instances.json").write_text(json.dumps(coco))
    store = LocalStore(tmp_path / "store")
    res = import_dataset(spec(src, source={"images": "imgs"}), store, progress=False)
    m = load_manifest(store, "shapes", res.digest)
    assert [c.id for c in m.categories] == [3] and [im.file_name for im in m.images] == ["imgs/a.png", "imgs/b.png"]
    by_image = m.annotations_by_image()
    box_only, poly = sorted(by_image[0], key=lambda a: a.segmentation is not None)
    assert box_only.bbox == [1.0, 1.0, 4.0, 4.0] and box_only.segmentation is None and box_only.area == 16.0
    assert poly.segmentation == [[3.0, 2.0, 9.0, 2.0, 9.0, 6.0, 3.0, 6.0]] and poly.area == 24.0
    rles = {a.iscrowd: a for a in by_image[1]}
    assert rles[0].segmentation == rle_str and rles[0].area == 24.0  # area computed from the mask
    assert rles[1].segmentation == rle_list and rles[1].iscrowd == 1
    # Both decode back to the original mask (list counts through frPyObjects, as COCO tools do).
    compressed_back = {"size": [10, 20], "counts": rles[0].segmentation["counts"].encode()}
    assert np.array_equal(mask_utils.decode(compressed_back), mask)
    assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(rles[1].segmentation, 10, 20)), mask)


def _shuffled_copy(src: Path, dst: Path, seed: int) -> None:
    """Same files, same content; the JSON lists shuffled and image/annotation ids renumbered."""
    shutil.copytree(src, dst)
    coco = json.loads((src / "annotations.json").read_text())
    rnd = random.Random(seed)
    new_ids = {im["id"]: 1000 + k for k, im in enumerate(rnd.sample(coco["images"], len(coco["images"])))}
    for im in coco["images"]:
        im["id"] = new_ids[im["id"]]
    for a in coco["annotations"]:
        a["image_id"] = new_ids[a["image_id"]]
        a["id"] += 500
    for key in ("images", "annotations", "categories"):
        rnd.shuffle(coco[key])
    (dst / "annotations.json").write_text(json.dumps(coco, indent=1))


def test_digest_is_stable_under_shuffling(shapes: Path, tmp_path: Path) -> None:
    _shuffled_copy(shapes, tmp_path / "shuffled", seed=1)
    a = import_dataset(spec(shapes), LocalStore(tmp_path / "s1"), progress=False)
    b = import_dataset(spec(tmp_path / "shuffled"), LocalStore(tmp_path / "s2"), progress=False)
    assert a.digest == b.digest
    # ...and it follows content: one changed pixel is a new version.
    (tmp_path / "changed").mkdir()
    shutil.copytree(shapes, tmp_path / "changed", dirs_exist_ok=True)
    img = Image.open(tmp_path / "changed" / "images" / "000003.png").convert("RGB")
    img.putpixel((0, 0), (1, 2, 3))
    img.save(tmp_path / "changed" / "images" / "000003.png")
    c = import_dataset(spec(tmp_path / "changed"), LocalStore(tmp_path / "s3"), progress=False)
    assert c.digest != a.digest


def test_imagefolder_import(tmp_path: Path) -> None:
    root = generate_shapes_imagefolder(tmp_path / "if", n_per_class=3, size=32, seed=1)
    (root / "README.txt").write_text("not an image, not in a class folder")
    (root / "square" / "notes.txt").write_text("not an image")
    store = LocalStore(tmp_path / "store")
    res = import_dataset(spec(root, fmt="imagefolder"), store, progress=False)
    m = res.manifest
    assert m.task == "classification" and [(c.id, c.name) for c in m.categories] == [
        (1, "circle"), (2, "square"), (3, "triangle")]
    assert len(m.images) == 9 and not m.annotations
    labels = {im.file_name: m.category_name(im.category_id) for im in m.images if im.category_id is not None}
    assert labels["triangle/0002.png"] == "triangle" and len(labels) == 9
    assert res.stats.images_per_class == {"circle": 3, "square": 3, "triangle": 3} and res.stats.annotations == 9


def _corrupt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    bad = dst / "images" / "000002.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated: the header parses, the pixels do not
    return bad


def test_corrupt_image_fails_naming_the_file(shapes: Path, tmp_path: Path) -> None:
    _corrupt(shapes, tmp_path / "src")
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError, match=r"images/000002\.png: not a readable image"):
        import_dataset(spec(tmp_path / "src"), store, progress=False)
    assert list(store.list("datasets/")) == []  # nothing half-made is visible


def test_corrupt_image_skipped_and_recorded(shapes: Path, tmp_path: Path) -> None:
    _corrupt(shapes, tmp_path / "src")
    coco = json.loads((shapes / "annotations.json").read_text())
    dropped = sum(1 for a in coco["annotations"] if a["image_id"] == 3)  # 000002.png is image id 3
    res = import_dataset(spec(tmp_path / "src", onInvalidImage="Skip"), LocalStore(tmp_path / "s"), progress=False)
    assert [(Path(s.file).name, "not a readable image" in s.reason) for s in res.skipped] == [("000002.png", True)]
    assert len(res.manifest.images) == 7 and len(res.manifest.annotations) == len(coco["annotations"]) - dropped
    assert "images/000002.png" not in {im.file_name for im in res.manifest.images}


def test_missing_file_and_size_mismatch_are_invalid_images(tmp_path: Path) -> None:
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "images" / "a.png").write_bytes(png(8, 8))
    (tmp_path / "src" / "images" / "b.png").write_bytes(png(8, 8))
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8},
                       {"id": 2, "file_name": "b.png", "width": 16, "height": 8},
                       {"id": 3, "file_name": "gone.png"}],
            "categories": [{"id": 1, "name": "x"}], "annotations": []}
    (tmp_path / "src" / "coco.json").write_text(json.dumps(coco))
    res = import_dataset(spec(tmp_path / "src", onInvalidImage="Skip"), LocalStore(tmp_path / "s"), progress=False)
    reasons = {Path(s.file).name: s.reason for s in res.skipped}
    assert reasons["gone.png"] == "file not found" and "16x8" in reasons["b.png"] and len(res.manifest.images) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["annotations"][0].update(image_id=999), r"annotation id 1: image_id 999 is not in 'images'"),
        (lambda c: c["annotations"][1].update(category_id=42), r"annotation id 2: category_id 42 is not in"),
        (lambda c: c["annotations"][2].update(bbox=[1, 2, 3]),
         r"annotation id 3: bbox \[1, 2, 3\]: expected 4 numbers"),
        (lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3]]), r"annotation id 1: segmentation\[0\]"),
        (lambda c: c["annotations"][0].update(segmentation={"size": [48, 48], "counts": [1, 2]}),
         r"annotation id 1: segmentation RLE counts"),
        (lambda c: c["categories"].append({"id": 1, "name": "again"}), r"category id 1 .*duplicate"),
        (lambda c: c["images"][0].update(file_name="../../etc/passwd"), r"image id 1: file_name .*inside the source"),
    ],
)
def test_bad_annotations_name_file_and_entry(shapes: Path, tmp_path: Path, change: Any, message: str) -> None:
    shutil.copytree(shapes, tmp_path / "src")
    coco = json.loads((shapes / "annotations.json").read_text())
    change(coco)
    (tmp_path / "src" / "annotations.json").write_text(json.dumps(coco))
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError, match=message) as info:
        import_dataset(spec(tmp_path / "src"), store, progress=False)
    assert str(tmp_path / "src" / "annotations.json") in str(info.value)
    assert blob_keys(store) == []  # annotations are checked before any image is uploaded


def test_annotations_file_must_be_unambiguous(shapes: Path, tmp_path: Path) -> None:
    shutil.copytree(shapes, tmp_path / "src")
    (tmp_path / "src" / "other.json").write_text("{}")
    with pytest.raises(DatasetImportError, match=r"expected exactly one \*\.json .*annotations.json, other.json"):
        import_dataset(spec(tmp_path / "src"), LocalStore(tmp_path / "s"), progress=False)
    named = spec(tmp_path / "src", source={"annotations": "annotations.json"})
    res = import_dataset(named, LocalStore(tmp_path / "s"), progress=False)
    assert len(res.manifest.images) == 8


def test_dedup_stores_each_image_once(shapes: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    first = import_dataset(spec(shapes), store, progress=False)
    manifest_path = Path(store.url(first.manifest_key))
    mtime = manifest_path.stat().st_mtime_ns
    second = import_dataset(spec(shapes), store, progress=False)
    assert (first.digest, second.created) == (second.digest, False)
    assert manifest_path.stat().st_mtime_ns == mtime  # left alone, not rewritten
    # A second dataset with the same pixels shares the blobs.
    import_dataset(spec(shapes, dataset="shapes-copy"), store, progress=False)
    unique = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (shapes / "images").glob("*.png")}
    assert len(blob_keys(store)) == len(unique) == 8
    assert len(list(store.list("datasets/"))) == 4  # two manifests and two stats files


def test_load_manifest_detects_corruption(shapes: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    res = import_dataset(spec(shapes), store, progress=False)
    key = layout.dataset_manifest_key("shapes", res.digest)
    store.put_bytes(key, store.get_bytes(key).replace(b'"circle"', b'"circlE"'))
    with pytest.raises(CorruptManifestError, match=f"corrupted manifest: its sha256 is .*, expected {res.digest}"):
        load_manifest(store, "shapes", res.digest)
    with pytest.raises(KeyError):
        load_manifest(store, "shapes", "0" * 64)

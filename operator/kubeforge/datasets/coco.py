"""COCO instances JSON -> a detection draft (boxes, polygons, RLE masks, iscrowd).

Which files:
- the annotations file is `source.annotations` (relative to the source root), else the only
  `*.json` at the top of the source;
- an image's file is `<source.images>/<file_name>` when `source.images` is set, else
  `images/<file_name>` when that exists (our synthetic data, many exports), else
  `<file_name>` relative to the root (file names that carry their folder).

Every entry is validated before any image is read; errors name the annotations file, the
entry (image id, annotation id, category id) and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from kubeforge.api.dataset_version import DatasetSource
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage, is_int, is_number
from kubeforge.datasets.formats.common import join_tag
from kubeforge.datasets.manifest import Category
from kubeforge.datasets.sources import Source


def find_annotations_file(source: Source, spec: DatasetSource, files: list[str]) -> str:
    if spec.annotations:
        rel = spec.annotations.strip("/")
        if rel not in files:
            raise DatasetImportError(f"{source.where(rel)}: annotations file (spec.source.annotations) not found")
        return rel
    top = [f for f in files if "/" not in f and f.lower().endswith(".json")]
    if len(top) != 1:
        found = ", ".join(top) if top else "none"
        raise DatasetImportError(
            f"source {source.uri}: expected exactly one *.json at the top for COCO (found: {found}); "
            "name the instances file in spec.source.annotations"
        )
    return top[0]


def parse_coco(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """Also the registry's entry point `parse` (`kubeforge.datasets.formats.registry`)."""
    ann_rel = find_annotations_file(source, spec, files)
    where = source.where(ann_rel)
    try:
        coco = json.loads(source.read(ann_rel))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetImportError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(coco, dict):
        raise DatasetImportError(f"{where}: expected a JSON object with images, annotations, categories")
    for key in ("images", "categories"):
        if not isinstance(coco.get(key), list):
            raise DatasetImportError(f"{where}: expected a list under {key!r}")
    raw_anns = coco.get("annotations", [])  # absent in image-info-only files: no objects
    if not isinstance(raw_anns, list):
        raise DatasetImportError(f"{where}: expected a list under 'annotations'")

    categories = _categories(where, coco["categories"])
    file_set = set(files)
    images = _images(where, coco["images"], spec, file_set)
    by_id = {im.ref: im for im in images}
    cat_ids = {c.id for c in categories}
    annotations = [_annotation(where, i, a, by_id, cat_ids) for i, a in enumerate(raw_anns)]
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations, origin=where)


def _categories(where: str, raw: list[Any]) -> list[Category]:
    out: list[Category] = []
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or not is_int(c.get("id")) or not isinstance(c.get("name"), str) or not c["name"]:
            raise DatasetImportError(f"{where}: categories[{i}]: expected an integer 'id' and a non-empty 'name'")
        if c["id"] in seen_ids or c["name"] in seen_names:
            raise DatasetImportError(f"{where}: category id {c['id']} ({c['name']!r}): duplicate id or name")
        seen_ids.add(c["id"])
        seen_names.add(c["name"])
        sup = c.get("supercategory")
        out.append(Category(id=c["id"], name=c["name"], supercategory=sup if isinstance(sup, str) else None))
    if not out:
        raise DatasetImportError(f"{where}: no categories")
    return out


def _resolve(file_name: str, spec: DatasetSource, files: set[str]) -> str:
    name = file_name.replace("\\", "/").lstrip("/")
    if spec.images:
        return f"{spec.images.strip('/')}/{name}"
    if f"images/{name}" in files:
        return f"images/{name}"
    return name  # missing files are reported (or skipped) when images are read


def _images(where: str, raw: list[Any], spec: DatasetSource, files: set[str]) -> list[DraftImage]:
    out: list[DraftImage] = []
    ids: set[Any] = set()
    paths: dict[str, Any] = {}
    for i, im in enumerate(raw):
        if not isinstance(im, dict) or not (is_int(im.get("id")) or isinstance(im.get("id"), str)):
            raise DatasetImportError(f"{where}: images[{i}]: expected an integer or string 'id'")
        iid = im["id"]
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise DatasetImportError(f"{where}: image id {iid!r}: expected a non-empty 'file_name'")
        for dim in ("width", "height"):
            if dim in im and im[dim] is not None and not (is_int(im[dim]) and im[dim] > 0):
                raise DatasetImportError(f"{where}: image id {iid!r}: expected a positive integer {dim!r}")
        if iid in ids:
            raise DatasetImportError(f"{where}: image id {iid!r}: duplicate id")
        path = _resolve(im["file_name"], spec, files)
        if any(part in ("", ".", "..") for part in path.split("/")):
            raise DatasetImportError(
                f"{where}: image id {iid!r}: file_name {im['file_name']!r}: expected a path inside the source"
            )
        if path in paths:
            raise DatasetImportError(f"{where}: image id {iid!r}: file {path} is also image id {paths[path]!r}")
        ids.add(iid)
        paths[path] = iid
        tags = im.get("tags", [])  # not COCO: what our exporter writes for image tags
        if not (isinstance(tags, list) and all(isinstance(t, str) and t for t in tags)):
            raise DatasetImportError(f"{where}: image id {iid!r}: tags: expected a list of strings")
        out.append(DraftImage(path=path, ref=iid, width=im.get("width"), height=im.get("height"), tags=tags))
    return out


def _annotation(
    where: str, index: int, a: Any, images: dict[Any, DraftImage], cat_ids: set[int]
) -> DraftAnnotation:
    if not isinstance(a, dict):
        raise DatasetImportError(f"{where}: annotations[{index}]: expected an object")
    aid = a.get("id", f"#{index}")
    what = f"{where}: annotation id {aid!r}"
    if a.get("image_id") not in images:
        raise DatasetImportError(f"{what}: image_id {a.get('image_id')!r} is not in 'images'")
    if a.get("category_id") not in cat_ids or not is_int(a.get("category_id")):
        raise DatasetImportError(f"{what}: category_id {a.get('category_id')!r} is not in 'categories'")
    bbox = a.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        raise DatasetImportError(f"{what}: bbox {bbox!r}: expected 4 numbers [x, y, width, height]")
    if bbox[2] < 0 or bbox[3] < 0:
        raise DatasetImportError(f"{what}: bbox {bbox!r}: width and height must not be negative")
    iscrowd = a.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        raise DatasetImportError(f"{what}: iscrowd {iscrowd!r}: expected 0 or 1")
    image = images[a["image_id"]]
    seg = _segmentation(what, a.get("segmentation"), image)
    area = a.get("area")
    if area is not None and not (is_number(area) and area >= 0):
        raise DatasetImportError(f"{what}: area {area!r}: expected a non-negative number")
    if area is None:
        area = _area(seg, bbox)
    attributes = a.get("attributes", {})  # CVAT's COCO: object attributes -> object tags
    if not isinstance(attributes, dict):
        raise DatasetImportError(f"{what}: attributes: expected an object")
    tags = [join_tag(k, v) for k, v in attributes.items() if v is not False and v is not None]
    return DraftAnnotation(
        image_ref=a["image_id"], ref=aid, category_id=a["category_id"], bbox=[float(v) for v in bbox],
        area=float(area), iscrowd=iscrowd, segmentation=seg, tags=tags,
    )


def _segmentation(what: str, seg: Any, image: DraftImage) -> list[list[float]] | dict[str, Any] | None:
    if seg is None or seg == [] or seg == {}:
        return None
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            ok = isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
            if not (ok and all(is_number(v) for v in poly)):
                raise DatasetImportError(
                    f"{what}: segmentation[{k}]: expected a polygon [x1, y1, x2, y2, ...] of 3 or more points"
                )
        return [[float(v) for v in poly] for poly in seg]
    if isinstance(seg, dict):
        return _rle(what, seg, image)
    raise DatasetImportError(f"{what}: segmentation: expected a list of polygons or an RLE object")


def _rle(what: str, seg: dict[str, Any], image: DraftImage) -> dict[str, Any]:
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) and v > 0 for v in size)):
        raise DatasetImportError(f"{what}: segmentation RLE size {size!r}: expected [height, width]")
    if image.height is not None and image.width is not None and size != [image.height, image.width]:
        raise DatasetImportError(
            f"{what}: segmentation RLE size {size} does not match image id {image.ref!r} "
            f"({image.height}x{image.width}, height x width)"
        )
    h, w = size
    if isinstance(counts, list):
        if not all(is_int(v) and v >= 0 for v in counts) or sum(counts) != h * w:
            raise DatasetImportError(
                f"{what}: segmentation RLE counts: expected non-negative run lengths summing to {h}*{w}={h * w}"
            )
        return {"size": [h, w], "counts": list(counts)}
    if isinstance(counts, str) and counts:
        from faster_coco_eval.core import mask as mask_utils

        try:
            decoded = mask_utils.decode({"size": [h, w], "counts": counts.encode()})
        except (ValueError, RuntimeError) as exc:
            raise DatasetImportError(f"{what}: segmentation RLE counts: not a valid compressed RLE ({exc})") from None
        if decoded.shape[:2] != (h, w):
            raise DatasetImportError(f"{what}: segmentation RLE counts: decoded {decoded.shape[:2]}, size says {size}")
        return {"size": [h, w], "counts": counts}
    raise DatasetImportError(f"{what}: segmentation RLE counts: expected a string (compressed) or a list of ints")


def _area(seg: list[list[float]] | dict[str, Any] | None, bbox: list[float]) -> float:
    """COCO's area when the file leaves it out: the mask's, else the box's."""
    if isinstance(seg, list):
        return float(sum(_shoelace(poly) for poly in seg))
    if isinstance(seg, dict):
        counts = seg["counts"]
        if isinstance(counts, list):
            return float(sum(counts[1::2]))  # odd runs are foreground
        from faster_coco_eval.core import mask as mask_utils

        return float(mask_utils.area({"size": seg["size"], "counts": counts.encode()}))
    return float(bbox[2] * bbox[3])


def _shoelace(poly: Iterable[float]) -> float:
    pts = np.asarray(list(poly), dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


parse = parse_coco

"""LabelMe (the `labelme` annotation tool): one JSON per image, beside it or in another folder.

Import:
- every `*.json` in the source is a LabelMe file (an object with `shapes`, `imagePath`,
  `imageHeight`, `imageWidth`); its image is `imagePath` relative to the JSON's folder (`../`
  allowed while it stays inside the source), else the image with the JSON's name beside it.
  `imageData` (the image embedded in the JSON) is not read: the image file must be there.
  Images without a JSON join with no objects;
- classes: `labels.txt` at the top when present (one name a line, in order; labelme2coco's
  `__ignore__` and `_background_` lines are skipped), and then a shape of any other label is an
  error; else the sorted set of the shape labels;
- shapes (`shape_type`, default polygon): `polygon` (3+ points) -> a COCO polygon; `rectangle`
  (2 corners, any order) -> a box; `circle` (centre, a point on the circle) -> a 32-point polygon;
  `mask` (2 corners and a base64 PNG `mask` of that box) -> COCO RLE. `point`, `points`, `line`,
  `linestrip` are refused with an error naming the file and shape: a version holds boxes and regions;
- tags: image `flags` that are true -> image tags; shape `flags` that are true -> object tags, and
  `group_id` -> the object tag `group_id=<n>`;
- split: a first folder `train`, `val`/`valid`, `test` in the image's path.
Lost: `description`, `imageData`, the version field.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import posixpath
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage, is_int, is_number
from kubeforge.datasets.formats.common import (
    is_image,
    join_tag,
    mask_bbox_area,
    mask_to_rle,
    polygon_area,
    polygon_bbox,
    polygons_to_mask,
    rc,
    read_json,
    read_text,
    rle_to_mask,
    set_split,
    split_tag,
)
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

LABELS = "labels.txt"
SKIPPED_LABELS = ("__ignore__", "_background_")
SUPPORTED = ("polygon", "rectangle", "circle", "mask")
CIRCLE_POINTS = 32


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    jsons = [f for f in files if f.lower().endswith(".json")]
    if not jsons:
        raise DatasetImportError(f"source {source.uri}: no *.json files; expected one LabelMe JSON per image")
    declared = _labels(source, files)
    file_set = set(files)
    stems = {f.rsplit(".", 1)[0]: f for f in files if is_image(f)}
    images: list[DraftImage] = []
    objects: list[tuple[str, DraftAnnotation]] = []
    paths: dict[str, str] = {}
    for rel in jsons:
        image, found = _parse_json(source, rel, stems)
        where = source.where(rel)
        if image.path not in file_set:
            image.error = f"file not found (imagePath of {where})"
        if image.path in paths:
            raise DatasetImportError(f"{where}: image {image.path} is also annotated by {paths[image.path]}")
        paths[image.path] = where
        images.append(image)
        objects.extend(found)
    images.extend(DraftImage(path=f, ref=f) for f in files if is_image(f) and f not in paths)
    names = declared if declared is not None else sorted({name for name, _ in objects})
    ids = {name: i + 1 for i, name in enumerate(names)}
    annotations = []
    for name, a in objects:
        if name not in ids:
            raise DatasetImportError(f"{a.where}: {a.ref}: label {name!r} is not in {source.where(LABELS)}; "
                                     f"expected one of {', '.join(names)}")
        a.category_id = ids[name]
        annotations.append(a)
    for image in images:
        if "/" in image.path:
            set_split(image, image.path.split("/")[0], source.where(image.path))
    categories = [Category(id=i, name=n) for n, i in ids.items()]
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations,
                 origin=source.where(jsons[0]))


def _labels(source: Source, files: list[str]) -> list[str] | None:
    if LABELS not in files:
        return None
    names = [line.strip() for line in read_text(source, LABELS).splitlines()]
    names = [n for n in names if n and n not in SKIPPED_LABELS]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise DatasetImportError(f"{source.where(LABELS)}: label {dup!r} is listed twice")
    return names


def _image_path(where: str, rel: str, raw: Any, stems: dict[str, str]) -> str:
    if raw is None or raw == "":
        return stems.get(rel.rsplit(".", 1)[0], rel.rsplit(".", 1)[0] + ".jpg")
    if not isinstance(raw, str):
        raise DatasetImportError(f"{where}: imagePath {raw!r}: expected a path (a string)")
    folder = posixpath.dirname(rel)
    path = posixpath.normpath(posixpath.join(folder, raw.replace("\\", "/")))
    if raw.startswith("/") or path.startswith("../") or path == "..":
        raise DatasetImportError(f"{where}: imagePath {raw!r}: expected a path inside the source "
                                 "(relative to the JSON's folder)")
    return path


def _parse_json(
    source: Source, rel: str, stems: dict[str, str]
) -> tuple[DraftImage, list[tuple[str, DraftAnnotation]]]:
    where = source.where(rel)
    doc = read_json(source, rel)
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise DatasetImportError(f"{where}: expected a LabelMe annotation (an object with 'shapes', 'imagePath', "
                                 "'imageHeight', 'imageWidth')")
    h, w = doc.get("imageHeight"), doc.get("imageWidth")
    if not (is_int(h) and is_int(w) and h > 0 and w > 0):
        raise DatasetImportError(f"{where}: imageHeight {h!r}, imageWidth {w!r}: expected positive integers")
    path = _image_path(where, rel, doc.get("imagePath"), stems)
    image = DraftImage(path=path, ref=path, width=w, height=h, tags=_flags(where, "flags", doc.get("flags")))
    out = []
    for k, shape in enumerate(doc["shapes"]):
        at = f"{where}: shape {k}"
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str) or not shape["label"]:
            raise DatasetImportError(f"{at}: expected an object with a 'label' (a non-empty string)")
        kind = shape.get("shape_type") or "polygon"
        at = f"{at} ({kind} {shape['label']!r})"
        if kind not in SUPPORTED:
            raise DatasetImportError(f"{at}: shape_type {kind!r} is not supported; expected one of "
                                     f"{', '.join(SUPPORTED)} (a version holds boxes and regions, not points or lines)")
        pts = shape.get("points")
        count = {"rectangle": 2, "circle": 2, "mask": 2}.get(kind)
        ok = isinstance(pts, list) and all(
            isinstance(p, list) and len(p) == 2 and all(is_number(v) for v in p) for p in pts)
        if not ok or (count is not None and len(pts) != count) or (count is None and len(pts) < 3):
            raise DatasetImportError(f"{at}: points: expected {count or '3 or more'} [x, y] pairs of numbers")
        if kind == "rectangle":
            (x0, x1), (y0, y1) = sorted((pts[0][0], pts[1][0])), sorted((pts[0][1], pts[1][1]))
            bw, bh = rc(x1 - x0), rc(y1 - y0)
            bbox, area, seg = [rc(x0), rc(y0), bw, bh], rc(bw * bh), None
        elif kind == "mask":
            bbox, area, seg = _mask(at, shape, pts, h, w)
        else:
            if kind == "circle":
                (cx, cy), (px, py) = pts
                r = math.hypot(px - cx, py - cy)
                steps = [2 * math.pi * i / CIRCLE_POINTS for i in range(CIRCLE_POINTS)]
                poly = [rc(v) for t in steps for v in (cx + r * math.cos(t), cy + r * math.sin(t))]
            else:
                poly = [rc(v) for p in pts for v in p]
            bbox, area, seg = polygon_bbox(poly), polygon_area(poly), [poly]
        tags = _flags(at, "flags", shape.get("flags"))
        group = shape.get("group_id")
        if group is not None:
            if not is_int(group):
                raise DatasetImportError(f"{at}: group_id {group!r}: expected an integer or null")
            tags.append(join_tag("group_id", group))
        out.append((shape["label"], DraftAnnotation(
            image_ref=path, ref=f"shape {k}", category_id=0, bbox=bbox, area=area, iscrowd=0, segmentation=seg,
            tags=tags, where=where,
        )))
    return image, out


def _flags(at: str, key: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, dict) or not all(isinstance(v, bool) for v in raw.values()):
        raise DatasetImportError(f"{at}: {key}: expected an object of true/false flags")
    return sorted(k for k, v in raw.items() if v)


def _mask(at: str, shape: dict[str, Any], pts: list[list[float]], h: int, w: int) -> tuple[list[float], float, Any]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(shape.get("mask") or "", validate=True))) as img:
            part = np.asarray(img.convert("L")) > 0
    except (binascii.Error, OSError, ValueError) as exc:
        raise DatasetImportError(f"{at}: mask: expected a base64 PNG ({exc})") from None
    x0, y0 = int(min(p[0] for p in pts)), int(min(p[1] for p in pts))  # as labelme's shape_to_mask
    ph, pw = part.shape
    if x0 < 0 or y0 < 0 or x0 + pw > w or y0 + ph > h:
        raise DatasetImportError(f"{at}: a {pw}x{ph} mask at [{x0}, {y0}] reaches outside the {w}x{h} image")
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y0 + ph, x0:x0 + pw] = part
    bbox, area = mask_bbox_area(mask)
    return bbox, area, mask_to_rle(mask)


def write_labelme(manifest: Manifest, tree: ExportTree) -> None:
    """Each image with `<stem>.json` beside it (labelme 5 layout, `imageData` null).

    Boxes -> rectangles, single polygons -> polygons, masks and multi-part polygons -> `mask` shapes
    (labelme >= 5.3); object tags `name` -> shape flags, `group_id=<n>` -> group_id; image tags ->
    image flags. An image whose split is not its first folder is written under `<split>/`. Lost:
    iscrowd, valued tags other than group_id.
    """
    if manifest.task != "object-detection":
        raise ExportError(f"format labelme holds objects; version {manifest.dataset} is {manifest.task}")
    names = {c.id: c.name for c in manifest.categories}
    tree.text(LABELS, "".join(f"{c.name}\n" for c in sorted(manifest.categories, key=lambda c: c.id)))
    for im, anns in zip(manifest.images, manifest.annotations_by_image(), strict=True):
        rel = im.file_name
        split = next((t for t in im.tags if t in SPLIT_TAGS), None)
        if split and rel.split("/")[0] != split:
            rel = f"{split}/{rel}"
        tree.image(rel, im.blob)
        flags = {t: True for t in im.tags if t != split and "=" not in t}
        if len(flags) != len(im.tags) - (split is not None):
            tree.lose("valued image tags")
        shapes = [_shape(a, names[a.category_id], im.height, im.width, tree) for a in anns]
        doc = {"version": "5.5.0", "flags": flags, "shapes": [s for s in shapes if s is not None],
               "imagePath": posixpath.basename(rel), "imageData": None, "imageHeight": im.height,
               "imageWidth": im.width}
        tree.text(rel.rsplit(".", 1)[0] + ".json", json.dumps(doc, indent=1, ensure_ascii=False))


def _n(v: float) -> float | int:
    v = rc(v)
    return int(v) if v.is_integer() else v


def _shape(a: Any, label: str, h: int, w: int, tree: ExportTree) -> dict[str, Any] | None:
    if a.iscrowd:
        tree.lose("iscrowd")
    flags: dict[str, bool] = {}
    group = None
    for tag in a.tags:
        key, value = split_tag(tag)
        if key == "group_id" and value is not None and value.lstrip("-").isdigit():
            group = int(value)
        elif value is None:
            flags[key] = True
        else:
            tree.lose("valued object tags")
    shape: dict[str, Any] = {"label": label, "group_id": group, "description": "", "flags": flags, "mask": None}
    seg = a.segmentation
    if seg is None:
        x, y, bw, bh = a.bbox
        shape.update(shape_type="rectangle", points=[[_n(x), _n(y)], [_n(x + bw), _n(y + bh)]])
    elif isinstance(seg, list) and len(seg) == 1:
        pts = seg[0]
        shape.update(shape_type="polygon", points=[[_n(pts[i]), _n(pts[i + 1])] for i in range(0, len(pts), 2)])
    else:
        from PIL import Image

        mask = polygons_to_mask(seg, h, w) if isinstance(seg, list) else rle_to_mask(seg)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            tree.lose("empty masks")
            return None
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        buf = io.BytesIO()
        Image.fromarray(mask[y0:y1 + 1, x0:x1 + 1]).save(buf, format="PNG")
        shape.update(shape_type="mask", points=[[x0, y0], [x1, y1]], mask=base64.b64encode(buf.getvalue()).decode())
    return shape

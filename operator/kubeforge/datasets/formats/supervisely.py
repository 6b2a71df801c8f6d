"""Supervisely project format: `meta.json`, and per dataset folder `img/<name>` + `ann/<name>.json`.

Import:
- classes: meta.json `classes[].title`, ids 1..K in that order; an object of another class is an
  error naming its ann file;
- objects (`geometryType`, else the class's `shape`):
  rectangle `points.exterior [[left, top], [right, bottom]]`: inclusive pixel corners, so the box is
  `x = left, w = right - left + 1` (Supervisely's own width);
  polygon `points.exterior` (3+ points) -> a COCO polygon; with `points.interior` holes it cannot
  be a COCO polygon (those are unions), so it becomes the mask (RLE) of exterior minus holes;
  bitmap `{data: base64(zlib(PNG)), origin: [x, y]}` -> the mask placed at origin, as RLE;
  any other geometry (point, polyline, graph...) is an error, never silently dropped;
- tags: image `tags` -> image tags, object `tags` -> object tags, `name` or `name=value`.
Export writes the same layout; the dataset folder is the image's folder (`ds0` for top-level
files). Lost: iscrowd; multi-part polygons become bitmaps.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage, is_number
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
    rle_to_mask,
    split_tag,
)
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

ANN = re.compile(r"^(?:(.*)/)?ann/([^/]+)\.json$")
IMG = re.compile(r"^(?:(.*)/)?img/([^/]+)$")


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    return parse_supervisely(source, files)


def parse_supervisely(source: Source, files: list[str]) -> Draft:
    if "meta.json" not in files:
        raise DatasetImportError(f"source {source.uri}: no meta.json; expected a Supervisely project")
    meta_where = source.where("meta.json")
    meta = read_json(source, "meta.json")
    classes = meta.get("classes") if isinstance(meta, dict) else None
    ok = isinstance(classes, list) and all(isinstance(c, dict) and isinstance(c.get("title"), str) for c in classes)
    if not ok:
        raise DatasetImportError(f"{meta_where}: expected 'classes', a list of objects with a 'title'")
    titles = [c["title"] for c in classes]  # type: ignore[union-attr]
    if len(set(titles)) != len(titles):
        raise DatasetImportError(f"{meta_where}: a class title is listed twice")
    shapes = {c["title"]: c.get("shape") for c in classes}  # type: ignore[union-attr]
    ids = {t: i + 1 for i, t in enumerate(titles)}
    file_set = set(files)
    images: list[DraftImage] = []
    annotations: list[DraftAnnotation] = []
    annotated: set[str] = set()
    for rel in files:
        m = ANN.match(rel)
        if not m:
            continue
        path = f"{m.group(1)}/img/{m.group(2)}" if m.group(1) else f"img/{m.group(2)}"
        annotated.add(path)
        image, objects = _parse_ann(source, rel, path, ids, shapes)
        if path not in file_set:
            image.error = f"file not found (annotated in {source.where(rel)})"
        images.append(image)
        annotations.extend(objects)
    images.extend(DraftImage(path=f, ref=f) for f in files if IMG.match(f) and is_image(f) and f not in annotated)
    if not images:
        raise DatasetImportError(f"source {source.uri}: no <dataset>/img/ images or <dataset>/ann/*.json files")
    categories = [Category(id=i, name=t) for t, i in ids.items()]
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations,
                 origin=meta_where)


def _tags(where: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in raw):
        raise DatasetImportError(f"{where}: tags: expected a list of objects with a 'name'")
    return [join_tag(t["name"], t.get("value")) for t in raw]


def _parse_ann(
    source: Source, rel: str, path: str, ids: dict[str, int], shapes: dict[str, Any]
) -> tuple[DraftImage, list[DraftAnnotation]]:
    where = source.where(rel)
    ann = read_json(source, rel)
    size = ann.get("size") if isinstance(ann, dict) else None
    if not (isinstance(size, dict) and all(isinstance(size.get(k), int) and size[k] > 0 for k in ("width", "height"))):
        raise DatasetImportError(f"{where}: expected 'size' with positive integer 'width' and 'height'")
    w, h = size["width"], size["height"]
    image = DraftImage(path=path, ref=path, width=w, height=h, tags=_tags(where, ann.get("tags")))
    objects = ann.get("objects", [])
    if not isinstance(objects, list):
        raise DatasetImportError(f"{where}: 'objects': expected a list")
    out = []
    for k, obj in enumerate(objects, start=1):
        what = f"{where}: object {k}"
        if not isinstance(obj, dict) or obj.get("classTitle") not in ids:
            title = obj.get("classTitle") if isinstance(obj, dict) else None
            raise DatasetImportError(f"{what}: class {title!r} is not in meta.json classes")
        kind = obj.get("geometryType") or shapes.get(obj["classTitle"])
        if kind == "rectangle":
            bbox, area, seg = _rectangle(what, obj)
        elif kind == "polygon":
            bbox, area, seg = _polygon(what, obj, h, w)
        elif kind == "bitmap":
            bbox, area, seg, outside = _bitmap(what, obj, h, w)
            if outside:
                image.error = f"object {k} in {where}: {outside}"
        else:
            raise DatasetImportError(f"{what}: geometry {kind!r} is not supported (rectangle, polygon, bitmap)")
        out.append(DraftAnnotation(
            image_ref=path, ref=f"object {k}", category_id=ids[obj["classTitle"]], bbox=bbox, area=area,
            iscrowd=0, segmentation=seg, tags=_tags(what, obj.get("tags")), where=where,
        ))
    return image, out


def _points(what: str, raw: Any, minimum: int) -> list[float]:
    ok = isinstance(raw, list) and len(raw) >= minimum
    if not ok or not all(isinstance(p, list) and len(p) == 2 and all(is_number(v) for v in p) for p in raw):
        raise DatasetImportError(f"{what}: expected {minimum} or more [x, y] points")
    return [rc(v) for p in raw for v in p]


def _rectangle(what: str, obj: dict[str, Any]) -> tuple[list[float], float, None]:
    pts = _points(what + ": points.exterior", (obj.get("points") or {}).get("exterior"), 2)
    if len(pts) != 4:
        raise DatasetImportError(f"{what}: rectangle: expected exterior [[left, top], [right, bottom]]")
    x0, x1 = sorted(pts[0::2])
    y0, y1 = sorted(pts[1::2])
    w, h = rc(x1 - x0 + 1), rc(y1 - y0 + 1)
    return [x0, y0, w, h], rc(w * h), None


def _polygon(what: str, obj: dict[str, Any], h: int, w: int) -> tuple[list[float], float, Any]:
    points = obj.get("points") or {}
    exterior = _points(what + ": points.exterior", points.get("exterior"), 3)
    holes = points.get("interior") or []
    if not isinstance(holes, list):
        raise DatasetImportError(f"{what}: points.interior: expected a list of rings")
    if not holes:
        return polygon_bbox(exterior), polygon_area(exterior), [exterior]
    rings = [_points(f"{what}: points.interior[{i}]", r, 3) for i, r in enumerate(holes)]
    mask = polygons_to_mask([exterior], h, w) & ~polygons_to_mask(rings, h, w)
    bbox, area = mask_bbox_area(mask)
    return bbox, area, mask_to_rle(mask)


def decode_bitmap(data: str) -> np.ndarray:
    """Supervisely's bitmap encoding -> bool mask: alpha where the PNG has it, else non-zero pixels."""
    png = zlib.decompress(base64.b64decode(data, validate=True))
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            return np.asarray(img.convert("RGBA"))[:, :, 3] > 0
        return np.asarray(img.convert("L")) > 0


def encode_bitmap(mask: np.ndarray) -> str:
    """As the Supervisely SDK writes it: a 2-colour palette PNG, index 0 transparent, zlib, base64."""
    img = Image.fromarray(mask.astype(np.uint8))
    img.putpalette([0, 0, 0, 255, 255, 255])
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0, optimize=0)
    return base64.b64encode(zlib.compress(buf.getvalue())).decode()


def _bitmap(what: str, obj: dict[str, Any], h: int, w: int) -> tuple[list[float], float, Any, str]:
    bitmap = obj.get("bitmap")
    origin = bitmap.get("origin") if isinstance(bitmap, dict) else None
    if not (isinstance(origin, list) and len(origin) == 2 and all(isinstance(v, int) for v in origin)):
        raise DatasetImportError(f"{what}: bitmap: expected 'data' and an integer 'origin' [x, y]")
    try:
        part = decode_bitmap(bitmap.get("data") or "")
    except (binascii.Error, zlib.error, OSError, ValueError) as exc:
        raise DatasetImportError(f"{what}: bitmap data: not base64 of a zlib-compressed PNG ({exc})") from None
    x, y = origin
    ph, pw = part.shape
    if x < 0 or y < 0 or x + pw > w or y + ph > h:
        outside = f"bitmap at origin [{x}, {y}], {pw}x{ph}, reaches outside the {w}x{h} image"
        return [float(x), float(y), float(pw), float(ph)], 0.0, None, outside
    mask = np.zeros((h, w), dtype=bool)
    mask[y:y + ph, x:x + pw] = part
    bbox, area = mask_bbox_area(mask)
    return bbox, area, mask_to_rle(mask), ""


def _color(i: int) -> str:
    r, g, b = ((i * 97 + 41) % 256, (i * 57 + 173) % 256, (i * 151 + 89) % 256)
    return f"#{r:02X}{g:02X}{b:02X}"


def _place(file_name: str) -> tuple[str, str]:
    """(dataset folder, image name) for a version's file name."""
    m = IMG.match(file_name)
    if m:
        return m.group(1) or "", m.group(2)
    folder, _, name = file_name.rpartition("/")
    return folder.replace("/", "_") or "ds0", name


def write_supervisely(manifest: Manifest, tree: ExportTree) -> None:
    if manifest.task != "object-detection":
        raise ExportError(f"format supervisely is written from objects; version {manifest.dataset} is {manifest.task}")
    names = {c.id: c.name for c in manifest.categories}
    geometry: dict[int, set[str]] = {c.id: set() for c in manifest.categories}
    tags: dict[str, bool] = {}  # tag name -> has a value
    for im, anns in zip(manifest.images, manifest.annotations_by_image(), strict=True):
        folder, name = _place(im.file_name)
        prefix = f"{folder}/" if folder else ""
        tree.image(f"{prefix}img/{name}", im.blob)
        objects = [_object(a, names, im.height, im.width, tree) for a in anns]
        for a, obj in zip(anns, objects, strict=True):
            geometry[a.category_id].add(obj["geometryType"])
        ann = {"description": "", "size": {"height": im.height, "width": im.width},
               "tags": _tag_list(im.tags, tags), "objects": objects}
        for obj in objects:
            obj["tags"] = _tag_list(obj["tags"], tags)
        tree.text(f"{prefix}ann/{name}.json", json.dumps(ann, indent=1, ensure_ascii=False))
    classes = []
    for i, cat in enumerate(sorted(manifest.categories, key=lambda c: c.id)):
        kinds = geometry[cat.id]
        shape = next(iter(kinds)) if len(kinds) == 1 else ("any" if kinds else "rectangle")
        classes.append({"title": cat.name, "shape": shape, "color": _color(i), "geometry_config": {}})
    meta_tags = [{"name": n, "value_type": "any_string" if valued else "none", "color": _color(i + 100),
                  "applicable_type": "all"} for i, (n, valued) in enumerate(sorted(tags.items()))]
    meta = {"classes": classes, "tags": meta_tags, "projectType": "images"}
    tree.text("meta.json", json.dumps(meta, indent=1, ensure_ascii=False))


def _tag_list(raw: list[str], seen: dict[str, bool]) -> list[dict[str, Any]]:
    out = []
    for tag in sorted(set(raw)):
        name, value = split_tag(tag)
        seen[name] = seen.get(name, False) or value is not None
        out.append({"name": name, "value": value})
    return out


def _object(a: Any, names: dict[int, str], h: int, w: int, tree: ExportTree) -> dict[str, Any]:
    obj: dict[str, Any] = {"classTitle": names[a.category_id], "tags": list(a.tags)}
    if a.iscrowd:
        tree.lose("iscrowd")
    seg = a.segmentation
    if isinstance(seg, list) and len(seg) == 1:
        pts = [[_n(seg[0][i]), _n(seg[0][i + 1])] for i in range(0, len(seg[0]), 2)]
        obj.update(geometryType="polygon", points={"exterior": pts, "interior": []})
    elif seg is not None:
        if isinstance(seg, list):
            tree.lose("multi-part polygons (written as bitmaps)")
        mask = polygons_to_mask(seg, h, w) if isinstance(seg, list) else rle_to_mask(seg)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            raise ExportError(f"an object of {names[a.category_id]!r} has an empty mask; Supervisely cannot hold it")
        x0, y0 = int(xs.min()), int(ys.min())
        part = mask[y0:int(ys.max()) + 1, x0:int(xs.max()) + 1]
        obj.update(geometryType="bitmap", bitmap={"data": encode_bitmap(part), "origin": [x0, y0]})
    else:
        x, y, bw, bh = a.bbox
        exterior = [[_n(x), _n(y)], [_n(x + bw - 1), _n(y + bh - 1)]]
        obj.update(geometryType="rectangle", points={"exterior": exterior, "interior": []})
    return obj


def _n(v: float) -> float | int:
    v = rc(v)
    return int(v) if v.is_integer() else v


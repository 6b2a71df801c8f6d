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
- tags: image `tags` -> image tags, object `tags` -> object tags, `name` or `name=value`;
- declared schema first: every object's class, geometry (the class's `shape` unless `any`) and
  tag (name, `value_type`, `values`, `applicable_type`, `classes`) must be declared in meta.json;
- datasets: every `<dataset>/img` + `<dataset>/ann` pair; the annotation of `img/a.jpg` is
  `ann/a.jpg.json`, or `ann/a.json` in older projects;
- splits: a dataset named train/val/valid/test, or an image tag with such a name, records that
  split (one per image: two different ones are an error naming the ann file).
Export: a Supervisely-shaped file name (`<dataset>/img/<name>`) keeps its dataset; other images go
to the dataset of their split (train/val/test), else `ds0`. Lost: iscrowd; multi-part polygons
become bitmaps.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage, is_number
from kubeforge.datasets.formats.common import (
    SPLIT_NAMES,
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
    unique_stems,
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
    for title, shape in shapes.items():
        if shape is not None and shape not in GEOMETRIES and shape not in OTHER_GEOMETRIES:
            raise DatasetImportError(f"{meta_where}: class {title!r}: shape {shape!r} is not a Supervisely geometry")
    schema = _Schema(meta_where, shapes, _tag_metas(meta_where, meta.get("tags")))  # type: ignore[union-attr]
    ids = {t: i + 1 for i, t in enumerate(titles)}
    file_set = set(files)
    images: list[DraftImage] = []
    annotations: list[DraftAnnotation] = []
    annotated: dict[str, str] = {}  # image path -> its ann file
    stems: dict[str, list[str]] = {}
    for f in files:
        if IMG.match(f) and is_image(f):
            stems.setdefault(f.rsplit(".", 1)[0], []).append(f)
    for rel in files:
        m = ANN.match(rel)
        if not m:
            continue
        folder = f"{m.group(1)}/" if m.group(1) else ""
        path = _image_of(source, rel, folder, m.group(2), file_set, stems)
        if path in annotated:
            raise DatasetImportError(f"{source.where(rel)}: image {path} is also annotated by {annotated[path]}")
        annotated[path] = source.where(rel)
        image, objects = _parse_ann(source, rel, path, ids, schema)
        if path not in file_set:
            image.error = f"file not found (annotated in {source.where(rel)})"
        images.append(image)
        annotations.extend(objects)
    images.extend(DraftImage(path=f, ref=f) for f in files if IMG.match(f) and is_image(f) and f not in annotated)
    if not images:
        raise DatasetImportError(f"source {source.uri}: no <dataset>/img/ images or <dataset>/ann/*.json files")
    for image in images:
        _split(source, image, annotated.get(image.path))
    categories = [Category(id=i, name=t) for t, i in ids.items()]
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations,
                 origin=meta_where)


def _image_of(
    source: Source, rel: str, folder: str, name: str, file_set: set[str], stems: dict[str, list[str]]
) -> str:
    """The image `<folder>ann/<name>.json` annotates: `img/<name>` (the standard), else, in older
    projects, `img/<name>.<ext>` (the annotation named after the image without its extension)."""
    path = f"{folder}img/{name}"
    if path in file_set or is_image(name):
        return path
    same = sorted(stems.get(path, []))
    if not same:
        return path  # file not found: the importer names it
    if len(same) > 1:
        raise DatasetImportError(f"{source.where(rel)}: annotates {' and '.join(same)} (named without an extension); "
                                 f"expected ann/<image name>.json")
    return same[0]


def _split(source: Source, image: DraftImage, ann_where: str | None) -> None:
    """The image's split: its dataset folder's name (train, val, valid, test) or a split tag."""
    m = IMG.match(image.path)
    folder = (m.group(1) or "") if m else ""
    found: dict[str, str] = {}
    dataset = folder.rpartition("/")[2]
    if SPLIT_NAMES.get(dataset.lower()):
        found[SPLIT_NAMES[dataset.lower()]] = f"dataset {dataset}"
    tags = []
    for tag in image.tags:
        split = SPLIT_NAMES.get(tag.lower())
        if split:
            found.setdefault(split, f"tag {tag!r}")
        else:
            tags.append(tag)
    if len(found) > 1:
        (a, wa), (b, wb) = sorted(found.items())[:2]
        raise DatasetImportError(f"{ann_where or source.where(image.path)}: image {image.path} is in split {a} ({wa}) "
                                 f"and in split {b} ({wb}); an image has one split")
    image.tags = tags + list(found)


GEOMETRIES = ("rectangle", "polygon", "bitmap")
OTHER_GEOMETRIES = ("any", "point", "line", "polyline", "graph", "cuboid", "cuboid_3d", "point_cloud", "mask_3d",
                    "alpha_mask", "oriented_bbox", "multiView", "closed_surface_mesh", "pointcloud")
VALUE_TYPES = ("none", "any_string", "any_number", "oneof_string")


@dataclass
class _TagMeta:
    value_type: str
    values: list[str]
    applicable: str  # all, imagesOnly, objectsOnly
    classes: list[str]


@dataclass
class _Schema:
    where: str  # meta.json
    shapes: dict[str, Any]
    tags: dict[str, _TagMeta]


def _tag_metas(where: str, raw: Any) -> dict[str, _TagMeta]:
    """meta.json 'tags': the tags the project declares (name, value_type, values, applicable_type)."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise DatasetImportError(f"{where}: 'tags': expected a list")
    out: dict[str, _TagMeta] = {}
    for i, t in enumerate(raw):
        what = f"{where}: tags[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise DatasetImportError(f"{what}: expected an object with a 'name'")
        value_type = t.get("value_type", "none")
        if value_type not in VALUE_TYPES:
            raise DatasetImportError(f"{what} ({t['name']}): value_type {value_type!r}; expected one of "
                                     f"{', '.join(VALUE_TYPES)}")
        values = t.get("values") or []
        if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise DatasetImportError(f"{what} ({t['name']}): 'values': expected a list of strings")
        applicable = t.get("applicable_type", "all")
        if applicable not in ("all", "imagesOnly", "objectsOnly"):
            raise DatasetImportError(f"{what} ({t['name']}): applicable_type {applicable!r}; expected all, "
                                     "imagesOnly or objectsOnly")
        if t["name"] in out:
            raise DatasetImportError(f"{what}: tag {t['name']!r} is declared twice")
        classes = t.get("classes") or []
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise DatasetImportError(f"{what} ({t['name']}): 'classes': expected a list of class titles")
        out[t["name"]] = _TagMeta(value_type, values, applicable, classes)
    return out


def _tags(what: str, raw: Any, schema: _Schema, class_title: str | None = None) -> list[str]:
    """An image's (class_title None) or an object's tags, each checked against meta.json."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in raw):
        raise DatasetImportError(f"{what}: tags: expected a list of objects with a 'name'")
    out = []
    for t in raw:
        name, value = t["name"], t.get("value")
        meta = schema.tags.get(name)
        if meta is None:
            raise DatasetImportError(f"{what}: tag {name!r} is not declared in {schema.where} 'tags'")
        if class_title is None and meta.applicable == "objectsOnly":
            raise DatasetImportError(f"{what}: tag {name!r} is declared for objects only ({schema.where})")
        if class_title is not None and meta.applicable == "imagesOnly":
            raise DatasetImportError(f"{what}: tag {name!r} is declared for images only ({schema.where})")
        if class_title is not None and meta.classes and class_title not in meta.classes:
            raise DatasetImportError(f"{what}: tag {name!r} is declared for classes {meta.classes} only, "
                                     f"not {class_title!r} ({schema.where})")
        expected = {
            "none": value is None,
            "any_string": isinstance(value, str),
            "any_number": is_number(value),
            "oneof_string": isinstance(value, str) and value in meta.values,
        }[meta.value_type]
        if not expected:
            wanted = {"none": "no value", "any_string": "a string", "any_number": "a number",
                      "oneof_string": f"one of {meta.values}"}[meta.value_type]
            raise DatasetImportError(f"{what}: tag {name!r}: value {value!r}; {schema.where} declares "
                                     f"{meta.value_type}: expected {wanted}")
        out.append(join_tag(name, value))
    return out


def _parse_ann(
    source: Source, rel: str, path: str, ids: dict[str, int], schema: _Schema
) -> tuple[DraftImage, list[DraftAnnotation]]:
    where = source.where(rel)
    ann = read_json(source, rel)
    size = ann.get("size") if isinstance(ann, dict) else None
    if not (isinstance(size, dict) and all(isinstance(size.get(k), int) and size[k] > 0 for k in ("width", "height"))):
        raise DatasetImportError(f"{where}: expected 'size' with positive integer 'width' and 'height'")
    w, h = size["width"], size["height"]
    image = DraftImage(path=path, ref=path, width=w, height=h, tags=_tags(f"{where}: image", ann.get("tags"), schema))
    objects = ann.get("objects", [])
    if not isinstance(objects, list):
        raise DatasetImportError(f"{where}: 'objects': expected a list")
    out = []
    for k, obj in enumerate(objects, start=1):
        what = f"{where}: object {k}"
        if not isinstance(obj, dict) or not isinstance(obj.get("classTitle"), str) or obj["classTitle"] not in ids:
            title = obj.get("classTitle") if isinstance(obj, dict) else None
            raise DatasetImportError(f"{what}: class {title!r} is not in meta.json classes")
        title = obj["classTitle"]
        shape = schema.shapes.get(title)
        kind = obj.get("geometryType") or shape
        if kind not in GEOMETRIES:
            raise DatasetImportError(f"{what}: geometry {kind!r} is not supported (rectangle, polygon, bitmap)")
        if shape not in (None, "any", kind):
            raise DatasetImportError(f"{what}: geometry {kind!r}; {schema.where} declares class {title!r} "
                                     f"as {shape!r}")
        if kind == "rectangle":
            bbox, area, seg = _rectangle(what, obj)
        elif kind == "polygon":
            bbox, area, seg = _polygon(what, obj, h, w)
        else:
            bbox, area, seg, outside = _bitmap(what, obj, h, w)
            if outside:
                image.error = f"object {k} in {where}: {outside}"
        out.append(DraftAnnotation(
            image_ref=path, ref=f"object {k}", category_id=ids[title], bbox=bbox, area=area,
            iscrowd=0, segmentation=seg, tags=_tags(what, obj.get("tags"), schema, title), where=where,
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


def _places(manifest: Manifest) -> list[tuple[str, str, str | None]]:
    """(dataset folder, image name, the split the folder carries) per image: a Supervisely-shaped
    file name (`<dataset>/img/<name>`) keeps its dataset; any other image goes to the dataset named
    after its split (train, val, test), else `ds0`, under its file name (made unique there)."""
    out: list[tuple[str, str, str | None]] = []
    loose: dict[str, list[int]] = {}
    for i, im in enumerate(manifest.images):
        m = IMG.match(im.file_name)
        if m and m.group(1):
            dataset = m.group(1)
            out.append((dataset, m.group(2), SPLIT_NAMES.get(dataset.rpartition("/")[2].lower())))
            continue
        splits = [t for t in im.tags if t in SPLIT_TAGS]
        dataset = splits[0] if len(splits) == 1 else "ds0"
        out.append((dataset, "", splits[0] if len(splits) == 1 else None))
        loose.setdefault(dataset, []).append(i)
    taken = {(d, n) for d, n, _ in out if n}
    for dataset, members in loose.items():
        names = unique_stems([manifest.images[i].file_name for i in members], keep_ext=True)
        for i, name in zip(members, names, strict=True):
            while (dataset, name) in taken:  # a Supervisely-shaped image already has that name
                name = "_" + name
            taken.add((dataset, name))
            out[i] = (dataset, name, out[i][2])
    return out


def write_supervisely(manifest: Manifest, tree: ExportTree) -> None:
    if manifest.task != "object-detection":
        raise ExportError(f"format supervisely is written from objects; version {manifest.dataset} is {manifest.task}")
    names = {c.id: c.name for c in manifest.categories}
    geometry: dict[int, set[str]] = {c.id: set() for c in manifest.categories}
    places = _places(manifest)
    tags: dict[str, set[bool]] = {}  # tag name -> {has a value, has none}
    for im, (_, _, split) in zip(manifest.images, places, strict=True):
        for t in im.tags:
            if t != split:
                tags.setdefault(split_tag(t)[0], set()).add("=" in t)
    for a in manifest.annotations:
        for t in a.tags:
            tags.setdefault(split_tag(t)[0], set()).add("=" in t)
    for im, anns, (folder, name, split) in zip(manifest.images, manifest.annotations_by_image(), places, strict=True):
        tree.image(f"{folder}/img/{name}", im.blob)
        objects = [_object(a, names, im.height, im.width, tree) for a in anns]
        for a, obj in zip(anns, objects, strict=True):
            geometry[a.category_id].add(obj["geometryType"])
        image_tags = [t for t in im.tags if t != split]  # the dataset's name says it
        ann = {"description": "", "size": {"height": im.height, "width": im.width},
               "tags": _tag_list(image_tags, tags), "objects": objects}
        for obj in objects:
            obj["tags"] = _tag_list(obj["tags"], tags)
        tree.text(f"{folder}/ann/{name}.json", json.dumps(ann, indent=1, ensure_ascii=False))
    for name, kinds in tags.items():
        if len(kinds) > 1:
            tree.lose(f"tag {name!r} without a value where others have one (written as '')")
    classes = []
    for i, cat in enumerate(sorted(manifest.categories, key=lambda c: c.id)):
        kinds = geometry[cat.id]
        shape = next(iter(kinds)) if len(kinds) == 1 else ("any" if kinds else "rectangle")
        classes.append({"title": cat.name, "shape": shape, "color": _color(i), "geometry_config": {}})
    meta_tags = [{"name": n, "value_type": "any_string" if True in valued else "none", "color": _color(i + 100),
                  "applicable_type": "all", "classes": []} for i, (n, valued) in enumerate(sorted(tags.items()))]
    meta = {"classes": classes, "tags": meta_tags, "projectType": "images"}
    tree.text("meta.json", json.dumps(meta, indent=1, ensure_ascii=False))


def _tag_list(raw: list[str], kinds: dict[str, set[bool]]) -> list[dict[str, Any]]:
    out = []
    for tag in sorted(set(raw)):
        name, value = split_tag(tag)
        if value is None and True in kinds[name]:
            value = ""  # an any_string tag needs a string
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


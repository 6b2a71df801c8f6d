"""CVAT for images 1.1: one `annotations.xml` (task or project export) and the images.

Import:
- the XML: `annotations.xml` at the top, else the only `*.xml` at the top;
- classes: `<meta><task|project><labels><label>` in order (ids 1..K), with each label's `<type>`
  (`any` or empty: every shape) and `<attributes>` (name, input_type, values);
- `<image id name width height subset>`: the file is `images/<name>` beside the XML (CVAT's task
  export), else `images/<subset>/<name>` (project export), else `<name>` beside the XML; `name` may
  hold subfolders. `subset` train/val(idation)/test (any case) is the split tag; any other subset
  but `default` becomes the image tag `subset=<name>`;
- shapes: `<box xtl ytl xbr ybr>` -> the box `[xtl, ytl, xbr - xtl, ybr - ytl]` (CVAT's corners are
  continuous pixel coordinates); a box with `rotation` becomes the polygon of its rotated corners;
  `<polygon points="x,y;x,y;...">` (3+ points) -> a COCO polygon; `<mask rle left top width height>`
  (CVAT's run lengths over the box, row by row, starting with a run of 0s) -> COCO RLE;
  `<tag label>` -> an image tag with the label's name;
- object tags: `occluded` when occluded="1", and each `<attribute name>value</attribute>` as
  `name=value` (`name` when empty), checked against the label's declared attributes
  (select/radio: one of the values; number: a number; checkbox: true/false);
- refused (an error naming the image and shape): `<points>`, `<polyline>`, `<ellipse>`, `<cuboid>`,
  `<skeleton>`: a version holds boxes and regions only, and dropping them silently would hide data.
Lost: z_order, group_id, source, tag attributes; tracks (video exports) are refused.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage
from kubeforge.datasets.formats.common import (
    check_rel,
    finite_float,
    join_tag,
    mask_bbox_area,
    mask_to_rle,
    num,
    polygon_area,
    polygon_bbox,
    polygons_to_mask,
    rc,
    rle_to_mask,
    set_split,
    split_tag,
)
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

SHAPE_TYPES = {"box": "rectangle", "polygon": "polygon", "mask": "mask", "tag": "tag"}
REFUSED = ("points", "polyline", "ellipse", "cuboid", "skeleton")


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    rel = _xml_file(source, files)
    where = source.where(rel)
    try:
        root = ET.fromstring(source.read(rel))
    except ET.ParseError as exc:
        raise DatasetImportError(f"{where}: not valid XML ({exc})") from None
    if root.tag != "annotations":
        raise DatasetImportError(
            f"{where}: expected an <annotations> root element (CVAT for images), found <{root.tag}>"
        )
    if root.find("track") is not None:
        raise DatasetImportError(f"{where}: <track> (CVAT for video) is not supported; export as CVAT for images 1.1")
    labels = _labels(where, root)
    ids = {name: i + 1 for i, name in enumerate(labels)}
    base = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    file_set = set(files)
    images: list[DraftImage] = []
    annotations: list[DraftAnnotation] = []
    paths: dict[str, str] = {}
    for node in root.findall("image"):
        image, found = _image(where, node, labels, ids)
        name = image.path
        candidates = [f"{base}images/{name}", f"{base}{name}"]
        if node.get("subset"):  # a project export: images/<subset>/<name>
            candidates.insert(1, f"{base}images/{node.get('subset')}/{name}")
        image.path = image.ref = next((c for c in candidates if c in file_set), candidates[0])
        if image.path not in file_set:
            image.error = f"file not found (image {name!r} of {where}; expected {' or '.join(candidates)})"
        if image.path in paths:
            raise DatasetImportError(f"{where}: {paths[image.path]} and image {name!r}: two images name one file")
        paths[image.path] = f"image {name!r}"
        for a in found:
            a.image_ref = image.path
        images.append(image)
        annotations.extend(found)
    if not images:
        raise DatasetImportError(f"{where}: no <image> elements")
    categories = [Category(id=i, name=n) for n, i in ids.items()]
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations,
                 origin=where)


def _xml_file(source: Source, files: list[str]) -> str:
    if "annotations.xml" in files:
        return "annotations.xml"
    top = [f for f in files if "/" not in f and f.lower().endswith(".xml")]
    if len(top) != 1:
        found = f"found {', '.join(top)}" if top else "found none"
        raise DatasetImportError(f"source {source.uri}: expected annotations.xml (or one *.xml) at the top; {found}")
    return top[0]


def _labels(where: str, root: ET.Element) -> dict[str, tuple[str, dict[str, tuple[str, list[str]]]]]:
    """label name -> (type, {attribute name: (input_type, values)}), in declared order."""
    nodes = root.findall("meta/task/labels/label") or root.findall("meta/project/labels/label")
    if not nodes:
        raise DatasetImportError(f"{where}: no <meta><task|project><labels><label>; expected the declared labels")
    out: dict[str, tuple[str, dict[str, tuple[str, list[str]]]]] = {}
    for k, label in enumerate(nodes, start=1):
        name = (label.findtext("name") or "").strip()
        if not name:
            raise DatasetImportError(f"{where}: <labels> label {k}: expected a <name>")
        if name in out:
            raise DatasetImportError(f"{where}: <labels>: label {name!r} is declared twice")
        attrs: dict[str, tuple[str, list[str]]] = {}
        for attr in label.findall("attributes/attribute"):
            attr_name = (attr.findtext("name") or "").strip()
            values = [v for v in (attr.findtext("values") or "").split("\n") if v != ""]
            attrs[attr_name] = ((attr.findtext("input_type") or "text").strip(), values)
        out[name] = ((label.findtext("type") or "any").strip() or "any", attrs)
    return out


def _int(what: str, node: ET.Element, key: str, minimum: int) -> int:
    raw = node.get(key)
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = minimum - 1
    if value < minimum:
        raise DatasetImportError(f"{what}: {key}={raw!r}: expected an integer >= {minimum}")
    return value


def _float(what: str, node: ET.Element, key: str) -> float:
    raw = node.get(key)
    value = finite_float(raw)
    if value is None:
        raise DatasetImportError(f"{what}: {key}={raw!r}: expected a number")
    return value


def _image(
    where: str, node: ET.Element, labels: dict[str, tuple[str, dict[str, tuple[str, list[str]]]]], ids: dict[str, int]
) -> tuple[DraftImage, list[DraftAnnotation]]:
    name = node.get("name") or ""
    what = f"{where}: image id {node.get('id')!r} ({name})"
    if not name:
        raise DatasetImportError(f"{where}: image id {node.get('id')!r}: expected a name attribute")
    rel = check_rel(what, "name", name)
    w, h = _int(what, node, "width", 1), _int(what, node, "height", 1)
    image = DraftImage(path=rel, ref=rel, width=w, height=h)
    subset = node.get("subset")
    if subset and not set_split(image, subset, what) and subset != "default":
        image.tags.append(join_tag("subset", subset))
    out = []
    for k, shape in enumerate(node, start=1):
        kind = shape.tag
        label = shape.get("label")
        at = f"{what}: shape {k} (<{kind}> {label})"
        if kind in REFUSED:
            raise DatasetImportError(f"{at}: <{kind}> is not supported; expected box, polygon, mask or tag "
                                     "(a version holds boxes and regions, not points or lines)")
        if kind not in SHAPE_TYPES:
            raise DatasetImportError(f"{at}: unknown element; expected box, polygon, mask or tag")
        if label not in labels:
            raise DatasetImportError(f"{at}: label {label!r} is not declared in <meta> <labels>; "
                                     f"expected one of {', '.join(labels)}")
        declared, attrs = labels[label]
        if declared not in ("any", SHAPE_TYPES[kind]):
            raise DatasetImportError(f"{at}: label {label!r} is declared as type {declared!r}; found a {kind}")
        if kind == "tag":
            image.tags.append(label)
            continue
        if kind == "box":
            bbox, area, seg = _box(at, shape)
        elif kind == "polygon":
            bbox, area, seg = _polygon(at, shape)
        else:
            bbox, area, seg = _mask(at, shape, h, w)
        tags = ["occluded"] if shape.get("occluded") == "1" else []
        tags.extend(_attributes(at, shape, attrs))
        out.append(DraftAnnotation(image_ref=rel, ref=f"image {name!r} shape {k}", category_id=ids[label],
                                   bbox=bbox, area=area, iscrowd=0, segmentation=seg, tags=tags, where=where))
    return image, out


def _attributes(at: str, shape: ET.Element, declared: dict[str, tuple[str, list[str]]]) -> list[str]:
    tags = []
    for attr in shape.findall("attribute"):
        name = attr.get("name") or ""
        value = (attr.text or "").strip()
        if name not in declared:
            raise DatasetImportError(f"{at}: attribute {name!r} is not declared for this label; "
                                     f"expected one of {', '.join(declared) or '(none declared)'}")
        input_type, values = declared[name]
        if input_type in ("select", "radio") and values and value not in values:
            raise DatasetImportError(f"{at}: attribute {name!r} = {value!r}; expected one of {', '.join(values)}")
        if input_type == "checkbox" and value.lower() not in ("true", "false"):
            raise DatasetImportError(f"{at}: attribute {name!r} = {value!r}; expected true or false (checkbox)")
        if input_type == "number":
            try:
                float(value)
            except ValueError:
                raise DatasetImportError(f"{at}: attribute {name!r} = {value!r}; expected a number") from None
        tags.append(join_tag(name, value or None))
    return tags


def _box(at: str, shape: ET.Element) -> tuple[list[float], float, Any]:
    x0, y0, x1, y1 = (_float(at, shape, k) for k in ("xtl", "ytl", "xbr", "ybr"))
    if x1 < x0 or y1 < y0:
        raise DatasetImportError(f"{at}: xbr < xtl or ybr < ytl; expected the top-left and bottom-right corners")
    angle = _float(at, shape, "rotation") if shape.get("rotation") is not None else 0.0
    if angle % 360 == 0:
        w, h = rc(x1 - x0), rc(y1 - y0)
        return [rc(x0), rc(y0), w, h], rc(w * h), None
    # CVAT rotates clockwise (image y points down) around the box centre.
    cx, cy, t = (x0 + x1) / 2, (y0 + y1) / 2, math.radians(angle)
    poly = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        dx, dy = x - cx, y - cy
        poly += [rc(cx + dx * math.cos(t) - dy * math.sin(t)), rc(cy + dx * math.sin(t) + dy * math.cos(t))]
    return polygon_bbox(poly), polygon_area(poly), [poly]


def _polygon(at: str, shape: ET.Element) -> tuple[list[float], float, Any]:
    raw = shape.get("points") or ""
    try:
        pts = [tuple(float(v) for v in p.split(",")) for p in raw.split(";") if p.strip()]
    except ValueError:
        pts = []
    if len(pts) < 3 or any(len(p) != 2 or not all(math.isfinite(v) for v in p) for p in pts):
        raise DatasetImportError(f"{at}: points={raw[:60]!r}: expected 3 or more 'x,y' pairs separated by ';'")
    poly = [rc(v) for p in pts for v in p]
    return polygon_bbox(poly), polygon_area(poly), [poly]


def decode_rle(counts: list[int], width: int, height: int) -> np.ndarray:
    """CVAT's mask runs (0s first, row by row over a width x height box) -> a bool mask."""
    flat = np.zeros(width * height, dtype=bool)
    pos = 0
    for i, n in enumerate(counts):
        if i % 2:
            flat[pos:pos + n] = True
        pos += n
    return flat.reshape(height, width)


def encode_rle(mask: np.ndarray) -> list[int]:
    """A bool mask (the object's box) -> CVAT's runs, 0s first, row by row."""
    flat = mask.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def _mask(at: str, shape: ET.Element, h: int, w: int) -> tuple[list[float], float, Any]:
    left, top = _int(at, shape, "left", 0), _int(at, shape, "top", 0)
    mw, mh = _int(at, shape, "width", 1), _int(at, shape, "height", 1)
    raw = shape.get("rle") or ""
    try:
        counts = [int(v) for v in raw.split(",")]
    except ValueError:
        counts = [-1]
    if any(c < 0 for c in counts) or sum(counts) != mw * mh:
        raise DatasetImportError(f"{at}: rle: expected non-negative run lengths (comma-separated) adding up to "
                                 f"width x height = {mw * mh}; found {raw[:60]!r}")
    if left + mw > w or top + mh > h:
        raise DatasetImportError(f"{at}: mask at left={left}, top={top}, {mw}x{mh} reaches outside the {w}x{h} image")
    mask = np.zeros((h, w), dtype=bool)
    mask[top:top + mh, left:left + mw] = decode_rle(counts, mw, mh)
    bbox, area = mask_bbox_area(mask)
    return bbox, area, mask_to_rle(mask)


def write_cvat(manifest: Manifest, tree: ExportTree) -> None:
    """`annotations.xml` (CVAT for images 1.1, a project: its tasks name the subsets) and
    `images/<name>`; the split is the image's subset (`default` without one).

    Boxes stay boxes, single polygons polygons, masks and multi-part polygons become `<mask>`;
    object tags become attributes (declared as text), `occluded` the occluded flag, image tags that
    are label names `<tag>`s. Lost: iscrowd, other image tags.
    """
    if manifest.task != "object-detection":
        raise ExportError(f"format cvat holds objects; version {manifest.dataset} is {manifest.task}")
    names = {c.id: c.name for c in manifest.categories}
    label_names = set(names.values())
    attrs: dict[int, set[str]] = {c.id: set() for c in manifest.categories}
    for a in manifest.annotations:
        attrs[a.category_id].update(split_tag(t)[0] for t in a.tags if t != "occluded")
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    # A project export (what datumaro reads subsets from): one <task> per subset names the subsets.
    project = ET.SubElement(ET.SubElement(root, "meta"), "project")
    ET.SubElement(project, "id").text = "0"
    ET.SubElement(project, "name").text = manifest.dataset
    labels = ET.SubElement(project, "labels")
    for cat in sorted(manifest.categories, key=lambda c: c.id):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = cat.name
        ET.SubElement(label, "type").text = "any"
        declared = ET.SubElement(label, "attributes")
        for name in sorted(attrs[cat.id]):
            attr = ET.SubElement(declared, "attribute")
            for tag, value in (("name", name), ("mutable", "False"), ("input_type", "text"),
                               ("default_value", ""), ("values", "")):
                ET.SubElement(attr, tag).text = value
    tasks = ET.SubElement(project, "tasks")
    subsets: list[str] = []
    for i, (im, anns) in enumerate(zip(manifest.images, manifest.annotations_by_image(), strict=True)):
        name = im.file_name[len("images/"):] if im.file_name.startswith("images/") else im.file_name
        tree.image(f"images/{name}", im.blob)
        node = ET.SubElement(root, "image", id=str(i), name=name, width=str(im.width), height=str(im.height))
        subset = next((t for t in im.tags if t in SPLIT_TAGS), None)
        labelled = []
        for tag in im.tags:
            key, value = split_tag(tag)
            if key == "subset" and value and subset is None:
                subset = value
            elif tag in label_names:
                labelled.append(tag)
            elif tag != subset:
                tree.lose("image tags that are neither the split nor a label")
        subset = subset or "default"
        node.set("subset", subset)
        if subset not in subsets:
            subsets.append(subset)
        for tag in labelled:
            ET.SubElement(node, "tag", label=tag, source="manual")
        for a in anns:
            _write_object(node, a, names[a.category_id], im.height, im.width, tree)
    for k, subset in enumerate(subsets):
        task = ET.SubElement(tasks, "task")
        for tag, value in (("id", str(k)), ("name", f"{manifest.dataset} {subset}"), ("subset", subset)):
            ET.SubElement(task, tag).text = value
    ET.indent(root)
    tree.text("annotations.xml", '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
              + "\n")


def _write_object(node: ET.Element, a: Any, label: str, h: int, w: int, tree: ExportTree) -> None:
    if a.iscrowd:
        tree.lose("iscrowd")
    seg = a.segmentation
    common = {"label": label, "source": "manual", "occluded": "1" if "occluded" in a.tags else "0", "z_order": "0"}
    if seg is None:
        x, y, bw, bh = a.bbox
        shape = ET.SubElement(node, "box", common, xtl=num(rc(x)), ytl=num(rc(y)), xbr=num(rc(x + bw)),
                              ybr=num(rc(y + bh)))
    elif isinstance(seg, list) and len(seg) == 1:
        pts = seg[0]
        points = ";".join(f"{num(rc(pts[j]))},{num(rc(pts[j + 1]))}" for j in range(0, len(pts), 2))
        shape = ET.SubElement(node, "polygon", common, points=points)
    else:
        mask = polygons_to_mask(seg, h, w) if isinstance(seg, list) else rle_to_mask(seg)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            tree.lose("empty masks")
            return
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        runs = encode_rle(mask[y0:y1 + 1, x0:x1 + 1])
        shape = ET.SubElement(node, "mask", common, rle=", ".join(map(str, runs)), left=str(x0), top=str(y0),
                              width=str(x1 - x0 + 1), height=str(y1 - y0 + 1))
    for tag in sorted(a.tags):
        if tag != "occluded":
            key, value = split_tag(tag)
            ET.SubElement(shape, "attribute", name=key).text = value or ""

"""Pascal VOC: `Annotations/<id>.xml` per image, `JPEGImages/`, `ImageSets/Main/<tag>.txt`.

Import:
- every `Annotations/**/*.xml` is one image: `<filename>` names it inside `JPEGImages/` (else the
  image with the XML's stem); images in `JPEGImages/` without an XML join with no objects;
- boxes: VOC corners are 1-based inclusive pixel indices, so the COCO box is
  `x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1, h = ymax - ymin + 1` (a box on pixel 1..10 is
  10 pixels wide and starts at 0);
- object tags: `difficult`, `truncated`, `occluded` when 1, `pose=<pose>` unless Unspecified,
  and CVAT-style `<attributes><attribute><name>k</name><value>v</value>` as `k=v` (`k` when empty);
- image tags: `ImageSets/Main/<tag>.txt` lists image ids (XML stems); per-class files
  `<class>_<split>.txt` are ignored (they restate the objects);
- classes: `classes.txt` at the top (one name a line; ids 1..K in that order) when present, and
  then an object of any other class is an error; else the sorted object names.
Not read: `SegmentationClass/`, `SegmentationObject/`, `<part>` (person layout).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage
from kubeforge.datasets.formats.common import check_rel, is_image, join_tag, num, rc, read_text, split_tag
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

ANNOTATIONS, IMAGES, SETS, CLASSES = "Annotations/", "JPEGImages/", "ImageSets/Main/", "classes.txt"
FLAGS = ("difficult", "truncated", "occluded")


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    return parse_voc(source, files)


def parse_voc(source: Source, files: list[str]) -> Draft:
    xmls = [f for f in files if f.startswith(ANNOTATIONS) and f.lower().endswith(".xml")]
    if not xmls:
        raise DatasetImportError(f"source {source.uri}: no Annotations/*.xml; expected a Pascal VOC folder")
    declared = _classes(source, files)
    file_set = set(files)
    stems = {f[len(IMAGES):].rsplit(".", 1)[0]: f for f in files if f.startswith(IMAGES) and is_image(f)}
    images: list[DraftImage] = []
    objects: list[tuple[str, DraftAnnotation]] = []  # (class name, object)
    by_id: dict[str, DraftImage] = {}
    paths: dict[str, str] = {}
    for rel in xmls:
        image_id = rel[len(ANNOTATIONS):-4]
        image, found = _parse_xml(source, rel, image_id, stems)
        if image.path not in file_set:
            image.error = f"file not found (named by {source.where(rel)})"
        if image.path in paths:
            raise DatasetImportError(f"{source.where(rel)}: image {image.path} is also named by {paths[image.path]}")
        paths[image.path] = source.where(rel)
        by_id[image_id] = image
        images.append(image)
        objects.extend(found)
    for image_id, path in stems.items():
        if path not in paths and image_id not in by_id:
            by_id[image_id] = DraftImage(path=path, ref=path)
            images.append(by_id[image_id])
    names = declared if declared is not None else sorted({name for name, _ in objects})
    ids = {name: i + 1 for i, name in enumerate(names)}
    annotations = []
    for name, a in objects:
        if name not in ids:
            raise DatasetImportError(f"{a.where}: {a.ref}: class {name!r} is not in {source.where(CLASSES)}")
        a.category_id = ids[name]
        annotations.append(a)
    _image_sets(source, files, by_id, set(names))
    categories = [Category(id=i, name=n) for n, i in ids.items()]
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations,
                 origin=source.where(ANNOTATIONS))


def _classes(source: Source, files: list[str]) -> list[str] | None:
    if CLASSES not in files:
        return None
    names = [line.strip() for line in read_text(source, CLASSES).splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DatasetImportError(f"{source.where(CLASSES)}: a class is listed twice")
    return names


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _number(where: str, node: ET.Element, tag: str) -> float:
    value = _text(node, tag)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetImportError(f"{where}: <{tag}> {value!r}: expected a number") from None


def _parse_xml(
    source: Source, rel: str, image_id: str, stems: dict[str, str]
) -> tuple[DraftImage, list[tuple[str, DraftAnnotation]]]:
    where = source.where(rel)
    try:
        root = ET.fromstring(source.read(rel))
    except ET.ParseError as exc:
        raise DatasetImportError(f"{where}: not valid XML ({exc})") from None
    if root.tag != "annotation":
        raise DatasetImportError(f"{where}: expected an <annotation> root element, found <{root.tag}>")
    filename = _text(root, "filename")
    path = IMAGES + check_rel(where, "<filename>", filename) if filename else stems.get(image_id, "")
    if not path:
        raise DatasetImportError(f"{where}: no <filename> and no JPEGImages/{image_id}.* image")
    size = root.find("size")
    dims = [int(_number(where, size, t)) if size is not None and _text(size, t) else 0 for t in ("width", "height")]
    image = DraftImage(path=path, ref=path, width=dims[0] or None, height=dims[1] or None)
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        what = f"object {k}"
        name = _text(obj, "name")
        if not name:
            raise DatasetImportError(f"{where}: {what}: expected a <name>")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetImportError(f"{where}: {what} ({name}): expected a <bndbox>")
        x0, y0, x1, y1 = (_number(f"{where}: {what}", box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise DatasetImportError(f"{where}: {what} ({name}): xmax < xmin or ymax < ymin")
        w, h = rc(x1 - x0 + 1), rc(y1 - y0 + 1)
        objects.append((name, DraftAnnotation(
            image_ref=path, ref=what, category_id=0, bbox=[rc(x0 - 1), rc(y0 - 1), w, h],
            area=rc(w * h), iscrowd=0, segmentation=None, tags=_object_tags(obj), where=where,
        )))
    return image, objects


def _object_tags(obj: ET.Element) -> list[str]:
    tags = [flag for flag in FLAGS if _text(obj, flag) in ("1", "true", "True")]
    pose = _text(obj, "pose")
    if pose and pose != "Unspecified":
        tags.append(join_tag("pose", pose))
    for attr in obj.findall("attributes/attribute"):
        name = _text(attr, "name")
        if name:
            tags.append(join_tag(name, _text(attr, "value") or None))
    return tags


def _image_sets(source: Source, files: list[str], by_id: dict[str, DraftImage], classes: set[str]) -> None:
    for rel in files:
        if not (rel.startswith(SETS) and rel.endswith(".txt")) or "/" in rel[len(SETS):]:
            continue
        tag = rel[len(SETS):-4]
        if "_" in tag and tag.rsplit("_", 1)[0] in classes:
            continue  # <class>_<split>.txt: per-class membership, implied by the objects
        for n, line in enumerate(read_text(source, rel).splitlines(), start=1):
            image_id = line.split()[0] if line.strip() else ""
            if not image_id:
                continue
            if image_id not in by_id:
                raise DatasetImportError(
                    f"{source.where(rel)}: line {n}: image {image_id!r} has no Annotations/{image_id}.xml "
                    f"or JPEGImages/{image_id}.*"
                )
            by_id[image_id].tags.append(tag)


def write_voc(manifest: Manifest, tree: ExportTree) -> None:
    """The version as a VOC folder; segmentation masks and polygons are lost (boxes only)."""
    if manifest.task != "object-detection":
        raise ExportError(f"format voc holds objects; version {manifest.dataset} is {manifest.task}")
    names = {c.id: c.name for c in manifest.categories}
    tree.text(CLASSES, "".join(f"{c.name}\n" for c in manifest.categories))
    sets: dict[str, list[str]] = {}
    ids: dict[str, str] = {}
    for im, anns in zip(manifest.images, manifest.annotations_by_image(), strict=True):
        rel = im.file_name[len(IMAGES):] if im.file_name.startswith(IMAGES) else im.file_name
        image_id = rel.rsplit(".", 1)[0]
        if image_id in ids:
            raise ExportError(f"{im.file_name} and {ids[image_id]}: VOC names images by file name without extension")
        ids[image_id] = im.file_name
        tree.image(IMAGES + rel, im.blob)
        tree.text(f"{ANNOTATIONS}{image_id}.xml", _xml(rel, im.width, im.height, anns, names, tree))
        for tag in im.tags:
            if "/" in tag or tag.startswith("."):
                tree.lose("image tags that are not file names")
                continue
            sets.setdefault(tag, []).append(image_id)
    for tag, members in sorted(sets.items()):
        tree.text(f"{SETS}{tag}.txt", "".join(f"{m}\n" for m in sorted(members)))


def _xml(rel: str, width: int, height: int, anns: list[Any], names: dict[int, str], tree: ExportTree) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = rel
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for a in anns:
        if a.segmentation is not None:
            tree.lose("masks and polygons (VOC keeps the box)")
        if a.iscrowd:
            tree.lose("iscrowd")
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[a.category_id]
        tags = dict(split_tag(t) for t in a.tags)
        ET.SubElement(obj, "pose").text = tags.pop("pose", None) or "Unspecified"
        for flag in FLAGS:
            if flag in tags or flag != "occluded":
                ET.SubElement(obj, flag).text = "1" if tags.pop(flag, False) is None else "0"
        box = ET.SubElement(obj, "bndbox")
        x, y, w, h = a.bbox
        for tag, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = num(rc(value))
        if tags:
            attrs = ET.SubElement(obj, "attributes")
            for name, value in sorted(tags.items()):
                attr = ET.SubElement(attrs, "attribute")
                ET.SubElement(attr, "name").text = name
                ET.SubElement(attr, "value").text = value or ""
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"

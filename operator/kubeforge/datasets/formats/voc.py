"""Pascal VOC: the standard tree and flat exports (each XML beside its image).

Layouts (see docs/datasets.md, "Pascal VOC"):
- standard tree: `Annotations/<id>.xml`, `JPEGImages/<id>.jpg`, `ImageSets/Main/<split>.txt`, at
  the top or under any folder (`VOC2012/`, `VOCdevkit/VOC2007/`; several such roots are one
  version); `<filename>` names the image inside `JPEGImages/` (else the image with the XML's stem);
  images in `JPEGImages/` without an XML join with no objects;
- flat: any other `*.xml` is an annotation of the image beside it (`<filename>`, else the same
  stem); images in a folder that holds such XMLs join without objects; a folder named
  train/val/valid/test on the way records that split (Roboflow's VOC export).
Boxes: VOC corners are 1-based inclusive pixel indices, so the COCO box is
`x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1, h = ymax - ymin + 1`.
Object tags: `difficult`, `truncated`, `occluded` when 1, `pose=<pose>` unless Unspecified, and
CVAT-style `<attributes><attribute><name>k</name><value>v</value>` as `k=v` (`k` when empty).
Splits: `ImageSets/Main/<split>.txt` and `ImageSets/Segmentation/<split>.txt` (train, val, test;
valid -> val) tag their images; `trainval.txt` adds nothing when train and val lists exist (then
each of its images must be in one of them), else it is the tag `trainval`; any other
`ImageSets/Main/<tag>.txt` is an image tag; per-class `<class>_<split>.txt` lists are ignored
(they restate the objects), and so is datumaro's `default.txt` (images without a subset). An
image in two different split lists is an error naming both.
Classes (the declared schema): `labelmap.txt` (`name:r,g,b:parts:actions`, a first `background`
line is the void class 0) or `classes.txt` (one name a line), at the top or at a root: ids 1..K in
that order, and then an object of any other class is an error; else the sorted object names.
Segmentation: `SegmentationObject/<id>.png` holds the instance index per pixel (object k of the
XML is index k; 0 background, 255 void) and `SegmentationClass/<id>.png` the class index (the
label map's order, else VOC's 20 classes); each object's pixels become its COCO RLE
`segmentation` (area = pixel count), and their class must be the object's class.
Not read: `<part>` (person layout), ImageSets/Layout and Action.
Export (`write_voc`): the flat canonical layout datumaro and supervision read, whatever the
source's folders: `JPEGImages/<id>.<ext>` and `Annotations/<id>.xml` by image id,
`ImageSets/Main/<split>.txt` (`default.txt` for images without one), `labelmap.txt`, and the
segmentation PNGs for images whose objects have masks.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage
from kubeforge.datasets.formats.common import (
    SPLIT_NAMES,
    check_rel,
    finite_float,
    is_image,
    join_tag,
    list_ids,
    num,
    rc,
    read_text,
    split_tag,
    unique_stems,
)
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    import numpy as np

    from kubeforge.api.dataset_version import DatasetSource

ANNOTATIONS, IMAGES, SETS, CLASSES = "Annotations/", "JPEGImages/", "ImageSets/Main/", "classes.txt"
LABELMAP = "labelmap.txt"
SEG_SETS, SEG_CLASS, SEG_OBJECT = "ImageSets/Segmentation/", "SegmentationClass/", "SegmentationObject/"
FLAGS = ("difficult", "truncated", "occluded")
SPLITS = SPLIT_TAGS
DEFAULT = "default"  # datumaro's list of the images without a split: not a tag
VOID = 255
# VOC's own classes, in the order of SegmentationClass indices 1..20 (0 is background).
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def voc_color(i: int) -> tuple[int, int, int]:
    """Colour `i` of the VOC palette (the colours of SegmentationClass/SegmentationObject PNGs)."""
    r = g = b = 0
    for j in range(8):
        r |= ((i >> 0) & 1) << (7 - j)
        g |= ((i >> 1) & 1) << (7 - j)
        b |= ((i >> 2) & 1) << (7 - j)
        i >>= 3
    return r, g, b


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    return parse_voc(source, files)


@dataclass
class _Labels:
    names: list[str] | None  # declared class names (ids 1..K), None when nothing is declared
    where: str = ""  # the file that declares them
    seg_index: dict[int, str] = field(default_factory=dict)  # SegmentationClass index -> class name


@dataclass
class _Image:
    image: DraftImage
    image_id: str  # the id ImageSets lists name (the XML's path inside Annotations/, no extension)
    xml: str = ""  # its XML (full location), when it has one
    objects: list[tuple[str, DraftAnnotation]] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)  # split -> "where: line n" that says so


def _root_of(rel: str) -> tuple[str, str] | None:
    """('' or 'a/b/', 'Annotations/') when `rel` lies under 'a/b/Annotations/' (any case: Kaggle's
    `annotations/` + `images/` too), else None; the last such folder counts."""
    parts = rel.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "annotations":
            return ("/".join(parts[:i]) + "/" if i else ""), parts[i] + "/"
    return None


def _image_dir(files: list[str], root: str) -> str:
    """A root's image folder: JPEGImages/, else images/ (any case) when only that exists."""
    tops = {f[len(root):].split("/", 1)[0] for f in files if f.startswith(root) and "/" in f[len(root):]}
    if "JPEGImages" in tops:
        return IMAGES
    return next((t + "/" for t in sorted(tops) if t.lower() in ("jpegimages", "images")), IMAGES)


def parse_voc(source: Source, files: list[str]) -> Draft:
    xmls = [f for f in files if f.lower().endswith(".xml")]
    if not xmls:
        raise DatasetImportError(
            f"source {source.uri}: no Annotations/*.xml and no *.xml beside images; expected a Pascal VOC folder")
    file_set = set(files)
    roots: dict[str, list[str]] = {}
    ann_dirs: dict[str, str] = {}
    flat: list[str] = []
    for rel in xmls:
        found = _root_of(rel)
        if found is None:
            flat.append(rel)
            continue
        root, ann_dir = found
        if ann_dirs.setdefault(root, ann_dir) != ann_dir:
            raise DatasetImportError(f"{source.where(rel)}: {root}{ann_dirs[root]} and {root}{ann_dir} both hold "
                                     "annotations; expected one Annotations/ folder")
        roots.setdefault(root, []).append(rel)
    labels = _labels(source, file_set, sorted(roots))
    entries: list[_Image] = []
    paths: dict[str, str] = {}  # image path -> the XML that names it

    def add(entry: _Image) -> None:
        path = entry.image.path
        if entry.xml:
            if path in paths:
                raise DatasetImportError(f"{entry.xml}: image {path} is also named by {paths[path]}")
            paths[path] = entry.xml
        entries.append(entry)

    for root in sorted(roots):
        prefix = root + _image_dir(files, root)
        stems = {f[len(prefix):].rsplit(".", 1)[0]: f for f in files if f.startswith(prefix) and is_image(f)}
        by_id: dict[str, _Image] = {}
        for rel in sorted(roots[root]):
            image_id = rel[len(root + ann_dirs[root]):-4]
            entry = _parse_xml(source, rel, image_id, prefix, file_set, stems.get(image_id))
            by_id[image_id] = entry
            add(entry)
        for image_id, path in stems.items():
            if image_id not in by_id and path not in paths:
                by_id[image_id] = _Image(DraftImage(path=path, ref=path), image_id)
                add(by_id[image_id])
        _masks(source, files, root, by_id, labels)
        _image_sets(source, files, root, by_id, labels)
    _flat(source, files, flat, file_set, add)
    images, objects = [], []
    for entry in entries:
        _one_split(source, entry)
        images.append(entry.image)
        objects.extend(entry.objects)
    names = labels.names if labels.names is not None else sorted({name for name, _ in objects})
    ids = {name: i + 1 for i, name in enumerate(names)}
    annotations = []
    for name, a in objects:
        if name not in ids:
            raise DatasetImportError(f"{a.where}: {a.ref}: class {name!r} is not in {labels.where}")
        a.category_id = ids[name]
        annotations.append(a)
    categories = [Category(id=i, name=n) for n, i in ids.items()]
    origin = source.where(sorted(roots)[0] + ann_dirs[sorted(roots)[0]]) if roots else source.where(flat[0])
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations,
                 origin=origin)


def _labels(source: Source, file_set: set[str], roots: list[str]) -> _Labels:
    """The declared label map: labelmap.txt, else classes.txt, at the top, else at a root."""
    for root in ["", *roots]:
        for name in (LABELMAP, CLASSES):
            rel = root + name
            if rel not in file_set:
                continue
            where = source.where(rel)
            names: list[str] = []
            seen: dict[str, int] = {}
            for n, line in enumerate(read_text(source, rel).splitlines(), start=1):
                text = line.strip()
                if not text or (name == LABELMAP and text.startswith("#")):
                    continue
                label = text.split(":", 1)[0].strip() if name == LABELMAP else text
                if not label:
                    raise DatasetImportError(f"{where}: line {n}: expected a class name")
                if name == LABELMAP and label == "background" and not seen:
                    seen[label] = n
                    continue
                if label in seen:
                    raise DatasetImportError(
                        f"{where}: line {n}: class {label!r} is already listed on line {seen[label]}")
                seen[label] = n
                names.append(label)
            # Segmentation index i is class i (0: background, whether or not a line says so).
            return _Labels(names, where, {i + 1: n for i, n in enumerate(names)})
    return _Labels(None, "", {i + 1: n for i, n in enumerate(VOC_CLASSES)})


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _number(where: str, node: ET.Element, tag: str) -> float:
    value = _text(node, tag)
    number = finite_float(value)
    if number is None:
        raise DatasetImportError(f"{where}: <{tag}> {value!r}: expected a number")
    return number


def _size(where: str, root: ET.Element) -> tuple[int | None, int | None]:
    size = root.find("size")
    dims: list[int | None] = []
    for tag in ("width", "height"):
        value = _text(size, tag)
        if not value:
            dims.append(None)
            continue
        number = _number(f"{where}: <size>", size, tag)  # type: ignore[arg-type]
        if number < 0 or not number.is_integer():
            raise DatasetImportError(f"{where}: <size> <{tag}> {value!r}: expected a whole number of pixels")
        dims.append(int(number) or None)  # 0: the size is not given (some tools write 0 0)
    return dims[0], dims[1]


def _parse_xml(source: Source, rel: str, image_id: str, images: str, file_set: set[str], stem: str | None) -> _Image:
    """One XML of the standard tree; its image is inside `images` (`<root>JPEGImages/`)."""
    where = source.where(rel)
    tree = _read_xml(source, rel)
    filename = _text(tree, "filename")
    path = images + check_rel(where, "<filename>", filename) if filename else stem or ""
    if filename and path not in file_set and stem:
        path = stem  # <filename> is stale (renamed image): the image with the XML's id
    if not path:
        raise DatasetImportError(f"{where}: no <filename> and no {images}{image_id}.* image")
    entry = _entry(source, rel, tree, path, image_id)
    if path not in file_set:
        entry.image.error = f"file not found (named by {where})"
    return entry


def _read_xml(source: Source, rel: str) -> ET.Element:
    where = source.where(rel)
    try:
        tree = ET.fromstring(source.read(rel))
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: an unknown encoding
        raise DatasetImportError(f"{where}: not valid XML ({type(exc).__name__}: {exc})") from None
    if tree.tag != "annotation":
        raise DatasetImportError(f"{where}: expected an <annotation> root element, found <{tree.tag}>")
    return tree


def _entry(source: Source, rel: str, tree: ET.Element, path: str, image_id: str) -> _Image:
    where = source.where(rel)
    width, height = _size(where, tree)
    image = DraftImage(path=path, ref=path, width=width, height=height)
    entry = _Image(image, image_id, xml=where)
    for k, obj in enumerate(tree.findall("object"), start=1):
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
        entry.objects.append((name, DraftAnnotation(
            image_ref=path, ref=what, category_id=0, bbox=[rc(x0 - 1), rc(y0 - 1), w, h],
            area=rc(w * h), iscrowd=0, segmentation=None, tags=_object_tags(f"{where}: {what}", obj), where=where,
        )))
    return entry


def _object_tags(what: str, obj: ET.Element) -> list[str]:
    tags = []
    for flag in FLAGS:
        value = _text(obj, flag)
        if value in (None, "", "0", "false", "False"):
            continue
        if value not in ("1", "true", "True"):
            raise DatasetImportError(f"{what}: <{flag}> {value!r}: expected 0 or 1")
        tags.append(flag)
    pose = _text(obj, "pose")
    if pose and pose != "Unspecified":
        tags.append(join_tag("pose", pose))
    for attr in obj.findall("attributes/attribute"):
        name = _text(attr, "name")
        if name:
            tags.append(join_tag(name, _text(attr, "value") or None))
    return tags


def _flat(source: Source, files: list[str], xmls: list[str], file_set: set[str], add: Any) -> None:
    """XMLs beside their images (LabelImg, Roboflow): the image is `<filename>` in the XML's folder."""
    if not xmls:
        return
    folders = {rel.rpartition("/")[0] for rel in xmls}
    stems: dict[str, str] = {}
    for f in files:
        if is_image(f) and f.rpartition("/")[0] in folders:
            stems.setdefault(f.rsplit(".", 1)[0], f)
    named: set[str] = set()
    for rel in sorted(xmls):
        where = source.where(rel)
        tree = _read_xml(source, rel)
        folder = rel.rpartition("/")[0]
        prefix = folder + "/" if folder else ""
        filename = _text(tree, "filename")
        stem = stems.get(rel[:-4])
        path = ""
        if filename:
            inside = check_rel(where, "<filename>", filename)
            for candidate in (prefix + inside, prefix + inside.rpartition("/")[2]):
                if candidate in file_set:
                    path = candidate
                    break
            else:
                path = stem or prefix + inside.rpartition("/")[2]
        elif stem:
            path = stem
        else:
            raise DatasetImportError(f"{where}: no <filename> and no {rel[:-4]}.* image beside it")
        entry = _entry(source, rel, tree, path, rel[:-4])
        if path not in file_set:
            entry.image.error = f"file not found (named by {where})"
        _folder_split(where, path, entry)
        named.add(path)
        add(entry)
    for path in sorted(set(stems.values()) - named):
        entry = _Image(DraftImage(path=path, ref=path), path.rsplit(".", 1)[0])
        _folder_split(source.where(path), path, entry)
        add(entry)


def _folder_split(where: str, path: str, entry: _Image) -> None:
    for part in path.split("/")[:-1]:
        split = SPLIT_NAMES.get(part.lower())
        if split:
            entry.splits.setdefault(split, f"{where} (folder {part}/)")


def _image_sets(source: Source, files: list[str], root: str, by_id: dict[str, _Image], labels: _Labels) -> None:
    classes = set(labels.names or []) | {name for e in by_id.values() for name, _ in e.objects}
    for folder in (SETS, SEG_SETS):
        prefix = root + folder
        lists = {f[len(prefix):-4]: f for f in files
                 if f.startswith(prefix) and f.endswith(".txt") and "/" not in f[len(prefix):]}
        has_both = "train" in lists and "val" in lists
        members: dict[str, dict[str, int]] = {}  # list name -> image id -> line
        for tag, rel in sorted(lists.items()):
            if "_" in tag and tag.rsplit("_", 1)[0] in classes:
                continue  # <class>_<split>.txt: per-class membership, implied by the objects
            split = SPLIT_NAMES.get(tag.lower())
            if tag == DEFAULT:
                split = None  # datumaro's images without a subset: checked, not a tag
            elif folder == SEG_SETS and split is None and tag != "trainval":
                continue  # only split lists matter for segmentation
            where = source.where(rel)
            listed = members.setdefault(tag, {})
            for n, image_id in list_ids(source, rel):
                entry = by_id.get(image_id)
                if entry is None:
                    raise DatasetImportError(
                        f"{where}: line {n}: image {image_id!r} has no {root}{ANNOTATIONS}{image_id}.xml "
                        f"or {root}{IMAGES}{image_id}.*"
                    )
                listed.setdefault(image_id, n)
                if split:
                    entry.splits.setdefault(split, f"{where} (line {n})")
                elif tag == DEFAULT or (tag == "trainval" and has_both):
                    pass  # trainval: checked below (train and val say more)
                elif folder == SETS:
                    entry.image.tags.append(tag)
        if has_both and "trainval" in members:
            split_members = {**members.get("train", {}), **members.get("val", {})}
            for image_id, n in members["trainval"].items():
                if image_id not in split_members:
                    raise DatasetImportError(
                        f"{source.where(lists['trainval'])}: line {n}: image {image_id!r} is in neither "
                        f"{source.where(lists['train'])} nor {source.where(lists['val'])}")


def _one_split(source: Source, entry: _Image) -> None:
    if len(entry.splits) > 1:
        (a, wa), (b, wb) = sorted(entry.splits.items())[:2]
        raise DatasetImportError(
            f"{source.where(entry.image.path)}: image {entry.image_id!r} is in split {a} ({wa}) and in split {b} "
            f"({wb}); an image has one split")
    entry.image.tags.extend(entry.splits)


def _read_png(source: Source, rel: str) -> np.ndarray:
    """A mask PNG as its palette (or grey) indices; RGB ones through the VOC palette."""
    import numpy as np
    from PIL import Image

    where = source.where(rel)
    try:
        with Image.open(io.BytesIO(source.read(rel))) as img:
            img.load()
            if img.mode in ("P", "L"):
                return np.asarray(img)
            if img.mode not in ("RGB", "RGBA"):
                raise DatasetImportError(f"{where}: a {img.mode} image; expected a palette (VOC) PNG of indices")
            rgb = np.asarray(img.convert("RGB")).astype(np.int32)
    except DatasetImportError:
        raise
    except Exception as exc:  # PIL raises many types
        raise DatasetImportError(f"{where}: not a readable PNG ({type(exc).__name__}: {exc})") from None
    codes = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    palette = {(r << 16) | (g << 8) | b: i for i in range(256) for r, g, b in [voc_color(i)]}
    palette[(224 << 16) | (224 << 8) | 192] = VOID  # VOC's void colour
    out = np.zeros(codes.shape, dtype=np.uint8)
    for code in np.unique(codes):
        if int(code) not in palette:
            y, x = (int(v[0]) for v in np.nonzero(codes == code))
            raise DatasetImportError(
                f"{where}: pixel (x={x}, y={y}): colour #{int(code):06X} is not in the VOC palette")
        out[codes == code] = palette[int(code)]
    return out


def _masks(source: Source, files: list[str], root: str, by_id: dict[str, _Image], labels: _Labels) -> None:
    """SegmentationObject/SegmentationClass PNGs -> each object's RLE mask."""
    objs = {f[len(root + SEG_OBJECT):-4]: f for f in files if f.startswith(root + SEG_OBJECT) and f.endswith(".png")}
    clss = {f[len(root + SEG_CLASS):-4]: f for f in files if f.startswith(root + SEG_CLASS) and f.endswith(".png")}
    if not objs and not clss:
        return
    import numpy as np

    from kubeforge.datasets.formats.common import mask_to_rle

    for image_id in sorted(set(clss) - set(objs)):
        raise DatasetImportError(f"{source.where(clss[image_id])}: no {root}{SEG_OBJECT}{image_id}.png; "
                                 "VOC object masks need the instance PNG too")
    for image_id, rel in sorted(objs.items()):
        where = source.where(rel)
        entry = by_id.get(image_id)
        if entry is None or not entry.xml:
            raise DatasetImportError(f"{where}: no {root}{ANNOTATIONS}{image_id}.xml for its objects")
        inst = _read_png(source, rel)
        height, width = inst.shape
        declared = (entry.image.width, entry.image.height)
        if declared != (None, None) and declared != (width, height):
            raise DatasetImportError(f"{where}: {width}x{height}, but {entry.xml} says {declared[0]}x{declared[1]} "
                                     "(width x height)")
        cls = None
        if image_id in clss:
            cls = _read_png(source, clss[image_id])
            if cls.shape != inst.shape:
                raise DatasetImportError(f"{source.where(clss[image_id])}: {cls.shape[1]}x{cls.shape[0]}, but {where} "
                                         f"is {width}x{height} (width x height)")
        for k in (int(v) for v in np.unique(inst)):
            if k in (0, VOID):
                continue
            if k > len(entry.objects):
                raise DatasetImportError(f"{where}: instance {k}: {entry.xml} has {len(entry.objects)} objects "
                                         "(instance k is object k)")
            name, ann = entry.objects[k - 1]
            mask = inst == k
            if cls is not None:
                found = {int(v) for v in np.unique(cls[mask])} - {VOID}
                names = sorted(labels.seg_index.get(i, f"index {i}") for i in found)
                if names != [name]:
                    raise DatasetImportError(
                        f"{source.where(clss[image_id])}: instance {k} (object {k} of {entry.xml}, {name!r}): "
                        f"the class PNG says {', '.join(map(repr, names)) or 'background'}; expected {name!r}")
            ann.segmentation = mask_to_rle(mask)
            ann.area = float(mask.sum())


# --- export ------------------------------------------------------------------------------------


def write_voc(manifest: Manifest, tree: ExportTree) -> None:
    """The version as a flat VOC folder: `JPEGImages/<id>.<ext>`, `Annotations/<id>.xml` (the id is
    the file name without extension, made unique), `ImageSets/Main/<split>.txt`, `labelmap.txt`,
    and `SegmentationClass/`/`SegmentationObject/` PNGs for images whose objects have masks."""
    if manifest.task != "object-detection":
        raise ExportError(f"format voc holds objects; version {manifest.dataset} is {manifest.task}")
    names = {c.id: c.name for c in manifest.categories}
    index = {c.id: i + 1 for i, c in enumerate(manifest.categories)}
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{c.name}:{','.join(map(str, voc_color(index[c.id])))}::" for c in manifest.categories]
    tree.text(LABELMAP, "\n".join(lines) + "\n")
    sets: dict[str, list[str]] = {}
    seg_sets: dict[str, list[str]] = {}
    ids = unique_stems([im.file_name for im in manifest.images])
    for im, anns, image_id in zip(manifest.images, manifest.annotations_by_image(), ids, strict=True):
        ext = im.file_name.rpartition(".")[2] if "." in im.file_name.rpartition("/")[2] else "jpg"
        name = f"{image_id}.{ext}"
        tree.image(IMAGES + name, im.blob)
        tree.text(f"{ANNOTATIONS}{image_id}.xml", _xml(name, im.width, im.height, anns, names, tree))
        masked = any(a.segmentation is not None for a in anns)
        if masked:
            _write_masks(tree, image_id, im.height, im.width, anns, index)
        split = next((t for t in im.tags if t in SPLITS), DEFAULT)  # readers list every image in some set
        sets.setdefault(split, []).append(image_id)
        if masked:
            seg_sets.setdefault(split, []).append(image_id)
        for tag in im.tags:
            if tag in SPLITS:
                continue
            if "/" in tag or tag.startswith(".") or "\\" in tag or tag == DEFAULT:
                tree.lose("image tags that are not file names")
                continue
            sets.setdefault(tag, []).append(image_id)
    for folder, lists in ((SETS, sets), (SEG_SETS, seg_sets)):
        for tag, members in sorted(lists.items()):
            tree.text(f"{folder}{tag}.txt", "".join(f"{m}\n" for m in sorted(members)))


def _write_masks(tree: ExportTree, image_id: str, height: int, width: int, anns: list[Any],
                 index: dict[int, int]) -> None:
    import numpy as np
    from PIL import Image

    from kubeforge.datasets.formats.common import polygons_to_mask, rle_to_mask

    cls = np.zeros((height, width), dtype=np.uint8)
    inst = np.zeros((height, width), dtype=np.uint8)
    if len(anns) >= VOID:
        tree.lose("objects past the 254th of an image (not in SegmentationObject)")
    for k, a in enumerate(anns[:VOID - 1], start=1):
        seg = a.segmentation
        if seg is None:
            continue
        if isinstance(seg, list):
            tree.lose("polygons (written as masks)")
            mask = polygons_to_mask(seg, height, width)
        else:
            mask = rle_to_mask(seg)
        if (inst[mask] != 0).any():
            tree.lose("overlapping masks (the later object keeps the shared pixels)")
        inst[mask] = k
        cls[mask] = index[a.category_id]
    palette = [v for i in range(256) for v in voc_color(i)]
    for folder, data in ((SEG_CLASS, cls), (SEG_OBJECT, inst)):
        img = Image.fromarray(data, mode="P")
        img.putpalette(palette)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        tree.file(f"{folder}{image_id}.png", buf.getvalue())


def _xml(name: str, width: int, height: int, anns: list[Any], names: dict[int, str], tree: ExportTree) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1" if any(a.segmentation is not None for a in anns) else "0"
    for a in anns:
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
            for name_, value in sorted(tags.items()):
                attr = ET.SubElement(attrs, "attribute")
                ET.SubElement(attr, "name").text = name_
                ET.SubElement(attr, "value").text = value or ""
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"

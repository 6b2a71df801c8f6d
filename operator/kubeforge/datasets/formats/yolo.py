"""YOLO (Ultralytics/Darknet txt): detection boxes and segmentation polygons.

Import:
- class names: `data.yaml` (or `data.yml`, `dataset.yaml`) `names` (a list, or a map of index to
  name), else `classes.txt` (one a line); YOLO class index i is category id i + 1;
- images: every image with an `images` folder in its path; its labels are at the same path with
  the last `images` folder replaced by `labels` and the extension by `.txt` (Ultralytics' rule).
  An image without a label file has no objects; a label file without an image is an invalid
  image (fails the import, or is skipped and recorded with `onInvalidImage: Skip`);
- rows: `class cx cy w h` (normalised box) or `class x1 y1 x2 y2 x3 y3 ...` (normalised polygon,
  3+ points). Pixel coordinates are computed once the image's size is known, rounded to 0.01 px;
  a polygon's box is its bounds;
- image tags: a split folder in the path (`train`, `val`/`valid`, `test`) and the image lists that
  data.yaml's `train`/`val`/`test` may name (`train.txt`, one image path a line).
Export writes `images/...` (a version's own path when it already has an `images` folder),
`labels/...`, data.yaml and `<split>.txt` lists. Lost: masks (RLE) and multi-part polygons become
boxes, iscrowd, object tags, image tags other than splits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import yaml

from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage
from kubeforge.datasets.formats.common import (
    SPLIT_NAMES,
    check_rel,
    is_image,
    polygon_area,
    polygon_bbox,
    rc,
    read_text,
    split_tags,
)
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
SPLITS = ("train", "val", "test")
DIGITS = 8  # normalised coordinates written with 8 decimals: < 0.0005 px off on a 10,000 px image


def label_path(image_rel: str) -> str:
    parts = image_rel.split("/")
    i = len(parts) - 2 - parts[-2::-1].index("images")  # the last 'images' folder
    parts[i] = "labels"
    return "/".join(parts).rsplit(".", 1)[0] + ".txt"


def _in_images(rel: str) -> bool:
    return "images" in rel.split("/")[:-1]


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    return parse_yolo(source, files)


def parse_yolo(source: Source, files: list[str]) -> Draft:
    names, lists, yaml_rel = _config(source, files)
    image_paths = [f for f in files if is_image(f) and _in_images(f)]
    if not image_paths:
        raise DatasetImportError(f"source {source.uri}: no images in an 'images' folder; expected YOLO's "
                                 "images/... and labels/... (e.g. images/train/a.jpg, labels/train/a.txt)")
    file_set = set(files)
    by_label = {label_path(p): p for p in image_paths}
    images: dict[str, DraftImage] = {}
    annotations: list[DraftAnnotation] = []
    for path in image_paths:
        tags = sorted({SPLIT_NAMES[p] for p in path.split("/")[:-1] if p in SPLIT_NAMES})
        images[path] = DraftImage(path=path, ref=path, tags=tags)
        label = label_path(path)
        if label in file_set:
            annotations.extend(_rows(source, label, path, len(names)))
    for rel in files:
        if rel.endswith(".txt") and "labels" in rel.split("/")[:-1] and rel not in by_label:
            stem = rel.rsplit(".", 1)[0].replace("labels", "images")
            images[rel] = DraftImage(path=rel, ref=rel, error=f"label file without an image (no {stem}.*)")
    for split, list_rel in lists.items():
        for n, line in enumerate(read_text(source, list_rel).splitlines(), start=1):
            if not line.strip():
                continue
            rel = check_rel(f"{source.where(list_rel)}: line {n}", "image", line.strip())
            if rel not in images:
                raise DatasetImportError(f"{source.where(list_rel)}: line {n}: image {line.strip()!r} is not in the "
                                         "source (or not in an 'images' folder)")
            images[rel].tags.append(split)
    categories = [Category(id=i + 1, name=n) for i, n in enumerate(names)]
    return Draft(task="object-detection", categories=categories, images=list(images.values()),
                 annotations=annotations, origin=source.where(yaml_rel))


def _config(source: Source, files: list[str]) -> tuple[list[str], dict[str, str], str]:
    """(class names, split -> image list file, the file the names came from)."""
    rel = next((f for f in YAML_NAMES if f in files), None)
    if rel is None:
        if "classes.txt" not in files:
            raise DatasetImportError(f"source {source.uri}: no data.yaml or classes.txt naming the YOLO classes")
        names = [line.strip() for line in read_text(source, "classes.txt").splitlines() if line.strip()]
        return _check_names(source.where("classes.txt"), names), {}, "classes.txt"
    where = source.where(rel)
    try:
        data = yaml.safe_load(read_text(source, rel))
    except yaml.YAMLError as exc:
        raise DatasetImportError(f"{where}: not valid YAML ({exc})") from None
    raw = data.get("names") if isinstance(data, dict) else None
    if isinstance(raw, dict) and all(isinstance(k, int) for k in raw) and sorted(raw) == list(range(len(raw))):
        raw = [raw[k] for k in range(len(raw))]
    if not (isinstance(raw, list) and all(isinstance(n, str | int) for n in raw)):
        raise DatasetImportError(f"{where}: 'names': expected a list of class names or a map 0..N-1 to names")
    lists = {}
    for split in SPLITS:
        value = data.get(split)
        if isinstance(value, str) and value.endswith(".txt"):
            lists[split] = check_rel(where, f"{split!r}", value)
            if lists[split] not in files:
                raise DatasetImportError(f"{where}: {split!r}: image list {value!r} not found")
    return _check_names(where, [str(n) for n in raw]), lists, rel


def _check_names(where: str, names: list[str]) -> list[str]:
    if not names or len(set(names)) != len(names) or not all(names):
        raise DatasetImportError(f"{where}: expected one or more distinct, non-empty class names")
    return names


def _rows(source: Source, label: str, image: str, n_classes: int) -> list[DraftAnnotation]:
    where = source.where(label)
    out = []
    for n, line in enumerate(read_text(source, label).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        what = f"{where}: line {n}"
        if not fields[0].isdigit():
            raise DatasetImportError(f"{what}: class id {fields[0]!r}: expected an integer 0..{n_classes - 1}")
        cls = int(fields[0])
        if cls >= n_classes:
            raise DatasetImportError(
                f"{what}: class id {cls} is unknown: there are {n_classes} classes (0..{n_classes - 1})"
            )
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise DatasetImportError(f"{what}: expected numbers after the class id") from None
        if not all(math.isfinite(v) for v in values):
            raise DatasetImportError(f"{what}: coordinates must be finite numbers")
        if len(values) == 4:
            if values[2] < 0 or values[3] < 0:
                raise DatasetImportError(f"{what}: box width and height must not be negative")
            seg = None
        elif len(values) >= 6 and len(values) % 2 == 0:
            seg = [values]
        else:
            raise DatasetImportError(
                f"{what}: {len(fields)} values: expected 5 (class cx cy w h) or a class and 3 or more x y points"
            )
        out.append(DraftAnnotation(
            image_ref=image, ref=f"line {n}", category_id=cls + 1, bbox=values if seg is None else [],
            area=None, iscrowd=0, segmentation=seg, where=where, normalized=True,
        ))
    return out


def denormalize(a: DraftAnnotation, width: int, height: int) -> DraftAnnotation:
    """Pixel coordinates for a YOLO row, now that the image's size is known."""
    if isinstance(a.segmentation, list):
        poly = [rc(v * (width if i % 2 == 0 else height)) for i, v in enumerate(a.segmentation[0])]
        bbox, area, seg = polygon_bbox(poly), polygon_area(poly), [poly]
    else:
        cx, cy, w, h = a.bbox
        bbox = [rc((cx - w / 2) * width), rc((cy - h / 2) * height), rc(w * width), rc(h * height)]
        area, seg = rc(bbox[2] * bbox[3]), None
    return DraftAnnotation(
        image_ref=a.image_ref, ref=a.ref, category_id=a.category_id, bbox=bbox, area=area, iscrowd=0,
        segmentation=seg, where=a.where,
    )


def _f(v: float) -> str:
    return f"{v:.{DIGITS}f}".rstrip("0").rstrip(".") or "0"


def write_yolo(manifest: Manifest, tree: ExportTree) -> None:
    if manifest.task != "object-detection":
        raise ExportError(f"format yolo holds objects; version {manifest.dataset} is {manifest.task}")
    cats = sorted(manifest.categories, key=lambda c: c.id)
    index = {c.id: i for i, c in enumerate(cats)}
    lists: dict[str, list[str]] = {}
    for im, anns in zip(manifest.images, manifest.annotations_by_image(), strict=True):
        rel = im.file_name if _in_images(im.file_name) else f"images/{im.file_name}"
        tree.image(rel, im.blob)
        rows = [_row(a, index[a.category_id], im.width, im.height, tree) for a in anns]
        tree.text(label_path(rel), "".join(f"{r}\n" for r in rows))
        splits = split_tags(im.tags)
        if len(splits) != len(set(im.tags)):
            tree.lose("image tags other than train/val/test")
        for split in splits:
            lists.setdefault(split, []).append(f"./{rel}")
    data: dict[str, Any] = {"path": ".", "train": "images", "val": "images"}
    for split, members in sorted(lists.items()):
        tree.text(f"{split}.txt", "".join(f"{m}\n" for m in sorted(members)))
        data[split] = f"{split}.txt"
    data["nc"] = len(cats)
    data["names"] = [c.name for c in cats]
    tree.text(YAML_NAMES[0], yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _row(a: Any, cls: int, width: int, height: int, tree: ExportTree) -> str:
    if a.tags:
        tree.lose("object tags")
    if a.iscrowd:
        tree.lose("iscrowd")
    seg = a.segmentation
    if isinstance(seg, list) and len(seg) == 1:
        coords = [v / (width if i % 2 == 0 else height) for i, v in enumerate(seg[0])]
        return " ".join([str(cls), *(_f(v) for v in coords)])
    if seg is not None:
        tree.lose("masks and multi-part polygons (YOLO keeps the box)")
    x, y, w, h = a.bbox
    return " ".join([str(cls), _f((x + w / 2) / width), _f((y + h / 2) / height), _f(w / width), _f(h / height)])

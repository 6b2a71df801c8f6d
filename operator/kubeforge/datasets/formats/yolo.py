"""YOLO (Ultralytics, Darknet, Roboflow): detection boxes and segmentation polygons.

Import, the declared schema first:
- Ultralytics: `data.yaml` (or `data.yml`, `dataset.yaml`) at the top: `names` (a list, or a
  map 0..N-1 to names; `nc`, when given, must agree), `path` (a folder inside the source, else
  the source is the dataset root), `train`/`val`/`test`: a folder, a list of folders, or a `.txt`
  image list (lines starting `./` are relative to the list's folder). Roboflow's
  `../train/images` is read as `train/images`. A path that is not in the source is an error.
  `train` and `val` naming the same folders (what exporters write for an unsplit dataset)
  declare no split;
- Darknet (CVAT's YOLO 1.1): `obj.data` (`classes = N`, `train = data/train.txt`,
  `valid = ...`, `names = data/obj.names`), `obj.names` (one name a line); list lines are matched
  against the source by their last folders (`data/obj_train_data/a.jpg` ->
  `obj_train_data/a.jpg`). Without `obj.data`, top-level `train.txt`/`val.txt`/`valid.txt`/`test.txt`;
- else `classes.txt` (one name a line).
YOLO class index i is category id i + 1.

Images: every image with an `images` folder in its path, else (Darknet) every image, plus every
image a declared folder or list names. Labels: for an image in an `images` folder, the same path
with the last `images` folder replaced by `labels` and the extension by `.txt` (Ultralytics'
rule); otherwise the `.txt` beside the image (Darknet). An image without a label file has no
objects; a label file without an image is an invalid image (fails the import, or is skipped and
recorded with `onInvalidImage: Skip`).

Splits (image tags train/val/test): from the declarations when data.yaml or obj.data declares
any; else from folder names in the path (`train`, `valid`, `val2017`, `obj_train_data`). An image
in two splits is an error naming it and both declarations.

Rows: `class cx cy w h` (normalised box) or `class x1 y1 x2 y2 x3 y3 ...` (normalised polygon,
3+ points). Pixel coordinates are computed once the image's size is known, rounded to 0.01 px;
a polygon's box is its bounds. Errors name the label file and the line.

Export writes Ultralytics' layout: `images/<split>/...`, `labels/<split>/...` and data.yaml
(`path: .`, `train: images/train`, ...; unsplit images of a split version in `images/default/`;
a version without splits: `images/...`, `labels/...`, `train: images`, `val: images`). Lost:
masks (RLE) and multi-part polygons become boxes, iscrowd, object tags, image tags other than
splits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage, is_int
from kubeforge.datasets.formats.basic import export_paths, image_split
from kubeforge.datasets.formats.common import (
    SPLIT_NAMES,
    check_rel,
    is_image,
    polygon_area,
    polygon_bbox,
    rc,
    read_text,
    split_of,
)
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
SPLITS = SPLIT_TAGS
DARKNET_KEYS = {"train": "train", "valid": "val", "val": "val", "test": "test"}
DIGITS = 8  # normalised coordinates written with 8 decimals: < 0.0005 px off on a 10,000 px image


def label_path(image_rel: str) -> str:
    parts = image_rel.split("/")
    i = len(parts) - 2 - parts[-2::-1].index("images")  # the last 'images' folder
    parts[i] = "labels"
    return "/".join(parts).rsplit(".", 1)[0] + ".txt"


def _in_images(rel: str) -> bool:
    return "images" in rel.split("/")[:-1]


def _label_of(image_rel: str) -> str:
    return label_path(image_rel) if _in_images(image_rel) else image_rel.rsplit(".", 1)[0] + ".txt"


@dataclass
class _Decl:
    """One split declaration: a folder or an image list, and where it was declared (for messages)."""

    split: str
    kind: str  # "dir" or "list"
    rel: str
    said: str  # e.g. "/src/data.yaml: 'val'"


@dataclass
class _Config:
    names: list[str]
    origin: str  # the file that names the classes (full location)
    decls: list[_Decl] = field(default_factory=list)


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    return parse_yolo(source, files)


def parse_yolo(source: Source, files: list[str]) -> Draft:
    file_set = set(files)
    config = _config(source, files, file_set)
    n_classes = len(config.names)
    in_images = [f for f in files if is_image(f) and _in_images(f)]
    base = in_images or [f for f in files if is_image(f)]
    if not base:
        raise DatasetImportError(f"source {source.uri}: no images; expected YOLO's images/... and labels/... "
                                 "(e.g. images/train/a.jpg, labels/train/a.txt) or Darknet's obj_train_data/")
    declared = _declared_splits(source, config, files, file_set)
    images: dict[str, DraftImage] = {}
    for path in dict.fromkeys([*base, *declared]):
        if config.decls:
            tags = [declared[path][0]] if path in declared else []
        else:
            found = sorted({s for p in path.split("/")[:-1] if (s := split_of(p))})
            if len(found) > 1:
                raise DatasetImportError(f"{source.where(path)}: folders name the splits {', '.join(found)}; "
                                         "expected one split per image")
            tags = found
        images[path] = DraftImage(path=path, ref=path, tags=tags)
    annotations: list[DraftAnnotation] = []
    labels: set[str] = set()
    for path in images:
        label = _label_of(path)
        labels.add(label)
        if label in file_set:
            annotations.extend(_rows(source, label, path, n_classes))
    lists = {d.rel for d in config.decls if d.kind == "list"}
    image_dirs = {p.rsplit("/", 1)[0] if "/" in p else "" for p in images if not _in_images(p)}
    for rel in files:
        if not rel.endswith(".txt") or rel in labels or rel in lists or rel.rsplit("/", 1)[-1] == "classes.txt":
            continue
        folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if "labels" in rel.split("/")[:-1]:
            stem = rel.rsplit(".", 1)[0].replace("labels", "images")
        elif folder in image_dirs and not (folder == "" and rel in ("train.txt", "val.txt", "valid.txt", "test.txt")):
            stem = rel.rsplit(".", 1)[0]
        else:
            continue
        images[rel] = DraftImage(path=rel, ref=rel, error=f"label file without an image (no {stem}.*)")
    categories = [Category(id=i + 1, name=n) for i, n in enumerate(config.names)]
    return Draft(task="object-detection", categories=categories, images=list(images.values()),
                 annotations=annotations, origin=config.origin)


def _declared_splits(
    source: Source, config: _Config, files: list[str], file_set: set[str]
) -> dict[str, tuple[str, str]]:
    """Image path -> (split, the declaration that put it there)."""
    out: dict[str, tuple[str, str]] = {}

    def put(path: str, split: str, said: str) -> None:
        if path in out and out[path][0] != split:
            raise DatasetImportError(f"{source.where(path)}: in split {out[path][0]} ({out[path][1]}) and in split "
                                     f"{split} ({said}); expected one split per image")
        out.setdefault(path, (split, said))

    for d in config.decls:
        if d.kind == "dir":
            prefix = d.rel + "/" if d.rel else ""
            for f in files:
                if f.startswith(prefix) and is_image(f):
                    put(f, d.split, d.said)
            continue
        list_where = source.where(d.rel)
        for n, line in enumerate(read_text(source, d.rel).splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            rel = _resolve_line(f"{list_where}: line {n}", line.strip(), d.rel, file_set)
            if not is_image(rel):
                raise DatasetImportError(f"{list_where}: line {n}: {line.strip()!r} is not an image file")
            put(rel, d.split, f"{list_where}: line {n}")
    return out


def _resolve_line(what: str, raw: str, list_rel: str, files: set[str]) -> str:
    """An image list's line -> a file of the source: `./x` relative to the list's folder, else
    relative to the root, else by its last folders (Darknet's `data/obj_train_data/a.jpg`)."""
    rel = check_rel(what, "image", raw)
    folder = list_rel.rsplit("/", 1)[0] + "/" if "/" in list_rel else ""
    candidates = [folder + rel, rel] if raw.replace("\\", "/").startswith("./") else [rel, folder + rel]
    parts = rel.split("/")
    candidates += ["/".join(parts[i:]) for i in range(1, len(parts))]
    for c in candidates:
        if c in files:
            return c
    raise DatasetImportError(f"{what}: image {raw!r} is not in the source")


def _find(files: list[str], file_set: set[str], dirs: set[str], value: str, want_dir: bool) -> str | None:
    """A path from a config file, inside the source: as written (without `./`), without leading
    `..` (Roboflow's `../train/images`), or by its last parts (an absolute path from the author's machine)."""
    parts = [p for p in value.replace("\\", "/").split("/") if p not in ("", ".")]
    while parts and parts[0] == "..":
        parts = parts[1:]
    if ".." in parts:
        return None
    pool = dirs if want_dir else file_set
    for i in range(len(parts)):
        c = "/".join(parts[i:])
        if c in pool:
            return c
    if want_dir and not parts:
        return ""
    return None


def _all_dirs(files: list[str]) -> set[str]:
    out: set[str] = set()
    for f in files:
        parts = f.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return out


def _config(source: Source, files: list[str], file_set: set[str]) -> _Config:
    rel = next((f for f in YAML_NAMES if f in file_set), None)
    if rel is not None:
        return _ultralytics(source, rel, files, file_set)
    if "obj.data" in file_set or "obj.names" in file_set:
        return _darknet(source, files, file_set)
    if "classes.txt" not in file_set:
        raise DatasetImportError(f"source {source.uri}: no data.yaml, obj.names or classes.txt naming the YOLO classes")
    names = [line.strip() for line in read_text(source, "classes.txt").splitlines() if line.strip()]
    return _Config(_check_names(source.where("classes.txt"), names), source.where("classes.txt"))


def _ultralytics(source: Source, rel: str, files: list[str], file_set: set[str]) -> _Config:
    where = source.where(rel)
    try:
        data = yaml.safe_load(read_text(source, rel))
    except yaml.YAMLError as exc:
        raise DatasetImportError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetImportError(f"{where}: expected a mapping with 'names' (and train/val/test)")
    raw = data.get("names")
    if isinstance(raw, dict):
        keys = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in raw.items()}
        if not (all(is_int(k) for k in keys) and sorted(keys) == list(range(len(keys)))):
            raise DatasetImportError(f"{where}: 'names': map keys {sorted(map(str, raw))}: expected 0..N-1")
        raw = [keys[k] for k in range(len(keys))]
    if not (isinstance(raw, list) and all(isinstance(n, str | int) for n in raw)):
        raise DatasetImportError(f"{where}: 'names': expected a list of class names or a map 0..N-1 to names")
    names = _check_names(where, [str(n) for n in raw])
    nc = data.get("nc")
    if nc is not None and not (is_int(nc) and nc == len(names)):
        raise DatasetImportError(
            f"{where}: 'nc' is {nc!r} but 'names' has {len(names)} classes; expected them to agree")
    dirs = _all_dirs(files)
    root = ""
    path = data.get("path")
    if isinstance(path, str) and path.strip() and not path.startswith(("/", "~")) and ".." not in path.split("/"):
        found = _find(files, file_set, dirs, path, want_dir=True)
        root = f"{found}/" if found else ""
    decls: list[_Decl] = []
    for split in SPLITS:
        value = data.get(split)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise DatasetImportError(f"{where}: {split!r}: expected a folder, a list of folders or a .txt image list")
        for v in values:
            said = f"{where}: {split!r}"
            kind = "list" if v.strip().endswith(".txt") else "dir"
            found = _find(files, file_set, dirs, root + v.strip(), kind == "dir")
            if found is None:
                found = _find(files, file_set, dirs, v.strip(), kind == "dir")
            if found is None:
                what = "image list" if kind == "list" else "folder"
                raise DatasetImportError(f"{said}: {what} {v!r} is not in the source")
            decls.append(_Decl(split, kind, found, said))
    train = sorted((d.kind, d.rel) for d in decls if d.split == "train")
    if train and train == sorted((d.kind, d.rel) for d in decls if d.split == "val"):
        decls = [d for d in decls if d.split not in ("train", "val")]  # the same images for both: no split
    return _Config(names, where, decls)


def _darknet(source: Source, files: list[str], file_set: set[str]) -> _Config:
    decls: list[_Decl] = []
    names_rel = "obj.names"
    n_declared: tuple[int, str] | None = None
    if "obj.data" in file_set:
        where = source.where("obj.data")
        for n, line in enumerate(read_text(source, "obj.data").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, value = (x.strip() for x in line.partition("="))
            if not sep:
                raise DatasetImportError(f"{where}: line {n}: {line.strip()!r}: expected 'key = value'")
            if key == "classes":
                if not value.isdigit():
                    raise DatasetImportError(f"{where}: line {n}: classes {value!r}: expected a number")
                n_declared = (int(value), f"{where}: line {n}")
            elif key == "names" or key in DARKNET_KEYS:
                found = _find(files, file_set, set(), value, want_dir=False)
                if found is None:
                    raise DatasetImportError(f"{where}: line {n}: {key} file {value!r} is not in the source")
                if key == "names":
                    names_rel = found
                else:
                    decls.append(_Decl(DARKNET_KEYS[key], "list", found, f"{where}: line {n}"))
    else:
        for rel in ("train.txt", "val.txt", "valid.txt", "test.txt"):
            if rel in file_set:
                decls.append(_Decl(SPLIT_NAMES[rel[:-4]], "list", rel, source.where(rel)))
    if names_rel not in file_set:
        raise DatasetImportError(f"{source.where(names_rel)}: class names file not found")
    names_where = source.where(names_rel)
    names = _check_names(names_where, [x.strip() for x in read_text(source, names_rel).splitlines() if x.strip()])
    if n_declared is not None and n_declared[0] != len(names):
        raise DatasetImportError(f"{n_declared[1]}: classes = {n_declared[0]}, but {names_where} names "
                                 f"{len(names)} classes; expected them to agree")
    return _Config(names, names_where, decls)


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
    paths = export_paths(manifest, image_split)
    has_split = any(key is not None for key, _ in paths)
    for im, anns, (key, rest) in zip(manifest.images, manifest.annotations_by_image(), paths, strict=True):
        rel = f"images/{key or 'default'}/{rest}" if has_split else f"images/{rest}"
        tree.image(rel, im.blob)
        rows = [_row(a, index[a.category_id], im.width, im.height, tree) for a in anns]
        tree.text(label_path(rel), "".join(f"{r}\n" for r in rows))
        if set(im.tags) - {key}:
            tree.lose("image tags other than train/val/test")
    data: dict[str, Any] = {"path": "."}
    present = {key for key, _ in paths}
    if has_split:
        data.update({split: f"images/{split}" for split in SPLITS if split in present})
    else:
        data.update({"train": "images", "val": "images"})  # Ultralytics needs both; the same folder: no split
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

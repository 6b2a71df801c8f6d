"""COCO instances JSON -> a detection draft (boxes, polygons, RLE masks, iscrowd).

Which files (when `spec.source.annotations` does not name one):
- COCO's release layout: every `annotations/instances_<name>.json` (other COCO files there,
  captions and keypoints, are not read); `<name>` gives the split (`train2017` -> train,
  `val` -> val, `default` -> no split), and an image's file is looked for in `<name>/`,
  `images/<name>/`, `images/`, then as written (file names that carry their folder);
- Roboflow's export: every `<folder>/_annotations.coco.json`, images beside it; the folder is the
  split (`train`, `valid` -> val, `test`);
- else the only `*.json` at the top of the source, images in `images/` or as written.
Several files make one version: each image is tagged with its file's split; the files must
declare the same categories (id -> name), and an image file may be listed in only one of them.
`spec.source.images` names the image folder (`<images>/<file_name>`; with split files
`<images>/<name>/` is tried first).

Every entry is validated before any image is read; errors name the annotations file, the
entry (image id, annotation id, category id) and what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from kubeforge.api.dataset_operations import SPLIT_TAGS
from kubeforge.api.dataset_version import DatasetSource
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage, is_int, is_number
from kubeforge.datasets.formats.common import SPLIT_NAMES, join_tag, split_of
from kubeforge.datasets.manifest import Category
from kubeforge.datasets.sources import Source

_INSTANCES = re.compile(r"annotations/instances_([^/]+)\.json")
ROBOFLOW_NAME = "_annotations.coco.json"


@dataclass
class AnnotationFile:
    rel: str  # relative to the source root
    split: str | None  # train, val, test, or None
    folders: list[str]  # where its images are looked for, in order ('' is the root): 'images/train/', ...


class _Ref(NamedTuple):
    """An image id within one of several annotation files (ids restart in each); prints as the id."""

    file: str
    id: Any

    def __repr__(self) -> str:
        return repr(self.id)


def _split_folders(files: list[str]) -> list[str]:
    """Folders at the top or in `images/` whose names are splits (`val2017/`, `images/valid/`), sorted."""
    out = set()
    for f in files:
        parts = f.split("/")
        for n in (1, 2) if parts[0] == "images" else (1,):
            if len(parts) > n and split_of(parts[n - 1]):
                out.add("/".join(parts[:n]) + "/")
    return sorted(out)


def _describe(rel: str, spec: DatasetSource, split_folders: Sequence[str] = ()) -> AnnotationFile:
    images = spec.images.strip("/") if spec.images else None
    m = _INSTANCES.fullmatch(rel)
    if m:
        name = m.group(1)
        split = split_of(name)
        if images is not None:
            return AnnotationFile(rel, split, [f"{images}/{name}/", f"{images}/"])
        folders = [f"{name}/", f"images/{name}/"]
        if split is not None:  # instances_val.json with its images in val2017/
            folders += [f for f in split_folders if split_of(f.rstrip("/").rsplit("/", 1)[-1]) == split]
        return AnnotationFile(rel, split, [*dict.fromkeys([*folders, "images/", ""])])
    folder, _, base = rel.rpartition("/")
    if base == ROBOFLOW_NAME:
        split = SPLIT_NAMES.get(folder.rsplit("/", 1)[-1].lower()) if folder else None
        return AnnotationFile(rel, split, [f"{images}/" if images is not None else (f"{folder}/" if folder else "")])
    if images is not None:
        return AnnotationFile(rel, None, [f"{images}/"])
    return AnnotationFile(rel, None, ["images/", ""])


def find_annotation_files(source: Source, spec: DatasetSource, files: list[str]) -> list[AnnotationFile]:
    if spec.annotations:
        rel = spec.annotations.strip("/")
        if rel not in files:
            raise DatasetImportError(f"{source.where(rel)}: annotations file (spec.source.annotations) not found")
        return [_describe(rel, spec, _split_folders(files))]
    standard = sorted(f for f in files if _INSTANCES.fullmatch(f) or f.rpartition("/")[2] == ROBOFLOW_NAME)
    if standard:
        split_folders = _split_folders(files)
        return [_describe(f, spec, split_folders) for f in standard]
    top = [f for f in files if "/" not in f and f.lower().endswith(".json")]
    if len(top) != 1:
        found = ", ".join(top) if top else "none"
        raise DatasetImportError(
            f"source {source.uri}: expected exactly one *.json at the top (found: {found}), COCO's "
            f"annotations/instances_<split>.json files, or Roboflow's <split>/{ROBOFLOW_NAME}; "
            "or name the instances file in spec.source.annotations"
        )
    return [_describe(top[0], spec)]


@dataclass
class _Part:
    where: str
    categories: list[Category]
    images: list[DraftImage]
    annotations: list[DraftAnnotation]


def parse_coco(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """Also the registry's entry point `parse` (`kubeforge.datasets.formats.registry`)."""
    chosen = find_annotation_files(source, spec, files)
    file_set = set(files)
    several = len(chosen) > 1
    parts = [_parse_file(source, f, file_set, several) for f in chosen]
    if not several:
        p = parts[0]
        return Draft(task="object-detection", categories=p.categories, images=p.images, annotations=p.annotations,
                     origin=p.where)
    return Draft(task="object-detection", categories=_merge_categories(parts), images=_merge_images(parts),
                 annotations=[a for p in parts for a in p.annotations], origin=parts[0].where)


def _merge_categories(parts: list[_Part]) -> list[Category]:
    by_id: dict[int, tuple[Category, str]] = {}
    by_name: dict[str, tuple[Category, str]] = {}
    for p in parts:
        for c in p.categories:
            first = by_id.get(c.id) or by_name.get(c.name)
            if first is None:
                by_id[c.id] = by_name[c.name] = (c, p.where)
                continue
            other, where = first
            if (other.id, other.name, other.supercategory) != (c.id, c.name, c.supercategory):
                raise DatasetImportError(
                    f"{p.where}: category id {c.id} ({c.name!r}, supercategory {c.supercategory!r}) disagrees with "
                    f"{where}: category id {other.id} ({other.name!r}, supercategory {other.supercategory!r}); "
                    "expected every split file to declare the same categories"
                )
    return [c for c, _ in by_id.values()]


def _merge_images(parts: list[_Part]) -> list[DraftImage]:
    seen: dict[str, tuple[Any, str]] = {}
    out: list[DraftImage] = []
    for p in parts:
        for im in p.images:
            if im.path in seen:
                ref, where = seen[im.path]
                raise DatasetImportError(
                    f"{p.where}: image id {im.ref!r}: file {im.path} is also image id {ref!r} in {where}; "
                    "expected each image in one split file only"
                )
            seen[im.path] = (im.ref, p.where)
            out.append(im)
    return out


def _parse_file(source: Source, f: AnnotationFile, files: set[str], several: bool) -> _Part:
    where = source.where(f.rel)
    try:
        coco = json.loads(source.read(f.rel))
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
    images = _images(where, coco["images"], f, files)
    if several:
        for im in images:
            im.ref = _Ref(f.rel, im.ref)
    by_id = {im.ref.id if several else im.ref: im for im in images}
    cat_ids = {c.id for c in categories}
    annotations = [_annotation(where, i, a, by_id, cat_ids) for i, a in enumerate(raw_anns)]
    return _Part(where, categories, images, annotations)


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


def _resolve(file_name: str, folders: list[str], files: set[str]) -> tuple[str, str | None]:
    """(path, the folder it was found in); None: not found, the path is then under the only folder given,
    else as written (the caller may place it with the file's other images)."""
    name = file_name.replace("\\", "/").lstrip("/")
    for folder in folders:
        if folder + name in files:
            return folder + name, folder
    return (folders[0] + name if len(folders) == 1 else name), None


def _images(where: str, raw: list[Any], f: AnnotationFile, files: set[str]) -> list[DraftImage]:
    out: list[DraftImage] = []
    ids: set[Any] = set()
    paths: dict[str, Any] = {}
    found: dict[str, int] = {}  # folder -> images found there
    missing: list[int] = []  # images found nowhere (reported when images are read)
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
        path, folder = _resolve(im["file_name"], f.folders, files)
        if folder is not None:
            found[folder] = found.get(folder, 0) + 1
        elif len(f.folders) > 2:  # a split file: say where it was looked for (one file: as before)
            missing.append(len(out))
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
        splits = {t for t in tags if t in SPLIT_TAGS} | ({f.split} if f.split else set())
        if len(splits) > 1:
            said = f" (the file is the {f.split} split)" if f.split else ""
            raise DatasetImportError(
                f"{where}: image id {iid!r}: split tags {', '.join(sorted(splits))}{said}; expected one split per image"
            )
        if f.split and f.split not in tags:
            tags = [*tags, f.split]
        out.append(DraftImage(path=path, ref=iid, width=im.get("width"), height=im.get("height"), tags=tags))
    looked = ", ".join(folder or "the top" for folder in f.folders)
    best = max(found, key=lambda k: found[k]) if found else ""
    for k in missing:  # named where this file's other images are; invalid without being read
        im = out[k]
        if f"{best}{im.path}" not in paths:
            im.path = f"{best}{im.path}"
        im.error = f"file not found (image id {im.ref!r} in {where}; looked in {looked})"
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
        image_ref=image.ref, ref=aid, category_id=a["category_id"], bbox=[float(v) for v in bbox],
        area=float(area), iscrowd=iscrowd, segmentation=seg, tags=tags, where=where,
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

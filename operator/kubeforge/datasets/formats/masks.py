"""Semantic-segmentation masks: one PNG of class indices (or colours) per image.

Layouts:
- VOC: `SegmentationClass/<id>.png` with the image at `JPEGImages/<id>.*`; splits from
  `ImageSets/Segmentation/<split>.txt` (ids one a line; other lists, e.g. `trainval.txt`, are
  ignored). Images in `JPEGImages/` without a mask are not imported (VOC ships many detection-only
  images: they are not "all background");
- `images/` + `masks/`: `masks/<path>/<stem>.png` for `images/<path>/<stem>.*`; an image without
  its mask (or a mask without its image) is an invalid image; a first folder `train`, `val`/`valid`,
  `test` under `images/` is the split.
Class map (at the top, the first found): `labelmap.txt` (`name:r,g,b:parts:actions` lines, as CVAT's
"Segmentation mask" and datumaro write it), `classes.json` (a list of names or of
`{"name": ..., "color": [r, g, b]}`), `classes.txt` (one name a line), `dataset_meta.json`
(datumaro's common_semantic_segmentation: `labels`, or `label_map` with `segmentation_colors`); the
line (position) is the class index. Without one, the VOC layout uses the 21 VOC names (index 0 background); the
`images/` + `masks/` layout requires one.
Pixels: palette (`P`) and grey masks hold the class index; RGB masks hold the class colour (the
declared colours, else the VOC palette colour of each index). Index 255 (RGB: VOC's void colour
224,224,192) is void. A value that is no declared index or colour is an error naming the mask, the
value and one pixel.
Stored: per (image, class present) one object of that class with the mask as COCO RLE, its box
and its pixel count. The background class (the one named background, _background_,
__background__ or __bg__, else index 0) is not stored. Void pixels go to the nearest class present
in the image (8-connected distance) as a crowd object (`iscrowd: 1`) of that class, so training
and evaluation ignore them (`evaluation.segmentation.class_mask` paints crowds 255) and the
class mask comes back pixel for pixel; void in an image with no class present is dropped.
Export (`write_masks`): `images/[<split>/]<path>` with `masks/[<split>/]<path stem>.png`, single
channel class indices (0 background, 255 void from crowd objects), painted by
`evaluation.segmentation.class_mask` (what training reads), `classes.txt` (background first,
then the categories by id) and the same list as `dataset_meta.json` `{"labels": [...]}`, so
datumaro's `common_semantic_segmentation` reads the export as it is. Objects without a mask are
painted as their boxes (a recorded loss); object and other image tags are lost.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage
from kubeforge.datasets.formats.common import (
    SPLIT_NAMES,
    is_image,
    list_ids,
    mask_bbox_area,
    mask_to_rle,
    read_text,
    set_split,
)
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Category, Manifest
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
BACKGROUND_NAMES = ("background", "_background_", "__background__", "__bg__")
VOID = 255
VOID_RGB = (224, 224, 192)
VOC_MASKS, VOC_IMAGES, VOC_SETS = "SegmentationClass/", "JPEGImages/", "ImageSets/Segmentation/"
MASKS, IMAGES = "masks/", "images/"
DATASET_META = "dataset_meta.json"  # datumaro's common_semantic_segmentation class list (written on export)
CLASS_FILES = ("labelmap.txt", "classes.json", "classes.txt", DATASET_META)


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour of each index (the bit-interleaving palette VOC's devkit defines)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    voc = any(f.startswith(VOC_MASKS) for f in files)
    if not voc and not any(f.startswith(MASKS) for f in files):
        raise DatasetImportError(
            f"source {source.uri}: no SegmentationClass/ or masks/ folder; expected semantic-segmentation masks "
            "(SegmentationClass/ beside JPEGImages/, or images/ + masks/)"
        )
    names, colours, map_where = _class_map(source, files, voc)
    pairs = _voc_pairs(files) if voc else _folder_pairs(source, files)
    bg = next((i for i, n in enumerate(names) if n.lower() in BACKGROUND_NAMES), 0)
    ids: dict[int, int] = {}
    categories: list[Category] = []
    for index, name in enumerate(names):
        if index != bg:
            ids[index] = len(categories) + 1
            categories.append(Category(id=ids[index], name=name))
    lookup = _colour_lookup(names, colours)
    images: list[DraftImage] = []
    annotations: list[DraftAnnotation] = []
    file_set = set(files)
    by_stem: dict[str, DraftImage] = {}
    for image_path, mask_rel in pairs:
        image = DraftImage(path=image_path, ref=image_path)
        images.append(image)
        if mask_rel is not None:
            by_stem[mask_rel.split("/", 1)[1][:-4]] = image
        if mask_rel is None:
            image.error = f"no mask for it (expected {_mask_for(image_path)})"
            continue
        where = source.where(mask_rel)
        if image_path not in file_set:
            image.error = f"file not found (the image of mask {where})"
        index = _read_mask(source, mask_rel, len(names), lookup, map_where)
        image.height, image.width = index.shape
        annotations.extend(_objects(index, image_path, where, names, ids, bg))
    if voc:
        _voc_splits(source, files, by_stem)
    else:
        for image in images:
            first = image.path[len(IMAGES):].split("/")[0] if image.path.count("/") > 1 else ""
            set_split(image, first, source.where(image.path))
    if not images:
        raise DatasetImportError(f"source {source.uri}: no masks found")
    return Draft(task="object-detection", categories=categories, images=images, annotations=annotations,
                 origin=map_where or source.where(VOC_MASKS if voc else MASKS))


def _mask_for(image_path: str) -> str:
    return MASKS + image_path[len(IMAGES):].rsplit(".", 1)[0] + ".png"


def _voc_pairs(files: list[str]) -> list[tuple[str, str | None]]:
    stems = {f[len(VOC_IMAGES):].rsplit(".", 1)[0]: f for f in files if f.startswith(VOC_IMAGES) and is_image(f)}
    out: list[tuple[str, str | None]] = []
    for rel in files:
        if rel.startswith(VOC_MASKS) and rel.lower().endswith(".png"):
            stem = rel[len(VOC_MASKS):-4]
            out.append((stems.get(stem, f"{VOC_IMAGES}{stem}.jpg"), rel))
    return out


def _folder_pairs(source: Source, files: list[str]) -> list[tuple[str, str | None]]:
    masks = {f[len(MASKS):-4]: f for f in files if f.startswith(MASKS) and f.lower().endswith(".png")}
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for rel in files:
        if rel.startswith(IMAGES) and is_image(rel):
            stem = rel[len(IMAGES):].rsplit(".", 1)[0]
            if stem in seen:
                raise DatasetImportError(
                    f"{source.where(rel)}: a second image named {IMAGES}{stem}.*; expected one image per mask"
                )
            seen.add(stem)
            out.append((rel, masks.get(stem)))
    out.extend((f"{IMAGES}{stem}.png", rel) for stem, rel in masks.items() if stem not in seen)
    return out


def _class_map(source: Source, files: list[str], voc: bool) -> tuple[list[str], list[tuple[int, int, int] | None], str]:
    rel = next((f for f in CLASS_FILES if f in files), None)
    if rel is None:
        if not voc:
            raise DatasetImportError(
                f"source {source.uri}: no class map; expected labelmap.txt, classes.json, classes.txt or "
                f"{DATASET_META} at the top (the line is the class index)"
            )
        return list(VOC_CLASSES), [None] * len(VOC_CLASSES), ""
    where = source.where(rel)
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    if rel == DATASET_META:
        names, colours = _dataset_meta(source, rel)
    elif rel == "classes.json":
        try:
            raw = json.loads(source.read(rel))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetImportError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(raw, list):
            raise DatasetImportError(f"{where}: expected a list of class names or of {{'name', 'color'}} objects")
        for i, entry in enumerate(raw):
            name = entry.get("name") if isinstance(entry, dict) else entry
            colour = entry.get("color") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name:
                raise DatasetImportError(f"{where}: entry {i}: expected a class name (a string or {{'name': ...}})")
            names.append(name)
            colours.append(_colour(f"{where}: entry {i} ({name})", colour) if colour is not None else None)
    else:
        lines = read_text(source, rel).splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if rel == "labelmap.txt":
                name, _, rest = line.partition(":")
                colour_text = rest.split(":")[0].strip()
                colour = None
                if colour_text:
                    parts = colour_text.split(",")
                    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
                        raise DatasetImportError(f"{where}: line {n}: colour {colour_text!r}: expected r,g,b")
                    colour = _colour(f"{where}: line {n}", [int(p) for p in parts])
                names.append(name.strip())
                colours.append(colour)
            else:
                names.append(line.strip())
                colours.append(None)
            if not names[-1]:
                raise DatasetImportError(f"{where}: line {n}: expected a class name")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise DatasetImportError(f"{where}: class {dup!r} is listed twice")
    if not names:
        raise DatasetImportError(f"{where}: no classes; expected one class name a line (the line is the index)")
    if len(names) > VOID:
        raise DatasetImportError(f"{where}: {len(names)} classes; masks hold at most {VOID} (index {VOID} is void)")
    given = [c for c in colours if c is not None]
    if len(set(given)) != len(given):
        raise DatasetImportError(f"{where}: two classes have the same colour")
    return names, colours, where


def _dataset_meta(source: Source, rel: str) -> tuple[list[str], list[tuple[int, int, int] | None]]:
    """datumaro's `dataset_meta.json`: `label_map` {"<index>": name} with `segmentation_colors`
    (a [r, g, b] per index), else `labels` (a list: the position is the index, VOC palette colours)."""
    where = source.where(rel)
    try:
        raw = json.loads(source.read(rel))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetImportError(f"{where}: not valid JSON ({exc})") from None
    label_map = raw.get("label_map") if isinstance(raw, dict) else None
    if isinstance(label_map, dict) and label_map:
        if sorted(label_map, key=lambda k: int(k) if k.isdigit() else -1) != [str(i) for i in range(len(label_map))]:
            raise DatasetImportError(f"{where}: label_map keys {sorted(label_map)}: expected the indices 0.."
                                     f"{len(label_map) - 1}")
        names = [label_map[str(i)] for i in range(len(label_map))]
        given = raw.get("segmentation_colors") or []
        if not isinstance(given, list):
            raise DatasetImportError(f"{where}: segmentation_colors: expected a list of [r, g, b]")
        colours = [_colour(f"{where}: segmentation_colors[{i}]", given[i]) if i < len(given) and given[i] is not None
                   else None for i in range(len(names))]
    elif isinstance(raw, dict) and isinstance(raw.get("labels"), list):
        names, colours = raw["labels"], [None] * len(raw["labels"])
    else:
        raise DatasetImportError(f"{where}: expected {{\"labels\": [names]}} or {{\"label_map\": {{\"0\": name, ...}}, "
                                 "\"segmentation_colors\": [[r, g, b], ...]}")
    bad = next((n for n in names if not isinstance(n, str) or not n), None)
    if bad is not None or not names:
        raise DatasetImportError(f"{where}: class {bad!r}: expected class names (non-empty strings)")
    return names, colours


def _colour(what: str, raw: Any) -> tuple[int, int, int]:
    if not (isinstance(raw, list) and len(raw) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in raw)):
        raise DatasetImportError(f"{what}: colour {raw!r}: expected [r, g, b] integers 0..255")
    return (raw[0], raw[1], raw[2])


def _colour_lookup(names: list[str], colours: list[tuple[int, int, int] | None]) -> dict[int, int]:
    """RGB (as r << 16 | g << 8 | b) -> class index; void's colour -> VOID."""
    palette = voc_palette()
    out = {}
    for i, c in enumerate(colours):
        r, g, b = c if c is not None else palette[i]
        out[r << 16 | g << 8 | b] = i
    r, g, b = VOID_RGB
    out.setdefault(r << 16 | g << 8 | b, VOID)
    return out


def _read_mask(source: Source, rel: str, n_classes: int, lookup: dict[int, int], map_where: str) -> np.ndarray:
    from PIL import Image

    where = source.where(rel)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(source.read(rel))) as img:
                img.load()
                mode = img.mode
                if mode in ("RGB", "RGBA"):
                    rgb = np.asarray(img.convert("RGB")).astype(np.uint32)
                    data = None
                elif mode == "1":
                    data = np.asarray(img).astype(np.int64)
                elif mode in ("P", "PA", "L", "LA"):
                    data = np.asarray(img if mode in ("P", "L") else img.getchannel(0)).astype(np.int64)
                elif mode.startswith("I"):
                    data = np.asarray(img).astype(np.int64)
                else:
                    raise DatasetImportError(
                        f"{where}: mask mode {mode!r}; expected class indices (palette or grey) or RGB colours"
                    )
    except DatasetImportError:
        raise
    except Exception as exc:  # PIL raises many types
        raise DatasetImportError(f"{where}: not a readable PNG mask ({type(exc).__name__}: {exc})") from None
    if data is None:
        codes = rgb[:, :, 0] << 16 | rgb[:, :, 1] << 8 | rgb[:, :, 2]
        uniq, inverse = np.unique(codes, return_inverse=True)
        mapped = np.empty(len(uniq), dtype=np.int64)
        for k, code in enumerate(uniq.tolist()):
            if code not in lookup:
                ys, xs = np.nonzero(codes == code)
                colour = f"{code >> 16},{code >> 8 & 255},{code & 255}"
                declared = f"of {map_where}" if map_where else "(VOC palette)"
                void = ",".join(map(str, VOID_RGB))
                raise DatasetImportError(
                    f"{where}: pixel (x={xs[0]}, y={ys[0]}): colour {colour} is no class colour {declared} "
                    f"and not void ({void})"
                )
            mapped[k] = lookup[code]
        data = mapped[inverse.reshape(codes.shape)]
    bad = (data >= n_classes) & (data != VOID) | (data < 0)
    if bad.any():
        ys, xs = np.nonzero(bad)
        raise DatasetImportError(
            f"{where}: pixel (x={xs[0]}, y={ys[0]}): class index {data[ys[0], xs[0]]}; expected 0..{n_classes - 1} "
            f"({n_classes} classes{' in ' + map_where if map_where else ', VOC'}) or {VOID} (void)"
        )
    return data.astype(np.uint8)


def nearest_class(index: np.ndarray, is_class: np.ndarray, todo: np.ndarray) -> np.ndarray:
    """For each `todo` pixel, the index of the nearest `is_class` pixel (8-connected steps; ties: the
    higher index); -1 where the image has no class pixel. Grown one ring at a time (numpy only)."""
    owner = np.where(is_class, index.astype(np.int16), np.int16(-1))
    h, w = owner.shape
    while (todo & (owner < 0)).any():
        padded = np.pad(owner, 1, constant_values=-1)
        grown = owner.copy()
        for dy in range(3):
            for dx in range(3):
                np.maximum(grown, padded[dy:dy + h, dx:dx + w], out=grown)
        fresh = (owner < 0) & (grown >= 0)
        if not fresh.any():
            break
        owner[fresh] = grown[fresh]
    return owner


def _objects(index: np.ndarray, image_path: str, where: str, names: list[str], ids: dict[int, int],
             bg: int) -> list[DraftAnnotation]:
    present = [int(v) for v in np.unique(index) if v != VOID and v != bg]
    out = []
    for v in present:
        mask = index == v
        bbox, area = mask_bbox_area(mask)
        out.append(DraftAnnotation(image_ref=image_path, ref=f"class {names[v]}", category_id=ids[v], bbox=bbox,
                                   area=area, iscrowd=0, segmentation=mask_to_rle(mask), where=where))
    void = index == VOID
    if void.any() and present:
        is_class = (index != VOID) & (index != bg)
        owner = nearest_class(index, is_class, void)
        for v in present:
            mask = void & (owner == v)
            if mask.any():
                bbox, area = mask_bbox_area(mask)
                out.append(DraftAnnotation(
                    image_ref=image_path, ref=f"void near {names[v]}", category_id=ids[v], bbox=bbox, area=area,
                    iscrowd=1, segmentation=mask_to_rle(mask), where=where,
                ))
    return out


def _voc_splits(source: Source, files: list[str], by_stem: dict[str, DraftImage]) -> None:
    for rel in files:
        if not (rel.startswith(VOC_SETS) and rel.endswith(".txt")) or "/" in rel[len(VOC_SETS):]:
            continue
        name = rel[len(VOC_SETS):-4]
        if name.lower() not in SPLIT_NAMES:
            continue  # not a split list (trainval.txt, default.txt): ignored
        where = source.where(rel)
        for n, stem in list_ids(source, rel):
            image = by_stem.get(stem)
            if image is None:
                raise DatasetImportError(f"{where}: line {n}: {stem!r} has no mask {VOC_MASKS}{stem}.png")
            set_split(image, name, f"{where}: line {n}")


def write_masks(manifest: Manifest, tree: ExportTree) -> None:
    from PIL import Image

    from kubeforge.datasets.formats.basic import export_paths, image_split
    from kubeforge.evaluation.segmentation import class_mask

    if manifest.task != "object-detection":
        raise ExportError(f"format masks holds objects' masks; version {manifest.dataset} is {manifest.task} "
                          "(export it as imagefolder)")
    cats = sorted(manifest.categories, key=lambda c: c.id)
    if len(cats) > VOID - 1:
        raise ExportError(f"format masks: {len(cats)} classes; a mask PNG holds at most {VOID - 1} besides background")
    if any(c.name in BACKGROUND_NAMES for c in cats):
        raise ExportError(f"format masks: a class is named like the background ({', '.join(BACKGROUND_NAMES)})")
    index_of = {c.id: k + 1 for k, c in enumerate(cats)}
    names = ["background", *(c.name for c in cats)]  # the line / list position is the mask value
    tree.text("classes.txt", "".join(f"{name}\n" for name in names))
    # datumaro's common_semantic_segmentation (and OpenVINO's accuracy checker) read the classes here
    tree.text(DATASET_META, json.dumps({"labels": names}, indent=1, ensure_ascii=False))
    per_image = manifest.annotations_by_image()
    for im, anns, (split, rel) in zip(manifest.images, per_image, export_paths(manifest, image_split), strict=True):
        folder = f"{split}/" if split else ""
        tree.image(f"images/{folder}{rel}", im.blob)
        mask, stats = class_mask(im, anns, index_of)
        if stats.boxes_filled:
            tree.lose("objects without a mask (painted as their boxes)", stats.boxes_filled)
        if any(a.tags for a in anns):
            tree.lose("object tags")
        buf = io.BytesIO()
        Image.fromarray(mask, mode="L").save(buf, format="PNG")
        tree.file(f"masks/{folder}{rel.rsplit('.', 1)[0]}.png", buf.getvalue())

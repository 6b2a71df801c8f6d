"""Reading and checking COCO ground truth and result files into columnar numpy tables.

The fast path builds each column with one list comprehension and one `np.array`; only when
that fails (or the column holds something wrong) does a per-entry pass run, to name the first
bad entry in one line: `DT.json: results[17]: image_id 99 is not in the ground truth GT.json`.

What is read is what pycocotools' `COCO` and `COCO.loadRes` make of the same input (bbox
results get area w*h and a box polygon as segmentation, segm results get area and bbox from
their RLE, ground-truth `ignore` is `iscrowd`); where pycocotools would crash or silently drop
entries (an image or category id the ground truth lacks, a negative box size) this module
raises `CocoInputError` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

try:  # orjson reads COCO files several times faster than the standard library
    import orjson as _json_lib

    def _loads(data: bytes) -> Any:
        return _json_lib.loads(data)

    _JSONError: type[Exception] = _json_lib.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    import json as _json_lib  # type: ignore[no-redef]

    def _loads(data: bytes) -> Any:
        return _json_lib.loads(data)

    _JSONError = _json_lib.JSONDecodeError


try:  # typed decoding straight into small structs: the fast path for box files
    import msgspec

    class _Image(msgspec.Struct):
        id: int
        width: int = 0
        height: int = 0

    class _Category(msgspec.Struct):
        id: int

    class _Annotation(msgspec.Struct):
        id: int
        image_id: int
        category_id: int
        area: float
        bbox: tuple[float, float, float, float]
        iscrowd: int = 0

    class _GroundTruthDoc(msgspec.Struct):
        images: list[_Image]
        annotations: list[_Annotation]
        categories: list[_Category]

    class _BoxResult(msgspec.Struct):
        image_id: int
        category_id: int
        score: float
        bbox: tuple[float, float, float, float]

    _GT_DECODER: Any = msgspec.json.Decoder(_GroundTruthDoc)
    _RESULTS_DECODER: Any = msgspec.json.Decoder(list[_BoxResult])
    _FAST_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, OverflowError, ValueError, TypeError)
except ImportError:  # pragma: no cover - msgspec is a dependency; the general path works without it
    _GT_DECODER = _RESULTS_DECODER = None
    _FAST_ERRORS = ()


class CocoInputError(ValueError):
    """Input that is not a usable COCO file; the message is one line naming the file and the entry."""


@dataclass
class GroundTruth:
    """A COCO ground truth as columns (annotation order as pycocotools visits them)."""

    image_ids: np.ndarray  # int64 [I], sorted, unique
    heights: np.ndarray  # int64 [I] (0 when absent)
    widths: np.ndarray  # int64 [I]
    category_ids: np.ndarray  # int64 [K], sorted, unique
    image: np.ndarray  # int64 [G] index into image_ids
    category: np.ndarray  # int64 [G] index into category_ids
    ann_id: np.ndarray  # int64 [G]
    area: np.ndarray  # float64 [G]
    crowd: np.ndarray  # bool [G]
    bbox: np.ndarray | None  # float64 [G, 4] xywh (iou_type bbox)
    segmentation: list[Any] | None  # raw segmentations (iou_type segm)
    index: np.ndarray  # int64 [G] each row's position in the file's annotations list


@dataclass
class Results:
    """A COCO results list as columns, in file order."""

    image: np.ndarray  # int64 [D] index into the ground truth's image_ids
    category: np.ndarray  # int64 [D] index into category_ids
    score: np.ndarray  # float64 [D]
    area: np.ndarray  # float64 [D]
    bbox: np.ndarray | None  # float64 [D, 4] (iou_type bbox)
    rles: list[Any] | None  # RLEs (iou_type segm), compressed or as COCO.annToRLE makes them


def read_json(path: Path | str) -> Any:
    """The parsed JSON of `path`, or CocoInputError naming the file and where it broke."""
    return _parse_json(_read_bytes(path), str(path))


def _read_bytes(path: Path | str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CocoInputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse_json(data: bytes, name: str) -> Any:
    try:
        return _loads(data)
    except _JSONError as exc:
        pos = int(getattr(exc, "pos", 0) or 0)
        if not data.strip():
            raise CocoInputError(f"{name}: not valid JSON (empty file)") from None
        if pos >= len(data.rstrip()):
            raise CocoInputError(f"{name}: not valid JSON (truncated at byte {pos})") from None
        reason = getattr(exc, "msg", str(exc))
        raise CocoInputError(f"{name}: not valid JSON ({reason} at byte {pos})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CocoInputError(f"{name}: not valid JSON ({exc})") from None


def load_ground_truth(path: Path | str, iou_type: str) -> GroundTruth:
    """A ground-truth file as columns. Box files take a typed fast path; anything it does not
    accept (masks, an unusual field type, an error to report) goes through the general parser."""
    name = str(path)
    data = _read_bytes(path)
    if iou_type == "bbox" and _GT_DECODER is not None:
        try:
            doc = _GT_DECODER.decode(data)
            n = len(doc.annotations)
            raw_image_ids = np.fromiter(map(attrgetter("id"), doc.images), np.int64, len(doc.images))
            image_ids = np.unique(raw_image_ids)
            category_ids = np.unique(np.fromiter(map(attrgetter("id"), doc.categories), np.int64,
                                                 len(doc.categories)))
            anns = doc.annotations
            ann_id = np.fromiter(map(attrgetter("id"), anns), np.int64, n)
            ann_image = np.fromiter(map(attrgetter("image_id"), anns), np.int64, n)
            ann_cat = np.fromiter(map(attrgetter("category_id"), anns), np.int64, n)
            area = np.fromiter(map(attrgetter("area"), anns), np.float64, n)
            crowd = np.fromiter(map(attrgetter("iscrowd"), anns), np.int64, n) != 0
            bbox = np.fromiter(chain.from_iterable(map(attrgetter("bbox"), anns)), np.float64, 4 * n).reshape(n, 4)
            fast = bool(np.isfinite(area).all() and np.isfinite(bbox).all())
        except _FAST_ERRORS:
            fast = False
        if fast:
            image, category = _check_annotation_ids(image_ids, category_ids, ann_image, ann_cat, name)
            _check_negative(bbox, "annotations", name)
            zeros = np.zeros(len(image_ids), dtype=np.int64)
            return _ground_truth(image_ids, zeros, zeros, category_ids, ann_id, image, category, area, crowd,
                                 bbox, None)
    return parse_ground_truth(_parse_json(data, name), iou_type, name)


def load_results(path: Path | str, gt: GroundTruth, iou_type: str, gt_name: str = "the ground truth") -> Results:
    """A results file as columns (typed fast path for box results, as `load_ground_truth`)."""
    name = str(path)
    data = _read_bytes(path)
    if iou_type == "bbox" and _RESULTS_DECODER is not None:
        try:
            rows = _RESULTS_DECODER.decode(data)
            n = len(rows)
            r_image = np.fromiter(map(attrgetter("image_id"), rows), np.int64, n)
            r_cat = np.fromiter(map(attrgetter("category_id"), rows), np.int64, n)
            score = np.fromiter(map(attrgetter("score"), rows), np.float64, n)
            bbox = np.fromiter(chain.from_iterable(map(attrgetter("bbox"), rows)), np.float64, 4 * n).reshape(n, 4)
            fast = n > 0 and bool(np.isfinite(score).all() and np.isfinite(bbox).all())
        except _FAST_ERRORS:
            fast = False
        if fast:
            image, category = _check_result_ids(gt, r_image, r_cat, name, gt_name)
            _check_negative(bbox, "results", name)
            return Results(image=image, category=category, score=score, area=bbox[:, 2] * bbox[:, 3], bbox=bbox,
                           rles=None)
    return parse_results(_parse_json(data, name), gt, iou_type, name, gt_name)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v: Any) -> bool:
    return (type(v) is int) or (type(v) is float and v.is_integer())


def _is_number(v: Any) -> bool:
    return (type(v) is int) or (type(v) is float and math.isfinite(v))


def _first_bad(entries: list[Any], key: str, check: Any, where: str, name: str, what: str,
               default: Any = KeyError) -> None:
    """Raise for the first entry whose `key` is missing or fails `check` (the slow path)."""
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CocoInputError(f"{name}: {where}[{i}]: expected an object, got {_describe(entry)}")
        if key not in entry:
            if default is KeyError:
                raise CocoInputError(f"{name}: {where}[{i}]: missing {key}")
            continue
        if not check(entry[key]):
            raise CocoInputError(f"{name}: {where}[{i}].{key}: expected {what}, got {_describe(entry[key])}")


def _ids(entries: list[Any], key: str, where: str, name: str) -> np.ndarray:
    try:
        arr = np.array([e[key] for e in entries])
    except (KeyError, TypeError, ValueError, OverflowError):
        arr = None
    if arr is not None and len(entries) == 0:
        return np.zeros(0, dtype=np.int64)
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr is not None and arr.ndim == 1 and arr.dtype.kind == "f" and np.all(np.isfinite(arr)) \
            and np.all(arr == np.floor(arr)) and np.all(np.abs(arr) < 2**62):
        return arr.astype(np.int64)
    _first_bad(entries, key, _is_int, where, name, "an integer id")
    raise CocoInputError(f"{name}: {where}: {key} values are not integer ids")  # pragma: no cover


def _numbers(entries: list[Any], key: str, where: str, name: str, default: float | None = None) -> np.ndarray:
    try:
        if default is None:
            arr = np.array([e[key] for e in entries], dtype=np.float64)
        else:
            arr = np.array([e.get(key, default) for e in entries], dtype=np.float64)
    except (KeyError, TypeError, ValueError, AttributeError):
        arr = None
    if arr is not None and arr.shape == (len(entries),) and np.all(np.isfinite(arr)):
        return arr
    _first_bad(entries, key, _is_number, where, name, "a finite number",
               default=KeyError if default is None else None)
    raise CocoInputError(f"{name}: {where}: {key} values are not numbers")  # pragma: no cover


def _boxes(entries: list[Any], where: str, name: str, indices: np.ndarray | None = None) -> np.ndarray:
    """[N, 4] xywh boxes; negative widths or heights are an error."""
    if not entries:
        return np.zeros((0, 4))
    try:
        arr = np.array([e["bbox"] for e in entries], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        arr = None
    ok = arr is not None and arr.shape == (len(entries), 4) and bool(np.all(np.isfinite(arr)))
    if not ok:
        def check(v: Any) -> bool:
            return isinstance(v, list) and len(v) == 4 and all(_is_number(x) for x in v)
        _first_bad(entries, "bbox", check, where, name, "[x, y, width, height]")
        raise CocoInputError(f"{name}: {where}: bbox values are not [x, y, width, height]")  # pragma: no cover
    assert arr is not None
    return _check_negative(arr.reshape(len(entries), 4), where, name, indices)


def _check_negative(arr: np.ndarray, where: str, name: str, indices: np.ndarray | None = None) -> np.ndarray:
    bad = np.flatnonzero((arr[:, 2] < 0) | (arr[:, 3] < 0))
    if len(bad):
        i = int(bad[0])
        side, value = ("width", arr[i, 2]) if arr[i, 2] < 0 else ("height", arr[i, 3])
        j = i if indices is None else int(indices[i])
        raise CocoInputError(f"{name}: {where}[{j}].bbox: negative {side} {value}")
    return arr


def _section(doc: dict[str, Any], key: str, name: str, required: bool = True) -> list[Any]:
    if key not in doc:
        if required:
            raise CocoInputError(f"{name}: not a COCO ground truth (no \"{key}\" list)")
        return []
    value = doc[key]
    if not isinstance(value, list):
        raise CocoInputError(f"{name}: {key}: expected a list, got {type(value).__name__}")
    return value


def _check_objects(entries: list[Any], where: str, name: str) -> None:
    if not all(type(e) is dict for e in entries):
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise CocoInputError(f"{name}: {where}[{i}]: expected an object, got {_describe(e)}")


def parse_ground_truth(doc: Any, iou_type: str, name: str = "ground truth") -> GroundTruth:
    """Columns of a COCO ground-truth dict; CocoInputError (one line) for anything unusable."""
    if not isinstance(doc, dict):
        raise CocoInputError(f"{name}: not a COCO ground truth (expected a JSON object with images, "
                             f"annotations and categories, got {type(doc).__name__})")
    images = _section(doc, "images", name)
    annotations = _section(doc, "annotations", name)
    categories = _section(doc, "categories", name)
    _check_objects(images, "images", name)
    _check_objects(annotations, "annotations", name)
    _check_objects(categories, "categories", name)

    raw_image_ids = _ids(images, "id", "images", name)
    # pycocotools keys images by id: the last entry of a repeated id wins.
    image_ids, first_rev = np.unique(raw_image_ids[::-1], return_index=True)
    last = len(images) - 1 - first_rev
    if iou_type == "segm":
        heights = _ids(images, "height", "images", name)[last] if images else np.zeros(0, np.int64)
        widths = _ids(images, "width", "images", name)[last] if images else np.zeros(0, np.int64)
    else:
        heights = np.zeros(len(image_ids), dtype=np.int64)
        widths = np.zeros(len(image_ids), dtype=np.int64)
    category_ids = np.unique(_ids(categories, "id", "categories", name))

    ann_id = _ids(annotations, "id", "annotations", name)
    ann_image = _ids(annotations, "image_id", "annotations", name)
    ann_cat = _ids(annotations, "category_id", "annotations", name)
    image, category = _check_annotation_ids(image_ids, category_ids, ann_image, ann_cat, name)
    area = _numbers(annotations, "area", "annotations", name)
    try:
        crowd = np.array([bool(e.get("iscrowd", 0)) for e in annotations], dtype=bool)
    except (TypeError, ValueError):  # pragma: no cover - bool() accepts anything JSON holds
        crowd = np.zeros(len(annotations), dtype=bool)
    bbox = _boxes(annotations, "annotations", name) if iou_type == "bbox" else None
    segmentation = None
    if iou_type == "segm":
        for i, e in enumerate(annotations):
            if "segmentation" not in e:
                raise CocoInputError(f"{name}: annotations[{i}]: missing segmentation")
        segmentation = [e["segmentation"] for e in annotations]
    return _ground_truth(image_ids, heights, widths, category_ids, ann_id, image, category, area, crowd, bbox,
                         segmentation)


def _check_annotation_ids(image_ids: np.ndarray, category_ids: np.ndarray, ann_image: np.ndarray,
                          ann_cat: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Image and category indices of the annotations; CocoInputError for ids the file does not define."""
    return (_positions(image_ids, ann_image, f"{name}: annotations[{{i}}].image_id: {{id}} is not in images"),
            _positions(category_ids, ann_cat, f"{name}: annotations[{{i}}].category_id: {{id}} is not in categories"))


def _positions(defined: np.ndarray, used: np.ndarray, error: str) -> np.ndarray:
    """Where each of `used` is in the sorted `defined`; CocoInputError (`error` with i and id) for one absent."""
    index = np.searchsorted(defined, used)
    ok = index < len(defined)
    ok[ok] = defined[index[ok]] == used[ok]
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise CocoInputError(error.format(i=i, id=used[i]))
    return index


def _ground_truth(image_ids: np.ndarray, heights: np.ndarray, widths: np.ndarray, category_ids: np.ndarray,
                  ann_id: np.ndarray, image: np.ndarray, category: np.ndarray, area: np.ndarray,
                  crowd: np.ndarray, bbox: np.ndarray | None, segmentation: list[Any] | None) -> GroundTruth:
    # pycocotools keys annotations by id too: a repeated id makes every occurrence the last one
    # (each keeps its own place in the visiting order, but takes the last one's content).
    order = np.argsort(image, kind="stable")  # pycocotools visits annotations image by image
    uniq, first_rev = np.unique(ann_id[::-1], return_index=True)
    if len(uniq) != len(ann_id):
        last_of = (len(ann_id) - 1 - first_rev)[np.searchsorted(uniq, ann_id)]
        content = last_of[order]
    else:
        content = order
    # ... and then groups them by (image, category) in that order.
    regroup = np.lexsort((category[content], image[content]))
    content = content[regroup]
    return GroundTruth(
        image_ids=image_ids, heights=heights, widths=widths, category_ids=category_ids,
        image=image[content], category=category[content], ann_id=ann_id[content], area=area[content],
        crowd=crowd[content], bbox=None if bbox is None else bbox[content],
        segmentation=None if segmentation is None else [segmentation[i] for i in content], index=content,
    )


def parse_results(results: Any, gt: GroundTruth, iou_type: str, name: str = "results",
                  gt_name: str = "the ground truth") -> Results:
    """Columns of a COCO results list, as `COCO.loadRes` completes them."""
    if not isinstance(results, list):
        raise CocoInputError(f"{name}: expected a JSON list of results, got {type(results).__name__}")
    _check_objects(results, "results", name)
    n = len(results)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Results(image=empty, category=empty, score=np.zeros(0), area=np.zeros(0),
                       bbox=np.zeros((0, 4)) if iou_type == "bbox" else None,
                       rles=[] if iou_type == "segm" else None)
    r_image = _ids(results, "image_id", "results", name)
    r_cat = _ids(results, "category_id", "results", name)
    image, category = _check_result_ids(gt, r_image, r_cat, name, gt_name)
    score = _numbers(results, "score", "results", name)

    first = results[0]
    box_results = "bbox" in first and first["bbox"] != []  # loadRes decides on the first entry
    if not box_results and "segmentation" not in first:
        raise CocoInputError(f"{name}: results[0]: expected a bbox or a segmentation")
    bbox = None
    rles: list[Any] | None = None
    if box_results:
        boxes = _boxes(results, "results", name)
        area = boxes[:, 2] * boxes[:, 3]
        if iou_type == "bbox":
            bbox = boxes
        else:
            rles = []
            for i, e in enumerate(results):
                if "segmentation" in e:
                    rles.append(_to_rle(e["segmentation"], gt, int(image[i]), name, f"results[{i}]"))
                else:
                    x, y, w, h = boxes[i].tolist()
                    x2, y2 = x + w, y + h
                    rles.append(_to_rle([[x, y, x, y2, x2, y2, x2, y]], gt, int(image[i]), name, f"results[{i}]"))
    else:
        from faster_coco_eval.core import mask as mask_utils

        segs = []
        for i, e in enumerate(results):
            seg = e.get("segmentation")
            if not (isinstance(seg, dict) and isinstance(seg.get("counts"), str | bytes)
                    and isinstance(seg.get("size"), list) and len(seg["size"]) == 2):
                raise CocoInputError(f"{name}: results[{i}].segmentation: expected a compressed RLE "
                                     "({\"size\": [h, w], \"counts\": \"...\"})")
            if iou_type == "segm":
                _check_size(seg, gt, int(image[i]), name, f"results[{i}]")
            segs.append(seg)
        try:
            area = np.asarray(mask_utils.area(segs), dtype=np.float64).reshape(n)
        except Exception as exc:  # the C decoder's errors name no entry
            raise CocoInputError(f"{name}: results: a segmentation is not a valid RLE ({exc})") from None
        if iou_type == "bbox":
            has_box = np.array(["bbox" in e for e in results])
            bbox = np.zeros((n, 4))
            if has_box.any():
                idx = np.flatnonzero(has_box)
                bbox[idx] = _boxes([results[i] for i in idx], "results", name, indices=idx)
            if (~has_box).any():
                idx = np.flatnonzero(~has_box)
                bbox[idx] = np.asarray(mask_utils.toBbox([segs[i] for i in idx]), dtype=np.float64).reshape(-1, 4)
        else:
            rles = segs
    return Results(image=image, category=category, score=score, area=area, bbox=bbox, rles=rles)


def _check_result_ids(gt: GroundTruth, r_image: np.ndarray, r_cat: np.ndarray, name: str,
                      gt_name: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.searchsorted(gt.image_ids, r_image)
    ok = image < len(gt.image_ids)
    ok[ok] = gt.image_ids[image[ok]] == r_image[ok]
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise CocoInputError(f"{name}: results[{i}]: image_id {r_image[i]} is not in the ground truth {gt_name}")
    category = np.searchsorted(gt.category_ids, r_cat)
    ok = category < len(gt.category_ids)
    ok[ok] = gt.category_ids[category[ok]] == r_cat[ok]
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise CocoInputError(
            f"{name}: results[{i}]: category_id {r_cat[i]} is not in the ground truth {gt_name}")
    return image, category


def _check_size(rle: dict[str, Any], gt: GroundTruth, image: int, name: str, where: str) -> None:
    size = rle.get("size")
    h, w = int(gt.heights[image]), int(gt.widths[image])
    if not (isinstance(size, list) and len(size) == 2 and size[0] == h and size[1] == w):
        raise CocoInputError(f"{name}: {where}.segmentation: size {_describe(size)} is not the image's "
                             f"[{h}, {w}]")


def _to_rle(segm: Any, gt: GroundTruth, image: int, name: str, where: str) -> Any:
    """`COCO.annToRLE`: polygons and uncompressed RLEs become a compressed RLE of the image's size."""
    from faster_coco_eval.core import mask as mask_utils

    h, w = int(gt.heights[image]), int(gt.widths[image])
    try:
        if isinstance(segm, list):
            if not segm or not all(isinstance(p, list) and len(p) >= 4 and len(p) % 2 == 0
                                   and all(_is_number(v) for v in p) for p in segm):
                raise CocoInputError(f"{name}: {where}.segmentation: expected polygons (lists of at least "
                                     "3 x, y pairs) or an RLE")
            return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        if isinstance(segm, dict) and "counts" in segm:
            _check_size(segm, gt, image, name, where)
            if isinstance(segm["counts"], list):
                return mask_utils.frPyObjects(segm, h, w)
            if isinstance(segm["counts"], str | bytes):
                return segm
    except CocoInputError:
        raise
    except Exception as exc:  # the C encoder's errors name no entry
        raise CocoInputError(f"{name}: {where}.segmentation: not a valid polygon or RLE ({exc})") from None
    raise CocoInputError(f"{name}: {where}.segmentation: expected polygons or an RLE, got {_describe(segm)}")


def ground_truth_rles(gt: GroundTruth, name: str = "ground truth") -> list[Any]:
    """The ground truth's segmentations as compressed RLEs (pycocotools `_toMask`)."""
    assert gt.segmentation is not None
    return [_to_rle(s, gt, int(img), name, f"annotations[{int(i)}]")
            for s, img, i in zip(gt.segmentation, gt.image, gt.index, strict=True)]

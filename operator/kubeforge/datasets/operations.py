"""Derive a manifest from parent manifests: pure, deterministic functions (no store, no clock).

`apply_operations(parents, operations, dataset)` replays a DatasetVersion's `spec.operations`.
The same parents and operations always give the same manifest, hence the same digest: that
is what makes a lineage replayable. Randomness (assignSplit, sample) ranks images by
sha256(seed:file_name), so the choice depends on the seed and on each image's own name only,
not on Python's random module or on the other images (adding images to a dataset moves few
existing ones between splits).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from kubeforge.api.dataset_operations import (
    SPLIT_TAGS,
    AssignSplitOp,
    ConvertGeometryOp,
    DatasetOperation,
    DropClassesOp,
    FilterOp,
    MergeClassesOp,
    MergeOp,
    RemapClassesOp,
    SampleOp,
)
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation

SCORE_TAG = "score"  # an object's confidence, `score=0.8731` (predict.to_dataset writes it)


class OperationError(ValueError):
    """An operation cannot apply to its input (an unknown class, a merge conflict)."""


def apply_operations(
    parents: Sequence[Manifest], operations: Sequence[DatasetOperation], dataset: str,
    parent_names: Sequence[str] | None = None,
) -> Manifest:
    """The manifest of `dataset` derived from `parents` by `operations`, in canonical order.

    `parent_names` label the parents in error messages (default: `dataset@digest12`).
    """
    if not parents:
        raise OperationError("a derived version needs at least one parent")
    names = list(parent_names) if parent_names is not None else [f"{p.dataset}@{p.digest()[:12]}" for p in parents]
    if len(parents) > 1 and (not operations or operations[0].kind != "merge"):
        raise OperationError(f"{len(parents)} parents ({', '.join(names)}): the first operation must be merge")
    current = parents[0].model_copy(update={"dataset": dataset})
    for i, operation in enumerate(operations):
        where = f"operations[{i}] ({operation.kind})"
        try:
            current = _apply_one(current, operation, parents, names)
        except OperationError as exc:
            raise OperationError(f"{where}: {exc}") from None
        current = current.model_copy(update={"dataset": dataset})
    return current.canonical()


def _apply_one(m: Manifest, operation: DatasetOperation, parents: Sequence[Manifest], names: Sequence[str]) -> Manifest:
    op = operation.op
    if isinstance(op, MergeOp):
        return merge([m, *parents[1:]], names, on_conflict=op.on_conflict)
    if isinstance(op, FilterOp):
        return filter_images(m, op)
    if isinstance(op, RemapClassesOp):
        return remap_classes(m, op.mapping)
    if isinstance(op, MergeClassesOp):
        return remap_classes(m, {name: op.to for name in op.from_})
    if isinstance(op, DropClassesOp):
        return drop_classes(m, op.classes, drop_empty_images=op.drop_empty_images)
    if isinstance(op, ConvertGeometryOp):
        return convert_geometry(m, op.to)
    if isinstance(op, AssignSplitOp):
        return assign_split(m, op)
    if isinstance(op, SampleOp):
        return sample(m, op.n, op.seed)
    raise OperationError(f"unknown operation {type(op).__name__}")


# --- helpers ---------------------------------------------------------------------------


def _rank(seed: int, file_name: str) -> bytes:
    return hashlib.sha256(f"{seed}:{file_name}".encode()).digest()


def _select(m: Manifest, keep: Sequence[bool]) -> Manifest:
    """The images where keep[i] is true, with their annotations re-indexed."""
    new_index: dict[int, int] = {}
    images = []
    for i, im in enumerate(m.images):
        if keep[i]:
            new_index[i] = len(images)
            images.append(im)
    anns = [a.model_copy(update={"image": new_index[a.image]}) for a in m.annotations if a.image in new_index]
    return m.model_copy(update={"images": images, "annotations": anns})


def _check_classes(m: Manifest, wanted: Sequence[str], field: str) -> None:
    known = set(m.class_names())
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise OperationError(f"{field}: no class {', '.join(map(repr, unknown))} in the input "
                             f"(classes: {', '.join(m.class_names()) or 'none'})")


def objects_per_image(m: Manifest) -> list[list[str]]:
    """Class names of each image's objects; a classification label counts as one object."""
    names = {c.id: c.name for c in m.categories}
    out: list[list[str]] = [[] for _ in m.images]
    if m.task == "classification":
        for i, im in enumerate(m.images):
            if im.category_id is not None:
                out[i].append(names[im.category_id])
    else:
        for a in m.annotations:
            out[a.image].append(names[a.category_id])
    return out


# --- operations -------------------------------------------------------------------------


def score_of(tags: Sequence[str]) -> float | None:
    """The confidence in a `score=0.8731` tag (what a PredictionJob writes), None without one."""
    for tag in tags:
        name, sep, value = tag.partition("=")
        if sep and name == SCORE_TAG:
            try:
                return float(value)
            except ValueError:
                raise OperationError(f"minScore: tag {tag!r} is not {SCORE_TAG}=<number>") from None
    return None


def keep_confident(m: Manifest, min_score: float) -> Manifest:
    """The objects (a classification: the labels) scoring at least `min_score`; unscored ones stay. A label
    dropped leaves its image unlabelled (without its score tag); `minAnnotations: 1` then drops the image."""
    def confident(tags: Sequence[str]) -> bool:
        score = score_of(tags)
        return score is None or score >= min_score

    if m.task == "classification":
        images = [im if im.category_id is None or confident(im.tags) else
                  im.model_copy(update={"category_id": None, "tags": [t for t in im.tags
                                                                      if t.partition("=")[0] != SCORE_TAG]})
                  for im in m.images]
        return m.model_copy(update={"images": images})
    return m.model_copy(update={"annotations": [a for a in m.annotations if confident(a.tags)]})


def filter_images(m: Manifest, op: FilterOp) -> Manifest:
    if op.min_score is not None:
        m = keep_confident(m, op.min_score)
    if op.classes:
        _check_classes(m, op.classes, "classes")
    classes = set(op.classes or ())
    tags = set(op.tags or ())
    objects = objects_per_image(m)
    keep = []
    for i, im in enumerate(m.images):
        n = len(objects[i])
        ok = (
            (not classes or not classes.isdisjoint(objects[i]))
            and (not tags or not tags.isdisjoint(im.tags))
            and (op.min_width is None or im.width >= op.min_width)
            and (op.max_width is None or im.width <= op.max_width)
            and (op.min_height is None or im.height >= op.min_height)
            and (op.max_height is None or im.height <= op.max_height)
            and (op.min_annotations is None or n >= op.min_annotations)
            and (op.max_annotations is None or n <= op.max_annotations)
        )
        keep.append(ok)
    return _select(m, keep)


def _image_content(m: Manifest, i: int, anns: list[ManifestAnnotation], names: dict[int, str]) -> str:
    """An image's content with class names instead of ids, to compare across parents."""
    im = m.images[i]
    label = names[im.category_id] if im.category_id is not None else None
    objs = sorted(json.dumps({**a.model_dump(mode="json", exclude={"image", "category_id"}),
                              "class": names[a.category_id]}, sort_keys=True) for a in anns)
    return json.dumps([im.blob, im.width, im.height, label, sorted(set(im.tags)), objs], sort_keys=True)


def merge(manifests: Sequence[Manifest], names: Sequence[str], on_conflict: str = "Fail") -> Manifest:
    """Union by file_name. Classes are matched by name; a class new to the result gets the next id."""
    base = manifests[0]
    for other, name in zip(manifests[1:], names[1:], strict=False):
        if other.task != base.task:
            raise OperationError(f"cannot merge {name} ({other.task}) into {names[0]} ({base.task})")
    categories = list(base.categories)
    by_name = {c.name: c.id for c in categories}
    images = list(base.images)
    annotations = list(base.annotations)
    # Computed once per parent: a conflict check must not rescan a parent (O(n) merges stay O(n)).
    anns_of = [p.annotations_by_image() for p in manifests]
    names_of = [{c.id: c.name for c in p.categories} for p in manifests]
    seen = {im.file_name: (0, i) for i, im in enumerate(base.images)}
    for p, other in enumerate(manifests[1:], start=1):
        id_map = {}
        for cat in sorted(other.categories, key=lambda c: c.id):
            if cat.name not in by_name:
                by_name[cat.name] = max(by_name.values(), default=-1) + 1
                categories.append(Category(id=by_name[cat.name], name=cat.name, supercategory=cat.supercategory))
            id_map[cat.id] = by_name[cat.name]
        other_anns = anns_of[p]
        for i, im in enumerate(other.images):
            if im.file_name in seen:
                q, j = seen[im.file_name]
                same = _image_content(manifests[q], j, anns_of[q][j], names_of[q]) == _image_content(
                    other, i, other_anns[i], names_of[p])
                if not same and on_conflict == "Fail":
                    raise OperationError(
                        f"{im.file_name} differs between {names[q]} and {names[p]} (image, tags or annotations); "
                        f"rename one, or set merge.onConflict: KeepFirst")
                continue
            seen[im.file_name] = (p, i)
            new_i = len(images)
            label = id_map[im.category_id] if im.category_id is not None else None
            images.append(im.model_copy(update={"category_id": label}))
            annotations.extend(a.model_copy(update={"image": new_i, "category_id": id_map[a.category_id]})
                               for a in other_anns[i])
    return base.model_copy(update={"categories": categories, "images": images, "annotations": annotations})


def remap_classes(m: Manifest, mapping: dict[str, str]) -> Manifest:
    """Rename classes; several old names onto one new name merge them.

    The merged class keeps the id of the class already called the new name (when it is not
    itself renamed away), else the smallest id among the classes merged into it.
    """
    _check_classes(m, list(mapping), "from")
    new_name = {c.id: mapping.get(c.name, c.name) for c in m.categories}
    staying = {c.name: c.id for c in m.categories if c.name not in mapping}
    target_id: dict[str, int] = {}
    for cat in sorted(m.categories, key=lambda c: c.id):
        name = new_name[cat.id]
        if name not in target_id:
            target_id[name] = staying.get(name, cat.id)
    ids = {old: target_id[new_name[old]] for old in new_name}
    sup = {c.id: c.supercategory for c in m.categories}
    categories = [Category(id=i, name=n, supercategory=sup.get(i)) for n, i in sorted(target_id.items(),
                                                                                        key=lambda kv: kv[1])]
    images = [im.model_copy(update={"category_id": ids[im.category_id]}) if im.category_id is not None else im
              for im in m.images]
    anns = [a.model_copy(update={"category_id": ids[a.category_id]}) for a in m.annotations]
    return m.model_copy(update={"categories": categories, "images": images, "annotations": anns})


def drop_classes(m: Manifest, classes: Sequence[str], *, drop_empty_images: bool = False) -> Manifest:
    _check_classes(m, classes, "classes")
    drop = {c.id for c in m.categories if c.name in set(classes)}
    categories = [c for c in m.categories if c.id not in drop]
    if m.task == "classification":
        out = _select(m, [im.category_id not in drop for im in m.images])
        return out.model_copy(update={"categories": categories})
    lost = [False] * len(m.images)
    left = [0] * len(m.images)
    anns = []
    for a in m.annotations:
        if a.category_id in drop:
            lost[a.image] = True
        else:
            left[a.image] += 1
            anns.append(a)
    out = m.model_copy(update={"categories": categories, "annotations": anns})
    if drop_empty_images:
        out = _select(out, [not (lost[i] and left[i] == 0) for i in range(len(m.images))])
    return out


def convert_geometry(m: Manifest, to: str) -> Manifest:
    """Polygon segmentations to boxes (the polygon's extent) or to COCO RLE masks; others untouched."""
    anns = []
    for a in m.annotations:
        seg = a.segmentation
        if not isinstance(seg, list) or not seg:
            anns.append(a)
            continue
        if to == "box":
            xs = [x for poly in seg for x in poly[0::2]]
            ys = [y for poly in seg for y in poly[1::2]]
            x0, y0 = min(xs), min(ys)
            w, h = max(xs) - x0, max(ys) - y0
            anns.append(a.model_copy(update={"bbox": [x0, y0, w, h], "area": float(w * h), "segmentation": None}))
        else:
            im = m.images[a.image]
            rle, area = _polygon_rle(seg, im.height, im.width)
            anns.append(a.model_copy(update={"segmentation": rle, "area": area}))
    return m.model_copy(update={"annotations": anns})


def _polygon_rle(polygons: list[list[float]], height: int, width: int) -> tuple[dict[str, object], float]:
    from faster_coco_eval.core import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    counts = rle["counts"]
    # Compressed RLE counts are ASCII bytes; JSON (and the manifest) wants a string.
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [height, width], "counts": text}, float(mask_utils.area(rle))


def assign_split(m: Manifest, op: AssignSplitOp) -> Manifest:
    """Replace every image's split tag (train/val/test)."""
    split: list[str | None] = [None] * len(m.images)
    if op.method == "random":
        order = sorted(range(len(m.images)), key=lambda i: _rank(op.seed, m.images[i].file_name))
        n = len(order)
        cut_train = round(n * op.train / 100)
        cut_val = round(n * (op.train + op.val) / 100)
        for pos, i in enumerate(order):
            split[i] = "train" if pos < cut_train else ("val" if pos < cut_val else "test")
    else:
        rules = op.from_tags or {}
        for i, im in enumerate(m.images):
            tags = set(im.tags)
            split[i] = next((s for s in SPLIT_TAGS if not tags.isdisjoint(rules.get(s, ()))), None)
    images = []
    for im, s in zip(m.images, split, strict=True):
        tags = sorted({t for t in im.tags if t not in SPLIT_TAGS} | ({s} if s else set()))
        images.append(im.model_copy(update={"tags": tags}))
    return m.model_copy(update={"images": images})


def sample(m: Manifest, n: int, seed: int) -> Manifest:
    if n >= len(m.images):
        return m
    chosen = set(sorted(range(len(m.images)), key=lambda i: _rank(seed, m.images[i].file_name))[:n])
    return _select(m, [i in chosen for i in range(len(m.images))])

"""Exporters for the two formats whose importers predate this package: COCO and ImageFolder.

COCO: the release layout. A version that records splits: `annotations/instances_<split>.json`
with its images under `images/<split>/` (`file_name` relative to that folder); images without a
split go in `annotations/instances_default.json` and `images/default/`. A version without splits:
one `annotations/instances_default.json` and `images/` (as CVAT and datumaro write it). An image's
path is its version path without a leading `images/` or split folder (`images/train/a.png` ->
`images/train/a.png`), unless that makes two paths in one split the same (then the version path
is kept). Image ids and annotation ids count from 1 across all files. Other image tags go in a
non-standard `tags` list per image and object tags in CVAT-style `attributes` per annotation
(`{"difficult": true, "pose": "Left"}`); other COCO tools ignore both. Lossless.
ImageFolder: `<class>/<image>`, or `<split>/<class>/<image>` when every image records a split;
only classification versions; other image tags are lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubeforge.datasets.formats.common import SPLIT_NAMES, export_rest, split_tag, split_tags
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Manifest, ManifestImage


def tags_to_attributes(tags: list[str]) -> dict[str, Any]:
    return {name: True if value is None else value for name, value in map(split_tag, sorted(set(tags)))}


def export_paths(manifest: Manifest, subset: Callable[[ManifestImage], str | None]) -> list[tuple[str | None, str]]:
    """(subset, path inside the subset's folder) for each image: `export_rest` of its version path,
    unless two images of one subset would then share a path (then the version path, less a
    leading `images/`, and failing that the version path itself)."""
    groups: dict[str | None, list[int]] = {}
    for i, im in enumerate(manifest.images):
        groups.setdefault(subset(im), []).append(i)
    out: list[tuple[str | None, str]] = [(None, "")] * len(manifest.images)
    for key, members in groups.items():
        names = [im.file_name for im in (manifest.images[i] for i in members)]
        for attempt in ([export_rest(n, key) for n in names], [export_rest(n, None) for n in names], names):
            if len(set(attempt)) == len(attempt):
                break
        for i, rest in zip(members, attempt, strict=True):
            out[i] = (key, rest)
    return out


def image_split(im: ManifestImage) -> str | None:
    splits = split_tags(im.tags)
    if len(splits) > 1:
        raise ExportError(f"{im.file_name}: split tags {', '.join(splits)}: an image belongs to one split")
    return splits[0] if splits else None


def write_coco(manifest: Manifest, tree: ExportTree) -> None:
    if manifest.task != "object-detection":
        raise ExportError(f"format coco holds objects; version {manifest.dataset} is {manifest.task} "
                          "(export it as imagefolder)")
    paths = export_paths(manifest, image_split)
    split = any(key is not None for key, _ in paths)
    files: dict[str, dict[str, list[Any]]] = {}
    n_anns = 0
    for i, (im, anns, (key, rest)) in enumerate(
            zip(manifest.images, manifest.annotations_by_image(), paths, strict=True), start=1):
        name = key or "default"
        tree.image(f"images/{name}/{rest}" if split else f"images/{rest}", im.blob)
        entry: dict[str, Any] = {"id": i, "file_name": rest, "width": im.width, "height": im.height}
        tags = sorted(set(im.tags) - {key})
        if tags:
            entry["tags"] = tags
        out = files.setdefault(name, {"images": [], "annotations": []})
        out["images"].append(entry)
        for a in anns:
            n_anns += 1
            ann: dict[str, Any] = {"id": n_anns, "image_id": i, "category_id": a.category_id,
                                   "bbox": a.bbox, "area": a.area, "iscrowd": a.iscrowd}
            if a.segmentation is not None:
                ann["segmentation"] = a.segmentation
            if a.tags:
                ann["attributes"] = tags_to_attributes(a.tags)
            out["annotations"].append(ann)
    categories = [
        {"id": c.id, "name": c.name, **({"supercategory": c.supercategory} if c.supercategory else {})}
        for c in sorted(manifest.categories, key=lambda c: c.id)
    ]
    for name, content in sorted(files.items()):
        coco = {"info": {"description": f"kubeforge export of {manifest.dataset}"}, "images": content["images"],
                "annotations": content["annotations"], "categories": categories}
        tree.text(f"annotations/instances_{name}.json", json.dumps(coco, ensure_ascii=False, separators=(",", ":")))


def write_imagefolder(manifest: Manifest, tree: ExportTree) -> None:
    """`<class>/<image>`, or `<split>/<class>/<image>` when every labelled image records a split
    (the layout torchvision's ImageFolder reads per split and our importer reads back with its splits)."""
    if manifest.task != "classification":
        raise ExportError(f"format imagefolder holds one class per image; version {manifest.dataset} is "
                          f"{manifest.task} (export it as coco, voc, yolo or supervisely)")
    names = {c.id: c.name for c in manifest.categories}
    labelled = [im for im in manifest.images if im.category_id is not None]
    if len(labelled) < len(manifest.images):
        tree.lose("unlabeled images (ImageFolder needs a class folder)")
    splits = [image_split(im) for im in labelled]
    by_split = all(splits)
    if any(splits) and not by_split:
        tree.lose("splits (some images record none; ImageFolder cannot mix split and class folders)")
    for im, split in zip(labelled, splits, strict=True):
        if set(im.tags) - set(split_tags(im.tags)):
            tree.lose("image tags")
        cls = names[im.category_id]  # type: ignore[index]
        parts = im.file_name.split("/")
        if by_split and len(parts) > 2 and SPLIT_NAMES.get(parts[0].lower()) == split:
            parts = parts[1:]  # the version path's own split folder: the layout supplies it
        rel = "/".join(parts) if parts[0] == cls else f"{cls}/{'_'.join(parts)}"
        tree.image(f"{split}/{rel}" if by_split else rel, im.blob)

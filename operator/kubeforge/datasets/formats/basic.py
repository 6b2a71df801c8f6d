"""Exporters for the two formats whose importers predate this package: COCO and ImageFolder.

COCO: `annotations.json` at the top, images at their version paths (a leading `images/` is
dropped from `file_name`, as in COCO releases; the importer looks in `images/` first). Image tags
go in a non-standard `tags` list per image and object tags in CVAT-style `attributes` per
annotation (`{"difficult": true, "pose": "Left"}`); other COCO tools ignore both. Lossless.
ImageFolder: `<class>/<image>`; only classification versions; tags are lost.
"""

from __future__ import annotations

import json
from typing import Any

from kubeforge.datasets.formats.common import split_tag
from kubeforge.datasets.formats.tree import ExportError, ExportTree
from kubeforge.datasets.manifest import Manifest


def tags_to_attributes(tags: list[str]) -> dict[str, Any]:
    return {name: True if value is None else value for name, value in map(split_tag, sorted(set(tags)))}


def write_coco(manifest: Manifest, tree: ExportTree) -> None:
    if manifest.task != "object-detection":
        raise ExportError(f"format coco holds objects; version {manifest.dataset} is {manifest.task} "
                          "(export it as imagefolder)")
    strip = all(im.file_name.startswith("images/") for im in manifest.images)
    images, annotations = [], []
    for i, (im, anns) in enumerate(zip(manifest.images, manifest.annotations_by_image(), strict=True), start=1):
        tree.image(im.file_name, im.blob)
        entry: dict[str, Any] = {"id": i, "file_name": im.file_name[len("images/"):] if strip else im.file_name,
                                 "width": im.width, "height": im.height}
        if im.tags:
            entry["tags"] = sorted(set(im.tags))
        images.append(entry)
        for a in anns:
            ann: dict[str, Any] = {"id": len(annotations) + 1, "image_id": i, "category_id": a.category_id,
                                   "bbox": a.bbox, "area": a.area, "iscrowd": a.iscrowd}
            if a.segmentation is not None:
                ann["segmentation"] = a.segmentation
            if a.tags:
                ann["attributes"] = tags_to_attributes(a.tags)
            annotations.append(ann)
    categories = [
        {"id": c.id, "name": c.name, **({"supercategory": c.supercategory} if c.supercategory else {})}
        for c in sorted(manifest.categories, key=lambda c: c.id)
    ]
    coco = {"info": {"description": f"kubeforge export of {manifest.dataset}"}, "images": images,
            "annotations": annotations, "categories": categories}
    tree.text("annotations.json", json.dumps(coco, ensure_ascii=False, separators=(",", ":")))


def write_imagefolder(manifest: Manifest, tree: ExportTree) -> None:
    if manifest.task != "classification":
        raise ExportError(f"format imagefolder holds one class per image; version {manifest.dataset} is "
                          f"{manifest.task} (export it as coco, voc, yolo or supervisely)")
    names = {c.id: c.name for c in manifest.categories}
    for im in manifest.images:
        if im.category_id is None:
            tree.lose("unlabeled images (ImageFolder needs a class folder)")
            continue
        if im.tags:
            tree.lose("image tags")
        cls = names[im.category_id]
        rel = im.file_name if im.file_name.split("/")[0] == cls else f"{cls}/{im.file_name.replace('/', '_')}"
        tree.image(rel, im.blob)

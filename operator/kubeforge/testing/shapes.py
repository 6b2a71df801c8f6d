"""Synthetic shapes put into a store as a dataset version, for tests and benchmarks that train (no importer run)."""

from __future__ import annotations

import json
from pathlib import Path

from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder
from kubeforge.datasets.versions import write_version
from kubeforge.steps.spec import DatasetRef
from kubeforge.store import Store


def shapes_version(store: Store, src: Path, n_images: int, size: int, seed: int = 1,
                   dataset: str = "shapes") -> DatasetRef:
    """An object-detection manifest of generated shapes with their polygon segmentations (blobs, then manifest)."""
    coco = json.loads(generate_shapes_coco(src, n_images=n_images, size=size, seed=seed).read_text())
    index, images = {}, []
    for im in coco["images"]:
        data = (src / "images" / im["file_name"]).read_bytes()
        index[im["id"]] = len(images)
        images.append(ManifestImage(file_name=im["file_name"], blob=store.put_blob(data), width=im["width"],
                                    height=im["height"], bytes=len(data)))
    anns = [ManifestAnnotation(image=index[a["image_id"]], category_id=a["category_id"], bbox=a["bbox"],
                               area=a["area"], segmentation=a["segmentation"]) for a in coco["annotations"]]
    cats = [Category(id=c["id"], name=c["name"]) for c in coco["categories"]]
    manifest = Manifest(dataset=dataset, task="object-detection", categories=cats, images=images, annotations=anns)
    return DatasetRef(dataset=dataset, digest=write_version(store, manifest)[0])


def classification_version(store: Store, src: Path, n_per_class: int, size: int, seed: int = 2,
                           dataset: str = "shapes-cls", first_category_id: int = 1) -> DatasetRef:
    """A classification manifest of generated shapes, one class per folder (blobs, then manifest); category
    ids count from `first_category_id`."""
    generate_shapes_imagefolder(src, n_per_class=n_per_class, size=size, seed=seed)
    names = sorted(p.name for p in src.iterdir())
    images = []
    for k, name in enumerate(names):
        for f in sorted((src / name).glob("*.png")):
            data = f.read_bytes()
            images.append(ManifestImage(file_name=f"{name}/{f.name}", blob=store.put_blob(data), width=size,
                                        height=size, bytes=len(data), category_id=first_category_id + k))
    cats = [Category(id=first_category_id + k, name=n) for k, n in enumerate(names)]
    manifest = Manifest(dataset=dataset, task="classification", categories=cats, images=images)
    return DatasetRef(dataset=dataset, digest=write_version(store, manifest)[0])

"""Dataset statistics, computed from a manifest alone (so they can always be recomputed)."""

from __future__ import annotations

from kubeforge.api.dataset_version import DatasetStats, ImageSizeStats
from kubeforge.datasets.manifest import Manifest


def compute_stats(manifest: Manifest) -> DatasetStats:
    """Counts per class over every category (zeros included).

    object-detection: `annotations` and `objectsPerClass` count objects; `imagesPerClass`
    counts images with at least one object of the class.
    classification: each labeled image is one annotation and one object of its class.
    """
    names = {c.id: c.name for c in manifest.categories}
    objects = {c.name: 0 for c in manifest.categories}
    images_with: dict[str, set[int]] = {c.name: set() for c in manifest.categories}
    if manifest.task == "classification":
        labeled = 0
        for i, im in enumerate(manifest.images):
            if im.category_id is not None:
                labeled += 1
                objects[names[im.category_id]] += 1
                images_with[names[im.category_id]].add(i)
        annotations = labeled
    else:
        for ann in manifest.annotations:
            objects[names[ann.category_id]] += 1
            images_with[names[ann.category_id]].add(ann.image)
        annotations = len(manifest.annotations)
    sizes = None
    if manifest.images:
        ws = [im.width for im in manifest.images]
        hs = [im.height for im in manifest.images]
        sizes = ImageSizeStats(
            min_width=min(ws), max_width=max(ws), min_height=min(hs), max_height=max(hs),
            mean_width=round(sum(ws) / len(ws), 2), mean_height=round(sum(hs) / len(hs), 2),
        )
    return DatasetStats(
        images=len(manifest.images),
        annotations=annotations,
        classes=len(manifest.categories),
        objects_per_class=objects,
        images_per_class={name: len(ids) for name, ids in images_with.items()},
        image_sizes=sizes,
        total_bytes=sum(im.bytes for im in manifest.images),
    )

"""Dataset statistics, computed from a manifest alone (so they can always be recomputed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kubeforge.api.dataset_version import DatasetStats, ImageSizeStats
from kubeforge.datasets.manifest import Category, Manifest


def compute_stats(manifest: Manifest) -> DatasetStats:
    """Counts per class over every category (zeros included).

    object-detection: `annotations` and `objectsPerClass` count objects; `imagesPerClass`
    counts images with at least one object of the class.
    classification: each labeled image is one annotation and one object of its class.
    """
    images = manifest.images
    return stats_from(
        manifest.categories, manifest.task, image_category_ids=(im.category_id for im in images),
        annotations=((ann.image, ann.category_id) for ann in manifest.annotations),
        widths=[im.width for im in images], heights=[im.height for im in images],
        sizes=(im.bytes for im in images),
    )


def stats_from(categories: Sequence[Category], task: str, *, image_category_ids: Iterable[int | None],
               annotations: Iterable[tuple[int, int]], widths: Sequence[int], heights: Sequence[int],
               sizes: Iterable[int]) -> DatasetStats:
    """`compute_stats` from a manifest's values: per image its class, width, height and bytes;
    (image, category_id) per annotation. Image class ids are read only for classification."""
    names = {c.id: c.name for c in categories}
    objects = {c.name: 0 for c in categories}
    images_with: dict[str, set[int]] = {c.name: set() for c in categories}
    if task == "classification":
        labeled = 0
        for i, cid in enumerate(image_category_ids):
            if cid is not None:
                labeled += 1
                objects[names[cid]] += 1
                images_with[names[cid]].add(i)
        n_annotations = labeled
    else:
        n_annotations = 0
        for image, cid in annotations:
            n_annotations += 1
            objects[names[cid]] += 1
            images_with[names[cid]].add(image)
    image_sizes = None
    n = len(widths)
    if n:
        image_sizes = ImageSizeStats(
            min_width=min(widths), max_width=max(widths), min_height=min(heights), max_height=max(heights),
            mean_width=round(sum(widths) / n, 2), mean_height=round(sum(heights) / n, 2),
        )
    return DatasetStats(
        images=n,
        annotations=n_annotations,
        classes=len(categories),
        objects_per_class=objects,
        images_per_class={name: len(ids) for name, ids in images_with.items()},
        image_sizes=image_sizes,
        total_bytes=sum(sizes),
    )

"""Mask R-CNN targets from manifest objects: polygons, RLE, boxes without masks, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kubeforge.datasets.formats.common import mask_to_rle
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge_trainers.data import SelectedClass, blob_path
from kubeforge_trainers.optim import validate_hyperparameters
from kubeforge_trainers.tasks import task_kind
from kubeforge_trainers.tasks.instance import InstanceDataset

BLOB = "ab" * 32


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    """One 40x20 image (stretched to 32x32): a polygon square, an RLE blob, a box without a mask, a crowd."""
    path = blob_path(tmp_path, BLOB)
    path.parent.mkdir(parents=True)
    Image.new("RGB", (40, 20), (9, 9, 9)).save(path, format="PNG")
    rle = np.zeros((20, 40), dtype=bool)
    rle[10:20, 20:40] = True
    anns = [
        ManifestAnnotation(image=0, category_id=1, bbox=[0, 0, 10, 10], area=100,
                           segmentation=[[0, 0, 10, 0, 10, 10, 0, 10]]),
        ManifestAnnotation(image=0, category_id=2, bbox=[20, 10, 20, 10], area=200, segmentation=mask_to_rle(rle)),
        ManifestAnnotation(image=0, category_id=2, bbox=[5, 12, 10, 5], area=50),
        ManifestAnnotation(image=0, category_id=1, bbox=[0, 0, 40, 20], area=800, iscrowd=1),
    ]
    cats = [Category(id=1, name="a"), Category(id=2, name="b")]
    return Manifest(dataset="d", task="object-detection", categories=cats,
                    images=[ManifestImage(file_name="x.png", blob=BLOB, width=40, height=20, bytes=1)],
                    annotations=anns)


def classes() -> list[SelectedClass]:
    return [SelectedClass(1, "a"), SelectedClass(2, "b")]


def test_targets_from_polygons_rle_and_boxes(manifest: Manifest, tmp_path: Path) -> None:
    ds = InstanceDataset(manifest, ["x.png"], classes(), tmp_path, 32)
    image, target = ds[0]
    assert image.shape == (3, 32, 32)
    assert target["labels"].tolist() == [1, 2, 2]  # the crowd region is not an instance
    masks = target["masks"].numpy()
    assert masks.shape == (3, 32, 32) and masks.dtype == np.uint8
    # Polygon 0..10 x 0..10 of a 40x20 image -> x 0..8, y 0..16 at 32 px.
    assert masks[0, :16, :8].all() and masks[0].sum() == 8 * 16
    # RLE x 20..40, y 10..20 -> x 16..32, y 16..32.
    assert masks[1, 16:, 16:].all() and masks[1].sum() == 16 * 16
    # No segmentation: the filled box (x 4..12, y 19.2..27.2 -> rows 19..27), and it is counted.
    assert ds.boxes_as_masks == 1 and masks[2, 19:28, 4:12].all() and masks[2].sum() == 9 * 8
    truth = ds.coco_ground_truth(2)
    assert [a["area"] for a in truth["annotations"]] == [128.0, 256.0, 72.0]


def test_augmentation_moves_masks_with_boxes_and_drops_degenerate_ones(manifest: Manifest, tmp_path: Path) -> None:
    def flip(image: np.ndarray, boxes: np.ndarray | None, masks: np.ndarray | None) -> tuple:  # type: ignore[type-arg]
        assert boxes is not None and masks is not None and masks.shape == (len(boxes), 32, 32)
        mirrored = boxes.copy()
        mirrored[:, [0, 2]] = image.shape[1] - boxes[:, [2, 0]]
        return image[:, ::-1], mirrored, masks[..., ::-1]

    ds = InstanceDataset(manifest, ["x.png"], classes(), tmp_path, 32, train=True, augment=flip)
    _, target = ds[0]
    masks, boxes = target["masks"].numpy(), target["boxes"].numpy()
    assert masks[0, :16, 24:].all() and masks[0].sum() == 8 * 16  # mirrored with its box
    assert boxes[0].tolist() == pytest.approx([24, 0, 32, 16])

    def collapse_first(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray) -> tuple:  # type: ignore[type-arg]
        boxes = boxes.copy()
        boxes[0, 2] = boxes[0, 0]  # zero width
        return image, boxes, masks

    ds = InstanceDataset(manifest, ["x.png"], classes(), tmp_path, 32, train=True, augment=collapse_first)
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 2] and target["masks"].shape[0] == 2 and target["boxes"].shape[0] == 2
    assert target["masks"][0].sum() == 16 * 16  # the RLE object's mask stayed with its label


def test_task_is_registered_with_the_detection_batch_rule() -> None:
    from kubeforge.api.training_job import Hyperparameters

    kind = task_kind("instance-segmentation")
    assert kind.metric == "val_mask_AP" and not kind.batched_export
    assert [o.name for o in kind.outputs(["a"], 64)] == ["boxes", "scores", "labels", "masks"]
    with pytest.raises(ValueError, match=r"hyperparameters\.batchSize: instance-segmentation needs at least 2"):
        validate_hyperparameters(Hyperparameters(batch_size=1), 10, "instance-segmentation")


def test_a_bad_polygon_names_the_image(manifest: Manifest, tmp_path: Path) -> None:
    manifest.annotations[0].segmentation = [[1, 2, 3, 4]]
    with pytest.raises(ValueError, match=r"x\.png: a segmentation polygon has 4 coordinates"):
        InstanceDataset(manifest, ["x.png"], classes(), tmp_path, 32)

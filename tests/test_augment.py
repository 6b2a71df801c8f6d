"""spec.augmentations: validated when manifests are read, and applied so that boxes and masks
stay on the pixels they label under every kind (kubeforge_trainers.augment)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import TypeAdapter

from kubeforge.api.augmentations import Augmentation
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.local.manifests import ManifestError, load_manifests
from kubeforge_trainers.augment import build_augment
from kubeforge_trainers.data import ClassificationDataset, DetectionDataset, blob_path, flip_augment, resolve_classes

AUGMENTATIONS = TypeAdapter(list[Augmentation])
SIZE = 64
LABEL = 2
GEOMETRIC = ["flip", "rotate", "scaleCrop"]
PIXEL_ONLY = ["colorJitter", "blur", "cutout"]


def _augment(*items: dict[str, object]):  # type: ignore[no-untyped-def]
    return build_augment(AUGMENTATIONS.validate_python(list(items)))


def _drawn(top: int, left: int, bottom: int, right: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A white rectangle on black, its box and a class mask of exactly its pixels."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[top:bottom, left:right] = 255
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[top:bottom, left:right] = LABEL
    return image, np.array([[left, top, right, bottom]], np.float32), mask


def _encloses(box: np.ndarray, mask: np.ndarray, slack: float = 1.0) -> bool:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return True
    x1, y1, x2, y2 = box
    return bool(xs.min() >= x1 - slack and xs.max() + 1 <= x2 + slack
                and ys.min() >= y1 - slack and ys.max() + 1 <= y2 + slack)


@pytest.mark.parametrize("kind", GEOMETRIC)
@pytest.mark.parametrize("seed", range(6))
def test_geometric_kinds_move_boxes_and_masks_with_the_pixels(kind: str, seed: int) -> None:
    image, boxes, mask = _drawn(12, 20, 36, 44)
    extra = {"rotate": {"degrees": 40}, "scaleCrop": {"scale": [0.3, 0.9]}, "flip": {"vertical": True}}[kind]
    augment = _augment({"kind": kind, "p": 1.0, **extra})
    torch.manual_seed(seed)
    out, moved, moved_mask = augment(image, boxes, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert moved is not None and moved.shape == (1, 4) and moved.dtype == np.float32
    assert moved_mask is not None and moved_mask.shape == mask.shape and moved_mask.dtype == mask.dtype
    # Nearest-neighbour: class ids never blend, and uncovered corners are background.
    assert set(np.unique(moved_mask)) <= {0, LABEL}
    labelled = moved_mask == LABEL
    bright = out.mean(axis=2) > 127
    # The mask covers the drawn pixels (bilinear image edges may differ by a pixel's ring).
    if labelled.sum() > 20:
        assert (bright & labelled).sum() >= 0.85 * labelled.sum()
        assert (bright & labelled).sum() >= 0.85 * bright.sum()
    assert _encloses(moved[0], labelled)
    # Clamped to the image.
    assert moved.min() >= 0 and moved.max() <= SIZE


@pytest.mark.parametrize("kind", PIXEL_ONLY)
def test_pixel_kinds_change_pixels_only(kind: str) -> None:
    image, boxes, mask = _drawn(12, 20, 36, 44)
    image[::7, ::5] = 90  # texture, so blur and cutout have something to change
    augment = _augment({"kind": kind, "p": 1.0, **({"holes": 4, "size": 0.3} if kind == "cutout" else {})})
    torch.manual_seed(3)
    out, moved, moved_mask = augment(image, boxes, mask)
    assert not np.array_equal(out, image)
    assert moved is not None and np.array_equal(moved, boxes)
    assert moved_mask is not None and np.array_equal(moved_mask, mask)


def test_instance_masks_and_box_order_survive_a_rotation() -> None:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    boxes = np.array([[4, 4, 20, 16], [30, 30, 60, 50], [60, 0, 64, 3]], np.float32)
    masks = np.zeros((3, SIZE, SIZE), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = 1
        image[y1:y2, x1:x2] = 255
    torch.manual_seed(1)
    _, moved, moved_masks = _augment({"kind": "rotate", "degrees": 30, "p": 1.0})(image, boxes, masks)
    assert moved is not None and moved.shape == (3, 4)
    assert moved_masks is not None and moved_masks.shape == (3, SIZE, SIZE)
    for k in range(3):
        assert _encloses(moved[k], moved_masks[k])
    # In order: the big instance is still the second one.
    assert moved_masks[1].sum() > moved_masks[0].sum() > 0


def test_seeded_draws_replay_and_p_zero_is_identity() -> None:
    image, boxes, mask = _drawn(8, 8, 40, 30)
    augment = _augment({"kind": "rotate", "p": 1.0}, {"kind": "scaleCrop", "p": 1.0}, {"kind": "colorJitter"})
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(augment(image, boxes, mask))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not np.array_equal(runs[0][0], runs[2][0])
    out = _augment({"kind": "rotate", "p": 0.0}, {"kind": "cutout", "p": 0.0})(image, boxes, mask)
    assert np.array_equal(out[0], image) and np.array_equal(out[1], boxes) and np.array_equal(out[2], mask)


def test_absent_means_default_flip_and_empty_means_none() -> None:
    assert build_augment(None) is None  # datasets then use data.flip_augment
    image, boxes, mask = _drawn(8, 8, 40, 30)
    none = build_augment([])
    assert none is not None
    for _ in range(5):
        out = none(image, boxes, mask)
        assert out[0] is image and out[1] is boxes and out[2] is mask
    # Absent: the datasets fall back on the horizontal flip.
    manifest = Manifest(dataset="d", task="classification", categories=[Category(id=1, name="a")], images=[])
    assert ClassificationDataset(manifest, [], resolve_classes(manifest, None), Path("."), 8, train=True,
                                 augment=build_augment(None)).augment is flip_augment


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 40, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_detection_dataset_drops_boxes_an_augmentation_squeezed(tmp_path: Path) -> None:
    data = _png(64, 64)
    blob = hashlib.sha256(data).hexdigest()
    blob_path(tmp_path, blob).parent.mkdir(parents=True)
    blob_path(tmp_path, blob).write_bytes(data)
    manifest = Manifest(
        dataset="toy", task="object-detection", categories=[Category(id=1, name="a"), Category(id=2, name="b")],
        images=[ManifestImage(file_name="0.png", blob=blob, width=64, height=64, bytes=len(data))],
        annotations=[ManifestAnnotation(image=0, category_id=1, bbox=[0, 0, 6, 20], area=120),
                     ManifestAnnotation(image=0, category_id=2, bbox=[30, 30, 20, 20], area=400)],
    )
    classes = resolve_classes(manifest, None)

    def squeeze_left(image: np.ndarray, boxes: np.ndarray | None, mask: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        # A crop that leaves the first box a sliver at the left edge (allowed by the contract).
        assert boxes is not None
        moved = boxes.copy()
        moved[0] = [0, 0, 0.5, 20]
        return image, moved, mask

    ds = DetectionDataset(manifest, ["0.png"], classes, tmp_path, 64, train=True, augment=squeeze_left)
    _, target = ds[0]
    assert target["labels"].tolist() == [2]
    assert target["boxes"].tolist() == [[30.0, 30.0, 50.0, 50.0]]
    val = DetectionDataset(manifest, ["0.png"], classes, tmp_path, 64, train=False, augment=squeeze_left)
    assert val[0][1]["labels"].tolist() == [1, 2]


JOB = """apiVersion: kubeforge.io/v1alpha1
kind: TrainingJob
metadata: {{name: aug}}
spec:
  datasetVersion: shapes-v1
  task: object-detection
  model: {{name: ssdlite320_mobilenet_v3_large}}
  augmentations: {augmentations}
"""


@pytest.mark.parametrize(("augmentations", "field", "words"), [
    ("[{kind: flip}, {kind: rotate, degrees: 270}]", "spec.augmentations[1].degrees", "less than or equal to 180"),
    ("[{kind: blur, kernelSize: 4}]", "spec.augmentations[0].kernelSize", "odd"),
    ("[{kind: scaleCrop, scale: [0.9, 0.5]}]", "spec.augmentations[0].scale", "min <= max"),
    ("[{kind: colorJitter, hue: 0.7}]", "spec.augmentations[0].hue", "less than or equal to 0.5"),
    ("[{kind: cutout, holes: 0}]", "spec.augmentations[0].holes", "greater than or equal to 1"),
    ("[{kind: flip, degrees: 10}]", "spec.augmentations[0].degrees", "unknown field"),
    ("[{kind: flip, horizontal: false}]", "spec.augmentations[0]", "horizontal or vertical"),
    ("[{kind: mixup}]", "spec.augmentations[0]", "'flip', 'rotate'"),
    ("[{kind: rotate, p: 1.5}]", "spec.augmentations[0].p", "less than or equal to 1"),
])
def test_bad_augmentations_are_refused_naming_the_field(tmp_path: Path, augmentations: str, field: str,
                                                        words: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(augmentations=augmentations))
    with pytest.raises(ManifestError) as caught:
        load_manifests(path)
    problem = "\n".join(caught.value.problems)
    assert f"{field}: " in problem and words in problem, problem


def test_declared_augmentations_load_with_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(augmentations="[{kind: rotate, degrees: 10}, {kind: scaleCrop}]"))
    (loaded,) = load_manifests(path)
    rotate, crop = loaded.resource.spec.augmentations  # type: ignore[attr-defined]
    assert (rotate.kind, rotate.degrees, rotate.p) == ("rotate", 10.0, 0.5)
    assert crop.scale == [0.5, 1.0]


def test_preview_draws_targets_and_leaves_the_run_generators_alone(tmp_path: Path) -> None:
    import random

    from kubeforge_trainers.preview import draw_sample, save_preview

    class Samples(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 20

        def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return torch.rand(3, 32, 32), {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]),
                                           "labels": torch.tensor([1])}

    torch.manual_seed(9)
    random.seed(9)
    expected = (torch.rand(1), random.random())
    torch.manual_seed(9)
    random.seed(9)
    assert save_preview(Samples(), ["thing"], tmp_path / "p.png", seed=0) == 12
    assert (torch.rand(1), random.random()) == expected
    grid = Image.open(tmp_path / "p.png")
    assert grid.width == 4 * 160 + 3 * 4 and grid.height == 3 * 160 + 2 * 4
    # A semantic mask is overlaid where it labels pixels, and only there.
    mask = torch.zeros(32, 32, dtype=torch.int64)
    mask[:, 16:] = 1
    tile = np.asarray(draw_sample(torch.zeros(3, 32, 32), mask, ["road"]))
    assert tile[80, 20].sum() == 0 and tile[80, 140].sum() > 0


def test_the_crd_admits_every_kind_and_applies_no_other_kinds_defaults() -> None:
    """The CRD holds the union as one object (a structural schema has no unions): every kind's fields
    pass the API server, unknown ones do not, and no default of one kind lands on another."""
    import yaml

    from kubeforge.api.crd import crd_filename
    from kubeforge.api.registry import KINDS, parse_resource
    from kubeforge.testing.crd_schema import CrdSchema

    path = Path(__file__).resolve().parents[1] / "crds" / crd_filename(KINDS["TrainingJob"])
    openapi = yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema = CrdSchema("TrainingJob", "kubeforge.io", "v1alpha1", openapi)
    job = yaml.safe_load(JOB.format(augmentations="""[{kind: flip, vertical: true, p: 0.3}, {kind: rotate, degrees: 5},
      {kind: scaleCrop, scale: [0.4, 1.0], ratio: [0.5, 2.0]}, {kind: colorJitter, hue: 0.1},
      {kind: blur, kernelSize: 7, sigma: [0.5, 1.0]}, {kind: cutout, holes: 3, size: 0.1}]"""))
    unknown: list[str] = []
    admitted = schema.admit(job, None, None, unknown)
    assert not unknown and not list(schema.errors(admitted, None, None))
    # The API server's defaulting added nothing a kind does not have: pydantic still accepts every item.
    parsed = parse_resource(admitted)
    assert [a.kind for a in parsed.spec.augmentations] == ["flip", "rotate", "scaleCrop", "colorJitter", "blur",
                                                           "cutout"]
    bad = yaml.safe_load(JOB.format(augmentations="[{kind: mixup}, {kind: flip, alpha: 1}]"))
    unknown = []
    admitted = schema.admit(bad, None, None, unknown)
    errors = [f"{e.field}: {e.detail}" for e in schema.errors(admitted, None, None)]
    assert any("spec.augmentations[0].kind" in e for e in errors), errors
    assert any("alpha" in u for u in unknown), unknown

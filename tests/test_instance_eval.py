"""Instance-segmentation metrics: COCO's segm suite against pycocotools on random scenes whose ground
truth mixes polygons, RLE, box-only objects and crowd regions."""

from __future__ import annotations

import copy
import io
from contextlib import redirect_stdout
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as pycoco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kubeforge.datasets.formats.common import mask_to_rle, polygons_to_mask
from kubeforge.evaluation.cocoeval import STAT_NAMES
from kubeforge.evaluation.detection import ImageDetections, ImageTruth
from kubeforge.evaluation.instances import ImageInstances, instance_metrics, segm_suite
from kubeforge.models.preprocess import scale_masks_to_image


def box_polygon(bbox: list[float]) -> list[list[float]]:
    """A COCO xywh box as a polygon (the reference's stand-in for an object annotated with a box only)."""
    x, y, w, h = bbox
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _scene(rng: np.random.Generator, num_classes: int) -> dict[str, Any]:
    """Objects (polygon, RLE, box only or crowd RLE) and predictions: jittered copies of them plus clutter."""
    w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
    objects, preds = [], []
    for _ in range(int(rng.integers(0, 6))):
        x, y = rng.uniform(0, w - 12), rng.uniform(0, h - 12)
        bw, bh = rng.uniform(6, w - x), rng.uniform(6, h - y)
        label, kind = int(rng.integers(num_classes)), rng.choice(["polygon", "rle", "box", "crowd"], p=[.4, .3, .2, .1])
        tri = [[x + bw / 2, y, x + bw, y + bh, x, y + bh]]
        mask = polygons_to_mask(tri, h, w)
        seg: Any = {"polygon": tri, "box": None}.get(str(kind), mask_to_rle(mask))
        objects.append({"label": label, "bbox": [x, y, bw, bh], "seg": seg, "crowd": kind == "crowd"})
        drawn = mask if seg is not None else polygons_to_mask(box_polygon([x, y, bw, bh]), h, w)
        for _ in range(int(rng.integers(0, 3))):  # 0-2 predictions per object, shifted a few pixels
            dx, dy = (int(v) for v in rng.integers(-4, 5, size=2))
            shifted = np.roll(np.roll(drawn, dy, axis=0), dx, axis=1)
            guess = label if rng.random() < 0.85 else int(rng.integers(num_classes))
            if shifted.any():
                preds.append((shifted, float(rng.random()), guess))
    for _ in range(int(rng.integers(0, 3))):  # clutter
        m = np.zeros((h, w), dtype=bool)
        x0, y0 = int(rng.integers(0, w - 5)), int(rng.integers(0, h - 5))
        m[y0:y0 + int(rng.integers(3, 20)), x0:x0 + int(rng.integers(3, 20))] = True
        preds.append((m, float(rng.random()), int(rng.integers(num_classes))))
    return {"w": w, "h": h, "objects": objects, "preds": preds}


def _ours(scenes: list[dict[str, Any]]) -> tuple[list[ImageTruth], list[list[Any]], list[ImageInstances]]:
    truths, segs, found = [], [], []
    for s in scenes:
        objs = s["objects"]
        truths.append(ImageTruth(
            width=s["w"], height=s["h"],
            boxes=np.array([[o["bbox"][0], o["bbox"][1], o["bbox"][0] + o["bbox"][2], o["bbox"][1] + o["bbox"][3]]
                            for o in objs]).reshape(-1, 4),
            labels=np.array([o["label"] for o in objs], dtype=np.int64),
            iscrowd=np.array([o["crowd"] for o in objs], dtype=bool),
            areas=np.array([o["bbox"][2] * o["bbox"][3] for o in objs], dtype=np.float64),
        ))
        segs.append([o["seg"] if o["seg"] is not None else box_polygon(o["bbox"]) for o in objs])
        masks = np.array([p[0] for p in s["preds"]], dtype=bool).reshape(-1, s["h"], s["w"])
        boxes = np.array([_tight_box(m) for m in masks]).reshape(-1, 4)
        dets = ImageDetections(boxes, np.array([p[1] for p in s["preds"]]), np.array([p[2] for p in s["preds"]]))
        found.append(ImageInstances.from_masks(dets, masks))
    return truths, segs, found


def _tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _pycocotools(scenes: list[dict[str, Any]], num_classes: int) -> COCOeval:
    """The reference, built straight from the scenes: COCO's own formats, encoded by pycocotools."""
    images, anns, results = [], [], []
    for i, s in enumerate(scenes):
        images.append({"id": i + 1, "width": s["w"], "height": s["h"]})
        for o in s["objects"]:
            seg = o["seg"] if o["seg"] is not None else box_polygon(o["bbox"])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": o["label"] + 1, "bbox": o["bbox"],
                         "area": o["bbox"][2] * o["bbox"][3], "iscrowd": int(o["crowd"]), "segmentation": seg})
        for mask, score, label in s["preds"]:
            rle = pycoco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            results.append({"image_id": i + 1, "category_id": label + 1, "score": score, "segmentation": rle})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k + 1} for k in range(num_classes)]}
    with redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("seed", range(6))
def test_mask_suite_matches_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 4))
    names = [f"c{k}" for k in range(num_classes)]
    scenes = [_scene(rng, num_classes) for _ in range(int(rng.integers(2, 7)))]
    if not any(s["preds"] for s in scenes):  # pycocotools' loadRes cannot take an empty list
        m = np.zeros((scenes[0]["h"], scenes[0]["w"]), dtype=bool)
        m[:5, :5] = True
        scenes[0]["preds"].append((m, 0.5, 0))
    truths, segs, found = _ours(scenes)
    got = segm_suite(truths, segs, found, names)
    ref = _pycocotools(scenes, num_classes)
    for name, value in zip(STAT_NAMES, ref.stats, strict=True):
        assert got[name] == (None if value < 0 else pytest.approx(value, abs=1e-9)), name
    for k in range(num_classes):
        p = ref.eval["precision"][:, :, k, 0, -1]
        expected = p[p > -1].mean() if (p > -1).any() else None
        assert got["perClass"][k]["AP"] == (None if expected is None else pytest.approx(expected, abs=1e-9))


def test_instance_metrics_put_mask_ap_beside_the_box_suite() -> None:
    """Perfect masks with loose boxes: mask AP 1, box AP below 1, both reported."""
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:30, 20:40] = True
    truth = ImageTruth(width=60, height=50, boxes=np.array([[20, 10, 40, 30]]), labels=np.array([0]))
    loose = ImageDetections(np.array([[12, 4, 48, 40]]), np.array([0.9]), np.array([0]))
    got = instance_metrics([truth], [[mask_to_rle(mask)]], [ImageInstances.from_masks(loose, mask[None])], ["a"])
    assert got["maskAP"] == pytest.approx(1.0) and got["maskAP50"] == pytest.approx(1.0)
    assert got["AP"] < 0.5 and got["perClass"][0]["maskAP"] == pytest.approx(1.0)
    assert set(got["mask"]) >= set(STAT_NAMES)


def test_masks_scale_back_to_the_image_like_boxes() -> None:
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, :2, :2] = 1
    out = scale_masks_to_image(masks, 8, 6)
    assert out.shape == (2, 6, 8) and out.dtype == bool
    assert out[0, :3, :4].all() and out[0].sum() == 12 and not out[1].any()
    assert scale_masks_to_image(np.zeros((0, 4, 4), np.uint8), 8, 6).shape == (0, 6, 8)

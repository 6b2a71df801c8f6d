"""CocoEvaluator against pycocotools on many seeded random inputs (bbox, segm, image weights) and edge cases.

Every comparison is of the full precision [T, R, K, A, M] and recall [T, K, A, M] arrays and the 12
summary numbers; the tolerance is 1e-9 but the numbers come out identical (the same floating-point
operations in the same order).
"""

from __future__ import annotations

import contextlib
import copy
import io
from itertools import groupby
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kubeforge.evaluation.cocoeval import STAT_NAMES, CocoEvaluator, CocoInputError

TOL = 1e-9


def make_boxes(seed: int, n_images: int = 20, n_cats: int = 4, gt_per: float = 5, dt_per: float = 15,
               crowd_p: float = 0.1, tie_p: float = 0.2, quant: bool = False) -> tuple[dict, list]:
    """Random boxes: empty images, crowd regions, areas on the range boundaries, > 100 detections, ties."""
    rng = np.random.default_rng(seed)
    images = [{"id": i * 3 + 1, "width": 200, "height": 150} for i in range(n_images)]
    cats = [{"id": c * 2 + 1, "name": f"c{c}"} for c in range(n_cats)]
    anns: list[dict[str, Any]] = []
    res: list[dict[str, Any]] = []
    for im in images:
        ng = int(rng.poisson(gt_per)) if rng.random() > 0.15 else 0
        boxes = []
        for _ in range(ng):
            s = float(rng.choice([8, 24, 32, 60, 96, 150]))
            w, h = float(max(1, rng.normal(s, s / 3))), float(max(1, rng.normal(s, s / 3)))
            x, y = float(rng.uniform(0, 180)), float(rng.uniform(0, 130))
            if quant:
                x, y, w, h = (float(round(v)) for v in (x, y, w, h))
            if rng.random() < 0.1:
                w, h = (32.0, 32.0) if rng.random() < 0.5 else (96.0, 96.0)  # area exactly on a boundary
            c = int(rng.integers(n_cats)) * 2 + 1
            area = w * h if rng.random() < 0.8 else float(rng.choice([1024.0, 9216.0, w * h * 0.7]))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": area, "iscrowd": int(rng.random() < crowd_p)})
            boxes.append((x, y, w, h, c))
        nd = int(rng.poisson(dt_per)) if rng.random() > 0.15 else 0
        if rng.random() < 0.07:
            nd = 130  # more than maxDets on one image
        for _ in range(nd):
            if boxes and rng.random() < 0.6:
                x, y, w, h, c = boxes[int(rng.integers(len(boxes)))]
                if rng.random() < 0.85:
                    x, y = x + float(rng.normal(0, 3)), y + float(rng.normal(0, 3))
                    w, h = max(0.5, w + float(rng.normal(0, 3))), max(0.5, h + float(rng.normal(0, 3)))
                if rng.random() < 0.1:
                    c = int(rng.integers(n_cats)) * 2 + 1
            else:
                w, h = float(rng.uniform(2, 120)), float(rng.uniform(2, 120))
                x, y = float(rng.uniform(0, 180)), float(rng.uniform(0, 130))
                c = int(rng.integers(n_cats)) * 2 + 1
            if quant:
                x, y, w, h = (float(round(v)) for v in (x, y, w, h))
            score = float(rng.choice([0.5, 0.25, 0.75])) if rng.random() < tie_p else float(rng.random())
            res.append({"image_id": im["id"], "category_id": c, "bbox": [x, y, w, h], "score": score})
    return {"images": images, "annotations": anns, "categories": cats}, res


def make_masks(seed: int, n_images: int = 8, n_cats: int = 3, bbox_results: bool = False) -> tuple[dict, list]:
    """Random masks: polygons, compressed RLEs, crowd regions as uncompressed RLEs; results as RLEs."""
    rng = np.random.default_rng(seed)
    H, W = 60, 80
    images = [{"id": i + 1, "width": W, "height": H} for i in range(n_images)]
    cats = [{"id": c + 1, "name": f"c{c}"} for c in range(n_cats)]
    anns: list[dict[str, Any]] = []
    res: list[dict[str, Any]] = []

    def rand_mask() -> np.ndarray:
        m = np.zeros((H, W), dtype=np.uint8, order="F")
        s = int(rng.choice([4, 6, 20, 40]))
        x, y = int(rng.integers(0, W - 2)), int(rng.integers(0, H - 2))
        m[y:y + int(rng.integers(1, s)), x:x + int(rng.integers(1, s))] = 1
        if rng.random() < 0.5:
            m[max(0, y - 3):y + 2, max(0, x - 2):x + 5] = 1
        return m

    for im in images:
        masks = []
        for _ in range(int(rng.poisson(4)) if rng.random() > 0.15 else 0):
            c = int(rng.integers(n_cats)) + 1
            crowd = int(rng.random() < 0.15)
            if crowd or rng.random() < 0.3:
                m = rand_mask()
                rle = mask_utils.encode(m)
                if crowd:
                    flat = m.ravel(order="F")
                    counts = [0] if flat[0] == 1 else []
                    counts += [len(list(g)) for _, g in groupby(flat)]
                    seg: Any = {"size": [H, W], "counts": counts}
                else:
                    seg = {"size": [H, W], "counts": rle["counts"].decode()}
            else:
                x, y = float(rng.uniform(0, W - 10)), float(rng.uniform(0, H - 10))
                w, h = float(rng.uniform(2, 35)), float(rng.uniform(2, 35))
                seg = [[x, y, x + w, y, x + w * 0.7, y + h, x, y + h * 0.8]]
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, H, W))
                m = mask_utils.decode(rle)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "segmentation": seg,
                         "area": float(mask_utils.area(rle)), "iscrowd": crowd,
                         "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
            masks.append((m, c))
        for _ in range(int(rng.poisson(8)) if rng.random() > 0.15 else 0):
            if masks and rng.random() < 0.6:
                m, c = masks[int(rng.integers(len(masks)))]
                m = np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(2)))
            else:
                m, c = rand_mask(), int(rng.integers(n_cats)) + 1
            rle = mask_utils.encode(np.asfortranarray(m))
            score = float(rng.choice([0.5, 0.9])) if rng.random() < 0.2 else float(rng.random())
            r = {"image_id": im["id"], "category_id": c, "score": score,
                 "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}}
            if bbox_results:
                r["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
            res.append(r)
    return {"images": images, "annotations": anns, "categories": cats}, res


def reference(gt: dict, res: list, iou_type: str = "bbox") -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(res))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def max_diff(ours: CocoEvaluator, ref: COCOeval, weights: np.ndarray | None = None) -> float:
    p, r, s = ours.precision(weights), ours.recall(weights), ours.stats_array(weights)
    assert p.shape == ref.eval["precision"].shape and r.shape == ref.eval["recall"].shape
    return float(max(np.abs(p - ref.eval["precision"]).max(initial=0), np.abs(r - ref.eval["recall"]).max(initial=0),
                     np.abs(s - ref.stats).max()))


def replicate(gt: dict, res: list, weights: np.ndarray) -> tuple[dict, list]:
    """The dataset with the i-th image (by id) repeated weights[i] times under new ids, copies adjacent."""
    ids = sorted(im["id"] for im in gt["images"])
    pos = {iid: i for i, iid in enumerate(ids)}
    by_id = {im["id"]: im for im in gt["images"]}
    images = [{**by_id[iid], "id": pos[iid] * 1000 + c + 1} for iid in ids for c in range(int(weights[pos[iid]]))]
    anns, out = [], []
    for c in range(int(weights.max(initial=0))):
        for a in gt["annotations"]:
            if c < weights[pos[a["image_id"]]]:
                anns.append({**a, "id": len(anns) + 1, "image_id": pos[a["image_id"]] * 1000 + c + 1})
        for r in res:
            if c < weights[pos[r["image_id"]]]:
                out.append({**r, "image_id": pos[r["image_id"]] * 1000 + c + 1})
    return {**gt, "images": images, "annotations": anns}, out


@pytest.mark.parametrize("seed", range(40))
def test_boxes_match_pycocotools(seed: int) -> None:
    gt, res = make_boxes(seed, quant=seed % 2 == 0, tie_p=1.0 if seed % 10 == 3 else 0.2)
    assert max_diff(CocoEvaluator.from_dicts(gt, res), reference(gt, res)) <= TOL


@pytest.mark.parametrize("seed", range(12))
def test_masks_match_pycocotools(seed: int) -> None:
    gt, res = make_masks(seed, bbox_results=seed % 3 == 0)
    for iou_type in ("segm", "bbox"):
        assert max_diff(CocoEvaluator.from_dicts(gt, res, iou_type), reference(gt, res, iou_type)) <= TOL, iou_type


def test_box_results_evaluated_as_masks() -> None:
    """bbox results under segm: loadRes gives each a box polygon, area w*h."""
    gt, _ = make_masks(1)
    _, res = make_boxes(1, n_images=8, n_cats=3)
    for r in res:
        r["image_id"] = (r["image_id"] - 1) // 3 + 1
        r["category_id"] = (r["category_id"] + 1) // 2
        r["bbox"] = [v / 3 for v in r["bbox"]]
    assert max_diff(CocoEvaluator.from_dicts(gt, res, "segm"), reference(gt, res, "segm")) <= TOL


@pytest.mark.parametrize("seed", range(12))
def test_image_weights_equal_repeated_images(seed: int) -> None:
    gt, res = make_boxes(seed, n_images=12, tie_p=0.0)
    ours = CocoEvaluator.from_dicts(gt, res)
    weights = np.random.default_rng(seed).multinomial(12, np.ones(12) / 12)
    if seed == 0:
        weights = np.ones(12, dtype=np.int64)
    g2, r2 = replicate(gt, res, weights)
    assert max_diff(ours, reference(g2, r2), weights) <= TOL
    assert max_diff(ours, reference(gt, res)) <= TOL  # unweighted afterwards: nothing cached wrongly


def test_image_weights_masks() -> None:
    gt, res = make_masks(4, n_images=8)
    ours = CocoEvaluator.from_dicts(gt, res, "segm")
    weights = np.array([0, 2, 1, 3, 0, 1, 1, 0])
    g2, r2 = replicate(gt, res, weights)
    assert max_diff(ours, reference(g2, r2, "segm"), weights) <= TOL


def test_edge_cases_match_pycocotools() -> None:
    gt, res = make_boxes(7)
    gt["categories"].append({"id": 100, "name": "no ground truth"})
    gt["categories"].append({"id": 101, "name": "nothing at all"})
    gt["images"].append({"id": 999, "width": 10, "height": 10})  # no ground truth, no detections
    res += [{"image_id": 1, "category_id": 100, "bbox": [1, 1, 5, 5], "score": 0.9},
            {"image_id": 4, "category_id": 100, "bbox": [1, 1, 50, 50], "score": 0.3}]
    res = [r for r in res if r["category_id"] != 3]  # a class with ground truth but no detections
    ours = CocoEvaluator.from_dicts(gt, res)
    assert max_diff(ours, reference(gt, res)) <= TOL
    assert list(ours.category_ids) == sorted(c["id"] for c in gt["categories"])
    assert list(ours.image_ids) == sorted(im["id"] for im in gt["images"])


def test_quirks_of_pycocotools_reproduced() -> None:
    """Ground truth with id 0 (a match to it counts as a false positive) and repeated ids (the last wins)."""
    for seed in range(6):
        gt, res = make_boxes(seed, n_images=6)
        gt["annotations"][0]["id"] = 0
        if len(gt["annotations"]) > 4:
            gt["annotations"][3]["id"] = gt["annotations"][1]["id"]
        assert max_diff(CocoEvaluator.from_dicts(gt, res), reference(gt, res)) <= TOL


def test_all_equal_scores_and_exact_ties() -> None:
    for seed in range(8):
        gt, res = make_boxes(seed, tie_p=1.0, quant=True)
        for r in res[::2]:
            r["score"] = 0.5
        assert max_diff(CocoEvaluator.from_dicts(gt, res), reference(gt, res)) <= TOL


def test_no_results_and_no_ground_truth() -> None:
    gt, _ = make_boxes(3)
    stats = CocoEvaluator.from_dicts(gt, []).stats()  # pycocotools cannot load an empty list
    assert set(stats) == set(STAT_NAMES)
    assert all(v == 0.0 for v in stats.values() if v is not None)
    empty = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
    _, res = make_boxes(3)
    assert CocoEvaluator.from_dicts(empty, res).stats() == dict.fromkeys(STAT_NAMES)


def test_stats_are_none_where_pycocotools_says_minus_one() -> None:
    gt, res = make_boxes(5)
    for a in gt["annotations"]:
        a["area"] = 50.0 ** 2  # only medium objects
    ref = reference(gt, res)
    stats = CocoEvaluator.from_dicts(gt, res).stats()
    for name, value in zip(STAT_NAMES, ref.stats, strict=True):
        assert (stats[name] is None) == (value == -1), name
        if value != -1:
            assert stats[name] == pytest.approx(value, abs=TOL)


def test_image_weights_validated() -> None:
    gt, res = make_boxes(2, n_images=5)
    ours = CocoEvaluator.from_dicts(gt, res)
    with pytest.raises(ValueError, match="one per image"):
        ours.stats(np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        ours.stats(np.array([1, -1, 1, 1, 1]))
    assert ours.stats(np.zeros(5, dtype=int)) == dict.fromkeys(STAT_NAMES)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda gt, res: res.append({"image_id": 12345, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}),
     "image_id 12345 is not in the ground truth"),
    (lambda gt, res: res.append({"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 1}),
     "category_id 2 is not in the ground truth"),
    (lambda gt, res: res[2].__setitem__("bbox", [0, 0, -4.0, 1]), "results[2].bbox: negative width -4.0"),
    (lambda gt, res: gt["annotations"][3]["bbox"].__setitem__(3, -2.5), "annotations[3].bbox: negative height -2.5"),
    (lambda gt, res: res[1].pop("score"), "results[1]: missing score"),
    (lambda gt, res: res[4].__setitem__("image_id", "a"), "results[4].image_id: expected an integer id"),
    (lambda gt, res: gt["annotations"][0].pop("area"), "annotations[0]: missing area"),
    (lambda gt, res: gt["annotations"][2].__setitem__("image_id", 2), "annotations[2].image_id: 2 is not in images"),
])
def test_bad_input_is_one_line(mutate: Any, message: str) -> None:
    gt, res = make_boxes(0, n_images=6)
    mutate(gt, res)
    with pytest.raises(CocoInputError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        CocoEvaluator.from_dicts(gt, res)
    assert "\n" not in str(info.value)


def test_files_equal_dicts_on_fast_and_general_paths(tmp_path: Any) -> None:
    """Box files take a typed fast path; unusual but valid fields fall back to the general parser."""
    import json

    for variant in range(4):
        gt, res = make_boxes(20 + variant, n_images=10)
        if variant == 1:
            for a in gt["annotations"][::3]:
                a["iscrowd"] = bool(a["iscrowd"])  # a bool, not 0/1
        if variant == 2:
            res[0]["image_id"] = float(res[0]["image_id"])  # 3.0 for 3, as pycocotools accepts
            gt["images"][0]["extra"] = {"anything": [1, 2]}
        if variant == 3:
            for r in res[::4]:
                r["segmentation"] = [[0, 0, 1, 1, 2, 2]]  # ignored for bbox
        (tmp_path / "gt.json").write_text(json.dumps(gt))
        (tmp_path / "dt.json").write_text(json.dumps(res))
        from_files = CocoEvaluator.from_files(tmp_path / "gt.json", tmp_path / "dt.json")
        assert max_diff(from_files, reference(gt, res)) <= TOL, variant


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda gt, res: res[0]["segmentation"].__setitem__("size", [10, 10]),
     "results[0].segmentation: size [10, 10] is not the image's [60, 80]"),
    (lambda gt, res: res[1].__setitem__("segmentation", [[1, 2, 3]]),
     "results[1].segmentation: expected a compressed RLE"),
    (lambda gt, res: gt["annotations"][2].pop("segmentation"), "annotations[2]: missing segmentation"),
    (lambda gt, res: gt["annotations"][1].__setitem__("segmentation", "x"), "annotations[1].segmentation: expected"),
    (lambda gt, res: gt["images"][0].pop("height"), "images[0]: missing height"),
])
def test_bad_mask_input_is_one_line(mutate: Any, message: str) -> None:
    gt, res = make_masks(2, n_images=6)
    mutate(gt, res)
    with pytest.raises(CocoInputError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        CocoEvaluator.from_dicts(gt, res, "segm")
    assert "\n" not in str(info.value)

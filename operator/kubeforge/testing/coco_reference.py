"""pycocotools, the reference the COCO numbers are tested against (a test dependency, imported lazily)."""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from contextlib import redirect_stdout
from typing import Any

from kubeforge.evaluation.detection import ImageDetections, ImageTruth, to_coco


def pycocotools_bbox(truths: Sequence[ImageTruth], dets: Sequence[ImageDetections], names: Sequence[str]) -> Any:
    """pycocotools' COCOeval on boxes after evaluate, accumulate and summarize (inputs copied: it edits them)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, results = to_coco(truths, dets, names)
    gt = COCO()
    gt.dataset = copy.deepcopy(gt_dict)
    with redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator

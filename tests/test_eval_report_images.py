"""Report samples: instance masks are drawn over the image with the boxes (ground truth green, predictions red)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from kubeforge.datasets.formats.common import mask_to_rle
from kubeforge.evaluation.detection import ImageDetections, ImageTruth
from kubeforge.evaluation.report_images import GT_COLOR, PRED_COLOR, detection_sample


def _pixels(sample_png: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(sample_png))).convert("RGB"), dtype=np.int64)


def test_instance_masks_are_tinted_and_only_kept_predictions_drawn() -> None:
    img = Image.new("RGB", (80, 80), (128, 128, 128))
    truth_mask = np.zeros((80, 80), bool)
    truth_mask[10:30, 10:30] = True
    kept, dropped = np.zeros((80, 80), bool), np.zeros((80, 80), bool)
    kept[50:70, 50:70] = True
    dropped[50:70, 10:30] = True
    truth = ImageTruth(80, 80, np.array([[10, 10, 30, 30]]), np.array([0]))
    dets = ImageDetections(np.array([[50, 50, 70, 70], [10, 50, 30, 70]]), np.array([0.9, 0.2]), np.array([0, 0]))
    plain = _pixels(detection_sample("a.png", img, truth, dets, ["cell"], 0.5).png_base64)
    drawn = _pixels(detection_sample("a.png", img, truth, dets, ["cell"], 0.5, [mask_to_rle(truth_mask)],
                                     [mask_to_rle(kept), mask_to_rle(dropped)]).png_base64)
    scale = drawn.shape[0] / 80  # thumbnails enlarge small images

    def at(arr: np.ndarray, y: int, x: int) -> np.ndarray:
        return arr[int(y * scale), int(x * scale)]

    grey = np.array([128, 128, 128])
    # Inside each mask, away from the box outlines: tinted towards the mask's colour; the plain sample is grey.
    assert (at(plain, 20, 20) == grey).all() and (at(plain, 60, 60) == grey).all()
    green, red = at(drawn, 20, 20), at(drawn, 60, 60)
    assert green[1] > 128 + 20 and green[0] < 128 and np.argmax(green) == int(np.argmax(GT_COLOR))
    assert red[0] > 128 + 20 and red[1] < 128 and np.argmax(red) == int(np.argmax(PRED_COLOR))
    # The detection below the threshold is not drawn, mask or box.
    assert (at(drawn, 20, 60) == grey).all()

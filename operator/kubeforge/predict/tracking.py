"""Tracking by detection: ByteTrack and BoT-SORT from BoxMOT, track ids on a video's predictions.

Why BoxMOT (PyPI `boxmot`): it maintains both trackers behind one interface (`update(dets, img)` ->
tracks with the index of the detection each came from), runs on CPU, and its BoT-SORT runs without a
ReID model (`with_reid=False`), so nothing is downloaded: BoT-SORT is then ByteTrack's two-stage
association plus camera-motion compensation (sparse optical flow on the frame). supervision's ByteTrack
has no BoT-SORT, and BoxMOT releases after 16.x require numpy>=2, which this project cannot take
(nvidia-pytriton pins numpy<2), hence the pin in pyproject.toml.

Detections and tracks: every detection of a frame goes to the tracker, low scores included (ByteTrack's
second association uses detections between its low and high thresholds to keep tracks alive through
occlusion, so predict with a threshold at or below `low_thresh` to give it those). A detection that ends
up in a confirmed track gets that track's `track_id`; one that does not (a new object seen for the first
time, or a low-score detection no track claimed) keeps `track_id=None` and is kept in the prediction,
unless `keep_untracked=False`, which drops it. The boxes stay the detector's (not the Kalman filter's),
so a tracked prediction has the same boxes, classes, scores and masks as the untracked one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from kubeforge.serving.client import Prediction

METHODS = ("bytetrack", "botsort")
Method = Literal["bytetrack", "botsort"]


class Tracker:
    """One video's tracker: feed it the frames' predictions in order; it sets `track_id` on detections.

    `high_thresh`: detections at or above start and extend tracks first; `low_thresh`: down to this score
    they may only extend existing tracks (ByteTrack's second stage); `new_track_thresh` (BoT-SORT): the
    score a detection needs to start a track; `track_buffer`: frames (at 30 fps; scaled by `fps`) a lost
    track is kept for re-identification by motion; `match_thresh`: the IoU-distance gate of association.
    """

    def __init__(self, method: Method = "bytetrack", fps: float = 30.0, *, high_thresh: float = 0.5,
                 low_thresh: float = 0.1, new_track_thresh: float = 0.6, track_buffer: int = 30,
                 match_thresh: float = 0.8, keep_untracked: bool = True) -> None:
        if method not in METHODS:
            raise ValueError(f"tracking method {method!r}: expected one of {', '.join(METHODS)}")
        if not 0 <= low_thresh <= high_thresh <= 1:
            raise ValueError(f"low_thresh={low_thresh}, high_thresh={high_thresh}: expected 0 <= low <= high <= 1")
        _quiet_boxmot()
        self.method = method
        self.keep_untracked = keep_untracked
        rate = max(1, round(fps))
        if method == "bytetrack":
            from boxmot import ByteTrack

            self._tracker: Any = ByteTrack(min_conf=low_thresh, track_thresh=high_thresh, match_thresh=match_thresh,
                                           track_buffer=track_buffer, frame_rate=rate)
        else:
            import torch
            from boxmot import BotSort

            self._tracker = BotSort(reid_weights=None, device=torch.device("cpu"), half=False, with_reid=False,
                                    track_high_thresh=high_thresh, track_low_thresh=low_thresh,
                                    new_track_thresh=new_track_thresh, track_buffer=track_buffer,
                                    match_thresh=match_thresh, frame_rate=rate, cmc_method="sof")

    def update(self, pred: Prediction, image: Image.Image | np.ndarray | None = None) -> Prediction:
        """The frame's prediction with track ids set (a copy; the input is not changed).

        `image` is the frame (BoT-SORT estimates camera motion from it); without it a blank frame of the
        prediction's size stands in (no camera motion assumed).
        """
        dets = np.array([[*d.box, d.score, d.label] for d in pred.detections], dtype=np.float32).reshape(-1, 6)
        frame = _frame(image, pred)
        tracks = self._tracker.update(dets, frame)
        ids: dict[int, int] = {}
        for row in np.asarray(tracks).reshape(-1, 8):  # x1 y1 x2 y2 id conf cls det_ind
            ids[int(row[7])] = int(row[4])
        detections = []
        for index, det in enumerate(pred.detections):
            track_id = ids.get(index)
            if track_id is None and not self.keep_untracked:
                continue
            detections.append(replace(det, track_id=track_id))
        return replace(pred, detections=detections)


def _frame(image: Image.Image | np.ndarray | None, pred: Prediction) -> np.ndarray:
    if image is None:
        return np.zeros((pred.height, pred.width, 3), dtype=np.uint8)
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    return np.ascontiguousarray(pixels[..., ::-1])  # BoxMOT follows OpenCV: BGR


def _quiet_boxmot() -> None:
    # BoxMOT logs every tracker's settings at INFO through loguru; keep the CLI's output ours.
    from loguru import logger

    logger.disable("boxmot")


__all__ = ["METHODS", "Tracker"]

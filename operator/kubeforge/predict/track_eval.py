"""Tracking scores against true tracks: HOTA, MOTA and IDF1, computed by TrackEval.

TrackEval (the MOTChallenge / HOTA authors' evaluation code; PyPI `sn-trackeval`, the maintained fork
that installs beside numpy<2 — PyPI `trackeval` 1.x requires numpy>=2.3 on Python 3.11) computes every
number here; this module only turns per-frame (id, box) lists into its input: ids renumbered from 0 per
side and the IoU of every true box with every tracked box per frame. Evaluation is class-agnostic (an
object tracked under a wrong class still counts), with TrackEval's defaults: a match needs IoU >= 0.5
for MOTA and IDF1, and HOTA is averaged over IoU thresholds 0.05..0.95.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kubeforge.serving.client import Prediction

Box = tuple[float, float, float, float] | list[float]  # xyxy, pixels
Frame = Sequence[tuple[int, Box]]  # (track id, box) for each object in one frame


@dataclass(frozen=True)
class TrackScores:
    hota: float  # higher-order tracking accuracy: sqrt(DetA x AssA), averaged over IoU thresholds
    deta: float  # detection accuracy part of HOTA
    assa: float  # association accuracy part of HOTA
    mota: float  # 1 - (misses + false positives + id switches) / true boxes
    motp: float  # mean IoU of matched boxes
    idf1: float  # F1 of boxes matched under the best one-to-one mapping of whole tracks
    id_switches: int
    false_positives: int
    misses: int
    true_boxes: int
    tracked_boxes: int
    true_tracks: int
    predicted_tracks: int
    frames: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def tracks_from_predictions(preds: Iterable[Prediction]) -> list[list[tuple[int, list[float]]]]:
    """Per frame, the (track id, box) of each detection that has a track id (the rest are not tracks)."""
    return [[(d.track_id, d.box) for d in p.detections if d.track_id is not None] for p in preds]


def _renumber(frames: Sequence[Frame]) -> tuple[list[np.ndarray], int]:
    index: dict[int, int] = {}
    out = []
    for frame in frames:
        out.append(np.array([index.setdefault(int(i), len(index)) for i, _ in frame], dtype=int))
    return out, len(index)


def _boxes(frame: Frame) -> np.ndarray:
    return np.array([list(b) for _, b in frame], dtype=float).reshape(-1, 4)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (xyxy)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def evaluate(truth: Sequence[Frame], tracks: Sequence[Frame]) -> TrackScores:
    """HOTA, MOTA, IDF1 (and their parts) of `tracks` against `truth`, both one list per frame."""
    if len(truth) != len(tracks):
        raise ValueError(f"truth has {len(truth)} frames, tracks have {len(tracks)}: expected one list per frame "
                         "for both")
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints its config on construction
        from trackeval.metrics import CLEAR, HOTA, Identity

        metrics = (HOTA(), CLEAR({"PRINT_CONFIG": False}), Identity({"PRINT_CONFIG": False}))
    gt_ids, n_gt = _renumber(truth)
    tr_ids, n_tr = _renumber(tracks)
    data = {
        "num_timesteps": len(truth), "num_gt_ids": n_gt, "num_tracker_ids": n_tr,
        "num_gt_dets": sum(len(f) for f in truth), "num_tracker_dets": sum(len(f) for f in tracks),
        "gt_ids": gt_ids, "tracker_ids": tr_ids,
        "similarity_scores": [_iou(_boxes(g), _boxes(t)) for g, t in zip(truth, tracks, strict=True)],
    }
    hota, clear, ident = (m.eval_sequence(data) for m in metrics)
    return TrackScores(
        hota=float(np.mean(hota["HOTA"])), deta=float(np.mean(hota["DetA"])), assa=float(np.mean(hota["AssA"])),
        mota=float(clear["MOTA"]), motp=float(clear["MOTP"]), idf1=float(ident["IDF1"]),
        id_switches=int(clear["IDSW"]), false_positives=int(clear["CLR_FP"]), misses=int(clear["CLR_FN"]),
        true_boxes=data["num_gt_dets"], tracked_boxes=data["num_tracker_dets"], true_tracks=n_gt,
        predicted_tracks=n_tr, frames=len(truth),
    )


__all__ = ["TrackScores", "evaluate", "tracks_from_predictions"]

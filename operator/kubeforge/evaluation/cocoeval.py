"""A fast, exact COCO evaluator: the numbers of pycocotools 2.0.x `COCOeval`, vectorised.

    ev = CocoEvaluator.from_files(Path("gt.json"), Path("dt.json"), "bbox")
    ev.stats()  # {"AP": ..., "AP50": ..., ..., "ARl": ...}; None where pycocotools says -1

What pycocotools does, and how it is done here:

* `evaluateImg` (per image, category and area range: sort ground truth with ignored last, take
  detections by descending score, at most 100, and match each greedily to the free ground
  truth of highest IoU >= t, preferring non-ignored ones, ties to the later one, crowd regions
  matchable again) runs once, for all groups at a time: the groups are padded to [A, T, n, G]
  arrays and the r-th candidate detection of every group is matched in one step. Detections
  that overlap no ground truth by IoU >= 0.5 cannot match anything and skip the loop.
* `accumulate` concatenates the detections of all images per category, sorts them by score
  (stable, in image order), and reads the precision envelope at 101 recall thresholds.
  Here the sort is done once. Only the points at true positives can set the envelope (after
  one the recall stays put until the next while false positives only lower the precision),
  so per call only those are looked at, for all (threshold, category) at once: each is binned
  by how many recall thresholds it reaches, and the envelope is a reverse running maximum over
  those 102 bins. Every value is computed with the same floating-point operations as
  pycocotools, so the results are identical, not just close.
* `image_weights` (a bootstrap resample: how many times each image is drawn) gives what
  pycocotools gives on the dataset with each image repeated that many times (up to the order
  among exactly tied scores), without repeating anything: a true positive drawn w times adds w
  points of rising precision at rising recall, of which only the last can matter; the counts
  before it are running sums of weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from kubeforge.evaluation.coco_files import (
    CocoInputError,
    GroundTruth,
    Results,
    ground_truth_rles,
    load_ground_truth,
    load_results,
    parse_ground_truth,
    parse_results,
)

__all__ = ["STAT_NAMES", "CocoEvaluator", "CocoInputError", "iou_cap", "summary_lines"]

IouType = Literal["bbox", "segm"]
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# pycocotools' Params for bbox/segm, built with the same expressions (the same floats).
IOU_THRS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
REC_THRS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RNG = ((0 ** 2, 1e5 ** 2), (0 ** 2, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2))
AREA_LBL = ("all", "small", "medium", "large")
_EPS = np.spacing(1)

# (ap, iouThr, areaRng, maxDets) of each of the 12 numbers, as COCOeval.summarize lists them.
_SUMMARY = (
    (1, None, "all", 100), (1, .5, "all", 100), (1, .75, "all", 100),
    (1, None, "small", 100), (1, None, "medium", 100), (1, None, "large", 100),
    (0, None, "all", 1), (0, None, "all", 10), (0, None, "all", 100),
    (0, None, "small", 100), (0, None, "medium", 100), (0, None, "large", 100),
)


def iou_cap(threshold: float | np.ndarray) -> np.ndarray:
    """The IoU a match needs (>=): pycocotools' min(t, 1 - 1e-10), so that t = 1 still matches a perfect overlap."""
    return np.minimum(threshold, 1 - 1e-10)


def _bbox_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of box pairs (xywh rows), with the operations of pycocotools' C `bbIou`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        da = d[:, 2] * d[:, 3]
        ga = g[:, 2] * g[:, 3]
        w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
        h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
        i = w * h
        u = np.where(crowd, da, da + ga - i)
        return np.where((w > 0) & (h > 0), i / u, 0.0)


class CocoEvaluator:
    """The COCO detection suite of one ground truth and one result set (bbox or segm).

    Matching happens on construction; `precision`, `recall` and `stats` accumulate, optionally
    with per-image multiplicities (`image_weights`, in `image_ids` order).
    """

    image_ids: np.ndarray
    category_ids: np.ndarray

    def __init__(self, gt: GroundTruth, dt: Results, iou_type: IouType = "bbox",
                 gt_name: str = "ground truth") -> None:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
        self.iou_type = iou_type
        self.image_ids = gt.image_ids
        self.category_ids = gt.category_ids
        self._num_images = len(gt.image_ids)
        K = self._num_cats = len(gt.category_ids)
        A, T = len(AREA_RNG), len(IOU_THRS)

        # Ground truth, grouped by (image, category) in pycocotools' visiting order.
        gkey = gt.image * K + gt.category
        self._gt_image = gt.image
        self._gt_cat = gt.category
        lo = np.array([r[0] for r in AREA_RNG])[:, None]
        hi = np.array([r[1] for r in AREA_RNG])[:, None]
        gt_ig = gt.crowd[None, :] | (gt.area[None, :] < lo) | (gt.area[None, :] > hi)  # [A, G]
        self._gt_ig = gt_ig

        # Detections: per (image, category) by descending score (stable), at most 100.
        dkey = dt.image * K + dt.category
        order = np.lexsort((-dt.score, dkey))
        dkey_s = dkey[order]
        n = len(order)
        if n:
            new = np.empty(n, dtype=bool)
            new[0] = True
            np.not_equal(dkey_s[1:], dkey_s[:-1], out=new[1:])
            starts = np.flatnonzero(new)
            counts = np.diff(np.append(starts, n))
            rank = np.arange(n) - np.repeat(starts, counts)
        else:
            rank = np.zeros(0, dtype=np.int64)
        keep = rank < MAX_DETS[-1]
        order, rank, dkey_s = order[keep], rank[keep], dkey_s[keep]
        self._dt_image = dt.image[order]
        self._dt_cat = dt.category[order]
        self._dt_score = dt.score[order]
        dt_area = dt.area[order]
        D = len(order)

        # Each detection's ground-truth candidates: its group's rows [gstart, gstart + gcount).
        gstart = np.searchsorted(gkey, dkey_s, side="left")
        gcount = np.searchsorted(gkey, dkey_s, side="right") - gstart
        pair_start = np.concatenate([[0], np.cumsum(gcount)])
        P = int(pair_start[-1])
        pair_det = np.repeat(np.arange(D), gcount)
        pair_gt = np.repeat(gstart - pair_start[:-1], gcount) + np.arange(P)
        if iou_type == "bbox":
            assert gt.bbox is not None and dt.bbox is not None
            ious = _bbox_iou(dt.bbox[order][pair_det], gt.bbox[pair_gt], gt.crowd[pair_gt])
        else:
            ious = self._mask_ious(gt, dt, order, gkey, dkey_s, gstart, gcount, pair_start, P, gt_name)

        # Matching (evaluateImg), vectorised over groups.
        matched = np.zeros((A, T, D), dtype=bool)
        matched_ig = np.zeros((A, T, D), dtype=bool)
        matched_nz = np.zeros((A, T, D), dtype=bool)  # matched a ground truth whose id is not 0
        if P:
            best = np.maximum.reduceat(ious, pair_start[:-1][gcount > 0]) if P else np.zeros(0)
            det_best = np.full(D, -1.0)
            det_best[gcount > 0] = best
            cand = det_best >= iou_cap(IOU_THRS[0])
            if cand.any():
                self._match(cand, dkey_s, gstart, gcount, pair_start, ious, gt, gt_ig, matched, matched_ig,
                            matched_nz)

        # dtIg and the TP / FP verdicts per (area, threshold, detection).
        dt_out = (dt_area[None, :] < lo) | (dt_area[None, :] > hi)  # [A, D]
        dtm_zero = ~matched_nz
        dt_ig = (matched & matched_ig) | (dtm_zero & dt_out[:, None, :])
        self._tp = matched_nz & ~dt_ig
        self._fp = dtm_zero & ~dt_ig

        # accumulate's order: per category by descending score, stable over images in order and
        # each image's own score order; one selection per maxDets.
        acc = np.lexsort((rank, self._dt_image, -self._dt_score, self._dt_cat))
        self._acc: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for max_det in MAX_DETS:
            sel = acc[rank[acc] < max_det]
            cats = self._dt_cat[sel]
            self._acc.append((sel, cats, self._dt_image[sel]))
        self._cache: dict[bytes | None, tuple[np.ndarray, np.ndarray]] = {}
        self._static_cache: dict[tuple[int, int], tuple[np.ndarray, ...] | None] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dicts(cls, gt: dict[str, Any], results: list[dict[str, Any]],
                   iou_type: IouType = "bbox") -> CocoEvaluator:
        """From a COCO ground-truth dict and a results list (as `COCO(...)`, `loadRes(...)` take them)."""
        gt_cols = parse_ground_truth(gt, iou_type, "ground truth")
        return cls(gt_cols, parse_results(results, gt_cols, iou_type, "results", "ground truth"), iou_type)

    @classmethod
    def from_files(cls, gt_path: Path | str, dt_path: Path | str, iou_type: IouType = "bbox") -> CocoEvaluator:
        """From a ground-truth and a results JSON file; CocoInputError names the file and the entry."""
        gt_name = str(gt_path)
        gt_cols = load_ground_truth(gt_path, iou_type)
        dt_cols = load_results(dt_path, gt_cols, iou_type, gt_name)
        return cls(gt_cols, dt_cols, iou_type, gt_name)

    # ------------------------------------------------------------------ matching
    def _mask_ious(self, gt: GroundTruth, dt: Results, order: np.ndarray, gkey: np.ndarray, dkey_s: np.ndarray,
                   gstart: np.ndarray, gcount: np.ndarray, pair_start: np.ndarray, P: int,
                   gt_name: str) -> np.ndarray:
        from faster_coco_eval.core import mask as mask_utils

        ious = np.zeros(P)
        if P == 0:
            return ious
        assert dt.rles is not None
        gt_rles = ground_truth_rles(gt, gt_name)
        D = len(dkey_s)
        has = np.flatnonzero(gcount > 0)
        # runs of detections of the same group (consecutive in dkey_s)
        brk = np.flatnonzero(np.diff(dkey_s[has]) != 0) + 1
        for run in np.split(has, brk):
            j0, j1 = int(run[0]), int(run[-1]) + 1
            g0, gn = int(gstart[j0]), int(gcount[j0])
            d_rles = [dt.rles[i] for i in order[j0:j1]]
            g_rles = gt_rles[g0:g0 + gn]
            m = np.asarray(mask_utils.iou(d_rles, g_rles, [int(c) for c in gt.crowd[g0:g0 + gn]]),
                           dtype=np.float64).reshape(j1 - j0, gn)
            ious[int(pair_start[j0]):int(pair_start[j1])] = m.reshape(-1)
        assert D == len(order)
        return ious

    @staticmethod
    def _match(cand: np.ndarray, dkey_s: np.ndarray, gstart: np.ndarray, gcount: np.ndarray,
               pair_start: np.ndarray, ious: np.ndarray, gt: GroundTruth, gt_ig: np.ndarray,
               matched: np.ndarray, matched_ig: np.ndarray, matched_nz: np.ndarray) -> None:
        """Greedy matching of the candidate detections, all groups at once, one detection rank per step."""
        thr = iou_cap(IOU_THRS)
        A, T = gt_ig.shape[0], len(thr)
        cj = np.flatnonzero(cand)  # candidate detections, grouped, in score order within a group
        ckey = dkey_s[cj]
        new = np.ones(len(cj), dtype=bool)
        new[1:] = ckey[1:] != ckey[:-1]
        gfirst = np.flatnonzero(new)  # index into cj of each group's first candidate
        gnum = np.diff(np.append(gfirst, len(cj)))  # candidates per group
        gsize = gcount[cj[gfirst]]  # ground truths per group
        gbase = gstart[cj[gfirst]]
        gt_nz = gt.ann_id != 0
        # buckets of similar ground-truth counts keep the padding small
        bucket = np.ceil(np.log2(np.maximum(gsize, 1))).astype(np.int64)
        for b in np.unique(bucket):
            groups = np.flatnonzero(bucket == b)
            groups = groups[np.argsort(-gnum[groups], kind="stable")]  # active groups stay a prefix
            n = len(groups)
            Gb = int(gsize[groups].max())
            col = np.arange(Gb)
            sizes = gsize[groups]
            valid = col[None, :] < sizes[:, None]  # [n, Gb]
            gidx = np.where(valid, gbase[groups][:, None] + col[None, :], 0)
            crowd = gt.crowd[gidx] & valid
            ig = gt_ig[:, gidx]  # [A, n, Gb]
            itype = np.int16 if Gb < 16000 else np.int32
            tier = np.where(ig, 0, Gb).astype(itype)  # non-ignored ground truth is preferred
            nz = gt_nz[gidx]
            free = np.ones((A, T, n, Gb), dtype=bool)  # crowd regions are never taken
            nums = gnum[groups]
            first = gfirst[groups]
            for r in range(int(nums.max())):
                m_ = int(np.count_nonzero(nums > r))
                j = cj[first[:m_] + r]  # the r-th candidate of each active group
                at = pair_start[j][:, None] + np.minimum(col[None, :], sizes[:m_, None] - 1)
                iou = np.where(valid[:m_], ious[at], -1.0)  # [m, Gb]
                # rank of each ground truth by IoU, ties to the later one: the best is the highest rank
                rank = np.empty((m_, Gb), dtype=itype)
                np.put_along_axis(rank, np.argsort(iou, axis=1, kind="stable"),
                                  np.arange(1, Gb + 1, dtype=itype)[None, :], axis=1)
                prefer = tier[:, :m_] + rank[None]  # [A, m, Gb], > 0
                ok = iou[None, :, :] >= thr[:, None, None]  # [T, m, Gb]; padding has IoU -1
                key = np.where(ok[None] & free[:, :, :m_], prefer[:, None], 0)  # [A, T, m, Gb]
                pick = key.argmax(-1)  # [A, T, m]
                flat = pick.reshape(-1)
                has = (key.reshape(-1, Gb)[np.arange(len(flat)), flat] > 0).reshape(pick.shape)
                ai, ti, gi = np.nonzero(has)
                pk = pick[ai, ti, gi]
                keep = ~crowd[gi, pk]
                free[ai[keep], ti[keep], gi[keep], pk[keep]] = False
                dj = j[gi]
                matched[ai, ti, dj] = True
                matched_ig[ai, ti, dj] = ig[ai, gi, pk]
                matched_nz[ai, ti, dj] = nz[gi, pk]

    # ------------------------------------------------------------------ accumulate
    def _accumulate(self, image_weights: np.ndarray | None,
                    cells: tuple[tuple[int, int], ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """precision, recall as pycocotools accumulates them; `cells`: only these (area, maxDets)
        indices (the rest stay -1), for bootstrap resamples that need one cell a thousand times."""
        weights = None
        if image_weights is not None:
            weights = np.asarray(image_weights)
            if weights.shape != (self._num_images,):
                raise ValueError(f"image_weights: expected {self._num_images} values (one per image), "
                                 f"got shape {weights.shape}")
            if weights.dtype.kind == "f":
                if not np.all(weights == np.floor(weights)):
                    raise ValueError("image_weights must be non-negative integers")
            elif weights.dtype.kind not in "iub":
                raise ValueError("image_weights must be non-negative integers")
            weights = weights.astype(np.int64)
            if (weights < 0).any():
                raise ValueError("image_weights must be non-negative integers")
        key = (None if weights is None else weights.tobytes(), cells)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        K, T, R = self._num_cats, len(IOU_THRS), len(REC_THRS)
        A, M = len(AREA_RNG), len(MAX_DETS)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        gw = None if weights is None else weights[self._gt_image]
        for a in range(A):
            if cells is not None and all(c[0] != a for c in cells):
                continue
            counted = ~self._gt_ig[a]
            if gw is None:
                npig = np.bincount(self._gt_cat[counted], minlength=K).astype(np.float64)
            else:
                npig = np.bincount(self._gt_cat[counted], weights=gw[counted], minlength=K)
            npig_int = npig.astype(np.int64)
            for m in range(M):
                if cells is not None and (a, m) not in cells:
                    continue
                cat_ok = npig_int > 0
                if not cat_ok.any():
                    continue
                recall[:, cat_ok, a, m] = 0.0
                precision[:, :, cat_ok, a, m] = 0.0
                st = self._static(a, m)
                if st is None:
                    continue
                images, ji, keys, tcat, jstart, fp_all, extra_col, e_at, e_base = st
                # Only the points at true positives can set a precision: after a true positive
                # the recall stays until the next one while false positives only lower the
                # precision (and before the first one it is 0, the default). Their false-positive
                # counts: detections false at every threshold (one running sum) plus the few
                # false at some thresholds only (a running sum over those, in threshold order).
                w = np.ones(len(images), dtype=np.int64) if weights is None else weights[images]
                f_all = np.concatenate([[0], np.cumsum(np.where(fp_all, w, 0))])
                f_extra = np.concatenate([[0], np.cumsum(w[extra_col])])
                fcount = ((f_all[ji + 1] - f_all[jstart]) + (f_extra[e_at] - f_extra[e_base])).astype(np.float64)
                P = len(keys)
                if weights is None:
                    tp_total = np.bincount(keys, minlength=T * K).astype(np.float64)
                    cw = np.arange(1, P + 1, dtype=np.float64)
                else:
                    wt = w[ji]
                    tp_total = np.bincount(keys, weights=wt, minlength=T * K)
                    cw = np.cumsum(wt).astype(np.float64)
                # true positives so far within the (threshold, category) run
                base = np.cumsum(tp_total) - tp_total  # running total before each key
                tcount = cw - base[keys]
                safe = np.where(npig > 0, npig, 1)  # categories without positives are not reported
                n_pos = safe[tcat]
                rec = tp_total.reshape(T, K) / safe[None, :]
                recall[:, cat_ok, a, m] = rec[:, cat_ok]
                if P == 0:
                    continue
                rc = tcount / n_pos
                pr = tcount / (fcount + tcount + _EPS)
                reach = np.searchsorted(REC_THRS, rc, side="right")  # recall thresholds each point reaches
                bins = keys * (R + 1) + reach  # non-decreasing
                run = np.ones(P, dtype=bool)
                run[1:] = bins[1:] != bins[:-1]
                run_starts = np.flatnonzero(run)
                binmax = np.zeros((T * K, R + 1))
                binmax.reshape(-1)[bins[run_starts]] = np.maximum.reduceat(pr, run_starts)
                # q[r] = the best precision among points reaching threshold r, i.e. in bins > r
                suffix = np.maximum.accumulate(binmax[:, ::-1], axis=1)[:, ::-1]
                q = suffix[:, 1:].reshape(T, K, R)
                precision[:, :, cat_ok, a, m] = q[:, cat_ok, :].transpose(0, 2, 1)
        result = (precision, recall)
        # Keep the unweighted result (read again and again) and the latest weighted one.
        unweighted = {k: v for k, v in self._cache.items() if k[0] is None}
        self._cache = {**unweighted, key: result}
        return result

    def _static(self, a: int, m: int) -> tuple[np.ndarray, ...] | None:
        """What accumulate needs for (area, maxDets) that no image weighting changes, built once."""
        key = (a, m)
        if key not in self._static_cache:
            sel, cats, images = self._acc[m]
            N = len(sel)
            if N == 0:
                self._static_cache[key] = None
            else:
                tp = self._tp[a][:, sel]  # [T, N]
                fp = self._fp[a][:, sel]
                new = np.ones(N, dtype=bool)
                new[1:] = cats[1:] != cats[:-1]
                starts = np.flatnonzero(new)
                seg = np.cumsum(new) - 1  # segment (category run) of each column
                ti, ji = np.nonzero(tp)  # row-major: by threshold, then category, then score order
                tcat = cats[ji]
                keys = ti * self._num_cats + tcat
                jstart = starts[seg[ji]]  # first column of each point's category
                fp_all = fp.all(axis=0)
                extra = np.flatnonzero(fp & ~fp_all[None, :])  # row-major positions
                e_at = np.searchsorted(extra, ti * N + ji, side="right")
                e_base = np.searchsorted(extra, ti * N + jstart, side="left")
                self._static_cache[key] = (images, ji, keys, tcat, jstart, fp_all, extra % N, e_at, e_base)
        return self._static_cache[key]

    # ------------------------------------------------------------------ results
    def precision(self, image_weights: np.ndarray | None = None, area: str | None = None,
                  max_dets: int | None = None) -> np.ndarray:
        """pycocotools' eval['precision']: [T=10, R=101, K, A=4, M=3], -1 where undefined.

        With `area` and `max_dets` (e.g. "all", 100) only that cell is accumulated (the others are
        -1): about twelve times faster, for bootstrap resamples that need AP, AP50 and AP75 only."""
        if area is None and max_dets is None:
            return self._accumulate(image_weights)[0].copy()
        if area not in AREA_LBL or max_dets not in MAX_DETS:
            raise ValueError(f"precision: area must be one of {list(AREA_LBL)} and max_dets one of "
                             f"{list(MAX_DETS)}; got {area!r}, {max_dets!r}")
        cell = ((list(AREA_LBL).index(area), list(MAX_DETS).index(max_dets)),)
        return self._accumulate(image_weights, cell)[0].copy()

    def recall(self, image_weights: np.ndarray | None = None) -> np.ndarray:
        """pycocotools' eval['recall']: [T=10, K, A=4, M=3], -1 where undefined."""
        return self._accumulate(image_weights)[1].copy()

    def stats_array(self, image_weights: np.ndarray | None = None) -> np.ndarray:
        """pycocotools' `stats`: the 12 numbers, -1 where there is nothing to measure."""
        precision, recall = self._accumulate(image_weights)
        out = np.zeros(len(_SUMMARY))
        for i, (ap, iou_thr, area, max_dets) in enumerate(_SUMMARY):
            aind = [j for j, lbl in enumerate(AREA_LBL) if lbl == area]
            mind = [j for j, md in enumerate(MAX_DETS) if md == max_dets]
            if ap == 1:
                s = precision
                if iou_thr is not None:
                    s = s[np.where(iou_thr == IOU_THRS)[0]]
                s = s[:, :, :, aind, mind]
            else:
                s = recall
                if iou_thr is not None:
                    s = s[np.where(iou_thr == IOU_THRS)[0]]
                s = s[:, :, aind, mind]
            out[i] = -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])
        return out

    def stats(self, image_weights: np.ndarray | None = None) -> dict[str, float | None]:
        """The 12 COCO numbers by name (AP ... ARl); None where pycocotools reports -1."""
        return {name: (None if v < 0 else float(v))
                for name, v in zip(STAT_NAMES, self.stats_array(image_weights), strict=True)}


_LINES = (
    ("Average Precision", "AP", "0.50:0.95", "all", 100), ("Average Precision", "AP", "0.50", "all", 100),
    ("Average Precision", "AP", "0.75", "all", 100), ("Average Precision", "AP", "0.50:0.95", "small", 100),
    ("Average Precision", "AP", "0.50:0.95", "medium", 100), ("Average Precision", "AP", "0.50:0.95", "large", 100),
    ("Average Recall", "AR", "0.50:0.95", "all", 1), ("Average Recall", "AR", "0.50:0.95", "all", 10),
    ("Average Recall", "AR", "0.50:0.95", "all", 100), ("Average Recall", "AR", "0.50:0.95", "small", 100),
    ("Average Recall", "AR", "0.50:0.95", "medium", 100), ("Average Recall", "AR", "0.50:0.95", "large", 100),
)


def summary_lines(stats: dict[str, float | None]) -> list[str]:
    """The 12 lines of pycocotools' summary (`-1.000` where there is nothing to measure)."""
    lines = []
    for (title, short, iou, area, dets), name in zip(_LINES, STAT_NAMES, strict=True):
        value = stats[name]
        lines.append(f" {title:<18} ({short}) @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = "
                     f"{-1.0 if value is None else value:0.3f}")
    return lines

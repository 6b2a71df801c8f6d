"""Classification metrics in pure numpy (tested against scikit-learn on random inputs).

Conventions follow scikit-learn so numbers match what users compute themselves:
precision/recall/F1 of a class with no predictions / no support are 0 (sklearn's
`zero_division=0`), the macro average is the unweighted mean over all classes and the
weighted average weights by support.

With class probabilities (the softmax of the logits) the suite adds:
- top-k accuracy (k = 1, 3, 5 while k < number of classes; top-1 always): the true class is
  among the k highest probabilities, ties ranked as `sklearn.metrics.top_k_accuracy_score`
  ranks them (the higher class index first);
- one-vs-rest ROC AUC per class (the class's probability ranking its images above the others,
  ties counting one half); a class with no image in the evaluated set, or with every image,
  has no AUC (null) and is left out of the macro mean, which is then scikit-learn's
  `roc_auc_score(multi_class="ovr", average="macro")` over the classes present;
- calibration (`evaluation.calibration`) with confidence = the highest probability and
  correct = the arg-max class is the true one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kubeforge.evaluation.calibration import calibration
from kubeforge.models.catalog import BENCHMARK_METRICS

TOP_K = (1, 3, 5)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class], int64 [C, C]; labels are 0-based class indices."""
    y_true = _labels(y_true, num_classes, "y_true")
    y_pred = _labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} labels but y_pred has {y_pred.shape[0]}")
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0/0 -> 0: sklearn's zero_division=0, so an absent class never yields NaN in a report.
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """precision, recall, f1 (float64 [C]) and support (int64 [C]) from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def averages(cm: np.ndarray, num_classes: int) -> dict[str, float]:
    """accuracy and the macro and weighted precision, recall and F1 of the first `num_classes` classes
    of a (possibly weighted) confusion matrix; columns past them are predictions of other classes."""
    scores = per_class_scores(cm)
    total = float(cm.sum())
    support = scores["support"][:num_classes].astype(np.float64)
    out = {"accuracy": float(np.trace(cm[:num_classes, :num_classes]) / total) if total else 0.0}
    for name in ("precision", "recall", "f1"):
        values = scores[name][:num_classes]
        out[f"macro{name.capitalize()}"] = float(values.mean()) if num_classes else 0.0
        out[f"weighted{name.capitalize()}"] = float((values * support).sum() / total) if total else 0.0
    return out


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], probs: np.ndarray | None = None
) -> dict[str, Any]:
    """The full classification suite as JSON-ready values.

    Returns accuracy, macro and weighted precision/recall/F1, the confusion matrix (rows =
    ground truth, columns = prediction, in `class_names` order) and a per-class list; with
    `probs` (float [N, C]) also topK, rocAuc (per class too) and calibration.
    """
    num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    scores = per_class_scores(cm)
    total = int(cm.sum())
    out: dict[str, Any] = {"accuracy": 0.0, "count": total}
    out.update(averages(cm, num_classes))
    out["confusionMatrix"] = {"labels": list(class_names), "matrix": cm.tolist()}
    out["perClass"] = [
        {
            "class": class_names[k],
            "precision": float(scores["precision"][k]),
            "recall": float(scores["recall"][k]),
            "f1": float(scores["f1"][k]),
            "support": int(scores["support"][k]),
        }
        for k in range(num_classes)
    ]
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64).reshape(len(np.asarray(y_true)), num_classes)
        y = _labels(y_true, num_classes, "y_true")
        out["topK"] = {f"top{k}": top_k_accuracy(y, probs, k) for k in TOP_K if k == 1 or k < num_classes}
        aucs = [roc_auc(y == k, probs[:, k]) for k in range(num_classes)]
        present = [a for a in aucs if a is not None]
        out["rocAuc"] = float(np.mean(present)) if present else None
        for row, auc in zip(out["perClass"], aucs, strict=True):
            row["rocAuc"] = auc
        predicted = _labels(y_pred, num_classes, "y_pred")
        out["calibration"] = calibration(probs.max(axis=1) if len(y) else np.zeros(0), predicted == y)
    return out


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the k highest scores (ties as scikit-learn ranks them)."""
    if len(y_true) == 0:
        return 0.0
    ranked = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float((ranked == np.asarray(y_true)[:, None]).any(axis=1).mean())


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Binary ROC AUC (Mann-Whitney U, ties half); None without both positives and negatives."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def weighted_headline(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, weights: np.ndarray,
                      classes: Sequence[int] | None = None) -> dict[str, float | None]:
    """The headline metrics with each image counted `weights[i]` times (a bootstrap resample).

    `classes` restricts them to a subset of classes (a comparison between models trained on
    different class sets): images whose true class is outside it are left out, a prediction
    outside it stays an error, and the macro/weighted means run over the subset.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    cm = np.bincount(y_true * num_classes + y_pred, weights=w, minlength=num_classes * num_classes)
    cm = cm.reshape(num_classes, num_classes)
    if classes is not None:
        keep = np.asarray(classes, dtype=np.int64)
        rows = cm[keep]
        # The subset's own columns, then one column of the predictions outside it (errors, not predictions
        # of a subset class): precision counts only the former, recall and support count both.
        inside = rows[:, keep]
        cm = np.zeros((len(keep) + 1, len(keep) + 1))
        cm[:-1, :-1] = inside
        cm[:-1, -1] = rows.sum(axis=1) - inside.sum(axis=1)
    scores = averages(cm, num_classes if classes is None else len(classes))
    return {k: scores[k] for k in BENCHMARK_METRICS["classification"].headline}


def _labels(values: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: expected integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{what}: class indices must be in [0, {num_classes}), found {arr.min()}..{arr.max()}")
    return arr

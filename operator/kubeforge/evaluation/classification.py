"""Classification metrics in pure numpy (tested against scikit-learn on random inputs).

Conventions follow scikit-learn so numbers match what users compute themselves:
precision/recall/F1 of a class with no predictions / no support are 0 (sklearn's
`zero_division=0`), the macro average is the unweighted mean over all classes and the
weighted average weights by support.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """The full classification suite as JSON-ready values.

    Returns accuracy, macro and weighted precision/recall/F1, the confusion matrix (rows =
    ground truth, columns = prediction, in `class_names` order) and a per-class list.
    """
    num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    scores = per_class_scores(cm)
    total = int(cm.sum())
    support = scores["support"].astype(np.float64)
    out: dict[str, Any] = {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "count": total,
    }
    for name in ("precision", "recall", "f1"):
        values = scores[name]
        out[f"macro{name.capitalize()}"] = float(values.mean()) if num_classes else 0.0
        out[f"weighted{name.capitalize()}"] = float((values * support).sum() / total) if total else 0.0
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
    return out


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

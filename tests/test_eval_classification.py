"""Classification metrics against scikit-learn on many random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from kubeforge.evaluation.classification import classification_metrics
from kubeforge.evaluation.classification import confusion_matrix as kf_confusion_matrix


@pytest.mark.parametrize("seed", range(40))
def test_matches_sklearn_on_random_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 8))
    n = int(rng.integers(1, 200))
    y_true = rng.integers(0, num_classes, n)
    # Mostly right, sometimes wrong, and some classes may never be predicted or never occur.
    y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.integers(0, num_classes, n))
    names = [f"c{k}" for k in range(num_classes)]
    labels = list(range(num_classes))

    got = classification_metrics(y_true, y_pred, names)

    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert got["confusionMatrix"]["matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert [row["precision"] for row in got["perClass"]] == pytest.approx(p)
    assert [row["recall"] for row in got["perClass"]] == pytest.approx(r)
    assert [row["f1"] for row in got["perClass"]] == pytest.approx(f)
    assert [row["support"] for row in got["perClass"]] == s.tolist()
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average, zero_division=0)
        assert got[f"{average}Precision"] == pytest.approx(p)
        assert got[f"{average}Recall"] == pytest.approx(r)
        assert got[f"{average}F1"] == pytest.approx(f)


def test_confusion_matrix_orientation_rows_are_truth() -> None:
    cm = kf_confusion_matrix(np.array([0, 0, 1]), np.array([1, 1, 1]), 2)
    assert cm.tolist() == [[0, 2], [0, 1]]


def test_empty_input_gives_zeros_not_nan() -> None:
    got = classification_metrics(np.zeros(0, dtype=int), np.zeros(0, dtype=int), ["a", "b"])
    assert got["accuracy"] == 0.0 and got["macroF1"] == 0.0 and got["count"] == 0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (np.array([0, 3]), np.array([0, 1]), r"y_true: class indices must be in \[0, 3\)"),
        (np.array([0, 1]), np.array([0]), "y_true has 2 labels but y_pred has 1"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "y_true: expected integer class indices"),
    ],
)
def test_bad_labels_name_the_argument(y_true: np.ndarray, y_pred: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, ["a", "b", "c"])

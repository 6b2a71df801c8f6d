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


def _probs(rng: np.random.Generator, y_true: np.ndarray, num_classes: int, ties: bool) -> np.ndarray:
    logits = rng.normal(size=(len(y_true), num_classes))
    logits[np.arange(len(y_true)), y_true] += rng.uniform(0, 3)
    if ties:  # coarse values: many tied scores within a row and across rows
        logits = np.round(logits)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(40))
def test_top_k_auc_and_calibration_match_references(seed: int) -> None:
    from sklearn.metrics import roc_auc_score, top_k_accuracy_score

    from kubeforge.evaluation.calibration import calibration

    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(3, 9))
    n = int(rng.integers(2, 150))
    # Some seeds leave classes out of the truth entirely (no AUC for them).
    y_true = rng.integers(0, max(2, num_classes - seed % 3), n)
    probs = _probs(rng, y_true, num_classes, ties=seed % 2 == 0)
    if seed % 5 == 0:
        probs = np.full_like(probs, 1 / num_classes)  # all-equal scores
    y_pred = probs.argmax(axis=1)
    got = classification_metrics(y_true, y_pred, [f"c{k}" for k in range(num_classes)], probs)
    labels = list(range(num_classes))
    want_topk = {f"top{k}": top_k_accuracy_score(y_true, probs, k=k, labels=labels)
                 for k in (1, 3, 5) if k == 1 or k < num_classes}
    assert got["topK"] == pytest.approx(want_topk)
    present = sorted(set(y_true.tolist()))
    for k, row in enumerate(got["perClass"]):
        if k in present and len(present) > 1:
            assert row["rocAuc"] == pytest.approx(roc_auc_score(y_true == k, probs[:, k]))
        else:
            assert row["rocAuc"] is None
    if len(present) < 2:
        assert got["rocAuc"] is None
    elif len(present) == num_classes:
        assert got["rocAuc"] == pytest.approx(roc_auc_score(y_true, probs, multi_class="ovr", average="macro",
                                                            labels=labels))
    else:  # macro over the classes present: scikit-learn's one-vs-rest on those columns
        indicator = (y_true[:, None] == np.array(present)[None, :]).astype(int)
        assert got["rocAuc"] == pytest.approx(roc_auc_score(indicator, probs[:, present], average="macro"))
    # Calibration: max probability as confidence, correct = arg-max right; ECE by its definition.
    conf = probs.max(axis=1)
    ece = 0.0
    for b in range(10):
        in_bin = (conf >= b / 10) & ((conf < (b + 1) / 10) | ((b == 9) & (conf == 1.0)))
        if in_bin.any():
            ece += in_bin.mean() * abs((y_pred == y_true)[in_bin].mean() - conf[in_bin].mean())
    assert got["calibration"]["ece"] == pytest.approx(ece)
    assert got["calibration"] == calibration(conf, y_pred == y_true)


def test_two_classes_top1_and_auc() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 100)
    p1 = np.clip(y_true * 0.3 + rng.random(100) * 0.7, 0, 1)
    probs = np.c_[1 - p1, p1]
    got = classification_metrics(y_true, probs.argmax(axis=1), ["a", "b"], probs)
    assert set(got["topK"]) == {"top1"} and got["topK"]["top1"] == pytest.approx(got["accuracy"])
    assert got["rocAuc"] == pytest.approx(roc_auc_score(y_true, p1))
    empty = classification_metrics(np.zeros(0, dtype=int), np.zeros(0, dtype=int), ["a", "b", "c"], np.zeros((0, 3)))
    assert empty["topK"] == {"top1": 0.0} and empty["rocAuc"] is None
    assert empty["calibration"]["bestCalibratedConfidence"] is None


@pytest.mark.parametrize("seed", range(30))
def test_weighted_headline_is_sklearn_with_sample_weight(seed: int) -> None:
    from kubeforge.evaluation.classification import weighted_headline

    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 7))
    n = int(rng.integers(1, 120))
    y_true = rng.integers(0, num_classes, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, num_classes, n))
    weights = rng.integers(0, 4, n)  # bootstrap multiplicities, zeros included
    got = weighted_headline(y_true, y_pred, num_classes, weights)
    # The same as evaluating the repeated images.
    repeated = classification_metrics(np.repeat(y_true, weights), np.repeat(y_pred, weights),
                                      [f"c{k}" for k in range(num_classes)])
    for k in ("accuracy", "macroPrecision", "macroRecall", "macroF1", "weightedF1"):
        assert got[k] == pytest.approx(repeated[k])
    # A subset of classes: images of other classes left out, predictions of other classes stay errors.
    subset = sorted(rng.choice(num_classes, int(rng.integers(1, num_classes + 1)), replace=False).tolist())
    got = weighted_headline(y_true, y_pred, num_classes, weights, subset)
    keep = np.isin(y_true, subset)
    yt, yp, w = y_true[keep], y_pred[keep], weights[keep]
    if w.sum():
        assert got["accuracy"] == pytest.approx(accuracy_score(yt, yp, sample_weight=w))
        p, r, f, _ = precision_recall_fscore_support(yt, yp, labels=subset, average="macro", zero_division=0,
                                                     sample_weight=w)
        assert (got["macroPrecision"], got["macroRecall"], got["macroF1"]) == pytest.approx((p, r, f))
        _, _, f, _ = precision_recall_fscore_support(yt, yp, labels=subset, average="weighted", zero_division=0,
                                                     sample_weight=w)
        assert got["weightedF1"] == pytest.approx(f)
    else:
        assert got["accuracy"] == 0.0 and got["weightedF1"] == 0.0

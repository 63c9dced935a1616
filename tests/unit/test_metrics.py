"""Metrics against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bertrt.metrics import (
    classification_metrics,
    competition_log_loss,
    confusion_matrix,
    log_loss,
    named_probabilities,
    precision_recall_f1,
    softmax,
)


def test_confusion_matrix_rows_are_true_labels() -> None:
    cm = confusion_matrix(np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    assert cm.tolist() == [[1, 1], [0, 2]]


def test_precision_recall_f1_of_closed_class() -> None:
    cm = np.array([[5, 1], [3, 1]])  # tp 1, fp 1, fn 3
    precision, recall, f1 = precision_recall_f1(cm)
    assert precision == pytest.approx(0.5)
    assert recall == pytest.approx(0.25)
    assert f1 == pytest.approx(2 * 0.5 * 0.25 / 0.75)


def test_precision_without_predicted_positives_is_zero() -> None:
    assert precision_recall_f1(np.array([[3, 0], [2, 0]])) == (0.0, 0.0, 0.0)


def test_log_loss_matches_formula_and_is_stable() -> None:
    logits = np.array([[0.0, math.log(3.0)], [1000.0, 0.0]])
    labels = np.array([1, 0])
    # p(closed | row 0) = 3/4; row 1 is certain (no overflow at 1000).
    assert log_loss(logits, labels) == pytest.approx(-math.log(0.75) / 2)
    assert np.allclose(softmax(logits).sum(axis=1), 1.0)


def test_classification_metrics_report() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]], dtype=np.float32)
    report = classification_metrics(logits, np.array([0, 1, 0, 1]))
    assert report["n"] == 4
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["confusion_matrix"] == [[1, 1], [1, 1]]
    assert report["f1"] == pytest.approx(0.5)
    expected_loss = (
        -(2 * math.log(1 / (1 + math.exp(-2))) + 2 * math.log(1 / (1 + math.exp(2)))) / 4
    )
    assert report["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_classification_metrics_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="do not match"):
        classification_metrics(np.zeros((3, 2)), np.zeros(2))


# -- N classes ---------------------------------------------------------------------------
# Six rows of three classes; each row's logits are log-probabilities, so softmax is exact.
# true      0    0    1    1    2    2
# predicted 0    1    1    1    2    0
THREE_PROBS = np.array(
    [
        [0.5, 0.25, 0.25],
        [0.25, 0.5, 0.25],
        [0.2, 0.6, 0.2],
        [0.1, 0.8, 0.1],
        [0.25, 0.25, 0.5],
        [0.7, 0.2, 0.1],
    ]
)
THREE_LABELS = np.array([0, 0, 1, 1, 2, 2])
THREE_NAMES = ("open", "off topic", "too localized")


def test_three_class_report_by_hand() -> None:
    report = classification_metrics(np.log(THREE_PROBS), THREE_LABELS, THREE_NAMES)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    # class 0: tp 1 of 2 predicted, 2 true; class 1: 2 of 3, 2; class 2: 1 of 1, 2.
    expected = [
        ("open", 0.5, 0.5, 0.5, 2),
        ("off topic", 2 / 3, 1.0, 0.8, 2),
        ("too localized", 1.0, 0.5, 2 / 3, 2),
    ]
    for got, (name, precision, recall, f1, support) in zip(
        report["per_class"], expected, strict=True
    ):
        assert got["name"] == name and got["support"] == support
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(
            (precision, recall, f1)
        )
    assert report["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # More than two classes: no positive class; precision/recall/f1 are the macro averages.
    assert report["positive_class"] is None
    assert report["precision"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == report["macro_f1"]
    assert report["labels"] == list(THREE_NAMES)
    p_true = [0.5, 0.25, 0.6, 0.8, 0.5, 0.1]
    assert report["loss"] == pytest.approx(-np.mean(np.log(p_true)), rel=1e-6)
    assert report["log_loss"] == pytest.approx(report["loss"], rel=1e-6)  # nothing to clip
    assert report["n"] == 6


def test_binary_keeps_the_positive_class_figures_and_gains_the_rest() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0], [3.0, 0.0]])
    labels = np.array([0, 1, 0, 1, 0])
    report = classification_metrics(logits, labels, ("open", "closed"))
    closed, open_ = report["per_class"][1], report["per_class"][0]
    assert report["positive_class"] == "closed"
    cm = np.array(report["confusion_matrix"])
    assert (report["precision"], report["recall"], report["f1"]) == precision_recall_f1(cm)
    assert (closed["precision"], closed["recall"], closed["f1"]) == pytest.approx(
        (report["precision"], report["recall"], report["f1"])
    )
    assert report["macro_f1"] == pytest.approx((open_["f1"] + closed["f1"]) / 2)
    assert report["f1"] != report["macro_f1"]
    unnamed = classification_metrics(logits, labels)
    assert unnamed["labels"] == ["0", "1"] and unnamed["positive_class"] == "1"
    assert [c["name"] for c in unnamed["per_class"]] == ["0", "1"]


def test_old_keys_are_all_still_there() -> None:
    report = classification_metrics(np.log(THREE_PROBS), THREE_LABELS)
    old = ["n", "accuracy", "loss", "precision", "recall", "f1", "confusion_matrix"]
    assert list(report)[: len(old)] == old
    new = {"log_loss", "macro_f1", "per_class", "labels", "positive_class"}
    assert new <= set(report)
    json.dumps(report)  # JSON-ready: plain floats, ints and lists


def test_competition_log_loss_clips_and_renormalises() -> None:
    # p(true) = e^-50: cross-entropy 50, Kaggle's clip bounds it at -log(1e-15).
    report = classification_metrics(np.array([[0.0, 50.0]]), np.array([0]))
    assert report["loss"] == pytest.approx(50.0, rel=1e-6)
    assert report["log_loss"] == pytest.approx(-math.log(1e-15), rel=1e-6)
    # Clipped to [0.1, 0.9] the row sums to 1.1 and is renormalised: p(true) = 0.1 / 1.1.
    clipped = competition_log_loss(np.array([[0.0, 0.0, 1.0]]), np.array([0]), eps=0.1)
    assert clipped == pytest.approx(math.log(11))
    assert math.isnan(competition_log_loss(np.zeros((0, 3)), np.zeros(0)))


@pytest.mark.parametrize("bad", [3, -1])
def test_label_outside_the_classes_is_named(bad: int) -> None:
    with pytest.raises(ValueError, match=f"label id {bad} is outside the 3 classes"):
        classification_metrics(np.log(THREE_PROBS), np.array([0, 1, 2, bad, 0, 1]))


def test_label_names_must_match_the_logits() -> None:
    with pytest.raises(ValueError, match="2 label names"):
        classification_metrics(np.log(THREE_PROBS), THREE_LABELS, ("open", "closed"))
    with pytest.raises(ValueError, match="at least 2"):
        classification_metrics(np.zeros((2, 1)), np.zeros(2))


def test_matches_sklearn_with_an_absent_class() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 5)).astype(np.float32)
    logits[:, 4] -= 20.0  # class 4 is never predicted...
    labels = rng.integers(0, 4, size=300)  # ...and never true
    report = classification_metrics(logits, labels)
    predictions = logits.argmax(1)
    classes = list(range(5))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    assert [c["precision"] for c in report["per_class"]] == pytest.approx(precision)
    assert [c["recall"] for c in report["per_class"]] == pytest.approx(recall)
    assert [c["f1"] for c in report["per_class"]] == pytest.approx(f1)
    assert [c["support"] for c in report["per_class"]] == support.tolist()
    macro = skm.f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)
    assert report["macro_f1"] == pytest.approx(macro)
    assert (
        report["confusion_matrix"]
        == skm.confusion_matrix(labels, predictions, labels=classes).tolist()
    )
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    probs = softmax(logits)
    assert report["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=classes))
    assert report["loss"] == pytest.approx(report["log_loss"], rel=1e-6)


def test_named_probabilities_keep_class_order() -> None:
    out = named_probabilities(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]), THREE_NAMES)
    assert out[0] == {
        "label": "off topic",
        "probabilities": {"open": 0.1, "off topic": 0.7, "too localized": 0.2},
    }
    assert out[1]["label"] == "open" and list(out[1]["probabilities"]) == list(THREE_NAMES)
    with pytest.raises(ValueError, match="do not match 2 class names"):
        named_probabilities(np.ones((1, 3)) / 3, ("a", "b"))

"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertrt.metrics import (
    classification_metrics,
    confusion_matrix,
    log_loss,
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

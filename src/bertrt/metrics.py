"""Classification metrics from logits, shared by training, ``bertrt evaluate`` and the bench.

Numpy only, so every backend's logits (torch, ONNX Runtime, TensorRT) are
scored by the same few lines. The positive class is label 1, "closed": the
precision/recall/F1 reported are those of closed questions, the minority
class the reference project cares about.
"""

from __future__ import annotations

from typing import Any

import numpy as np

POSITIVE_LABEL = 1


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of ``labels`` under softmax(``logits``) (what the model trained on)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return float("nan")
    return float(-log_softmax(logits)[np.arange(len(labels)), labels].mean())


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float((np.asarray(predictions) == labels).mean())


def confusion_matrix(
    predictions: np.ndarray, labels: np.ndarray, num_labels: int = 2
) -> np.ndarray:
    """``cm[true, predicted]`` counts (rows: true label, columns: prediction)."""
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return cm


def precision_recall_f1(
    cm: np.ndarray, positive: int = POSITIVE_LABEL
) -> tuple[float, float, float]:
    """Of the positive class; 0.0 where a ratio has no denominator (nothing predicted/present)."""
    tp = float(cm[positive, positive])
    predicted = float(cm[:, positive].sum())
    actual = float(cm[positive, :].sum())
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, loss, precision/recall/F1 of "closed", confusion matrix and n, JSON-ready."""
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {logits.shape} do not match labels {labels.shape}")
    predictions = logits.argmax(axis=-1)
    cm = confusion_matrix(predictions, labels, num_labels=max(2, logits.shape[1]))
    precision, recall, f1 = precision_recall_f1(cm)
    return {
        "n": len(labels),
        "accuracy": accuracy(predictions, labels),
        "loss": log_loss(logits, labels),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": cm.tolist(),
    }

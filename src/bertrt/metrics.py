"""Classification metrics from logits, shared by training, ``bertrt evaluate`` and the bench.

Numpy only, so every backend's logits (torch, ONNX Runtime, TensorRT) are
scored by the same few lines, for any number of classes: the class count is
``logits.shape[1]`` and class id i is named ``label_names[i]`` (the run's
labels, :func:`bertrt.data.labels.run_labels`).

Every class gets its precision, recall, F1 and support (``per_class``), and
the report adds ``macro_f1`` (the unweighted mean of the per-class F1, so a
rare class counts as much as a common one) and ``log_loss``.

The top-level ``precision``, ``recall`` and ``f1`` keep the meaning they had
when the project was binary, because train_metrics.json and results.json of
earlier runs are compared with them:

* two classes: they are those of class 1 ("closed" in the open/closed task),
  the minority class the reference project cares about; ``positive_class``
  names it;
* more than two: there is no single positive class, so ``positive_class`` is
  None and they are the macro averages (mean over classes of each class's
  precision, recall and F1; ``f1`` equals ``macro_f1``).

Two losses: ``loss`` is the mean cross-entropy from log-softmax, what the
model trained on; ``log_loss`` is the Kaggle competition's multiclass log
loss, computed on probabilities clipped to [1e-15, 1 - 1e-15] and
renormalised per row, as its scorer does. They differ only where a
probability is that close to 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

POSITIVE_LABEL = 1
# Kaggle's bound on a submitted probability (the competition's evaluation page).
LOG_LOSS_EPS = 1e-15


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


def competition_log_loss(
    probabilities: np.ndarray, labels: np.ndarray, eps: float = LOG_LOSS_EPS
) -> float:
    """Kaggle's multiclass log loss: clip each probability to [eps, 1-eps], renormalise, score.

    The clip bounds a single confident mistake at -log(eps) ~ 34.5 instead of
    infinity; that is the figure the competition's leaderboard ranked by.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return float("nan")
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(labels)), labels]).mean())


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


def per_class_metrics(cm: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per class, in class-id order: name, precision, recall, F1 and support."""
    out = []
    for index, name in enumerate(names):
        precision, recall, f1 = precision_recall_f1(cm, index)
        support = int(cm[index, :].sum())
        out.append(
            {"name": name, "precision": precision, "recall": recall, "f1": f1, "support": support}
        )
    return out


def _class_names(label_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The given names, checked against the logits' width; else "0".."N-1"."""
    if label_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(name) for name in label_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} label names {names} for logits of {num_classes} classes")
    return names


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    """A label id the logits have no column for is a bad split or the wrong model."""
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if outside.size:
        raise ValueError(
            f"label id {int(outside[0])} is outside the {num_classes} classes "
            f"0..{num_classes - 1} of the logits"
        )


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, losses, precision/recall/F1 (overall and per class), confusion matrix, JSON-ready.

    The keys of the binary version come first, unchanged in meaning for two
    classes (see the module docstring for more than two).
    """
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {logits.shape} do not match labels {labels.shape}")
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"logits of {num_classes} class(es); a classifier needs at least 2")
    names = _class_names(label_names, num_classes)
    _check_labels(labels, num_classes)
    predictions = logits.argmax(axis=-1)
    cm = confusion_matrix(predictions, labels, num_labels=num_classes)
    classes = per_class_metrics(cm, names)
    macro = {k: float(np.mean([c[k] for c in classes])) for k in ("precision", "recall", "f1")}
    if num_classes == 2:
        precision, recall, f1 = precision_recall_f1(cm, POSITIVE_LABEL)
    else:
        precision, recall, f1 = macro["precision"], macro["recall"], macro["f1"]
    return {
        "n": len(labels),
        "accuracy": accuracy(predictions, labels),
        "loss": log_loss(logits, labels),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": cm.tolist(),
        "log_loss": competition_log_loss(softmax(logits), labels),
        "macro_f1": macro["f1"],
        "per_class": classes,
        "labels": names,
        "positive_class": names[POSITIVE_LABEL] if num_classes == 2 else None,
    }


def named_probabilities(probabilities: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """``{"label": name, "probabilities": {name: p, ...}}`` per row, classes in id order.

    The one shape a prediction takes wherever it is shown (``bertrt predict``,
    locally or through ``--url``), so a script reads every class the same way.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(f"probabilities {probs.shape} do not match {len(names)} class names")
    return [
        {
            "label": names[int(row.argmax())],
            "probabilities": {name: float(p) for name, p in zip(names, row, strict=True)},
        }
        for row in probs
    ]

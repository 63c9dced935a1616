"""Test-split accuracy of each runner, and how far it strays from the fp32 PyTorch reference.

Every runner sees the same length-bucketed batches of the same test rows,
tokenized once with the merged model's tokenizer at ``model.max_length``.
Against the true labels each runner gets accuracy, macro-F1, the
competition's log loss and every class's precision/recall/F1, with the run's
class names; ``f1``/``closed_precision``/``closed_recall`` keep their binary
meaning (class 1, "closed") and are the macro averages with more than two
classes (:mod:`bertrt.metrics`). Each runner is also compared with the
reference (torch fp32): the share of rows where both predict the same class
(agreement) and the largest absolute logit difference. Reduced precision
that moves accuracy by chance in either direction shows up in agreement,
not in accuracy. A run without labels (`bertrt import` of an unlabelled
file) gets agreement and max |Δlogit| only: the label figures are None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bertrt.metrics import classification_metrics
from bertrt.runners.base import Runner
from bertrt.runners.predict import TokenizedRows, predict_logits

REFERENCE = "torch/fp32"


def build_eval_set(
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int] | None,
    batch_size: int,
    max_length: int,
) -> TokenizedRows:
    return TokenizedRows.build(tokenizer, texts, max_length, batch_size, labels)


def predict(runner: Runner, data: TokenizedRows, progress: bool = True) -> np.ndarray:
    """Logits of every row, in the original row order; then the runner gives back what it
    keeps between runs (the bench holds every runner at once)."""
    logits = predict_logits(runner, data, progress=progress, desc=f"accuracy {runner.label}")
    runner.release_memory()
    return logits


# The label figures of a run without labels: each is None.
LABEL_FIGURES = (
    "accuracy",
    "f1",
    "closed_precision",
    "closed_recall",
    "macro_f1",
    "log_loss",
    "positive_class",
)


def score(
    logits: np.ndarray,
    labels: np.ndarray | None,
    reference: np.ndarray | None,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Figures against labels (None: none); agreement and max |logit diff| against the reference."""
    if labels is None:
        out: dict[str, Any] = {"n": len(logits), **dict.fromkeys(LABEL_FIGURES), "per_class": []}
        return {**out, **_against(logits, reference)}
    metrics = classification_metrics(logits, labels, label_names)
    out = {
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "closed_precision": metrics["precision"],
        "closed_recall": metrics["recall"],
        "macro_f1": metrics["macro_f1"],
        "log_loss": metrics["log_loss"],
        "positive_class": metrics["positive_class"],
        "per_class": metrics["per_class"],
    }
    return {**out, **_against(logits, reference)}


def _against(logits: np.ndarray, reference: np.ndarray | None) -> dict[str, float | None]:
    """Argmax agreement and the largest absolute logit difference with the reference."""
    if reference is None:
        return {"agreement": None, "max_abs_diff": None}
    return {
        "agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
        "max_abs_diff": float(np.abs(logits.astype(np.float64) - reference).max()),
    }


def is_reference(label: str) -> bool:
    return label.startswith(REFERENCE + "/")

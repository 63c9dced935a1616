"""Test-split accuracy of each runner, and how far it strays from the fp32 PyTorch reference.

Every runner sees the same length-bucketed batches of the same test rows,
tokenized once with the merged model's tokenizer at ``model.max_length``.
Besides accuracy and F1 of "closed" (label 1) against the true labels, each
runner is compared with the reference (torch fp32): the share of rows where
both predict the same class (agreement) and the largest absolute logit
difference. Reduced precision that moves accuracy by chance in either
direction shows up in agreement, not in accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bertrt.metrics import classification_metrics
from bertrt.runners.base import Batch, Runner
from bertrt.runners.batching import bucketed_batches, tokenize_unpadded

REFERENCE = "torch/fp32"


@dataclass
class EvalSet:
    """Test rows batched once (bucketed), shared by every runner."""

    labels: np.ndarray
    batches: list[tuple[np.ndarray, Batch]]

    @property
    def n(self) -> int:
        return len(self.labels)


def build_eval_set(
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    batch_size: int,
    max_length: int,
) -> EvalSet:
    enc = tokenize_unpadded(tokenizer, texts, max_length)
    return EvalSet(np.asarray(labels, dtype=np.int64), list(bucketed_batches(enc, batch_size)))


def predict(runner: Runner, data: EvalSet, progress: bool = True) -> np.ndarray:
    """Logits of every row, in the original row order."""
    out: np.ndarray | None = None
    for rows, batch in tqdm(
        data.batches,
        desc=f"accuracy {runner.label}",
        unit="batch",
        disable=not progress,
        leave=False,
    ):
        logits = runner(batch)
        if out is None:
            out = np.zeros((data.n, logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    if out is None:
        raise ValueError("accuracy: the evaluation set is empty")
    return out


def score(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
    """Accuracy/F1 against labels; agreement and max |logit diff| against the reference."""
    metrics = classification_metrics(logits, labels)
    out = {
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "closed_precision": metrics["precision"],
        "closed_recall": metrics["recall"],
    }
    if reference is not None:
        out["agreement"] = float((logits.argmax(-1) == reference.argmax(-1)).mean())
        out["max_abs_diff"] = float(np.abs(logits.astype(np.float64) - reference).max())
    else:
        out["agreement"] = None
        out["max_abs_diff"] = None
    return out


def is_reference(label: str) -> bool:
    return label.startswith(REFERENCE + "/")

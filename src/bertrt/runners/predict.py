"""The one way the project scores many texts with a runner: logits back in row order.

``bertrt evaluate``, calibration's candidate scoring, the bench's accuracy
table and its end-to-end throughput all call :func:`predict_logits`, so every
figure comes from the same batching: rows tokenized without padding, sorted
by token length, cut into batches padded only to their own longest row
(:mod:`bertrt.runners.batching`). Padding is masked, so the order and widths
change no logit beyond float noise; they only decide how much work is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bertrt.modeling import Batch
from bertrt.runners.base import Runner
from bertrt.runners.batching import bucketed_batches, tokenize_unpadded

RowBatch = tuple[np.ndarray, Batch]  # (row indices into the caller's texts, their batch)


@dataclass
class TokenizedRows:
    """Texts tokenized once into length-sorted batches: scored by many runners or models."""

    batches: list[RowBatch]
    rows: int
    # Class index per row, in the caller's row order (None when scoring unlabelled texts).
    labels: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        tokenizer: Any,
        texts: Sequence[str],
        max_length: int,
        batch_size: int,
        labels: Sequence[int] | None = None,
    ) -> TokenizedRows:
        encoded = tokenize_unpadded(tokenizer, texts, max_length)
        return cls(
            list(bucketed_batches(encoded, batch_size)),
            len(texts),
            None if labels is None else np.asarray(labels, dtype=np.int64),
        )

    def every(self, step: int) -> TokenizedRows:
        """Every ``step``-th batch, rows renumbered: a spread of lengths in fewer rows."""
        picked = self.batches[:: max(1, step)]
        batches, start = [], 0
        for rows, batch in picked:
            batches.append((np.arange(start, start + len(rows)), batch))
            start += len(rows)
        labels = None
        if self.labels is not None and picked:
            labels = np.concatenate([self.labels[rows] for rows, _ in picked])
        return TokenizedRows(batches, start, labels)

    def accuracy(self, logits: np.ndarray) -> float:
        """Share of rows whose argmax is the label (0..1)."""
        if self.labels is None:
            raise ValueError("accuracy: these rows have no labels")
        return float(np.mean(logits.argmax(axis=1) == self.labels))


def predict_logits(
    runner: Runner,
    batches: TokenizedRows | Iterable[RowBatch],
    rows: int | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Logits [rows, classes] of every row, in the caller's row order.

    ``batches`` is a :class:`TokenizedRows` or any stream of (row indices,
    batch), e.g. one that tokenizes as it goes (the bench's end-to-end runs
    time tokenization too); then ``rows`` says how many rows it covers.
    """
    if isinstance(batches, TokenizedRows):
        rows, stream, total = batches.rows, iter(batches.batches), len(batches.batches)
    else:
        if rows is None:
            raise ValueError("predict_logits: give `rows` with a stream of batches")
        stream, total = iter(batches), None
    out: np.ndarray | None = None
    bar = tqdm(stream, total=total, desc=desc, unit="batch", disable=not progress, leave=False)
    for index, batch in bar:
        logits = runner(batch)
        if out is None:
            out = np.zeros((rows, logits.shape[1]), dtype=np.float32)
        out[index] = logits
    if out is None:
        raise ValueError(f"{desc}: no rows to score")
    return out

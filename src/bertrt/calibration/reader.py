"""Calibration batches from real training rows, served to ONNX Runtime's calibrators.

Rows are a stable, seeded sample of the train split (never val/test, which
choose and score the model). Each batch is dynamically padded to its longest
row, as at inference time: padding every batch to max_length would calibrate
on activations of pad positions the model never attends to. The reader serves
only the model's own inputs (ONNX Runtime refuses a feed it has no input
for, e.g. token_type_ids to a DistilBERT graph).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from onnxruntime.quantization import CalibrationDataReader

from bertrt.errors import ConfigError
from bertrt.modeling import Batch, encode, select_inputs


def calibration_texts(train: pd.DataFrame, rows: int, batch_size: int, seed: int) -> list[str]:
    """A stable sample of ``rows`` training texts; an error if fewer than one batch."""
    available = min(rows, len(train))
    if batch_size < 1 or available < batch_size:
        raise ConfigError(
            f"calibrate: {available} calibration rows (calibration.rows={rows}, "
            f"{len(train)} training rows) is fewer than one batch "
            f"(calibration.batch_size={batch_size}); raise calibration.rows or lower the batch"
        )
    sample = train.sample(n=available, random_state=seed) if available < len(train) else train
    return [str(t) for t in sample["text"]]


def tokenized_batches(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    input_names: Sequence[str],
) -> list[Batch]:
    """Dynamically padded batches of ``input_names`` (the ONNX graph's inputs); a trailing
    partial batch is dropped (full batches only)."""
    usable = len(texts) - len(texts) % batch_size
    return [
        select_inputs(
            encode(tokenizer, texts[i : i + batch_size], max_length), input_names, "calibration"
        )
        for i in range(0, usable, batch_size)
    ]


class CalibrationReader(CalibrationDataReader):
    """ONNX Runtime's reader protocol over pre-tokenized batches; ``rewind`` to reuse it."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self._iter: Iterator[Batch] = iter(batches)

    def get_next(self) -> Batch | None:
        return next(self._iter, None)

    def __len__(self) -> int:
        return len(self.batches)

    def rewind(self) -> None:
        self._iter = iter(self.batches)

    def chunks(self, size: int) -> Iterator[CalibrationReader]:
        """Readers over at most ``size`` batches of one shape, so calibrators hold few activations.

        One shape per chunk: ORT's histogram calibrators stack a chunk's
        activations into one array, which fails on batches padded to different
        widths (short texts, or byte-level tokens, leave batches below max_length).
        Histograms still accumulate across chunks.
        """
        chunk: list[Batch] = []
        for batch in self.batches:
            if chunk and (len(chunk) == size or _shape(batch) != _shape(chunk[0])):
                yield CalibrationReader(chunk)
                chunk = []
            chunk.append(batch)
        if chunk:
            yield CalibrationReader(chunk)


def _shape(batch: Batch) -> tuple[int, ...]:
    return tuple(next(iter(batch.values())).shape)

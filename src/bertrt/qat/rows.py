"""The rows QAT trains and chooses on, as torch batches, and the validation score of a model.

Tokenization is the trainer's (:class:`bertrt.trainer.train.TokenizedRows`,
each batch padded to its longest row), so QAT sees the rows as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertrt.config import QatConfig
from bertrt.metrics import classification_metrics
from bertrt.trainer.train import TokenizedRows, stable_subsample


def _collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def train_loader(
    tokenizer: Any,
    frame: pd.DataFrame,
    max_length: int,
    input_names: Sequence[str],
    batch_size: int,
    seed: int,
) -> Any:
    """Shuffled (seeded) batches of training rows with their ``labels``."""
    rows = TokenizedRows(tokenizer, frame, max_length, input_names)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        rows, batch_size=batch_size, shuffle=True, generator=generator,
        collate_fn=_collator(tokenizer), drop_last=True,
    )  # fmt: skip


def torch_logits(
    model: Any,
    tokenizer: Any,
    frame: pd.DataFrame,
    max_length: int,
    input_names: Sequence[str],
    batch_size: int = 64,
) -> np.ndarray:
    """The model's logits for ``frame``'s rows, in row order (batched by length for speed)."""
    rows = TokenizedRows(tokenizer, frame, max_length, input_names)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    collate = _collator(tokenizer)
    out = np.empty((len(rows), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = collate([rows[i] for i in index])
            batch.pop("labels", None)
            out[index] = model(**batch).logits.float().numpy()
    return out


def validation_scorer(
    tokenizer: Any, frame: pd.DataFrame, max_length: int, input_names: Sequence[str]
) -> Any:
    """(model) -> accuracy, loss, macro-F1 and log loss on ``frame`` (tokenized once per call)."""
    labels = frame["label"].to_numpy()

    def score(model: Any) -> dict[str, float]:
        metrics = classification_metrics(
            torch_logits(model, tokenizer, frame, max_length, input_names), labels
        )
        return {k: float(metrics[k]) for k in ("accuracy", "loss", "macro_f1", "log_loss")}

    return score


def finetuning_rows(
    cfg: QatConfig,
    splits: dict[str, pd.DataFrame],
    tokenizer: Any,
    max_length: int,
    input_names: Sequence[str],
    seed: int,
) -> tuple[Any, Any, int]:
    """The training batches ``qat.steps`` will read, the validation scorer and its row count.

    As many training rows as the steps read (no row twice), one batch at least so that
    ``qat.steps=0`` (the post-training model only) tokenizes something; the validation rows
    are a seeded sample of ``qat.eval_rows``. Shared with ``bench/qat_control.py``, whose fp32
    control must train on exactly these rows.
    """
    rows = max(cfg.steps, 1) * cfg.batch_size
    train = stable_subsample(splits["train"], rows, seed)
    loader = train_loader(tokenizer, train, max_length, input_names, cfg.batch_size, seed)
    val = stable_subsample(splits["val"], cfg.eval_rows, seed)
    return loader, validation_scorer(tokenizer, val, max_length, input_names), len(val)

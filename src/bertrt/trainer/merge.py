"""Fold the LoRA adapter into the base weights and prove the result computes the same logits.

``merge_and_unload`` gives a plain BertForSequenceClassification that every
later stage (ONNX export, TensorRT) handles without knowing peft existed.
Verification is separate from merging (as in optimum's exporters): the
merged model is written only after its fp32 logits on real validation rows
match the unmerged model's within the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertrt.errors import VerificationError
from bertrt.modeling import encode


@dataclass
class MergeCheck:
    max_abs_diff: float
    tolerance: float
    rows: int

    @property
    def ok(self) -> bool:
        return bool(self.max_abs_diff <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "rows": self.rows,
            "dtype": "fp32",
            "ok": self.ok,
        }


def fp32_logits(model: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    device = next(model.parameters()).device
    inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, enabled=False):
        return model(**inputs).logits.float().cpu().numpy()


def merge_and_verify(
    peft_model: Any, tokenizer: Any, rows: pd.DataFrame, max_length: int, tolerance: float
) -> tuple[Any, MergeCheck]:
    """Merge in place; raise VerificationError if merged and unmerged logits differ too much."""
    if len(rows) == 0:
        raise VerificationError("train: no validation rows to verify the merged model on")
    peft_model = peft_model.float()
    batch = encode(tokenizer, list(rows["text"]), max_length)
    before = fp32_logits(peft_model, batch)
    merged = peft_model.merge_and_unload()
    after = fp32_logits(merged, batch)
    check = MergeCheck(float(np.abs(after - before).max()), tolerance, len(rows))
    if not check.ok:
        raise VerificationError(
            f"train: merged model's logits differ from the adapter model's by "
            f"{check.max_abs_diff:.3g} on {check.rows} validation rows (tolerance "
            f"{tolerance:g}, fp32); merged/ not written"
        )
    return merged, check

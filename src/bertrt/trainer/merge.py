"""Fold the LoRA adapter into the base weights and prove the result computes the same logits.

``merge_and_unload`` gives a plain ``*ForSequenceClassification`` that every
later stage (ONNX export, TensorRT) handles without knowing peft existed.
Verification is separate from merging (as in optimum's exporters): the
merged model is written only after its fp32 logits on real validation rows
match the unmerged model's within the tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertrt.errors import VerificationError
from bertrt.modeling import (
    ATTENTION,
    encode,
    model_input_names,
    resolve_base_model,
    select_inputs,
)
from bertrt.trainer.hub import from_pretrained

ADAPTER_CONFIG = "adapter_config.json"


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
    peft_model: Any,
    tokenizer: Any,
    rows: pd.DataFrame,
    max_length: int,
    tolerance: float,
    stage: str = "train",
) -> tuple[Any, MergeCheck]:
    """Merge in place; raise VerificationError if merged and unmerged logits differ too much.

    ``stage`` names the command in the error (train, or import of an adapter).
    """
    if len(rows) == 0:
        raise VerificationError(f"{stage}: no validation rows to verify the merged model on")
    peft_model = peft_model.float()
    # peft's forward takes **kwargs: the base model says which inputs it has (DistilBERT: 2).
    names = model_input_names(peft_model.get_base_model(), tokenizer)
    batch = select_inputs(encode(tokenizer, list(rows["text"]), max_length), names, "merge check")
    before = fp32_logits(peft_model, batch)
    merged = peft_model.merge_and_unload()
    after = fp32_logits(merged, batch)
    check = MergeCheck(float(np.abs(after - before).max()), tolerance, len(rows))
    if not check.ok:
        raise VerificationError(
            f"{stage}: merged model's logits differ from the adapter model's by "
            f"{check.max_abs_diff:.3g} on {check.rows} validation rows (tolerance "
            f"{tolerance:g}, fp32); merged/ not written"
        )
    return merged, check


def portable_adapter_config(adapter_dir: Path, base: str) -> None:
    """Record the configured base model (``minilm``, a hub id), not the path peft saw.

    peft writes the resolved base path, which for the packaged MiniLM is a
    directory inside the installing virtualenv: useless on any other machine
    or container. :func:`load_adapter` resolves the name where it loads.
    """
    path = adapter_dir / ADAPTER_CONFIG
    document = json.loads(path.read_text(encoding="utf-8"))
    document["base_model_name_or_path"] = base
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_adapter(adapter_dir: Path, num_labels: int) -> Any:
    """The LoRA model of ``adapter_dir`` on its base, resolved on this machine;
    ``num_labels``: the run's class count (``len(run_labels(run))``)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    document = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    name = document["base_model_name_or_path"]
    base = from_pretrained(
        AutoModelForSequenceClassification,
        name,
        resolve_base_model(name),
        num_labels=num_labels,
        attn_implementation=ATTENTION,
    )
    return PeftModel.from_pretrained(base, str(adapter_dir))

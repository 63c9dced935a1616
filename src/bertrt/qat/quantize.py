"""Fake INT8 quantization with ModelOpt, placed the way TensorRT fuses it, and its calibration.

``mtq.INT8_DEFAULT_CFG`` quantizes every Linear's input per tensor and its
weight per output channel (axis 0 of the [out, in] weight), max calibration.
It also enables an input quantizer on every other quantizable module, which in
a BERT is LayerNorm: TensorRT fuses Q/DQ into the GEMMs, not into a
normalization, so those are switched off here (a Q/DQ before LayerNorm would
only round a tensor that stays in float). With ``attention=True`` the
query, key and value entering the two attention matmuls are quantized too
(ModelOpt's ``*[qkv]_bmm_quantizer`` on Hugging Face attention modules).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from bertrt.errors import UnavailableError
from bertrt.modeling import Batch

INSTALL_HINT = "pip install -e '.[qat]'"
# Module kinds whose inputs stay float: TensorRT fuses Q/DQ into GEMMs only.
_FLOAT_INPUTS = ("nn.LayerNorm",)
_ATTENTION_QUANTIZERS = "*[qkv]_bmm_quantizer"


def modelopt_quantization() -> Any:
    """``modelopt.torch.quantization``, or an UnavailableError (exit 3) naming the install."""
    try:
        import modelopt.torch.quantization as mtq
    except ImportError as err:
        raise UnavailableError(
            f"qat: NVIDIA Model Optimizer is not installed ({err}); {INSTALL_HINT}"
        ) from err
    return mtq


def quant_config(attention: bool, weight_bits: int = 8) -> dict[str, Any]:
    """INT8_DEFAULT_CFG with LayerNorm inputs left float, plus the attention matmuls if asked.

    ``weight_bits`` below 8 (still per output channel) is a harsher recipe than TensorRT's
    INT8 GEMMs run: ``bench/qat_recipe.py`` uses it to show where QAT recovers what
    post-training quantization loses; the stage and its ONNX export keep 8.
    """
    mtq = modelopt_quantization()
    config = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    entries = config["quant_cfg"]
    for entry in entries:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"] = {**entry["cfg"], "num_bits": weight_bits}
    entries += [{"quantizer_name": "*", "parent_class": c, "enable": False} for c in _FLOAT_INPUTS]
    if attention:
        entries.append(
            {"quantizer_name": _ATTENTION_QUANTIZERS, "cfg": {"num_bits": 8, "axis": None}}
        )
    return config


def quantize(model: Any, batches: Sequence[Batch], attention: bool, weight_bits: int = 8) -> Any:
    """Insert the quantizers into ``model`` (in place) and calibrate them on ``batches``."""
    import torch

    mtq = modelopt_quantization()

    def forward_loop(quantized: Any) -> None:
        with torch.no_grad():
            for batch in batches:
                quantized(**{k: torch.from_numpy(v) for k, v in batch.items()})

    model.eval()
    return mtq.quantize(model, quant_config(attention, weight_bits), forward_loop)


def quantizer_counts(model: Any) -> dict[str, int]:
    """How many quantizers are on, by kind: weight, input (Linear), attention (q/k/v bmm)."""
    counts = {"weight": 0, "input": 0, "attention": 0}
    for name, module in model.named_modules():
        if not getattr(module, "is_enabled", False) or not hasattr(module, "amax"):
            continue
        if name.endswith("weight_quantizer"):
            counts["weight"] += 1
        elif name.endswith("input_quantizer"):
            counts["input"] += 1
        elif name.endswith("bmm_quantizer"):
            counts["attention"] += 1
    return counts

"""A fake-quantized model to explicit Q/DQ ONNX, checked against itself and for TensorRT.

The export is the project's TorchScript export (:func:`export_onnx`: dynamic
batch and sequence, opset 17, eager attention); under it ModelOpt's
quantizers emit QuantizeLinear/DequantizeLinear pairs instead of rounding in
float. The graph is then checked against the torch model it came from on
real validation rows (the same parity cases as ``bertrt export``; the
tolerance is a share of the logits' range, since rounding flips move logits
in proportion to them: docs/qat.md), and with
the TensorRT readiness check (symmetric INT8, per-channel weights, ops the
parser takes).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertrt.config import Config
from bertrt.export.onnx_export import export_onnx
from bertrt.export.verify import parity_cases, torch_reference, verify_onnx
from bertrt.modeling import encode, load_onnx
from bertrt.trt.onnx_support import check_trt_ready


def export_qdq(
    model: Any,
    path: Path,
    name: str,
    tokenizer: Any,
    texts: Sequence[str],
    input_names: Sequence[str],
    config: Config,
) -> dict[str, Any]:
    """Write ``path``; return its parity report, TensorRT check and Q/DQ node counts."""
    cfg = config.export
    sample = encode(tokenizer, list(texts[:2]), min(16, config.model.max_length), "max_length")
    with contextlib.redirect_stdout(sys.stderr):  # ModelOpt prints; stdout stays the CLI's
        export_onnx(model, path, sample, cfg.opset, input_names)
    cases = parity_cases(tokenizer, texts, cfg.verify_batch_sizes, cfg.verify_seq_lengths)
    torch_reference(model, cases, input_names)
    parity = verify_onnx(
        path, cases, config.qat.tolerance, expected_inputs=input_names, relative=True
    ).to_dict()
    parity.pop("model", None)
    trt = check_trt_ready(load_onnx(path), name).to_dict()
    return {"parity": parity, "tensorrt_check": trt}

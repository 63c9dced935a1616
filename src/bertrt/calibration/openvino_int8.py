"""OpenVINO INT8 from NNCF post-training quantization, calibrated on the same training rows.

NNCF's transformer preset (``model_type=TRANSFORMER``) keeps the parts of
attention and LayerNorm that lose accuracy in int8 in higher precision on
its own; the result is an OpenVINO IR (``.xml`` + ``.bin``) that the CPU
plugin runs with int8 matmuls and bf16 (AMX, AVX-512 BF16) or f32 for the
rest. It is both a candidate for the run's CPU model and the bench's
"OpenVINO + NNCF INT8 with defaults" peer row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from bertrt.modeling import Batch, select_inputs

log = logging.getLogger(__name__)


def quantize_nncf(onnx_path: Path, batches: Sequence[Batch], dst_xml: Path) -> None:
    """Quantize ``onnx_path`` with NNCF's defaults for transformers; write the IR to ``dst_xml``.

    ``batches`` are the calibration reader's (dynamically padded training
    rows); NNCF counts ``subset_size`` in dataset items, so every one is used.
    """
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    # Exactly the model's inputs: OpenVINO refuses a feed it has no input for.
    names = [port.get_any_name() for port in model.inputs]
    dataset = nncf.Dataset([select_inputs(b, names, f"NNCF ({onnx_path.name})") for b in batches])
    quantized = nncf.quantize(
        model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches)
    )
    dst_xml.parent.mkdir(parents=True, exist_ok=True)
    # Weights stay fp32 on disk: fp16 compression would add a rounding step of its own.
    ov.save_model(quantized, str(dst_xml), compress_to_fp16=False)

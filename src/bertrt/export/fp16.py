"""fp32 ONNX -> fp16 ONNX for TensorRT's strongly typed path.

Converter choice: ONNX Runtime's ``onnxruntime.transformers.float16``
(the maintained copy of onnxconverter-common's ``convert_float_to_float16``,
shipped inside the onnxruntime we already depend on). ModelOpt's AutoCast
does the same job but ``nvidia-modelopt[onnx]`` replaces onnxruntime with
onnxruntime-gpu and downgrades onnx (docs/findings.md, "Libraries kept out of
the environment"), so it cannot live in the CPU install. TensorRT 11 builds
strongly typed networks only: the precision of every tensor comes from the
ONNX graph, so the casts must be in the file.

Kept in fp32 (``op_block_list``): LayerNormalization (its mean/variance
reductions overflow fp16 over 384+ channels) and Softmax (exp/sum reduction).
Inputs and outputs stay int64/fp32 (``keep_io_types``) so every runner feeds
the same arrays. Constants beyond fp16 range (the attention mask's float32
minimum) are clamped to +-65504 by the converter instead of becoming inf.
"""

from __future__ import annotations

from pathlib import Path

FP32_OPS = ("LayerNormalization", "Softmax")


def convert_fp16(src: Path, dst: Path) -> dict[str, int]:
    """Write the fp16 graph of ``src`` to ``dst``; return counts of nodes by compute dtype."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)),
    )
    # The converter appends its Cast nodes at the end; sort so the file passes
    # onnx.checker and parsers that expect topological order.
    OnnxModel(converted).topological_sort()
    onnx.save(converted, str(dst))
    casts = sum(1 for n in converted.graph.node if n.op_type == "Cast")
    kept = sum(1 for n in converted.graph.node if n.op_type in FP32_OPS)
    return {"nodes": len(converted.graph.node), "casts": casts, "fp32_kept_nodes": kept}

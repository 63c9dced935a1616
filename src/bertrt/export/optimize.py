"""fp32 ONNX -> ONNX Runtime-optimized graph (fused attention, skip-LayerNorm, GELU).

ONNX Runtime's own transformer optimizer does the fusion. It needs the head
count and hidden size given explicitly: with 0/0 it cannot detect them in the
TorchScript export and fuses no Attention (docs/findings.md, "ONNX export").
The fused graph uses com.microsoft contrib ops, so it is an ONNX Runtime
artifact only; TensorRT gets the plain fp32/fp16/int8 graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class OptimizeResult:
    fused: dict[str, int]
    nodes_before: int
    nodes_after: int
    attention_fully_fused: bool


def optimize_for_ort(
    src: Path, dst: Path, num_heads: int, hidden_size: int, num_layers: int
) -> OptimizeResult:
    """Write the fused graph of ``src`` to ``dst`` and return the fused-operator counts."""
    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    before = len(onnx.load(str(src), load_external_data=False).graph.node)
    model = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,  # graph fusions only; ORT applies its own level at session start
        use_gpu=False,
    )
    stats: dict[str, Any] = model.get_fused_operator_statistics()
    fused = {k: int(v) for k, v in stats.items() if v}
    model.save_model_to_file(str(dst))
    return OptimizeResult(
        fused=fused,
        nodes_before=before,
        nodes_after=len(model.nodes()),
        # Not an error (the graph is still correct) but a regression worth seeing.
        attention_fully_fused=fused.get("Attention", 0) >= num_layers,
    )

"""fp32 ONNX -> ONNX Runtime-optimized graph (fused attention, skip-LayerNorm, GELU).

ONNX Runtime's own transformer optimizer does the fusion. It needs the head
count and hidden size given explicitly: with 0/0 it cannot detect them in the
TorchScript export and fuses no Attention (docs/findings.md, "ONNX export").
The fused graph uses com.microsoft contrib ops, so it is an ONNX Runtime
artifact only; TensorRT gets the plain fp32/fp16/int8 graphs.

Which optimizer settings fuse which architecture was measured on tiny and
MiniLM-sized random models of each (docs/findings.md, "Other encoder
architectures"): ORT's ``bert`` model type with its default options fuses
every encoder layer of all of them; only the embedding fusion differs
(RoBERTa's position ids, counted from the padding index, are a pattern ORT's
EmbedLayerNormalization fusion does not match). :data:`ORT_OPTIMIZER` is
that table; an architecture not in it is refused before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertrt.errors import ConfigError


@dataclass(frozen=True)
class OrtFusion:
    """How ORT's optimizer is asked to fuse one architecture, and what it then fuses."""

    model_type: str  # onnxruntime.transformers.optimizer's model_type
    embed_layer_norm: bool  # the embeddings become one EmbedLayerNormalization

    def expected(self, num_layers: int) -> dict[str, int]:
        """The fused-node counts a fully fused graph of ``num_layers`` layers has."""
        counts = {
            "Attention": num_layers,
            "SkipLayerNormalization": 2 * num_layers,
            "BiasGelu": num_layers,
        }
        if self.embed_layer_norm:
            counts["EmbedLayerNormalization"] = 1
        return counts


# config.model_type -> settings. ORT has no model type of its own for these
# encoders (its huggingface_models.py lists them all under "bert").
ORT_OPTIMIZER: dict[str, OrtFusion] = {
    "bert": OrtFusion("bert", embed_layer_norm=True),
    "distilbert": OrtFusion("bert", embed_layer_norm=True),
    "electra": OrtFusion("bert", embed_layer_norm=True),
    "roberta": OrtFusion("bert", embed_layer_norm=False),
    "xlm-roberta": OrtFusion("bert", embed_layer_norm=False),
}


def ort_fusion_for(model_type: str, where: str = "export") -> OrtFusion:
    """The optimizer settings of ``model_type``; an unknown one is a ConfigError naming the known."""
    fusion = ORT_OPTIMIZER.get(model_type)
    if fusion is None:
        raise ConfigError(
            f"{where}: a {model_type!r} model cannot be exported; bertrt supports the BERT "
            f"family encoders: {', '.join(ORT_OPTIMIZER)}"
        )
    return fusion


@dataclass
class OptimizeResult:
    fused: dict[str, int]
    expected: dict[str, int]
    nodes_before: int
    nodes_after: int

    @property
    def missing(self) -> dict[str, int]:
        """Fused kinds below what the architecture fuses fully (op -> how many short)."""
        return {
            op: want - self.fused.get(op, 0)
            for op, want in self.expected.items()
            if self.fused.get(op, 0) < want
        }

    @property
    def attention_fully_fused(self) -> bool:
        return self.fused.get("Attention", 0) >= self.expected["Attention"]


def optimize_for_ort(
    src: Path,
    dst: Path,
    model_type: str,
    num_heads: int,
    hidden_size: int,
    num_layers: int,
) -> OptimizeResult:
    """Write the fused graph of ``src`` to ``dst`` and return the fused-operator counts.

    ``model_type`` is the Hugging Face ``config.model_type``; the ORT
    settings come from :data:`ORT_OPTIMIZER`.
    """
    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    fusion = ort_fusion_for(model_type)
    before = len(onnx.load(str(src), load_external_data=False).graph.node)
    model = optimizer.optimize_model(
        str(src),
        model_type=fusion.model_type,
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=FusionOptions(fusion.model_type),
        opt_level=0,  # graph fusions only; ORT applies its own level at session start
        use_gpu=False,
    )
    stats: dict[str, Any] = model.get_fused_operator_statistics()
    fused = {k: int(v) for k, v in stats.items() if v}
    model.save_model_to_file(str(dst))
    return OptimizeResult(
        fused=fused,
        expected=fusion.expected(num_layers),
        nodes_before=before,
        nodes_after=len(model.nodes()),
    )

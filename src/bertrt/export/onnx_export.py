"""Merged Hugging Face model -> fp32 ONNX with dynamic batch and sequence axes.

Exporter choice (measured, docs/findings.md "ONNX export"): the TorchScript-based
exporter (``dynamo=False``, opset 17) of a model loaded with
``attn_implementation="eager"``. Both exporters match PyTorch to ~3e-7, but
only this graph is the plain MatMul/Softmax attention that ONNX Runtime's
transformer optimizer fuses fully (Attention x6, SkipLayerNorm x12,
BiasGelu x6); the dynamo export (and any sdpa export) fuses no Attention.
Opset 17 also gives a native LayerNormalization node, which TensorRT parses
directly and the fp16 converter can keep in fp32. The export takes ~1 s
against ~5 s for dynamo.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.modeling import ATTENTION, OUTPUT_NAME


def dynamic_axes(input_names: Sequence[str]) -> dict[str, dict[int, str]]:
    """The graph's I/O contract in one place: every input [batch, sequence], logits [batch]."""
    return {
        **{name: {0: "batch", 1: "sequence"} for name in input_names},
        OUTPUT_NAME: {0: "batch"},
    }


def load_torch_model(model_dir: str | Path, attn_implementation: str = ATTENTION) -> Any:
    """The merged classifier in eval mode (eager attention: see the module docstring)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), attn_implementation=attn_implementation
    )
    return model.eval()


def logits_module(model: Any, input_names: Sequence[str]) -> Any:
    """Wrap the HF model so the traced graph has exactly ``input_names`` and ``logits``.

    The tracer passes inputs by position; the wrapper hands them on by name,
    so an architecture without ``token_type_ids`` never sees one.
    """
    import torch

    names = tuple(input_names)

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).logits

    return LogitsOnly().eval()


def export_onnx(
    model: Any,
    out_path: Path,
    sample: dict[str, np.ndarray],
    opset: int,
    input_names: Sequence[str],
) -> None:
    """Trace ``model`` on ``sample`` (a padded batch) and write fp32 ONNX to ``out_path``.

    ``input_names`` (:func:`bertrt.modeling.model_input_names`) become the
    graph's inputs, in that order; other arrays of ``sample`` are not used.
    """
    import torch

    wrapper = logits_module(model, input_names)
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in input_names)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # TracerWarnings about Python control flow on shapes are harmless here:
        # parity is checked afterwards at other batch sizes and lengths.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(out_path),
            input_names=list(input_names),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes(input_names),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )

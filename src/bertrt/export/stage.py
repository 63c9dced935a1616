"""`bertrt export`: the merged model to fp32, optimized and fp16 ONNX, each verified.

Every graph is built in the stage's staging directory, verified against
PyTorch on real validation rows and checked for TensorRT readiness (fp32,
fp16); only then are the files moved into place. A failure leaves the
previous artifacts untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data import load_split
from bertrt.export.fp16 import convert_fp16
from bertrt.export.onnx_export import export_onnx, load_torch_model
from bertrt.export.optimize import optimize_for_ort, ort_fusion_for
from bertrt.export.verify import parity_cases, torch_reference, verify_onnx
from bertrt.modeling import encode, load_onnx, load_tokenizer, model_input_names, model_type_of
from bertrt.stages import StageResult, stage
from bertrt.trt.onnx_support import check_trt_ready

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "opt", "fp16")


def run(config: Config, rundir: RunDir) -> StageResult:
    """Export, optimize and convert; the result's facts hold parity, fusion and readiness."""
    with stage(rundir, "export", requires={"train": [rundir.merged]}) as out:
        out.facts = _export(config, rundir, {v: out.path(rundir.onnx(v)) for v in VARIANTS})
        out.summary = "export: max |logit diff| " + ", ".join(
            f"{rundir.onnx(v).name} {out.facts['parity'][v]['max_abs_diff']:.2e}" for v in VARIANTS
        )
    return out.result


def _export(config: Config, rundir: RunDir, staged: dict[str, Path]) -> dict[str, Any]:
    """Write and verify the three graphs at their ``staged`` paths; return the manifest facts.

    The graph's inputs are the merged model's own (:func:`model_input_names`),
    decided here once; every later stage reads them from the ONNX file.
    """
    cfg = config.export
    model_type = model_type_of(rundir.merged)
    ort_fusion_for(model_type, where=f"export ({rundir.merged})")  # before any work
    tokenizer = load_tokenizer(rundir.merged)
    texts = load_split(rundir, ("val",), csv=config.data.csv)["val"]["text"].tolist()[
        : cfg.verify_rows
    ]
    model = load_torch_model(rundir.merged)
    names = model_input_names(model, tokenizer)
    cases = parity_cases(tokenizer, texts, cfg.verify_batch_sizes, cfg.verify_seq_lengths)
    torch_reference(model, cases, names)
    extra: dict[str, Any] = {
        "exporter": "torch.onnx.export(dynamo=False)",
        "opset": cfg.opset,
        "model_type": model_type,
        "inputs": list(names),
    }
    steps = tqdm(total=4, desc="export", unit="step")
    sample = encode(tokenizer, texts[:2], min(16, config.model.max_length), "max_length")
    export_onnx(model, staged["fp32"], sample, cfg.opset, names)
    extra["fp32"] = {"nodes": len(load_onnx(staged["fp32"]).graph.node)}
    extra["parity"] = {"fp32": _verify(staged["fp32"], cases, cfg.tolerance, names)}
    steps.update()

    extra["opt"] = _optimize(staged, model_type, model.config)
    extra["parity"]["opt"] = _verify(staged["opt"], cases, cfg.tolerance, names)
    steps.update()

    extra["fp16"] = convert_fp16(staged["fp32"], staged["fp16"])
    extra["parity"]["fp16"] = _verify(staged["fp16"], cases, cfg.fp16_tolerance, names)
    steps.update()

    extra["tensorrt_check"] = {
        v: check_trt_ready(load_onnx(staged[v]), rundir.onnx(v).name).to_dict()
        for v in ("fp32", "fp16")
    }
    steps.update()
    steps.close()
    return extra


def _optimize(staged: dict[str, Path], model_type: str, mc: Any) -> dict[str, Any]:
    """ORT's fused graph and what was fused; a shortfall is a warning, not an error.

    The fused graph is still verified for parity; fusing less is a
    regression in speed, not in correctness.
    """
    opt = optimize_for_ort(
        staged["fp32"],
        staged["opt"],
        model_type,
        mc.num_attention_heads,
        mc.hidden_size,
        mc.num_hidden_layers,
    )
    if opt.missing:
        log.warning(
            "export: ORT fused %s, short of %s for a %d-layer %s",
            opt.fused,
            opt.missing,
            mc.num_hidden_layers,
            model_type,
        )
    return {
        "fused_operators": opt.fused,
        "expected_fused": opt.expected,
        "nodes": opt.nodes_after,
        "attention_fully_fused": opt.attention_fully_fused,
        "fully_fused": not opt.missing,
    }


def _verify(path: Path, cases: Any, tolerance: float, names: Sequence[str]) -> dict[str, Any]:
    report = verify_onnx(path, cases, tolerance, expected_inputs=names).to_dict()
    report.pop("model", None)
    return report

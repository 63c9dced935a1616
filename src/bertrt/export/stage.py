"""`bertrt export`: the merged model to fp32, optimized and fp16 ONNX, each verified.

Every graph is built in a staging directory beside onnx/, verified against
PyTorch on real validation rows and checked for TensorRT readiness (fp32,
fp16); only then are the files moved into place. A failure leaves the
previous artifacts untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bertrt.artifacts import RunDir, StageTimer, atomic_file
from bertrt.config import Config
from bertrt.data import load_split
from bertrt.export.fp16 import convert_fp16
from bertrt.export.onnx_export import export_onnx, load_torch_model
from bertrt.export.optimize import optimize_for_ort
from bertrt.export.verify import parity_cases, torch_reference, verify_onnx
from bertrt.modeling import encode, load_onnx, load_tokenizer
from bertrt.trt.onnx_support import check_trt_ready

log = logging.getLogger(__name__)


def publish(src: Path, dst: Path) -> None:
    """Move a staged file into place atomically (fsync, rename)."""
    with atomic_file(dst) as tmp:
        os.replace(src, tmp)


def run(config: Config, run: RunDir) -> dict[str, Any]:
    cfg = config.export
    run.require("export", [run.merged], producer="train")
    timer = StageTimer()
    tokenizer = load_tokenizer(run.merged)
    texts = load_split(run, ("val",))["val"]["text"].tolist()[: cfg.verify_rows]
    model = load_torch_model(run.merged, config.model.attn_implementation)
    cases = parity_cases(tokenizer, texts, cfg.verify_batch_sizes, cfg.verify_seq_lengths)
    torch_reference(model, cases)

    run.onnx_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=run.onnx_dir))
    staged = {v: staging / run.onnx(v).name for v in ("fp32", "opt", "fp16")}
    extra: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=False)", "opset": cfg.opset}
    try:
        steps = tqdm(total=4, desc="export", unit="step")
        sample = encode(tokenizer, texts[:2], min(16, config.model.max_length), "max_length")
        export_onnx(model, staged["fp32"], sample, cfg.opset)
        fp32 = load_onnx(staged["fp32"])
        extra["fp32"] = {"nodes": len(fp32.graph.node)}
        extra["parity"] = {"fp32": _verify(staged["fp32"], cases, cfg.tolerance)}
        steps.update()

        mc = model.config
        opt = optimize_for_ort(
            staged["fp32"],
            staged["opt"],
            mc.num_attention_heads,
            mc.hidden_size,
            mc.num_hidden_layers,
        )
        if not opt.attention_fully_fused:
            log.warning("export: ORT fused only %s Attention nodes", opt.fused.get("Attention", 0))
        extra["opt"] = {
            "fused_operators": opt.fused,
            "nodes": opt.nodes_after,
            "attention_fully_fused": opt.attention_fully_fused,
        }
        extra["parity"]["opt"] = _verify(staged["opt"], cases, cfg.tolerance)
        steps.update()

        extra["fp16"] = convert_fp16(staged["fp32"], staged["fp16"])
        extra["parity"]["fp16"] = _verify(staged["fp16"], cases, cfg.fp16_tolerance)
        steps.update()

        extra["tensorrt_check"] = {
            v: check_trt_ready(load_onnx(staged[v]), run.onnx(v).name).to_dict()
            for v in ("fp32", "fp16")
        }
        steps.update()
        steps.close()
        for variant, path in staged.items():
            publish(path, run.onnx(variant))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    outputs = [run.onnx(v) for v in ("fp32", "opt", "fp16")]
    run.record("export", inputs=[run.merged], outputs=outputs, wall_s=timer.elapsed, extra=extra)
    for variant in ("fp32", "opt", "fp16"):
        log.info(
            "export: %s max |logit diff| %.2e",
            run.onnx(variant).name,
            extra["parity"][variant]["max_abs_diff"],
        )
    return extra


def _verify(path: Path, cases: Any, tolerance: float) -> dict[str, Any]:
    report = verify_onnx(path, cases, tolerance).to_dict()
    report.pop("model", None)
    return report

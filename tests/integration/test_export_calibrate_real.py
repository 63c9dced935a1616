"""Export and calibration of the offline MiniLM on real rows (CPU, a few minutes at most).

The classifier head is untrained here, so accuracy figures mean nothing; what
is checked is what holds for any weights: parity <= 1e-4 on real padded
validation batches, full fusion, TensorRT-ready fp32/fp16/int8 graphs,
symmetric per-channel Q/DQ on MatMul/Gemm inputs only, and INT8 logits that
stay close to fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from bertrt.artifacts import RunDir, read_json
from bertrt.config import load_config

pytestmark = pytest.mark.integration

OVERRIDES = [
    "export.verify_rows=32",
    "export.verify_batch_sizes=[1,8]",
    "export.verify_seq_lengths=[32,128]",
    "calibration.rows=64",
    "calibration.batch_size=16",
    "calibration.eval_rows=128",
    "calibration.cpu_candidates=[dynamic-int8,fp32-opt]",
]


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> RunDir:
    """Real split + the packaged MiniLM with a fresh 2-label head standing in for training."""
    from transformers import AutoModelForSequenceClassification

    from bertrt.data.stage import run as data_stage
    from bertrt.modeling import load_tokenizer, resolve_base_model

    run = RunDir(tmp_path_factory.mktemp("real") / "run")
    data_stage(load_config(overrides=[f"data.csv={real_data}"]), run)
    base = resolve_base_model("minilm")
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    model.save_pretrained(run.merged)
    load_tokenizer(base).save_pretrained(run.merged)
    run.record("train", inputs=[run.split], outputs=[run.merged], wall_s=0.0)
    return run


def test_export_real_rows(minilm_run: RunDir) -> None:
    from bertrt.export.stage import run as export_stage

    extra = export_stage(load_config(overrides=OVERRIDES), minilm_run).facts
    assert extra["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    assert extra["parity"]["opt"]["max_abs_diff"] <= 1e-4
    assert extra["parity"]["fp16"]["max_abs_diff"] <= 1e-2
    fused = extra["opt"]["fused_operators"]
    assert fused["Attention"] == 6 and fused["SkipLayerNormalization"] >= 12
    assert extra["tensorrt_check"]["fp16"]["opset"] == 17


def test_calibrate_real_rows(minilm_run: RunDir) -> None:
    from bertrt.calibration.stage import run as calibrate_stage
    from bertrt.calibration.sweep import logits
    from bertrt.data import load_split
    from bertrt.modeling import load_tokenizer
    from bertrt.runners.predict import TokenizedRows

    report = calibrate_stage(load_config(overrides=OVERRIDES), minilm_run).report
    assert report["calibration_rows"] == 64
    trt = report["int8"]["tensorrt_check"]
    # 6 layers x 6 weight matrices (Q, K, V, attention output, 2 FFN) + pooler and classifier.
    assert trt["qdq"]["per_channel_weights"] == 6 * 6 + 2
    assert trt["op_counts"]["MatMul"] == 48
    model = onnx.load(str(minilm_run.onnx("int8")), load_external_data=False)
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            assert set(readers[node.output[0]]) <= {"MatMul", "Gemm"}
    val = load_split(minilm_run, ("val",))["val"].head(64)
    data = TokenizedRows.build(
        load_tokenizer(minilm_run.merged), val.text.tolist(), 128, 32, val.label.tolist()
    )
    fp32 = logits(minilm_run.onnx("fp32"), data)
    int8 = logits(minilm_run.onnx("int8"), data)
    assert np.max(np.abs(int8 - fp32)) < 0.1 * max(1.0, float(np.max(np.abs(fp32))))
    assert read_json(minilm_run.calibration_dir / "report.json")["cpu"]["chosen"]

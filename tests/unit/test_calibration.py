"""Calibration stage on a tiny random BERT: reader, ranges, Q/DQ placement, stage artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from bertrt.artifacts import RunDir, read_json, sha256_path
from bertrt.calibration import (
    CalibrationReader,
    Candidate,
    calibrate_ranges,
    calibration_texts,
    quantize_qdq,
    tokenized_batches,
)
from bertrt.calibration.quantize import prepare_model, quantized_nodes
from bertrt.config import load_config
from bertrt.errors import ConfigError, StaleArtifactError
from bertrt.hardware import cpu_flags, cpu_name
from bertrt.modeling import load_tokenizer, onnx_input_names
from bertrt.trt.onnx_support import check_trt_ready
from tests.conftest import make_trained_run

SMALL = [
    "model.max_length=32",
    "export.verify_batch_sizes=[1,2]",
    "export.verify_seq_lengths=[32]",
    "export.verify_rows=8",
    "calibration.rows=32",
    "calibration.batch_size=8",
    "calibration.eval_rows=48",
    "calibration.cpu_candidates=[dynamic-int8,static-u8s8-folded,fp32-opt,"
    "openvino-fp32,openvino-nncf-int8,openvino-qdq,openvino-qdq-static]",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    """A run through `bertrt export`, with tiny_base standing in for `bertrt train`."""
    from bertrt.export.stage import run as export_stage

    run = make_trained_run(tmp_path_factory.mktemp("calib"), tiny_base, rows=240)
    export_stage(load_config(overrides=SMALL), run)
    return run


@pytest.fixture(scope="module")
def reader(exported: RunDir) -> CalibrationReader:
    from bertrt.data import load_split

    train = load_split(exported, ("train",))["train"]
    texts = calibration_texts(train, 32, 8, seed=0)
    names = onnx_input_names(exported.onnx("fp32"))
    return CalibrationReader(
        tokenized_batches(load_tokenizer(exported.merged), texts, 8, 32, names)
    )


@pytest.fixture(scope="module")
def prepared(exported: RunDir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prep") / "prepared.onnx"
    prepare_model(exported.onnx("fp32"), path)
    return path


def test_fewer_rows_than_batch_is_a_clear_error() -> None:
    train = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    with pytest.raises(ConfigError, match=r"fewer than one batch.*calibration.batch_size=8"):
        calibration_texts(train, rows=256, batch_size=8, seed=0)


def test_reader_serves_full_dynamic_batches(reader: CalibrationReader) -> None:
    assert len(reader) == 4
    first = reader.get_next()
    assert first is not None and first["input_ids"].shape[0] == 8
    assert first["input_ids"].dtype == np.int64
    assert sum(1 for _ in iter(reader.get_next, None)) == 3
    reader.rewind()
    assert [len(c) for c in reader.chunks(3)] == [3, 1]


def test_each_method_gives_its_own_ranges(prepared: Path, reader: CalibrationReader) -> None:
    ranges = calibrate_ranges(prepared, reader, "minmax")
    ranges |= calibrate_ranges(prepared, reader, "entropy")
    ranges |= calibrate_ranges(prepared, reader, "percentile", [99.9, 99.9999])
    assert len(ranges) == 4

    # Histogram methods only calibrate what gets a Q/DQ (MatMul/Gemm inputs).
    names = sorted(ranges[Candidate("entropy")].keys())
    assert set(names) < set(ranges[Candidate("minmax")].keys())

    def highs(c: Candidate) -> np.ndarray:
        return np.array([float(np.max(np.abs(ranges[c][k].range_value))) for k in names])

    minmax = highs(Candidate("minmax"))
    # The entropy trap: with too few bins ORT's entropy returns MinMax's ranges.
    assert not np.allclose(highs(Candidate("entropy")), minmax)
    assert np.all(highs(Candidate("percentile", 99.9)) <= highs(Candidate("percentile", 99.9999)))
    assert not np.allclose(highs(Candidate("percentile", 99.9)), minmax)


def test_qdq_only_on_matmul_inputs_symmetric_per_channel(
    prepared: Path, reader: CalibrationReader, tmp_path: Path
) -> None:
    ranges = calibrate_ranges(prepared, reader, "percentile", [99.99])
    out = tmp_path / "int8.onnx"
    quantize_qdq(prepared, ranges[Candidate("percentile", 99.99)], out)
    model = onnx.load(str(out))
    report = check_trt_ready(model, out.name)  # raises on any TensorRT rule broken
    assert report.qdq["per_channel_weights"] == 2 * 6 + 2  # 2 layers x 6 weights + 2 Gemm
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            assert set(consumers[node.output[0]]) <= {"MatMul", "Gemm"}, node.name
        if node.op_type == "QuantizeLinear":
            zero = numpy_helper.to_array(
                next(t for t in model.graph.initializer if t.name == node.input[2])
            )
            assert zero.dtype == np.int8 and not zero.any()


def quantized_matmuls(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if set(n.input) & dq_outputs}


def test_excluded_nodes_stay_float(
    prepared: Path, reader: CalibrationReader, tmp_path: Path
) -> None:
    ranges = calibrate_ranges(prepared, reader, "minmax")[Candidate("minmax")]
    nodes = quantized_nodes(onnx.load(str(prepared), load_external_data=False))
    out = tmp_path / "int8.onnx"
    quantize_qdq(prepared, ranges, out, nodes_to_exclude=nodes[:3])
    assert quantized_matmuls(out) == set(nodes[3:])


def test_calibrate_stage_writes_models_and_report(exported: RunDir) -> None:
    from bertrt.calibration.stage import run as calibrate_stage
    from bertrt.runners.registry import runner_for_model

    report = calibrate_stage(load_config(overrides=SMALL), exported).report
    saved = read_json(exported.calibration_dir / "report.json")
    assert saved["int8"]["chosen"] == "percentile-99.9999"
    val_rows = sum(read_json(exported.split)["counts"]["val"].values())
    assert saved["eval_rows"] == min(48, val_rows) and saved["calibration_rows"] == 32
    cands = {c["name"]: c for c in saved["cpu"]["candidates"]}
    assert set(cands) == {
        "dynamic-int8",
        "static-u8s8-folded",
        "fp32-opt",
        "openvino-fp32",
        "openvino-nncf-int8",
        "openvino-qdq",
        "openvino-qdq-static",
    }
    assert {c["runtime"] for c in cands.values()} == {"onnxruntime", "openvino"}
    # 2 layers: q, k, v, attention-out and FFN-out biases, and the attention scale, per layer
    folds = cands["static-u8s8-folded"]["graph"]
    assert folds["biases_folded"] == 2 * 5 and folds["scales_folded"] == 2
    assert folds["skip_layernorms"] == 0
    assert saved["int8"]["tensorrt_check"]["ok"] is True
    assert report["fp32_val_accuracy"] == saved["fp32_val_accuracy"]
    record = exported.read_manifest()["stages"]["calibrate"]
    assert list(record["inputs"]) == [
        "onnx/model.onnx",
        "onnx/model.opt.onnx",
        "merged",
        "split.json",
    ]
    assert list(record["outputs"]) == [
        "onnx/model.int8.onnx",
        "onnx/model.cpu.onnx",
        "openvino",
        "cpu.json",
        "calibration/report.json",
        "calibration/ranges.json",
    ]
    assert exported.openvino_ir("int8").is_file()
    assert exported.openvino_ir("int8").with_suffix(".bin").is_file()
    choice = read_json(exported.cpu_choice)
    assert choice["candidate"] == saved["cpu"]["chosen"]
    assert choice["model"] in {"onnx-cpu", "ov-fp32", "ov-int8", "ov-qdq"}
    assert choice["candidates"][saved["cpu"]["onnxruntime_chosen"]]["model"] == "onnx-cpu"
    assert choice["isa_flags"] == cpu_flags() and choice["cpu"] == cpu_name()
    assert record["extra"]["int8"]["chosen"] == saved["int8"]["chosen"]
    assert not list(exported.root.glob(".staging-*")) and not list(exported.onnx_dir.glob(".*"))
    batch = {
        "input_ids": np.array([[101, 2054, 102]], dtype=np.int64),
        "attention_mask": np.ones((1, 3), dtype=np.int64),
        "token_type_ids": np.zeros((1, 3), dtype=np.int64),
    }
    for model in ("onnx-int8", "onnx-cpu", "ov-fp32", "ov-int8", "ov-qdq", "cpu"):
        with runner_for_model(exported, model, threads=1) as runner:
            assert runner(batch).shape == (1, 2)


def test_sweep_records_every_candidate_and_exclusions(exported: RunDir) -> None:
    from bertrt.calibration.stage import run as calibrate_stage

    config = load_config(
        overrides=[
            *SMALL,
            "calibration.sweep=true",
            "calibration.sweep_percentiles=[99.9,99.999]",
            # A budget no model meets forces the sensitivity pass and exclusions.
            "accuracy_budget=-100",
            "calibration.sensitivity_max_excluded=2",
            "calibration.sensitivity_rows=16",
            "calibration.cpu_candidates=[fp32-opt]",
        ]
    )
    report = calibrate_stage(config, exported).report["int8"]
    names = [c["name"] for c in report["candidates"]]
    assert names[:4] == ["minmax", "entropy", "percentile-99.9", "percentile-99.999"]
    assert len(names) == 6 and names[4].endswith("-exclude1") and names[5].endswith("-exclude2")
    assert len(report["sensitivity"]) == 2 * 8 + 2  # per layer 6 weights + 2 attention BMMs
    excluded = next(c for c in report["candidates"] if c["name"].endswith("-exclude2"))
    assert excluded["excluded"] == [s["node"] for s in report["sensitivity"][:2]]
    chosen = next(c for c in report["candidates"] if c["name"] == report["chosen"])
    assert report["excluded"] == chosen["excluded"]
    assert set(report["excluded"]).isdisjoint(quantized_matmuls(exported.onnx("int8")))


def test_corrupted_model_is_named_and_nothing_overwritten(exported: RunDir) -> None:
    from bertrt.calibration.stage import run as calibrate_stage

    int8_before = sha256_path(exported.onnx("int8")) if exported.onnx("int8").exists() else None
    fp32 = exported.onnx("fp32")
    saved = fp32.read_bytes()
    try:
        fp32.write_bytes(saved[: len(saved) // 2])
        with pytest.raises(StaleArtifactError, match=r"model.onnx"):
            calibrate_stage(load_config(overrides=SMALL), exported)
    finally:
        fp32.write_bytes(saved)
    if int8_before is not None:
        assert sha256_path(exported.onnx("int8")) == int8_before

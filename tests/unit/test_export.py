"""Export stage on a tiny random BERT: artifacts, parity, fusion, fp16 types, typed errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from bertrt.artifacts import RunDir, read_json, sha256_path
from bertrt.config import load_config
from bertrt.errors import MissingArtifactError, VerificationError
from bertrt.export import ShapeMismatchError, ToleranceExceededError, verify_onnx
from bertrt.export.verify import ParityCase
from bertrt.modeling import MissingInputError
from tests.conftest import make_trained_run


def small_config(**sets: object):  # type: ignore[no-untyped-def]
    overrides = [
        "model.max_length=32",
        "export.verify_batch_sizes=[1,3]",
        "export.verify_seq_lengths=[8,32]",
        "export.verify_rows=16",
    ]
    return load_config(overrides=overrides + [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    from bertrt.export.stage import run as export_stage

    run = make_trained_run(tmp_path_factory.mktemp("export"), tiny_base)
    export_stage(small_config(), run)
    return run


def test_export_before_training_names_train(tmp_path: Path) -> None:
    from bertrt.export.stage import run as export_stage

    with pytest.raises(MissingArtifactError, match="bertrt train"):
        export_stage(small_config(), RunDir(tmp_path / "run"))


def test_export_writes_verified_models(exported: RunDir) -> None:
    record = read_json(exported.manifest_path)["stages"]["export"]
    for variant in ("fp32", "opt", "fp16"):
        assert exported.rel(exported.onnx(variant)) in record["outputs"]
    parity = record["extra"]["parity"]
    assert parity["fp32"]["max_abs_diff"] <= 1e-4
    assert parity["opt"]["max_abs_diff"] <= 1e-4
    assert parity["fp16"]["max_abs_diff"] <= 1e-2
    names = {c["case"] for c in parity["fp32"]["cases"]}
    assert {"b1-s8", "b3-s32", "b3-longest"} <= names
    # Padded batches are really exercised.
    assert any(c["padded_fraction"] > 0 for c in parity["fp32"]["cases"])
    assert set(record["extra"]["tensorrt_check"]) == {"fp32", "fp16"}
    assert not list(exported.root.glob(".staging-*")) and not list(exported.onnx_dir.glob(".*"))


def test_fp32_graph_has_dynamic_axes_and_contract(exported: RunDir) -> None:
    model = onnx.load(str(exported.onnx("fp32")), load_external_data=False)
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    for t in inputs.values():
        assert t.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in t.shape.dim] == ["batch", "sequence"]
    assert [o.name for o in model.graph.output] == ["logits"]


def test_optimized_graph_is_fused(exported: RunDir) -> None:
    extra = read_json(exported.manifest_path)["stages"]["export"]["extra"]
    fused = extra["opt"]
    assert fused["fused_operators"].get("Attention") == 2  # tiny_base has 2 layers
    assert fused["fused_operators"].get("SkipLayerNormalization", 0) >= 2
    # Measured (docs/findings.md): BERT fuses its embeddings, every layer, every GELU.
    assert fused["expected_fused"] == {
        "Attention": 2,
        "SkipLayerNormalization": 4,
        "BiasGelu": 2,
        "EmbedLayerNormalization": 1,
    }
    assert fused["fully_fused"] is True
    assert extra["model_type"] == "bert"
    assert extra["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    ops = {n.op_type for n in onnx.load(str(exported.onnx("opt"))).graph.node}
    assert "Attention" in ops


def test_fp16_keeps_io_and_norms_in_fp32(exported: RunDir) -> None:
    model = onnx.load(str(exported.onnx("fp16")))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    floats = {t.data_type for t in model.graph.initializer if t.data_type in (1, 10)}
    assert onnx.TensorProto.FLOAT16 in floats
    model = onnx.shape_inference.infer_shapes(model)
    vi = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert vi.get(node.output[0]) == onnx.TensorProto.FLOAT, node.name


def _cases(exported: RunDir) -> list[ParityCase]:
    batch = {
        "input_ids": np.array([[101, 2054, 102, 0]], dtype=np.int64),
        "attention_mask": np.array([[1, 1, 1, 0]], dtype=np.int64),
        "token_type_ids": np.zeros((1, 4), dtype=np.int64),
    }
    return [ParityCase("b1-s4", batch)]


def test_verify_raises_tolerance_error(exported: RunDir) -> None:
    cases = _cases(exported)
    cases[0].reference = np.full((1, 2), 100.0, dtype=np.float32)
    with pytest.raises(ToleranceExceededError, match=r"b1-s4.*above the tolerance"):
        verify_onnx(exported.onnx("fp32"), cases, 1e-4)


def test_verify_relative_tolerance_is_a_share_of_the_logits_range(exported: RunDir) -> None:
    """The Q/DQ check's mode: the limit is tolerance x the reference logits' range, and a
    row whose top class moved is counted, so a report says how close it came."""
    from bertrt.ort_sessions import cpu_session

    cases = _cases(exported)
    got = cpu_session(exported.onnx("fp32")).run(["logits"], cases[0].batch)[0]
    top = int(got.argmax())
    reference = got.copy()
    reference[0, top] -= 1.0  # the graph's top class is now 1.0 below the other
    reference[0, 1 - top] += 1.0
    cases[0].reference = reference
    spread = float(np.ptp(reference))
    report = verify_onnx(exported.onnx("fp32"), cases, 0.6, relative=True)
    assert report.logit_range == pytest.approx(spread)
    assert report.limit == pytest.approx(0.6 * spread)
    assert report.max_abs_diff == pytest.approx(1.0, abs=1e-5)
    assert report.cases[0].argmax_flips == 1
    with pytest.raises(ToleranceExceededError, match=r"of the logits' range .*0\.4 of the range"):
        verify_onnx(exported.onnx("fp32"), cases, 0.4, relative=True)


def test_verify_raises_shape_error(exported: RunDir) -> None:
    cases = _cases(exported)
    cases[0].reference = np.zeros((1, 3), dtype=np.float32)
    with pytest.raises(ShapeMismatchError, match=r"shape \[1, 2\]"):
        verify_onnx(exported.onnx("fp32"), cases, 1e-4)


def test_verify_refuses_inputs_other_than_the_models(exported: RunDir) -> None:
    cases = _cases(exported)
    cases[0].reference = np.zeros((1, 2), dtype=np.float32)
    with pytest.raises(
        ShapeMismatchError, match=r"the model's are \['input_ids', 'attention_mask'\]"
    ):
        verify_onnx(
            exported.onnx("fp32"), cases, 1e3, expected_inputs=("input_ids", "attention_mask")
        )
    # A batch without an input the graph takes is named, not a KeyError.
    del cases[0].batch["token_type_ids"]
    with pytest.raises(MissingInputError, match="no token_type_ids"):
        verify_onnx(exported.onnx("fp32"), cases, 1e3)


def test_corrupted_onnx_is_named_and_not_overwritten(exported: RunDir, tmp_path: Path) -> None:
    from bertrt.modeling import load_onnx

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf at all")
    before = sha256_path(bad)
    with pytest.raises(VerificationError, match=str(bad)):
        load_onnx(bad)
    assert sha256_path(bad) == before

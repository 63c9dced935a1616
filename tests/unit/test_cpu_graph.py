"""Folding bias Adds and attention scales into ORT's MatMulIntegerToFloat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bertrt.calibration.cpu_graph import fold_into_matmuls
from bertrt.ort_sessions import cpu_session

RNG = np.random.default_rng(0)


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _model() -> onnx.ModelProto:
    """Two int8 matmuls: one with a bias Add, one with a scalar Mul then a mask Add (an input)."""
    inits = [
        _const("b", RNG.integers(-127, 127, size=(8, 4), dtype=np.int8)),
        _const("a_scale", np.array(0.02, dtype=np.float32)),
        _const("b_scale", np.array(0.01, dtype=np.float32)),
        _const("a_zp", np.array(128, dtype=np.uint8)),
        _const("bias", RNG.standard_normal(4).astype(np.float32)),
        _const("scale", np.array(0.125, dtype=np.float32)),
    ]
    mmitf = ["a", "b", "a_scale", "b_scale", "a_zp"]
    nodes = [
        helper.make_node("MatMulIntegerToFloat", mmitf, ["m1"], domain="com.microsoft"),
        helper.make_node("Add", ["m1", "bias"], ["y1"], name="bias_add"),
        helper.make_node("MatMulIntegerToFloat", mmitf, ["m2"], domain="com.microsoft"),
        helper.make_node("Mul", ["m2", "scale"], ["s2"], name="scale_mul"),
        helper.make_node("Add", ["s2", "mask"], ["y2"], name="mask_add"),
        # A matmul whose output is also a graph output must keep it: not folded.
        helper.make_node("MatMulIntegerToFloat", mmitf, ["m3"], domain="com.microsoft"),
        helper.make_node("Add", ["m3", "bias"], ["y3"], name="kept_add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [3, 8]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [3, 1]),
        ],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [3, 4])
            for name in ("y1", "y2", "y3", "m3")
        ],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _run(model: onnx.ModelProto, path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    onnx.save(model, str(path))
    return list(cpu_session(path, 1).run(None, feed))


def test_bias_and_scale_fold_into_the_matmul_and_keep_the_outputs(tmp_path: Path) -> None:
    model = _model()
    feed = {
        "a": RNG.integers(0, 255, size=(3, 8), dtype=np.uint8),
        "mask": np.array([[0.0], [-1e4], [0.0]], dtype=np.float32),
    }
    before = _run(model, tmp_path / "before.onnx", feed)
    report = fold_into_matmuls(model)
    assert (report.matmuls, report.biases_folded, report.scales_folded) == (3, 1, 1)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Add") == 2 and "Mul" not in ops  # the mask Add and kept_add remain
    first = model.graph.node[0]
    assert first.input[6] == "bias" and first.output[0] == "y1"
    assert "scale" not in {t.name for t in model.graph.initializer}  # unused now, dropped
    after = _run(model, tmp_path / "after.onnx", feed)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-6)

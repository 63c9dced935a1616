"""TensorRT readiness check on hand-built graphs: each failure names the offending node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bertrt.trt.onnx_support import (
    TRT_OPSET_RANGE,
    TRT_SUPPORTED_OPS,
    TrtReadinessError,
    check_trt_ready,
)


def qdq_matmul(
    scale: np.ndarray | None = None,
    zero: np.ndarray | None = None,
    weight_scale: np.ndarray | None = None,
    axis: int = 1,
    opset: int = 17,
) -> onnx.ModelProto:
    """x -> Q -> DQ -> MatMul(W int8 -> DQ), the shape of a calibrated layer."""
    k, n = 4, 3
    scale = np.array(0.1, np.float32) if scale is None else scale
    zero = np.array(0, np.int8) if zero is None else zero
    weight_scale = np.full(n, 0.02, np.float32) if weight_scale is None else weight_scale
    inits = [
        numpy_helper.from_array(scale, "x_scale"),
        numpy_helper.from_array(zero, "x_zero"),
        numpy_helper.from_array(np.ones((k, n), np.int8), "w_q"),
        numpy_helper.from_array(weight_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(weight_scale.shape, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dq_x"),
        helper.make_node(
            "DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq_w", axis=axis
        ),
        helper.make_node("MatMul", ["xd", "w"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_good_qdq_graph_passes() -> None:
    report = check_trt_ready(qdq_matmul(), "ok.onnx")
    assert report.qdq == {"quantize": 1, "dequantize": 2, "per_channel_weights": 1}


def test_op_list_is_data_from_onnx_tensorrt() -> None:
    assert {"MatMul", "LayerNormalization", "QuantizeLinear", "Softmax", "Erf"} <= TRT_SUPPORTED_OPS
    assert not {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"} & TRT_SUPPORTED_OPS
    assert TRT_OPSET_RANGE == (9, 24)


def test_nonzero_zero_point_names_node() -> None:
    with pytest.raises(TrtReadinessError, match=r"q_x.*zero point is not 0"):
        check_trt_ready(qdq_matmul(zero=np.array(3, np.int8)), "m.onnx")


def test_uint8_zero_point_names_node() -> None:
    with pytest.raises(TrtReadinessError, match=r"q_x.*uint8"):
        check_trt_ready(qdq_matmul(zero=np.array(0, np.uint8)), "m.onnx")


def test_negative_scale_names_node() -> None:
    with pytest.raises(TrtReadinessError, match=r"q_x.*not all positive"):
        check_trt_ready(qdq_matmul(scale=np.array(-0.1, np.float32)), "m.onnx")


def test_per_tensor_weight_names_node() -> None:
    with pytest.raises(TrtReadinessError, match=r"dq_w.*per output channel"):
        check_trt_ready(qdq_matmul(weight_scale=np.array([0.02], np.float32)), "m.onnx")


def test_wrong_weight_axis_names_node() -> None:
    with pytest.raises(TrtReadinessError, match=r"dq_w.*axis 0"):
        check_trt_ready(qdq_matmul(weight_scale=np.full(4, 0.02, np.float32), axis=0), "m.onnx")


def test_opset_out_of_range() -> None:
    with pytest.raises(TrtReadinessError, match="opset 8"):
        check_trt_ready(qdq_matmul(opset=8), "m.onnx")


def test_contrib_and_unsupported_ops_are_named() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("FastGelu", ["x"], ["h"], name="gelu0", domain="com.microsoft"),
            helper.make_node("MatMulInteger", ["h", "h"], ["y"], name="mmi"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TrtReadinessError) as err:
        check_trt_ready(model, "m.onnx")
    assert "gelu0" in str(err.value) and "com.microsoft.FastGelu" in str(err.value)
    assert "'mmi': op MatMulInteger" in str(err.value)

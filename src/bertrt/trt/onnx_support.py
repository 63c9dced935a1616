"""TensorRT readiness of an ONNX graph, checked on the CPU without TensorRT.

Checks that TensorRT's ONNX parser will take the graph and that Q/DQ nodes
follow what TensorRT requires and fuses well:

* every node is a standard ONNX op TensorRT's parser supports (contrib ops
  such as com.microsoft Attention are not);
* the default-domain opset is within the parser's range;
* QuantizeLinear/DequantizeLinear scales are positive and finite, zero points
  are int8 and 0 (TensorRT supports symmetric quantization only);
* weights (Q/DQ on an initializer feeding MatMul/Gemm) are quantized
  per output channel on the right axis.

A failing check raises TrtReadinessError naming the node(s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bertrt.errors import VerificationError

# Source: onnx/onnx-tensorrt docs/operators.md, "TensorRT 10.15 supports operators
# in the inclusive range of opset 9 to opset 24" (the TensorRT 11.x page states the
# same range); the ops marked "Y" in its Operator Support Matrix. Ops marked "N"
# (e.g. DynamicQuantizeLinear, MatMulInteger, QLinearMatMul) are absent on purpose.
TRT_SOURCE = "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15; same list for 11.x)"
TRT_OPSET_RANGE = (9, 24)
TRT_SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
    Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
    HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
    IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
    LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod
    Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
    QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
    RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
    Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
    ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)
DEFAULT_DOMAINS = ("", "ai.onnx")


class TrtReadinessError(VerificationError):
    """The graph would not parse in TensorRT, or its Q/DQ nodes break TensorRT's rules."""


@dataclass
class TrtReport:
    model: str
    source: str
    opset: int
    nodes: int
    op_counts: dict[str, int]
    qdq: dict[str, int] = field(default_factory=dict)
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_trt_ready(model: Any, name: str) -> TrtReport:
    """Check an ``onnx.ModelProto``; raise TrtReadinessError listing every offending node."""
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
    lo, hi = TRT_OPSET_RANGE
    if not lo <= opset <= hi:
        problems.append(f"opset {opset} is outside TensorRT's range {lo}..{hi}")
    counts = _op_problems(model, problems)
    qdq = _qdq_problems(model, problems)
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise TrtReadinessError(f"{name}: not TensorRT-ready: {shown}{more}")
    return TrtReport(
        model=name,
        source=TRT_SOURCE,
        opset=opset,
        nodes=len(model.graph.node),
        op_counts=dict(sorted(counts.items())),
        qdq=qdq,
    )


def _op_problems(model: Any, problems: list[str]) -> dict[str, int]:
    """Every node's op must be a standard ONNX op TensorRT's parser supports; returns op counts."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if node.domain not in DEFAULT_DOMAINS:
            problems.append(f"node {node.name!r}: op {node.domain}.{node.op_type} is not ONNX")
        elif node.op_type not in TRT_SUPPORTED_OPS:
            problems.append(f"node {node.name!r}: op {node.op_type} is not supported by TensorRT")
    return counts


def _qdq_problems(model: Any, problems: list[str]) -> dict[str, int]:
    """Q/DQ nodes as TensorRT wants them: constant positive scales, int8 zero points of 0
    (symmetric), weights quantized per output channel. Returns the Q/DQ counts."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {
        n.output[0]: n.attribute[0].t
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    }
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)

    def value(tensor_name: str) -> np.ndarray | None:
        proto = inits.get(tensor_name) or consts.get(tensor_name)
        return None if proto is None else numpy_helper.to_array(proto)

    qdq = {"quantize": 0, "dequantize": 0, "per_channel_weights": 0}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        qdq["quantize" if node.op_type == "QuantizeLinear" else "dequantize"] += 1
        scale = value(node.input[1]) if len(node.input) > 1 else None
        zero = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        problems += _scale_and_zero_problems(node, scale, zero)
        if node.op_type == "DequantizeLinear" and scale is not None:
            problem = _weight_axis_problem(node, scale, value, consumers)
            if problem:
                problems.append(problem)
            elif scale.size > 1:
                qdq["per_channel_weights"] += 1
    return qdq


def _scale_and_zero_problems(node: Any, scale: Any, zero: Any) -> list[str]:
    out = []
    if scale is None:
        out.append(f"node {node.name!r}: scale {node.input[1]!r} is not a constant")
    elif not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        out.append(f"node {node.name!r}: scale {node.input[1]!r} is not all positive")
    if zero is not None:
        if zero.dtype != np.int8:
            out.append(f"node {node.name!r}: zero point is {zero.dtype}, TensorRT needs int8")
        if np.any(zero != 0):
            out.append(f"node {node.name!r}: zero point is not 0 (TensorRT: symmetric)")
    return out


def _weight_axis_problem(node: Any, scale: np.ndarray, value: Any, consumers: Any) -> str | None:
    """A DQ of a constant weight into MatMul/Gemm must be per output channel."""
    weight = value(node.input[0])
    if weight is None or weight.ndim != 2:
        return None  # an activation, or not a matrix weight
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    for user in consumers.get(node.output[0], []):
        if user.op_type == "MatMul" and list(user.input).index(node.output[0]) == 1:
            want = 1  # B is [K, N]: one scale per output column
        elif user.op_type == "Gemm" and list(user.input).index(node.output[0]) == 1:
            trans_b = next((a.i for a in user.attribute if a.name == "transB"), 0)
            want = 0 if trans_b else 1
        else:
            continue
        axis = axis % weight.ndim
        if scale.size != weight.shape[want] or axis != want:
            return (
                f"node {node.name!r}: weight {node.input[0]!r} {list(weight.shape)} feeding "
                f"{user.op_type} {user.name!r} is not quantized per output channel "
                f"(axis {axis}, {scale.size} scales; want axis {want}, {weight.shape[want]})"
            )
    return None

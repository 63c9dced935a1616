"""INT8 post-training quantization with ONNX Runtime: calibrate ranges, then write Q/DQ.

Library choice (docs/findings.md, "Libraries kept out of the environment"):
ONNX Runtime's quantization tool, already a dependency. nvidia-modelopt[onnx]
replaces onnxruntime with onnxruntime-gpu and downgrades onnx; optimum-onnx
downgrades transformers. Neither can live in this environment.

The two steps are split so one calibration pass serves many candidates:
``calibrate_ranges`` runs the calibrator once per method (one histogram pass
yields every percentile), and ``quantize_qdq`` writes a Q/DQ model from saved
ranges (``quantize_static``'s calibration cache), e.g. with different nodes
excluded. The entropy calibrator gets 2048 bins here: ``quantize_static``
does not pass a bin count through and its 128-bin default reproduces MinMax.

What TensorRT wants (and the quantizer is told): QDQ format, int8 activations
and weights, symmetric (zero point 0), weights per output channel, Q/DQ only
on MatMul/Gemm inputs (LayerNorm, Softmax, residual Adds and the attention
mask path stay float), biases left float (TensorRT has no int32 DQ).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from bertrt.calibration.reader import CalibrationReader

log = logging.getLogger(__name__)

QUANTIZED_OPS = ["MatMul", "Gemm"]
HISTOGRAM_BINS = 2048
# Batches held by a calibrator at once: ORT keeps every calibrated tensor of them
# in memory. One batch (16 rows at seq 128) peaked at 1.4 GB in calibrate_ranges
# for MiniLM where four peaked at 4.0 GB, the whole pipeline's largest; the
# percentile ranges moved by at most 0.005 (histograms are merged chunk by chunk).
CHUNK_BATCHES = 1


@dataclass(frozen=True)
class Candidate:
    """One calibration setting: a method and, for percentile, its percentile."""

    method: str  # minmax | entropy | percentile
    percentile: float | None = None

    @property
    def name(self) -> str:
        return f"percentile-{self.percentile:g}" if self.method == "percentile" else self.method


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """Route ORT quantization's prints and root-logger warnings to this module's debug log.

    It prints progress per histogram and warns per tensor it leaves float
    (by design here: outputs, LayerNorm, Softmax); our own log says what matters.
    """
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        root.setLevel(level)
        if buffer.getvalue():
            log.debug("onnxruntime.quantization: %s", buffer.getvalue().strip())


def prepare_model(src: Path, dst: Path) -> None:
    """ORT's quantization pre-processing (shape inference, constant folding).

    Symbolic shape inference fails on this graph ("Incomplete symbolic shape
    inference"; docs/findings.md, "INT8 with ONNX Runtime's quantizer") and is
    skipped; ONNX shape inference suffices.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with quiet_ort():
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def _ort_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


def calibrate_ranges(
    model_path: Path,
    reader: CalibrationReader,
    method: str,
    percentiles: Sequence[float] = (99.999,),
    symmetric: bool = True,
) -> dict[Candidate, Any]:
    """Tensor ranges (``TensorsData``) of MatMul/Gemm tensors for each candidate of ``method``."""
    from onnxruntime.quantization import create_calibrator

    options: dict[str, Any] = {"symmetric": symmetric}
    if method in ("entropy", "percentile"):
        options["num_bins"] = HISTOGRAM_BINS
    if method == "percentile":
        options["percentile"] = percentiles[0]
    with tempfile.TemporaryDirectory(prefix="bertrt-calib-") as tmp, quiet_ort():
        calibrator = create_calibrator(
            model_path,
            QUANTIZED_OPS,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_ort_method(method),
            extra_options=options,
        )
        if method != "minmax":
            # Histograms only for what gets a Q/DQ (MatMul/Gemm inputs), not their
            # outputs: halves the histogram and threshold-search time.
            calibrator.tensors_to_calibrate &= _quantized_inputs(model_path)
        for chunk in reader.chunks(CHUNK_BATCHES):
            calibrator.collect_data(chunk)
        if method != "percentile":
            return {Candidate(method): calibrator.compute_data()}
        out = {}
        for p in percentiles:
            # One histogram serves every percentile: only the cut-off differs.
            calibrator.collector.percentile = p
            out[Candidate("percentile", p)] = calibrator.compute_data()
        return out


def _quantized_inputs(model_path: Path) -> set[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    return {i for n in model.graph.node if n.op_type in QUANTIZED_OPS for i in n.input}


def quantize_qdq(
    model_path: Path,
    ranges: Any,
    dst: Path,
    nodes_to_exclude: Sequence[str] = (),
    activation_signed: bool = True,
) -> None:
    """Write a QDQ model of ``model_path`` from precomputed ``ranges`` (TensorsData).

    ``activation_signed=False`` gives ONNX Runtime's fast CPU form (U8S8),
    used only for the CPU deployment candidates.
    """
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_static,
        save_tensors_data,
    )

    with tempfile.TemporaryDirectory(prefix="bertrt-quant-") as tmp, quiet_ort():
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(
            str(model_path),
            str(dst),
            calibration_data_reader=None,
            calibration_cache_path=str(cache),
            calibrate_method=ranges.calibration_method,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8 if activation_signed else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={
                "ActivationSymmetric": activation_signed,
                "WeightSymmetric": True,
                "CalibTensorRangeSymmetric": activation_signed,
                "QuantizeBias": False,
                # Inputs only: no Q/DQ on MatMul/Gemm outputs (the bias Adds, the logits).
                "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
                # A pair per quantized consumer, so a tensor's float consumers (the
                # residual Add after LayerNorm, Shape) keep reading the float tensor.
                "DedicatedQDQPair": True,
            },
        )
    model = onnx.load(str(dst))
    if restore_float_consumers(model, set(nodes_to_exclude)):
        onnx.save(model, str(dst))


def restore_float_consumers(model: Any, excluded: set[str]) -> int:
    """Point readers that should stay float back at the float tensor behind a Q->DQ.

    ORT rewires every reader of a quantized activation to the DQ output: that
    would quantize the residual Add after each attention block's LayerNorm, and
    an excluded MatMul sharing its input with quantized ones (query vs key and
    value). Returns how many inputs were restored.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    restored = 0
    for node in model.graph.node:
        quantized = node.op_type in QUANTIZED_OPS and node.name not in excluded
        if quantized or node.op_type == "QuantizeLinear":
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                restored += 1
    return restored


def quantized_nodes(model: Any) -> list[str]:
    """Names of the MatMul/Gemm nodes of a float graph, in graph order (what can be quantized)."""
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]

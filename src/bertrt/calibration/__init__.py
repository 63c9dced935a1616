"""Calibration stage: INT8 Q/DQ ONNX calibrated on training rows, and the CPU deployment model."""

from bertrt.calibration.quantize import Candidate, calibrate_ranges, quantize_qdq
from bertrt.calibration.reader import CalibrationReader, calibration_texts, tokenized_batches

__all__ = [
    "CalibrationReader",
    "Candidate",
    "calibrate_ranges",
    "calibration_texts",
    "quantize_qdq",
    "tokenized_batches",
]

"""Export stage: merged PyTorch model -> verified fp32, optimized and fp16 ONNX graphs."""

from bertrt.export.onnx_export import export_onnx
from bertrt.export.verify import ShapeMismatchError, ToleranceExceededError, verify_onnx

__all__ = [
    "ShapeMismatchError",
    "ToleranceExceededError",
    "export_onnx",
    "verify_onnx",
]

"""bertrt: LoRA fine-tuning, ONNX export, INT8 calibration, TensorRT engines and benchmarks
for a BERT text classifier."""

__version__ = "0.1.0"

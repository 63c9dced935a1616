"""`bertrt qat`: INT8 with NVIDIA Model Optimizer, post-training and quantization-aware.

ModelOpt inserts fake quantization where TensorRT fuses INT8 (Linear inputs
per tensor, weights per output channel; the attention matmuls' inputs as an
option), calibrates it on training rows, and its TorchScript ONNX export
writes explicit QuantizeLinear/DequantizeLinear pairs. Two Q/DQ models come
out: ``onnx/model.mtq-int8.onnx`` (calibration only) and
``onnx/model.qat.onnx`` (then fine-tuned with the quantizers in the graph).
See docs/qat.md.
"""

"""The build-engine stage: TensorRT FP16/INT8 engines from the run's ONNX files.

The facts an engine shares with whoever runs it (is TensorRT here, the
optimization profile, the sidecar JSON) live in :mod:`bertrt.trt`; the runner
that executes an engine is :mod:`bertrt.runners.trt_runner`. Importing this
package never imports TensorRT or CUDA.
"""

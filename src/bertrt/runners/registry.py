"""Map a model name of the CLI (``merged``, ``onnx-int8``, ...) to a runner over the run's artifact."""

from __future__ import annotations

from bertrt.artifacts import RunDir
from bertrt.runners.base import Runner
from bertrt.runners.ort_runner import OrtRunner
from bertrt.runners.torch_runner import TorchRunner

# model name -> (ONNX variant for RunDir.onnx, precision label, producing stage)
ONNX_MODELS = {
    "onnx-fp32": ("fp32", "fp32", "export"),
    "onnx-opt": ("opt", "fp32", "export"),
    "onnx-fp16": ("fp16", "fp16", "export"),
    "onnx-int8": ("int8", "int8", "calibrate"),
    "onnx-cpu": ("cpu", "int8", "calibrate"),
}
MODEL_NAMES = ("merged", *ONNX_MODELS)


def runner_for_model(run: RunDir, model: str, threads: int | None = None) -> Runner:
    """A CPU runner over one of the run's models, refusing missing or stale artifacts."""
    if model == "merged":
        run.require("evaluate", [run.merged], producer="train")
        return TorchRunner(run.merged, "fp32", "cpu", threads)
    if model not in ONNX_MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")
    variant, precision, producer = ONNX_MODELS[model]
    path = run.onnx(variant)
    run.require("evaluate", [path], producer=producer)
    return OrtRunner(path, precision, "cpu", threads, variant=variant)

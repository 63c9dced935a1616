"""PyTorch dynamic INT8: the merged model with every ``nn.Linear`` quantized at load time.

This is what a user tries first on a CPU without native bf16 (AVX-512 VNNI
only): :func:`torch.ao.quantization.quantize_dynamic` stores the Linear
weights as int8 (per tensor) and quantizes each activation at run time, so no
calibration data and no export are needed. It is a bench peer of the ONNX
and OpenVINO INT8 models (model name ``torch-int8``) and a calibrate
candidate: it becomes the run's ``cpu`` model only where it wins on
validation accuracy and speed.

The model is built from ``merged/`` at activation (well under a second for
MiniLM), so it has no artifact of its own. PyTorch marks
``torch.ao.quantization`` deprecated in favour of torchao's ``quantize_``; it
still ships and runs in the torch this project pins, and its two warnings are
silenced here rather than printed on every activation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from bertrt.runners.base import Runner
from bertrt.runners.identity import Framework, Precision
from bertrt.runners.spec import CpuOffer, ModelSpec, RunnerOptions, Runtime
from bertrt.runners.torch_runner import TorchRunner


class TorchDynamicInt8Runner(TorchRunner):
    """The merged fp32 model with its Linear layers as dynamically quantized int8 (CPU only)."""

    def __init__(
        self, model_dir: str | Path, threads: int | None = None, variant: str = "dynamic-int8"
    ) -> None:
        super().__init__(model_dir, "fp32", "cpu", threads)
        self.precision = Precision.INT8
        self.variant = variant

    def _activate(self) -> None:
        import torch

        super()._activate()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
            warnings.filterwarnings("ignore", message=r"torch.quantize_per_tensor.*deprecated")
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear}, dtype=torch.qint8
            )

    def _infer(self, prepared: Any) -> Any:
        import torch

        # No autocast: the int8 kernels take fp32 activations and quantize them themselves.
        with torch.inference_mode():
            return self.model(**prepared).logits


def quantized_engine_missing() -> str | None:
    """Why this torch build cannot run quantized Linear layers, or None when it can."""
    import torch

    if not set(torch.backends.quantized.supported_engines) - {"none"}:
        return "torch-int8: this torch build has no quantized engine (fbgemm, x86, onednn, qnnpack)"
    return None


class TorchDynamicInt8Runtime(Runtime):
    """``torch-int8``: dynamic INT8 in PyTorch, built from ``merged/`` when a runner activates."""

    framework = Framework.TORCH
    models = (
        ModelSpec(
            "torch-int8",
            Framework.TORCH,
            Precision.INT8,
            "dynamic-int8",
            "train",
            lambda run: run.merged,
        ),
    )
    triton = (
        "PyTorch's dynamic INT8 model has no Triton backend here: serve an ONNX model "
        "instead (onnx-int8, onnx-cpu, ov-int8 or cpu)"
    )
    cpu_candidates = (CpuOffer("torch-int8"),)

    def unavailable(self) -> str | None:
        return quantized_engine_missing()

    def runner_on(self, path: Path, model: ModelSpec, options: RunnerOptions) -> Runner:
        return TorchDynamicInt8Runner(path, options.threads, model.variant)

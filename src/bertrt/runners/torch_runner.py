"""PyTorch runner for the merged Hugging Face model (CPU or CUDA; fp32, bf16, fp16).

It feeds the model the inputs its ONNX export has (:func:`bertrt.modeling.model_input_names`
of the model and the tokenizer saved beside it): a DistilBERT forward takes
``**kwargs`` and would silently swallow a ``token_type_ids`` it has no use for.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.errors import UnavailableError
from bertrt.hardware import cuda_available
from bertrt.modeling import load_tokenizer, model_input_names, select_inputs
from bertrt.runners.base import Batch, Runner
from bertrt.runners.identity import Framework, Precision, Skip
from bertrt.runners.spec import Benchable, ModelSpec, RunnerOptions, Runtime


class TorchRunner(Runner):
    framework = Framework.TORCH

    def __init__(
        self,
        model_dir: str | Path,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"torch runner: unknown precision {precision!r}")
        self.model_dir = Path(model_dir)
        self.precision = precision
        self.device = device
        self.threads = threads
        # On CPU, bf16 runs as autocast over fp32 weights (AMX/AVX-512 BF16 kernels);
        # on CUDA the weights themselves are cast to half precision.
        self.variant = (
            f"{precision}-autocast" if device == "cpu" and precision != "fp32" else precision
        )
        self.model: Any = None
        self._inputs: tuple[str, ...] = ()

    def _activate(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        if self.device == "cuda" and not torch.cuda.is_available():
            raise UnavailableError("torch runner: CUDA is not available on this machine")
        if self.threads:
            torch.set_num_threads(self.threads)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(self.model_dir), attn_implementation="sdpa"
        )
        if self.device == "cuda" and self.precision != "fp32":
            model = model.to(torch.bfloat16 if self.precision == "bf16" else torch.float16)
        self.model = model.to(self.device).eval()
        self._inputs = model_input_names(model, load_tokenizer(self.model_dir))

    @property
    def input_names(self) -> tuple[str, ...]:
        """What the model is fed, the same names as its ONNX graph's inputs."""
        self._require_active()
        return self._inputs

    def _deactivate(self) -> None:
        self.model = None
        with contextlib.suppress(Exception):
            import torch

            if self.device == "cuda":
                torch.cuda.empty_cache()

    def prepare(self, batch: Batch) -> Any:
        import torch

        arrays = select_inputs(batch, self._inputs, f"{self.label} ({self.model_dir})")
        return {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}

    def _infer(self, prepared: Any) -> Any:
        import torch

        autocast = (
            torch.autocast(
                "cpu", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16
            )
            if self.device == "cpu" and self.precision != "fp32"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            return self.model(**prepared).logits

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output.float().cpu().numpy(), dtype=np.float32)


def reference_runner(run: RunDir, threads: int | None) -> TorchRunner:
    """The merged model in fp32 on the GPU where there is one, else on the CPU: what every
    other runner's agreement is measured against."""
    return TorchRunner(run.merged, "fp32", "cuda" if cuda_available() else "cpu", threads)


class TorchRuntime(Runtime):
    """The merged Hugging Face model in PyTorch: the reference every other runtime is
    compared with. The bench also times it in bf16 (autocast) and on CUDA."""

    framework = Framework.TORCH
    models = (
        ModelSpec(
            "merged", Framework.TORCH, Precision.FP32, "fp32", "train", lambda run: run.merged
        ),
    )
    triton = "a PyTorch model is served through its ONNX export: use onnx-*, ov-*, trt-* or cpu"

    def runner_on(self, path: Path, model: ModelSpec, options: RunnerOptions) -> Runner:
        return TorchRunner(path, model.precision, "cpu", options.threads)

    def bench_runners(self, run: RunDir, options: RunnerOptions) -> Iterator[Benchable | Skip]:
        for precision, device in (
            ("fp32", "cpu"),
            ("bf16", "cpu"),
            ("fp32", "cuda"),
            ("fp16", "cuda"),
        ):
            factory = functools.partial(TorchRunner, run.merged, precision, device, options.threads)
            cand = Benchable(factory, (run.merged,))
            if device == "cuda" and not cuda_available():
                yield Skip(cand.label, "CUDA not available (torch.cuda.is_available() is False)")
            else:
                yield cand

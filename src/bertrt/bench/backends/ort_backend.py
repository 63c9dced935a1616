"""ONNX Runtime runner: one ONNX file on one execution provider."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.bench.backends.base import Batch, Runner
from bertrt.errors import UnavailableError
from bertrt.modeling import OUTPUT_NAME

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        precision: str = "fp32",
        provider: str = "cpu",
        threads: int | None = None,
        variant: str | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.precision = precision
        self.provider = provider
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.threads = threads
        self.variant = variant or precision
        if provider != "cpu":
            self.variant += f"-{provider}"
        self.session: Any = None

    def activate(self) -> None:
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise UnavailableError(f"onnxruntime runner: {self.model_path} does not exist")
        wanted = PROVIDERS[self.provider]
        if wanted not in ort.get_available_providers():
            raise UnavailableError(
                f"onnxruntime runner: {wanted} is not in this onnxruntime build "
                f"({', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        providers = [wanted] if self.provider == "cpu" else [wanted, "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.model_path), options, providers=providers)
        self._inputs = [i.name for i in self.session.get_inputs()]

    def close(self) -> None:
        self.session = None

    def prepare(self, batch: Batch) -> Any:
        return {name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in self._inputs}

    def infer(self, prepared: Any) -> Any:
        return self.session.run([OUTPUT_NAME], prepared)[0]

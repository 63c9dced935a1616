"""ONNX Runtime runner: one ONNX file on one execution provider.

On the CPU provider inputs are numpy arrays. On the CUDA and TensorRT
providers ``prepare`` copies them to the GPU as OrtValues once, and
inference runs through an I/O binding with the output left on the GPU, so
the timed region holds no host-device copy (``to_numpy`` copies it back).
Sessions are opened with the project's settings (:mod:`bertrt.ort_sessions`).
The inputs fed are the session's own, whatever else a batch carries.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.errors import MissingArtifactError, UnavailableError
from bertrt.modeling import OUTPUT_NAME, select_inputs
from bertrt.ort_sessions import cpu_session, session_options
from bertrt.runners.base import Batch, Runner

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
        provider_options: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        self.precision = precision
        self.provider = provider
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.threads = threads
        self.variant = variant or precision
        if provider != "cpu":
            self.variant += f"-{provider}"
        # A callable is resolved at activation (e.g. options read from the model file).
        self.provider_options = provider_options or {}
        self.session: Any = None

    def _activate(self) -> None:
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise MissingArtifactError(f"onnxruntime runner: {self.model_path} does not exist")
        wanted = PROVIDERS[self.provider]
        if wanted not in ort.get_available_providers():
            raise UnavailableError(
                f"onnxruntime runner: {wanted} is not in this onnxruntime build "
                f"({', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
            )
        if self.provider == "cpu":
            self.session = cpu_session(self.model_path, self.threads)
        else:
            options = self.provider_options
            if callable(options):
                options = options()
            self.session = ort.InferenceSession(
                str(self.model_path),
                session_options(self.threads),
                providers=[(wanted, options), "CPUExecutionProvider"],
            )
        self._inputs = [i.name for i in self.session.get_inputs()]

    def _deactivate(self) -> None:
        self.session = None

    @property
    def input_names(self) -> tuple[str, ...]:
        """The session's own inputs (the model's: no token_type_ids for DistilBERT/RoBERTa)."""
        self._require_active()
        return tuple(self._inputs)

    def prepare(self, batch: Batch) -> Any:
        """Exactly the session's inputs of ``batch`` (extra keys ignored, a missing one named)."""
        arrays = select_inputs(batch, self._inputs, f"{self.label} ({self.model_path.name})")
        if self.device == "cpu":
            return arrays
        import onnxruntime as ort

        return {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for k, v in arrays.items()}

    def _infer(self, prepared: Any) -> Any:
        if self.device == "cpu":
            return self.session.run([OUTPUT_NAME], prepared)[0]
        binding = self.session.io_binding()
        for name, value in prepared.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(OUTPUT_NAME, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return binding

    def to_numpy(self, output: Any) -> np.ndarray:
        if self.device == "cpu":
            return np.asarray(output, dtype=np.float32)
        return np.asarray(output.copy_outputs_to_cpu()[0], dtype=np.float32)

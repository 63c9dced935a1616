"""ONNX Runtime runner: one ONNX file on one execution provider.

On the CPU provider inputs are numpy arrays. On the CUDA and TensorRT
providers ``prepare`` copies them to the GPU as OrtValues once, and
inference runs through an I/O binding with the output left on the GPU, so
the timed region holds no host-device copy (``to_numpy`` copies it back).
Sessions are opened with the project's settings (:mod:`bertrt.ort_sessions`).
The inputs fed are the session's own, whatever else a batch carries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.errors import MissingArtifactError, UnavailableError
from bertrt.hardware import cuda_available
from bertrt.modeling import OUTPUT_NAME, onnx_input_names, select_inputs
from bertrt.ort_sessions import cpu_session, session_options, shrink_options
from bertrt.runners.base import Batch, Runner
from bertrt.runners.identity import Framework, Precision, Skip
from bertrt.runners.spec import (
    Benchable,
    ModelSpec,
    RunnerOptions,
    Runtime,
    TritonServing,
    artifact_problem,
)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OrtRunner(Runner):
    framework = Framework.ONNXRUNTIME

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

    def release_memory(self) -> None:
        """One batch-1 run with the shrink option: the CPU arena is given back when it ends."""
        if self.is_active and self.device == "cpu":
            feed = {name: np.ones((1, 8), dtype=np.int64) for name in self._inputs}
            self.session.run([OUTPUT_NAME], feed, run_options=shrink_options())
        super().release_memory()

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


def _onnx(variant: str, precision: Precision, producer: str, name: str = "") -> ModelSpec:
    return ModelSpec(
        name or f"onnx-{variant}",
        Framework.ONNXRUNTIME,
        precision,
        variant,
        producer,
        lambda run: run.onnx(variant),
    )


class OnnxRuntime(Runtime):
    """The run's ONNX models on ONNX Runtime: the CPU provider, and on a GPU the CUDA and
    TensorRT execution providers (onnxruntime-gpu)."""

    framework = Framework.ONNXRUNTIME
    models = (
        _onnx("fp32", Precision.FP32, "export"),
        _onnx("opt", Precision.FP32, "export"),
        _onnx("fp16", Precision.FP16, "export"),
        _onnx("int8", Precision.INT8, "calibrate"),
        _onnx("cpu", Precision.INT8, "calibrate"),
        # NVIDIA ModelOpt's Q/DQ models (`bertrt qat`): post-training and fine-tuned.
        _onnx("mtq-int8", Precision.INT8, "qat"),
        _onnx("qat", Precision.INT8, "qat"),
    )
    triton = TritonServing("onnx", backend="onnxruntime")
    # Models worth timing per provider. The fp16 model is meant for GPU providers: on
    # the CPU provider ORT wraps it in Casts and it is slower than fp32
    # (docs/findings.md, "ONNX export"), so the bench lists it as skipped there.
    BENCHED: ClassVar[dict[str, tuple[str, ...]]] = {
        "cpu": ("fp32", "opt", "int8", "cpu"),
        "cuda": ("fp32", "opt", "fp16"),
        "tensorrt": ("fp16", "int8", "mtq-int8", "qat"),
    }

    def unavailable(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            return f"onnxruntime is not installed ({err}); pip install onnxruntime"
        return None

    def runner_on(self, path: Path, model: ModelSpec, options: RunnerOptions) -> Runner:
        return OrtRunner(path, model.precision, "cpu", options.threads, model.variant)

    def bench_runners(self, run: RunDir, options: RunnerOptions) -> Iterator[Benchable | Skip]:
        if missing := self.unavailable():
            yield Skip("onnxruntime", missing)
            return
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
        models = {m.variant: m for m in self.models}
        for provider, variants in self.BENCHED.items():
            for variant in variants:
                model = models[variant]
                factory = functools.partial(_provider_runner, run, model, provider, options)
                cand = Benchable(factory, (model.artifact(run),))
                ep = PROVIDERS[provider]
                if provider != "cpu" and ep not in providers:
                    yield Skip(
                        cand.label, f"{ep} not in this onnxruntime build; install onnxruntime-gpu"
                    )
                elif provider != "cpu" and not cuda_available():
                    yield Skip(cand.label, "CUDA not available")
                elif problem := artifact_problem(run, model, cand.label):
                    yield problem
                else:
                    yield cand
        yield Skip(
            "onnxruntime/fp16/cpu",
            "fp16 ONNX is for GPU providers; on the CPU provider ORT inserts Casts and it is "
            "slower than fp32",
        )


def _provider_runner(
    run: RunDir, model: ModelSpec, provider: str, options: RunnerOptions
) -> OrtRunner:
    """An ONNX Runtime runner; on the TensorRT provider with a profile over the model's inputs.

    The provider options are computed when the runner is activated: they read
    the graph's inputs, and a runner is also built just for its label.
    """
    path = model.model_file(run)
    provider_options = None
    if provider == "tensorrt":
        provider_options = functools.partial(
            trt_ep_options, run, model.variant, path, *options.max_shape
        )
    return OrtRunner(
        path, model.precision, provider, options.threads, model.variant, provider_options
    )


def trt_ep_options(
    run: RunDir, variant: str, path: Path, max_batch: int, max_seq: int
) -> dict[str, Any]:
    """TensorRT execution provider settings: one dynamic profile covering every shape the
    bench feeds (so no engine rebuild per batch width), precision flags, an engine cache.

    The profile names the inputs of the ONNX graph at ``path``, the model's
    own: a model without token_type_ids (DistilBERT, RoBERTa) has no entry for one.
    """
    input_names = onnx_input_names(path)

    def dims(batch: int, seq: int) -> str:
        return ",".join(f"{name}:{batch}x{seq}" for name in input_names)

    return {
        "trt_fp16_enable": variant == "fp16",
        "trt_int8_enable": variant == "int8",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(run.root / ".cache" / "ort-trt"),
        "trt_profile_min_shapes": dims(1, 1),
        "trt_profile_opt_shapes": dims(max_batch, min(128, max_seq)),
        "trt_profile_max_shapes": dims(max_batch, max_seq),
    }

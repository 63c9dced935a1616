"""OpenVINO runner: an ONNX file or an OpenVINO IR (``.xml`` + ``.bin``) on the CPU plugin.

On Intel CPUs with AMX, OpenVINO's CPU plugin runs the project's own fp32
ONNX faster than ONNX Runtime's best int8 graph (docs/findings.md, "Other
runtimes"), so it is both a peer in the bench and a candidate for the run's
CPU deployment model. The inference precision is set explicitly, never left
to the plugin: ``bf16`` where the CPU computes bf16 natively (AMX or AVX-512
BF16), ``f32`` elsewhere, so a figure says what arithmetic produced it.
Threads are pinned like every other CPU runner's.

``static_shapes=True`` compiles one model per input shape (batch x seq) on
its first use, in ``prepare`` (outside any timed region): the CPU plugin then
plans memory and picks kernels for exact sizes instead of dynamic ones.
Batches padded to a few widths (length buckets) keep the number of compiled
shapes small; at most ``MAX_STATIC_SHAPES`` are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bertrt.errors import MissingArtifactError, UnavailableError, VerificationError
from bertrt.hardware import cpu_has_native_bf16, usable_cores
from bertrt.modeling import Batch, select_inputs
from bertrt.runners.base import Runner
from bertrt.runners.identity import Framework, Precision
from bertrt.runners.spec import CpuOffer, ModelSpec, RunnerOptions, Runtime, TritonServing

MAX_STATIC_SHAPES = 64


def default_inference_precision() -> str:
    """``bf16`` on CPUs with native bf16 (AMX, AVX-512 BF16), else ``f32``."""
    return "bf16" if cpu_has_native_bf16() else "f32"


def openvino_missing() -> str | None:
    """Why OpenVINO cannot run here, or None."""
    try:
        import openvino  # noqa: F401
    except ImportError as err:
        return f"openvino is not installed ({err}); pip install openvino"
    return None


class OpenVinoRunner(Runner):
    framework = Framework.OPENVINO
    device = "cpu"

    def __init__(
        self,
        model_path: str | Path,
        precision: str = "fp32",
        threads: int | None = None,
        variant: str | None = None,
        inference_precision: str | None = None,
        static_shapes: bool = False,
    ) -> None:
        super().__init__()
        self.static_shapes = static_shapes
        self.model_path = Path(model_path)
        self.precision = precision
        self.threads = threads
        self.inference_precision = inference_precision or default_inference_precision()
        self.variant = variant or precision
        self._request: Any = None
        self._inputs: list[str] = []
        self._compile: Any = None  # shape -> infer request, when static_shapes
        self._static: dict[tuple[int, ...], Any] = {}

    @property
    def arithmetic(self) -> str:
        """int8 for a quantized model, else the plugin's inference precision (bf16 or fp32)."""
        if self.precision == "int8" or self.inference_precision != "bf16":
            return self.precision
        return "bf16"

    def _activate(self) -> None:
        missing = openvino_missing()
        if missing:
            raise UnavailableError(f"openvino runner: {missing}")
        import openvino as ov

        if not self.model_path.is_file():
            raise MissingArtifactError(f"openvino runner: {self.model_path} does not exist")
        config = {
            "INFERENCE_NUM_THREADS": self.threads or usable_cores(),
            "INFERENCE_PRECISION_HINT": self.inference_precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        core = ov.Core()
        try:
            model = core.read_model(str(self.model_path))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own
            raise VerificationError(f"{self.model_path}: OpenVINO cannot load it ({err})") from err
        self._inputs = [port.get_any_name() for port in compiled.inputs]
        self._request = compiled.create_infer_request()

        def compile_static(shape: tuple[int, ...]) -> Any:
            fixed = model.clone()
            fixed.reshape({name: list(shape) for name in self._inputs})
            return core.compile_model(fixed, "CPU", config).create_infer_request()

        self._compile = compile_static if self.static_shapes else None

    def _deactivate(self) -> None:
        self._request = self._compile = None
        self._static.clear()

    def release_memory(self) -> None:
        """Give back the buffers each compiled model keeps for its largest run so far (the
        CPU plugin sizes them to the largest shape seen, per static shape too); the next run
        allocates them again."""
        if self.is_active:
            for request in [self._request, *self._static.values()]:
                request.get_compiled_model().release_memory()
        super().release_memory()

    @property
    def input_names(self) -> tuple[str, ...]:
        """The compiled model's own inputs (the ONNX graph's)."""
        self._require_active()
        return tuple(self._inputs)

    def prepare(self, batch: Batch) -> dict[str, np.ndarray]:
        """The compiled model's own inputs of ``batch`` (extra keys ignored, a missing one named)."""
        arrays = select_inputs(batch, self._inputs, f"{self.label} ({self.model_path.name})")
        if self._compile is not None:
            self._static_request(arrays[self._inputs[0]].shape)  # compile now, not when timed
        return arrays

    def _static_request(self, shape: tuple[int, ...]) -> Any:
        request = self._static.get(shape)
        if request is None:
            if len(self._static) >= MAX_STATIC_SHAPES:
                self._static.pop(next(iter(self._static)))
            request = self._static[shape] = self._compile(shape)
        return request

    def _infer(self, prepared: dict[str, np.ndarray]) -> Any:
        request = self._request
        if self._compile is not None:
            request = self._static_request(prepared[self._inputs[0]].shape)
        # share_inputs: no copy of the (already contiguous int64) arrays into the request.
        return request.infer(prepared, share_inputs=True)[0]

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.array(output, dtype=np.float32)  # a copy: the request reuses its buffer


def _qdq(name: str, variant: str) -> ModelSpec:
    """OpenVINO on one of `bertrt qat`'s Q/DQ ONNX models."""
    return ModelSpec(
        name, Framework.OPENVINO, Precision.INT8, variant, "qat", lambda run: run.onnx(variant)
    )


class OpenVinoRuntime(Runtime):
    """OpenVINO's CPU plugin on the exported fp32 ONNX (out of the box), NNCF's INT8 IR and
    the Q/DQ ONNX calibrated for TensorRT."""

    framework = Framework.OPENVINO
    models = (
        ModelSpec(
            "ov-fp32",
            Framework.OPENVINO,
            Precision.FP32,
            "fp32",
            "export",
            lambda run: run.onnx("fp32"),
        ),
        ModelSpec(
            "ov-int8",
            Framework.OPENVINO,
            Precision.INT8,
            "int8",
            "calibrate",
            lambda run: run.openvino_dir,
            lambda run: run.openvino_ir("int8"),
        ),
        ModelSpec(
            "ov-qdq",
            Framework.OPENVINO,
            Precision.INT8,
            "qdq",
            "calibrate",
            lambda run: run.onnx("int8"),
        ),
        # ModelOpt's Q/DQ models (`bertrt qat`), placed the way TensorRT fuses them.
        _qdq("ov-mtq-int8", "mtq-int8"),
        _qdq("ov-qat", "qat"),
    )
    # One stream per instance, tuned for latency: instances give the parallelism.
    triton = TritonServing(
        "openvino-ir-or-onnx",
        backend="openvino",
        gpu_refusal="an OpenVINO model is served on the CPU (--device cpu); for a GPU use "
        "onnx-* or trt-*",
        parameters=(("NUM_STREAMS", "1"), ("PERFORMANCE_HINT", "LATENCY")),
    )

    # `bertrt qat`'s ModelOpt models, where that stage ran before calibrate (TensorRT's
    # placement, attention matmuls too with qat.quantize_attention); `-static`: compiled
    # per input shape, as openvino-qdq-static.
    cpu_candidates = tuple(
        CpuOffer(model, static) for model in ("ov-mtq-int8", "ov-qat") for static in (False, True)
    )

    def unavailable(self) -> str | None:
        return openvino_missing()

    def runner_on(self, path: Path, model: ModelSpec, options: RunnerOptions) -> Runner:
        return OpenVinoRunner(
            path,
            model.precision,
            options.threads,
            variant=model.variant + ("-static" if options.static_shapes else ""),
            static_shapes=options.static_shapes,
        )

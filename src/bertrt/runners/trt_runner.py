"""TensorRT runner: one engine, named-tensor I/O on torch CUDA tensors (no pycuda).

Polygraphy-style: constructing a :class:`TrtRunner` touches nothing; entering
it checks the sidecar against this machine's TensorRT and GPU, deserializes
the engine and creates the execution context; leaving it frees them.

The inputs bound are the engine's own input tensors (BERT and ELECTRA have
``token_type_ids``, DistilBERT and RoBERTa do not), read from the engine when
it is loaded and checked against the names its sidecar recorded at build.

Per call: ``set_input_shape`` + ``set_tensor_address`` for each input (after
checking the shape against the engine's profile), an output tensor allocated
for the resolved output shape, then ``execute_async_v3`` on a torch CUDA
stream. With ``cuda_graphs=True`` the first call at each shape is captured
into a CUDA graph over static buffers and later calls at that shape replay it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.errors import MissingArtifactError, StaleArtifactError
from bertrt.modeling import OUTPUT_NAME, Batch, select_inputs
from bertrt.runners.base import Runner, RunnerStateError
from bertrt.runners.identity import Device, Framework, Precision, Skip
from bertrt.runners.spec import (
    Benchable,
    ModelSpec,
    RunnerOptions,
    Runtime,
    TritonServing,
    artifact_problem,
)
from bertrt.trt.availability import (
    HOW_TO_GET,
    cuda_availability,
    current_gpu,
    require_tensorrt_and_cuda,
    tensorrt_availability,
)
from bertrt.trt.metadata import EngineMeta, check_engine_compatible, read_meta
from bertrt.trt.profiles import Profile

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

# TensorRT DataType name -> torch dtype name (getattr(torch, ...)).
TORCH_DTYPES = {"INT64": "int64", "INT32": "int32", "FLOAT": "float32", "HALF": "float16"}


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: dict[str, Any]
    output: Any


class TrtRunner(Runner):
    framework = Framework.TENSORRT
    device = "cuda"

    def __init__(
        self,
        engine_path: str | Path,
        meta_path: str | Path | None = None,
        cuda_graphs: bool = False,
        precision: str | None = None,
        variant: str | None = None,
    ) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self.meta_path = Path(meta_path) if meta_path else self.engine_path.with_suffix(".json")
        self.precision = precision or self.engine_path.stem
        # The engine's name: its precision, or e.g. `qat` for INT8 from the QAT model.
        self.variant = (variant or self.precision) + ("-graphs" if cuda_graphs else "")
        self.cuda_graphs = cuda_graphs
        self.meta: EngineMeta | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: torch.cuda.Stream | None = None
        self._input_dtypes: dict[str, Any] = {}  # the engine's input tensors, in engine order
        self._graphs: dict[tuple[int, ...], _Graph] = {}

    # -- lifecycle ---------------------------------------------------------------
    def _activate(self) -> None:
        trt_version = require_tensorrt_and_cuda(f"tensorrt runner ({self.engine_path.name})")
        import tensorrt as trt
        import torch

        if not self.engine_path.is_file():
            raise MissingArtifactError(
                f"{self.engine_path} does not exist; run `bertrt build-engine` first"
            )
        self.meta = read_meta(self.meta_path)
        check_engine_compatible(self.meta, trt_version, current_gpu(), where=str(self.engine_path))
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise StaleArtifactError(
                f"{self.engine_path}: TensorRT could not deserialize it; rebuild with "
                "`bertrt build-engine`"
            )
        self._engine = engine
        names = engine_input_names(engine)
        if self.meta.inputs and list(names) != list(self.meta.inputs):
            raise StaleArtifactError(
                f"{self.engine_path}: its inputs are {list(names)}, its sidecar says "
                f"{self.meta.inputs}; rebuild with `bertrt build-engine`"
            )
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._input_dtypes = {
            name: getattr(torch, TORCH_DTYPES[engine.get_tensor_dtype(name).name]) for name in names
        }
        self._output_dtype = getattr(torch, TORCH_DTYPES[engine.get_tensor_dtype(OUTPUT_NAME).name])

    def _deactivate(self) -> None:
        # Release in dependency order: graphs, context, engine, then the runtime.
        self._graphs.clear()
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None

    @property
    def profile(self) -> Profile:
        if self.meta is None:
            raise RunnerStateError(f"{self.label}: not active; use it in a `with` block")
        return self.meta.profile

    def refusal(self, batch: int, seq: int) -> str | None:
        """Shapes outside the engine's optimization profile cannot run (checked once active)."""
        if self.meta is None or self.profile.contains((batch, seq)):
            return None
        low, high = self.profile.batch, self.profile.seq
        return (
            f"{self.engine_path.name}: batch {batch} x seq {seq} is outside the engine's profile "
            f"batch {low[0]}..{low[2]} x seq {high[0]}..{high[2]}"
        )

    def _live(self) -> tuple[Any, Any]:
        """The execution context and stream, which exist only while active."""
        if self._context is None or self._stream is None:
            raise RunnerStateError(f"{self.label}: not active; use it in a `with` block")
        return self._context, self._stream

    # -- inference ---------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        """The engine's own input tensors."""
        self._require_active()
        return tuple(self._input_dtypes)

    def prepare(self, batch: Batch) -> dict[str, Any]:
        import torch

        prepared = {}
        arrays = select_inputs(batch, list(self._input_dtypes), str(self.engine_path))
        for name, array in arrays.items():
            self.profile.check(name, array.shape, engine=str(self.engine_path))
            prepared[name] = torch.from_numpy(array).to(
                device="cuda", dtype=self._input_dtypes[name]
            )
        return prepared

    def timing_stream(self) -> Any:
        """TensorRT enqueues on this runner's own stream: CUDA events must record on it."""
        return self._stream

    def _infer(self, prepared: dict[str, Any]) -> Any:
        import torch

        context, stream = self._live()
        shape = tuple(next(iter(prepared.values())).shape)
        if self.cuda_graphs:
            return self._replay(shape, prepared)
        output = self._bind(prepared)
        # Inputs were written on the current stream; order our stream after it.
        stream.wait_stream(torch.cuda.current_stream())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.engine_path}: execute_async_v3 failed (see TensorRT log)")
        return output

    def _bind(self, inputs: dict[str, Any]) -> Any:
        import torch

        context, _ = self._live()
        for name, tensor in inputs.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        dims = context.get_tensor_shape(OUTPUT_NAME)
        output = torch.empty(
            [dims[i] for i in range(len(dims))], dtype=self._output_dtype, device="cuda"
        )
        context.set_tensor_address(OUTPUT_NAME, output.data_ptr())
        return output

    def _replay(self, shape: tuple[int, ...], prepared: dict[str, Any]) -> Any:
        import torch

        context, stream = self._live()
        entry = self._graphs.get(shape)
        if entry is None:
            static = {name: tensor.clone() for name, tensor in prepared.items()}
            output = self._bind(static)
            stream.wait_stream(torch.cuda.current_stream())
            # One plain run first: TensorRT defers some work (shape updates) to the
            # first enqueue, which must not land inside the capture.
            context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                context.execute_async_v3(stream.cuda_stream)
            entry = self._graphs[shape] = _Graph(graph, static, output)
        for name, tensor in prepared.items():
            entry.inputs[name].copy_(tensor)
        entry.graph.replay()
        return entry.output

    def synchronize(self) -> None:
        import torch

        if self._stream is not None:
            self._stream.synchronize()
        torch.cuda.synchronize()

    def to_numpy(self, output: Any) -> np.ndarray:
        return output.float().cpu().numpy()


def engine_input_names(engine: trt.ICudaEngine) -> tuple[str, ...]:
    """The engine's input tensors, in its I/O order (named-tensor API, no bindings)."""
    import tensorrt as trt

    names = (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
    return tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)


TRT_HINT = "needs an NVIDIA GPU; see docs/tensorrt.md"


def tensorrt_unavailable() -> str | None:
    """Why TensorRT engines cannot run here (no TensorRT, or no CUDA GPU), or None."""
    for status in (tensorrt_availability(), cuda_availability()):
        if not status.ok:
            return str(status.reason)
    return None


def _engine(name: str, precision: Precision) -> ModelSpec:
    """The engine engines/<name>.plan (the names of bertrt.engines.stage.SOURCES)."""
    return ModelSpec(
        f"trt-{name}",
        Framework.TENSORRT,
        precision,
        name,
        "build-engine",
        lambda run: run.engine(name),
        device=Device.CUDA,
    )


class TensorRtRuntime(Runtime):
    """Serialized TensorRT engines (engines/<precision>.plan) with their sidecar metadata."""

    framework = Framework.TENSORRT
    # `qat`: INT8 built from `bertrt qat`'s quantization-aware Q/DQ model.
    models = (
        _engine("fp16", Precision.FP16),
        _engine("int8", Precision.INT8),
        _engine("qat", Precision.INT8),
    )
    triton = TritonServing("tensorrt-plan", platform="tensorrt_plan")

    def unavailable(self) -> str | None:
        missing = tensorrt_unavailable()
        return f"needs TensorRT and an NVIDIA GPU: {missing}; {HOW_TO_GET}" if missing else None

    def runner_on(self, path: Path, model: ModelSpec, options: RunnerOptions) -> Runner:
        return TrtRunner(
            path, path.with_suffix(".json"), options.cuda_graphs, model.precision, model.variant
        )

    def bench_runners(self, run: RunDir, options: RunnerOptions) -> Iterator[Benchable | Skip]:
        missing = tensorrt_unavailable()
        models = {m.variant: m for m in self.models}
        for name in options.engine_precisions:
            if name not in models:
                yield Skip(f"tensorrt/{name}/cuda", f"no engine {name!r}; choose {list(models)}")
                continue
            model = models[name]
            factory = functools.partial(self.runner, model, run, options)
            cand = Benchable(factory, (run.engine(name), run.engine_meta(name)))
            if missing:
                yield Skip(cand.label, f"tensorrt: {missing} ({TRT_HINT})")
            elif problem := artifact_problem(run, model, cand.label):
                yield problem
            else:
                yield cand

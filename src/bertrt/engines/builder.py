"""Build a TensorRT engine from one of the run's ONNX files, on TensorRT 10.x and 11.x alike.

Precision comes from the ONNX file (fp16 weights/activations, or INT8 Q/DQ
nodes), the way TensorRT 11 requires. The calls that differ by version (see
NVIDIA's "Migrating from TensorRT 10.x to 11.x", Python API reference):

* ``BuilderFlag.FP16`` / ``BuilderFlag.INT8``: removed in 11.x ("strong
  typing with ModelOpt AutoCast" / "explicit quantization with Q/DQ nodes").
  On 10.x we still set them so 10.x builds the same fp16/Q/DQ graph with
  reduced-precision kernels allowed; on 11.x we set no precision flag.
* ``IBuilderConfig.int8_calibrator`` and every ``IInt8*Calibrator``: removed
  in 11.x (deprecated since 10.1); never used here, INT8 scales live in the
  Q/DQ ONNX from ``bertrt calibrate``.
* ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``: a no-op since 10.0 and
  gone in 11.x; we call ``create_network(0)`` on both (explicit batch is the
  only mode in 10.x; strongly typed is the only mode in 11.x).
* ``ICudaEngine.device_memory_size``: removed in 11.x; not used.
* ``IEngineInspector`` JSON: 11.x renamed "Bindings" to "I/O Tensors" and
  split "Format/Datatype"; :func:`layer_precisions` reads both spellings.

Silent FP32 engines: on TensorRT 11, asking for FP16 from an fp32 ONNX gives
an engine that runs in FP32 without any error.
:func:`network_flags_and_builder_flags` refuses that before building, and
:func:`check_engine_precision` refuses an engine whose layers (read with the
engine inspector) hold no fp16/int8 tensor at all.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertrt.errors import BertrtError, ConfigError, VerificationError
from bertrt.modeling import INPUT_NAMES, OUTPUT_NAME, REQUIRED_INPUTS
from bertrt.trt.availability import trt_major
from bertrt.trt.profiles import Profile

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class OnnxParseError(BertrtError):
    """TensorRT's ONNX parser rejected nodes of the model; the message lists them."""

    exit_code = 6


class EngineBuildError(BertrtError):
    exit_code = 6


# -- what the ONNX file carries (pure, CPU) -------------------------------------
@dataclass(frozen=True)
class OnnxPrecision:
    """Counts that say which precisions a graph really holds."""

    float_initializers: int
    fp16_initializers: int
    fp16_casts: int
    qdq_nodes: int

    @property
    def has_fp16(self) -> bool:
        return self.fp16_initializers > 0 or self.fp16_casts > 0

    @property
    def has_qdq(self) -> bool:
        return self.qdq_nodes > 0


def onnx_precision(path: Path) -> OnnxPrecision:
    """Inspect an ONNX file's initializers and nodes (external data is not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return onnx_precision_of(model)


def onnx_precision_of(model: Any) -> OnnxPrecision:
    from onnx import TensorProto

    graph = model.graph
    dtypes = [init.data_type for init in graph.initializer]
    nodes = list(_all_nodes(graph))
    casts = sum(
        1
        for n in nodes
        if n.op_type == "Cast"
        and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
    )
    return OnnxPrecision(
        float_initializers=dtypes.count(TensorProto.FLOAT),
        fp16_initializers=dtypes.count(TensorProto.FLOAT16),
        fp16_casts=casts,
        qdq_nodes=sum(1 for n in nodes if n.op_type in QDQ_OPS),
    )


def _all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If/Loop/Scan bodies
            if attr.g is not None and len(attr.g.node):
                yield from _all_nodes(attr.g)


# -- version logic (pure, CPU) ----------------------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """How to ask this TensorRT for ``precision``: the builder flags and the typing mode."""

    trt_version: str
    precision: str
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members to set
    strongly_typed: bool  # True on 11.x: types come from the ONNX only
    notes: tuple[str, ...] = field(default_factory=tuple)


def network_flags_and_builder_flags(
    trt_version: str, precision: str, onnx: OnnxPrecision, onnx_name: str = "ONNX"
) -> BuildPlan:
    """Decide the flags for ``precision`` on ``trt_version``; refuse a build that would be FP32.

    * 10.x: weakly typed network; FP16 sets ``BuilderFlag.FP16``; INT8 sets
      ``INT8`` (explicit quantization from the Q/DQ nodes) plus ``FP16`` for
      the layers between them.
    * 11.x: strongly typed (the only mode), no precision flags; the ONNX must
      already be fp16 (for fp16) or hold Q/DQ nodes (for int8).
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"engines.precisions: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}"
        )
    major = trt_major(trt_version)
    if major < 10:
        raise ConfigError(f"TensorRT {trt_version} is not supported; bertrt needs 10.0 or newer")
    if precision == "int8" and not onnx.has_qdq:
        raise ConfigError(
            f"{onnx_name} has no QuantizeLinear/DequantizeLinear nodes, so an INT8 engine would "
            "silently run in higher precision; rerun `bertrt calibrate` to write the Q/DQ model"
        )
    if major >= 11:
        if precision == "fp16" and not onnx.has_fp16:
            raise ConfigError(
                f"{onnx_name} holds no fp16 tensors; TensorRT {trt_version} builds strongly typed "
                "networks only (BuilderFlag.FP16 is gone), so this would be a silent FP32 engine. "
                "Build fp16 from the fp16 ONNX (`bertrt export` writes onnx/model.fp16.onnx)"
            )
        return BuildPlan(
            trt_version,
            precision,
            builder_flags=(),
            strongly_typed=True,
            notes=("TensorRT >= 11: strongly typed; precision taken from the ONNX",),
        )
    notes: list[str] = []
    if precision == "fp16" and not onnx.has_fp16:
        notes.append(f"{onnx_name} is fp32; fp16 comes from BuilderFlag.FP16 alone (10.x only)")
    flags = ("FP16",) if precision == "fp16" else ("INT8", "FP16")
    return BuildPlan(
        trt_version,
        precision,
        builder_flags=flags,
        strongly_typed=False,
        notes=tuple(notes),
    )


# -- engine inspection (pure, CPU) -----------------------------------------------
_DTYPE_WORDS = {
    "half": "fp16",
    "fp16": "fp16",
    "float16": "fp16",
    "int8": "int8",
    "float": "fp32",
    "fp32": "fp32",
    "float32": "fp32",
    "bf16": "bf16",
    "fp8": "fp8",
    "int32": "int32",
    "int64": "int64",
}
_DTYPE_KEYS = ("Format/Datatype", "DataType", "Datatype", "Data Type")


def layer_precisions(inspector_json: str) -> Counter[str]:
    """Count the data types of every layer's input/output tensors in inspector JSON.

    Reads 10.x's ``"Format/Datatype": "Half format"``-style entries and 11.x's
    separate ``"DataType"`` field. Empty when the engine was built without
    ``ProfilingVerbosity.DETAILED`` (then only layer names are listed).
    """
    counts: Counter[str] = Counter()
    try:
        document = json.loads(inspector_json)
    except json.JSONDecodeError:
        return counts
    layers = document.get("Layers", []) if isinstance(document, dict) else []
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        for key in ("Inputs", "Outputs"):
            for tensor in layer.get(key, []) or []:
                if isinstance(tensor, dict):
                    dtype = _tensor_dtype(tensor)
                    if dtype:
                        counts[dtype] += 1
    return counts


def _tensor_dtype(tensor: dict[str, Any]) -> str | None:
    for key in _DTYPE_KEYS:
        value = tensor.get(key)
        if isinstance(value, str):
            for word in value.replace("-", " ").replace(",", " ").lower().split():
                if word in _DTYPE_WORDS:
                    return _DTYPE_WORDS[word]
    return None


def check_engine_precision(precision: str, counts: Counter[str], where: str = "engine") -> str:
    """Refuse an engine that holds no tensor of the precision asked for; return what was checked."""
    if not counts:
        return "unchecked: the engine inspector reported no tensor types"
    wanted = "int8" if precision == "int8" else "fp16"
    if counts.get(wanted, 0) == 0:
        raise VerificationError(
            f"{where}: asked for {precision} but the built engine's layers use only "
            f"{dict(counts)} (a silent FP32 engine); check that the ONNX carries the precision "
            "(fp16: onnx/model.fp16.onnx, int8: Q/DQ nodes) and rebuild"
        )
    return f"ok: {counts[wanted]} {wanted} layer tensors of {sum(counts.values())}"


# -- the build itself (needs TensorRT and a GPU) ----------------------------------
@dataclass
class BuildResult:
    engine: bytes
    timing_cache: bytes
    inputs: list[str]  # the network's inputs, as parsed from the ONNX graph
    io: dict[str, dict[str, Any]]
    layer_precisions: dict[str, int]
    precision_check: str
    build_s: float


def build_engine(
    onnx_path: Path,
    plan: BuildPlan,
    profile: Profile,
    workspace_mib: int,
    optimization_level: int,
    timing_cache: bytes | None,
) -> BuildResult:
    """Parse ``onnx_path`` and build a serialized engine for ``plan`` with ``profile``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # no creation flag is needed on 10.x or 11.x
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data files next to the model.
    if not parser.parse_from_file(str(onnx_path)):
        raise OnnxParseError(_parser_errors(parser, onnx_path))
    inputs = network_inputs(network, onnx_path)

    config = builder.create_builder_config()
    # WORKSPACE is the pool the builder's tactics use (not a DLA_* pool).
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # for the inspector check
    for name in plan.builder_flags:  # only on 10.x; the members are gone in 11.x
        if name == "FP16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif name == "INT8":
            config.set_flag(trt.BuilderFlag.INT8)
    cache = config.create_timing_cache(timing_cache or b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another TensorRT version or GPU is refused: start afresh.
        log.warning("timing cache does not match this TensorRT/GPU; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    trt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.input_shapes(inputs).items():
        trt_profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
    config.add_optimization_profile(trt_profile)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine from {onnx_path} (see the log above; a "
            "larger engines.workspace_mib or a narrower engines.profile may help)"
        )
    engine_bytes = bytes(memoryview(serialized))
    cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    io = engine_io(engine)
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    counts = layer_precisions(info)
    checked = check_engine_precision(plan.precision, counts, where=str(onnx_path))
    return BuildResult(engine_bytes, cache_bytes, inputs, io, dict(counts), checked, build_s)


def _parser_errors(parser: trt.OnnxParser, onnx_path: Path) -> str:
    lines = []
    for index in range(parser.num_errors):
        error: trt.ParserError = parser.get_error(index)
        lines.append(
            f"node {error.node()} {error.node_name()!r} ({error.node_operator()}): {error.desc()}"
        )
    detail = "; ".join(lines) or "no details reported"
    return f"TensorRT's ONNX parser rejected {onnx_path}: {detail}"


def network_inputs(network: trt.INetworkDefinition, onnx_path: Path) -> list[str]:
    """The parsed network's inputs (the ONNX graph's), checked against the model contract."""
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    check_io(inputs, outputs, str(onnx_path))
    return inputs


def check_io(inputs: list[str], outputs: list[str], where: str) -> None:
    """Refuse a graph whose I/O is not a model's: ``input_ids``, ``attention_mask``,
    optionally ``token_type_ids`` (per architecture), and ``logits``."""
    known = set(INPUT_NAMES)
    if (
        not set(REQUIRED_INPUTS) <= set(inputs)
        or not set(inputs) <= known
        or len(set(inputs)) != len(inputs)
        or outputs != [OUTPUT_NAME]
    ):
        raise OnnxParseError(
            f"{where}: inputs {inputs} / outputs {outputs}; a model takes "
            f"{list(REQUIRED_INPUTS)} (and token_type_ids where its architecture has them) "
            f"and gives [{OUTPUT_NAME!r}]; rerun `bertrt export`"
        )


def engine_io(engine: trt.ICudaEngine) -> dict[str, dict[str, Any]]:
    """Name -> {mode, dtype, shape} of every I/O tensor (named-tensor API, no bindings)."""
    result = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        result[name] = {
            "mode": engine.get_tensor_mode(name).name,
            "dtype": engine.get_tensor_dtype(name).name,
            "shape": dims_to_list(engine.get_tensor_shape(name)),
        }
    return result


def dims_to_list(dims: trt.Dims) -> list[int]:
    """``trt.Dims`` supports len() and indexing (not iteration, per the stubs)."""
    return [dims[i] for i in range(len(dims))]

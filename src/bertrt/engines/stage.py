"""`bertrt build-engine`: TensorRT engines from the run's fp16 and Q/DQ INT8 ONNX files.

Order of checks: TensorRT and a GPU first (one line and exit code 3 on a
machine without them, so `make all` goes on to the CPU benchmark), then the
config (precisions, profile), then the inputs' manifest records, then the
ONNX files' precision against the installed TensorRT version. Every engine
and its sidecar are staged and published together once all engines are
built; the timing cache is kept in ``engines/timing.cache`` so rebuilds
reuse measured tactics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bertrt.artifacts import RunDir, sha256_path, write_bytes
from bertrt.config import Config
from bertrt.engines.builder import (
    BuildPlan,
    BuildResult,
    build_engine,
    check_io,
    network_flags_and_builder_flags,
    onnx_precision,
)
from bertrt.errors import BertrtError, ConfigError
from bertrt.modeling import graph_input_names, load_onnx
from bertrt.stages import StageResult, stage
from bertrt.trt.availability import current_gpu, require_tensorrt_and_cuda
from bertrt.trt.metadata import EngineMeta, GpuInfo, read_meta, write_meta
from bertrt.trt.profiles import Profile, Shape, build_profile, max_positions_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSource:
    """What an engine (engines/<name>.plan) is built from, and in which precision."""

    variant: str  # the ONNX file (RunDir.onnx)
    producer: str  # the stage that writes it
    precision: str  # what TensorRT builds it in (one of bertrt.engines.builder.PRECISIONS)


# engine name (engines.precisions) -> its source. `qat` is INT8 from `bertrt qat`'s
# quantization-aware Q/DQ model (ModelOpt's placement, the one TensorRT documents).
SOURCES = {
    "fp16": EngineSource("fp16", "export", "fp16"),
    "int8": EngineSource("int8", "calibrate", "int8"),
    "qat": EngineSource("qat", "qat", "int8"),
}
STAGE = "build-engine"


def timing_cache_path(rundir: RunDir) -> Path:
    return rundir.engines_dir / "timing.cache"


@dataclass(frozen=True)
class EngineJob:
    precision: str
    onnx_path: Path
    plan: BuildPlan
    inputs: tuple[str, ...]  # the ONNX graph's inputs: the profile's and the engine's

    def input_shapes(self, profile: Profile) -> dict[str, tuple[Shape, Shape, Shape]]:
        """The optimization profile per input of this engine (what the builder sets)."""
        return profile.input_shapes(self.inputs)


def plan_engines(
    config: Config, rundir: RunDir, trt_version: str
) -> tuple[Profile, list[EngineJob]]:
    """Everything decided before TensorRT is touched (pure apart from reading the run dir).

    Validates the ``engines`` config, checks each source ONNX against the
    manifest (``rundir.require``) and decides the flags for ``trt_version``,
    refusing a build that would silently come out FP32.
    """
    cfg = config.engines
    precisions = list(dict.fromkeys(cfg.precisions))
    unknown = [p for p in precisions if p not in SOURCES]
    if unknown or not precisions:
        raise ConfigError(f"engines.precisions={cfg.precisions}: choose from {', '.join(SOURCES)}")
    if cfg.workspace_mib < 1:
        raise ConfigError(f"engines.workspace_mib={cfg.workspace_mib}: must be positive")
    if not 0 <= cfg.optimization_level <= 5:
        raise ConfigError(
            f"engines.optimization_level={cfg.optimization_level}: TensorRT accepts 0..5"
        )
    profile = build_profile(cfg.profile, max_positions_of(rundir.merged))
    jobs = []
    for precision in precisions:
        source = SOURCES[precision]
        onnx_path = rundir.onnx(source.variant)
        rundir.require(STAGE, [onnx_path], producer=source.producer)
        plan = network_flags_and_builder_flags(
            trt_version, source.precision, onnx_precision(onnx_path), onnx_name=str(onnx_path)
        )
        jobs.append(EngineJob(precision, onnx_path, plan, _graph_inputs(onnx_path)))
    return profile, jobs


def _graph_inputs(onnx_path: Path) -> tuple[str, ...]:
    """The model inputs of ``onnx_path`` (two or three by architecture), checked on the CPU."""
    model = load_onnx(onnx_path, load_weights=False)
    inputs = list(graph_input_names(model))
    check_io(inputs, [o.name for o in model.graph.output], str(onnx_path))
    return tuple(inputs)


def run(config: Config, rundir: RunDir) -> StageResult:
    """Build every engine in ``engines.precisions``; each plan is published with its sidecar."""
    trt_version = require_tensorrt_and_cuda()
    profile, jobs = plan_engines(config, rundir, trt_version)
    gpu = current_gpu()
    lines, checks = [], {}
    with stage(rundir, STAGE) as out:  # plan_engines has required each source ONNX
        for job in jobs:
            result = _build(config, rundir, job, profile)
            plan, meta = out.path(rundir.engine(job.precision)), rundir.engine_meta(job.precision)
            plan.write_bytes(result.engine)
            sidecar = _sidecar(config, rundir, job, profile, result, (trt_version, gpu))
            write_meta(out.path(meta), sidecar)
            out.inputs.append(job.onnx_path)
            checks[job.precision] = result.precision_check
            lines.append(
                f"wrote {rundir.engine(job.precision)} ({result.build_s:.1f} s build; "
                f"precision {result.precision_check})"
            )
        _keep_current_engines(rundir, {job.precision for job in jobs}, out.inputs, out.outputs)
        out.facts = {"tensorrt": trt_version, "gpu": gpu.name, "precision_checks": checks}
        out.summary = "\n".join(lines)
    return out.result


def _build(config: Config, rundir: RunDir, job: EngineJob, profile: Profile) -> BuildResult:
    """Build one engine, reusing and updating the timing cache.

    The cache is written in place at once, not staged: tactics measured for
    one engine help the next build even when a later engine of this run fails.
    """
    cfg = config.engines
    cache_path = timing_cache_path(rundir)
    log.info("building %s engine from %s (%s)", job.precision, job.onnx_path, job.plan)
    cache = cache_path.read_bytes() if cfg.timing_cache and cache_path.is_file() else None
    result = build_engine(
        job.onnx_path, job.plan, profile, cfg.workspace_mib, cfg.optimization_level, cache
    )
    if cfg.timing_cache:
        write_bytes(cache_path, result.timing_cache)
    return result


def _sidecar(
    config: Config,
    rundir: RunDir,
    job: EngineJob,
    profile: Profile,
    result: BuildResult,
    built_with: tuple[str, GpuInfo],
) -> EngineMeta:
    """What the runtime checks before loading the engine, and how it was built."""
    cfg = config.engines
    trt_version, gpu = built_with
    return EngineMeta(
        precision=job.precision,
        tensorrt_version=trt_version,
        gpu=gpu,
        profile=profile,
        onnx_file=rundir.rel(job.onnx_path),
        onnx_sha256=sha256_path(job.onnx_path),
        build_s=round(result.build_s, 3),
        inputs=list(result.inputs),
        options={
            "workspace_mib": cfg.workspace_mib,
            "optimization_level": cfg.optimization_level,
            "timing_cache": cfg.timing_cache,
            "builder_flags": list(job.plan.builder_flags),
            "strongly_typed": job.plan.strongly_typed,
            "notes": list(job.plan.notes),
            "precision_check": result.precision_check,
        },
        io=result.io,
        layer_precisions=result.layer_precisions,
    )


def _keep_current_engines(
    rundir: RunDir, rebuilt: set[str], inputs: list[Path], outputs: list[Path]
) -> None:
    """Carry into the new manifest record the engines not rebuilt now that are still current.

    ``--precision fp16`` must not orphan an int8 engine built earlier from an
    ONNX file that has not changed since (its sidecar holds the ONNX's sha256).
    """
    for precision, source in SOURCES.items():
        engine, meta_path, onnx_path = (
            rundir.engine(precision),
            rundir.engine_meta(precision),
            rundir.onnx(source.variant),
        )
        if precision in rebuilt or not (
            engine.is_file() and meta_path.is_file() and onnx_path.is_file()
        ):
            continue
        try:
            current = read_meta(meta_path).onnx_sha256 == sha256_path(onnx_path)
        except BertrtError:
            current = False
        if current:
            inputs.append(onnx_path)
            outputs += [engine, meta_path]

"""`bertrt build-engine`: TensorRT engines from the run's fp16 and Q/DQ INT8 ONNX files.

Order of checks: TensorRT and a GPU first (one line and exit code 3 on a
machine without them, so `make all` goes on to the CPU benchmark), then the
config (precisions, profile), then the inputs' manifest records, then the
ONNX files' precision against the installed TensorRT version. Each engine is
written atomically with its sidecar; the timing cache is kept in
``engines/timing.cache`` so rebuilds reuse measured tactics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bertrt.artifacts import RunDir, StageTimer, sha256_path, write_bytes
from bertrt.config import Config
from bertrt.engines.builder import (
    PRECISIONS,
    BuildPlan,
    build_engine,
    network_flags_and_builder_flags,
    onnx_precision,
)
from bertrt.errors import BertrtError, ConfigError
from bertrt.trt.availability import current_gpu, require_tensorrt_and_cuda
from bertrt.trt.metadata import EngineMeta, read_meta, write_meta
from bertrt.trt.profiles import Profile, build_profile, max_positions_of

log = logging.getLogger(__name__)

# precision -> (ONNX variant for RunDir.onnx, the stage that writes it)
SOURCES = {"fp16": ("fp16", "export"), "int8": ("int8", "calibrate")}
STAGE = "build-engine"


def timing_cache_path(run: RunDir) -> Path:
    return run.engines_dir / "timing.cache"


@dataclass(frozen=True)
class EngineJob:
    precision: str
    onnx_path: Path
    plan: BuildPlan


def plan_engines(config: Config, run: RunDir, trt_version: str) -> tuple[Profile, list[EngineJob]]:
    """Everything decided before TensorRT is touched (pure apart from reading the run dir).

    Validates the ``engines`` config, checks each source ONNX against the
    manifest (``run.require``) and decides the flags for ``trt_version``,
    refusing a build that would silently come out FP32.
    """
    cfg = config.engines
    precisions = list(dict.fromkeys(cfg.precisions))
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ConfigError(
            f"engines.precisions={cfg.precisions}: choose from {', '.join(PRECISIONS)}"
        )
    if cfg.workspace_mib < 1:
        raise ConfigError(f"engines.workspace_mib={cfg.workspace_mib}: must be positive")
    if not 0 <= cfg.optimization_level <= 5:
        raise ConfigError(
            f"engines.optimization_level={cfg.optimization_level}: TensorRT accepts 0..5"
        )
    profile = build_profile(cfg.profile, max_positions_of(run.merged))
    jobs = []
    for precision in precisions:
        variant, producer = SOURCES[precision]
        onnx_path = run.onnx(variant)
        run.require(STAGE, [onnx_path], producer=producer)
        plan = network_flags_and_builder_flags(
            trt_version, precision, onnx_precision(onnx_path), onnx_name=str(onnx_path)
        )
        jobs.append(EngineJob(precision, onnx_path, plan))
    return profile, jobs


def run(config: Config, run: RunDir) -> list[Path]:
    """Build every engine in ``engines.precisions``; return the written plan files."""
    trt_version = require_tensorrt_and_cuda()
    cfg = config.engines
    profile, jobs = plan_engines(config, run, trt_version)
    gpu = current_gpu()
    cache_path = timing_cache_path(run)

    timer = StageTimer()
    inputs: list[Path] = []
    outputs: list[Path] = []
    checks: dict[str, str] = {}
    for job in jobs:
        precision, onnx_path, plan = job.precision, job.onnx_path, job.plan
        log.info("building %s engine from %s (%s)", precision, onnx_path, plan)
        cache = cache_path.read_bytes() if cfg.timing_cache and cache_path.is_file() else None
        result = build_engine(
            onnx_path, plan, profile, cfg.workspace_mib, cfg.optimization_level, cache
        )
        if cfg.timing_cache:
            write_bytes(cache_path, result.timing_cache)
        write_bytes(run.engine(precision), result.engine)
        write_meta(
            run.engine_meta(precision),
            EngineMeta(
                precision=precision,
                tensorrt_version=trt_version,
                gpu=gpu,
                profile=profile,
                onnx_file=run.rel(onnx_path),
                onnx_sha256=sha256_path(onnx_path),
                build_s=round(result.build_s, 3),
                options={
                    "workspace_mib": cfg.workspace_mib,
                    "optimization_level": cfg.optimization_level,
                    "timing_cache": cfg.timing_cache,
                    "network_flags": plan.network_flags,
                    "builder_flags": list(plan.builder_flags),
                    "strongly_typed": plan.strongly_typed,
                    "notes": list(plan.notes),
                    "precision_check": result.precision_check,
                },
                io=result.io,
                layer_precisions=result.layer_precisions,
            ),
        )
        print(
            f"wrote {run.engine(precision)} ({result.build_s:.1f} s build; "
            f"precision {result.precision_check})"
        )
        inputs.append(onnx_path)
        outputs += [run.engine(precision), run.engine_meta(precision)]
        checks[precision] = result.precision_check
    _keep_current_engines(run, {job.precision for job in jobs}, inputs, outputs)
    run.record(
        STAGE,
        inputs,
        outputs,
        timer.elapsed,
        extra={"tensorrt": trt_version, "gpu": gpu.name, "precision_checks": checks},
    )
    return [run.engine(job.precision) for job in jobs]


def _keep_current_engines(
    run: RunDir, rebuilt: set[str], inputs: list[Path], outputs: list[Path]
) -> None:
    """Carry into the new manifest record the engines not rebuilt now that are still current.

    ``--precision fp16`` must not orphan an int8 engine built earlier from an
    ONNX file that has not changed since (its sidecar holds the ONNX's sha256).
    """
    for precision, (variant, _) in SOURCES.items():
        engine, meta_path, onnx_path = (
            run.engine(precision),
            run.engine_meta(precision),
            run.onnx(variant),
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

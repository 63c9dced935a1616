"""Which runners a benchmark can use for one run on this machine, and why the others are skipped.

A benchmark that silently drops a backend is worse than none: the reader
cannot tell "slow" from "missing". So every candidate (PyTorch CPU/CUDA,
ONNX Runtime on each ONNX model and execution provider, TensorRT engines)
ends up either in :attr:`Discovery.runners` or in :attr:`Discovery.skipped`
with a one-line reason that names the command or package that would add it.

Frameworks that may be absent (CUDA, onnxruntime-gpu, TensorRT) and modules
other helpers own (``bertrt.runners.trt_runner``) are imported lazily here and
nowhere else in the harness.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.errors import BertrtError
from bertrt.modeling import INPUT_NAMES
from bertrt.runners.base import Runner
from bertrt.runners.ort_runner import OrtRunner
from bertrt.runners.registry import ONNX_MODELS
from bertrt.runners.torch_runner import TorchRunner

TRT_HINT = "needs an NVIDIA GPU; see docs/tensorrt.md"
# ONNX models worth timing on the ONNX Runtime CPU provider. The fp16 model is
# meant for GPU providers: on the CPU provider ORT wraps it in Casts and it is
# slower than fp32 (FINDINGS.md), so it is listed as skipped there.
CPU_ONNX_VARIANTS = ("fp32", "opt", "int8", "cpu")
CUDA_ONNX_VARIANTS = ("fp32", "opt", "fp16")
TRT_EP_ONNX_VARIANTS = ("fp16", "int8")


@dataclass(frozen=True)
class Candidate:
    """A runner that can be built: its label and a factory that constructs it (cheaply)."""

    label: str
    factory: Callable[[], Runner]
    # The run's artifacts this runner reads (recorded as the bench stage's inputs).
    inputs: tuple[Path, ...] = ()

    def build(self) -> Runner:
        return self.factory()


@dataclass
class Discovery:
    runners: list[Candidate] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def skip(self, label: str, reason: str) -> None:
        self.skipped.append({"backend": label, "reason": reason})

    def labels(self) -> list[str]:
        return [c.label for c in self.runners]


def selected(label: str, patterns: list[str]) -> bool:
    """``all``, an exact label, a label prefix (``torch``, ``onnxruntime/int8``) or a glob."""
    for pattern in patterns:
        if pattern == "all" or label == pattern or label.startswith(pattern.rstrip("/") + "/"):
            return True
        if fnmatch.fnmatchcase(label, pattern):
            return True
    return False


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def discover(
    run: RunDir,
    threads: int | None,
    patterns: list[str] | None = None,
    engine_precisions: list[str] | None = None,
    max_shape: tuple[int, int] = (32, 512),
    cuda_graphs: bool = False,
) -> Discovery:
    """Every candidate runner for ``run`` on this machine, filtered by ``patterns``."""
    found = Discovery()
    patterns = patterns or ["all"]
    _torch(found, run, threads)
    _onnxruntime(found, run, threads, max_shape)
    _tensorrt(found, run, engine_precisions or ["fp16", "int8"], cuda_graphs)
    kept = [c for c in found.runners if selected(c.label, patterns)]
    for cand in found.runners:
        if cand not in kept:
            found.skip(cand.label, f"not selected by bench.backends={patterns}")
    found.runners = kept
    return found


def _torch(found: Discovery, run: RunDir, threads: int | None) -> None:
    merged = run.merged
    for precision in ("fp32", "bf16"):
        found.runners.append(
            Candidate(
                f"torch/{TorchRunner(merged, precision, 'cpu').variant}/cpu",
                functools.partial(TorchRunner, merged, precision, "cpu", threads),
                (merged,),
            )
        )
    for precision in ("fp32", "fp16"):
        label = f"torch/{precision}/cuda"
        if cuda_available():
            found.runners.append(
                Candidate(
                    label,
                    functools.partial(TorchRunner, merged, precision, "cuda", threads),
                    (merged,),
                )
            )
        else:
            found.skip(label, "CUDA not available (torch.cuda.is_available() is False)")


def _onnx_model(run: RunDir, variant: str) -> tuple[Path | None, str]:
    """The run's ONNX file for ``variant`` if current, else None and why."""
    model = next(m for m, spec in ONNX_MODELS.items() if spec[0] == variant)
    _, precision, producer = ONNX_MODELS[model]
    path = run.onnx(variant)
    if not path.is_file():
        return None, f"{path} missing: run `bertrt {producer} --run-dir {run.root}`"
    try:
        run.require("bench", [path], producer=producer)
    except BertrtError as err:
        return None, str(err)
    return path, precision


def _onnxruntime(
    found: Discovery, run: RunDir, threads: int | None, max_shape: tuple[int, int]
) -> None:
    try:
        providers = ort_providers()
    except ImportError as err:
        found.skip("onnxruntime", f"not installed ({err}); pip install onnxruntime")
        return
    models = {v: _onnx_model(run, v) for v in ("fp32", "opt", "fp16", "int8", "cpu")}
    for variant in CPU_ONNX_VARIANTS:
        _add_ort(found, models[variant], variant, "cpu", threads)
    found.skip(
        "onnxruntime/fp16/cpu",
        "fp16 ONNX is for GPU providers; on the CPU provider ORT inserts Casts and it is "
        "slower than fp32",
    )
    for provider, variants, ep in (
        ("cuda", CUDA_ONNX_VARIANTS, "CUDAExecutionProvider"),
        ("tensorrt", TRT_EP_ONNX_VARIANTS, "TensorrtExecutionProvider"),
    ):
        for variant in variants:
            label = f"onnxruntime/{variant}-{provider}/cuda"
            if ep not in providers:
                found.skip(label, f"{ep} not in this onnxruntime build; install onnxruntime-gpu")
            elif not cuda_available():
                found.skip(label, "CUDA not available")
            else:
                options = (
                    trt_ep_options(run, variant, *max_shape) if provider == "tensorrt" else None
                )
                _add_ort(found, models[variant], variant, provider, threads, options)


def trt_ep_options(run: RunDir, variant: str, max_batch: int, max_seq: int) -> dict[str, Any]:
    """TensorRT execution provider settings: one dynamic profile covering every shape the
    bench feeds (so no engine rebuild per batch width), precision flags, an engine cache."""

    def dims(batch: int, seq: int) -> str:
        return ",".join(f"{name}:{batch}x{seq}" for name in INPUT_NAMES)

    return {
        "trt_fp16_enable": variant == "fp16",
        "trt_int8_enable": variant == "int8",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(run.root / ".cache" / "ort-trt"),
        "trt_profile_min_shapes": dims(1, 1),
        "trt_profile_opt_shapes": dims(max_batch, min(128, max_seq)),
        "trt_profile_max_shapes": dims(max_batch, max_seq),
    }


def _add_ort(
    found: Discovery,
    model: tuple[Path | None, str],
    variant: str,
    provider: str,
    threads: int | None,
    options: dict[str, Any] | None = None,
) -> None:
    path, info = model
    suffix = "" if provider == "cpu" else f"-{provider}"
    label = f"onnxruntime/{variant}{suffix}/{'cpu' if provider == 'cpu' else 'cuda'}"
    if path is None:
        found.skip(label, info)
        return
    found.runners.append(
        Candidate(
            label,
            functools.partial(OrtRunner, path, info, provider, threads, variant, options),
            (path,),
        )
    )


def tensorrt_missing() -> str | None:
    """Why TensorRT cannot be used here, or None. ``import tensorrt`` alone is not enough:
    with only tensorrt-stubs installed it imports an empty namespace package."""
    try:
        availability = importlib.import_module("bertrt.trt.availability")
        status = availability.tensorrt_availability()
        return None if status.ok else str(status.reason)
    except (ImportError, AttributeError):
        pass
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as err:
        return f"not installed ({err})"
    if not hasattr(trt, "Runtime"):
        return "not installed (only the tensorrt-stubs type stubs were found)"
    return None


def _tensorrt(found: Discovery, run: RunDir, precisions: list[str], cuda_graphs: bool) -> None:
    labels = [f"tensorrt/{p}/cuda" for p in precisions]
    missing = tensorrt_missing()
    if missing:
        for label in labels:
            found.skip(label, f"tensorrt: {missing} ({TRT_HINT})")
        return
    if not cuda_available():
        for label in labels:
            found.skip(label, f"CUDA not available ({TRT_HINT})")
        return
    try:
        runtime = importlib.import_module("bertrt.runners.trt_runner")
        trt_runner = runtime.TrtRunner
    except (ImportError, AttributeError) as err:
        for label in labels:
            found.skip(label, f"bertrt.runners.trt_runner.TrtRunner unavailable ({err})")
        return
    for precision, label in zip(precisions, labels, strict=True):
        engine = run.engine(precision)
        if not engine.is_file():
            found.skip(
                label, f"{engine} missing: run `bertrt build-engine --run-dir {run.root}` on a GPU"
            )
            continue
        try:
            run.require("bench", [engine], producer="build-engine")
        except BertrtError as err:
            found.skip(label, str(err))
            continue
        found.runners.append(
            Candidate(
                label,
                functools.partial(_trt, trt_runner, run, engine, precision, cuda_graphs),
                (engine, run.engine_meta(precision)),
            )
        )


def _trt(cls: type, run: RunDir, engine: Path, precision: str, cuda_graphs: bool) -> Runner:
    runner: Runner = cls(
        engine, meta_path=run.engine_meta(precision), cuda_graphs=cuda_graphs, precision=precision
    )
    return runner

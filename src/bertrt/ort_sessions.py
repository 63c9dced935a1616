"""How this project opens ONNX Runtime sessions, in one place.

On the CPU provider ORT's ``SkipLayerNormFusion`` (residual Add +
LayerNormalization into one SkipLayerNormalization) is switched off: its fused
CPU kernel made int8 graphs 8-11 % slower and left fp32 unchanged
(measurements: docs/findings.md, "ONNX Runtime on the CPU"). The GPU providers
keep it. Everything that runs an ONNX model on the CPU here (the bench's
runner, ``bertrt evaluate``, export verification, calibration scoring and
timing) opens it through this module, so figures and deployment agree.

Intra-op threads spin while a run is in flight but stop when it returns
(``session.force_spinning_stop``). By default they keep spinning after each
run, waiting for the next; offline that costs nothing, but behind a server
those spinning threads took the cores from Triton, its Python-backend stub
and the client, and under that load Triton's dynamic batcher stalled about
1 request in 60 for ~540 ms. Stopping the spin removed the stalls and left
offline latency unchanged (docs/findings.md, "Serving on two cores").

ORT's CPU memory arena is off (``CPU_MEM_ARENA``). With it on, a session
keeps the largest memory any of its runs needed and never gives it back:
about 2.1 GB for MiniLM after one batch of 32 x 512 tokens, so the bench,
which holds every runner's session at once to interleave their rounds, peaked
at 10.5 GB. Off, a session holds 0.02-0.3 GB between runs. The price, in
paired rounds (``bench/arena_ab.py``) on a partly loaded machine: the INT8
models 1.1-1.18x slower at batch 32, batch 1 unchanged; still to be settled
on an idle machine (docs/findings.md, "Memory of the pipeline, stage by
stage").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertrt.errors import VerificationError
from bertrt.hardware import usable_cores

CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
# ORT's CPU memory arena: off, so that a session's memory between runs stays
# what its weights need (see the module docstring).
CPU_MEM_ARENA = False


def session_options(threads: int | None = None) -> Any:
    """All graph optimizations, ``threads`` intra-op threads (default: usable cores), inter-op 1;
    no spinning between runs; the CPU memory arena as ``CPU_MEM_ARENA`` says."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = CPU_MEM_ARENA
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def cpu_session(path: str | Path, threads: int | None = None, options: Any = None) -> Any:
    """An InferenceSession on the CPU provider with the project's CPU settings.

    A file ONNX Runtime cannot load is a :class:`VerificationError` naming it
    (exit 6), not a traceback.
    """
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            str(path),
            options if options is not None else session_options(threads),
            providers=["CPUExecutionProvider"],
            disabled_optimizers=CPU_DISABLED_OPTIMIZERS,
        )
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/... types
        raise VerificationError(f"{path}: ONNX Runtime cannot load it ({err})") from err

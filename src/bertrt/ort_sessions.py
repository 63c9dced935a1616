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

ORT's CPU memory arena stays on (``CPU_MEM_ARENA``): off, the deployment
model ran 1.17-1.18x slower at batch 32 (rounds 1.10-1.20) and model.int8.onnx
1.10x at 32 x 512, batch 1 unchanged (paired rounds, ``bench/arena_ab.py``,
load 2-5). On, a session keeps the largest memory any of its runs needed:
about 2.1 GB for MiniLM after a batch of 32 x 512 tokens, and the bench, which
holds every runner at once to interleave their rounds, peaked at 10.5 GB. So
a session gives its arena back on request (:func:`shrink_options`, a run
option), which the timing loop asks for between rounds, outside the timed
region (``Runner.release_memory``): the round's untimed warm-up call regrows
it (docs/findings.md, "Memory of the pipeline, stage by stage").

ORT's memory pattern is off (``CPU_MEM_PATTERN``). From a shape's second run
on, it allocates all of a run's tensors as one planned block, while the first
run's chunks still sit in the arena: the arena doubled, 1.07 to 2.11 GB for
the fp32 graph at 32 x 512, and every timing round repeats a shape. Off, the
same runs held 1.20 GB, and latency did not move (paired rounds, off/on
0.92-1.05 for model.onnx, model.int8.onnx and model.cpu.onnx at 1 x 128,
32 x 128 and 32 x 512, ``bench/arena_ab.py --modes nopattern``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertrt.errors import VerificationError
from bertrt.hardware import usable_cores

CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
# ORT's CPU memory arena: on, for speed; given back between timing rounds (see the
# module docstring).
CPU_MEM_ARENA = True
# ORT's per-shape memory pattern: off, since it doubles the arena (module docstring).
CPU_MEM_PATTERN = False


def shrink_options() -> Any:
    """Run options under which a run on the CPU gives the session's arena back when it ends."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def session_options(threads: int | None = None) -> Any:
    """All graph optimizations, ``threads`` intra-op threads (default: usable cores), inter-op 1;
    no spinning between runs; the CPU memory arena and memory pattern as ``CPU_MEM_ARENA`` and
    ``CPU_MEM_PATTERN`` say."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = CPU_MEM_ARENA
    options.enable_mem_pattern = CPU_MEM_PATTERN
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

"""How this project opens ONNX Runtime sessions, in one place.

On the CPU provider one of ORT's graph fusions is switched off:
``SkipLayerNormFusion`` (residual Add + LayerNormalization into one
SkipLayerNormalization). Measured with ORT 1.32 on the default run (2-core
AMD EPYC, seq 128, 2 threads, five interleaved rounds, p50 ms):

================  ==================  ==================
model             batch 1 fused/off   batch 32 fused/off
================  ==================  ==================
model.onnx fp32   8.52 / 8.57         283.2 / 280.5
model.int8.onnx   9.22 / 8.43         203.1 / 186.8
model.cpu.onnx    4.60 / 3.93         151.5 / 135.5
================  ==================  ==================

The fused CPU kernel costs ~3 ms per node at batch 32 against ~0.5 ms for
the Add and LayerNormalization it replaces, so int8 graphs, whose matmuls
are fast, lose 8-11 % to it; fp32 is unchanged. The GPU providers keep it.
Everything that runs an ONNX model on the CPU here (the bench's runner,
``bertrt evaluate``, export verification, calibration scoring and timing)
opens it through this module, so figures and deployment agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def session_options(threads: int | None = None) -> Any:
    """All graph optimizations, ``threads`` intra-op threads (default: all cores), inter-op 1."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    return options


def cpu_session(path: str | Path, threads: int | None = None, options: Any = None) -> Any:
    """An InferenceSession on the CPU provider with the project's CPU settings."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(path),
        options if options is not None else session_options(threads),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=CPU_DISABLED_OPTIMIZERS,
    )

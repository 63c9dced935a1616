"""``torch.compile`` of the merged fp32 model: what a PyTorch user tries before exporting.

The backend is the default, Inductor: it generates C++/OpenMP kernels for
the CPU (so it needs a C++ compiler, which :meth:`TorchCompileRuntime.unavailable`
checks) and fuses the elementwise work between the matmuls, which stay in
oneDNN/MKL. The other built-in backends only trace (``eager``,
``aot_eager``: nothing to gain at inference) or need a GPU (``cudagraphs``).

Shapes are compiled dynamic (``dynamic=True``): the bench, evaluate and
predict feed many (batch, seq) shapes, and compiling per shape would take
seconds to minutes each. Dynamo still specializes a dimension of size 1, so a
batch of one gets its own graph: :meth:`TorchCompileRunner._activate` compiles
both (:data:`WARMUP_SHAPES`) before the runner is handed out, so that no
compile ever lands in a timed region or a request. Every later shape reuses
one of the two graphs (tests/unit/test_torch_peers.py counts them).

Compilation runs at activation: 45-56 s for MiniLM on the 2-core Xeon at
load 11 (docs/runtimes.md), less when Inductor's on-disk cache
(``/tmp/torchinductor_$USER``) already holds the kernels for this model and
thread count.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.runners.base import Batch, Runner
from bertrt.runners.identity import Framework, Precision
from bertrt.runners.spec import CpuOffer, ModelSpec, RunnerOptions, Runtime
from bertrt.runners.torch_runner import TorchRunner

BACKEND = "inductor"
# (batch, seq) compiled at activation: batch 1 is specialized, every other batch shares a graph.
WARMUP_SHAPES = ((1, 16), (2, 16))


class TorchCompileRunner(TorchRunner):
    """The merged fp32 model under ``torch.compile`` (Inductor, dynamic shapes; CPU only)."""

    def __init__(
        self, model_dir: str | Path, threads: int | None = None, variant: str = "compile"
    ) -> None:
        super().__init__(model_dir, "fp32", "cpu", threads)
        self.variant = variant

    def _activate(self) -> None:
        import torch

        super()._activate()
        self.model = torch.compile(self.model, backend=BACKEND, dynamic=True)
        for batch, seq in WARMUP_SHAPES:
            ids = np.zeros((batch, seq), dtype=np.int64)
            mask = np.ones_like(ids)
            self._infer(
                self.prepare({"input_ids": ids, "attention_mask": mask, "token_type_ids": ids})
            )

    def prepare(self, batch: Batch) -> Any:
        # Dynamo guards on strides: a view such as rows[:1, :seq] (which numpy and torch both
        # call contiguous) would compile a third graph. A copy has the standard strides.
        return super().prepare({k: np.array(v, order="C", copy=True) for k, v in batch.items()})


@functools.cache
def cxx_compiler_missing() -> str | None:
    """Why Inductor cannot build its CPU kernels here (no C++ compiler), or None.

    Inductor's own search (``CXX``, else ``g++``), so the reason agrees with
    what compiling would find.
    """
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # InvalidCxxCompiler, or a broken CXX
        return (
            f"torch-compile: Inductor found no C++ compiler ({type(err).__name__}); install "
            "g++ or set CXX"
        )
    return None


class TorchCompileRuntime(Runtime):
    """``torch-compile``: the merged model compiled by Inductor when a runner activates."""

    framework = Framework.TORCH
    models = (
        ModelSpec(
            "torch-compile", Framework.TORCH, Precision.FP32, "compile", "train", lambda r: r.merged
        ),
    )
    triton = (
        "a torch.compile'd model has no Triton backend here: serve an ONNX model instead "
        "(onnx-fp32, onnx-opt, ov-fp32 or cpu)"
    )
    cpu_candidates = (CpuOffer("torch-compile"),)

    def unavailable(self) -> str | None:
        return cxx_compiler_missing()

    def runner_on(self, path: Path, model: ModelSpec, options: RunnerOptions) -> Runner:
        return TorchCompileRunner(path, options.threads, model.variant)


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process (its ``unique_graphs`` counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])

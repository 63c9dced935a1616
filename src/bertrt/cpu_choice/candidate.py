"""A CPU candidate: a registry model, the file it is made of, and how to make that file.

Calibrate builds most candidates in its staging directory (quantized graphs,
NNCF's IR); others are the run's files as they are (PyTorch modes, offered by
their runtime's ``cpu_candidates``). Either way the runner comes from the
model's runtime spec (:meth:`~bertrt.runners.spec.Runtime.runner_on`), so a
candidate is timed by the same runner that would serve it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bertrt.runners.base import Runner
from bertrt.runners.registry import runtime_of
from bertrt.runners.spec import ModelSpec, RunnerOptions


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate: its name (calibration.cpu_candidates, cpu.json), what it is made from,
    the registry model it is published as, the file its runtime loads, and how to build it."""

    name: str
    source: str  # what it is made from, for the report
    model: ModelSpec  # the registry model it is (or, for ONNX Runtime graphs, may become)
    path: Path  # the file the runtime loads
    # None: ``path`` exists already; a dict returned is what a graph rewrite did.
    build: Callable[[], object] | None = None
    static_shapes: bool = False  # OpenVINO: one compiled model per input shape
    # Only the fastest ONNX Runtime graph is published (as onnx/model.cpu.onnx).
    published_if_best_of_runtime: bool = False
    # A run file another stage wrote (a runtime's cpu_candidates): an input of calibrate.
    offered: bool = False

    @property
    def runtime(self) -> str:
        return str(self.model.framework)

    def runner(self, threads: int | None) -> Runner:
        """The candidate's runner, labelled by the candidate's name."""
        # Labelled by the candidate's name; a static-shape runner by its model's variant,
        # to which the runtime adds "-static" itself (openvino/qdq-static/cpu).
        variant = self.model.variant if self.static_shapes else self.name
        model = dataclasses.replace(self.model, variant=variant)
        options = RunnerOptions(threads, static_shapes=self.static_shapes)
        return runtime_of(self.model).runner_on(self.path, model, options)

"""What a runtime tells the rest of the pipeline about itself: one :class:`Runtime` per runtime.

Each runtime (PyTorch, ONNX Runtime, OpenVINO, TensorRT, and any added later)
defines a :class:`Runtime` beside its runner and is listed once in
:data:`bertrt.runners.registry.RUNTIMES`. Everything that needs to know about
runtimes — model names on the command line, the bench's list of runners, the
CPU deployment choice, serving and ``triton-repo`` — loops over those specs;
none branches on a runtime's name. A runtime says:

* which model names it offers (:class:`ModelSpec`: artifact, producing stage,
  precision, the label's variant);
* how to build a runner for one of them (:meth:`Runtime.runner`);
* why it cannot run on this machine (:meth:`Runtime.unavailable`);
* what the bench times (:meth:`Runtime.bench_runners`, by default one
  runner per model it offers);
* how Triton serves its models (:class:`TritonServing`), or why it cannot.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from bertrt.artifacts import RunDir
from bertrt.errors import BertrtError
from bertrt.runners.base import Runner
from bertrt.runners.identity import Device, Framework, Precision, Skip


@dataclass(frozen=True)
class ModelSpec:
    """One model name of the CLI: the run artifact it is, and what runs it."""

    name: str
    framework: Framework
    precision: Precision
    variant: str  # the middle of the runner's label (framework/variant/device)
    producer: str  # the stage that writes the artifact
    artifact_of: Callable[[RunDir], Path]  # what the manifest records (require() checks)
    loads: Callable[[RunDir], Path] | None = None  # the file the runtime opens, if not that
    device: Device = Device.CPU  # where its runner computes

    def artifact(self, run: RunDir) -> Path:
        return self.artifact_of(run)

    def model_file(self, run: RunDir) -> Path:
        return (self.loads or self.artifact_of)(run)


@dataclass(frozen=True)
class RunnerOptions:
    """How a consumer wants its runners: threads, and each runtime's own switches."""

    threads: int | None = None
    cuda_graphs: bool = False  # TensorRT: replay CUDA graphs
    static_shapes: bool = False  # OpenVINO: compile per input shape
    max_shape: tuple[int, int] = (32, 512)  # largest (batch, seq) a GPU profile must cover
    engine_precisions: tuple[str, ...] = ("fp16", "int8")  # TensorRT engines the bench times


@dataclass(frozen=True)
class TritonServing:
    """How Triton serves a runtime's models: the classifier model of a repository.

    ``files`` is the model file's format in the version directory: the
    repository writer reads inputs and outputs from it and names the files.
    """

    files: Literal["onnx", "openvino-ir-or-onnx", "tensorrt-plan"]
    backend: str = ""  # Triton backend (onnxruntime, openvino)
    platform: str = ""  # Triton platform (tensorrt_plan), where there is no backend
    # Why it may not run in a KIND_GPU instance group ("" = it may).
    gpu_refusal: str = ""
    parameters: tuple[tuple[str, str], ...] = ()  # the model config's parameters


@dataclass(frozen=True)
class CpuOffer:
    """A model the CPU deployment choice may time as it is, and in which shape mode."""

    model: str  # a registry name
    static_shapes: bool = False  # compiled per input shape (OpenVINO)

    @property
    def name(self) -> str:
        """The candidate's name (calibration.cpu_candidates, cpu.json)."""
        return self.model + ("-static" if self.static_shapes else "")


@dataclass(frozen=True)
class Benchable:
    """A runner the bench can build (cheaply, inactive) and the run artifacts it reads."""

    factory: Callable[[], Runner]
    inputs: tuple[Path, ...] = ()  # recorded as the bench stage's inputs

    @functools.cached_property
    def label(self) -> str:
        """The runner's own label: constructing a runner touches no framework."""
        return self.factory().label

    def build(self) -> Runner:
        return self.factory()


def artifact_problem(run: RunDir, model: ModelSpec, label: str) -> Skip | None:
    """A skip of the runner ``label`` when ``model``'s artifact is missing or stale (it names
    the file and the stage that rewrites it), or None when the artifact is current."""
    path = model.artifact(run)
    if not path.exists():
        hint = " on a GPU" if model.producer == "build-engine" else ""
        why = f"{path} missing: run `bertrt {model.producer} --run-dir {run.root}`{hint}"
        return Skip(label, why, path, model.producer)
    try:
        run.require("bench", [path], producer=model.producer)
    except BertrtError as err:
        return Skip(label, str(err), path, model.producer)
    return None


class Runtime(ABC):
    """One inference runtime, as the registry and every consumer see it."""

    framework: ClassVar[Framework]
    models: ClassVar[tuple[ModelSpec, ...]]
    # How Triton serves this runtime's models, or why it cannot (one line).
    triton: ClassVar[TritonServing | str]
    # Models calibrate's CPU deployment choice may time as they are (no build step),
    # where their files exist: the fastest within the accuracy budget becomes the
    # run's `cpu` model.
    cpu_candidates: ClassVar[tuple[CpuOffer, ...]] = ()

    def unavailable(self) -> str | None:
        """Why this runtime cannot run on this machine (a package or a GPU missing), or None."""
        return None

    def runner(self, model: ModelSpec, run: RunDir, options: RunnerOptions) -> Runner:
        """A (cheap, inactive) runner over ``model``'s file in ``run``."""
        return self.runner_on(model.model_file(run), model, options)

    @abstractmethod
    def runner_on(self, path: Path, model: ModelSpec, options: RunnerOptions) -> Runner:
        """A runner over ``path``, a file of ``model``'s kind that may not be in a run yet
        (calibrate times the models it has just built in its staging directory)."""

    def bench_runners(self, run: RunDir, options: RunnerOptions) -> Iterator[Benchable | Skip]:
        """What the bench times: by default one runner per model this runtime offers."""
        missing = self.unavailable()
        for model in self.models:
            cand = Benchable(
                functools.partial(self.runner, model, run, options), (model.artifact(run),)
            )
            if missing:
                yield Skip(cand.label, missing)
            elif problem := artifact_problem(run, model, cand.label):
                yield problem
            else:
                yield cand

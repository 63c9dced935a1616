"""Every model a user can name, and every runner this machine can run for one run directory.

The runtimes are listed once, in :data:`RUNTIMES`; each one's spec
(:class:`bertrt.runners.spec.Runtime`, defined beside its runner) says which
model names it offers and how to run them. Adding a runtime is its module
and one line here. Two questions are answered from that list:

* ``bertrt evaluate/predict --model NAME`` (and serving) ask for one model by
  name: :func:`runner_for_model` returns a runner over that artifact, after
  refusing a missing or stale one (exit 4) or a runtime this machine lacks
  (exit 3). The name ``cpu`` is not a model of its own but the one calibrate
  chose for this CPU (cpu.json; :func:`resolve`).
* The bench asks what can run here at all: :func:`discover` returns every
  runner each runtime offers (:class:`Benchable`) and, for each one that
  cannot run, a :class:`Skip` naming the command or package that would add
  it. A benchmark that silently drops a backend is worse than none.

A runner's label (``framework/variant/device``) is computed by the runner
itself, once; a :class:`Benchable` reads it from a (cheap, inactive) runner,
so the label a result is filed under and the label its rows carry cannot
disagree. Frameworks that may be absent (CUDA, onnxruntime-gpu, TensorRT,
OpenVINO) are imported lazily, inside the runners.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bertrt.artifacts import RunDir, read_json
from bertrt.errors import BertrtError, ConfigError, StaleArtifactError, UnavailableError
from bertrt.hardware import cpu_flags, cpu_name
from bertrt.runners.base import Runner
from bertrt.runners.identity import Skip
from bertrt.runners.openvino_runner import OpenVinoRuntime
from bertrt.runners.ort_runner import OnnxRuntime
from bertrt.runners.spec import Benchable, ModelSpec, RunnerOptions, Runtime
from bertrt.runners.torch_compile import TorchCompileRuntime
from bertrt.runners.torch_dynamic_int8 import TorchDynamicInt8Runtime
from bertrt.runners.torch_runner import TorchRuntime, reference_runner
from bertrt.runners.trt_runner import TensorRtRuntime, tensorrt_unavailable

__all__ = [
    "CPU_CHOICE",
    "MODELS",
    "MODEL_NAMES",
    "RUNTIMES",
    "Benchable",
    "Discovery",
    "ModelSpec",
    "chosen_cpu_model",
    "discover",
    "reference_runner",
    "resolve",
    "runner_for_file",
    "runner_for_model",
    "runtime_of",
    "selected",
    "tensorrt_unavailable",
]

log = logging.getLogger(__name__)

# Every runtime, in the order the bench lists them. One line per runtime.
RUNTIMES: tuple[Runtime, ...] = (
    TorchRuntime(),
    TorchDynamicInt8Runtime(),
    TorchCompileRuntime(),
    OnnxRuntime(),
    OpenVinoRuntime(),
    TensorRtRuntime(),
)

MODELS: dict[str, ModelSpec] = {m.name: m for rt in RUNTIMES for m in rt.models}
_RUNTIME_OF: dict[str, Runtime] = {m.name: rt for rt in RUNTIMES for m in rt.models}
# `cpu`: whichever of MODELS calibrate chose for this CPU (cpu.json).
CPU_CHOICE = "cpu"
MODEL_NAMES = (*MODELS, CPU_CHOICE)


def runtime_of(model: ModelSpec) -> Runtime:
    """The runtime that offers ``model`` (two runtimes may share a framework)."""
    return _RUNTIME_OF[model.name]


def unknown_model(model: str) -> ConfigError:
    return ConfigError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")


def runner_for_file(path: Path, like: str, threads: int | None = None) -> Runner:
    """A runner over ``path``, a file of the kind registry model ``like`` is, not in a run
    (e.g. an INT8 candidate calibrate is scoring)."""
    spec = MODELS[like]
    return runtime_of(spec).runner_on(path, spec, RunnerOptions(threads))


# -- one model by name ------------------------------------------------------------
def resolve(run: RunDir, model: str, stage: str = "evaluate") -> tuple[ModelSpec, bool]:
    """The model ``model`` names in ``run`` and whether cpu.json chose it with static shapes.

    ``cpu`` goes through cpu.json (checked current first); any other name is itself.
    """
    if model == CPU_CHOICE:
        run.require(stage, [run.cpu_choice], producer="calibrate")
        chosen = MODELS[chosen_cpu_model(run)]
        return chosen, bool(read_json(run.cpu_choice).get("static_shapes"))
    spec = MODELS.get(model)
    if spec is None:
        raise unknown_model(model)
    return spec, False


def runner_for_model(
    run: RunDir,
    model: str,
    threads: int | None = None,
    cuda_graphs: bool = False,
    stage: str = "evaluate",
    static_shapes: bool = True,
) -> Runner:
    """A runner over one of the run's models (CPU, except TensorRT engines).

    Refuses an unknown name (exit 2), a runtime this machine lacks (exit 3)
    and a missing or stale artifact (exit 4), in that order. ``static_shapes``
    False runs a `cpu` model chosen with static shapes on dynamic ones: for a
    caller that sees many shapes, each of which would compile on first use.
    """
    if model != CPU_CHOICE and model not in MODELS:
        raise unknown_model(model)
    if model != CPU_CHOICE and (missing := runtime_of(MODELS[model]).unavailable()):
        raise UnavailableError(f"--model {model}: {missing}")
    spec, static = resolve(run, model, stage)
    if missing := runtime_of(spec).unavailable():
        raise UnavailableError(f"--model {model} ({spec.name}, chosen by cpu.json): {missing}")
    run.require(stage, [spec.artifact(run)], producer=spec.producer)
    options = RunnerOptions(threads, cuda_graphs, static_shapes and static)
    return runtime_of(spec).runner(spec, run, options)


def chosen_cpu_model(run: RunDir) -> str:
    """The model name calibrate chose for this CPU (cpu.json), warning when this CPU differs.

    The fastest runtime depends on the ISA (AMX, AVX-512 BF16/VNNI): on a CPU
    with other flags the choice may be wrong, so say so and how to redo it.
    """
    document = read_json(run.cpu_choice)
    here, there = cpu_flags(), list(document.get("isa_flags", []))
    if here != there or cpu_name() != document.get("cpu"):
        log.warning(
            "%s: the cpu model (%s) was chosen on %s [%s]; this is %s [%s]: rerun "
            "`bertrt calibrate --run-dir %s` to choose for this CPU (the bench times every "
            "runner here meanwhile)",
            run.cpu_choice,
            document["model"],
            document.get("cpu"),
            " ".join(there),
            cpu_name(),
            " ".join(here),
            run.root,
        )
    model = str(document["model"])
    if model not in MODELS:
        raise StaleArtifactError(f"{run.cpu_choice}: unknown model {model!r}; rerun calibrate")
    return model


# -- everything that can run here -------------------------------------------------
@dataclass
class Discovery:
    runners: list[Benchable] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def skip(self, label: str, reason: str) -> None:
        self.skipped.append(Skip(label, reason))

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


def discover(
    run: RunDir,
    threads: int | None,
    patterns: list[str] | None = None,
    engine_precisions: list[str] | None = None,
    max_shape: tuple[int, int] = (32, 512),
    cuda_graphs: bool = False,
) -> Discovery:
    """Every runner the bench could time for ``run`` on this machine, filtered by ``patterns``."""
    found = Discovery()
    patterns = patterns or ["all"]
    options = RunnerOptions(
        threads, cuda_graphs, max_shape=max_shape,
        engine_precisions=tuple(engine_precisions or ("fp16", "int8")),
    )  # fmt: skip
    for runtime in RUNTIMES:
        for item in runtime.bench_runners(run, options):
            if isinstance(item, Skip):
                found.skipped.append(item)
            else:
                found.runners.append(item)
    cpu_label = _deployment_cpu_model(found, run, threads)
    if CPU_CHOICE in patterns and cpu_label:  # `cpu` selects the run's CPU model
        patterns = [*patterns, cpu_label]
    kept = [c for c in found.runners if selected(c.label, patterns)]
    for cand in found.runners:
        if cand not in kept:
            found.skip(cand.label, f"not selected by bench.backends={patterns}")
    found.runners = kept
    return found


def _deployment_cpu_model(found: Discovery, run: RunDir, threads: int | None) -> str | None:
    """The run's `cpu` model, added when its runner is not one of the above (e.g. static
    shapes); its label, or None where the run has none."""
    if not run.cpu_choice.is_file() or _stale(run, run.cpu_choice):
        return None
    try:
        cand = Benchable(
            functools.partial(runner_for_model, run, CPU_CHOICE, threads, stage="bench"),
            (run.cpu_choice,),
        )
        label = cand.label
    except BertrtError as err:
        found.skip(CPU_CHOICE, str(err))
        return None
    if label not in found.labels() and label not in {s.backend for s in found.skipped}:
        found.runners.append(cand)
    return label


def _stale(run: RunDir, path: Path) -> bool:
    try:
        run.require("bench", [path], producer="calibrate")
    except BertrtError:
        return True
    return False

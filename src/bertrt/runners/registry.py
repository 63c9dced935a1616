"""Every model a user can name, and every runner this machine can run for one run directory.

Two questions, one table (:data:`MODELS`):

* ``bertrt evaluate/predict --model NAME`` (and serving) ask for one model by
  name: :func:`runner_for_model` returns a runner over that artifact, after
  refusing a missing or stale one (exit 4) or a framework this machine lacks
  (exit 3).
* The bench asks what can run here at all: :func:`discover` returns every
  candidate runner (PyTorch CPU/CUDA, ONNX Runtime on each model and
  execution provider, TensorRT engines) and, for each one that cannot run, a
  one-line reason naming the command or package that would add it. A
  benchmark that silently drops a backend is worse than none.

A runner's label (``framework/variant/device``) is computed by the runner
itself, once; a :class:`Candidate` reads it from a (cheap, inactive) runner,
so the label a result is filed under and the label its rows carry cannot
disagree. Frameworks that may be absent (CUDA, onnxruntime-gpu, TensorRT) are
imported lazily, inside the runners.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, read_json
from bertrt.errors import BertrtError, ConfigError, StaleArtifactError, UnavailableError
from bertrt.hardware import cpu_flags, cpu_model, cuda_available
from bertrt.modeling import onnx_input_names
from bertrt.runners.base import Runner
from bertrt.runners.openvino_runner import OpenVinoRunner, openvino_missing
from bertrt.runners.ort_runner import OrtRunner
from bertrt.runners.torch_runner import TorchRunner
from bertrt.runners.trt_runner import TrtRunner
from bertrt.trt.availability import HOW_TO_GET, cuda_availability, tensorrt_availability

log = logging.getLogger(__name__)
TRT_HINT = "needs an NVIDIA GPU; see docs/tensorrt.md"


@dataclass(frozen=True)
class ModelSpec:
    """One model name of the CLI: which artifact, which framework, which stage writes it."""

    name: str
    framework: str  # torch, onnxruntime, openvino, tensorrt; "choice" for `cpu`
    variant: str  # ONNX variant (RunDir.onnx), engine precision, OpenVINO file; "merged"
    precision: str
    producer: str

    def artifact(self, run: RunDir) -> Path:
        """What the manifest records (and require() checks) for this model."""
        if self.framework == "torch":
            return run.merged
        if self.framework == "tensorrt":
            return run.engine(self.variant)
        if self.framework == "choice":
            return run.cpu_choice
        if self.variant == "nncf-int8":
            return run.openvino_dir
        return run.onnx(self.variant)

    def model_file(self, run: RunDir) -> Path:
        """The file the runtime loads."""
        if self.variant == "nncf-int8":
            return run.openvino_ir("int8")
        return self.artifact(run)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("merged", "torch", "merged", "fp32", "train"),
        ModelSpec("onnx-fp32", "onnxruntime", "fp32", "fp32", "export"),
        ModelSpec("onnx-opt", "onnxruntime", "opt", "fp32", "export"),
        ModelSpec("onnx-fp16", "onnxruntime", "fp16", "fp16", "export"),
        ModelSpec("onnx-int8", "onnxruntime", "int8", "int8", "calibrate"),
        ModelSpec("onnx-cpu", "onnxruntime", "cpu", "int8", "calibrate"),
        ModelSpec("ov-fp32", "openvino", "fp32", "fp32", "export"),
        ModelSpec("ov-int8", "openvino", "nncf-int8", "int8", "calibrate"),
        ModelSpec("ov-qdq", "openvino", "int8", "int8", "calibrate"),
        ModelSpec("cpu", "choice", "cpu", "", "calibrate"),
        ModelSpec("trt-fp16", "tensorrt", "fp16", "fp16", "build-engine"),
        ModelSpec("trt-int8", "tensorrt", "int8", "int8", "build-engine"),
    )
}
MODEL_NAMES = tuple(MODELS)

# ONNX models worth timing per ONNX Runtime provider. The fp16 model is meant
# for GPU providers: on the CPU provider ORT wraps it in Casts and it is
# slower than fp32 (docs/findings.md, "ONNX export"), so it is listed as skipped there.
CPU_ONNX_VARIANTS = ("fp32", "opt", "int8", "cpu")
CUDA_ONNX_VARIANTS = ("fp32", "opt", "fp16")
TRT_EP_ONNX_VARIANTS = ("fp16", "int8")


def tensorrt_unavailable() -> str | None:
    """Why TensorRT engines cannot run here (no TensorRT, or no CUDA GPU), or None."""
    for status in (tensorrt_availability(), cuda_availability()):
        if not status.ok:
            return str(status.reason)
    return None


# -- one model by name ------------------------------------------------------------
def runner_for_model(
    run: RunDir,
    model: str,
    threads: int | None = None,
    cuda_graphs: bool = False,
    stage: str = "evaluate",
    static_shapes: bool = True,
) -> Runner:
    """A runner over one of the run's models (CPU, except TensorRT engines).

    Refuses an unknown name (exit 2), a framework this machine lacks (exit 3)
    and a missing or stale artifact (exit 4), in that order. ``static_shapes``
    False runs a `cpu` model chosen with static shapes on dynamic ones: for a
    caller that sees many shapes, each of which would compile on first use.
    """
    spec = MODELS.get(model)
    if spec is None:
        raise ConfigError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")
    if spec.framework == "tensorrt":
        missing = tensorrt_unavailable()
        if missing:
            raise UnavailableError(
                f"--model {model} needs TensorRT and an NVIDIA GPU: {missing}; {HOW_TO_GET}"
            )
    path = spec.artifact(run)
    run.require(stage, [path], producer=spec.producer)
    if spec.framework == "choice":
        chosen = MODELS[chosen_cpu_model(run)]
        if chosen.framework == "openvino":
            static = static_shapes and bool(read_json(run.cpu_choice).get("static_shapes"))
            run.require(stage, [chosen.artifact(run)], producer=chosen.producer)
            return _ov_runner(chosen, run, threads, static)
        return runner_for_model(run, chosen.name, threads, cuda_graphs, stage)
    if spec.framework == "torch":
        return TorchRunner(path, "fp32", "cpu", threads)
    if spec.framework == "tensorrt":
        return _trt_runner(run, spec.variant, cuda_graphs)
    if spec.framework == "openvino":
        return _ov_runner(spec, run, threads)
    return OrtRunner(path, spec.precision, "cpu", threads, variant=spec.variant)


def _ov_runner(
    spec: ModelSpec, run: RunDir, threads: int | None, static_shapes: bool = False
) -> OpenVinoRunner:
    variant = {"nncf-int8": "int8", "int8": "qdq"}.get(spec.variant, spec.variant)
    variant += "-static" if static_shapes else ""
    return OpenVinoRunner(
        spec.model_file(run), spec.precision, threads, variant=variant, static_shapes=static_shapes
    )


def chosen_cpu_model(run: RunDir) -> str:
    """The model name calibrate chose for this CPU (cpu.json), warning when this CPU differs.

    The fastest runtime depends on the ISA (AMX, AVX-512 BF16/VNNI): on a CPU
    with other flags the choice may be wrong, so say so and how to redo it.
    """
    document = read_json(run.cpu_choice)
    here, there = cpu_flags(), list(document.get("isa_flags", []))
    if here != there or cpu_model() != document.get("cpu"):
        log.warning(
            "%s: the cpu model (%s) was chosen on %s [%s]; this is %s [%s]: rerun "
            "`bertrt calibrate --run-dir %s` to choose for this CPU (the bench times every "
            "candidate here meanwhile)",
            run.cpu_choice,
            document["model"],
            document.get("cpu"),
            " ".join(there),
            cpu_model(),
            " ".join(here),
            run.root,
        )
    model = str(document["model"])
    if model not in MODELS or MODELS[model].framework == "choice":
        raise StaleArtifactError(f"{run.cpu_choice}: unknown model {model!r}; rerun calibrate")
    return model


def _trt_runner(run: RunDir, precision: str, cuda_graphs: bool) -> TrtRunner:
    return TrtRunner(
        run.engine(precision), run.engine_meta(precision), cuda_graphs, precision=precision
    )


# -- everything that can run here -------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A runner that can be built (cheaply, inactive) and the run artifacts it reads."""

    factory: Callable[[], Runner]
    # The run's artifacts this runner reads (recorded as the bench stage's inputs).
    inputs: tuple[Path, ...] = ()

    @functools.cached_property
    def label(self) -> str:
        """The runner's own label: constructing a runner touches no framework."""
        return self.factory().label

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
    _openvino(found, run, threads)
    _cpu_model(found, run, threads)
    _tensorrt(found, run, engine_precisions or ["fp16", "int8"], cuda_graphs)
    kept = [c for c in found.runners if selected(c.label, patterns)]
    for cand in found.runners:
        if cand not in kept:
            found.skip(cand.label, f"not selected by bench.backends={patterns}")
    found.runners = kept
    return found


def _torch(found: Discovery, run: RunDir, threads: int | None) -> None:
    for precision, device in (("fp32", "cpu"), ("bf16", "cpu"), ("fp32", "cuda"), ("fp16", "cuda")):
        cand = Candidate(
            functools.partial(TorchRunner, run.merged, precision, device, threads), (run.merged,)
        )
        if device == "cuda" and not cuda_available():
            found.skip(cand.label, "CUDA not available (torch.cuda.is_available() is False)")
        else:
            found.runners.append(cand)


def _current(run: RunDir, path: Path, producer: str) -> str | None:
    """Why the run's artifact at ``path`` cannot be benched (missing, stale), or None."""
    if not path.exists():
        hint = " on a GPU" if producer == "build-engine" else ""
        return f"{path} missing: run `bertrt {producer} --run-dir {run.root}`{hint}"
    try:
        run.require("bench", [path], producer=producer)
    except BertrtError as err:
        return str(err)
    return None


def _onnxruntime(
    found: Discovery, run: RunDir, threads: int | None, max_shape: tuple[int, int]
) -> None:
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except ImportError as err:
        found.skip("onnxruntime", f"not installed ({err}); pip install onnxruntime")
        return
    producers = {s.variant: s.producer for s in MODELS.values() if s.framework == "onnxruntime"}
    precisions = {s.variant: s.precision for s in MODELS.values() if s.framework == "onnxruntime"}
    plans: list[tuple[str, str, str | None]] = [("cpu", v, None) for v in CPU_ONNX_VARIANTS]
    plans += [("cuda", v, "CUDAExecutionProvider") for v in CUDA_ONNX_VARIANTS]
    plans += [("tensorrt", v, "TensorrtExecutionProvider") for v in TRT_EP_ONNX_VARIANTS]
    for provider, variant, ep in plans:
        path = run.onnx(variant)
        cand = Candidate(
            functools.partial(
                _ort_runner, run, path, precisions[variant], provider, threads, variant, max_shape
            ),
            (path,),
        )
        if ep is not None and ep not in providers:
            found.skip(cand.label, f"{ep} not in this onnxruntime build; install onnxruntime-gpu")
        elif ep is not None and not cuda_available():
            found.skip(cand.label, "CUDA not available")
        elif reason := _current(run, path, producers[variant]):
            found.skip(cand.label, reason)
        else:
            found.runners.append(cand)
    found.skip(
        "onnxruntime/fp16/cpu",
        "fp16 ONNX is for GPU providers; on the CPU provider ORT inserts Casts and it is "
        "slower than fp32",
    )


def _openvino(found: Discovery, run: RunDir, threads: int | None) -> None:
    """OpenVINO on the fp32 ONNX (out of the box), the NNCF INT8 IR and the Q/DQ ONNX."""
    missing = openvino_missing()
    for spec in (s for s in MODELS.values() if s.framework == "openvino"):
        cand = Candidate(functools.partial(_ov_runner, spec, run, threads), (spec.artifact(run),))
        if missing:
            found.skip(cand.label, missing)
        elif reason := _current(run, spec.artifact(run), spec.producer):
            found.skip(cand.label, reason)
        else:
            found.runners.append(cand)


def _cpu_model(found: Discovery, run: RunDir, threads: int | None) -> None:
    """The run's `cpu` model, when its runner is not one of the above (e.g. static shapes)."""
    if not run.cpu_choice.is_file() or _current(run, run.cpu_choice, "calibrate"):
        return
    try:
        cand = Candidate(
            functools.partial(runner_for_model, run, "cpu", threads, stage="bench"),
            (run.cpu_choice,),
        )
        label = cand.label
    except BertrtError as err:
        found.skip("cpu", str(err))
        return
    if label not in found.labels() and label not in {s["backend"] for s in found.skipped}:
        found.runners.append(cand)


def _ort_runner(
    run: RunDir,
    path: Path,
    precision: str,
    provider: str,
    threads: int | None,
    variant: str,
    max_shape: tuple[int, int],
) -> OrtRunner:
    """An ONNX Runtime runner; on the TensorRT provider with a profile over the model's inputs.

    The provider options are computed when the runner is activated: they read
    the graph's inputs, and a runner is also built just for its label.
    """
    options = None
    if provider == "tensorrt":
        options = functools.partial(trt_ep_options, run, variant, path, *max_shape)
    return OrtRunner(path, precision, provider, threads, variant, options)


def trt_ep_options(
    run: RunDir, variant: str, path: Path, max_batch: int, max_seq: int
) -> dict[str, Any]:
    """TensorRT execution provider settings: one dynamic profile covering every shape the
    bench feeds (so no engine rebuild per batch width), precision flags, an engine cache.

    The profile names the inputs of the ONNX graph at ``path``, the model's
    own: a model without token_type_ids (DistilBERT, RoBERTa) has no entry for one.
    """
    input_names = onnx_input_names(path)

    def dims(batch: int, seq: int) -> str:
        return ",".join(f"{name}:{batch}x{seq}" for name in input_names)

    return {
        "trt_fp16_enable": variant == "fp16",
        "trt_int8_enable": variant == "int8",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(run.root / ".cache" / "ort-trt"),
        "trt_profile_min_shapes": dims(1, 1),
        "trt_profile_opt_shapes": dims(max_batch, min(128, max_seq)),
        "trt_profile_max_shapes": dims(max_batch, max_seq),
    }


def _tensorrt(found: Discovery, run: RunDir, precisions: list[str], cuda_graphs: bool) -> None:
    missing = tensorrt_unavailable()
    for precision in precisions:
        cand = Candidate(
            functools.partial(_trt_runner, run, precision, cuda_graphs),
            (run.engine(precision), run.engine_meta(precision)),
        )
        if missing:
            found.skip(cand.label, f"tensorrt: {missing} ({TRT_HINT})")
        elif reason := _current(run, run.engine(precision), "build-engine"):
            found.skip(cand.label, reason)
        else:
            found.runners.append(cand)

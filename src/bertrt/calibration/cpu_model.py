"""The CPU deployment model: the fastest CPU graph and runtime within the accuracy budget.

The Q/DQ model TensorRT wants (signed int8 activations) is slow on ONNX
Runtime's CPU provider: only half its MatMuls map to int8 kernels
(docs/findings.md, "INT8 with ONNX Runtime's quantizer"). So the CPU gets its
own model, chosen among:

* ``dynamic-int8-opt``: dynamic int8 (weights int8, activations quantized at
  run time) on the fused graph (model.opt.onnx);
* ``dynamic-int8``: the same on the plain fp32 graph;
* ``static-u8s8``: calibrated static Q/DQ with unsigned activations (U8S8, the
  form ORT's CPU kernels fuse), MatMul/Gemm inputs only;
* ``static-u8s8-folded``: the same, optimized offline by ORT with the bias
  Adds and attention scale folded into its int8 matmuls (:mod:`cpu_graph`);
* ``fp32-opt``: the fused fp32 graph, the fallback that is always in budget;

and, run by OpenVINO's CPU plugin (bf16 where the CPU has it natively, which
on Intel CPUs with AMX beats every ONNX Runtime graph; docs/findings.md,
"Other runtimes"):

* ``openvino-fp32``: the exported model.onnx as it is;
* ``openvino-nncf-int8``: NNCF's int8 IR, calibrated on the same rows;
* ``openvino-qdq``: the Q/DQ model.int8.onnx calibrated for TensorRT;
* ``openvino-qdq-static``: the same, compiled per input shape (static shapes:
  1.38x OpenVINO's defaults at batch 32 on the Xeon with AMX, docs/findings.md).

Each is scored on validation accuracy and timed at seq = max_length on this
machine; the fastest within the budget wins (score: geometric mean of
batch-1 latency and batch-32 per-row latency). Which one that is depends on
the CPU, so the choice is recorded with the CPU's name and ISA flags.

A run without labels (`bertrt import` with an unlabelled file) has no
accuracy to budget: its candidates qualify by argmax agreement with fp32 on
the validation rows instead (:class:`ChoiceRule`); cpu.json says which rule chose.
"""

from __future__ import annotations

import functools
import logging
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bertrt.calibration.cpu_graph import FoldReport, optimize_for_ort_cpu
from bertrt.calibration.openvino_int8 import quantize_nncf
from bertrt.calibration.quantize import quantize_qdq, quiet_ort
from bertrt.calibration.sweep import accuracy_of
from bertrt.errors import ConfigError
from bertrt.hardware import cpu_flags, cpu_model, usable_cores
from bertrt.modeling import Batch
from bertrt.runners.base import Runner
from bertrt.runners.openvino_runner import OpenVinoRunner, openvino_missing
from bertrt.runners.ort_runner import OrtRunner
from bertrt.runners.predict import TokenizedRows, predict_logits

log = logging.getLogger(__name__)


@dataclass
class CandidateSpec:
    """How to make one candidate and which runtime runs it."""

    name: str
    source: str  # what it is made from, for the report
    path: Path  # the file the runtime loads
    build: Callable[[], object] | None  # None: ``path`` exists already
    runtime: str = "onnxruntime"  # or "openvino"
    static_shapes: bool = False  # OpenVINO: one compiled model per input shape

    def runner(self, threads: int | None) -> Runner:
        if self.runtime == "openvino":
            return OpenVinoRunner(
                self.path, threads=threads, variant=self.name, static_shapes=self.static_shapes
            )
        return OrtRunner(self.path, threads=threads, variant=self.name)


@dataclass(frozen=True)
class ChoiceRule:
    """Which candidates qualify: within the accuracy budget, or (no labels) agreeing with fp32."""

    name: Literal["accuracy", "agreement"]
    budget: float = 0.5  # accuracy points: drop + one standard error (rule "accuracy")
    min_agreement: float = 0.99  # argmax agreement with fp32 (rule "agreement")

    def admits(self, cand: CpuCandidate) -> bool:
        if self.name == "agreement":
            return cand.agreement >= self.min_agreement
        assert cand.drop is not None and cand.drop_se is not None, "scored against labels"
        return cand.drop + cand.drop_se <= self.budget

    def to_dict(self) -> dict[str, Any]:
        if self.name == "agreement":
            return {
                "name": "agreement",
                "min_agreement": self.min_agreement,
                "why": "the run's data has no labels: candidates qualify by argmax agreement "
                "with fp32 on the validation rows (calibration.min_agreement)",
            }
        return {
            "name": "accuracy",
            "budget_points": self.budget,
            "why": "validation accuracy drop vs fp32, plus one standard error, within "
            "accuracy_budget",
        }


@dataclass
class CpuCandidate:
    name: str
    source: str
    runtime: str = "onnxruntime"
    val_accuracy: float | None = 0.0  # None: the validation rows have no labels
    drop: float | None = 0.0
    drop_se: float | None = 0.0
    agreement: float = 0.0  # argmax agreement with fp32 on the validation rows (0..1)
    latency_ms_b1: float = 0.0
    latency_ms_b32: float = 0.0
    score_ms: float = 0.0
    within_budget: bool = False
    build_s: float = 0.0
    graph: dict[str, int] | None = None  # what the folds did (static-u8s8-folded)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_dynamic_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 of MatMul/Gemm (and the fused Attention in the optimized graph)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_ort():
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=False,
            weight_type=QuantType.QInt8,
            # Needed on the fused graph, whose contrib ops have no type info
            # (docs/findings.md, "INT8 with ONNX Runtime's quantizer").
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def measure_latency(runner: Runner, batch: Batch, iterations: int, warmup: int = 2) -> float:
    """Median ms of one inference on ``batch``."""
    with runner:
        prepared = runner.prepare(batch)
        for _ in range(warmup):
            runner.infer(prepared)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            runner.infer(prepared)
            times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


CPU_CANDIDATES = (
    "dynamic-int8-opt",
    "dynamic-int8",
    "static-u8s8",
    "static-u8s8-folded",
    "fp32-opt",
    "openvino-fp32",
    "openvino-nncf-int8",
    "openvino-qdq",
    "openvino-qdq-static",
)
OPENVINO_CANDIDATES = {c for c in CPU_CANDIDATES if c.startswith("openvino-")}


@dataclass(frozen=True)
class CandidateInputs:
    """The files and rows the candidates are made from."""

    fp32: Path  # model.onnx
    opt: Path  # model.opt.onnx
    prepared: Path  # model.onnx after ORT's quantization pre-processing
    qdq: Path  # the Q/DQ int8 model chosen for TensorRT (staged)
    calibration: Sequence[Batch]  # training batches, for NNCF
    nncf_ir: Path  # where the NNCF IR is written (published as openvino/model.int8.xml)


def build_candidates(
    names: Sequence[str],
    inputs: CandidateInputs,
    u8_ranges: Callable[[], Any],
    workdir: Path,
) -> list[CandidateSpec]:
    """The named candidates; ``u8_ranges`` calibrates lazily. OpenVINO ones are left out,
    with a warning, where OpenVINO is not installed."""
    unknown = sorted(set(names) - set(CPU_CANDIDATES))
    if unknown:
        raise ConfigError(
            f"calibration.cpu_candidates: unknown {unknown}; choose from {list(CPU_CANDIDATES)}"
        )
    missing = openvino_missing()
    if missing and OPENVINO_CANDIDATES & set(names):
        log.warning("calibrate: OpenVINO candidates skipped: %s", missing)
        names = [n for n in names if n not in OPENVINO_CANDIDATES]
    fp32, opt = inputs.fp32, inputs.opt

    def static_u8s8(path: Path) -> None:
        quantize_qdq(inputs.prepared, u8_ranges(), path, activation_signed=False)

    def folded(path: Path) -> FoldReport:
        plain = workdir / "cpu-static-u8s8.onnx"
        if not plain.is_file():  # not among the candidates: build it here
            static_u8s8(plain)
        return optimize_for_ort_cpu(plain, path)

    builders: dict[str, tuple[str, Callable[[Path], object]]] = {
        "dynamic-int8-opt": ("model.opt.onnx", lambda p: quantize_dynamic_int8(opt, p)),
        "dynamic-int8": ("model.onnx", lambda p: quantize_dynamic_int8(fp32, p)),
        "static-u8s8": ("model.onnx", static_u8s8),
        "static-u8s8-folded": ("model.onnx", folded),
        "fp32-opt": ("model.opt.onnx", lambda p: shutil.copyfile(opt, p)),
    }
    specs = []
    for name in names:
        if name == "openvino-fp32":
            specs.append(CandidateSpec(name, "model.onnx", fp32, None, "openvino"))
        elif name == "openvino-qdq-static":
            specs.append(CandidateSpec(name, "model.int8.onnx", inputs.qdq, None, "openvino", True))
        elif name == "openvino-qdq":
            specs.append(CandidateSpec(name, "model.int8.onnx", inputs.qdq, None, "openvino"))
        elif name == "openvino-nncf-int8":
            build_ir = functools.partial(quantize_nncf, fp32, inputs.calibration, inputs.nncf_ir)
            specs.append(CandidateSpec(name, "model.onnx", inputs.nncf_ir, build_ir, "openvino"))
        else:
            source, build = builders[name]
            path = workdir / f"cpu-{name}.onnx"
            specs.append(CandidateSpec(name, source, path, functools.partial(build, path)))
    return specs


def choose_cpu_model(
    candidates: Sequence[CandidateSpec],
    data: TokenizedRows,
    fp32_logits: np.ndarray,
    budget: float | ChoiceRule,
    timing_batches: Sequence[Batch],
    rounds: int = 3,
    threads: int | None = None,
) -> list[CpuCandidate]:
    """Build, score and time each candidate (in ``candidates``' order); see :func:`pick`.

    A candidate is within budget when its validation drop plus one standard
    error of that drop (paired with fp32, row by row) stays within ``budget``:
    the fastest model must not win on a drop that is inside the noise of the
    validation set (on 4,552 rows one standard error is ~0.1-0.3 point).

    Timing goes round-robin over the candidates, ``rounds`` times, keeping each
    one's best median: a burst of load from other processes then slows one
    round, not one candidate.
    """
    rule = budget if isinstance(budget, ChoiceRule) else ChoiceRule("accuracy", budget)
    results = [(_build_and_score(spec, data, fp32_logits, rule), spec) for spec in candidates]
    _time(results, timing_batches, rounds, threads)
    return [cand for cand, _ in results]


def pick(candidates: Sequence[CpuCandidate], runtime: str | None = None) -> CpuCandidate:
    """The fastest candidate within budget (of ``runtime``, if given); if none is, the most
    accurate, so a run always has a CPU model."""
    pool = [c for c in candidates if runtime is None or c.runtime == runtime]
    if not pool:
        raise ConfigError(f"calibrate: no CPU candidate runs on {runtime}")
    eligible = [c for c in pool if c.within_budget]
    if eligible:
        return min(eligible, key=lambda c: (c.score_ms, -_quality(c)))
    return max(pool, key=_quality)


def _quality(cand: CpuCandidate) -> float:
    """Validation accuracy where there are labels, else agreement with fp32 (percent)."""
    return cand.val_accuracy if cand.val_accuracy is not None else 100.0 * cand.agreement


def _build_and_score(
    spec: CandidateSpec, data: TokenizedRows, fp32_logits: np.ndarray, rule: ChoiceRule
) -> CpuCandidate:
    """Build one candidate and score it against fp32 on the validation rows, row by row.

    ``data.labels`` None (no labels): agreement with fp32 only.
    """
    start = time.perf_counter()
    built = spec.build() if spec.build is not None else None
    cand = CpuCandidate(
        spec.name, spec.source, spec.runtime, build_s=round(time.perf_counter() - start, 2)
    )
    if isinstance(built, FoldReport):
        cand.graph = asdict(built)
    with spec.runner(None) as runner:
        out = predict_logits(runner, data)
    cand.agreement = round(float(np.mean(out.argmax(axis=1) == fp32_logits.argmax(axis=1))), 5)
    if data.labels is None:
        cand.val_accuracy = cand.drop = cand.drop_se = None
    else:
        cand.val_accuracy = accuracy_of(out, data)
        fp32_correct = (fp32_logits.argmax(axis=1) == data.labels).astype(np.float64)
        diff = fp32_correct - (out.argmax(axis=1) == data.labels)
        cand.drop = round(100.0 * float(diff.mean()), 3)
        cand.drop_se = round(100.0 * float(diff.std(ddof=1) / np.sqrt(len(diff))), 3)
    cand.within_budget = rule.admits(cand)
    return cand


def _time(
    results: list[tuple[CpuCandidate, CandidateSpec]],
    timing_batches: Sequence[Batch],
    rounds: int,
    threads: int | None,
) -> None:
    """Batch-1 and batch-32 latency of each candidate: best of ``rounds`` round-robin medians."""
    b1, b32 = timing_batches
    best_b1 = {c.name: float("inf") for c, _ in results}
    best_b32 = dict(best_b1)
    for _ in range(rounds):
        for cand, spec in results:
            b1_ms = measure_latency(spec.runner(threads), b1, 10)
            best_b1[cand.name] = min(best_b1[cand.name], b1_ms)
            b32_ms = measure_latency(spec.runner(threads), b32, 1, 1)
            best_b32[cand.name] = min(best_b32[cand.name], b32_ms)
    for cand, _ in results:
        cand.latency_ms_b1 = round(best_b1[cand.name], 3)
        cand.latency_ms_b32 = round(best_b32[cand.name], 3)
        cand.score_ms = round(float(np.sqrt(cand.latency_ms_b1 * cand.latency_ms_b32 / 32)), 3)
        log.info(
            "cpu candidate %s: val %s, agreement with fp32 %.4f, b1 %.1f ms, b32 %.1f ms",
            cand.name,
            "no labels" if cand.val_accuracy is None else f"{cand.val_accuracy:.2f}%",
            cand.agreement,
            cand.latency_ms_b1,
            cand.latency_ms_b32,
        )


# The model name (bertrt.runners.registry) each candidate is published as.
REGISTRY_NAMES = {
    "openvino-fp32": "ov-fp32",
    "openvino-nncf-int8": "ov-int8",
    "openvino-qdq": "ov-qdq",
    "openvino-qdq-static": "ov-qdq",
}
# Runner options the `cpu` model is built with (bertrt.runners.registry reads them).
STATIC_SHAPES = {"openvino-qdq-static"}


def cpu_choice_document(
    candidates: Sequence[CpuCandidate], threads: int | None, rule: ChoiceRule | None = None
) -> dict[str, Any]:
    """cpu.json: the run's `cpu` model, the rule that chose it, and the CPU and ISA.

    The fastest runtime differs between CPUs (OpenVINO's bf16 kernels win on
    AMX, ONNX Runtime's int8 graph on an AVX-512 EPYC), so a run moved to a
    CPU with other flags is warned before it serves or benches.
    """
    best = pick(candidates)
    best_ort = pick(candidates, runtime="onnxruntime")
    published = {best_ort.name: "onnx-cpu", **REGISTRY_NAMES}
    return {
        "model": published[best.name],
        "candidate": best.name,
        "runtime": best.runtime,
        "static_shapes": best.name in STATIC_SHAPES,
        **({"rule": rule.to_dict()} if rule is not None else {}),
        "cpu": cpu_model(),
        "isa_flags": cpu_flags(),
        "threads": threads or usable_cores(),
        "candidates": {
            c.name: {
                "model": published.get(c.name),
                "runtime": c.runtime,
                "within_budget": c.within_budget,
                "val_accuracy": c.val_accuracy,
                "agreement": c.agreement,
                "latency_ms_b1": c.latency_ms_b1,
                "latency_ms_b32": c.latency_ms_b32,
            }
            for c in candidates
        },
    }

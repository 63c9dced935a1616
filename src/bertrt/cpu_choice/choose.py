"""Score every candidate on the validation rows, time them all in interleaved rounds, pick one.

A candidate is within budget when its validation drop plus one standard
error of that drop (paired with fp32, row by row) stays within the budget:
the fastest model must not win on a drop inside the noise of the validation
set (on 4,552 rows one standard error is ~0.1-0.3 point). A run without
labels qualifies candidates by argmax agreement with fp32 instead
(:class:`ChoiceRule`).

Timing uses the bench's primitives (:mod:`bertrt.runners.timing`): every
candidate is activated once, warmed up on batch 1 and batch 32 at
seq = max_length, and round *r* of every (candidate, shape) runs before
round *r + 1* of any. Each candidate's score is the geometric mean of its
batch-1 latency and batch-32 per-row latency (medians over rounds); the
winner's margin over each other candidate is the median of per-round ratios,
taken within rounds where both saw the same machine, with their range.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from bertrt.cpu_choice.candidate import CandidateSpec
from bertrt.errors import ConfigError
from bertrt.modeling import Batch
from bertrt.runners.predict import TokenizedRows, predict_logits
from bertrt.runners.timing import ShapeTimer, TimingPlan, interleave

log = logging.getLogger(__name__)

# Batch 1: enough iterations per round for a median; batch 32: a few, it is slow.
TIMING = {1: TimingPlan(warmup=3, iterations=10, repeats=5), 32: TimingPlan(2, 2, 5)}


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
    """One candidate's figures, as calibration/report.json and cpu.json list them."""

    name: str
    source: str
    runtime: str = "onnxruntime"
    model: str = "onnx-cpu"  # the registry model it is published as (see CandidateSpec)
    static_shapes: bool = False
    published_if_best_of_runtime: bool = True
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
    # This candidate's score over the chosen one's, per round: median and range.
    paired_ratio_vs_chosen: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_cpu_model(
    candidates: Sequence[CandidateSpec],
    data: TokenizedRows,
    fp32_logits: np.ndarray,
    rule: ChoiceRule,
    timing_batches: Sequence[Batch],
    threads: int | None = None,
) -> list[CpuCandidate]:
    """Build, score and time each candidate (in ``candidates``' order); see :func:`pick`."""
    scored = [(score(spec, data, fp32_logits, rule), spec) for spec in candidates]
    rounds = time_all(scored, timing_batches, threads)
    chosen = pick([cand for cand, _ in scored])
    for cand, _ in scored:
        cand.paired_ratio_vs_chosen = _paired(rounds[cand.name], rounds[chosen.name])
    return [cand for cand, _ in scored]


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


def score(
    spec: CandidateSpec, data: TokenizedRows, fp32_logits: np.ndarray, rule: ChoiceRule
) -> CpuCandidate:
    """Build one candidate and score it against fp32 on the validation rows, row by row.

    ``data.labels`` None (no labels): agreement with fp32 only.
    """
    start = time.perf_counter()
    built = spec.build() if spec.build is not None else None
    cand = CpuCandidate(
        spec.name,
        spec.source,
        spec.runtime,
        spec.model.name,
        spec.static_shapes,
        spec.published_if_best_of_runtime,
        build_s=round(time.perf_counter() - start, 2),
    )
    if isinstance(built, dict):
        cand.graph = built  # what a graph rewrite did (static-u8s8-folded's folds)
    with spec.runner(None) as runner:
        out = predict_logits(runner, data)
    cand.agreement = round(float(np.mean(out.argmax(axis=1) == fp32_logits.argmax(axis=1))), 5)
    if data.labels is None:
        cand.val_accuracy = cand.drop = cand.drop_se = None
    else:
        cand.val_accuracy = 100.0 * data.accuracy(out)
        fp32_correct = (fp32_logits.argmax(axis=1) == data.labels).astype(np.float64)
        diff = fp32_correct - (out.argmax(axis=1) == data.labels)
        cand.drop = round(100.0 * float(diff.mean()), 3)
        cand.drop_se = round(100.0 * float(diff.std(ddof=1) / np.sqrt(len(diff))), 3)
    cand.within_budget = rule.admits(cand)
    return cand


def time_all(
    scored: list[tuple[CpuCandidate, CandidateSpec]],
    timing_batches: Sequence[Batch],
    threads: int | None,
) -> dict[str, list[float]]:
    """Batch-1 and batch-32 latency of every candidate, interleaved; each one's score per round.

    All candidates are active at once (ONNX Runtime sessions keep no memory
    arena, so this holds little more than the models).
    """
    with contextlib.ExitStack() as stack:
        timers: dict[str, list[ShapeTimer]] = {}
        for cand, spec in scored:
            runner = stack.enter_context(spec.runner(threads))
            timers[cand.name] = [
                ShapeTimer(runner, batch, TIMING[_rows(batch)]) for batch in timing_batches
            ]
        repeats = max(plan.repeats for plan in TIMING.values())
        interleave([t for pair in timers.values() for t in pair], repeats)
    rounds: dict[str, list[float]] = {}
    for cand, _ in scored:
        b1, b32 = (timer.result() for timer in timers[cand.name])
        cand.latency_ms_b1 = round(b1.p50_ms, 3)
        cand.latency_ms_b32 = round(b32.p50_ms, 3)
        cand.score_ms = round(_score(cand.latency_ms_b1, cand.latency_ms_b32), 3)
        rounds[cand.name] = [
            _score(a, b) for a, b in zip(b1.round_p50_ms, b32.round_p50_ms, strict=True)
        ]
        log.info(
            "cpu candidate %s: val %s, agreement with fp32 %.4f, b1 %.1f ms, b32 %.1f ms",
            cand.name,
            "no labels" if cand.val_accuracy is None else f"{cand.val_accuracy:.2f}%",
            cand.agreement,
            cand.latency_ms_b1,
            cand.latency_ms_b32,
        )
    return rounds


def _rows(batch: Batch) -> int:
    return int(next(iter(batch.values())).shape[0])


def _score(b1_ms: float, b32_ms: float) -> float:
    """Geometric mean of batch-1 latency and batch-32 latency per row."""
    return float(np.sqrt(b1_ms * b32_ms / 32))


def _paired(rounds: list[float], chosen: list[float]) -> list[float]:
    """[median, min, max] of this candidate's per-round score over the chosen one's."""
    ratios = [a / b for a, b in zip(rounds, chosen, strict=True)]
    return [round(statistics.median(ratios), 3), round(min(ratios), 3), round(max(ratios), 3)]

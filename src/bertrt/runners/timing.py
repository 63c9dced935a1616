"""Latency of one runner on one input shape, measured the way a GPU or CPU engineer would.

The bench and calibrate's CPU deployment choice (:mod:`bertrt.cpu_choice`) both
time runners through this module, so a choice and the figures that justify
it are taken the same way.

* Inputs are built once, outside the timed region, identical for every
  runner (:func:`synthetic_batch`, seeded), and converted to the runner's
  native form (``prepare``: CUDA tensors, OrtValues) before timing.
* Warm-up iterations run first and are discarded (allocator, autotuning,
  lazy kernel selection, CPU caches).
* On CUDA each iteration is timed with CUDA events recorded around the
  enqueue on the runner's stream and waited for; on the CPU with
  ``time.perf_counter`` around ``infer`` + ``synchronize``.
* The timed iterations are split into ``repeats`` rounds; every figure
  reported is the median over rounds of that round's statistic, and the
  rounds' min/max of p50 is the spread a second run should land in.
* On a shared machine the speed drifts over minutes (other tenants, clock
  changes), far more than it varies within one round. So the stage keeps
  one :class:`ShapeTimer` per (runner, shape) and runs round *r* of every
  one of them before round *r + 1* of any (:func:`interleave`): the spread
  then covers the drift over the whole run, and a ratio between two
  backends can be taken within each round, where both saw the same machine.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from bertrt.runners.base import Batch, Runner


@dataclass(frozen=True)
class TimingPlan:
    warmup: int
    iterations: int
    repeats: int
    # Each round runs at least this long (more iterations for fast shapes, so
    # that p99 of a 7 ms batch rests on more than 30 samples).
    min_round_s: float = 0.0
    max_iterations: int = 1000
    # Untimed calls at the start of every round: the previous round may have
    # been another runner's, whose thread pool is still spinning down and
    # whose data displaced this one's from the caches.
    round_warmup: int = 1


@dataclass
class LatencyResult:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    samples_per_s: float
    p50_spread_ms: tuple[float, float]
    samples_per_s_spread: tuple[float, float]
    iterations: int
    repeats: int
    timer: str
    # p50 of each round, in the order the rounds ran (for paired ratios).
    round_p50_ms: list[float]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["p50_spread_ms"] = list(self.p50_spread_ms)
        out["samples_per_s_spread"] = list(self.samples_per_s_spread)
        return out


def synthetic_batch(batch: int, seq: int, vocab_size: int, seed: int = 0) -> Batch:
    """Random token ids of exactly (batch, seq), [CLS] ... [SEP], full attention mask.

    Latency depends on the shape, not on which tokens are present, so random
    ids are fine here; accuracy and end-to-end figures use real test rows.
    Every input any architecture takes is there (each runner feeds its
    model's own). Ids stay inside ``vocab_size`` and above the special tokens
    of every supported vocabulary (RoBERTa's padding id is 1), so no random
    id reads as padding.
    """
    rng = np.random.default_rng(seed + 1000 * batch + seq)
    low = 1000 if vocab_size > 1000 else vocab_size // 2
    ids = rng.integers(low, max(vocab_size, low + 1), size=(batch, seq), dtype=np.int64)
    if vocab_size > 102:
        ids[:, 0] = 101  # [CLS] in BERT uncased vocabularies
        ids[:, -1] = 102  # [SEP]
    return {
        "input_ids": ids,
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _cpu_timer(runner: Runner, prepared: Any) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        runner.infer(prepared)
        runner.synchronize()
        return (time.perf_counter() - start) * 1e3

    return once


def _cuda_timer(runner: Runner, prepared: Any) -> Callable[[], float]:
    import torch

    stream = runner.timing_stream() or torch.cuda.current_stream()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def once() -> float:
        runner.synchronize()
        start.record(stream)
        runner.infer(prepared)
        end.record(stream)
        end.synchronize()
        # Runners that compute on another stream (or host-synchronous ones such
        # as ORT's CUDA provider) are finished by now; this is a no-op then.
        runner.synchronize()
        return float(start.elapsed_time(end))

    return once


def timer_for(runner: Runner, prepared: Any) -> tuple[str, Callable[[], float]]:
    if runner.device == "cuda":
        return "cuda-events", _cuda_timer(runner, prepared)
    return "perf_counter", _cpu_timer(runner, prepared)


class ShapeTimer:
    """One runner on one input shape: prepared and warmed up once, then timed round by round."""

    def __init__(self, runner: Runner, batch: Batch, plan: TimingPlan) -> None:
        self.plan = plan
        self._runner = runner
        self.batch_size = int(next(iter(batch.values())).shape[0])
        self._prepared = runner.prepare(batch)
        self.timer, self._once = timer_for(runner, self._prepared)
        warm = [self._once() for _ in range(max(plan.warmup, 1))]
        self._release()
        self.typical_ms = max(statistics.median(warm[-3:]), 1e-3)
        per_round = max(plan.iterations, math.ceil(plan.min_round_s * 1e3 / self.typical_ms))
        self.per_round = min(per_round, plan.max_iterations)
        self.rounds: list[list[float]] = []

    @property
    def round_cost_s(self) -> float:
        """What one round should take, from the warm-up's typical latency (the pilot)."""
        return (self.per_round + self.plan.round_warmup) * self.typical_ms / 1e3

    def time_round(self) -> None:
        for _ in range(self.plan.round_warmup):
            self._once()
        self.rounds.append([self._once() for _ in range(self.per_round)])
        self._release()

    def _release(self) -> None:
        """Let the runner give back what it keeps between runs; the next round's untimed
        warm-up call takes it again (so never where a round has no warm-up)."""
        if self.plan.round_warmup:
            self._runner.release_memory()

    def result(self) -> LatencyResult:
        return summarize(self.rounds, self.batch_size, self.timer)


@dataclass(frozen=True)
class Budget:
    """What a latency budget bought: the rounds and iterations the timers were cut to."""

    budget_s: float | None
    repeats: int
    planned_s: float  # the latency rounds' cost after fitting, estimated from the warm-up
    unfitted_s: float  # what the configured iterations and repeats would have cost
    cells_cut: int  # (runner, shape) cells whose iterations per round were reduced
    cells: int
    # Filled in once the rounds ran: how many, and how long they took.
    rounds_run: int | None = None
    spent_s: float | None = None

    def over(self, spent_s: float, done: int) -> bool:
        """Whether one more round, at the pace of the ``done`` so far, would pass the budget."""
        if self.budget_s is None or done < MIN_REPEATS:
            return False
        return spent_s * (done + 1) / done > self.budget_s

    def ran(self, rounds: int, spent_s: float) -> Budget:
        return replace(self, rounds_run=rounds, spent_s=round(spent_s, 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Below these a figure stops meaning much: the median of fewer rounds follows the
# machine's drift, and a round of fewer iterations has no middle.
MIN_REPEATS = 3
MIN_ITERATIONS = 3


def fit_to_budget(timers: Sequence[ShapeTimer], repeats: int, budget_s: float | None) -> Budget:
    """Cut iterations per round, then rounds, until the latency rounds fit ``budget_s``.

    Each cell's cost comes from its own warm-up (the pilot). Iterations go first
    (largest cells lose most: they are the slow shapes, whose latency varies
    least), down to :data:`MIN_ITERATIONS`; then rounds, down to
    :data:`MIN_REPEATS`. A plan that fits is left alone. The timers are changed
    in place; the returned :class:`Budget` says what was bought.
    """
    per_round = sum(t.round_cost_s for t in timers)
    unfitted, cut = repeats * per_round, 0
    if budget_s is not None and unfitted > budget_s and timers:
        scale = budget_s / unfitted
        for timer in timers:
            fitted = max(MIN_ITERATIONS, math.floor(timer.per_round * scale))
            cut += fitted < timer.per_round
            timer.per_round = min(timer.per_round, fitted)
        per_round = sum(t.round_cost_s for t in timers)
        repeats = max(MIN_REPEATS, min(repeats, math.floor(budget_s / max(per_round, 1e-9))))
    return Budget(
        budget_s, repeats, round(repeats * per_round, 1), round(unfitted, 1), cut, len(timers)
    )


def interleave(
    timers: Sequence[ShapeTimer], repeats: int, after_each: Callable[[], object] | None = None
) -> None:
    """Round r of every timer before round r + 1 of any (see the module docstring)."""
    for _ in range(max(repeats, 1)):
        for timer in timers:
            timer.time_round()
            if after_each is not None:
                after_each()


def measure(runner: Runner, batch: Batch, plan: TimingPlan) -> LatencyResult:
    """Warm up, then time ``plan.repeats`` consecutive rounds of one runner on one batch."""
    timer = ShapeTimer(runner, batch, plan)
    interleave([timer], plan.repeats)
    return timer.result()


def summarize(rounds: list[list[float]], batch: int, timer: str) -> LatencyResult:
    """Per-round statistics, then the median over rounds (and the spread of p50/throughput)."""
    p50s = [percentile(r, 50) for r in rounds]
    rates = [batch * 1e3 / statistics.fmean(r) for r in rounds]
    return LatencyResult(
        p50_ms=statistics.median(p50s),
        p90_ms=statistics.median(percentile(r, 90) for r in rounds),
        p99_ms=statistics.median(percentile(r, 99) for r in rounds),
        mean_ms=statistics.median(statistics.fmean(r) for r in rounds),
        min_ms=min(min(r) for r in rounds),
        samples_per_s=statistics.median(rates),
        p50_spread_ms=(min(p50s), max(p50s)),
        samples_per_s_spread=(min(rates), max(rates)),
        iterations=sum(len(r) for r in rounds),
        repeats=len(rounds),
        timer=timer,
        round_p50_ms=p50s,
    )

"""What one bench run measured, typed; plain dicts only where results.json is written.

``results.json`` is read back by later runs (:mod:`bertrt.bench.reproducibility`
compares with the previous file and keeps ``history.jsonl``) and by whoever
embeds its tables, so its schema is a contract: :meth:`BenchResults.to_dict`
spells it out (keys, nesting, key order) in one place, and
tests/unit/test_bench_results.py pins it. Files of earlier runs are never parsed into these classes: they may come
from an older version, and the run-to-run check reads them as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from bertrt.config import BenchConfig
from bertrt.runners.timing import LatencyResult

LATENCY_INPUTS = (
    "synthetic token ids of exactly (batch, seq), full attention mask, "
    "identical for every backend; accuracy and e2e use real test rows"
)


@dataclass
class Backend:
    """Which runner a row belongs to; every latency and accuracy row starts with these."""

    backend: str
    framework: str
    variant: str
    precision: str
    device: str


@dataclass
class LatencyRow(Backend):
    batch: int
    seq: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    samples_per_s: float
    p50_spread_ms: list[float]
    samples_per_s_spread: list[float]
    iterations: int
    repeats: int
    timer: str
    round_p50_ms: list[float]
    # Filled in once every row is known (report.add_speedups, reproducibility.add_run_to_run).
    speedup_vs_torch_fp32: float | None = None
    run_to_run_p50_ms: list[float] | None = None
    run_to_run_runs: int | None = None

    @classmethod
    def measured(cls, who: Backend, batch: int, seq: int, result: LatencyResult) -> LatencyRow:
        return cls(**asdict(who), batch=batch, seq=seq, **result.to_dict())


@dataclass
class AccuracyRow(Backend):
    """One runner's figures on the test split, with the run's class names.

    The first fields are the ones results.json has always had, in their old
    order and meaning (``f1``/``closed_*``: class 1 of a binary run, the macro
    averages of an N-class one); the N-class figures follow them. Those
    default to None/empty only so that rows built from an older score dict
    still load; the stage always fills them.
    """

    n: int
    # None: the run's data has no labels (`bertrt import`); agreement is the figure.
    accuracy: float | None
    f1: float | None
    closed_precision: float | None
    closed_recall: float | None
    # None when there was no reference to compare with.
    agreement: float | None
    max_abs_diff: float | None
    macro_f1: float | None = None
    # Kaggle's multiclass log loss (probabilities clipped to [1e-15, 1 - 1e-15]).
    log_loss: float | None = None
    # The class f1/closed_* are about: class 1 of a binary run; None with more classes.
    positive_class: str | None = None
    # Per class, in class-id order: {"name", "precision", "recall", "f1", "support"}.
    per_class: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_score(cls, who: Backend, score: dict[str, Any]) -> AccuracyRow:
        """From :func:`bertrt.bench.accuracy.score`; keys that are not fields are left out."""
        return cls(**asdict(who), **_pick(cls, score))


def _pick(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of ``cls``'s own fields (not :class:`Backend`'s); extra keys are not ours.

    A field with a default may be absent from ``values``; a required one may not.
    """
    inherited = {f.name for f in dataclasses.fields(Backend)} if issubclass(cls, Backend) else set()
    return {
        f.name: values[f.name]
        for f in dataclasses.fields(cls)
        if f.name not in inherited and (f.name in values or not _has_default(f))
    }


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


@dataclass
class PolicyFigures:
    """One batching policy of an end-to-end run (medians over its rounds)."""

    samples_per_s: float
    samples_per_s_spread: list[float]
    wall_s: float
    real_token_fraction: float


@dataclass
class E2eRun:
    backend: str
    rows: int
    batch_size: int
    max_length: int
    repeats: int
    pad_to_max: PolicyFigures
    bucketed: PolicyFigures
    bucketing_speedup: float

    @classmethod
    def from_measure(cls, out: dict[str, Any]) -> E2eRun:
        """From :func:`bertrt.bench.e2e.measure_e2e`."""
        figures = {
            p: PolicyFigures(**_pick(PolicyFigures, out[p])) for p in ("pad_to_max", "bucketed")
        }
        return cls(**{**_pick(cls, out), **figures})


@dataclass
class E2eSummary:
    """Every end-to-end run, and the one the summary (and a target) is about."""

    runs: list[E2eRun] = field(default_factory=list)
    # The best backend's first run (or the first run); None when nothing ran.
    primary: E2eRun | None = None
    # Why nothing ran.
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        runs = [asdict(r) for r in self.runs]
        if self.primary is None:
            return {"runs": runs, "note": self.note}
        p = asdict(self.primary)
        keys = ("backend", "rows", "max_length", "pad_to_max", "bucketed", "bucketing_speedup")
        return {**{k: p[k] for k in keys}, "runs": runs}


@dataclass
class Target:
    """One of the issue's goals, with the measured value whether met or not."""

    target: str
    measured: float | None
    goal: str
    met: bool | None
    detail: str
    # The per-round (min, max) of a paired ratio; absent from results.json when None.
    spread: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.spread is None:
            del out["spread"]
        return out


@dataclass
class ModelInfo:
    dir: str
    model_type: str
    layers: int | None
    hidden_size: int | None
    vocab_size: int
    max_position_embeddings: int


@dataclass(kw_only=True)
class BenchResults:
    """The whole run; field order is results.json's key order."""

    run: str
    settings: BenchConfig
    # The configured thread count (top-level `threads`), shown in "settings" as before.
    threads: int | None = None
    model: ModelInfo
    # machine.machine_info() plus the load average at start and the steal time:
    # a description whose keys vary with the machine (GPU, installed versions).
    machine: dict[str, Any]
    reference: str
    latency_inputs: str = LATENCY_INPUTS
    latency: list[LatencyRow]
    accuracy: list[AccuracyRow]
    e2e: E2eSummary
    # As discovery lists them: {"backend": label, "reason": why}.
    skipped: list[dict[str, str]]
    # label -> {model file (relative to the run): sha256}, so a later run can
    # tell a changed model from drift.
    backend_models: dict[str, dict[str, str | None]]
    targets: list[Target] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    written_at: str = ""
    # reproducibility.compare(): absent from results.json on a first run.
    reproducibility: dict[str, Any] | None = None
    runs_in_history: int = 1
    # The label of the run's `cpu` model (cpu.json), when calibrate chose one.
    cpu_model: str | None = None
    # bench.roofline.Roofline of the cpu model at the largest batch, as a dict.
    roofline: dict[str, Any] | None = None
    # bench.timing.Budget: what bench.latency_budget_s bought (rounds, cells cut).
    latency_budget: dict[str, Any] | None = None

    @property
    def quick(self) -> bool:
        return self.settings.quick

    def to_dict(self) -> dict[str, Any]:
        out = {
            "run": self.run,
            "quick": self.quick,
            "settings": {**asdict(self.settings), "threads": self.threads},
            "model": asdict(self.model),
            "machine": self.machine,
            "reference": self.reference,
            "latency_inputs": self.latency_inputs,
            "latency": [asdict(r) for r in self.latency],
            "accuracy": [asdict(r) for r in self.accuracy],
            "e2e": self.e2e.to_dict(),
            "skipped": self.skipped,
            "backend_models": self.backend_models,
            "targets": [t.to_dict() for t in self.targets],
            "phases": self.phases,
            "wall_s": self.wall_s,
            "written_at": self.written_at,
            "reproducibility": self.reproducibility,
            "runs_in_history": self.runs_in_history,
            "cpu_model": self.cpu_model,
            "roofline": self.roofline,
            "latency_budget": self.latency_budget,
        }
        if self.reproducibility is None:
            del out["reproducibility"]
        return out

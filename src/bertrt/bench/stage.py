"""The bench stage: latency grid, test-split accuracy and end-to-end throughput of every runner.

Order of work, so that each figure is comparable with the others:

1. discover the runners this run and machine allow (the rest are listed as
   skipped, with the reason);
2. pin thread counts once for the whole process and record them;
3. activate every runner at once; warm each up on every shape of the grid
   (synthetic inputs shared by all runners), then time the rounds
   interleaved across runners and shapes, so that the machine's drift over
   the run lands in every backend's spread alike; then logits of each
   runner on the same bucketed test batches;
4. score each runner against the labels and the torch fp32 reference;
5. end-to-end throughput (tokenize + infer) under both batching policies for
   the chosen runners;
6. compare with the previous results.json of this run (or ``--against``):
   does each p50 land within the spread that run reported?
7. write results.json/csv/md and the plots, and record the stage.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bertrt.artifacts import RunDir, StageTimer, write_json
from bertrt.bench import accuracy as acc
from bertrt.bench import reproducibility
from bertrt.bench.e2e import measure_e2e
from bertrt.bench.machine import (
    cpu_times,
    load_average,
    machine_info,
    pin_threads,
    steal_percent,
)
from bertrt.bench.report import (
    add_speedups,
    choose_best,
    summary_targets,
    target_shape,
    write_reports,
)
from bertrt.bench.results import (
    AccuracyRow,
    Backend,
    BenchResults,
    E2eRun,
    E2eSummary,
    LatencyRow,
    ModelInfo,
)
from bertrt.bench.roofline import roofline
from bertrt.config import BenchConfig, Config
from bertrt.errors import BertrtError, ConfigError, MissingArtifactError, StaleArtifactError
from bertrt.process_memory import give_back_freed_memory
from bertrt.runners.base import Runner
from bertrt.runners.predict import TokenizedRows
from bertrt.runners.registry import (
    Benchable,
    Discovery,
    discover,
    reference_runner,
    runner_for_model,
    selected,
)
from bertrt.runners.timing import (
    Budget,
    ShapeTimer,
    TimingPlan,
    fit_to_budget,
    interleave,
    synthetic_batch,
)
from bertrt.stages import StageResult, stage

log = logging.getLogger(__name__)

# A runner that is active, with a warmed-up timer per shape it accepts.
Active = dict[str, tuple[Runner, dict[tuple[int, int], ShapeTimer]]]


def run(config: Config, rundir: RunDir) -> StageResult:
    with stage(rundir, "bench", requires={"train": [rundir.merged]}, reads=[rundir.split]) as out:
        previous = _previous_results(config.bench, rundir)  # a bad --against fails first
        results, ran, used = _gather(config, rundir)
        results.wall_s = round(out.elapsed, 1)
        results.written_at = datetime.now(UTC).isoformat(timespec="seconds")
        _write(rundir, out.files_in(rundir.bench_dir), results, *previous)
        out.inputs += sorted(used - {rundir.merged})
        out.facts = {"backends": ran, "skipped": len(results.skipped), "quick": results.quick}
        out.report = results.to_dict()
    log.info("bench: wrote %s in %.0f s", rundir.bench_dir, out.result.wall_s)
    return out.result


def _gather(config: Config, run: RunDir) -> tuple[BenchResults, list[str], set[Path]]:
    """Steps 1-5: the results, the runners that ran and the run artifacts they read."""
    from bertrt.data import load_split
    from bertrt.data.labels import run_labels

    cfg = config.bench
    threads = pin_threads(config.threads)
    load_at_start = load_average()
    found = _discover(config, run, threads)
    model = _model_info(run)
    grid = _grid(cfg, model.max_position_embeddings, found)
    test = load_split(run, ("test",), csv=config.data.csv)["test"]
    tokenizer, eval_set = _eval_set(config, run, test)
    # Reading the whole CSV for its test rows leaves ~0.36 GB freed but held by the
    # allocators: every runner is held at once on top of it (bertrt.process_memory).
    give_back_freed_memory()
    phase, times = StageTimer(), cpu_times()
    latency, logits, runners, budget = _measure_all(
        found, grid, cfg, model.vocab_size, eval_set, config.seed, (run, threads)
    )
    phases = {"latency_and_accuracy_s": round(phase.elapsed, 1)}
    steal = steal_percent(times, cpu_times())
    accuracy = _score(logits, runners, eval_set, run_labels(run))
    add_speedups(latency)
    phase = StageTimer()
    e2e = _e2e(config, found, list(runners), latency, accuracy, tokenizer, test)
    phases["e2e_s"] = round(phase.elapsed, 1)
    machine = machine_info(threads)
    machine["load_average_at_start"] = load_at_start
    machine["cpu_steal_percent_latency_phase"] = steal
    ran = [c for c in found.runners if c.label in runners]
    results = BenchResults(
        run=str(run.root),
        settings=cfg,
        threads=config.threads,
        model=model,
        machine=machine,
        reference=_reference_label(),
        latency=latency,
        accuracy=accuracy,
        e2e=e2e,
        skipped=[skip.to_dict() for skip in found.skipped],
        backend_models=_backend_models(run, ran),
        phases=phases,
        latency_budget=budget.to_dict(),
    )
    results.cpu_model, precision = _deployment_cpu_label(run, config.threads)
    results.roofline = _roofline(run, results, precision)
    results.targets = summary_targets(results, config.accuracy_budget, config.min_agreement)
    return results, list(runners), {p for c in ran for p in c.inputs if p.exists()}


def _write(
    run: RunDir,
    staged: Path,
    results: BenchResults,
    previous_path: Path,
    previous: dict[str, Any] | None,
) -> None:
    """Steps 6-7: the run-to-run check, then the reports and the history, into ``staged``."""
    # Read from the published directory: a run without a history is seeded
    # from its results.previous.json and results.json.
    history = reproducibility.load_history(run.bench_dir)
    if previous is not None:
        results.reproducibility = reproducibility.compare(previous, results, str(previous_path))
        if not results.settings.against:  # about to be replaced: keep what it was compared with
            write_json(staged / "results.previous.json", previous)
    results.runs_in_history = reproducibility.add_run_to_run(results, history)
    write_reports(staged, results)
    reproducibility.write_history(staged, history, results)


def _discover(config: Config, run: RunDir, threads: int) -> Discovery:
    cfg = config.bench
    max_shape = (
        max([*cfg.batch_sizes, cfg.accuracy_batch_size, cfg.e2e_batch_size]),
        max([*cfg.seq_lengths, *cfg.e2e_max_lengths, config.model.max_length]),
    )
    found = discover(
        run,
        threads,
        cfg.backends,
        config.engines.precisions,
        max_shape,
        cuda_graphs=config.engines.cuda_graphs,
    )
    if not found.runners:
        raise _no_runner(config, run, found)
    return found


def _no_runner(config: Config, run: RunDir, found: Discovery) -> BertrtError:
    """Why nothing is left to bench, with the exit code of the cause.

    A selected backend dropped because its model is missing or changed since
    its stage wrote it is an artifact problem (exit 4, naming the stage to
    rerun), not a configuration one; only a selection that leaves nothing for
    other reasons is exit 2. A skip names its artifact and stage, which are
    checked again for the typed error.
    """
    patterns = config.bench.backends
    for skip in found.skipped:
        if skip.artifact is None or skip.stage is None or not selected(skip.backend, patterns):
            continue
        try:
            run.require("bench", [skip.artifact], producer=skip.stage)
        except (MissingArtifactError, StaleArtifactError) as err:
            return type(err)(f"bench: no runner left (bench.backends={patterns}): {err}")
    return ConfigError(
        f"bench: no runner left (bench.backends={patterns}); skipped: "
        + "; ".join(f"{s.backend}: {s.reason}" for s in found.skipped)
    )


def _measure_all(
    found: Discovery,
    grid: list[tuple[int, int]],
    cfg: BenchConfig,
    vocab_size: int,
    eval_set: TokenizedRows,
    seed: int,
    where: tuple[RunDir, int],
) -> tuple[list[LatencyRow], dict[str, np.ndarray], dict[str, Backend], Budget]:
    """Latency rows, test logits and descriptions of every runner that ran (reference first),
    and what the latency budget bought (:func:`bertrt.runners.timing.fit_to_budget`).

    All runners are active at once so that their timing rounds can be
    interleaved (:func:`bertrt.runners.timing.interleave`). A runner that fails
    is listed as skipped with the error and dropped (closed with the others
    at the end), and the rest go on; only the reference's failure stops the
    bench, since agreement needs it.
    """
    logits: dict[str, np.ndarray] = {}
    reference = _reference_label()
    if reference not in found.labels():  # not selected, but agreement needs it
        logits[reference] = _reference_logits(*where, eval_set)
    plan = TimingPlan(cfg.warmup, cfg.iterations, cfg.repeats, cfg.min_round_s, cfg.max_iterations)
    with contextlib.ExitStack() as stack:
        active: Active = {}
        for cand in _reference_first(found.runners, reference):
            with _failures(found, cand.label):
                runner = stack.enter_context(cand.build())
                timers = _shape_timers(runner, cand.label, grid, plan, vocab_size, seed, found)
                active[cand.label] = (runner, timers)
        every_timer = [t for _, timers in active.values() for t in timers.values()]
        budget = fit_to_budget(every_timer, plan.repeats, cfg.latency_budget_s)
        budget = _time_rounds(active, found, budget)
        for label in list(active):
            with _failures(found, label, active):
                logits[label] = acc.predict(active[label][0], eval_set)
        runners = {label: _describe(runner) for label, (runner, _) in active.items()}
        latency = [
            LatencyRow.measured(runners[label], batch, seq, timer.result())
            for label, (_, timers) in active.items()
            for (batch, seq), timer in timers.items()
        ]
    return latency, logits, runners, budget


def _time_rounds(active: Active, found: Discovery, budget: Budget) -> Budget:
    """Round r of every (runner, shape) before round r + 1 of any, as many rounds as the
    budget allows: the warm-up's estimate is only as good as the load it ran under, so
    after each round the rest is projected from the rounds' own time, and the rounds stop
    (never before :data:`~bertrt.runners.timing.MIN_REPEATS`) when the next would overrun."""
    total = sum(len(t) for _, t in active.values()) * max(budget.repeats, 1)
    start, done = time.perf_counter(), 0
    with tqdm(total=total, desc="latency (interleaved rounds)", unit="round") as bar:
        for _ in range(max(budget.repeats, 1)):
            for label in list(active):
                with _failures(found, label, active):
                    interleave(list(active[label][1].values()), 1, lambda: bar.update(1))
            done += 1
            spent = time.perf_counter() - start
            if budget.over(spent, done):
                break
    return budget.ran(done, time.perf_counter() - start)


@contextlib.contextmanager
def _failures(found: Discovery, label: str, active: Active | None = None) -> Iterator[None]:
    """Turn a runner's failure into a skipped entry (and drop it), except the reference's."""
    try:
        yield
    except Exception as err:
        if acc.is_reference(label):
            raise
        log.warning("bench: %s failed", label, exc_info=True)
        found.skip(label, f"failed while running: {type(err).__name__}: {err}")
        if active is not None:
            active.pop(label, None)


def _score(
    logits: dict[str, np.ndarray],
    runners: dict[str, Backend],
    eval_set: TokenizedRows,
    names: Sequence[str],
) -> list[AccuracyRow]:
    """Each runner against the labels (named ``names``) and the reference's logits."""
    reference, labels = logits.get(_reference_label()), eval_set.labels  # None: unlabelled run
    return [
        AccuracyRow.from_score(runners[label], acc.score(out, labels, reference, names))
        for label, out in logits.items()
        if label in runners
    ]


def _previous_results(cfg: BenchConfig, run: RunDir) -> tuple[Path, dict[str, Any] | None]:
    """The run to compare with: ``bench.against``, else this run's last results.json."""
    if not cfg.against:
        path = run.bench_dir / "results.json"
        return path, reproducibility.load(path)
    path = Path(cfg.against)
    previous = reproducibility.load(path)
    if previous is None:
        raise ConfigError(
            f"bench.against: {path} is not a readable results.json written by bertrt bench"
        )
    return path, previous


def _model_info(run: RunDir) -> ModelInfo:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(run.merged))
    return ModelInfo(
        dir=str(run.merged),
        model_type=cfg.model_type,
        layers=getattr(cfg, "num_hidden_layers", None),
        hidden_size=getattr(cfg, "hidden_size", None),
        vocab_size=int(cfg.vocab_size),
        max_position_embeddings=int(getattr(cfg, "max_position_embeddings", 512)),
    )


def _deployment_cpu_label(run: RunDir, threads: int | None) -> tuple[str | None, str]:
    """The label of the run's `cpu` model and the precision its matmuls run in, if chosen.

    Building the runner (not activating it) also warns when cpu.json was
    chosen on a CPU with other ISA flags than this one.
    """
    if not run.cpu_choice.is_file():
        return None, "fp32"
    try:
        runner = runner_for_model(run, "cpu", threads, stage="bench")
    except BertrtError as err:
        log.warning("bench: no cpu model: %s", err)
        return None, "fp32"
    arithmetic = runner.arithmetic
    return runner.label, arithmetic if arithmetic in ("int8", "bf16") else "fp32"


def _roofline(run: RunDir, results: BenchResults, precision: str) -> dict[str, Any] | None:
    """Achieved vs peak TFLOP/s of the cpu model at the largest batch (see bench.roofline)."""
    from transformers import AutoConfig

    shape = target_shape(results.latency)
    if results.cpu_model is None or shape is None:
        return None
    _, big, seq = shape
    row = next(
        (
            r
            for r in results.latency
            if (r.backend, r.batch, r.seq) == (results.cpu_model, big, seq)
        ),
        None,
    )
    if row is None:
        return None
    cfg = AutoConfig.from_pretrained(str(run.merged))
    dims = (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size)
    flags, cores = results.machine.get("cpu_flags", []), int(results.machine.get("cores", 1))
    return roofline(row.backend, row.p50_ms, big, seq, dims, precision, flags, cores).to_dict()


def _backend_models(run: RunDir, ran: list[Benchable]) -> dict[str, dict[str, str | None]]:
    """What each backend ran, so a later run can tell a changed model from drift.

    The hashes are the manifest's, which discovery's require() checked the files against.
    """
    recorded = run.recorded_outputs()
    return {
        c.label: {run.rel(p): recorded.get(run.rel(p)) for p in c.inputs if p.exists()} for c in ran
    }


def _grid(cfg: BenchConfig, max_positions: int, found: Discovery) -> list[tuple[int, int]]:
    """(batch, seq) cells; seqs beyond the model's positions are recorded as skipped."""
    seqs = []
    for seq in cfg.seq_lengths:
        if seq > max_positions:
            found.skip(f"all/seq{seq}", f"seq {seq} > max_position_embeddings {max_positions}")
        else:
            seqs.append(seq)
    return [(b, s) for b in cfg.batch_sizes for s in seqs]


def _eval_set(config: Config, run: RunDir, test: pd.DataFrame) -> tuple[Any, TokenizedRows]:
    from bertrt.modeling import load_tokenizer

    cfg = config.bench
    if cfg.accuracy_rows is not None:
        test = test.head(cfg.accuracy_rows)
    from bertrt.data.labels import run_is_labelled

    tokenizer = load_tokenizer(run.merged)
    eval_set = acc.build_eval_set(
        tokenizer,
        test["text"].tolist(),
        test["label"].tolist() if run_is_labelled(run) else None,
        cfg.accuracy_batch_size,
        config.model.max_length,
    )
    return tokenizer, eval_set


def _reference_label() -> str:
    return str(reference_runner(RunDir(Path(".")), None).label)


def _reference_first(cands: list[Benchable], reference: str) -> list[Benchable]:
    return sorted(cands, key=lambda c: c.label != reference)


def _reference_logits(run: RunDir, threads: int, eval_set: TokenizedRows) -> np.ndarray:
    with reference_runner(run, threads) as runner:
        return acc.predict(runner, eval_set)


def _describe(runner: Runner) -> Backend:
    return Backend(
        backend=runner.label,
        framework=runner.framework,
        variant=runner.variant or runner.precision,
        precision=runner.precision,
        device=runner.device,
    )


def _shape_timers(
    runner: Runner,
    label: str,
    grid: list[tuple[int, int]],
    plan: TimingPlan,
    vocab_size: int,
    seed: int,
    found: Discovery,
) -> dict[tuple[int, int], ShapeTimer]:
    """A prepared, warmed-up timer per shape this runner accepts; the rest are skipped."""
    timers: dict[tuple[int, int], ShapeTimer] = {}
    for batch, seq in tqdm(grid, desc=f"warm-up {label}", unit="shape", leave=False):
        reason = runner.refusal(batch, seq)
        if reason:
            found.skip(f"{label}/b{batch}s{seq}", str(reason))
            continue
        inputs = synthetic_batch(batch, seq, vocab_size, seed)
        try:
            timers[(batch, seq)] = ShapeTimer(runner, inputs, plan)
        except BertrtError as err:  # e.g. a shape outside a TensorRT profile
            found.skip(f"{label}/b{batch}s{seq}", str(err))
    return timers


def _e2e(
    config: Config,
    found: Discovery,
    runners: list[str],
    latency: list[LatencyRow],
    accuracy: list[AccuracyRow],
    tokenizer: Any,
    test: pd.DataFrame,
) -> E2eSummary:
    cfg = config.bench
    best = choose_best(latency, accuracy, config.accuracy_budget, config.min_agreement)
    labels = [
        label
        for label in runners
        if (label == best and "best" in cfg.e2e_backends)
        or selected(label, [p for p in cfg.e2e_backends if p != "best"])
    ]
    if not labels:
        return E2eSummary(note="no backend selected by bench.e2e_backends")
    if cfg.e2e_rows is not None:
        test = test.head(cfg.e2e_rows)
    texts = test["text"].tolist()
    cands = {c.label: c for c in found.runners}
    lengths = cfg.e2e_max_lengths or [config.model.max_length]
    runs: list[E2eRun] = []
    for label in labels:
        with cands[label].build() as runner:
            runs.extend(
                E2eRun.from_measure(
                    measure_e2e(
                        runner, tokenizer, texts, cfg.e2e_batch_size, length, cfg.e2e_repeats
                    )
                )
                for length in lengths
            )
    return E2eSummary(runs, primary=next((r for r in runs if r.backend == best), runs[0]))

"""results.json, results.csv and results.md from the figures the stage measured.

Nothing here measures or estimates: every number in the tables comes from
the results object, and a target that was missed shows its measured
ratio just the same. ``results.md`` is the table a README embeds.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from bertrt.artifacts import write_json, write_text
from bertrt.bench import reproducibility
from bertrt.bench.accuracy import is_reference
from bertrt.bench.plots import write_plots
from bertrt.bench.results import (
    AccuracyRow,
    Backend,
    BenchResults,
    E2eSummary,
    LatencyRow,
    Target,
)

# results.csv's accuracy columns; new ones go at the end so old columns keep their place.
ACC_FIELDS = ("accuracy", "f1", "agreement", "max_abs_diff", "macro_f1", "log_loss")
LATENCY_FIELDS = (
    "backend",
    "framework",
    "variant",
    "precision",
    "device",
    "batch",
    "seq",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "samples_per_s",
    "speedup_vs_torch_fp32",
    "iterations",
    "repeats",
    "timer",
)
QUICK_LIMIT_S = 180.0


# -- derived figures ------------------------------------------------------------
def paired_ratio(slow: LatencyRow, fast: LatencyRow) -> tuple[float, float, float]:
    """``slow`` p50 / ``fast`` p50 taken round by round: (median, min, max) over rounds.

    Round r of every backend ran back to back (the stage interleaves them), so
    each round's ratio compares two backends on the same machine state; the
    machine's drift over the run cancels out of it. Rows whose rounds do not
    pair up fall back to the ratio of the medians.
    """
    a, b = slow.round_p50_ms, fast.round_p50_ms
    if a and b and len(a) == len(b):
        ratios = [x / y for x, y in zip(a, b, strict=True)]
    else:
        ratios = [slow.p50_ms / fast.p50_ms]
    return statistics.median(ratios), min(ratios), max(ratios)


def _is_torch_fp32(row: Backend) -> bool:
    """The reference (the merged model in eager PyTorch, fp32), by its label: other PyTorch
    modes are fp32 too (torch/compile/cpu) and would be taken for it."""
    return is_reference(row.backend)


def add_speedups(latency: list[LatencyRow]) -> None:
    """``speedup_vs_torch_fp32``: torch fp32 over this backend on the same device and shape."""
    ref = {(r.device, r.batch, r.seq): r for r in latency if _is_torch_fp32(r)}
    for row in latency:
        base = ref.get((row.device, row.batch, row.seq))
        row.speedup_vs_torch_fp32 = paired_ratio(base, row)[0] if base else None


def _reference_accuracy(accuracy: list[AccuracyRow]) -> float | None:
    return next(
        (float(r.accuracy) for r in accuracy if _is_torch_fp32(r) and r.accuracy is not None),
        None,
    )


def unlabelled(accuracy: list[AccuracyRow]) -> bool:
    """The run's data has no labels: rows carry agreement with fp32, no accuracy."""
    return bool(accuracy) and all(r.accuracy is None for r in accuracy)


def within_budget(
    accuracy: list[AccuracyRow], budget_points: float, min_agreement: float = 0.99
) -> set[str]:
    """Backends within the accuracy budget; without labels, agreeing with fp32 enough."""
    if unlabelled(accuracy):
        return {r.backend for r in accuracy if (r.agreement or 0.0) >= min_agreement - 1e-12}
    ref = _reference_accuracy(accuracy)
    if ref is None:
        return {r.backend for r in accuracy}
    return {
        r.backend
        for r in accuracy
        if r.accuracy is not None and (ref - r.accuracy) * 100 <= budget_points + 1e-9
    }


def target_shape(latency: list[LatencyRow]) -> tuple[int, int, int] | None:
    """(smallest batch, largest batch, seq): seq 128 when measured, else the smallest seq."""
    if not latency:
        return None
    seqs = sorted({r.seq for r in latency})
    batches = sorted({r.batch for r in latency})
    return batches[0], batches[-1], 128 if 128 in seqs else seqs[0]


def _fastest(
    latency: list[LatencyRow], backends: set[str], batch: int, seq: int
) -> LatencyRow | None:
    rows = [r for r in latency if r.backend in backends and r.batch == batch and r.seq == seq]
    return min(rows, key=lambda r: r.p50_ms) if rows else None


def choose_best(
    latency: list[LatencyRow],
    accuracy: list[AccuracyRow],
    budget_points: float,
    min_agreement: float = 0.99,
) -> str | None:
    """The backend with the most samples/s at the largest batch, within the accuracy budget."""
    shape = target_shape(latency)
    if shape is None:
        return None
    _, big, seq = shape
    ok = within_budget(accuracy, budget_points, min_agreement)
    rows = [r for r in latency if r.batch == big and r.seq == seq and r.backend in ok]
    return max(rows, key=lambda r: r.samples_per_s).backend if rows else None


def _speed_target(
    name: str, goal: float, slow: LatencyRow, fast: LatencyRow, digits: int
) -> Target:
    ratio, low, high = paired_ratio(slow, fast)
    return Target(
        name,
        ratio,
        f">= {goal:g}x",
        ratio >= goal,
        f"{fast.backend} {fast.p50_ms:.{digits}f} ms vs {slow.backend} "
        f"{slow.p50_ms:.{digits}f} ms; per-round ratio {low:.2f}–{high:.2f}",
        [low, high],
    )


def summary_targets(
    results: BenchResults, budget_points: float, min_agreement: float = 0.99
) -> list[Target]:
    """The issue's CPU goals, each with the measured value (met or not)."""
    latency, accuracy = results.latency, results.accuracy
    shape = target_shape(latency)
    if shape is None:
        return []
    small, big, seq = shape
    ok = within_budget(accuracy, budget_points, min_agreement)
    ort = {r.backend for r in latency if r.framework == "onnxruntime" and r.device == "cpu"}
    torch_cpu = {r.backend for r in latency if r.framework == "torch" and r.device == "cpu"}
    fp32 = _fastest(latency, {"torch/fp32/cpu"}, small, seq)
    out = []
    best_small = _fastest(latency, ort & ok, small, seq)
    if fp32 and best_small:
        name = f"best ONNX Runtime vs torch fp32, batch {small}, seq {seq}"
        out.append(_speed_target(name, 3, fp32, best_small, 2))
    strongest = _fastest(latency, torch_cpu, big, seq)
    best_big = _fastest(latency, ort & ok, big, seq)
    if strongest and best_big:
        name = f"best ONNX Runtime vs strongest PyTorch CPU, batch {big}, seq {seq}"
        out.append(_speed_target(name, 1.5, strongest, best_big, 1))
    best = {b.backend for b in (best_small, best_big) if b}
    if results.cpu_model:
        best.add(results.cpu_model)
        out += _cpu_model_targets(results, small, big, seq)
    if unlabelled(accuracy):
        out += _agreement_targets(accuracy, best, min_agreement)
    else:
        out += _accuracy_targets(accuracy, best, budget_points)
    return out + _e2e_targets(results.e2e)


# The run's `cpu` model against what a user would pick instead: (peer label, batch
# "small"/"big", goal with AMX, goal without). OpenVINO out of the box is the
# exported model.onnx on OpenVINO's defaults, NNCF INT8 its transformer preset.
CPU_MODEL_GOALS = (
    ("openvino/fp32/cpu", "big", 1.1, 1.0),
    ("openvino/int8/cpu", "big", 1.0, 1.0),
    ("torch/bf16-autocast/cpu", "big", 1.7, 1.5),
    ("openvino/fp32/cpu", "small", 1.0, 1.0),
    ("torch/fp32/cpu", "small", 3.0, 3.0),
)


def _cpu_model_targets(results: BenchResults, small: int, big: int, seq: int) -> list[Target]:
    """The `cpu` model's margin over each peer, with the goal for this machine's ISA."""
    amx = "amx_bf16" in results.machine.get("cpu_flags", [])
    out = []
    for peer, which, with_amx, without in CPU_MODEL_GOALS:
        batch = big if which == "big" else small
        mine = _fastest(results.latency, {str(results.cpu_model)}, batch, seq)
        theirs = _fastest(results.latency, {peer}, batch, seq)
        if mine is None or theirs is None:
            continue
        goal = with_amx if amx else without
        name = f"cpu model vs {peer}, batch {batch}, seq {seq} ({'AMX' if amx else 'no AMX'})"
        out.append(_speed_target(name, goal, theirs, mine, 1 if batch > 1 else 2))
    return out


def _agreement_targets(
    accuracy: list[AccuracyRow], best: set[str], min_agreement: float
) -> list[Target]:
    """Without labels: each chosen backend's argmax agreement with torch fp32."""
    out = []
    for backend in sorted(best):
        row = next((r for r in accuracy if r.backend == backend), None)
        if row and row.agreement is not None:
            out.append(
                Target(
                    f"agreement of {backend} with torch fp32 (no labels: no accuracy)",
                    row.agreement,
                    f">= {min_agreement}",
                    row.agreement >= min_agreement - 1e-12,
                    f"on {row.n} test rows; max |logit diff| {row.max_abs_diff:.3g}",
                )
            )
    return out


def _accuracy_targets(accuracy: list[AccuracyRow], best: set[str], budget: float) -> list[Target]:
    ref = _reference_accuracy(accuracy)
    out = []
    for backend in best:
        row = next((r for r in accuracy if r.backend == backend), None)
        if row and ref is not None and row.accuracy is not None:
            drop = (ref - row.accuracy) * 100
            out.append(
                Target(
                    f"accuracy drop of {backend} vs torch fp32 (points)",
                    drop,
                    f"<= {budget}",
                    drop <= budget,
                    f"{row.accuracy:.4f} vs {ref:.4f} on {row.n} test rows",
                )
            )
    return out


def _e2e_targets(e2e: E2eSummary) -> list[Target]:
    if e2e.primary is None:
        return []
    return [
        Target(
            f"length-bucketed vs pad-to-max end-to-end throughput, max_length {run.max_length}",
            run.bucketing_speedup,
            ">= 2x",
            run.bucketing_speedup >= 2,
            f"{run.backend}: {run.bucketed.samples_per_s:.1f} vs "
            f"{run.pad_to_max.samples_per_s:.1f} samples/s on {run.rows} rows",
        )
        for run in e2e.runs
        if run.backend == e2e.primary.backend
    ]


# -- files ----------------------------------------------------------------------
def write_reports(bench_dir: Path, results: BenchResults) -> list[Path]:
    bench_dir.mkdir(parents=True, exist_ok=True)
    paths = [bench_dir / "results.json", bench_dir / "results.csv", bench_dir / "results.md"]
    if results.quick:
        results.targets.append(
            Target(
                "bench --quick wall time (s)",
                results.wall_s,
                f"<= {QUICK_LIMIT_S:.0f}",
                results.wall_s <= QUICK_LIMIT_S,
                "measured up to writing the reports",
            )
        )
    write_json(paths[0], results.to_dict())
    write_text(paths[1], to_csv(results))
    plots = write_plots(bench_dir, results)
    write_text(paths[2], to_markdown(results, [p.name for p in plots]))
    return paths + plots


def to_csv(results: BenchResults) -> str:
    """One row per (backend, shape), with the backend's accuracy figures alongside."""
    acc = {r.backend: r for r in results.accuracy}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*LATENCY_FIELDS, *ACC_FIELDS])
    for row in results.latency:
        a = acc.get(row.backend)
        writer.writerow(
            [getattr(row, f) for f in LATENCY_FIELDS] + [getattr(a, f, None) for f in ACC_FIELDS]
        )
    return buf.getvalue()


# -- results.md -----------------------------------------------------------------
def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def to_markdown(results: BenchResults, plots: list[str]) -> str:
    lines = [
        *_header(results),
        *_load_warning(results.machine),
        *_targets(results.targets),
        *_cpu_model(results),
        *reproducibility.markdown(results.reproducibility or {}),
        *_latency(results.latency, results.runs_in_history),
        *_accuracy(results.accuracy, results.reference),
        *_e2e(results.e2e),
        *_skipped(results.skipped),
        *_plots(plots),
    ]
    return "\n".join(lines) + "\n"


def _cpu_model(results: BenchResults) -> list[str]:
    """Which runner is the run's `cpu` model, and how much of the CPU's peak it reaches."""
    if results.cpu_model is None:
        return []
    lines = [
        "## CPU model",
        "",
        f"`bertrt calibrate` chose `{results.cpu_model}` as this run's `cpu` model (cpu.json). "
        "The OpenVINO rows are what a user would pick instead: `openvino/fp32/cpu` is "
        "OpenVINO on the exported model.onnx with its defaults, `openvino/int8/cpu` NNCF's "
        "INT8 with its transformer preset.",
        "",
    ]
    line = results.roofline
    if line:
        peak = (
            f"{line['peak_tflops']:.2f} TFLOP/s peak ({line['peak_unit']}, {line['precision']}, "
            f"nominal clock, {results.machine.get('cores')} cores): "
            f"{line['fraction_of_peak']:.0%} of it"
            if line["peak_tflops"]
            else "peak unknown (no clock in /proc/cpuinfo)"
        )
        lines += [
            f"Roofline at batch {line['batch']} x seq {line['seq']}: {line['gflop']:.1f} GFLOP "
            f"per batch, {line['achieved_tflops']:.3f} TFLOP/s achieved; {peak}.",
            "",
        ]
    return lines


def _header(results: BenchResults) -> list[str]:
    m = results.machine
    threads = m["threads"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "none"
    v = m["versions"]
    model = results.model
    steal = m.get("cpu_steal_percent_latency_phase")
    budget = results.latency_budget or {}
    repeats = budget.get("rounds_run") or budget.get("repeats", results.settings.repeats)
    return [
        "# Benchmark results",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['cpu_flags']) or 'no AVX-512'}), "
        f"GPU: {gpu}. Threads: torch {threads['torch_intra_op']}, "
        f"onnxruntime {threads['onnxruntime_intra_op']}. "
        + ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime", "transformers") if k in v)
        + ".",
        "",
        f"Model: {model.model_type}, {model.layers} layers, "
        f"hidden {model.hidden_size}. Mode: {'quick' if results.quick else 'full'}; "
        f"wall time {results.wall_s:.0f} s. Latency inputs: {results.latency_inputs}. "
        f"Each figure is the median over {repeats} rounds, interleaved "
        "across backends and shapes (round r of every one before round r + 1 of any), so "
        "the spread (the rounds' min–max) covers the machine's drift over the run; "
        "speed-ups are taken round by round."
        + (f" CPU steal time during the latency rounds: {steal}%." if steal is not None else ""),
        "",
        *_budget_line(budget),
    ]


def _budget_line(budget: dict[str, Any]) -> list[str]:
    """What bench.latency_budget_s bought: a reader should know when figures rest on less."""
    if not budget or budget.get("budget_s") is None:
        return []
    ran = (
        f" The rounds took {budget['spent_s']:.0f} s; {budget['rounds_run']} of "
        f"{budget['repeats']} ran (the rest would have passed the budget at the pace measured)."
        if budget.get("rounds_run") is not None
        else ""
    )
    if not budget["cells_cut"] and budget["planned_s"] >= budget["unfitted_s"]:
        return [
            f"Latency budget {budget['budget_s']:.0f} s: the configured rounds "
            f"({budget['unfitted_s']:.0f} s, estimated from the warm-up) fit it." + ran,
            "",
        ]
    return [
        f"Latency budget {budget['budget_s']:.0f} s (`bench.latency_budget_s`): the configured "
        f"rounds would have taken {budget['unfitted_s']:.0f} s (estimated from the warm-up); "
        f"iterations per round were cut in {budget['cells_cut']} of {budget['cells']} "
        f"(runner, shape) cells and the rounds to {budget['repeats']}, an estimated "
        f"{budget['planned_s']:.0f} s." + ran,
        "",
    ]


def _load_warning(m: dict[str, Any]) -> list[str]:
    load = [x for x in (m.get("load_average_at_start"), m.get("load_average_at_end")) if x]
    # The benchmark's own threads count in the load average: only load beyond
    # them (plus half a core of slack) means another process competed.
    own = max(
        (v for k, v in m.get("threads", {}).items() if isinstance(v, int)), default=m["cores"]
    )
    if not load or max(x[0] for x in load) <= own + 0.5:
        return []
    return [
        f"**Warning:** the 1-minute load average was {' then '.join(str(x[0]) for x in load)} "
        f"on {m['cores']} cores: other processes competed for the CPU and these figures "
        "are slower and noisier than on an idle machine.",
        "",
    ]


def _targets(targets: list[Target]) -> list[str]:
    if not targets:
        return []
    rows = [
        [
            t.target,
            _fmt(t.measured) + (" ({:.2f}–{:.2f})".format(*t.spread) if t.spread else ""),
            t.goal,
            {True: "yes", False: "**no**", None: "–"}[t.met],
            t.detail,
        ]
        for t in targets
    ]
    return ["## Targets", "", *_table(["target", "measured", "goal", "met", "detail"], rows), ""]


def _latency(latency: list[LatencyRow], runs: int) -> list[str]:
    lines = ["## Latency", ""]
    if runs > 1:
        lines += [
            f"*run-to-run p50* is the range of each p50 over the {runs} comparable runs in "
            "bench/history.jsonl (this one included; a backend counts only runs with its "
            "current model file): on a shared VM, slow and fast phases last longer than one "
            "run, so this range, not the within-run spread, is where a next run lands.",
            "",
        ]
    header = ["backend", "precision", "batch", "seq", "p50 ms", "p90 ms", "p99 ms"]
    header += ["p50 spread ms"] + (["run-to-run p50 ms (runs)"] if runs > 1 else [])
    header += ["samples/s", "vs torch fp32"]
    ordered = sorted(latency, key=lambda r: (r.seq, r.batch, r.p50_ms))
    return lines + _table(header, [_latency_row(r, runs) for r in ordered])


def _latency_row(r: LatencyRow, runs: int) -> list[str]:
    row = [r.backend, r.precision, str(r.batch), str(r.seq)]
    row += [_fmt(r.p50_ms), _fmt(r.p90_ms), _fmt(r.p99_ms)]
    row.append(f"{r.p50_spread_ms[0]:.2f}–{r.p50_spread_ms[1]:.2f}")
    if runs > 1:
        count = r.run_to_run_runs or 1
        low, high = r.run_to_run_p50_ms or (r.p50_ms, r.p50_ms)
        row.append(f"{low:.2f}–{high:.2f} ({count})" if count > 1 else "– (this run only)")
    speedup = r.speedup_vs_torch_fp32
    return [*row, _fmt(r.samples_per_s, 1), _fmt(speedup) + ("x" if speedup else "")]


def _accuracy(accuracy: list[AccuracyRow], reference: str) -> list[str]:
    """One row per backend; the "F1 (closed)" column only where a binary run has one.

    With more than two classes ``f1`` is the macro-F1 already shown, so the
    column gives way to a table of each class's F1 per backend.
    """
    multiclass = any(len(r.per_class) > 2 for r in accuracy)
    positive = next((r.positive_class for r in accuracy if r.positive_class), "class 1")
    header = ["backend", "precision", "rows", "accuracy"]
    header += [] if multiclass else [f"F1 ({positive})"]
    header += ["macro-F1", "log loss", f"agreement with {reference}", "max abs logit diff"]
    rows = [
        [r.backend, r.precision, str(r.n), _fmt(r.accuracy, 4)]
        + ([] if multiclass else [_fmt(r.f1, 4)])
        + [_fmt(r.macro_f1, 4), _fmt(r.log_loss, 4), _fmt(r.agreement, 4)]
        + [_fmt(r.max_abs_diff, 5)]
        for r in accuracy
    ]
    lines = ["", "## Accuracy on the test split", "", *_table(header, rows)]
    if unlabelled(accuracy):
        lines[3:3] = [NO_LABELS, ""]
    return lines + (_per_class_f1(accuracy) if multiclass else [])


NO_LABELS = (
    "The run's data has no labels (`bertrt import` of an unlabelled file): accuracy, F1 "
    "and log loss are skipped; agreement with PyTorch fp32 and the largest logit "
    "difference are the figures, and the best backend is the fastest agreeing on at "
    "least `min_agreement` of the rows."
)


def _per_class_f1(accuracy: list[AccuracyRow]) -> list[str]:
    """F1 of every class per backend (class names of the run, in class-id order)."""
    names = [c["name"] for c in next(r.per_class for r in accuracy if r.per_class)]
    rows = [[r.backend, *(_fmt(c["f1"], 4) for c in r.per_class)] for r in accuracy if r.per_class]
    return ["", "F1 per class:", "", *_table(["backend", *names], rows)]


def _e2e(e2e: E2eSummary) -> list[str]:
    lines = ["", "## End-to-end (tokenize + infer)", ""]
    if not e2e.runs:
        return [*lines, e2e.note or "not measured"]
    header = ["backend", "rows", "batch", "max_length", "pad-to-max samples/s"]
    header += ["bucketed samples/s", "bucketing speed-up", "real tokens (pad-to-max / bucketed)"]
    rows = [
        [
            r.backend,
            str(r.rows),
            str(r.batch_size),
            str(r.max_length),
            _fmt(r.pad_to_max.samples_per_s, 1),
            _fmt(r.bucketed.samples_per_s, 1),
            _fmt(r.bucketing_speedup) + "x",
            f"{r.pad_to_max.real_token_fraction:.0%} / {r.bucketed.real_token_fraction:.0%}",
        ]
        for r in e2e.runs
    ]
    return lines + _table(header, rows)


def _skipped(skipped: list[dict[str, str]]) -> list[str]:
    if not skipped:
        return []
    return ["", "## Skipped", "", *(f"- `{s['backend']}`: {s['reason']}" for s in skipped)]


def _plots(plots: list[str]) -> list[str]:
    if not plots:
        return []
    return ["", "## Plots", "", *(f"![{p}]({p})" for p in plots)]

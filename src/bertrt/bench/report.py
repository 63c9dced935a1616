"""results.json, results.csv and results.md from the figures the stage measured.

Nothing here measures or estimates: every number in the tables comes from
the results dictionary, and a target that was missed shows its measured
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
from bertrt.bench.plots import write_plots

ACC_FIELDS = ("accuracy", "f1", "agreement", "max_abs_diff")
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
def paired_ratio(slow: dict[str, Any], fast: dict[str, Any]) -> tuple[float, float, float]:
    """``slow`` p50 / ``fast`` p50 taken round by round: (median, min, max) over rounds.

    Round r of every backend ran back to back (the stage interleaves them), so
    each round's ratio compares two backends on the same machine state; the
    machine's drift over the run cancels out of it. Rows without per-round
    figures fall back to the ratio of the medians.
    """
    a, b = slow.get("round_p50_ms"), fast.get("round_p50_ms")
    if a and b and len(a) == len(b):
        ratios = [x / y for x, y in zip(a, b, strict=True)]
    else:
        ratios = [slow["p50_ms"] / fast["p50_ms"]]
    return statistics.median(ratios), min(ratios), max(ratios)


def add_speedups(latency: list[dict[str, Any]]) -> None:
    """``speedup_vs_torch_fp32``: torch fp32 over this backend on the same device and shape."""
    ref = {
        (r["device"], r["batch"], r["seq"]): r
        for r in latency
        if r["framework"] == "torch" and r["precision"] == "fp32"
    }
    for row in latency:
        base = ref.get((row["device"], row["batch"], row["seq"]))
        row["speedup_vs_torch_fp32"] = paired_ratio(base, row)[0] if base else None


def _reference_accuracy(accuracy: list[dict[str, Any]]) -> float | None:
    for row in accuracy:
        if row["framework"] == "torch" and row["precision"] == "fp32":
            return float(row["accuracy"])
    return None


def within_budget(accuracy: list[dict[str, Any]], budget_points: float) -> set[str]:
    ref = _reference_accuracy(accuracy)
    if ref is None:
        return {r["backend"] for r in accuracy}
    return {r["backend"] for r in accuracy if (ref - r["accuracy"]) * 100 <= budget_points + 1e-9}


def target_shape(latency: list[dict[str, Any]]) -> tuple[int, int, int] | None:
    """(smallest batch, largest batch, seq): seq 128 when measured, else the smallest seq."""
    if not latency:
        return None
    seqs = sorted({r["seq"] for r in latency})
    batches = sorted({r["batch"] for r in latency})
    return batches[0], batches[-1], 128 if 128 in seqs else seqs[0]


def _cell(
    latency: list[dict[str, Any]], backend: str, batch: int, seq: int
) -> dict[str, Any] | None:
    return next(
        (r for r in latency if r["backend"] == backend and r["batch"] == batch and r["seq"] == seq),
        None,
    )


def choose_best(
    latency: list[dict[str, Any]], accuracy: list[dict[str, Any]], budget_points: float
) -> str | None:
    """The backend with the most samples/s at the largest batch, within the accuracy budget."""
    shape = target_shape(latency)
    if shape is None:
        return None
    _, big, seq = shape
    ok = within_budget(accuracy, budget_points)
    rows = [r for r in latency if r["batch"] == big and r["seq"] == seq and r["backend"] in ok]
    return max(rows, key=lambda r: r["samples_per_s"])["backend"] if rows else None


def _fastest(
    latency: list[dict[str, Any]], backends: set[str], batch: int, seq: int
) -> dict[str, Any] | None:
    rows = [
        r for r in latency if r["backend"] in backends and r["batch"] == batch and r["seq"] == seq
    ]
    return min(rows, key=lambda r: r["p50_ms"]) if rows else None


def _target(
    name: str,
    measured: float | None,
    goal: str,
    met: bool | None,
    detail: str,
    spread: tuple[float, float] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target": name,
        "measured": measured,
        "goal": goal,
        "met": met,
        "detail": detail,
    }
    if spread is not None:
        out["spread"] = list(spread)
    return out


def _speed_target(
    name: str, goal: float, slow: dict[str, Any], fast: dict[str, Any], digits: int
) -> dict[str, Any]:
    ratio, low, high = paired_ratio(slow, fast)
    return _target(
        name,
        ratio,
        f">= {goal:g}x",
        ratio >= goal,
        f"{fast['backend']} {fast['p50_ms']:.{digits}f} ms vs {slow['backend']} "
        f"{slow['p50_ms']:.{digits}f} ms; per-round ratio {low:.2f}–{high:.2f}",
        (low, high),
    )


def summary_targets(results: dict[str, Any], budget_points: float) -> list[dict[str, Any]]:
    """The issue's CPU goals, each with the measured value (met or not)."""
    latency, accuracy = results["latency"], results["accuracy"]
    shape = target_shape(latency)
    if shape is None:
        return []
    small, big, seq = shape
    ok = within_budget(accuracy, budget_points)
    ort = {
        r["backend"] for r in latency if r["framework"] == "onnxruntime" and r["device"] == "cpu"
    }
    torch_cpu = {
        r["backend"] for r in latency if r["framework"] == "torch" and r["device"] == "cpu"
    }
    fp32 = _cell(latency, "torch/fp32/cpu", small, seq)
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
    ref = _reference_accuracy(accuracy)
    for best in {b["backend"] for b in (best_small, best_big) if b}:
        row = next((r for r in accuracy if r["backend"] == best), None)
        if row and ref is not None:
            drop = (ref - row["accuracy"]) * 100
            out.append(
                _target(
                    f"accuracy drop of {best} vs torch fp32 (points)",
                    drop,
                    f"<= {budget_points}",
                    drop <= budget_points,
                    f"{row['accuracy']:.4f} vs {ref:.4f} on {row['n']} test rows",
                )
            )
    e2e = results.get("e2e", {})
    for run in e2e.get("runs", []):
        if run["backend"] != e2e["backend"]:
            continue
        speedup = run["bucketing_speedup"]
        out.append(
            _target(
                f"length-bucketed vs pad-to-max end-to-end throughput, max_length {run['max_length']}",
                speedup,
                ">= 2x",
                speedup >= 2,
                f"{run['backend']}: {run['bucketed']['samples_per_s']:.1f} vs "
                f"{run['pad_to_max']['samples_per_s']:.1f} samples/s on {run['rows']} rows",
            )
        )
    return out


# -- files ----------------------------------------------------------------------
def write_reports(bench_dir: Path, results: dict[str, Any]) -> list[Path]:
    bench_dir.mkdir(parents=True, exist_ok=True)
    paths = [bench_dir / "results.json", bench_dir / "results.csv", bench_dir / "results.md"]
    if results.get("quick"):
        results["targets"].append(
            _target(
                "bench --quick wall time (s)",
                results["wall_s"],
                f"<= {QUICK_LIMIT_S:.0f}",
                results["wall_s"] <= QUICK_LIMIT_S,
                "measured up to writing the reports",
            )
        )
    write_json(paths[0], results)
    write_text(paths[1], to_csv(results))
    plots = write_plots(bench_dir, results)
    write_text(paths[2], to_markdown(results, [p.name for p in plots]))
    return paths + plots


def to_csv(results: dict[str, Any]) -> str:
    """One row per (backend, shape), with the backend's accuracy figures alongside."""
    acc = {r["backend"]: r for r in results["accuracy"]}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*LATENCY_FIELDS, *ACC_FIELDS])
    for row in results["latency"]:
        a = acc.get(row["backend"], {})
        writer.writerow([row.get(f) for f in LATENCY_FIELDS] + [a.get(f) for f in ACC_FIELDS])
    return buf.getvalue()


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


def to_markdown(results: dict[str, Any], plots: list[str]) -> str:
    m = results["machine"]
    threads = m["threads"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "none"
    v = m["versions"]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['cpu_flags']) or 'no AVX-512'}), "
        f"GPU: {gpu}. Threads: torch {threads['torch_intra_op']}, "
        f"onnxruntime {threads['onnxruntime_intra_op']}. "
        + ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime", "transformers") if k in v)
        + ".",
        "",
        f"Model: {results['model']['model_type']}, {results['model']['layers']} layers, "
        f"hidden {results['model']['hidden_size']}. Mode: {'quick' if results['quick'] else 'full'}; "
        f"wall time {results['wall_s']:.0f} s. Latency inputs: {results['latency_inputs']}. "
        f"Each figure is the median over {results['settings']['repeats']} rounds, interleaved "
        "across backends and shapes (round r of every one before round r + 1 of any), so "
        "the spread (the rounds' min–max) covers the machine's drift over the run; "
        "speed-ups are taken round by round."
        + (
            f" CPU steal time during the latency rounds: {m['cpu_steal_percent_latency_phase']}%."
            if m.get("cpu_steal_percent_latency_phase") is not None
            else ""
        ),
        "",
    ]
    load = [x for x in (m.get("load_average_at_start"), m.get("load_average_at_end")) if x]
    # The benchmark's own threads count in the load average: only load beyond
    # them (plus half a core of slack) means another process competed.
    own = max(
        (v for k, v in m.get("threads", {}).items() if isinstance(v, int)), default=m["cores"]
    )
    if load and max(x[0] for x in load) > own + 0.5:
        lines += [
            f"**Warning:** the 1-minute load average was {' then '.join(str(x[0]) for x in load)} "
            f"on {m['cores']} cores: other processes competed for the CPU and these figures "
            "are slower and noisier than on an idle machine.",
            "",
        ]
    if results["targets"]:
        lines += ["## Targets", ""]
        lines += _table(
            ["target", "measured", "goal", "met", "detail"],
            [
                [
                    t["target"],
                    _fmt(t["measured"])
                    + (" ({:.2f}–{:.2f})".format(*t["spread"]) if t.get("spread") else ""),
                    t["goal"],
                    {True: "yes", False: "**no**", None: "–"}[t["met"]],
                    t["detail"],
                ]
                for t in results["targets"]
            ],
        )
        lines.append("")
    lines += reproducibility.markdown(results.get("reproducibility", {}))
    lines += ["## Latency", ""]
    runs = int(results.get("runs_in_history") or 1)
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
    rows = []
    for r in sorted(results["latency"], key=lambda r: (r["seq"], r["batch"], r["p50_ms"])):
        row = [
            r["backend"],
            r["precision"],
            str(r["batch"]),
            str(r["seq"]),
            _fmt(r["p50_ms"]),
            _fmt(r["p90_ms"]),
            _fmt(r["p99_ms"]),
            f"{r['p50_spread_ms'][0]:.2f}–{r['p50_spread_ms'][1]:.2f}",
        ]
        if runs > 1:
            count = r.get("run_to_run_runs", 1)
            low, high = r.get("run_to_run_p50_ms") or (r["p50_ms"], r["p50_ms"])
            row.append(f"{low:.2f}–{high:.2f} ({count})" if count > 1 else "– (this run only)")
        speedup = r["speedup_vs_torch_fp32"]
        row += [_fmt(r["samples_per_s"], 1), _fmt(speedup) + ("x" if speedup else "")]
        rows.append(row)
    lines += _table(header, rows)
    lines += ["", "## Accuracy on the test split", ""]
    lines += _table(
        [
            "backend",
            "precision",
            "rows",
            "accuracy",
            "F1 (closed)",
            f"agreement with {results['reference']}",
            "max abs logit diff",
        ],
        [
            [
                r["backend"],
                r["precision"],
                str(r["n"]),
                _fmt(r["accuracy"], 4),
                _fmt(r["f1"], 4),
                _fmt(r["agreement"], 4),
                _fmt(r["max_abs_diff"], 5),
            ]
            for r in results["accuracy"]
        ],
    )
    e2e = results["e2e"]
    lines += ["", "## End-to-end (tokenize + infer)", ""]
    if e2e.get("runs"):
        lines += _table(
            [
                "backend",
                "rows",
                "batch",
                "max_length",
                "pad-to-max samples/s",
                "bucketed samples/s",
                "bucketing speed-up",
                "real tokens (pad-to-max / bucketed)",
            ],
            [
                [
                    r["backend"],
                    str(r["rows"]),
                    str(r["batch_size"]),
                    str(r["max_length"]),
                    _fmt(r["pad_to_max"]["samples_per_s"], 1),
                    _fmt(r["bucketed"]["samples_per_s"], 1),
                    _fmt(r["bucketing_speedup"]) + "x",
                    f"{r['pad_to_max']['real_token_fraction']:.0%} / {r['bucketed']['real_token_fraction']:.0%}",
                ]
                for r in e2e["runs"]
            ],
        )
    else:
        lines.append(e2e.get("note", "not measured"))
    if results["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{s['backend']}`: {s['reason']}" for s in results["skipped"]]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"

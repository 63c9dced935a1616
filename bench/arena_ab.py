#!/usr/bin/env python
"""ONNX Runtime's CPU memory arena on vs off: paired latency and peak memory.

    python bench/arena_ab.py --run-dir runs/default [--rounds 7] [--min-round-s 0.3]
        [--models model.onnx model.int8.onnx model.cpu.onnx] [--shapes 1x128 32x128 32x512]

Why: with the arena on, a session keeps the largest memory any of its runs
needed (about 2.1 GB for MiniLM after batch 32 x seq 512), and the bench holds
several sessions at once; with it off a session holds 0.02-0.2 GB. The same
session options serve deployment, so switching the arena off must not cost
latency there. This script measures that cost.

Latency: for each model and shape, one session with the arena on and one with
it off (both otherwise :func:`bertrt.ort_sessions.session_options`), the same
synthetic inputs, warmed up; then ``--rounds`` rounds, each timing both
sessions back to back (order alternating), each side at least
``--min-round-s`` seconds of iterations. The figure is off/on: the median
over rounds of the ratio of the two medians within a round (paired, so
drift of a shared machine cancels), and the rounds' range.

Memory: one child process per mode opens every model (sessions held at once,
as the bench does), runs each shape twice, and reports its peak resident
memory (VmHWM) and the resident memory left after the runs.

Timings depend on the machine's load: run it on an idle machine for a
decision; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.ort_sessions import cpu_session, session_options
from bertrt.runners.timing import synthetic_batch

# mode: (arena on, shrink the arena after every run, memory pattern on). "on" is ORT's
# default and the reference every other mode is compared with; "shrink" keeps the arena
# within a run and gives back what it grew by at the end of each (a run option);
# "nopattern" keeps the arena but not ORT's per-shape memory pattern (one planned block
# for all of a run's tensors, allocated from the second run of a shape on, while the
# first run's chunks still sit in the arena: the arena doubles).
MODES = {
    "on": (True, False, True),
    "off": (False, False, True),
    "shrink": (True, True, True),
    "nopattern": (True, False, False),
}


class Session:
    """One ORT CPU session with the project's options and one arena setting."""

    def __init__(self, path: Path, mode: str, threads: int | None) -> None:
        import onnxruntime as ort

        arena, shrink, pattern = MODES[mode]
        options = session_options(threads)
        options.enable_cpu_mem_arena = arena
        options.enable_mem_pattern = pattern
        self.session = cpu_session(path, options=options)
        self.run_options = ort.RunOptions()
        if shrink:
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, feed: dict[str, np.ndarray]) -> Any:
        return self.session.run(None, feed, self.run_options)


def feed_for(session: Session, shape: tuple[int, int], vocab: int) -> dict[str, np.ndarray]:
    return {k: v for k, v in synthetic_batch(*shape, vocab).items() if k in session.inputs}


def timed_round(session: Session, feed: dict[str, np.ndarray], min_s: float) -> float:
    """Median seconds of one run, over at least ``min_s`` seconds (and 2 runs) after one untimed."""
    session.run(feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 2 or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        session.run(feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ab_cell(path: Path, shape: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """Paired rounds of every mode against arena on, for one model and one (batch, seq)."""
    sessions = {mode: Session(path, mode, args.threads) for mode in args.modes}
    feed = feed_for(sessions["on"], shape, args.vocab)
    for session in sessions.values():
        for _ in range(2):
            session.run(feed)
    ratios: dict[str, list[float]] = {mode: [] for mode in args.modes if mode != "on"}
    on_ms = []
    for r in range(args.rounds):
        order = args.modes[r % len(args.modes) :] + args.modes[: r % len(args.modes)]
        medians = {mode: timed_round(sessions[mode], feed, args.min_round_s) for mode in order}
        for mode, values in ratios.items():
            values.append(medians[mode] / medians["on"])
        on_ms.append(medians["on"] * 1e3)
    cell: dict[str, Any] = {
        "model": path.name,
        "batch": shape[0],
        "seq": shape[1],
        "arena_on_p50_ms": round(statistics.median(on_ms), 2),
        "rounds": args.rounds,
    }
    for mode, values in ratios.items():
        cell[f"{mode}_over_on_median"] = round(statistics.median(values), 3)
        cell[f"{mode}_over_on_range"] = [round(min(values), 3), round(max(values), 3)]
    return cell


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def memory_child(args: argparse.Namespace, mode: str) -> None:
    """In a fresh process: every model open at once, each shape run twice (as a timing round
    repeats it: ORT's memory pattern is used from a shape's second run); print peak/after RSS."""
    base = _vm("VmRSS")
    sessions = [Session(p, mode, args.threads) for p in args.paths]
    for session in sessions:
        for shape in args.shape_list:
            for _ in range(2):
                session.run(feed_for(session, shape, args.vocab))
    print(
        json.dumps(
            {
                "mode": mode,
                "sessions": len(sessions),
                "rss_before_gb": round(base, 2),
                "peak_rss_gb": round(_vm("VmHWM"), 2),
                "rss_after_runs_gb": round(_vm("VmRSS"), 2),
            }
        )
    )


def memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--memory-child", mode, *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument(
        "--models", nargs="+", default=["model.onnx", "model.int8.onnx", "model.cpu.onnx"]
    )
    parser.add_argument("--shapes", nargs="+", default=["1x128", "32x128", "32x512"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=["on", "off"], help="'on' is added"
    )
    parser.add_argument("--min-round-s", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (all cores)")
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memory-child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.modes = ["on", *[m for m in dict.fromkeys(args.modes) if m != "on"]]
    args.paths = [args.run_dir / "onnx" / m for m in args.models]
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        parser.error(f"missing model file(s): {', '.join(missing)}")
    try:
        args.shape_list = [tuple(int(x) for x in s.split("x")) for s in args.shapes]
    except ValueError:
        parser.error(f"--shapes: BATCHxSEQ expected, got {args.shapes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.memory_child:
        memory_child(args, args.memory_child)
        return 0
    load_before = os.getloadavg()
    cells = []
    if not args.skip_latency:
        others = [m for m in args.modes if m != "on"]
        print(
            "model            batch  seq  arena-on p50"
            + "".join(f"  {m}/on median (range)" for m in others)
        )
        for path in args.paths:
            for shape in args.shape_list:
                cell = ab_cell(path, shape, args)
                cells.append(cell)
                line = f"{cell['model']:<16} {cell['batch']:>5} {cell['seq']:>4} {cell['arena_on_p50_ms']:>10.1f} ms"
                for m in others:
                    lo, hi = cell[f"{m}_over_on_range"]
                    line += f"  {cell[f'{m}_over_on_median']:>8.3f} ({lo:.3f}-{hi:.3f})"
                print(line, flush=True)
    mem = [] if args.skip_memory else memory(args)
    for row in mem:
        print(
            f"arena {row['mode']:<3}: {row['sessions']} sessions held, peak RSS "
            f"{row['peak_rss_gb']:.2f} GB, after the runs {row['rss_after_runs_gb']:.2f} GB"
        )
    load = {"before": [round(x, 2) for x in load_before], "after": list(os.getloadavg())}
    print(f"load average before {load['before']}, after {[round(x, 2) for x in load['after']]}")
    if args.json:
        args.json.write_text(json.dumps({"cells": cells, "memory": mem, "load": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

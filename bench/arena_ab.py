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
as the bench does), runs each shape once, and reports its peak resident
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

from bertrt.bench.timing import synthetic_batch
from bertrt.ort_sessions import cpu_session, session_options

MODES = {"on": True, "off": False}


def open_session(path: Path, arena: bool, threads: int | None) -> Any:
    options = session_options(threads)
    options.enable_cpu_mem_arena = arena
    return cpu_session(path, options=options)


def feed_for(session: Any, shape: tuple[int, int], vocab: int) -> dict[str, np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in synthetic_batch(*shape, vocab).items() if k in names}


def timed_round(session: Any, feed: dict[str, np.ndarray], min_s: float) -> float:
    """Median seconds of one run, over at least ``min_s`` seconds (and 2 runs) after one untimed."""
    session.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 2 or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ab_cell(path: Path, shape: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """Paired rounds, arena on vs off, for one model and one (batch, seq)."""
    sessions = {mode: open_session(path, arena, args.threads) for mode, arena in MODES.items()}
    feed = feed_for(sessions["on"], shape, args.vocab)
    for session in sessions.values():
        for _ in range(2):
            session.run(None, feed)
    ratios, on_ms = [], []
    for r in range(args.rounds):
        order = ["on", "off"] if r % 2 == 0 else ["off", "on"]
        medians = {mode: timed_round(sessions[mode], feed, args.min_round_s) for mode in order}
        ratios.append(medians["off"] / medians["on"])
        on_ms.append(medians["on"] * 1e3)
    return {
        "model": path.name,
        "batch": shape[0],
        "seq": shape[1],
        "arena_on_p50_ms": round(statistics.median(on_ms), 2),
        "off_over_on_median": round(statistics.median(ratios), 3),
        "off_over_on_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "rounds": len(ratios),
    }


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def memory_child(args: argparse.Namespace, mode: str) -> None:
    """In a fresh process: every model open at once, each shape run once; print peak/after RSS."""
    base = _vm("VmRSS")
    sessions = [open_session(p, MODES[mode], args.threads) for p in args.paths]
    for session in sessions:
        for shape in args.shape_list:
            session.run(None, feed_for(session, shape, args.vocab))
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
    for mode in MODES:
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
    parser.add_argument("--min-round-s", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (all cores)")
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memory-child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
        print("model            batch  seq  arena-on p50  off/on median  off/on range")
        for path in args.paths:
            for shape in args.shape_list:
                cell = ab_cell(path, shape, args)
                cells.append(cell)
                lo, hi = cell["off_over_on_range"]
                print(
                    f"{cell['model']:<16} {cell['batch']:>5} {cell['seq']:>4} "
                    f"{cell['arena_on_p50_ms']:>10.1f} ms  {cell['off_over_on_median']:>12.3f}"
                    f"  {lo:.3f}-{hi:.3f}",
                    flush=True,
                )
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

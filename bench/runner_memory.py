#!/usr/bin/env python
"""Resident memory each bench runner keeps, held at once as the bench holds them.

    python bench/runner_memory.py --run-dir runs/default [--shapes 1x128 8x256 32x512]
        [--backends all]

Activates the runners ``bertrt bench`` would (the same discovery), one after
another, keeping every one active, and runs each once on every shape of the
grid (largest last, as the warm-up does). Prints, per runner, the process's
resident memory (RSS) it added by activation and by its runs, and the peak
(VmHWM) so far. What a runner adds by its runs and keeps is memory an
allocator holds for the next run (ONNX Runtime's arena, OpenVINO's buffers):
with every runner held at once, that is what adds up to the bench's peak.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

from bertrt.artifacts import RunDir
from bertrt.runners.registry import discover
from bertrt.runners.timing import synthetic_batch

GB = 1e9


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GB
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--shapes", nargs="+", default=["1x128", "8x256", "32x512"])
    parser.add_argument("--backends", nargs="+", default=["all"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument(
        "--trim", action="store_true", help="glibc malloc_trim(0) after each runner's runs"
    )
    parser.add_argument(
        "--release",
        action="store_true",
        help="Runner.release_memory() after every run, as the bench's rounds do",
    )
    parser.add_argument(
        "--passes", type=int, default=1, help="then run every held runner on every shape again"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    shapes: list[tuple[int, int]] = []
    for text in args.shapes:
        batch, seq = text.split("x")
        shapes.append((int(batch), int(seq)))
    found = discover(RunDir(args.run_dir), args.threads, args.backends, max_shape=max(shapes))
    print(f"start: RSS {_vm('VmRSS'):.2f} GB")
    print(f"{'runner':<36} {'activate':>9} {'runs':>9} {'RSS':>7} {'peak':>7}")
    held = []
    for cand in found.runners:
        runner = cand.build()
        before = _vm("VmRSS")
        runner.activate()
        held.append(runner)
        active = _vm("VmRSS")
        for batch, seq in shapes:
            if runner.accepts(batch, seq):
                runner(synthetic_batch(batch, seq, args.vocab))
            if args.release:
                runner.release_memory()
        if args.trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        after = _vm("VmRSS")
        print(
            f"{runner.label:<36} {active - before:>+8.2f}G {after - active:>+8.2f}G "
            f"{after:>6.2f}G {_vm('VmHWM'):>6.2f}G",
            flush=True,
        )
    for _ in range(args.passes - 1):  # as the bench's interleaved rounds do, all held
        for runner in held:
            for batch, seq in shapes:
                if runner.accepts(batch, seq):
                    runner(synthetic_batch(batch, seq, args.vocab))
                if args.release:
                    runner.release_memory()
                if args.trim:
                    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(f"after {args.passes} passes: RSS {_vm('VmRSS'):.2f} GB, peak {_vm('VmHWM'):.2f} GB")
    for skip in found.skipped:
        print(f"skipped: {str(skip)[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

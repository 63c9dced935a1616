#!/usr/bin/env python
"""Peak resident memory of each pipeline stage, each run as its own process.

    python bench/pipeline_memory.py --run-dir runs/mem export calibrate bench \\
        [--set KEY=VALUE ...] [--config FILE] [--out bench-memory]

Runs ``python -m bertrt <stage> --run-dir R [--config F] [--set ...]`` for each
stage in order, one child process at a time, and reports for each:

- ``peak_rss_gb``: the kernel's maximum resident set size of the child and
  of any descendant it waited for (``wait4``'s ``ru_maxrss``: what GNU
  ``time -v`` reports as "Maximum resident set size"); the largest single
  process, which is what decides whether a machine runs out of memory when
  the stage is one process. Linux carries the launching process's own peak
  into a child's ru_maxrss across exec, so run this tool as its own small
  process (as below), never from inside a large one;
- ``peak_tree_rss_gb``: the largest sum of RSS over the child's whole
  process tree, sampled every ``--interval`` seconds (catches a stage that
  spreads its memory over worker processes; a short spike between samples
  can be missed, hence both figures);
- wall time and the load average before and after (memory does not depend
  on the machine's load, time does).

With ``--timeline``, each sample of the tree's RSS is also written to
``<out>.<stage>.timeline.tsv`` beside the last line the stage had printed to
stderr by then (its log or progress bar), so the peak can be placed in the
stage's own phases.

Writes ``<out>.json`` and ``<out>.md`` (a table for docs/findings.md) and
prints the table. A stage that fails stops the sequence (exit 1), its
figures still reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import psutil

GB = 1e9


@dataclass
class StageMemory:
    stage: str
    command: list[str]
    exit_code: int
    wall_s: float
    peak_rss_gb: float
    peak_tree_rss_gb: float
    load_before: list[float]
    load_after: list[float]


def _tree_rss(root: psutil.Process) -> int:
    """Sum of RSS over ``root`` and its live descendants (processes gone mid-read count 0)."""
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


class Timeline:
    """The child's stderr, echoed, with its last line kept; and (time, RSS, that line) samples."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last_line = ""
        self.samples: list[tuple[float, int, str]] = []

    def echo(self, stream: IO[bytes]) -> None:
        """Copy ``stream`` to stderr; a line ends at a newline or a carriage return (tqdm)."""
        pending = b""
        while chunk := stream.read1(4096):  # type: ignore[attr-defined]
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            *lines, pending = re.split(rb"[\r\n]", pending + chunk)
            for line in reversed(lines):
                if line.strip():
                    self.last_line = line.decode(errors="replace").strip()[:160]
                    break

    def add(self, rss: int) -> None:
        self.samples.append((time.perf_counter() - self.start, rss, self.last_line))

    def write(self, path: Path) -> None:
        rows = [f"{t:.1f}\t{rss / GB:.3f}\t{line}" for t, rss, line in self.samples]
        path.write_text("t_s\trss_gb\tlast_stderr_line\n" + "\n".join(rows) + "\n")


def _sample_tree(
    pid: int, interval: float, stop: threading.Event, peak: list[int], timeline: Timeline | None
) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        rss = _tree_rss(root)
        peak[0] = max(peak[0], rss)
        if timeline is not None:
            timeline.add(rss)
        stop.wait(interval)


def measure(
    stage: str, command: list[str], interval: float, timeline: Timeline | None = None
) -> StageMemory:
    """Run ``command`` and return its peak memory (ru_maxrss via wait4, and the sampled tree sum)."""
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    child = subprocess.Popen(command, stderr=subprocess.PIPE if timeline else None)
    stop, peak = threading.Event(), [0]
    threads = [
        threading.Thread(target=_sample_tree, args=(child.pid, interval, stop, peak, timeline))
    ]
    if timeline is not None and child.stderr is not None:
        threads.append(threading.Thread(target=timeline.echo, args=(child.stderr,)))
    for thread in threads:
        thread.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    child.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen quiet
    return StageMemory(
        stage=stage,
        command=command,
        exit_code=child.returncode,
        wall_s=round(time.perf_counter() - start, 1),
        peak_rss_gb=round(usage.ru_maxrss * 1024 / GB, 2),  # ru_maxrss is in KiB on Linux
        peak_tree_rss_gb=round(peak[0] / GB, 2),
        load_before=load_before,
        load_after=[round(x, 2) for x in os.getloadavg()],
    )


def machine() -> dict[str, object]:
    """CPU model, core count and memory of this machine, for the report's heading."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / GB, 1),
    }


def markdown(rows: list[StageMemory], host: dict[str, object], extra: list[str]) -> str:
    lines = [
        f"Machine: {host['cpu']}, {host['logical_cpus']} logical CPUs, {host['memory_gb']} GB.",
        f"Options: {' '.join(extra) or '(default config)'}",
        "",
        "| stage | peak RSS (largest process) | peak RSS (process tree, sampled) "
        "| wall | load before → after | exit |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.stage} | {r.peak_rss_gb:.2f} GB | {r.peak_tree_rss_gb:.2f} GB | {r.wall_s:.0f} s "
            f"| {r.load_before[0]:.2f} → {r.load_after[0]:.2f} | {r.exit_code} |"
        )
    return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", help="bertrt stages, run in this order")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config", help="YAML config passed to every stage")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="pipeline-memory", help="writes OUT.json and OUT.md")
    parser.add_argument("--interval", type=float, default=0.5, help="tree sampling period (s)")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="also write OUT.<stage>.timeline.tsv: every sample with the stage's last stderr line",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    extra = [*(["--config", args.config] if args.config else [])]
    for item in args.set:
        extra += ["--set", item]
    host, rows = machine(), []
    for stage in args.stages:
        command = [sys.executable, "-m", "bertrt", stage, "--run-dir", args.run_dir, *extra]
        print(f"== {stage}: {' '.join(command)}", flush=True)
        timeline = Timeline() if args.timeline else None
        rows.append(measure(stage, command, args.interval, timeline))
        if timeline is not None:
            timeline.write(Path(f"{args.out}.{stage}.timeline.tsv"))
        print(f"== {stage}: peak RSS {rows[-1].peak_rss_gb:.2f} GB", flush=True)
        if rows[-1].exit_code != 0:
            break
    out = Path(args.out)
    report = {"machine": host, "options": extra, "stages": [asdict(r) for r in rows]}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(rows, host, extra)
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0 if all(r.exit_code == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Load-test ``bertrt serve`` in each of a few configurations: the serving figures.

    python bench/serve.py --run-dir runs/default [--model cpu] [--concurrency 1,4,16,32,64]
        [--requests 400] [--seconds 30] [--port 8000] [--out DIR] [--set KEY=VALUE]
        [--mode NAME=FLAGS ...]

Modes (``--mode``, repeatable; default: ``serve`` = the server's defaults,
``one-instance`` = ``--instances 1``, ``no-batching`` =
``--no-dynamic-batching``) name extra ``bertrt serve`` flags; each writes
``<run>/bench/serve-<name>/``. Where the machine has at least 4 usable
cores, the server is pinned to the first half and the load generator to the
other (``os.sched_setaffinity``); on fewer they share every core, and the
report says so.

First, with no server running, it times the model the way the server runs
it, in this process: one text at a time through the served callable
(build, tokenize at the text's own length, infer) on the texts the
concurrency-1 step will send. Then, for each mode, it starts ``bertrt
serve`` on loopback, waits until model ``bertrt`` is ready, runs ``bertrt
loadtest`` and stops the server with SIGTERM. Last,
``<run>/bench/serve-targets.{md,json}`` checks the first mode's sweep
against that batch-1 figure and the offline bench's e2e (results.json).
Run it on an idle machine, after ``bertrt bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir, write_json, write_text
from bertrt.config import load_config
from bertrt.data import load_split
from bertrt.hardware import usable_cores
from bertrt.runners.run_model import deployment_model
from bertrt.serve.client import open_direct
from bertrt.serve.loadtest import Offline, Step, targets, targets_markdown
from bertrt.serve.model import load_served
from bertrt.serve.model_config import instance_threads

BERTRT = [sys.executable, "-m", "bertrt"]
MODES = ("serve=", "one-instance=--instances 1", "no-batching=--no-dynamic-batching")


def core_split() -> tuple[set[int], set[int]] | None:
    """(server cores, client cores) where there are at least 4 usable cores, else None."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 4:
        return None
    half = len(cores) // 2
    return set(cores[:half]), set(cores[half:])


def pinned(cores: set[int] | None) -> Any:
    """A preexec_fn that pins the child to ``cores`` (None: no pinning)."""
    return None if cores is None else (lambda: os.sched_setaffinity(0, cores))


def ready(http: int) -> bool:
    try:
        open_direct(f"http://127.0.0.1:{http}/v2/models/bertrt/ready", 2).close()
        return True
    except OSError:
        return False


def serve(
    args: argparse.Namespace, flags: list[str], log: Path, cores: set[int] | None
) -> subprocess.Popen[bytes]:
    """A ``bertrt serve`` ready to answer (its output in ``log``); exits on failure to start."""
    cmd = [*BERTRT, "serve", "--run-dir", args.run_dir, "--http-port", str(args.port),
           "--grpc-port", str(args.port + 1), "--metrics-port", str(args.port + 2),
           *(["--model", args.model] if args.model else []), *flags,
           *[f"--set={s}" for s in args.set]]  # fmt: skip
    if cores is not None:
        cmd += [f"--set=threads={max(1, len(cores))}"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pinned(cores)
        )
    deadline = time.monotonic() + 600
    while not ready(args.port):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            sys.exit(f"bertrt serve did not start (see {log}):\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    return server


def seconds_for_one(served: Any, text: str) -> float:
    """One request of one text through the served callable, timed."""
    request = {"text": np.array([[text.encode()]], dtype=object)}
    start = time.perf_counter()
    served([request])
    return time.perf_counter() - start


def offline(args: argparse.Namespace) -> Offline:
    """The served model in this process, no server: the baseline of the targets."""
    run = RunDir(args.run_dir)
    config = load_config(None, args.set)
    model = args.model or deployment_model(run)
    texts = list(load_split(run, ("test",))["test"]["text"])[: args.requests]
    served = load_served(run, model, instance_threads(config, 1), config.model.max_length)
    try:
        for text in texts[:20]:  # untimed: first shapes, tokenizer caches
            seconds_for_one(served, text)
        batch1 = statistics.median(seconds_for_one(served, t) for t in texts) * 1000
        label = served.runner.label
    finally:
        served.deactivate()
    return Offline(model, round(batch1, 2), bucketed_e2e(run, label, config.model.max_length))


def bucketed_e2e(run: RunDir, label: str, max_length: int) -> float | None:
    """results.json's length-bucketed e2e samples/s of runner ``label`` at ``max_length``."""
    path = run.bench_dir / "results.json"
    if not path.is_file():
        return None
    for one in json.loads(path.read_text()).get("e2e", {}).get("runs", []):
        if one["backend"] == label and one["max_length"] == max_length:
            return float(one["bucketed"]["samples_per_s"])
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="runs/default")
    p.add_argument("--model", default=None, help="registry name (default: bertrt serve's)")
    p.add_argument("--concurrency", default="1,4,16,32,64", help="32 is where targets are read")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--port", type=int, default=8000, help="HTTP; gRPC and metrics on the next two")
    p.add_argument("--out", default=None, help="report directory (default: <run>/bench)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--mode", action="append", default=None, metavar="NAME=FLAGS")
    args = p.parse_args()
    bench = Path(args.out) if args.out else Path(args.run_dir) / "bench"
    split = core_split()
    where = (
        f"server on cores {sorted(split[0])}, client on {sorted(split[1])}"
        if split
        else f"{usable_cores()} cores: server and client share them (no pinning)"
    )
    print(where, flush=True)
    reference = offline(args)
    print(f"offline {reference}", flush=True)
    modes = [m.partition("=") for m in (args.mode or MODES)]
    for name, _, flags in modes:
        out = bench / f"serve-{name}"
        out.mkdir(parents=True, exist_ok=True)
        server = serve(args, shlex.split(flags), out / "server.log", split and split[0])
        print(f"## {name} ({flags or 'defaults'}; {where})", flush=True)
        try:
            code = subprocess.call([*BERTRT, "loadtest", "--run-dir", args.run_dir,
                                    "--url", f"127.0.0.1:{args.port}",
                                    "--metrics-url", f"http://127.0.0.1:{args.port + 2}/metrics",
                                    "--concurrency", args.concurrency, "--requests",
                                    str(args.requests), "--seconds", str(args.seconds),
                                    "--out", str(out)], preexec_fn=pinned(split and split[1]))  # fmt: skip
        finally:
            server.terminate()
            try:
                stopped = server.wait(timeout=120)
            except subprocess.TimeoutExpired:  # never leave a server holding the ports
                server.kill()
                stopped = server.wait()
        if code or stopped:
            return code or stopped
    first = bench / f"serve-{modes[0][0]}" / "serve.json"
    steps = [Step(**s) for s in json.loads(first.read_text())]
    rows = targets(steps, reference)
    write_json(bench / "serve-targets.json", {"offline": asdict(reference), "targets": rows})
    write_text(bench / "serve-targets.md", targets_markdown(rows, reference))
    print(targets_markdown(rows, reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())

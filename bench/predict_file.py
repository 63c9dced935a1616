#!/usr/bin/env python
"""Throughput and memory of ``bertrt predict --data IN --out OUT``: the file-scoring figures.

    python bench/predict_file.py --run-dir runs/default --data path/to/train-sample.csv
        [--model NAME] [--rows 100000] [--workers 1,2] [--memory-rows 10000,1000000]
        [--memory-run DIR] [--tmp DIR] [--json FILE] [--set KEY=VALUE ...]

It writes, under ``--tmp`` (default /tmp/bertrt-predict-file; never the run
directory), a Kaggle-format CSV of ``--rows`` rows made by repeating the run's
real test rows, and measures on it, one after another:

1. the offline length-bucketed end to end of the bench (``bertrt.bench.e2e``:
   tokenize + bucket + infer, the model already loaded) over the test rows, the
   same runner, batch size and max_length: the reference;
2. ``predict --data`` in one process, with and without the tokenizer thread;
3. ``--engine ray`` on a local Ray with each ``--workers`` count;
4. the peak RSS of a fresh ``bertrt predict --data`` process for each
   ``--memory-rows`` file (``--memory-run``: another run for this part, e.g. a
   tiny model, so a million rows take minutes; the pipeline is the same code).

Rows/s leave out loading the model in one process; the Ray figures include
starting the actors (seconds on a 100,000-row file). ``--paired-rounds``
also times the reference and ``predict --data`` on exactly the test rows,
back to back, round after round: the fairest ratio on a machine whose load
drifts. Each figure records the
1-minute load average before and after it: a shared machine makes them slower,
so compare only figures taken together. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, read_json
from bertrt.bench.e2e import run_policy
from bertrt.config import Config, load_config
from bertrt.data.stage import load_split, read_split
from bertrt.hardware import cpu_flags, cpu_name, usable_cores
from bertrt.runners.run_model import RunModel
from bertrt.scoring.job import ScoreOptions, layout_for
from bertrt.scoring.local import ScoreReport, score_file

ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="runs/default")
    p.add_argument("--data", required=True, help="the run's Kaggle CSV (its test rows are used)")
    p.add_argument("--config", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--model", default=None, help="(default: the run's deployment model)")
    p.add_argument("--rows", type=int, default=100_000, help="(0 skips the throughput rows)")
    p.add_argument(
        "--reference-rows",
        type=int,
        default=None,
        help="test rows of the e2e reference (default all)",
    )
    p.add_argument("--workers", default="1,2", help="Ray actor counts ('' skips Ray)")
    p.add_argument(
        "--no-overlap-rows",
        type=int,
        default=20_000,
        help="rows of the run without the tokenizer thread (0 skips)",
    )
    p.add_argument("--paired-rounds", type=int, default=3, help="reference vs predict rounds")
    p.add_argument("--memory-rows", default="10000,1000000")
    p.add_argument("--memory-run", default=None, help="run for the memory part (default --run-dir)")
    p.add_argument("--memory-model", default=None, help="(default: --model)")
    p.add_argument("--tmp", default="/tmp/bertrt-predict-file")
    p.add_argument("--json", default=None, help="(default: <tmp>/predict_file.json)")
    return p.parse_args(argv)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def measured(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    before = load()
    print(f"... {name} (load {before})", file=sys.stderr, flush=True)
    result = fn()
    return {"name": name, **result, "load_before": before, "load_after": load()}


def repeated_file(source: Path, ids: set[int], rows: int, path: Path) -> Path:
    """A Kaggle CSV of ``rows`` rows: the rows whose PostId is in ``ids``, repeated."""
    if (
        path.is_file()
        and sum(1 for _ in csv.reader(path.open(newline="", encoding="utf-8"))) == rows + 1
    ):
        return path
    with source.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        at = header.index("PostId")
        picked = [r for r in reader if r and r[at].isdigit() and int(r[at]) in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for i in range(rows):
            writer.writerow(picked[i % len(picked)])
    tmp.replace(path)
    return path


def reference_e2e(
    config: Config, run: RunDir, model: str | None, texts: list[str]
) -> dict[str, Any]:
    """The bench's offline bucketed end to end: one warm-up, then one timed pass."""
    with RunModel.open(config, run, model, static_shapes=False) as rm:
        run_policy(
            rm.runner,
            rm.tokenizer,
            texts[: rm.batch_size * 2],
            "bucketed",
            rm.batch_size,
            rm.max_length,
            progress=False,
        )
        result = run_policy(
            rm.runner, rm.tokenizer, texts, "bucketed", rm.batch_size, rm.max_length, progress=False
        )
        return {
            "rows": len(texts),
            "rows_per_s": result["samples_per_s"],
            "model": rm.name,
            "runner": rm.runner.label,
        }


def from_report(report: ScoreReport) -> dict[str, Any]:
    return {
        "rows": report.rows,
        "rows_per_s": report.rows_per_s,
        "seconds": report.seconds,
        "model": report.model,
        "runner": report.runner,
    }


def single(
    config: Config, run: RunDir, model: str | None, data: Path, out: Path, overlap: bool
) -> dict[str, Any]:
    options = ScoreOptions(data, out, layout_for(run), progress=False, overlap=overlap)
    return from_report(score_file(config, run, options, model))


def on_ray(
    config: Config, run: RunDir, model: str | None, data: Path, out: Path, workers: int
) -> dict[str, Any]:
    from bertrt.scoring.ray_engine import RayOptions, score_with_ray

    options = ScoreOptions(data, out, layout_for(run), progress=False)
    return from_report(score_with_ray(config, run, options, model, RayOptions(workers=workers)))


def peak_rss(
    run: Path, model: str | None, data: Path, out: Path, sets: list[str]
) -> dict[str, Any]:
    """Peak RSS (MB) of a fresh `bertrt predict --data` process, read by the process itself."""
    code = (
        "import resource, sys; from bertrt.cli import main; rc = main(sys.argv[1:]); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True); sys.exit(rc)"
    )
    args = ["predict", "--run-dir", str(run), "--data", str(data), "--out", str(out), *sets]
    args += ["--model", model] if model else []
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"predict failed on {data}: {done.stderr.strip().splitlines()[-1:]}")
    kb = next(
        int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("MAXRSS")
    )
    summary = next(line for line in done.stdout.splitlines() if line.startswith("wrote"))
    return {
        "peak_rss_mb": round(kb / 1024, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "summary": summary,
    }


def table(results: dict[str, Any]) -> str:
    machine = results["machine"]
    reference = results["throughput"][0]["rows_per_s"]
    lines = [
        f"CPU: {machine['cpu']} ({machine['cores']} usable cores; {', '.join(machine['isa']) or 'no AVX-512/AMX'}); "
        f"model {results['model']} ({results['runner']}), max_length {results['max_length']}, batch {results['batch_size']}",
        "",
        "| path | rows | rows/s | vs offline e2e | load (1-min, before/after) |",
        "|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['name']} | {r['rows']:,} | {r['rows_per_s']:.1f} | {r['rows_per_s'] / reference:.0%} | {r['load_before']} / {r['load_after']} |"
        )
    if results.get("paired"):
        lines += [
            "",
            "| round (same test rows, back to back) | offline e2e rows/s | predict --data rows/s | ratio | load |",
            "|---|---|---|---|---|",
        ]
        for i, (ref, got) in enumerate(results["paired"], start=1):
            lines.append(
                f"| {i} | {ref['rows_per_s']:.1f} | {got['rows_per_s']:.1f} | {got['rows_per_s'] / ref['rows_per_s']:.0%} | {ref['load_before']} / {got['load_after']} |"
            )
    if results["memory"]:
        lines += [
            "",
            "| predict --data, one process | rows | peak RSS (MB) | wall (s) | load |",
            "|---|---|---|---|---|",
        ]
        for r in results["memory"]:
            lines.append(
                f"| {r['name']} | {r['rows']:,} | {r['peak_rss_mb']} | {r['wall_s']} | {r['load_before']} / {r['load_after']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, ["train.eval_batch_size=32", *args.overrides])
    run, tmp = RunDir(args.run_dir), Path(args.tmp)
    ids = {int(i) for i in read_split(run)["splits"]["test"]}
    texts = list(load_split(run, ("test",), csv=args.data)["test"]["text"])[: args.reference_rows]
    results: dict[str, Any] = {
        "machine": {
            "cpu": cpu_name(),
            "cores": usable_cores(),
            "isa": [f for f in ISA if f in cpu_flags()],
        }
    }
    ref = measured(
        f"offline bucketed e2e (bench), {len(texts):,} test rows",
        lambda: reference_e2e(config, run, args.model, texts),
    )
    results |= {
        "model": ref["model"],
        "runner": ref["runner"],
        "max_length": config.model.max_length,
        "batch_size": config.train.eval_batch_size,
    }
    rows = [ref, *(throughput(args, config, run, ids, tmp) if args.rows else [])]
    results["throughput"] = rows
    results["paired"] = paired(args, config, run, texts, ids, tmp)
    results["recorded_bench_e2e"] = recorded_e2e(run)
    results["memory"] = memory(args, ids, tmp)
    path = Path(args.json or tmp / "predict_file.json")
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"\n(JSON: {path})")
    return 0


def throughput(
    args: argparse.Namespace, config: Config, run: RunDir, ids: set[int], tmp: Path
) -> list[dict[str, Any]]:
    """predict --data on the --rows file (one process, then Ray) and the tokenizer thread
    on and off on the --no-overlap-rows file."""
    data = repeated_file(Path(args.data), ids, args.rows, tmp / f"rows-{args.rows}.csv")
    name = "predict --data, one process"
    rows = [
        measured(name, partial(single, config, run, args.model, data, tmp / "out.parquet", True))
    ]
    if args.no_overlap_rows:
        small = repeated_file(
            Path(args.data), ids, args.no_overlap_rows, tmp / f"rows-{args.no_overlap_rows}.csv"
        )
        for overlap in (True, False):
            name = f"predict --data, one process, tokenizer thread {'on' if overlap else 'off'}"
            rows.append(
                measured(
                    name,
                    partial(single, config, run, args.model, small, tmp / "out.parquet", overlap),
                )
            )
    for workers in [int(w) for w in args.workers.split(",") if w]:
        rows.append(
            measured(
                f"predict --data --engine ray, {workers} worker(s)",
                partial(on_ray, config, run, args.model, data, tmp / "ray.parquet", workers),
            )
        )
    return rows


def paired(
    args: argparse.Namespace,
    config: Config,
    run: RunDir,
    texts: list[str],
    ids: set[int],
    tmp: Path,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Reference e2e and predict --data over the same test rows, alternating."""
    data = repeated_file(Path(args.data), ids, len(texts), tmp / f"rows-{len(texts)}.csv")
    rounds = []
    for _ in range(args.paired_rounds):
        ref = measured(
            "paired: offline e2e", partial(reference_e2e, config, run, args.model, texts)
        )
        got = measured(
            "paired: predict --data",
            partial(single, config, run, args.model, data, tmp / "out.parquet", True),
        )
        rounds.append((ref, got))
    return rounds


def memory(args: argparse.Namespace, ids: set[int], tmp: Path) -> list[dict[str, Any]]:
    run = Path(args.memory_run or args.run_dir)
    sets = [item for o in args.overrides for item in ("--set", o)] + [
        "--set",
        "train.eval_batch_size=32",
    ]
    out = []
    for rows in [int(r) for r in args.memory_rows.split(",") if r]:
        data = repeated_file(Path(args.data), ids, rows, tmp / f"rows-{rows}.csv")
        name = f"run {run.name}, model {args.memory_model or args.model or 'default'}"
        out.append(
            {
                "rows": rows,
                **measured(
                    name,
                    partial(
                        peak_rss,
                        run,
                        args.memory_model or args.model,
                        data,
                        tmp / "mem.parquet",
                        sets,
                    ),
                ),
            }
        )
    return out


def recorded_e2e(run: RunDir) -> Any:
    """The bucketed e2e figures of the run's last `bertrt bench`, if it has one (for reference)."""
    path = run.bench_dir / "results.json"
    if not path.is_file():
        return None
    return read_json(path).get("e2e")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())

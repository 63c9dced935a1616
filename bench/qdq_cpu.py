#!/usr/bin/env python
"""CPU speed of Q/DQ INT8 ONNX models through OpenVINO against NNCF's INT8 IR, paired rounds.

    python bench/qdq_cpu.py --ref runs/qat/openvino/model.int8.xml \
        --model ort-ptq=runs/qat/onnx/model.int8.onnx \
        --model mtq-ptq=runs/qat/onnx/model.mtq-int8.onnx \
        --model qat=runs/qat/onnx/model.qat.onnx [--shapes 32x128 1x128] [--rounds 5]

Why: OpenVINO reads explicit Q/DQ ONNX and runs its MatMuls in INT8 (VNNI/AMX),
so each Q/DQ model (ONNX Runtime's static INT8, ModelOpt's post-training INT8
and its QAT model, with or without the attention matmuls quantized) is a CPU
candidate; NNCF's INT8 IR (what `bertrt calibrate` makes, transformer preset)
is the bar to beat. Every model runs through
:class:`bertrt.runners.openvino_runner.OpenVinoRunner` with static shapes (one
compiled model per shape, as the run's CPU deployment model does).

Per shape: every runner is compiled and warmed up, then ``--rounds`` rounds,
each timing every runner back to back for at least ``--min-round-s`` seconds
(the order rotates each round). A model's figure is ref/model: the median
over rounds of the ratio of the NNCF median to the model's median within the
round (>1: faster than NNCF), paired so a shared machine's drift cancels,
with the rounds' range. The load average is printed with the results: a
loaded machine's figures are not an idle machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from bertrt.hardware import cpu_flags, cpu_name
from bertrt.runners.openvino_runner import OpenVinoRunner
from bertrt.runners.timing import synthetic_batch

REF = "nncf-int8"


def timed(runner: OpenVinoRunner, prepared: Any, min_s: float) -> float:
    """Median seconds of one inference over at least ``min_s`` seconds (and 3 runs)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        runner.infer(prepared)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shape_cell(models: dict[str, Path], shape: tuple[int, int], args: Any) -> dict[str, Any]:
    """Paired rounds of every model at one (batch, seq)."""
    batch = synthetic_batch(shape[0], shape[1], args.vocab)
    runners = {
        name: OpenVinoRunner(path, "int8", static_shapes=True) for name, path in models.items()
    }
    prepared = {}
    for name, runner in runners.items():
        runner.activate()
        prepared[name] = runner.prepare(batch)
        for _ in range(3):
            runner.infer(prepared[name])
    medians: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            medians[name].append(timed(runners[name], prepared[name], args.min_round_s))
        load.append(os.getloadavg()[0])
    for runner in runners.values():
        runner.deactivate()
    rows = {}
    for name in names:
        ratios = [ref / own for ref, own in zip(medians[REF], medians[name], strict=True)]
        rows[name] = {
            "p50_ms": round(statistics.median(medians[name]) * 1e3, 2),
            "speedup_vs_nncf": round(statistics.median(ratios), 3),
            "range": [round(min(ratios), 3), round(max(ratios), 3)],
        }
    return {
        "batch": shape[0],
        "seq": shape[1],
        "load_1min": [round(x, 2) for x in load],
        "models": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", type=Path, required=True, help="NNCF INT8 IR (.xml)")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--shapes", nargs="+", default=["32x128", "1x128"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-round-s", type=float, default=1.0)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()
    models = {REF: args.ref}
    for item in args.model:
        label, _, path = item.partition("=")
        models[label] = Path(path)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes]
    result = {
        "machine": {
            "cpu": cpu_name(),
            "flags": sorted(
                {"amx_int8", "amx_bf16", "avx512_vnni", "avx512_bf16"} & set(cpu_flags())
            ),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cells": [shape_cell(models, (b, s), args) for b, s in shapes],
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

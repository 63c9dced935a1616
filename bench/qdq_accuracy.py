#!/usr/bin/env python
"""Test-split accuracy, macro-F1 and log loss of ONNX models (fp32 and Q/DQ INT8), side by side.

    python bench/qdq_accuracy.py --run-dir runs/qat \
        --model fp32=runs/qat/onnx/model.onnx --model ort-ptq=runs/qat/onnx/model.int8.onnx \
        --model mtq-ptq=runs/qat/onnx/model.mtq-int8.onnx --model qat=runs/qat/onnx/model.qat.onnx

Every model is run by ONNX Runtime on the CPU (the reference semantics of
QuantizeLinear/DequantizeLinear) on the run's whole test split, tokenized to
``model.max_length`` and batched by length; the metrics are
:func:`bertrt.metrics.classification_metrics`. Points are against the
first model given (fp32). Models from another run of the same split can be
given (e.g. the attention-quantized ones), since only the rows come from
``--run-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.config import load_config
from bertrt.data import load_split
from bertrt.metrics import classification_metrics
from bertrt.modeling import encode, load_tokenizer
from bertrt.ort_sessions import cpu_session
from bertrt.trainer.train import stable_subsample


def logits_of(path: Path, texts: list[str], tokenizer: object, max_length: int) -> np.ndarray:
    session = cpu_session(path)
    names = [i.name for i in session.get_inputs()]
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), 0), dtype=np.float32)
    for start in range(0, len(order), 64):
        index = order[start : start + 64]
        batch = encode(tokenizer, [texts[i] for i in index], max_length)
        logits = session.run(["logits"], {n: batch[n] for n in names})[0]
        if out.shape[1] == 0:
            out = np.empty((len(texts), logits.shape[1]), dtype=np.float32)
        out[index] = logits
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument(
        "--rows", type=int, default=None, help="a seeded sample of N test rows (default all)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    config = load_config()
    test = load_split(run, ("test",))["test"]
    if args.rows:  # a seeded sample: the split keeps the file's order, which may be sorted
        test = stable_subsample(test, args.rows, config.seed)
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    tokenizer = load_tokenizer(run.merged)
    rows = {}
    for item in args.model:
        label, _, path = item.partition("=")
        started, load = time.perf_counter(), os.getloadavg()[0]
        logits = logits_of(Path(path), texts, tokenizer, config.model.max_length)
        m = classification_metrics(logits, labels)
        rows[label] = {
            "model": path,
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "log_loss": round(m["log_loss"], 4),
            "wall_s": round(time.perf_counter() - started, 1),
            "load_1min": round(load, 2),
        }
        print(json.dumps({label: rows[label]}), flush=True)
    first = next(iter(rows.values()))
    for row in rows.values():
        row["accuracy_points_vs_first"] = round(100 * (row["accuracy"] - first["accuracy"]), 2)
    result = {"rows": len(texts), "models": rows}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

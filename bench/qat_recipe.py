#!/usr/bin/env python
"""Where QAT helps: a harsher quantization recipe, with its post-training model and fp32 control.

    python bench/qat_recipe.py --run-dir runs/default [--weight-bits 4] [--set qat.steps=300]

At INT8 this pipeline's post-training models already lose almost nothing
(docs/qat.md), so quantization-aware training has nothing to recover. This
quantizes the run's merged model with a harsher recipe — weights at
``--weight-bits`` per output channel (default 4), inputs INT8 as in ``bertrt
qat`` — and scores five models on the test split, all in torch (ModelOpt's
fake quantization; no ONNX, since TensorRT's INT8 GEMMs take 8-bit weights):

- ``fp32``: the merged model;
- ``ptq``: it, quantized and calibrated (``calibration.rows`` training rows);
- ``qat``: that, fine-tuned with the quantizers in place (``bertrt qat``'s loop:
  ``qat.steps``, rows, learning rate, best-on-validation rule);
- ``fp32-ft``: the control, the same fine-tuning without quantizers;
- ``ft-ptq``: the control, then quantized the same way.

QAT helps where ``qat`` beats ``ft-ptq`` (equally trained, quantized after).
Writes ``--out`` (default ``<run>/qat-recipe-w<bits>.json``); prints the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, write_json
from bertrt.config import Config, load_config
from bertrt.data import load_split
from bertrt.export.onnx_export import load_torch_model
from bertrt.modeling import load_tokenizer, model_input_names
from bertrt.qat.finetune import finetune
from bertrt.qat.rows import finetuning_rows, validation_scorer
from bertrt.qat.stage import calibrate_quantizers
from bertrt.trainer.train import stable_subsample

ROWS = ("fp32", "ptq", "qat", "fp32-ft", "ft-ptq")


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _arm(
    config: Config, run: RunDir, splits: dict[str, Any], bits: int, quantize_first: bool
) -> dict[str, Any]:
    """One arm: quantize then fine-tune (QAT), or fine-tune then quantize (the control)."""
    tokenizer = load_tokenizer(run.merged)
    model = load_torch_model(run.merged)
    names = model_input_names(model, tokenizer)
    cfg, max_length = config.qat, config.model.max_length
    test = validation_scorer(tokenizer, splits["test"], max_length, names)
    loader, validate, _ = finetuning_rows(cfg, splits, tokenizer, max_length, names, config.seed)
    scores: dict[str, Any] = {}

    def quantized() -> None:
        calibrate_quantizers(model, splits["train"], tokenizer, names, config, bits)

    if quantize_first:
        scores["fp32"] = test(model)
        _say(f"fp32 {scores['fp32']['accuracy']:.4f}; quantizing (weights {bits}-bit)")
        quantized()
        scores["ptq"] = test(model)
        _say(f"ptq {scores['ptq']['accuracy']:.4f}; QAT, {cfg.steps} steps")
    outcome = finetune(model, loader, validate, cfg.steps, cfg.learning_rate, cfg.eval_every)
    tuned = "qat" if quantize_first else "fp32-ft"
    scores[tuned] = test(model)
    scores[f"{tuned}-best-step"] = outcome.best_step
    scores[f"{tuned}-history"] = outcome.history
    _say(f"{tuned} {scores[tuned]['accuracy']:.4f} (kept step {outcome.best_step})")
    if not quantize_first:
        quantized()
        scores["ft-ptq"] = test(model)
        _say(f"ft-ptq {scores['ft-ptq']['accuracy']:.4f}")
    return scores


def table(report: dict[str, Any]) -> str:
    """The five models as a markdown table, points against fp32."""
    base = report["fp32"]["accuracy"]
    lines = [
        "| model | accuracy | vs fp32 | macro-F1 | log loss |",
        "|---|---|---|---|---|",
    ]
    for name in ROWS:
        row = report[name]
        delta = "—" if name == "fp32" else f"{100 * (row['accuracy'] - base):+.2f}"
        lines.append(
            f"| {name} | {100 * row['accuracy']:.2f} | {delta} | "
            f"{100 * row['macro_f1']:.2f} | {row['log_loss']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--config", help="YAML config (default: the project's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--weight-bits", type=int, default=4, choices=range(2, 9))
    parser.add_argument("--test-rows", type=int, help="a seeded sample (default: the whole split)")
    parser.add_argument("--out", type=Path, help="default: RUN/qat-recipe-w<bits>.json")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = load_config(args.config, args.set)
    run, bits = RunDir(args.run_dir), args.weight_bits
    splits = load_split(run, ("train", "val", "test"), csv=config.data.csv)
    splits["test"] = stable_subsample(splits["test"], args.test_rows, config.seed)
    started = time.perf_counter()
    report: dict[str, Any] = {"weight_bits": bits, "test_rows": len(splits["test"])}
    report |= _arm(config, run, splits, bits, quantize_first=True)
    report |= _arm(config, run, splits, bits, quantize_first=False)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    out = args.out or run.root / f"qat-recipe-w{bits}.json"
    write_json(out, report)
    print(table(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The fp32 control for `bertrt qat`: the same fine-tuning without quantizers, then ModelOpt PTQ.

    python bench/qat_control.py --run-dir runs/default [--set qat.steps=300] [--out-dir DIR]

QAT fine-tunes the post-training model for ``qat.steps`` more batches. If it
scores better than post-training INT8, is that the quantization awareness or
just the extra training? This runs the same loop (:func:`bertrt.qat.finetune.finetune`,
the same rows, learning rate, steps and best-on-validation rule) on the fp32
merged model with no quantizer in it, then quantizes the fine-tuned model
with ModelOpt post-training INT8 (the same placement and calibration rows as
``bertrt qat``). It writes, under ``--out-dir`` (default ``<run>/qat-control``):

- ``model.ft.onnx``: the fine-tuned fp32 model;
- ``model.ft-mtq-int8.onnx``: that model after ModelOpt PTQ;
- ``control.json``: the validation history and both files' checks.

Score them beside the run's own models with ``bench/qdq_accuracy.py``: QAT
helps only where it beats ``model.ft-mtq-int8.onnx``, the equally trained
post-training model. Nothing in the run directory's own artifacts changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, write_json
from bertrt.config import load_config
from bertrt.data import load_split
from bertrt.export.onnx_export import export_onnx, load_torch_model
from bertrt.modeling import encode, load_tokenizer, model_input_names
from bertrt.qat.export import export_qdq
from bertrt.qat.finetune import finetune
from bertrt.qat.rows import finetuning_rows
from bertrt.qat.stage import calibrate_quantizers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--config", help="YAML config (default: the project's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out-dir", type=Path, help="default: RUN/qat-control")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = load_config(args.config, args.set)
    run, out = RunDir(args.run_dir), args.out_dir or args.run_dir / "qat-control"
    out.mkdir(parents=True, exist_ok=True)
    cfg, max_length = config.qat, config.model.max_length
    splits = load_split(run, ("train", "val"), csv=config.data.csv)
    tokenizer = load_tokenizer(run.merged)
    model = load_torch_model(run.merged)
    names = model_input_names(model, tokenizer)

    loader, score, val_rows = finetuning_rows(
        cfg, splits, tokenizer, max_length, names, config.seed
    )
    outcome = finetune(model, loader, score, cfg.steps, cfg.learning_rate, cfg.eval_every)
    report: dict[str, Any] = {
        "steps": outcome.steps,
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "validation_rows": val_rows,
        "best_step": outcome.best_step,
        "history": outcome.history,
        "wall_s": round(outcome.wall_s, 1),
    }
    texts = splits["val"]["text"].tolist()[: config.export.verify_rows]
    sample = encode(tokenizer, texts[:2], min(16, max_length), "max_length")
    export_onnx(model, out / "model.ft.onnx", sample, config.export.opset, names)

    calibrate_quantizers(model, splits["train"], tokenizer, names, config)
    path = out / "model.ft-mtq-int8.onnx"
    report["ft-mtq-int8"] = export_qdq(model, path, path.name, tokenizer, texts, names, config)
    write_json(out / "control.json", report)  # atomic: a stopped run leaves no half file
    print(f"wrote {out}/model.ft.onnx, {path.name}, control.json (best step {outcome.best_step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

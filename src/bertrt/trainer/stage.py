"""The train stage: split rows -> fine-tuned model -> adapter/, merged/, train_metrics.json.

Checkpoints go to ``checkpoints/<fingerprint>/``, the fingerprint being a
hash of everything that decides the weights (train and model config, seed,
split). Rerunning after an interruption with the same config resumes from
the last checkpoint there; any other config starts afresh. Once the stage's
artifacts are written its checkpoints are removed.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, StageTimer, atomic_dir, sha256_path, write_json
from bertrt.config import Config
from bertrt.data import load_split
from bertrt.trainer.merge import merge_and_verify
from bertrt.trainer.presets import get_preset
from bertrt.trainer.train import (
    device_description,
    fingerprint,
    stable_subsample,
    train_model,
)


def run(config: Config, run: RunDir, csv: str | Path | None = None) -> dict[str, Any] | None:
    """Train, merge, verify and record; returns train_metrics (None on non-main ranks)."""
    preset = get_preset(config.train.preset)
    run.require("train", [run.split], producer="data")
    timer = StageTimer()
    cfg = config.train
    splits = load_split(run, csv=csv)
    frames = {
        "train": stable_subsample(splits["train"], cfg.max_train_rows, config.seed),
        "val": stable_subsample(splits["val"], cfg.max_eval_rows, config.seed),
        "test": stable_subsample(splits["test"], cfg.max_eval_rows, config.seed),
    }
    key = fingerprint(config, sha256_path(run.split))
    output_dir = run.checkpoints / key
    outcome = train_model(config, preset, frames, output_dir)
    if not outcome.trainer.is_world_process_zero():
        return None
    for other in run.checkpoints.glob("*"):  # checkpoints of other configs cannot be resumed
        if other.is_dir() and other.name != key:
            shutil.rmtree(other, ignore_errors=True)

    outputs = []
    merge_info: dict[str, Any]
    model = outcome.model
    if preset.is_lora:
        with atomic_dir(run.adapter) as tmp:
            model.save_pretrained(tmp)
            outcome.tokenizer.save_pretrained(tmp)
        outputs.append(run.adapter)
        check_rows = frames["val"].head(cfg.merge_check_rows)
        model, check = merge_and_verify(
            model, outcome.tokenizer, check_rows, config.model.max_length, cfg.merge_tolerance
        )
        merge_info = {"applied": True, **check.to_dict()}
    else:
        if run.adapter.exists():  # a LoRA run's adapter would not describe this model
            shutil.rmtree(run.adapter)
        merge_info = {"applied": False, "reason": "full fine-tuning: no adapter to merge"}
    with atomic_dir(run.merged) as tmp:
        model.float().save_pretrained(tmp)
        outcome.tokenizer.save_pretrained(tmp)
    outputs.append(run.merged)

    timed = [e["train_seconds"] for e in outcome.epochs if e["train_seconds"] is not None]
    train_s = sum(timed) if timed else outcome.train_seconds
    metrics = {
        "preset": preset.name,
        "description": preset.description,
        "lora": (
            {
                "r": preset.rank,
                "alpha": preset.alpha,
                "target_modules": preset.target_regex(model.config.num_hidden_layers),
                "last_layers": preset.last_layers,
            }
            if preset.is_lora
            else None
        ),
        "base_model": config.model.base,
        "max_length": config.model.max_length,
        "seed": config.seed,
        "parameters": outcome.parameters,
        "rows": {name: len(frame) for name, frame in frames.items()},
        "epochs": outcome.epochs,
        "best_epoch": outcome.best_epoch,
        "stopped_early": outcome.stopped_early,
        "test": outcome.test,
        "merge": merge_info,
        "adapter": run.rel(run.adapter) if preset.is_lora else None,
        "train_samples_per_s": round(outcome.samples_trained / train_s, 3) if train_s else None,
        "train_wall_s": round(outcome.train_seconds, 2),
        "seconds_per_epoch": round(sum(timed) / len(timed), 2) if timed else None,
        "wall_s": None,  # filled below
        "device": device_description(outcome.precision),
        "resumed_from": outcome.resumed_from,
        "config": {"train": asdict(cfg), "model": asdict(config.model)},
    }
    metrics["wall_s"] = round(timer.elapsed, 2)
    write_json(run.train_metrics, metrics)
    outputs.append(run.train_metrics)
    run.record(
        "train",
        inputs=[run.split],
        outputs=outputs,
        wall_s=timer.elapsed,
        extra={
            "preset": preset.name,
            "test_accuracy": outcome.test["accuracy"],
            "best_epoch": outcome.best_epoch,
            "merge_max_abs_diff": merge_info.get("max_abs_diff"),
        },
    )
    shutil.rmtree(output_dir, ignore_errors=True)
    print(
        f"test accuracy {outcome.test['accuracy']:.4f} (n={outcome.test['n']}), "
        f"loss {outcome.test['loss']:.4f}; best epoch {outcome.best_epoch}; "
        f"wrote {run.merged}"
        + (f", {run.adapter}" if preset.is_lora else "")
        + f", {run.train_metrics} in {timer.elapsed / 60:.1f} min",
        file=sys.stdout,
    )
    return metrics

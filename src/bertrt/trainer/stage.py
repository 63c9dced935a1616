"""The train stage: split rows -> fine-tuned model -> adapter/, merged/, train_metrics.json.

Checkpoints go to ``checkpoints/<fingerprint>/``, the fingerprint being a
hash of everything that decides the weights (train and model config, seed,
split). Rerunning after an interruption with the same config resumes from
the last checkpoint there; any other config starts afresh. Once the stage's
artifacts are written its checkpoints are removed.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from bertrt.artifacts import RunDir, sha256_path, write_json
from bertrt.config import Config
from bertrt.data import load_split
from bertrt.data.labels import run_labels
from bertrt.stages import StageResult, Staging, stage
from bertrt.trainer import qlora
from bertrt.trainer.merge import merge_and_verify, portable_adapter_config
from bertrt.trainer.presets import Preset, resolve_preset
from bertrt.trainer.train import (
    TrainOutcome,
    device_description,
    fingerprint,
    load_base,
    stable_subsample,
    train_model,
)

# Validation rows on which merged and unmerged fp32 logits are compared.
MERGE_CHECK_ROWS = 64


def run(config: Config, rundir: RunDir, csv: str | Path | None = None) -> StageResult:
    """Train, merge, verify and record; the result's report is train_metrics.json.

    Under distributed training only the main rank writes; the others return a
    result with no outputs, and record nothing.
    """
    cfg = config.train
    preset = resolve_preset(cfg.preset, cfg.lora_rank, cfg.lora_alpha)
    if preset.quantized:
        qlora.require()
    with stage(rundir, "train", requires={"data": [rundir.split]}) as out:
        frames = _frames(config, load_split(rundir, csv=csv or config.data.csv))
        key = fingerprint(config, sha256_path(rundir.split))
        outcome = train_model(config, preset, frames, rundir.checkpoints / key, run_labels(rundir))
        if outcome.trainer.is_world_process_zero():
            _drop_other_checkpoints(rundir, key)
            _write_artifacts(config, preset, outcome, frames, out)
        else:
            out.discard()
    if out.result.outputs:  # written and recorded: nothing left to resume
        shutil.rmtree(rundir.checkpoints / key, ignore_errors=True)
    return out.result


def _frames(config: Config, splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    cfg = config.train
    return {
        "train": stable_subsample(splits["train"], cfg.max_train_rows, config.seed),
        "val": stable_subsample(splits["val"], cfg.max_eval_rows, config.seed),
        "test": stable_subsample(splits["test"], cfg.max_eval_rows, config.seed),
    }


def _drop_other_checkpoints(rundir: RunDir, key: str) -> None:
    """Checkpoints of other configs cannot be resumed by this one."""
    for other in rundir.checkpoints.glob("*"):
        if other.is_dir() and other.name != key:
            shutil.rmtree(other, ignore_errors=True)


def _write_artifacts(
    config: Config,
    preset: Preset,
    outcome: TrainOutcome,
    frames: dict[str, pd.DataFrame],
    out: Staging,
) -> None:
    """Stage adapter/ (LoRA), merged/ and train_metrics.json, and say what to record."""
    rundir = out.rundir
    merge_info = _save_models(config, preset, outcome, frames["val"], out)
    out.report = _metrics(config, preset, outcome, frames, merge_info, rundir)
    out.report["wall_s"] = round(out.elapsed, 2)
    write_json(out.path(rundir.train_metrics), out.report)
    out.facts = {
        "preset": preset.name,
        "test_accuracy": outcome.test["accuracy"],
        "best_epoch": outcome.best_epoch,
        "merge_max_abs_diff": merge_info.get("max_abs_diff"),
    }
    out.summary = (
        f"test accuracy {outcome.test['accuracy']:.4f} (n={outcome.test['n']}), "
        f"loss {outcome.test['loss']:.4f}; best epoch {outcome.best_epoch}; "
        f"wrote {rundir.merged}"
        + (f", {rundir.adapter}" if preset.is_lora else "")
        + f", {rundir.train_metrics} in {out.elapsed / 60:.1f} min"
    )


def _save_models(
    config: Config, preset: Preset, outcome: TrainOutcome, val: pd.DataFrame, out: Staging
) -> dict[str, Any]:
    """Stage the adapter (LoRA) and the merged model; return the merge check for the metrics."""
    rundir, model, tokenizer = out.rundir, outcome.model, outcome.tokenizer
    if preset.is_lora:
        model.save_pretrained(out.path(rundir.adapter))
        portable_adapter_config(out.path(rundir.adapter), config.model.base)
        tokenizer.save_pretrained(out.path(rundir.adapter))
    if preset.quantized:
        model, merge_info = _merge_qlora(config, model, tokenizer, val)
    elif preset.is_lora:
        check_rows = val.head(MERGE_CHECK_ROWS)
        model, check = merge_and_verify(
            model, tokenizer, check_rows, config.model.max_length, config.train.merge_tolerance
        )
        merge_info = {"applied": True, **check.to_dict()}
    else:
        if rundir.adapter.exists():  # a LoRA run's adapter would not describe this model
            shutil.rmtree(rundir.adapter)
        merge_info = {"applied": False, "reason": f"{preset.description}: nothing to merge"}
    model.float().save_pretrained(out.path(rundir.merged))
    tokenizer.save_pretrained(out.path(rundir.merged))
    return merge_info


def _merge_qlora(
    config: Config, model: Any, tokenizer: Any, val: pd.DataFrame
) -> tuple[Any, dict[str, Any]]:
    """The adapter merged into two fresh fp32 loads of the base (one dequantized, one not)."""
    id2label = model.config.id2label
    labels = [id2label[i] for i in range(len(id2label))]
    fresh, original = (load_base(config, labels)[0] for _ in range(2))
    return qlora.merge_and_verify(
        model,
        fresh,
        original,
        tokenizer,
        val,
        config.model.max_length,
        config.train.merge_tolerance,
    )


def _lora_block(config: Config, preset: Preset, outcome: TrainOutcome) -> dict[str, Any]:
    """r and alpha as trained, and which of them train.lora_rank / lora_alpha set."""
    layers = outcome.model.config.num_hidden_layers
    return {
        "r": preset.rank,
        "alpha": preset.alpha,
        "lora_rank": config.train.lora_rank,  # None: r is the preset's own
        "lora_alpha": config.train.lora_alpha,  # None: alpha is the preset's own
        "target_modules": preset.target_regex(layers, outcome.architecture),
        "modules_to_save": list(outcome.architecture.head),
        "last_layers": preset.last_layers,
    }


def _metrics(
    config: Config,
    preset: Preset,
    outcome: TrainOutcome,
    frames: dict[str, pd.DataFrame],
    merge_info: dict[str, Any],
    rundir: RunDir,
) -> dict[str, Any]:
    """train_metrics.json, apart from the stage's wall time."""
    timed = [e["train_seconds"] for e in outcome.epochs if e["train_seconds"] is not None]
    train_s = sum(timed) if timed else outcome.train_seconds
    return {
        "preset": preset.name,
        "description": preset.description,
        "trains": preset.trains,
        "architecture": outcome.architecture.name,
        "head_modules": list(outcome.architecture.head),
        "lora": _lora_block(config, preset, outcome) if preset.is_lora else None,
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
        "adapter": rundir.rel(rundir.adapter) if preset.is_lora else None,
        "train_samples_per_s": round(outcome.samples_trained / train_s, 3) if train_s else None,
        "train_wall_s": round(outcome.train_seconds, 2),
        "seconds_per_epoch": round(sum(timed) / len(timed), 2) if timed else None,
        "wall_s": None,  # the stage's, filled in last
        "device": device_description(outcome.precision),
        "peak_memory": outcome.peak_memory,  # while training (bertrt.trainer.memory)
        "resumed_from": outcome.resumed_from,
        "config": {"train": asdict(config.train), "model": asdict(config.model)},
    }

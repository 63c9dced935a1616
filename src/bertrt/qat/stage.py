"""`bertrt qat`: ModelOpt post-training INT8 and quantization-aware fine-tuning, as Q/DQ ONNX.

One pass over the run's merged model: quantizers inserted and calibrated on
``calibration.rows`` training rows (the same seeded sample `bertrt
calibrate` uses) give the post-training model, exported as
``onnx/model.mtq-int8.onnx``; the same model is then fine-tuned for
``qat.steps`` batches, the best validation state kept, and exported as
``onnx/model.qat.onnx``. Both are verified against the torch model they came
from and checked for TensorRT. ``qat.json`` records how, and how well.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from bertrt.artifacts import RunDir, write_json
from bertrt.calibration.reader import calibration_texts, tokenized_batches
from bertrt.config import Config, QatConfig
from bertrt.data import load_split
from bertrt.errors import ConfigError
from bertrt.export.onnx_export import load_torch_model
from bertrt.modeling import load_tokenizer, model_input_names
from bertrt.qat.export import export_qdq
from bertrt.qat.finetune import finetune
from bertrt.qat.quantize import modelopt_quantization, quantize, quantizer_counts
from bertrt.qat.rows import finetuning_rows
from bertrt.stages import StageResult, Staging, stage

log = logging.getLogger(__name__)


def run(config: Config, rundir: RunDir) -> StageResult:
    """Both Q/DQ models and qat.json; ModelOpt missing is refused before anything is read."""
    _check_settings(config.qat)
    modelopt_quantization()
    with stage(rundir, "qat", requires={"train": [rundir.merged]}, reads=[rundir.split]) as out:
        out.facts = _qat(config, rundir, out)
        write_json(out.path(rundir.qat_report), out.facts)
        best = out.facts["qat"]["best"]
        out.summary = (
            f"qat: {rundir.onnx('mtq-int8').name} validation accuracy "
            f"{out.facts['qat']['history'][0]['accuracy']:.4f}, {rundir.onnx('qat').name} "
            f"{best['accuracy']:.4f} (step {out.facts['qat']['best_step']} of "
            f"{config.qat.steps})"
        )
    return out.result


def _check_settings(cfg: QatConfig) -> None:
    """Settings the loop cannot run with, refused (exit 2) before any model is loaded."""
    bad = [
        f"qat.{key}={value!r} ({why})"
        for key, value, ok, why in (
            ("steps", cfg.steps, cfg.steps >= 0, "0 or more"),
            ("eval_every", cfg.eval_every, cfg.eval_every >= 1, "1 or more"),
            ("batch_size", cfg.batch_size, cfg.batch_size >= 1, "1 or more"),
            ("learning_rate", cfg.learning_rate, cfg.learning_rate > 0, "above 0"),
            ("eval_rows", cfg.eval_rows, cfg.eval_rows is None or cfg.eval_rows >= 1, "1 or more"),
        )
        if not ok
    ]
    if bad:
        raise ConfigError(f"qat: {'; '.join(bad)}")


def _qat(config: Config, rundir: RunDir, out: Staging) -> dict[str, Any]:
    cfg, max_length = config.qat, config.model.max_length
    splits = load_split(rundir, ("train", "val"), csv=config.data.csv)
    tokenizer = load_tokenizer(rundir.merged)
    model = load_torch_model(rundir.merged)
    names = model_input_names(model, tokenizer)
    verify_texts = splits["val"]["text"].tolist()[: config.export.verify_rows]

    batches = calibrate_quantizers(model, splits["train"], tokenizer, names, config)
    facts: dict[str, Any] = {
        "modelopt": _modelopt_version(),
        "quantize_attention": cfg.quantize_attention,
        "quantizers": quantizer_counts(model),
        "calibration_rows": len(batches) * config.calibration.batch_size,
        "inputs": list(names),
    }
    mtq_path = out.path(rundir.onnx("mtq-int8"))
    args = (tokenizer, verify_texts, names, config)
    facts["mtq-int8"] = export_qdq(model, mtq_path, rundir.onnx("mtq-int8").name, *args)

    loader, score, val_rows = finetuning_rows(
        cfg, splits, tokenizer, max_length, names, config.seed
    )
    outcome = finetune(model, loader, score, cfg.steps, cfg.learning_rate, cfg.eval_every)
    facts["qat"] = {
        "steps": outcome.steps,
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "validation_rows": val_rows,
        "best_step": outcome.best_step,
        "best": outcome.best,
        "history": outcome.history,
        "wall_s": round(outcome.wall_s, 1),
    }
    qat_path = out.path(rundir.onnx("qat"))
    facts["qat"].update(export_qdq(model, qat_path, rundir.onnx("qat").name, *args))
    return facts


def calibrate_quantizers(
    model: Any, train: Any, tokenizer: Any, names: Any, config: Config, weight_bits: int = 8
) -> list[Any]:
    """Insert ModelOpt's quantizers into ``model`` and calibrate them on ``calibration.rows``
    training rows (the seeded sample `bertrt calibrate` uses); returns the batches used.
    Also what ``bench/qat_control.py`` and ``bench/qat_recipe.py`` quantize with."""
    cal = config.calibration
    texts = calibration_texts(train, cal.rows, cal.batch_size, config.seed)
    batches = tokenized_batches(tokenizer, texts, cal.batch_size, config.model.max_length, names)
    with contextlib.redirect_stdout(sys.stderr):  # ModelOpt prints what it inserts
        quantize(model, batches, config.qat.quantize_attention, weight_bits)
    return list(batches)


def _modelopt_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("nvidia-modelopt")

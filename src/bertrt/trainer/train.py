"""Fine-tune the classifier with transformers' Trainer (LoRA via peft, head-only, or full).

Trainer brings what the issue asks for without hand-written loops: evaluation
and a checkpoint each epoch, the best epoch (lowest validation loss) restored
at the end, early stopping, bf16/fp16 mixed precision, seeding, progress bars,
resuming, and multi-GPU under ``torchrun``/``accelerate launch`` unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertrt.config import Config, TrainConfig
from bertrt.data.labels import label_maps
from bertrt.errors import ConfigError, UnavailableError
from bertrt.hardware import cpu_flags, cpu_has_native_bf16, cpu_name
from bertrt.metrics import classification_metrics
from bertrt.modeling import ATTENTION, model_input_names, resolve_base_model
from bertrt.process_memory import give_back_freed_memory
from bertrt.trainer.hub import from_pretrained
from bertrt.trainer.memory import heap_giver, peak_memory
from bertrt.trainer.presets import Architecture, Preset, architecture_for

log = logging.getLogger(__name__)

# Keys of the train section that do not change the trained weights.
_COSMETIC_KEYS = ("report_to", "logging_steps", "dataloader_workers", "eval_batch_size")


# -- hardware -------------------------------------------------------------------
def resolve_precision(requested: str, cuda: bool) -> str:
    """``auto`` -> bf16 on CUDA (fp16 where bf16 is missing) or a bf16-capable CPU, else fp32."""
    if requested == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UnavailableError("train.precision=bf16: this GPU has no bf16; use fp16")
    return requested


def precision_reason(precision: str, cuda: bool) -> str:
    """One line saying what training will run in and why, printed before it starts: without
    native bf16 a CPU trains in fp32, about twice as slow, and a user should know at once."""
    if cuda:
        return f"training in {precision} on {torch.cuda.get_device_name()}"
    native = sorted({"amx_bf16", "avx512_bf16"} & set(cpu_flags()))
    if precision == "bf16":
        return f"training in bf16 autocast: {cpu_name()} has native bf16 ({', '.join(native)})"
    if native:
        return f"training in fp32 (train.precision={precision}) on {cpu_name()}"
    return (
        f"training in fp32: {cpu_name()} has no native bf16 (no amx_bf16 or avx512_bf16), "
        "where bf16 autocast is emulated and slower; expect about twice the time of a CPU "
        "with it (size the run with train.max_train_rows)"
    )


def device_description(precision: str) -> dict[str, Any]:
    if torch.cuda.is_available():
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "precision": precision,
        }
    return {
        "type": "cpu",
        "name": cpu_name(),
        "threads": torch.get_num_threads(),
        "isa": cpu_flags(),  # a CPU's speed and precision depend on them (amx, avx512_bf16)
        "precision": f"{precision}-autocast" if precision != "fp32" else "fp32",
    }


# -- model ----------------------------------------------------------------------
def load_base(
    config: Config, labels: Sequence[str], nf4_precision: str | None = None
) -> tuple[Any, Any, str]:
    """The base encoder with a new head of ``len(labels)`` classes, and its tokenizer.

    ``nf4_precision``: load it in 4-bit NF4 computing in that precision (QLoRA).

    The architecture is checked on config.json first, so an unsupported base
    stops before its weights are read; a base that is nowhere to be found
    (no such directory, not in the hub cache, hub unreachable) stops with
    one line saying where it was looked for.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    base = config.model.base
    path = resolve_base_model(base)
    architecture = architecture_for(from_pretrained(AutoConfig, base, path).model_type, base)
    id2label, label2id = label_maps(labels)
    quantized: dict[str, Any] = {}
    if nf4_precision is not None:
        from bertrt.trainer import qlora

        quantized = {
            "quantization_config": qlora.quantization_config(nf4_precision, architecture),
            "device_map": {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu",
        }
    model = from_pretrained(
        AutoModelForSequenceClassification,
        base,
        path,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
        # A base that is itself a classifier (another task's head) gets a new head too.
        ignore_mismatched_sizes=True,
        attn_implementation=ATTENTION,
        **quantized,
    )
    tokenizer = from_pretrained(AutoTokenizer, base, path)
    return model, tokenizer, path


def apply_preset(model: Any, preset: Preset) -> Any:
    """What ``preset`` trains, on ``model``'s architecture (``config.model_type``).

    LoRA: a peft model whose target regex names the architecture's modules and
    whose ``modules_to_save`` is its whole head (DistilBERT's pre_classifier
    too). ``head-only``: the model with every weight but the head frozen.
    ``full``: the model as it is.
    """
    architecture = architecture_for(model.config.model_type, model.config.name_or_path)
    if preset.trains == "full":
        return model
    if preset.trains == "head":
        return freeze_all_but_head(model, architecture)
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=preset.rank,
        lora_alpha=preset.alpha,
        lora_dropout=0.1,
        target_modules=preset.target_regex(model.config.num_hidden_layers, architecture),
        modules_to_save=list(architecture.head),
    )
    return get_peft_model(model, lora)


def freeze_all_but_head(model: Any, architecture: Architecture) -> Any:
    """``head-only``: every encoder weight frozen, the head's modules trained in full.

    The head modules are looked up by exact name among the model's children, so
    a head this table does not know fails here rather than training nothing.
    """
    children = dict(model.named_children())
    missing = [name for name in architecture.head if name not in children]
    if missing:
        raise ConfigError(
            f"{type(model).__name__} has no head module {', '.join(missing)} "
            f"(expected for {architecture.name}); preset head-only cannot train it"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for name in architecture.head:
        for parameter in children[name].parameters():
            parameter.requires_grad_(True)
    return model


def parameter_counts(model: Any) -> dict[str, Any]:
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable": int(trainable),
        "total": int(total),
        "trainable_percent": round(100.0 * trainable / total, 4),
    }


# -- data -----------------------------------------------------------------------
# Rows per tokenizer call (TokenizedRows): bounds the tokenizer's per-row objects in flight.
TOKENIZE_CHUNK = 2048


class TokenizedRows(torch.utils.data.Dataset):
    """Unpadded token ids per row; DataCollatorWithPadding pads each batch to its longest row."""

    def __init__(
        self,
        tokenizer: Any,
        frame: pd.DataFrame,
        max_length: int,
        input_names: Sequence[str],
        sort: bool = False,
    ):
        """``input_names``: the model's inputs (DistilBERT has no token_type_ids).

        Tokenized ``TOKENIZE_CHUNK`` rows at a time: the fast tokenizer builds a Rust
        ``Encoding`` (tokens, offsets, masks) per row before the ids are copied out, and
        36,420 training rows at once took 1.6 GB that the allocator kept after they were
        freed; the freed pages are given back once the rows are built.
        """
        texts = list(frame["text"])
        ids: dict[str, list[Any]] = {name: [] for name in input_names}
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            encoded = tokenizer(
                texts[start : start + TOKENIZE_CHUNK],
                truncation=True,
                max_length=max_length,
                return_token_type_ids=True,
            )
            for name in input_names:
                ids[name].extend(encoded[name])
        self.rows = [
            {**{name: ids[name][i] for name in input_names}, "labels": int(label)}
            for i, label in enumerate(frame["label"])
        ]
        if sort:  # evaluation only: less padding, same metrics
            self.rows.sort(key=lambda r: len(r["input_ids"]))
        give_back_freed_memory()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def stable_subsample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """The first ``limit`` rows after a seeded shuffle: the same rows for the same split and seed."""
    if limit is None or limit >= len(frame):
        return frame
    return frame.sample(frac=1.0, random_state=seed).head(limit).reset_index(drop=True)


def fingerprint(config: Config, split_sha: str) -> str:
    """What decides the trained weights; a checkpoint is resumed only for the same fingerprint."""
    train = {k: v for k, v in asdict(config.train).items() if k not in _COSMETIC_KEYS}
    blob = json.dumps(
        {"train": train, "model": asdict(config.model), "seed": config.seed, "split": split_sha},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- training -------------------------------------------------------------------
@dataclass
class TrainOutcome:
    trainer: Any
    model: Any  # the best epoch's model (PeftModel or plain), unwrapped
    tokenizer: Any
    architecture: Architecture
    precision: str
    parameters: dict[str, Any]
    epochs: list[dict[str, Any]]
    best_epoch: int | None
    stopped_early: bool
    resumed_from: str | None
    train_seconds: float
    samples_trained: int
    test: dict[str, Any] = field(default_factory=dict)
    peak_memory: dict[str, Any] = field(default_factory=dict)


def _epoch_timer():
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        """Training time per epoch, evaluation excluded (it runs after on_epoch_end)."""

        def __init__(self) -> None:
            self.seconds: dict[int, float] = {}
            self._start = 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds[epoch_index(state.epoch)] = time.perf_counter() - self._start

    return EpochTimer()


def epoch_index(epoch: float) -> int:
    """1-based epoch a fractional Trainer epoch belongs to (0.04 -> 1, 1.0 -> 1, 1.5 -> 2)."""
    return max(1, math.ceil(epoch - 1e-6))


def _compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Validation metrics per epoch (F1 of the positive class for two classes, macro-F1 always)."""
    report = classification_metrics(eval_pred.predictions, eval_pred.label_ids)
    return {k: report[k] for k in ("accuracy", "precision", "recall", "f1", "macro_f1")}


def _epoch_history(
    log_history: list[dict[str, Any]], seconds: dict[int, float]
) -> list[dict[str, Any]]:
    """Per epoch: mean of the logged train losses in it, validation loss/accuracy/F1, time."""
    epochs: list[dict[str, Any]] = []
    for entry in log_history:
        if "eval_loss" not in entry:
            continue
        epoch = epoch_index(entry["epoch"])
        losses = [
            e["loss"] for e in log_history if "loss" in e and epoch_index(e["epoch"]) == epoch
        ]
        epochs.append(
            {
                "epoch": epoch,
                "step": entry.get("step"),
                "train_loss": float(np.mean(losses)) if losses else None,
                "val_loss": entry["eval_loss"],
                "val_accuracy": entry.get("eval_accuracy"),
                "val_f1": entry.get("eval_f1"),
                "val_macro_f1": entry.get("eval_macro_f1"),
                "train_seconds": round(seconds[epoch], 2) if epoch in seconds else None,
            }
        )
    return epochs


def train_model(
    config: Config,
    preset: Preset,
    frames: dict[str, pd.DataFrame],
    output_dir: Path,
    labels: Sequence[str],
    extra_callbacks: list[Any] | None = None,
) -> TrainOutcome:
    """Train on frames["train"], pick the best epoch on frames["val"], score frames["test"]."""
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    cfg = config.train
    cuda = torch.cuda.is_available()
    precision = resolve_precision(cfg.precision, cuda)
    print(precision_reason(precision, cuda))
    set_seed(config.seed)
    model, tokenizer, names, architecture = _prepared_model(config, preset, labels, precision)
    counts = parameter_counts(model)
    max_length = config.model.max_length
    train_ds = TokenizedRows(tokenizer, frames["train"], max_length, names)
    val_ds = TokenizedRows(tokenizer, frames["val"], max_length, names, sort=True)
    test_ds = TokenizedRows(tokenizer, frames["test"], max_length, names, sort=True)
    timer = _epoch_timer()
    trainer = _trainer(
        config, model, tokenizer, (train_ds, val_ds), output_dir, precision,
        [timer, heap_giver(), *(extra_callbacks or [])],
    )  # fmt: skip
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last:
        print(f"resuming from {last}")
    start = time.perf_counter()
    with peak_memory() as peak:
        trainer.train(resume_from_checkpoint=last)
    train_seconds = time.perf_counter() - start
    epochs = _epoch_history(trainer.state.log_history, timer.seconds)
    best = min(epochs, key=lambda e: e["val_loss"]) if epochs else None
    return TrainOutcome(
        trainer=trainer,
        # Accelerate patched forward() with the mixed-precision autocast; unwrap to plain fp32.
        model=trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False),
        tokenizer=tokenizer,
        architecture=architecture,
        precision=precision,
        parameters=counts,
        epochs=epochs,
        best_epoch=best["epoch"] if best else None,
        stopped_early=_stopped_early(cfg, trainer, len(train_ds)),
        resumed_from=last,
        train_seconds=train_seconds,
        samples_trained=_samples_trained(cfg, trainer, epochs, len(train_ds)),
        test=_test_metrics(trainer, test_ds, precision, labels),
        peak_memory=peak,
    )


def _trainer(
    config: Config,
    model: Any,
    tokenizer: Any,
    datasets: tuple[TokenizedRows, TokenizedRows],
    output_dir: Path,
    precision: str,
    callbacks: list[Any],
) -> Any:
    """transformers' Trainer over the (train, validation) rows, batches padded per batch."""
    from transformers import DataCollatorWithPadding, Trainer

    return Trainer(
        model=model,
        args=_training_arguments(config, output_dir, precision, torch.cuda.is_available()),
        train_dataset=datasets[0],
        eval_dataset=datasets[1],
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        compute_metrics=_compute_metrics,
        callbacks=_callbacks(config, callbacks),
    )


def _prepared_model(
    config: Config, preset: Preset, labels: Sequence[str], precision: str
) -> tuple[Any, Any, tuple[str, ...], Architecture]:
    """The model as the preset trains it, its tokenizer, its inputs and its architecture."""
    base, tokenizer, _ = load_base(config, labels, precision if preset.quantized else None)
    names = model_input_names(base, tokenizer)  # before peft wraps forward in **kwargs
    if preset.quantized:
        from bertrt.trainer import qlora

        base = qlora.prepare(base)
    model = apply_preset(base, preset)
    counts = parameter_counts(model)
    print(
        f"preset {preset.name}: trainable params {counts['trainable']:,} || "
        f"all params {counts['total']:,} || trainable {counts['trainable_percent']:.2f}%"
    )
    return model, tokenizer, names, architecture_for(base.config.model_type)


def _training_arguments(config: Config, output_dir: Path, precision: str, cuda: bool) -> Any:
    """Evaluate and checkpoint each epoch, restore the best (lowest validation loss) at the end."""
    from transformers import TrainingArguments

    cfg = config.train
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type=cfg.lr_scheduler,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        report_to=list(cfg.report_to) or "none",
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        dataloader_num_workers=cfg.dataloader_workers,
        label_names=["labels"],
    )


def _callbacks(config: Config, callbacks: list[Any]) -> list[Any]:
    from transformers import EarlyStoppingCallback

    cfg = config.train
    if cfg.early_stopping_patience is not None and cfg.epochs > 1:
        patience = cfg.early_stopping_patience
        return [*callbacks, EarlyStoppingCallback(early_stopping_patience=patience)]
    return callbacks


def _stopped_early(cfg: TrainConfig, trainer: Any, train_rows: int) -> bool:
    world = max(1, trainer.args.world_size)
    steps_per_epoch = max(1, -(-train_rows // (cfg.batch_size * world)))
    return bool(trainer.state.global_step < cfg.epochs * steps_per_epoch and cfg.max_steps is None)


def _samples_trained(
    cfg: TrainConfig, trainer: Any, epochs: list[dict[str, Any]], train_rows: int
) -> int:
    """Rows seen in this process: whole epochs it timed, or steps when max_steps cut training."""
    if cfg.max_steps is None:
        return sum(1 for e in epochs if e["train_seconds"] is not None) * train_rows
    return int(trainer.state.global_step * cfg.batch_size)


def _test_metrics(
    trainer: Any, test_ds: TokenizedRows, precision: str, labels: Sequence[str]
) -> dict[str, Any]:
    predictions = trainer.predict(test_ds)  # every rank takes part (distributed gather)
    test = classification_metrics(
        np.asarray(predictions.predictions), np.asarray(predictions.label_ids), labels
    )
    test["precision_mode"] = device_description(precision)["precision"]
    return test

"""`bertrt import`: start the pipeline from a classifier trained elsewhere.

The source (a saved ``*ForSequenceClassification`` directory, a hub id, or a
peft LoRA adapter, merged here with the train stage's parity check) becomes
the run's ``merged/``, written exactly as `bertrt train` writes it, so every
later stage runs unchanged. The data file is split first, by the data stage
itself (``split.json`` as `bertrt data` writes it, its classes the model's),
so the run holds two records: ``data`` and ``import``.

Later stages ask for ``merged/`` from ``train``; the manifest accepts the
``import`` record in its place (:data:`bertrt.artifacts.PRODUCER_ALTERNATIVES`),
whichever of the two wrote the current ``merged/``.

Without labels (a generic file with text columns only) the split is
unstratified and every consumer says why it has no accuracy: evaluate
refuses, calibrate chooses by agreement with fp32, the bench reports
agreement and max |Δlogit| against PyTorch fp32.
"""

from __future__ import annotations

import shutil
from typing import Any

from bertrt.artifacts import RunDir, sha256_path
from bertrt.config import Config
from bertrt.data import load_split
from bertrt.data.labels import TASK_LABELS, label_maps
from bertrt.data.stage import data_source
from bertrt.data.stage import run as data_stage
from bertrt.errors import ConfigError
from bertrt.modeling import ATTENTION, load_tokenizer, resolve_base_model
from bertrt.stages import StageResult, stage
from bertrt.trainer.merge import load_adapter, merge_and_verify
from bertrt.trainer.model_source import ModelSource, final_labels, generic_labels, resolve_source

# Validation rows an adapter's merged and unmerged logits are compared on (as train).
MERGE_CHECK_ROWS = 64


def run(
    config: Config,
    rundir: RunDir,
    model: str,
    revision: str | None = None,
    labels: list[str] | None = None,
    trust_pickle: bool = False,
) -> StageResult:
    """Split the data with the model's classes, then write merged/; the report is the record."""
    if not config.data.csv:
        raise ConfigError(
            "import: no data file given; pass --data FILE (labelled, or with --text-column "
            "only: unlabelled), which calibration and every check read rows from"
        )
    source = resolve_source(model, revision, trust_pickle)
    names = final_labels(source, labels)
    _check_kaggle_task(config, source, names)
    data_stage(config, rundir, labels=names)
    with stage(rundir, "import", requires={"data": [rundir.split]}) as out:
        classifier, tokenizer, merge = _load(config, rundir, source, len(names))
        classifier.config.id2label, classifier.config.label2id = label_maps(names)
        classifier.float().save_pretrained(out.path(rundir.merged))
        tokenizer.save_pretrained(out.path(rundir.merged))
        out.external_inputs = {str(source.path.resolve()): sha256_path(source.path)}
        out.facts = {**source.record(), "labels": list(names), "merge": merge}
        out.report = dict(out.facts)
        out.summary = (
            f"imported {source.kind} {source.given} ({source.model_type}, "
            f"{len(names)} classes: {', '.join(names)}) into {rundir.merged}"
            + (f"; merge max |Δlogit| {merge['max_abs_diff']:.2g}" if merge.get("applied") else "")
        )
    _drop_trained_leftovers(rundir)
    return out.result


def _check_kaggle_task(config: Config, source: ModelSource, names: tuple[str, ...]) -> None:
    """The Kaggle file's task fixes the classes: the model's must be the same, in order."""
    if data_source(config.data, unlabelled_ok=True)["format"] != "kaggle":
        return
    task = config.data.task
    if names == TASK_LABELS[task]:
        return
    hint = (
        f"pass --labels {','.join(TASK_LABELS[task])} if they are those classes in that order"
        if generic_labels(names) and len(names) == len(TASK_LABELS[task])
        else "pick the task with --task, or --labels to rename the model's classes"
    )
    raise ConfigError(
        f"import: {source.given} has classes {', '.join(names)}, but the Kaggle task "
        f"{task!r} has {', '.join(TASK_LABELS[task])}; {hint}"
    )


def _load(
    config: Config, rundir: RunDir, source: ModelSource, classes: int
) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, merge check) of the source; an adapter is merged and verified."""
    if source.kind != "adapter":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(source.path), attn_implementation=ATTENTION, use_safetensors=not source.pickle
        )
        return model, load_tokenizer(source.path), {"applied": False, "reason": "not an adapter"}
    assert source.base is not None
    tokenizer_dir = (
        source.path
        if source.facts.get("tokenizer") == "adapter"
        else resolve_base_model(source.base)
    )
    tokenizer = load_tokenizer(tokenizer_dir)
    rows = load_split(rundir, ("val",), csv=config.data.csv)["val"].head(MERGE_CHECK_ROWS)
    peft_model = load_adapter(source.path, classes)
    merged, check = merge_and_verify(
        peft_model, tokenizer, rows, config.model.max_length, config.train.merge_tolerance, "import"
    )
    return merged, tokenizer, {"applied": True, **check.to_dict()}


def _drop_trained_leftovers(rundir: RunDir) -> None:
    """An earlier `bertrt train` in this run left files that describe another model."""
    if rundir.adapter.exists():
        shutil.rmtree(rundir.adapter)
    rundir.train_metrics.unlink(missing_ok=True)

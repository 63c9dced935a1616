"""Score any Kaggle-format CSV, or one question, with one of the run's models.

Every model name goes through ``registry.runner_for_model``, so ``merged``
and each ONNX variant (and later ones) are evaluated by the same code, with
the same tokenization and the same metrics as the bench.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data import LABEL_NAMES, load_examples, read_split
from bertrt.data.text import clean_body, question_text
from bertrt.errors import ConfigError, MissingArtifactError
from bertrt.metrics import classification_metrics, softmax
from bertrt.modeling import encode, load_tokenizer
from bertrt.runners.registry import MODEL_NAMES, runner_for_model


def _check_model_name(model: str) -> None:
    if model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")


def _tokenizer(run: RunDir):
    """The tokenizer saved with the merged model: the one the model was trained with."""
    if not (run.merged / "tokenizer_config.json").is_file():
        raise MissingArtifactError(
            f"{run.merged} has no tokenizer; run `bertrt train --run-dir {run.root}` first"
        )
    return load_tokenizer(run.merged)


def score_texts(
    config: Config, run: RunDir, model: str, texts: list[str], progress: bool = False
) -> tuple[np.ndarray, str]:
    """Logits [n, 2] for ``texts`` (batched shortest-first to pad little), and the runner label."""
    _check_model_name(model)
    tokenizer = _tokenizer(run)
    runner = runner_for_model(run, model)
    batch_size = config.train.eval_batch_size
    order = np.argsort([len(t) for t in texts], kind="stable")
    logits = np.zeros((len(texts), 2), dtype=np.float32)
    with runner:
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=f"evaluate {model}", unit="batch", disable=not progress):
            idx = order[start : start + batch_size]
            batch = encode(tokenizer, [texts[i] for i in idx], config.model.max_length)
            logits[idx] = runner(batch)
    return logits, runner.label


def evaluate_file(config: Config, run: RunDir, csv_path: str | Path, model: str) -> dict[str, Any]:
    """Accuracy, loss, precision/recall/F1 of "closed" and the confusion matrix on one CSV."""
    _check_model_name(model)
    frame = load_examples(csv_path, run, bad_rows=config.data.bad_rows)
    start = time.perf_counter()
    logits, label = score_texts(config, run, model, list(frame["text"]), progress=True)
    elapsed = time.perf_counter() - start
    report = classification_metrics(logits, frame["label"].to_numpy())
    return {
        "model": model,
        "runner": label,
        "data": str(Path(csv_path).resolve()),
        **report,
        "positive_class": LABEL_NAMES[1],
        "labels": list(LABEL_NAMES),
        "max_length": config.model.max_length,
        "seconds": round(elapsed, 3),
    }


def format_report(report: dict[str, Any]) -> str:
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    width = max(len(str(v)) for v in (tn, fp, fn, tp, "closed"))
    return "\n".join(
        [
            f"{report['data']}  ({report['n']} rows, model {report['model']}, {report['runner']})",
            f"accuracy   {report['accuracy']:.4f}",
            f"loss       {report['loss']:.4f}",
            f"precision  {report['precision']:.4f}  (class 'closed')",
            f"recall     {report['recall']:.4f}",
            f"f1         {report['f1']:.4f}",
            "confusion matrix (rows: true, columns: predicted)",
            f"{'':>8} {'open':>{width}} {'closed':>{width}}",
            f"{'open':>8} {tn:>{width}} {fp:>{width}}",
            f"{'closed':>8} {fn:>{width}} {tp:>{width}}",
        ]
    )


def predict_text(
    config: Config,
    run: RunDir,
    model: str,
    text: str | None,
    title: str | None,
    body: str | None,
) -> tuple[str, float]:
    """The predicted label of one question and its probability.

    ``--text`` is taken as the whole question; ``--title``/``--body`` are joined
    and cleaned the way the data stage built the training texts. Tabular
    features are unknown here, so a run trained with features_in_text gets
    the text without them.
    """
    if text is not None:
        built = clean_body(text, read_split(run)["text"].get("code_blocks", "keep"))
    else:
        options = read_split(run)["text"]
        built = question_text(title or "", body or "", str(options.get("code_blocks", "keep")))
    logits, _ = score_texts(config, run, model, [built])
    probs = softmax(logits)[0]
    index = int(probs.argmax())
    return LABEL_NAMES[index], float(probs[index])

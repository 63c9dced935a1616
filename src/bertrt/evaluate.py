"""Score any Kaggle-format CSV, or one question, with one of the run's models.

Every model name goes through :func:`bertrt.runners.registry.runner_for_model`
and every batch through :func:`bertrt.runners.predict.predict_logits`, so
``merged``, each ONNX variant and the TensorRT engines are scored by the same
code, with the same tokenization and metrics as the bench.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data import LABEL_NAMES, load_examples, read_split
from bertrt.data.text import clean_body, question_text, require_text
from bertrt.errors import MissingArtifactError
from bertrt.metrics import classification_metrics, softmax
from bertrt.modeling import load_tokenizer
from bertrt.runners.base import Runner
from bertrt.runners.predict import TokenizedRows, predict_logits
from bertrt.runners.registry import runner_for_model

log = logging.getLogger(__name__)


def _tokenizer(run: RunDir) -> Any:
    """The tokenizer saved with the merged model: the one the model was trained with."""
    if not (run.merged / "tokenizer_config.json").is_file():
        raise MissingArtifactError(
            f"{run.merged} has no tokenizer; run `bertrt train --run-dir {run.root}` first"
        )
    return load_tokenizer(run.merged)


def _runner(config: Config, run: RunDir, model: str) -> Runner:
    """Checked before any row is read: an unknown, absent or stale model fails fast."""
    return runner_for_model(
        run, model, threads=config.threads, cuda_graphs=config.engines.cuda_graphs
    )


def _score(
    config: Config, run: RunDir, runner: Runner, texts: list[str], progress: bool = False
) -> np.ndarray:
    rows = TokenizedRows.build(
        _tokenizer(run), texts, config.model.max_length, config.train.eval_batch_size
    )
    with runner:
        return predict_logits(runner, rows, progress=progress, desc=f"evaluate {runner.label}")


def evaluate_file(config: Config, run: RunDir, csv_path: str | Path, model: str) -> dict[str, Any]:
    """Accuracy, loss, precision/recall/F1 of "closed" and the confusion matrix on one CSV."""
    runner = _runner(config, run, model)
    frame, skipped = load_examples(
        csv_path, run, config.data.bad_rows, config.data.max_bad_fraction
    )
    if skipped:  # data.bad_rows=skip: the metrics are over fewer rows than the file has
        log.warning(
            "skipped %d malformed rows of %s; first: %s", len(skipped), csv_path, skipped[0]
        )
    start = time.perf_counter()
    logits = _score(config, run, runner, list(frame["text"]), progress=True)
    elapsed = time.perf_counter() - start
    report = classification_metrics(logits, frame["label"].to_numpy())
    return {
        "model": model,
        "runner": runner.label,
        "data": str(Path(csv_path).resolve()),
        **report,
        "positive_class": LABEL_NAMES[1],
        "labels": list(LABEL_NAMES),
        "max_length": config.model.max_length,
        "seconds": round(elapsed, 3),
        "skipped_rows": skipped,
    }


def format_report(report: dict[str, Any]) -> str:
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    width = max(len(str(v)) for v in (tn, fp, fn, tp, "closed"))
    return "\n".join(
        [
            f"{report['data']}  ({report['n']} rows, model {report['model']}, {report['runner']})"
            + (
                f"; skipped {len(report['skipped_rows'])} malformed rows"
                if report.get("skipped_rows")
                else ""
            ),
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
        require_text(text, "predict")
    else:
        require_text(f"{title or ''} {body or ''}", "predict")
    runner = _runner(config, run, model)
    code_blocks = str(read_split(run)["text"].get("code_blocks", "keep"))
    if text is not None:
        built = clean_body(text, code_blocks)
    else:
        built = question_text(title or "", body or "", code_blocks)
    logits = _score(config, run, runner, [built])
    probs = softmax(logits)[0]
    index = int(probs.argmax())
    return LABEL_NAMES[index], float(probs[index])

"""Score any Kaggle-format CSV, or one question, with one of the run's models.

Every model name is opened as a :class:`bertrt.runners.run_model.RunModel`
(runner, tokenizer, class names and text options of the run, read once), so
``merged``, each ONNX and OpenVINO model and the TensorRT engines are scored
by the same code, with the same tokenization and metrics as the bench.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data import load_examples
from bertrt.data.labels import run_is_labelled
from bertrt.data.text import require_text
from bertrt.errors import ConfigError
from bertrt.metrics import classification_metrics, named_probabilities
from bertrt.runners.run_model import RunModel

log = logging.getLogger(__name__)


def evaluate_file(config: Config, run: RunDir, csv_path: str | Path, model: str) -> dict[str, Any]:
    """Every figure of :func:`bertrt.metrics.classification_metrics` on one CSV, by class name.

    The class names are the run's (split.json), so a file is scored against
    the classes the model was trained on, whatever their number. A run
    without labels (`bertrt import` of an unlabelled file) has nothing to score
    against: refused in one line, before any model is loaded.
    """
    scorer = RunModel.open(config, run, model)  # the model is checked first, not yet loaded
    if not run_is_labelled(run):
        raise ConfigError(
            f"evaluate: {run.split} records an unlabelled file (text columns only), so there "
            "is no accuracy to compute; `bertrt bench` reports each model's agreement with "
            "PyTorch fp32 instead, `bertrt predict` scores single texts"
        )
    frame, skipped = load_examples(
        csv_path, run, config.data.bad_rows, config.data.max_bad_fraction
    )
    if skipped:  # data.bad_rows=skip: the metrics are over fewer rows than the file has
        log.warning(
            "skipped %d malformed rows of %s; first: %s", len(skipped), csv_path, skipped[0]
        )
    start = time.perf_counter()
    with scorer:
        logits = scorer.logits(list(frame["text"]), progress=True)
    elapsed = time.perf_counter() - start
    report = classification_metrics(logits, frame["label"].to_numpy(), scorer.labels)
    return {
        "model": model,
        "runner": scorer.runner.label,
        "data": str(Path(csv_path).resolve()),
        **report,
        "max_length": config.model.max_length,
        "seconds": round(elapsed, 3),
        "skipped_rows": skipped,
    }


def format_report(report: dict[str, Any]) -> str:
    """The text of ``bertrt evaluate``: headline figures, then per class, then the confusion matrix."""
    skipped = report.get("skipped_rows")
    lines = [
        f"{report['data']}  ({report['n']} rows, model {report['model']}, {report['runner']})"
        + (f"; skipped {len(skipped)} malformed rows" if skipped else ""),
        f"accuracy   {report['accuracy']:.4f}",
        f"macro-F1   {report['macro_f1']:.4f}",
        f"log loss   {report['log_loss']:.4f}  (Kaggle: probabilities clipped to 1e-15)",
        f"loss       {report['loss']:.4f}  (mean cross-entropy)",
    ]
    if report.get("positive_class") is not None:  # binary: the figures of the positive class
        lines += [
            f"precision  {report['precision']:.4f}  (class '{report['positive_class']}')",
            f"recall     {report['recall']:.4f}",
            f"f1         {report['f1']:.4f}",
        ]
    return "\n".join([*lines, *_per_class_table(report), *_confusion_table(report)])


def _per_class_table(report: dict[str, Any]) -> list[str]:
    width = max(len("class"), *(len(c["name"]) for c in report["per_class"]))
    lines = [f"{'class':<{width}}  {'precision':>9}  {'recall':>6}  {'f1':>6}  {'support':>7}"]
    for c in report["per_class"]:
        lines.append(
            f"{c['name']:<{width}}  {c['precision']:>9.4f}  {c['recall']:>6.4f}  "
            f"{c['f1']:>6.4f}  {c['support']:>7}"
        )
    return lines


def _confusion_table(report: dict[str, Any]) -> list[str]:
    """N x N counts, class names on both axes; each column as wide as its name or counts."""
    names, cm = report["labels"], report["confusion_matrix"]
    widths = [max(len(n), *(len(str(row[j])) for row in cm)) for j, n in enumerate(names)]
    side = max(len(n) for n in names)

    def line(first: str, cells: list[Any]) -> str:
        return f"{first:>{side}}  " + "  ".join(
            f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)
        )

    return [
        "confusion matrix (rows: true, columns: predicted)",
        line("", list(names)),
        *(line(name, row) for name, row in zip(names, cm, strict=True)),
    ]


def predict_text(
    config: Config,
    run: RunDir,
    model: str,
    text: str | None,
    title: str | None,
    body: str | None,
) -> dict[str, Any]:
    """``{"label": name, "probabilities": {name: p, ...}}`` of one question, every run class.

    ``--text`` is taken as the whole question; ``--title``/``--body`` are joined
    and cleaned the way the data stage built the training texts. Tabular
    features are unknown here, so a run trained with features_in_text gets
    the text without them.
    """
    if text is not None:
        require_text(text, "predict")
    else:
        require_text(f"{title or ''} {body or ''}", "predict")
    with RunModel.open(config, run, model) as scorer:
        probabilities = scorer.probabilities([scorer.text_of(text, title, body)])
    return named_probabilities(probabilities, scorer.labels)[0]

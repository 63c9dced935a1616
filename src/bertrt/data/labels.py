"""The class names of a run, declared once: index i of the list is class id i.

``split.json`` records them (``labels``), the merged model carries them as
``id2label``/``label2id``, and every consumer (evaluate, predict, bench,
serve, the Triton repository) reads them from the run, so a model never
reports a class it was not trained on. Runs split before N-class support
have no ``labels`` key: they are the binary open/closed task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bertrt.artifacts import RunDir, read_json
from bertrt.errors import MissingArtifactError

# The Kaggle tasks. "closed" is the project's original binary task; its class ids
# (open 0, closed 1) must not move. "close-reason" is the competition's own target.
BINARY_LABELS = ("open", "closed")
CLOSE_REASONS = ("not a real question", "not constructive", "off topic", "too localized")
CLOSE_REASON_LABELS = ("open", *CLOSE_REASONS)
TASK_LABELS = {"closed": BINARY_LABELS, "close-reason": CLOSE_REASON_LABELS}


# The label id of every row of an unlabelled file (`bertrt import` with text columns only).
UNLABELLED = -1


def is_labelled(split_document: Mapping[str, Any]) -> bool:
    """Whether the run's file has labels: the Kaggle file always, a generic one with a
    label column (an imported model's file may have text columns only)."""
    source = split_document.get("source") or {}
    return source.get("format", "kaggle") == "kaggle" or source.get("label_column") is not None


def run_is_labelled(run: RunDir) -> bool:
    """:func:`is_labelled` of ``run``'s split.json."""
    if not run.split.exists():
        raise MissingArtifactError(
            f"{run.split} does not exist; run `bertrt data --data FILE --run-dir {run.root}` first"
        )
    return is_labelled(read_json(run.split))


def labels_of(split_document: Mapping[str, Any]) -> tuple[str, ...]:
    """Class names of a split.json document (older runs: the binary task)."""
    return tuple(split_document.get("labels") or BINARY_LABELS)


def run_labels(run: RunDir) -> tuple[str, ...]:
    """Class names of ``run``, from its split.json."""
    if not run.split.exists():
        raise MissingArtifactError(
            f"{run.split} does not exist; run `bertrt data --data FILE --run-dir {run.root}` first"
        )
    return labels_of(read_json(run.split))


def label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` and ``label2id`` for a transformers config."""
    return dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}

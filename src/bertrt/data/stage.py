"""The data stage: validate the labelled file, split it, and serve split rows to later stages.

The file is the Kaggle StackOverflow CSV (``data.task`` picks the binary or
the 5-class target) or a generic CSV/JSONL/Parquet file whose text and label
columns the config names. Only ``split.json`` is written: row ids per split,
the file's path and sha256, what kind of file it is, its class names, and how
text is built. Later stages re-read the CSV through :func:`load_split`,
which refuses a CSV whose hash differs from the one recorded, so a run can
never mix rows of two files. No row of the data is copied into the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bertrt.artifacts import RunDir, read_json, sha256_file, write_json
from bertrt.config import Config, DataConfig
from bertrt.data.features import FEATURES, tabular_features
from bertrt.data.generic import (
    FORMATS,
    check_columns,
    discover_labels,
    file_columns,
    load_labelled_file,
)
from bertrt.data.kaggle import columns_shown, load_kaggle_csv, show
from bertrt.data.labels import TASK_LABELS, UNLABELLED, is_labelled, labels_of
from bertrt.data.split import SPLITS, split
from bertrt.data.text import question_text
from bertrt.errors import ConfigError, DataError, MissingArtifactError, StaleArtifactError
from bertrt.stages import StageResult, stage


def run(config: Config, rundir: RunDir, labels: tuple[str, ...] | None = None) -> StageResult:
    """Validate and split the file; the result's report is the split.json document.

    ``labels``: the classes of a model trained elsewhere (`bertrt import`): the
    file's labels must be among them, and a generic file may have text columns
    only (unlabelled: split unstratified, every row's label ``UNLABELLED``).
    """
    cfg = config.data
    if not cfg.csv:
        raise ConfigError("data: no data file given; pass --data PATH (Makefile: DATA=PATH)")
    check_options(cfg)
    source = data_source(cfg, unlabelled_ok=labels is not None)
    labelled = is_labelled({"source": source})
    with stage(rundir, "data") as out:
        csv_path = Path(cfg.csv).resolve()
        text_options = {"code_blocks": cfg.code_blocks, "features_in_text": cfg.features_in_text}
        loaded = read_examples(
            csv_path, source, text_options, cfg.bad_rows, cfg.max_bad_fraction, labels
        )
        if labelled:
            _require_two_classes(csv_path, loaded, source)
        fractions = (cfg.train_fraction, cfg.val_fraction, cfg.test_fraction)
        try:
            ids = split(
                loaded.frame,
                config.seed,
                fractions,
                id_column="post_id",
                label_names=loaded.labels if labelled else None,
            )
        except ValueError as err:
            raise ConfigError(f"data: {csv_path}: {err}") from err
        counts = _counts(loaded, ids, labelled)
        csv_sha = sha256_file(csv_path)
        out.report = {
            "csv": {"path": str(csv_path), "sha256": csv_sha, "rows": len(loaded.frame)},
            "source": source,
            "labels": list(loaded.labels),
            "seed": config.seed,
            "fractions": dict(zip(SPLITS, fractions, strict=True)),
            "text": text_options,
            "skipped_rows": loaded.skipped,
            "counts": counts,
            "splits": ids,
        }
        write_json(out.path(rundir.split), out.report)
        out.external_inputs = {str(csv_path): csv_sha}
        out.facts = {"rows": len(loaded.frame), "skipped": len(loaded.skipped), "counts": counts}
        out.summary = _summary(rundir, out.report)
    return out.result


def _counts(loaded: Examples, ids: dict[str, list[int]], labelled: bool) -> dict[str, Any]:
    """Rows per class in each split (an unlabelled file: rows per split, as "unlabelled")."""
    if not labelled:
        return {name: {"unlabelled": len(ids[name])} for name in SPLITS}
    labels = loaded.frame.set_index("post_id")["label"]
    return {
        name: {
            loaded.labels[k]: int(v)
            for k, v in labels.loc[ids[name]].value_counts().sort_index().items()
        }
        for name in SPLITS
    }


def check_options(cfg: DataConfig) -> None:
    """Refuse data.* values that make no sense, in one line, before the file is read.

    Every split must get rows (a fraction of 0 leaves one empty; training,
    calibration and the bench each need theirs), and max_bad_fraction is a
    fraction of the file.
    """
    fractions = {
        "data.train_fraction": cfg.train_fraction,
        "data.val_fraction": cfg.val_fraction,
        "data.test_fraction": cfg.test_fraction,
    }
    for key, value in fractions.items():
        if not (math.isfinite(value) and 0 < value < 1):
            raise ConfigError(
                f"{key}={value!r}: must be above 0 and below 1 (every split needs rows)"
            )
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ConfigError(
            f"{' + '.join(f'{k}={v!r}' for k, v in fractions.items())}: "
            f"sum to {sum(fractions.values()):g}, must sum to 1"
        )
    if not (math.isfinite(cfg.max_bad_fraction) and 0 <= cfg.max_bad_fraction <= 1):
        raise ConfigError(
            f"data.max_bad_fraction={cfg.max_bad_fraction!r}: must be a fraction in [0, 1]"
        )
    check_columns(cfg.text_columns, cfg.label_column, cfg.id_column)


def _require_two_classes(path: Path, loaded: Examples, source: dict[str, Any]) -> None:
    """A file whose usable rows are all one class cannot train a classifier: stop now."""
    present = sorted(set(loaded.frame["label"].tolist()))
    if len(present) != 1:
        return
    column = source.get("label_column")
    where = f" (label column {column!r})" if column else ""
    raise DataError(
        f"{path}: every usable row is of class {show(loaded.labels[present[0]])}{where}; "
        "a classifier needs rows of at least two classes"
    )


def _not_kaggle(path: Path) -> ConfigError | None:
    """A JSONL or Parquet file is never the Kaggle CSV: say which options it needs."""
    kind = FORMATS.get(path.suffix.lower(), "CSV")
    if kind == "CSV":
        return None
    columns = file_columns(path)
    has = f"; the file's columns are {columns_shown(columns)}" if columns is not None else ""
    return ConfigError(
        f"{path}: a {kind} file is not the Kaggle CSV; name its columns: "
        f"--label-column NAME (and --text-column NAME, default 'text'){has}"
    )


def data_source(cfg: DataConfig, unlabelled_ok: bool = False) -> dict[str, Any]:
    """What kind of file the run reads and how, as split.json records it.

    ``unlabelled_ok`` (`bertrt import`: the model knows its classes): text
    columns without a label column are an unlabelled generic file.
    """
    if cfg.label_column is None:
        if unlabelled_ok and cfg.text_columns:
            return {
                "format": "generic",
                "text_columns": list(cfg.text_columns),
                "label_column": None,
                "id_column": cfg.id_column,
            }
        if cfg.text_columns or cfg.id_column:
            raise ConfigError(
                "data.text_columns / data.id_column describe a generic file and need "
                "data.label_column (--label-column); the Kaggle file has its own columns"
            )
        return {"format": "kaggle", "task": cfg.task}
    if cfg.task != "closed":
        raise ConfigError(
            f"data.task={cfg.task} is a task of the Kaggle file; a generic file's "
            "classes are the values of its label column (data.label_column)"
        )
    if cfg.features_in_text:
        raise ConfigError(
            "data.features_in_text needs the Kaggle file's tabular columns; "
            "a generic file has only text and label"
        )
    return {
        "format": "generic",
        "text_columns": list(cfg.text_columns) or ["text"],
        "label_column": cfg.label_column,
        "id_column": cfg.id_column,
    }


@dataclass
class Examples:
    """Model-ready rows of a file (post_id, text, label id), its class names, dropped rows."""

    frame: pd.DataFrame
    labels: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)


def read_examples(
    path: Path,
    source: dict[str, Any],
    text_options: dict[str, Any],
    bad_rows: str,
    max_bad_fraction: float,
    labels: tuple[str, ...] | None = None,
) -> Examples:
    """Every usable row of a Kaggle or generic file, texts built as ``text_options`` say.

    ``labels``: the class names a model knows (evaluate, and every stage after
    `bertrt data`); a generic file's label outside them is an error naming its
    row. None: the file's own labels, discovered (the data stage).
    """
    if source.get("format", "kaggle") == "kaggle":
        wrong = _not_kaggle(path)
        if wrong is not None:
            raise wrong
        task = source.get("task", "closed")
        loaded = load_kaggle_csv(path, bad_rows, max_bad_fraction, task=task)
        return Examples(
            examples(loaded.frame, text_options),
            TASK_LABELS[task],
            [b.describe() for b in loaded.skipped],
        )
    generic = load_labelled_file(
        path,
        source["text_columns"],
        source["label_column"],
        source.get("id_column"),
        code_blocks=str(text_options.get("code_blocks", "keep")),
        bad_rows=bad_rows,
        max_bad_fraction=max_bad_fraction,
    )
    frame = generic.frame
    if source.get("label_column") is None:  # unlabelled: the model's classes, no row has one
        return Examples(
            _model_rows(frame, pd.Series(UNLABELLED, index=frame.index, dtype="int64")),
            tuple(labels or ()),
            [b.describe() for b in generic.skipped],
        )
    known = labels if labels is not None else discover_labels(frame["label_name"])
    ids = {name: i for i, name in enumerate(known)}
    unknown = frame[~frame["label_name"].isin(ids)]
    if len(unknown):
        first = unknown.iloc[0]
        unit = "line" if path.suffix.lower() in (".jsonl", ".ndjson") else "data row"
        raise DataError(
            f"{path}: {unit} {first['row']}: label {show(first['label_name'])} is not a "
            f"class of this model ({', '.join(map(show, known))})"
            + (f"; {len(unknown) - 1} more rows have unknown labels" if len(unknown) > 1 else "")
        )
    out = _model_rows(frame, frame["label_name"].map(ids).astype("int64"))
    return Examples(out, tuple(known), [b.describe() for b in generic.skipped])


def _model_rows(frame: pd.DataFrame, label_ids: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "post_id": frame["PostId"].to_numpy(),
            "text": frame["text"].to_numpy(),
            "label": label_ids.to_numpy(),
        }
    )


def _summary(rundir: RunDir, document: dict[str, Any]) -> str:
    skipped = document["skipped_rows"]
    return (
        f"wrote {rundir.split}: "
        + ", ".join(f"{k} {sum(v.values())} {v}" for k, v in document["counts"].items())
        + (f"; skipped {len(skipped)} malformed rows" if skipped else "")
    )


def read_split(run: RunDir) -> dict[str, Any]:
    if not run.split.exists():
        raise MissingArtifactError(
            f"{run.split} does not exist; run `bertrt data --data CSV --run-dir {run.root}` first"
        )
    return dict(read_json(run.split))


def build_texts(frame: pd.DataFrame, text_options: dict[str, Any]) -> pd.Series:
    feats = tabular_features(frame) if text_options.get("features_in_text") else None
    code_blocks = str(text_options.get("code_blocks", "keep"))
    return pd.Series(
        [
            question_text(title, body, code_blocks, feats.loc[idx] if feats is not None else None)
            for idx, title, body in zip(
                frame.index, frame["Title"], frame["BodyMarkdown"], strict=True
            )
        ],
        index=frame.index,
        dtype=object,
    )


def examples(frame: pd.DataFrame, text_options: dict[str, Any]) -> pd.DataFrame:
    """Model-ready rows: post_id, text, label and the tabular features."""
    feats = tabular_features(frame)
    out = pd.DataFrame(
        {
            "post_id": frame["PostId"].to_numpy(),
            "text": build_texts(frame, text_options).to_numpy(),
            "label": frame["label"].to_numpy(),
        }
    )
    for name in FEATURES:
        out[name] = feats[name].to_numpy()
    return out


def load_examples(
    path: str | Path,
    run: RunDir | None = None,
    bad_rows: str = "fail",
    max_bad_fraction: float = 0.01,
) -> tuple[pd.DataFrame, list[str]]:
    """Every row of any file of the run's kind (Kaggle, or the generic columns the run
    was split with), texts built as the run's data stage decided, labels as the run's
    class ids, and the rows dropped under ``bad_rows="skip"`` (described), which the
    caller must report."""
    document = read_split(run) if run is not None else {}
    loaded = read_examples(
        Path(path),
        document.get("source", {}),
        document.get("text", {}),
        bad_rows,
        max_bad_fraction,
        labels=labels_of(document) if run is not None else None,
    )
    return loaded.frame, loaded.skipped


def load_split(
    run: RunDir, names: tuple[str, ...] = SPLITS, csv: str | Path | None = None
) -> dict[str, pd.DataFrame]:
    """The rows of the named splits, read from the CSV the data stage recorded.

    ``csv`` (``--data`` / ``data.csv`` of every stage that reads rows) points at
    a moved copy of the same file: it is accepted when its sha256 is the one
    recorded, so a run goes on after its CSV moves without rerunning `bertrt
    data` (which would mark every later stage stale).
    """
    document = read_split(run)
    recorded = Path(document["csv"]["path"])
    csv_path = Path(csv) if csv else recorded
    if not csv_path.is_file():
        raise MissingArtifactError(
            f"{csv_path} (recorded in {run.split}) is gone; pass --data with the same CSV or "
            f"rerun `bertrt data --data CSV --run-dir {run.root}`"
        )
    if sha256_file(csv_path) != document["csv"]["sha256"]:
        what = "changed since" if csv_path == recorded else f"is not the CSV ({recorded}) that"
        raise StaleArtifactError(
            f"{csv_path} {what} `bertrt data` split it (sha256 differs from {run.split}); "
            f"pass --data with that CSV, or rerun `bertrt data --data {csv_path} "
            f"--run-dir {run.root}` and the stages after it"
        )
    frame = read_examples(
        csv_path,
        document.get("source", {}),
        document["text"],
        bad_rows="skip",
        max_bad_fraction=1.0,
        labels=labels_of(document),
    ).frame.set_index("post_id", drop=False)
    return {name: frame.loc[document["splits"][name]].reset_index(drop=True) for name in names}

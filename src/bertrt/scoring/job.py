"""What a scoring job reads and writes, decided once from the command line and the run.

The run's ``split.json`` says how its training texts were built: the Kaggle
title and body (with the feature words when ``data.features_in_text``) or a
generic file's text columns, and which column identifies a row. A file scored
with the run is read the same way unless ``--text-column`` names other columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertrt.artifacts import RunDir
from bertrt.data import read_split
from bertrt.data.stream import DEFAULT_CHUNK_ROWS, Layout
from bertrt.errors import ConfigError

KAGGLE_TEXT = ("Title", "BodyMarkdown")


@dataclass(frozen=True)
class ScoreOptions:
    """One `bertrt predict --data IN --out OUT` job."""

    data: Path
    out: Path
    layout: Layout
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    bad_rows: str = "fail"
    max_bad_fraction: float = 0.01
    progress: bool = True
    overlap: bool = True  # tokenize the next chunk on a thread while this one runs

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ConfigError(f"--chunk-rows {self.chunk_rows}: must be at least 1")


def layout_for(
    run: RunDir,
    text_columns: list[str] | None = None,
    id_column: str | None = None,
    keep_columns: list[str] | None = None,
) -> Layout:
    """How to read a file for ``run``: its text columns (``--text-column`` overrides them),
    its id column (``--id-column``; default the run's, where the file has it) and the
    ``--keep-column`` columns."""
    document = read_split(run)
    source = document.get("source", {})
    text = document.get("text", {})
    kaggle = source.get("format", "kaggle") == "kaggle"
    default_text = KAGGLE_TEXT if kaggle else tuple(source.get("text_columns") or ["text"])
    columns = tuple(text_columns) if text_columns else default_text
    if any(not name for name in (*columns, *(keep_columns or []))):
        raise ConfigError("--text-column / --keep-column: a column name is empty")
    default_id = "PostId" if kaggle else source.get("id_column")
    features = bool(text.get("features_in_text")) and kaggle and not text_columns
    return Layout(
        text_columns=columns,
        id_column=id_column or default_id,
        id_required=id_column is not None,
        keep_columns=tuple(dict.fromkeys(keep_columns or [])),
        code_blocks=str(text.get("code_blocks", "keep")),
        kaggle_features=features,
    )

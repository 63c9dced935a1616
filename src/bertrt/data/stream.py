"""Read an unlabelled CSV, JSONL or Parquet file in chunks: model texts, ids and kept columns.

The readers of :mod:`bertrt.data.kaggle` and :mod:`bertrt.data.generic` load
a whole labelled file to split it; scoring a file must not, so its memory stays
flat however long the file is. This module reads the same formats a chunk of
rows at a time, builds each row's model text with the data stage's own
helpers (:func:`bertrt.data.generic.row_text`, which is the training text for
the Kaggle title and body too, and :func:`bertrt.data.stage.build_texts` when
the run put the Kaggle features in the text), and marks a row it cannot score
with the reason instead of stopping: the caller decides whether a bad row
fails the job or goes to a rejects file (``data.bad_rows``).

Rows are numbered as the other readers number them, so a message names the
same row: CSV and Parquet by data row (1-based, header and blank records
excluded), JSONL by line. Undecodable bytes are a bad row, not a crash: CSV
is read with ``surrogateescape`` and a cell holding an escaped byte is
refused, naming the byte; a JSONL line is decoded on its own.
"""

from __future__ import annotations

import csv
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from bertrt.data.generic import FORMATS, parquet_module, row_text
from bertrt.data.kaggle import allow_long_cells, parse_dates, show
from bertrt.data.stage import build_texts
from bertrt.errors import DataError

DEFAULT_CHUNK_ROWS = 4096
# The Kaggle columns the feature words are made of (data.features_in_text).
FEATURE_COLUMNS = (
    "PostCreationDate",
    "OwnerCreationDate",
    "ReputationAtPostCreation",
    "Tag1",
    "Tag2",
    "Tag3",
    "Tag4",
    "Tag5",
)
ROW_NUMBER = "row"  # the id column's name when rows are identified by their number


@dataclass(frozen=True)
class Layout:
    """Which columns make a row's text and id, which travel through, how text is built."""

    text_columns: tuple[str, ...]
    id_column: str | None = None  # None: the row number identifies a row
    id_required: bool = False  # False: a file without id_column is identified by row numbers
    keep_columns: tuple[str, ...] = ()
    code_blocks: str = "keep"
    kaggle_features: bool = False  # feature words in front of the text (Kaggle files only)

    def wanted(self, columns: list[str] | None = None) -> list[str]:
        """The columns to read (of ``columns``, the file's, when given: an optional id
        column the file lacks is left out)."""
        names = [*self.text_columns, *([self.id_column] if self.id_column else [])]
        if columns is not None and self.id_column and not self.id_required:
            names = [n for n in names if n != self.id_column or n in columns]
        names += [*self.keep_columns, *(FEATURE_COLUMNS if self.kaggle_features else ())]
        return list(dict.fromkeys(names))


@dataclass
class Chunk:
    """Consecutive rows of one file: every row has a number, an id and a text or a reason."""

    id_name: str = ROW_NUMBER  # the id column's name, or "row" (ids are the row numbers)
    rows: list[int] = field(default_factory=list)  # data row (CSV, Parquet) or line (JSONL)
    ids: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # "" for a bad row
    reasons: list[str] = field(default_factory=list)  # "" for a good row
    keep: dict[str, list[Any]] = field(default_factory=dict)
    bytes_read: int = 0  # how far into the file this chunk ends (0: unknown)

    def __len__(self) -> int:
        return len(self.rows)


def file_format(path: Path) -> str:
    """ "CSV", "JSONL" or "Parquet" from the suffix; anything else is refused, naming it."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(FORMATS)}"
        )
    return kind


def unit_of(path: Path) -> str:
    """How messages number rows of this file: "line" (JSONL) or "data row"."""
    return "line" if file_format(path) == "JSONL" else "data row"


def read_chunks(
    path: Path, layout: Layout, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[Chunk]:
    """Every row of ``path`` in chunks of ``chunk_rows``; a FIFO (a pipe) is read as it fills."""
    kind = file_format(path)
    _check_readable(path, kind)
    if kind == "CSV":
        yield from _csv_chunks(path, layout, chunk_rows)
    elif kind == "JSONL":
        yield from _jsonl_chunks(path, layout, chunk_rows)
    else:
        yield from _parquet_chunks(path, layout, chunk_rows)


def total_rows(path: Path) -> int | None:
    """The row count where the file knows it without reading every row (Parquet), else None."""
    if file_format(path) != "Parquet":
        return None
    return int(parquet_module(path).ParquetFile(path).metadata.num_rows)


def _check_readable(path: Path, kind: str) -> None:
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file; pass the file's path")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    mode = path.stat().st_mode
    if stat.S_ISREG(mode) and path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (expected {kind} data rows)")
    if kind == "Parquet" and not stat.S_ISREG(mode):
        raise DataError(f"{path}: a Parquet file must be a regular file, not a pipe")


def _missing_columns(path: Path, layout: Layout, columns: list[str]) -> None:
    """A named column the file lacks stops the job before any row is scored."""
    roles = [("text", c) for c in layout.text_columns]
    roles += [("id", layout.id_column)] if layout.id_column and layout.id_required else []
    roles += [("keep", c) for c in layout.keep_columns]
    roles += [("feature", c) for c in (FEATURE_COLUMNS if layout.kaggle_features else ())]
    missing = [f"{role} column {name!r}" for role, name in roles if name not in columns]
    if missing:
        has = ", ".join(repr(c) for c in columns[:20]) or "none"
        raise DataError(f"{path}: missing {', '.join(missing)}; the file's columns are {has}")


class _Builder:
    """Collects rows into a chunk, building each text (or the reason it has none)."""

    def __init__(self, layout: Layout, columns: list[str]) -> None:
        self.layout = layout
        self.wanted = layout.wanted(columns)
        self.id_column = layout.id_column if layout.id_column in self.wanted else None
        self.chunk = self._empty()
        self.values: list[dict[str, Any]] = []  # the feature columns of a Kaggle chunk

    def _empty(self) -> Chunk:
        keep: dict[str, list[Any]] = {name: [] for name in self.layout.keep_columns}
        return Chunk(id_name=self.id_column or ROW_NUMBER, keep=keep)

    def add(self, number: int, values: dict[str, Any], reason: str = "") -> None:
        layout, chunk = self.layout, self.chunk
        chunk.rows.append(number)
        chunk.ids.append(values.get(self.id_column) if self.id_column else number)
        for name in layout.keep_columns:
            chunk.keep[name].append(values.get(name))
        text = ""
        if not reason:
            reason = _undecodable(values, self.wanted)
        if not reason:
            parts = [values.get(c) for c in layout.text_columns]
            text, reason = row_text(parts, list(layout.text_columns), layout.code_blocks)
        chunk.texts.append(text if not reason else "")
        chunk.reasons.append(reason)
        if layout.kaggle_features:
            self.values.append(values)

    def take(self, bytes_read: int = 0) -> Chunk:
        chunk, self.chunk = self.chunk, self._empty()
        if self.layout.kaggle_features:
            _add_feature_words(chunk, self.values, self.layout)
            self.values = []
        chunk.bytes_read = bytes_read
        return chunk


def _undecodable(values: dict[str, Any], names: list[str]) -> str:
    """Why a row holds bytes that were not UTF-8 (the CSV reader escaped them), or ""."""
    for name in names:
        value = values.get(name)
        if isinstance(value, str):
            bad = next((ch for ch in value if "\udc80" <= ch <= "\udcff"), None)
            if bad is not None:
                return f"column {name!r} is not UTF-8 text (byte 0x{ord(bad) - 0xDC00:02x})"
    return ""


def _add_feature_words(chunk: Chunk, values: list[dict[str, Any]], layout: Layout) -> None:
    """Rebuild the good rows' texts with the Kaggle feature words, as the data stage did."""
    good = [i for i, reason in enumerate(chunk.reasons) if not reason]
    if not good:
        return
    names = ["Title", "BodyMarkdown", *FEATURE_COLUMNS]
    frame = pd.DataFrame([[values[i].get(n) or "" for n in names] for i in good], columns=names)
    reputation = pd.to_numeric(frame["ReputationAtPostCreation"], errors="coerce")
    created = parse_dates(frame["PostCreationDate"])
    owner = parse_dates(frame["OwnerCreationDate"])
    unusable = (
        reputation.isna() | created.isna() | (owner.isna() & (frame["OwnerCreationDate"] != ""))
    )
    for j in frame.index[unusable]:
        chunk.reasons[good[j]] = (
            "ReputationAtPostCreation, PostCreationDate or OwnerCreationDate "
            f"({show(str(frame.at[j, 'ReputationAtPostCreation']))}) cannot make the feature words"
        )
        chunk.texts[good[j]] = ""
    frame = frame.assign(
        ReputationAtPostCreation=reputation.fillna(0).astype("int64"),
        PostCreationDate=created,
        OwnerCreationDate=owner,
    )
    texts = build_texts(frame, {"code_blocks": layout.code_blocks, "features_in_text": True})
    for j, text in zip(frame.index, texts, strict=True):
        if not unusable[j]:
            chunk.texts[good[j]] = text


def _csv_chunks(path: Path, layout: Layout, chunk_rows: int) -> Iterator[Chunk]:
    allow_long_cells()  # a valid cell may be longer than the csv module's default limit
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        header = _csv_header(path, reader)
        _missing_columns(path, layout, header)
        builder, number = _Builder(layout, header), 0
        where = {name: header.index(name) for name in builder.wanted}
        try:
            for record in reader:
                if not record:
                    continue
                number += 1
                values = {n: record[i] if i < len(record) else None for n, i in where.items()}
                reason = ""
                if len(record) != len(header):
                    reason = f"{len(record)} fields, expected {len(header)}"
                builder.add(number, values, reason)
                if len(builder.chunk) >= chunk_rows:
                    yield builder.take(_position(fh))
        except csv.Error as err:
            raise DataError(
                f"{path}: cannot be parsed as CSV: data row {number + 1} (line "
                f"{reader.line_num}): {err}; is a quote unbalanced?"
            ) from err
        if len(builder.chunk):
            yield builder.take(_position(fh))


def _csv_header(path: Path, reader: Any) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise DataError(f"{path}: cannot be parsed as CSV: the header: {err}") from err
    if header is None:
        raise DataError(f"{path}: the file is empty (expected a header and data rows)")
    if any(_undecodable({"h": name}, ["h"]) for name in header):
        raise DataError(f"{path}: not UTF-8 text in the header; save the file as UTF-8")
    return header


def _position(fh: IO[Any]) -> int:
    try:
        return int(fh.buffer.tell()) if hasattr(fh, "buffer") else int(fh.tell())
    except (OSError, ValueError):  # a pipe has no position
        return 0


def _jsonl_chunks(path: Path, layout: Layout, chunk_rows: int) -> Iterator[Chunk]:
    """One JSON object per line; blank lines skipped; any other line is a bad row (its line)."""
    builder: _Builder | None = None
    pending: list[tuple[int, dict[str, Any], str]] = []  # bad lines before the first object
    read = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            read += len(raw)
            if not raw.strip():
                continue
            value, reason = _json_object(raw, number == 1)
            if builder is None:
                if reason:
                    pending.append((number, value, reason))
                    continue
                # Keys of the first object are the file's columns; a later object
                # without a text key is a row with empty text, a kept column null.
                _missing_columns(path, layout, [*value, *layout.keep_columns])
                builder = _Builder(layout, list(value))
                for item in pending:
                    builder.add(*item)
            builder.add(number, value, reason)
            if len(builder.chunk) >= chunk_rows:
                yield builder.take(read)
    if builder is None:  # no line was an object: every line is a bad row
        builder = _Builder(layout, [])
        for item in pending:
            builder.add(*item)
    if len(builder.chunk):
        yield builder.take(read)


def _json_object(raw: bytes, first: bool) -> tuple[dict[str, Any], str]:
    """(the line's object, "") or ({}, why the line is not one)."""
    try:
        line = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as err:
        return {}, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        return {}, f"not valid JSON: {err.msg} (column {err.colno})"
    except (ValueError, RecursionError) as err:  # a huge integer, deep nesting
        return {}, f"not usable JSON: {str(err) or 'nested too deep'}"
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        return {}, f"a JSON {kind}, not an object"
    return value, ""


def _parquet_chunks(path: Path, layout: Layout, chunk_rows: int) -> Iterator[Chunk]:
    pq = parquet_module(path)
    try:
        parquet = pq.ParquetFile(path)
        names = [str(n) for n in parquet.schema_arrow.names]
        _missing_columns(path, layout, names)
        builder = _Builder(layout, names)
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=builder.wanted)
        number = 0
        for batch in batches:
            columns = batch.to_pydict()
            for i in range(batch.num_rows):
                number += 1
                builder.add(number, {name: values[i] for name, values in columns.items()})
            yield builder.take()
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"{path}: cannot be read as Parquet: {first}") from err

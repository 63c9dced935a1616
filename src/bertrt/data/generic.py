"""Reader for a generic labelled file: CSV, JSONL or Parquet with named text and label columns.

The Kaggle reader (:mod:`bertrt.data.kaggle`) knows one schema; this one reads
any file that has one or more text columns and a label column, so the
pipeline trains on other data without a conversion step that could lose rows
silently. It keeps the Kaggle reader's contract so the data stage treats both
alike: every message is one line naming the file and the row (for JSONL, the
line), malformed rows stop the run by default (``bad_rows="fail"``) or are
dropped and reported (``"skip"``) up to ``max_bad_fraction`` of the file, and
row ids are int64 integers that key the stable split.

Text is built here, once, by :func:`join_text`, the same way the Kaggle title
and body are joined, so a Kaggle file exported with ``Title``/``BodyMarkdown``
as text columns gives the model exactly the text the Kaggle reader would.
Labels are kept as names; :func:`discover_labels` orders them so class ids
are the same on every run over the same labels.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertrt.data.kaggle import (
    INT64_MAX,
    BadRow,
    binary_format,
    columns_shown,
    merge_bad,
    parse_post_id,
    read_csv_records,
    show,
)
from bertrt.data.text import clean_body
from bertrt.errors import ConfigError, DataError, UnavailableError

FORMATS = {
    ".csv": "CSV",
    ".jsonl": "JSONL",
    ".ndjson": "JSONL",
    ".parquet": "Parquet",
    ".pq": "Parquet",
}
BAD_ROWS = ("fail", "skip")
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass
class LabelledFrame:
    """Validated rows (``row``, ``PostId``, ``text``, ``label_name``) and the rows dropped."""

    frame: pd.DataFrame
    skipped: list[BadRow] = field(default_factory=list)


class LineBadRow(BadRow):
    """A bad row of a JSONL file: its rows are numbered by line, so messages say "line"."""

    def describe(self) -> str:
        return "line" + super().describe().removeprefix("data row")


@dataclass
class _Cells:
    """The wanted columns of every parsed row; rows that did not parse are already bad."""

    unit: str  # how messages number rows: "data row" or "line"
    columns: list[str]  # every column the file has
    rows: list[int]
    values: dict[str, list[Any]]  # column -> one value per parsed row (None: absent)
    bad: list[BadRow]


def discover_labels(names: Iterable[str]) -> tuple[str, ...]:
    """The distinct class names in a stable order, so class ids do not depend on file order.

    Integer labels ("2", "10") sort numerically, as a reader expects class 2
    before class 10; any other set sorts as strings.
    """
    distinct = set(names)
    if distinct and all(_INTEGER.fullmatch(name) for name in distinct):
        return tuple(sorted(distinct, key=lambda name: (int(name), name)))
    return tuple(sorted(distinct))


def join_text(parts: Sequence[str], code_blocks: str = "keep") -> str:
    """The model text of one row: the first part stripped, later parts cleaned as a body.

    Exactly :func:`bertrt.data.text.question_text` for ``[title, body]``, so a
    generic file with the Kaggle columns trains on the same text as the Kaggle reader.
    One part is cleaned as a body: what ``bertrt predict --text`` and the server's
    ``text`` input do to a text, so a one-column file trains on what they score.
    """
    if isinstance(parts, str):
        raise TypeError("join_text takes a sequence of text parts, not one string")
    if not parts:
        return ""
    if len(parts) == 1:
        return clean_body(parts[0], code_blocks)
    first, *rest = parts
    return "\n".join([first.strip(), *(clean_body(part, code_blocks) for part in rest)])


def load_labelled_file(
    path: str | Path,
    text_columns: Sequence[str],
    label_column: str | None,
    id_column: str | None = None,
    code_blocks: str = "keep",
    bad_rows: str = "fail",
    max_bad_fraction: float = 0.01,
) -> LabelledFrame:
    """Read and validate a CSV, JSONL or Parquet file; raise :class:`DataError` naming file and row.

    ``label_column=None`` reads a file for prediction only: ``label_name`` is "".
    Without ``id_column`` a row's PostId is its row number (JSONL: line number).
    """
    path = Path(path)
    text_columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    if not text_columns:
        raise ValueError("load_labelled_file needs at least one text column")
    check_columns(text_columns, label_column, id_column)
    if bad_rows not in BAD_ROWS:
        raise ValueError(f"bad_rows must be one of {', '.join(BAD_ROWS)}, got {bad_rows!r}")
    roles = [("text", name) for name in text_columns]
    roles += [(role, name) for role, name in (("label", label_column), ("id", id_column)) if name]
    cells = _read(path, list(dict.fromkeys(name for _, name in roles)), id_column)
    _require_columns(path, cells, roles)
    if not cells.rows and not cells.bad:
        raise DataError(f"{path}: has no data rows")
    frame, found = _validate(cells, text_columns, label_column, id_column, code_blocks)
    bad = merge_bad(cells.bad, found)
    if id_column is None:
        for item in bad:
            item.post_id = str(item.row)
    _enforce_bad_rows(path, bad, len(cells.rows) + len(cells.bad), bad_rows, max_bad_fraction)
    frame = frame[~frame["row"].isin({b.row for b in bad})]
    if frame.empty:
        raise DataError(f"{path}: no usable rows left after dropping malformed ones")
    return LabelledFrame(frame=frame.reset_index(drop=True), skipped=bad)


def check_columns(
    text_columns: Sequence[str], label_column: str | None, id_column: str | None
) -> None:
    """Refuse column options that cannot mean what they say (ConfigError, before any read).

    An empty name, a text column given twice (its text would be doubled in
    training but not in `predict`), or one column in two roles (the label read
    as text would leak the answer into the input).
    """
    roles: list[tuple[str, str | None]]
    roles = [("data.text_columns (--text-column)", name) for name in text_columns]
    roles += [("data.label_column (--label-column)", label_column)]
    roles += [("data.id_column (--id-column)", id_column)]
    seen: dict[str, str] = {}
    for option, name in roles:
        if name is None:
            continue
        if not name:
            raise ConfigError(f"{option}: a column name is empty; name a column of the file")
        if name in seen:
            again = "given twice" if seen[name] == option else f"also {seen[name]}"
            raise ConfigError(
                f"{option}: column {name!r} is {again}; each column may be named once"
            )
        seen[name] = option


def file_columns(path: Path) -> list[str] | None:
    """The columns a CSV, JSONL or Parquet file has (for messages), None if it cannot be read."""
    try:
        return _read(path, [], None).columns
    except (DataError, UnavailableError):
        return None


def _refuse_repeated(path: Path, columns: list[str], wanted: list[str]) -> None:
    """A wanted column the header names twice is ambiguous: stop, naming both positions."""
    for name in wanted:
        where = [i for i, column in enumerate(columns, start=1) if column == name]
        if len(where) > 1:
            raise DataError(
                f"{path}: the header names column {show(name)} {len(where)} times "
                f"(columns {where[0]} and {where[1]}); rename one so the file says which to read"
            )


def _enforce_bad_rows(
    path: Path, bad: list[BadRow], total: int, bad_rows: str, max_bad_fraction: float
) -> None:
    """Fail on the first bad row, or allow skipping up to the limit (as the Kaggle reader)."""
    if not bad:
        return
    if bad_rows == "fail":
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(
            f"{path}: {bad[0].describe()}{more}. Fix the file, or pass "
            "--set data.bad_rows=skip to drop malformed rows and report them."
        )
    if len(bad) > max_bad_fraction * total:
        raise DataError(
            f"{path}: {len(bad)} of {total} rows are malformed, over the "
            f"data.max_bad_fraction={max_bad_fraction} limit; first: {bad[0].describe()}"
        )


def _read(path: Path, wanted: list[str], id_column: str | None) -> _Cells:
    """The file's wanted columns, read by the parser its suffix names."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(FORMATS)}"
        )
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file; pass the file's path")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (expected {kind} data rows)")
    if kind == "CSV":
        return _read_csv(path, wanted, id_column)
    if kind == "JSONL":
        return _read_jsonl(path, wanted)
    return _read_parquet(path, wanted)


def _require_columns(path: Path, cells: _Cells, roles: list[tuple[str, str]]) -> None:
    """A column named in the options but absent from the file stops the run before any row.

    A JSONL file none of whose lines parsed has no columns to compare: its bad
    lines are the message instead.
    """
    if not cells.columns and not cells.rows:
        return
    missing = [f"{role} column {name!r}" for role, name in roles if name not in cells.columns]
    if not missing:
        return
    has = columns_shown(cells.columns)
    raise DataError(f"{path}: missing {', '.join(missing)}; the file's columns are {has}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read: {err.strerror or err}") from err


def _undecodable(path: Path, raw: bytes, csv_rows: bool) -> str | None:
    """Where the first byte that is not UTF-8 lies (offset, line; for CSV the data row), or None."""
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = err.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)
    else:
        return None
    line = raw.count(b"\n", 0, offset) + 1
    where = f"line {line}"
    if csv_rows:
        where += _undecodable_cell(raw)
    return (
        f"{path}: not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset} ({where}); "
        "save the file as UTF-8"
    )


def _undecodable_cell(raw: bytes) -> str:
    """ ", data row N, column NAME" of the first undecodable cell of a CSV, or "" if unknown."""
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    try:
        records = csv.reader(io.StringIO(text, newline=""))
        header = next(records, [])
        if any(_has_surrogate(name) for name in header):
            return ", in the header"
        for number, record in enumerate((r for r in records if r), start=1):
            column = next((i for i, v in enumerate(record) if _has_surrogate(v)), None)
            if column is not None:
                name = repr(header[column]) if column < len(header) else f"field {column + 1}"
                return f", data row {number}, column {name}"
    except csv.Error:
        pass
    return ""


def _has_surrogate(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _read_csv(path: Path, wanted: list[str], id_column: str | None) -> _Cells:
    """CSV through the Kaggle reader's strict parser; a ragged row is a bad row."""
    try:
        header, records = read_csv_records(path)
    except DataError as err:
        # The shared parser's message for undecodable bytes speaks of the Kaggle file.
        raw = _read_bytes(path)
        message = None if binary_format(path, raw) else _undecodable(path, raw, csv_rows=True)
        if message is None:
            raise
        raise DataError(message) from err
    _refuse_repeated(path, header, wanted)
    where = {name: header.index(name) for name in wanted if name in header}
    at_id = where.get(id_column or "", len(header))
    values: dict[str, list[Any]] = {name: [] for name in wanted}
    rows: list[int] = []
    bad: list[BadRow] = []
    for number, record in enumerate(records, start=1):
        if len(record) != len(header):
            id_text = record[at_id] if at_id < len(record) else ""
            reason = f"{len(record)} fields, expected {len(header)}"
            bad.append(BadRow(number, id_text, reason, id_column))
            continue
        rows.append(number)
        for name, index in where.items():
            values[name].append(record[index])
    for name in wanted:
        if name not in where:
            values[name] = [None] * len(rows)
    return _Cells("data row", header, rows, values, bad)


def _read_jsonl(path: Path, wanted: list[str]) -> _Cells:
    """One JSON object per line; blank lines are ignored, other lines are rows named by line."""
    raw = _read_bytes(path)
    message = binary_format(path, raw, "JSONL") or _undecodable(path, raw, csv_rows=False)
    if message is not None:
        raise DataError(message)
    columns: dict[str, None] = {}
    objects: list[tuple[int, dict[str, Any]]] = []
    bad: list[BadRow] = []
    # split("\n"), not splitlines(): a JSON string may hold a raw U+2028.
    for number, line in enumerate(raw.decode("utf-8-sig").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value, repeated = _loads(line)
        except json.JSONDecodeError as err:
            bad.append(
                LineBadRow(number, "", f"not valid JSON: {err.msg} (column {err.colno})", None)
            )
            continue
        except (ValueError, RecursionError) as err:  # a huge integer, deep nesting
            bad.append(
                LineBadRow(number, "", f"not usable JSON: {str(err) or 'nested too deep'}", None)
            )
            continue
        if not isinstance(value, dict):
            bad.append(LineBadRow(number, "", f"a JSON {_json_type(value)}, not an object", None))
            continue
        twice = next((key for key in repeated if key in wanted), None)
        if twice is not None:
            reason = f"key {show(twice)} appears more than once in the object"
            bad.append(LineBadRow(number, "", reason, None))
            continue
        columns.update(dict.fromkeys(value))
        objects.append((number, value))
    values = {name: [obj.get(name) for _, obj in objects] for name in wanted}
    return _Cells("line", list(columns), [n for n, _ in objects], values, bad)


def _loads(line: str) -> tuple[Any, list[str]]:
    """The line's JSON value, and the keys its top-level object repeats (json keeps the last)."""
    last: list[list[str]] = [[]]

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # Called innermost object first: the top-level object's call is the last.
        obj = dict(pairs)
        last[0] = [] if len(obj) == len(pairs) else _repeated_keys(pairs)
        return obj

    value = json.loads(line, object_pairs_hook=pairs_hook)
    return value, last[0] if isinstance(value, dict) else []


def _repeated_keys(pairs: list[tuple[str, Any]]) -> list[str]:
    seen: set[str] = set()
    repeated = []
    for key, _ in pairs:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    return repeated


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def parquet_module(path: Path) -> Any:
    """``pyarrow.parquet``, or one line (exit 3) naming ``path`` and the install: pyarrow is
    an optional dependency (the parquet extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise UnavailableError(
            f"{path}: reading Parquet needs pyarrow, which is not installed: pip install pyarrow"
        ) from err
    return pq


def _read_parquet(path: Path, wanted: list[str]) -> _Cells:
    """A Parquet file through pandas; pyarrow is an optional dependency (the parquet extra)."""
    pq = parquet_module(path)
    try:
        columns = [str(name) for name in pq.read_schema(path).names]
        _refuse_repeated(path, columns, wanted)
        frame = pd.read_parquet(path, columns=[name for name in wanted if name in columns])
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"{path}: cannot be read as Parquet: {first}") from err
    rows = list(range(1, len(frame) + 1))
    values = {
        name: frame[name].tolist() if name in frame.columns else [None] * len(rows)
        for name in wanted
    }
    return _Cells("data row", columns, rows, values, [])


def _missing(value: Any) -> bool:
    """JSON null, an absent key, or a Parquet null (None, NaN, pd.NA, NaT)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _integral_text(value: Any) -> str | None:
    """An integer value's decimal text (1.0 counts: Parquet stores nullable ints as floats)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return str(int(float(value)))
    return None


def _text_of(value: Any) -> str | None:
    """A text cell as a string ("" when absent, numbers as written), None if it is not text."""
    if _missing(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool | np.bool_):
        return str(value)
    return None


def _label_of(value: Any, column: str) -> tuple[str, str]:
    """(class name, "") or ("", why the label is unusable)."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return "", f"label column {column!r} is empty"
    if isinstance(value, str):
        name = value.strip()
        if not name.isprintable():  # a tab or newline would break predict's one-line output
            return "", f"label column {column!r} holds {show(name)}: a class name must be printable"
        return name, ""
    integral = _integral_text(value)
    if integral is None:
        return "", f"label column {column!r} holds {show(str(value))}, not a class name"
    return integral, ""


def _id_of(value: Any) -> tuple[int | None, str]:
    """(the id or None, its text form for messages)."""
    if _missing(value):
        return None, ""
    text = value.strip() if isinstance(value, str) else _integral_text(value) or str(value)
    return parse_post_id(text), text


def _id_reason(column: str, text: str) -> str:
    if not text:
        return f"id column {column!r} is empty"
    return f"id column {column!r} value {show(text)} is not an integer in 0..{INT64_MAX}"


def _validate(
    cells: _Cells,
    text_columns: list[str],
    label_column: str | None,
    id_column: str | None,
    code_blocks: str,
) -> tuple[pd.DataFrame, list[BadRow]]:
    """The usable rows as a frame, and a BadRow for every other parsed row (first reason)."""
    make = LineBadRow if cells.unit == "line" else BadRow
    good: dict[str, list[Any]] = {"row": [], "PostId": [], "text": [], "label_name": []}
    ids: list[int | None] = []
    bad: list[BadRow] = []
    for i, number in enumerate(cells.rows):
        post_id, id_text, reason = number, str(number), ""
        if id_column is not None:
            parsed, id_text = _id_of(cells.values[id_column][i])
            if parsed is None:
                reason = _id_reason(id_column, id_text)
            post_id = -1 if parsed is None else parsed
        ids.append(None if post_id < 0 else post_id)
        label, why_label = ("", "")
        if label_column is not None:
            label, why_label = _label_of(cells.values[label_column][i], label_column)
        parts = [cells.values[column][i] for column in text_columns]
        text, why_text = _row_text(parts, text_columns, code_blocks)
        reason = reason or why_label or why_text
        if reason:
            bad.append(make(number, id_text, reason, id_column))
            continue
        for key, value in zip(good, (number, post_id, text, label), strict=True):
            good[key].append(value)
    frame = pd.DataFrame(good).astype({"row": "int64", "PostId": "int64"})
    return frame, merge_bad(bad, _duplicates(cells, ids, id_column, make))


def _row_text(values: list[Any], columns: list[str], code_blocks: str) -> tuple[str, str]:
    """(the joined text, "") or ("", why the row has no usable text)."""
    parts = []
    for column, value in zip(columns, values, strict=True):
        part = _text_of(value)
        if part is None:
            return "", f"text column {column!r} holds {show(str(value))}, not text"
        parts.append(part)
    names = ", ".join(columns)
    if not any(part.strip() for part in parts):
        if len(columns) == 1:
            return "", f"text column {names} is empty"
        return "", f"text columns {names} are all empty"
    text = join_text(parts, code_blocks)
    if not text.strip():
        return "", f"text column(s) {names} are empty once code blocks are dropped"
    return text, ""


def _duplicates(
    cells: _Cells, ids: list[int | None], id_column: str | None, make: type[BadRow]
) -> list[BadRow]:
    """Rows whose id (as an integer: 01085 is 1085) an earlier row already has."""
    if id_column is None:
        return []
    first: dict[int, int] = {}
    out = []
    for number, post_id in zip(cells.rows, ids, strict=True):
        if post_id is None:
            continue
        if post_id in first:
            out.append(
                make(
                    number,
                    str(post_id),
                    f"duplicate id {post_id} in column {id_column!r} "
                    f"(first at {cells.unit} {first[post_id]})",
                    id_column,
                )
            )
        else:
            first[post_id] = number
    return out


def row_text(values: list[Any], columns: list[str], code_blocks: str = "keep") -> tuple[str, str]:
    """(a row's model text, "") or ("", why it has none): the check and text of the data stage,
    public for readers that score a file chunk by chunk (:mod:`bertrt.data.stream`)."""
    return _row_text(values, columns, code_blocks)

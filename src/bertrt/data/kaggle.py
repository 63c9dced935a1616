"""Reader for the Kaggle "Predict Closed Questions on Stack Overflow" CSV.

The file is quoted CSV with multi-line Markdown bodies. Every check here
names the file and the data row (1-based, header excluded) with its PostId,
because the file is too large to eyeball. Malformed rows either stop the run
(``bad_rows="fail"``, the default: nothing is lost silently) or are dropped and
reported (``bad_rows="skip"``), up to ``max_bad_fraction`` of the file. A
duplicate PostId is a malformed row like any other: counted, reported, limited.

The file is parsed with the :mod:`csv` module (as fast as pandas' C parser on
this file, measured) because only a record-by-record parse knows which data
row a quoting error, a ragged row or an undecodable byte belongs to.

PostIds have one type end to end: :func:`parse_post_id` turns the text into a
Python ``int`` in int64 range (ASCII digits only; leading zeros allowed, so
``01085`` *is* 1085 and duplicates it). Everything after this module (the
split, split.json, ``load_split``) sees only those integers.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bertrt.data.labels import CLOSE_REASON_LABELS, CLOSE_REASONS
from bertrt.errors import ConfigError, DataError

COLUMNS = (
    "PostId",
    "PostCreationDate",
    "OwnerUserId",
    "OwnerCreationDate",
    "ReputationAtPostCreation",
    "OwnerUndeletedAnswerCountAtPostTime",
    "Title",
    "BodyMarkdown",
    "Tag1",
    "Tag2",
    "Tag3",
    "Tag4",
    "Tag5",
    "PostClosedDate",
    "OpenStatus",
)
# OpenStatus -> class id, per task: "closed" folds the four close reasons into
# class 1 (the project's original binary task), "close-reason" keeps them apart.
STATUS_LABELS = {"open": 0, **dict.fromkeys(CLOSE_REASONS, 1)}
TASK_STATUS_IDS = {
    "closed": STATUS_LABELS,
    "close-reason": {name: i for i, name in enumerate(CLOSE_REASON_LABELS)},
}
DATE_FORMAT = "%m/%d/%Y %H:%M:%S"


INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")
_SIGNED_DIGITS = re.compile(r"-?[0-9]+")
_SHOWN_CHARS = 40  # longest cell value quoted in a message
_SHOWN_COLUMNS = 20  # columns of a file listed in a message
# The csv module refuses a cell over 131,072 characters by default; a valid file
# may hold a far longer body (a pasted log), and the whole file is in memory anyway.
_FIELD_LIMIT = 2**31 - 1
# Binary formats a misnamed file may be in: their first bytes, and the suffix to use.
_MAGIC = {b"PAR1": ("Parquet", ".parquet")}


def allow_long_cells() -> None:
    """Lift the csv module's field limit (process-wide), so a long valid cell is read."""
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)


def columns_shown(columns: list[str]) -> str:
    """A file's column names for a one-line message: quoted, at most 20 of them."""
    shown = ", ".join(show(c) for c in columns[:_SHOWN_COLUMNS]) or "none"
    if len(columns) > _SHOWN_COLUMNS:
        shown += f" (and {len(columns) - _SHOWN_COLUMNS} more)"
    return shown


def binary_format(path: Path, raw: bytes, expected: str = "CSV") -> str | None:
    """A message for a file in a known binary format under a text suffix, or None."""
    for magic, (kind, suffix) in _MAGIC.items():
        if raw.startswith(magic):
            return (
                f"{path}: is a {kind} file (it starts with {magic.decode()}), not {expected} "
                f"text; name it {suffix} and pass its columns (--label-column, --text-column)"
            )
    return None


def parse_post_id(text: str) -> int | None:
    """The PostId as an int64-range integer, or None when it is not one (the one parser)."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= INT64_MAX else None


def _int64_or_none(text: str) -> int | None:
    if not _SIGNED_DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if -INT64_MAX - 1 <= value <= INT64_MAX else None


def show(value: str) -> str:
    """A cell quoted for a one-line message: repr (no raw newlines), at most 40 characters."""
    if len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS]) + "..."
    return repr(value)


@dataclass
class BadRow:
    row: int  # 1-based data row, header excluded
    post_id: str
    reason: str
    id_name: str | None = "PostId"  # the id column's name; None: a file without one

    def describe(self) -> str:
        if self.id_name is None:
            return f"data row {self.row}: {self.reason}"
        shown = self.post_id if _DIGITS.fullmatch(self.post_id or "x") else None
        if shown is None or len(shown) > _SHOWN_CHARS:
            shown = show(self.post_id) if self.post_id else "?"
        return f"data row {self.row} ({self.id_name} {shown}): {self.reason}"


@dataclass
class KaggleFrame:
    """Validated rows plus what was dropped on the way."""

    frame: pd.DataFrame
    skipped: list[BadRow] = field(default_factory=list)


def parse_dates(values: pd.Series) -> pd.Series:
    """Kaggle's MM/DD/YYYY HH:MM:SS, falling back to ISO dates (one real row uses them)."""
    parsed = pd.to_datetime(values, format=DATE_FORMAT, errors="coerce")
    missing = parsed.isna() & (values != "")
    if missing.any():
        parsed[missing] = pd.to_datetime(values[missing], format="ISO8601", errors="coerce")
    return parsed


def _read_text(path: Path) -> str:
    """The file as text; problems with the file itself (not its rows) as DataError."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV file; pass the CSV's path")
    if not path.is_file():
        raise DataError(
            f"{path}: no such file. Get train-sample.csv (or train.csv) from the Kaggle "
            "competition 'Predict Closed Questions on Stack Overflow' and pass its path."
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read: {err.strerror or err}") from err
    if not raw.strip():
        raise DataError(f"{path}: the file is empty (expected a header and data rows)")
    binary = binary_format(path, raw)
    if binary is not None:
        raise DataError(binary)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(_where_undecodable(path, raw, err)) from err


def _where_undecodable(path: Path, raw: bytes, err: UnicodeDecodeError) -> str:
    """Name the first bad byte by its offset in the whole file, and its data row and column.

    No undecoded byte is shown: a cell or column name holding one is named by position.
    """
    allow_long_cells()
    offset = err.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    where = "the header"
    try:
        records = csv.reader(io.StringIO(text, newline=""))
        header = next(records)
        if not any(_undecoded(name) for name in header):
            where = _first_undecoded_cell(header, records)
    except csv.Error:
        where = f"line {text.count(chr(10), 0, offset) + 1}"
    return (
        f"{path}: not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset}, in {where}; "
        "is this the Kaggle CSV? Save it as UTF-8."
    )


def _first_undecoded_cell(header: list[str], records: Iterator[list[str]]) -> str:
    """ "data row N (PostId P), column C" of the first cell holding an undecoded byte.

    A PostId or column name that is not printable (an undecoded byte, a control
    character: a binary file) is left out or named by position, never printed.
    """
    for number, record in enumerate((r for r in records if r), start=1):
        column = next((i for i, v in enumerate(record) if _undecoded(v)), None)
        if column is not None:
            name = header[column] if column < len(header) else ""
            name = name if name.isprintable() and name else f"field {column + 1}"
            post_id = f" (PostId {show(record[0])})" if record[0].isprintable() else ""
            return f"data row {number}{post_id}, column {name}"
    return "the header"


def _undecoded(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def read_csv_records(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and non-blank records; a quoting error names the data row it starts in."""
    allow_long_cells()
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
    records: list[list[str]] = []
    header: list[str] = []
    starts = 1
    try:
        header = next(reader, [])
        while (starts := reader.line_num + 1) and (record := next(reader, None)) is not None:
            if record:
                records.append(record)
    except csv.Error as err:
        where = f"data row {len(records) + 1}" if header else "the header"
        raise DataError(
            f"{path}: cannot be parsed as CSV: {where} (starting on line {starts}): {err}; "
            "is a quote unbalanced?"
        ) from err
    return header, records


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[BadRow]]:
    """Every cell as text, the Kaggle columns checked, and the rows with a wrong field count."""
    header, records = read_csv_records(path)
    missing = [c for c in COLUMNS if c not in header]
    if len(missing) == len(COLUMNS):
        raise DataError(
            f"{path}: has none of the Kaggle file's columns (PostId, Title, BodyMarkdown, "
            f"OpenStatus, ...); its columns are {columns_shown(header)}. For another labelled "
            "file name its columns: --label-column NAME (and --text-column NAME, default 'text')"
        )
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the Kaggle file has {', '.join(COLUMNS)}"
        )
    if not records:
        raise DataError(f"{path}: has a header but no data rows")
    where = [header.index(c) for c in COLUMNS]
    ragged = [
        BadRow(
            n, r[where[0]] if len(r) > where[0] else "", f"{len(r)} fields, expected {len(header)}"
        )
        for n, r in enumerate(records, start=1)
        if len(r) != len(header)
    ]
    frame = pd.DataFrame(
        [[r[i] for i in where] if len(r) == len(header) else [""] * len(where) for r in records],
        columns=list(COLUMNS),
        dtype=str,
    )
    return frame, ragged


def load_kaggle_csv(
    path: str | Path, bad_rows: str = "fail", max_bad_fraction: float = 0.01, task: str = "closed"
) -> KaggleFrame:
    """Read and validate a Kaggle-format CSV; raise :class:`DataError` naming file and row.

    ``task`` decides the ``label`` column: "closed" (open 0 / closed 1) or
    "close-reason" (open and the four close reasons, ids as in CLOSE_REASON_LABELS).
    """
    if task not in TASK_STATUS_IDS:
        raise ConfigError(f"data.task={task!r}: must be one of {', '.join(TASK_STATUS_IDS)}")
    path = Path(path)
    frame, ragged = _read_csv(path)
    frame.insert(0, "row", range(1, len(frame) + 1))
    # object dtype: a float column would round ids above 2**53
    ids = pd.Series([parse_post_id(v) for v in frame["PostId"]], index=frame.index, dtype=object)
    frame.insert(1, "post_id", ids)
    bad = merge_bad(ragged, _find_bad_rows(frame, {b.row for b in ragged}))
    if bad:
        if bad_rows == "fail":
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DataError(
                f"{path}: {bad[0].describe()}{more}. Fix the file, or pass "
                "--set data.bad_rows=skip to drop malformed rows and report them."
            )
        if len(bad) > max_bad_fraction * len(frame):
            raise DataError(
                f"{path}: {len(bad)} of {len(frame)} rows are malformed, over the "
                f"data.max_bad_fraction={max_bad_fraction} limit; first: {bad[0].describe()}"
            )
        frame = frame[~frame["row"].isin({b.row for b in bad})]
    if frame.empty:
        raise DataError(f"{path}: no usable rows left after dropping malformed ones")
    frame = frame.assign(
        PostId=frame["post_id"].astype("int64"),
        label=frame["OpenStatus"].map(TASK_STATUS_IDS[task]).astype("int64"),
        PostCreationDate=parse_dates(frame["PostCreationDate"]),
        OwnerCreationDate=parse_dates(frame["OwnerCreationDate"]),
        ReputationAtPostCreation=frame["ReputationAtPostCreation"].map(_int64_or_none),
    )
    frame = frame.astype({"ReputationAtPostCreation": "int64"}).drop(columns="post_id")
    return KaggleFrame(frame=frame.reset_index(drop=True), skipped=bad)


def merge_bad(*groups: list[BadRow]) -> list[BadRow]:
    """One BadRow per row (the first reason found), in file order."""
    bad: dict[int, BadRow] = {}
    for group in groups:
        for item in group:
            bad.setdefault(item.row, item)
    return sorted(bad.values(), key=lambda b: b.row)


def _find_bad_rows(frame: pd.DataFrame, ragged: set[int]) -> list[BadRow]:
    """Every malformed cell, then every later row that repeats an earlier row's PostId."""
    checks = [
        (
            frame["post_id"].isna(),
            lambda r: f"PostId {show(r.PostId)} is not an integer in 0..{INT64_MAX}",
        ),
        (
            ~frame["OpenStatus"].isin(STATUS_LABELS),
            lambda r: (
                f"unknown OpenStatus {show(r.OpenStatus)}; expected one of "
                + ", ".join(STATUS_LABELS)
            ),
        ),
        (
            (frame["Title"].str.strip() == "") & (frame["BodyMarkdown"].str.strip() == ""),
            lambda r: "Title and BodyMarkdown are both empty",
        ),
        (
            frame["ReputationAtPostCreation"].map(_int64_or_none).isna(),
            lambda r: (
                f"ReputationAtPostCreation {show(r.ReputationAtPostCreation)} is not an "
                "int64 integer"
            ),
        ),
        (
            parse_dates(frame["PostCreationDate"]).isna(),
            lambda r: f"PostCreationDate {show(r.PostCreationDate)} is not a date",
        ),
        (
            parse_dates(frame["OwnerCreationDate"]).isna() & (frame["OwnerCreationDate"] != ""),
            lambda r: f"OwnerCreationDate {show(r.OwnerCreationDate)} is not a date",
        ),
    ]
    rows = frame[~frame["row"].isin(ragged)]
    found = [
        BadRow(record.row, record.PostId, reason(record))
        for mask, reason in checks
        for record in rows[mask[rows.index]].itertuples(index=False)
    ]
    return merge_bad(found, _duplicates(rows))


def _duplicates(frame: pd.DataFrame) -> list[BadRow]:
    """Rows whose PostId (as an integer: 01085 is 1085) an earlier row already has."""
    first: dict[int, int] = {}
    out = []
    for row, text, post_id in zip(frame["row"], frame["PostId"], frame["post_id"], strict=True):
        if post_id is None:
            continue
        if post_id in first:
            out.append(
                BadRow(
                    row, text, f"duplicate PostId {post_id} (first at data row {first[post_id]})"
                )
            )
        else:
            first[post_id] = row
    return out

"""Reader for the Kaggle "Predict Closed Questions on Stack Overflow" CSV.

The file is quoted CSV with multi-line Markdown bodies. Every check here
names the file and the data row (1-based, header excluded) with its PostId,
because the file is too large to eyeball. Malformed rows either stop the run
(``bad_rows="fail"``, the default: nothing is lost silently) or are dropped and
reported (``bad_rows="skip"``), up to ``max_bad_fraction`` of the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bertrt.errors import DataError

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
CLOSED_REASONS = ("not a real question", "not constructive", "off topic", "too localized")
STATUS_LABELS = {"open": 0, **dict.fromkeys(CLOSED_REASONS, 1)}
LABEL_NAMES = ("open", "closed")
DATE_FORMAT = "%m/%d/%Y %H:%M:%S"


@dataclass
class BadRow:
    row: int  # 1-based data row, header excluded
    post_id: str
    reason: str

    def describe(self) -> str:
        return f"data row {self.row} (PostId {self.post_id or '?'}): {self.reason}"


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


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as text, with the Kaggle columns checked; file-level problems as DataError."""
    if not path.is_file():
        raise DataError(
            f"{path}: no such file. Get train-sample.csv (or train.csv) from the Kaggle "
            "competition 'Predict Closed Questions on Stack Overflow' and pass its path."
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (expected a header and data rows)")
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8"
        )
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {err.start}); is this the Kaggle CSV?"
        ) from err
    except (pd.errors.ParserError, csv.Error) as err:
        raise DataError(f"{path}: cannot be parsed as CSV: {err}") from err
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: the file is empty (expected a header and data rows)") from err

    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the Kaggle file has {', '.join(COLUMNS)}"
        )
    if frame.empty:
        raise DataError(f"{path}: has a header but no data rows")

    return frame


def load_kaggle_csv(
    path: str | Path, bad_rows: str = "fail", max_bad_fraction: float = 0.01
) -> KaggleFrame:
    """Read and validate a Kaggle-format CSV; raise :class:`DataError` naming file and row."""
    path = Path(path)
    frame = _read_csv(path)
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    frame.insert(0, "row", range(1, len(frame) + 1))
    bad = _find_bad_rows(frame)
    _check_duplicates(path, frame, bad_rows)

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
    frame = frame.drop_duplicates(subset="PostId", keep="first")
    if frame.empty:
        raise DataError(f"{path}: no usable rows left after dropping malformed ones")

    frame = frame.assign(
        PostId=frame["PostId"].astype("int64"),
        label=frame["OpenStatus"].map(STATUS_LABELS).astype("int64"),
        PostCreationDate=parse_dates(frame["PostCreationDate"]),
        OwnerCreationDate=parse_dates(frame["OwnerCreationDate"]),
        ReputationAtPostCreation=frame["ReputationAtPostCreation"].astype("int64"),
    ).reset_index(drop=True)
    return KaggleFrame(frame=frame, skipped=bad)


def _find_bad_rows(frame: pd.DataFrame) -> list[BadRow]:
    checks = [
        (
            ~frame["PostId"].str.fullmatch(r"\d+"),
            lambda r: f"PostId {r.PostId!r} is not an integer",
        ),
        (
            ~frame["OpenStatus"].isin(STATUS_LABELS),
            lambda r: (
                f"unknown OpenStatus {r.OpenStatus!r}; expected one of " + ", ".join(STATUS_LABELS)
            ),
        ),
        (
            (frame["Title"].str.strip() == "") & (frame["BodyMarkdown"].str.strip() == ""),
            lambda r: "Title and BodyMarkdown are both empty",
        ),
        (
            ~frame["ReputationAtPostCreation"].str.fullmatch(r"-?\d+"),
            lambda r: f"ReputationAtPostCreation {r.ReputationAtPostCreation!r} is not an integer",
        ),
        (
            parse_dates(frame["PostCreationDate"]).isna(),
            lambda r: f"PostCreationDate {r.PostCreationDate!r} is not a date",
        ),
        (
            parse_dates(frame["OwnerCreationDate"]).isna() & (frame["OwnerCreationDate"] != ""),
            lambda r: f"OwnerCreationDate {r.OwnerCreationDate!r} is not a date",
        ),
    ]
    bad: dict[int, BadRow] = {}
    for mask, reason in checks:
        for record in frame[mask].itertuples(index=False):
            bad.setdefault(record.row, BadRow(record.row, record.PostId, reason(record)))
    return sorted(bad.values(), key=lambda b: b.row)


def _check_duplicates(path: Path, frame: pd.DataFrame, bad_rows: str) -> None:
    dup = frame[frame["PostId"].duplicated(keep=False) & (frame["PostId"] != "")]
    if dup.empty or bad_rows == "skip":
        return
    counts = dup.groupby("PostId")["row"].apply(list)
    first_id, rows = next(iter(counts.items()))
    raise DataError(
        f"{path}: {len(counts)} duplicate PostId(s) over {len(dup)} rows; first: PostId "
        f"{first_id} at data rows {', '.join(map(str, rows))}. PostIds key the split, so "
        "each must be unique (--set data.bad_rows=skip keeps the first of each)."
    )

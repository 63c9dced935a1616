"""What one scored chunk becomes: output columns, rejected rows, and the bad-row policy.

Shared by the single-process job and the Ray actors so both write the same
columns, in the same order, with the same messages: the id column (or
``row``), ``label`` (the class name), one probability column per class named
after it, then the kept columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.data.stream import Chunk, Layout
from bertrt.errors import ConfigError, DataError
from bertrt.scoring.output import Columns


def output_names(layout: Layout, id_name: str, labels: Sequence[str]) -> list[str]:
    """OUT's header; refuses a kept column or class that would collide with another column."""
    names = [id_name, "label", *labels, *layout.keep_columns]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(
                f"output column {name!r} appears twice (id, label, the classes "
                f"{', '.join(labels)} and --keep-column must differ); drop that --keep-column"
            )
        seen.add(name)
    return names


def good_rows(chunk: Chunk) -> list[int]:
    """Positions of the rows of ``chunk`` that have a text to score."""
    return [i for i, reason in enumerate(chunk.reasons) if not reason]


def prediction_columns(
    chunk: Chunk, rows: list[int], probabilities: np.ndarray, labels: Sequence[str], id_name: str
) -> Columns:
    """The output columns of ``rows`` of ``chunk``; ``probabilities`` holds one row per row."""
    columns: Columns = {id_name: [chunk.ids[i] for i in rows]}
    columns["label"] = [labels[k] for k in probabilities.argmax(axis=1)] if rows else []
    for k, name in enumerate(labels):
        columns[name] = probabilities[:, k].astype(np.float32)
    for name, values in chunk.keep.items():
        columns[name] = [values[i] for i in rows]
    return columns


def rejected(chunk: Chunk, path: Path, unit: str, id_name: str) -> list[dict[str, Any]]:
    """One record per bad row of ``chunk``: file, row (or line), id and why."""
    return [
        {"file": str(path), unit.replace("data ", ""): chunk.rows[i], id_name: chunk.ids[i]}
        | {"reason": reason}
        for i, reason in enumerate(chunk.reasons)
        if reason
    ]


@dataclass
class BadRowPolicy:
    """``data.bad_rows``: stop at the first bad row ("fail") or count them ("skip")."""

    mode: str
    max_fraction: float
    rejects: Path  # where skipped rows are written, named in messages
    bad: int = 0
    total: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("fail", "skip"):
            raise ConfigError(f"data.bad_rows={self.mode!r}: must be fail or skip")

    def check(self, records: list[dict[str, Any]], rows: int, unit: str, id_name: str) -> None:
        """Count a chunk of ``rows`` rows with these rejected ``records``; fail on the first
        bad row in "fail" mode."""
        self.total += rows
        self.bad += len(records)
        if records and self.mode == "fail":
            first = records[0]
            where = f"{unit} {first[unit.replace('data ', '')]}"
            if id_name != "row":
                where += f" ({id_name} {first[id_name]})"
            raise DataError(
                f"{first['file']}: {where}: {first['reason']}. Fix the file, or pass "
                f"--set data.bad_rows=skip to score the rest and list bad rows in {self.rejects}"
            )

    def finish(self, path: Path) -> None:
        """Fail when more than ``max_fraction`` of the rows were bad, or none was usable."""
        if self.total and self.bad > self.max_fraction * self.total:
            raise DataError(
                f"{path}: {self.bad} of {self.total} rows are malformed, over the "
                f"data.max_bad_fraction={self.max_fraction} limit; they are listed in "
                f"{self.rejects}"
            )
        if self.total == self.bad:
            raise DataError(f"{path}: has no usable rows to score")

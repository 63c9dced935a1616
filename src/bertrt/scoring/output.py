"""Predictions written chunk by chunk to CSV, JSONL or Parquet, published only when complete.

A scoring job can run for hours; a kill, a full disk or a bad row must never
leave an OUT that looks finished. Every writer appends to a temporary file
beside OUT (``.<name>.<pid>.partial``) and :class:`AtomicOutput` renames it
over OUT only after the last chunk (fsynced, the umask's mode). A job killed
with SIGKILL cannot clean up after itself, so the next job for the same OUT
removes every ``.<name>.<pid>.partial`` whose process is gone.

Probabilities keep float32 precision: CSV writes 9 significant digits (the
shortest text that always reads back to the same float32), JSONL the same
value as a JSON number, Parquet a float32 column.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np

from bertrt.artifacts import publish_dir, publish_file
from bertrt.errors import ConfigError, DataError, UnavailableError

OUT_FORMATS = {".csv": "CSV", ".jsonl": "JSONL", ".parquet": "Parquet"}
PARTIAL = ".partial"

Columns = dict[str, Any]  # column name -> list of values or a numpy array, one per row


def out_format(path: Path) -> str:
    kind = OUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"--out {path}: the extension names the format; use one of {', '.join(OUT_FORMATS)}"
        )
    return kind


def rejects_path(out: Path) -> Path:
    """Where skipped rows go: ``OUT.rejects.jsonl`` beside OUT."""
    return out.with_name(out.name + ".rejects.jsonl")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_partials(out: Path) -> list[Path]:
    """Remove what killed jobs for ``out`` left behind (their process is gone); return them."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for leftover in out.parent.glob(f".{out.name}.*{PARTIAL}"):
        pid = leftover.name.removeprefix(f".{out.name}.").removesuffix(PARTIAL)
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


class AtomicOutput:
    """A temporary file (or directory) for ``out``, renamed over it by :meth:`publish`.

    Leaving the ``with`` block without publishing removes the temporary path, so
    an exception leaves OUT as it was; a SIGKILL leaves the temporary path for
    the next job's :func:`sweep_partials`.
    """

    def __init__(self, out: Path, directory: bool = False) -> None:
        self.out = out
        self.directory = directory
        self.tmp = out.parent / f".{out.name}.{os.getpid()}{PARTIAL}"

    def __enter__(self) -> Self:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        sweep_partials(self.out)
        if self.directory:
            self.tmp.mkdir()
        return self

    def publish(self) -> None:
        if self.directory:
            publish_dir(self.tmp, self.out)
        else:
            if self.out.is_dir():
                raise ConfigError(f"--out {self.out}: is a directory; name a file")
            publish_file(self.tmp, self.out)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


class TableWriter(ABC):
    """Appends chunks of rows (same columns every time) to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0

    def write(self, columns: Columns) -> None:
        if columns:
            self._write(columns)
            self.rows += len(next(iter(columns.values())))

    @abstractmethod
    def _write(self, columns: Columns) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cell(value: Any) -> Any:
    """A value as a CSV cell: floats with float32 precision, nested JSON values as JSON."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return format(float(value), ".9g")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _plain(value: Any) -> Any:
    """A value as JSON: numpy scalars as Python numbers, floats at float32 precision."""
    if isinstance(value, np.floating | float):
        return float(format(float(value), ".9g"))
    if isinstance(value, np.integer):
        return int(value)
    return value


class CsvWriter(TableWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._fh: IO[str] = path.open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._fh)
        self._header = False

    def _write(self, columns: Columns) -> None:
        if not self._header:
            self._csv.writerow(list(columns))
            self._header = True
        cells = [[_cell(v) for v in values] for values in columns.values()]
        self._csv.writerows(zip(*cells, strict=True))

    def close(self) -> None:
        self._fh.close()


class JsonlWriter(TableWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._fh: IO[str] = path.open("w", encoding="utf-8")

    def _write(self, columns: Columns) -> None:
        names = list(columns)
        cells = [[_plain(v) for v in values] for values in columns.values()]
        lines = (
            json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n"
            for row in zip(*cells, strict=True)
        )
        self._fh.writelines(lines)

    def close(self) -> None:
        self._fh.close()


class ParquetWriter(TableWriter):
    """One row group per chunk; the schema is the first chunk's (a column that is all null
    there becomes a string column, so later chunks with values still fit)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as err:
            raise UnavailableError(
                f"--out {path}: writing Parquet needs pyarrow: pip install pyarrow"
            ) from err
        self._pa, self._pq = pa, pq
        self._writer: Any = None
        self._schema: Any = None

    def _write(self, columns: Columns) -> None:
        pa = self._pa
        if self._schema is None:
            table = pa.table(columns)
            fields = [
                pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                for f in table.schema
            ]
            self._schema = pa.schema(fields)
            self._writer = self._pq.ParquetWriter(self.path, self._schema)
        try:
            table = pa.table(columns, schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise DataError(
                f"--out {self.path}: a kept column changes type between chunks ({err}); "
                "write CSV or JSONL instead"
            ) from err
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_writer(path: Path, kind: str) -> TableWriter:
    if kind == "CSV":
        return CsvWriter(path)
    if kind == "JSONL":
        return JsonlWriter(path)
    return ParquetWriter(path)

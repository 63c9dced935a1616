"""OUT and its rejects file, filled chunk by chunk and published together at the end.

The single-process job and the Ray driver (one-file output) both hand their
scored chunks here, so the bad-row policy, the rejects file and the atomic
publish behave the same on both engines. Under ``data.bad_rows=skip`` the
rejects file is written even when the job then fails on
``data.max_bad_fraction`` (it says which rows were bad); OUT is published
only when the job succeeds.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Self

from bertrt.scoring.job import ScoreOptions
from bertrt.scoring.output import (
    AtomicOutput,
    Columns,
    TableWriter,
    open_writer,
    out_format,
    rejects_path,
)
from bertrt.scoring.predictions import BadRowPolicy


class Sink:
    """Where one job's predictions and rejected rows go."""

    def __init__(self, options: ScoreOptions, unit: str, directory: bool = False) -> None:
        self.options = options
        self.unit = unit  # "data row" or "line"
        self.directory = directory  # OUT is a directory of shards written elsewhere
        self.kind = out_format(options.out)
        self.rejects = rejects_path(options.out)
        self.policy = BadRowPolicy(options.bad_rows, options.max_bad_fraction, self.rejects)
        self.scored = 0
        self._stack = ExitStack()
        self._out = AtomicOutput(options.out, directory=directory)
        self._rejects_out: AtomicOutput | None = None
        self._rejects_fh: IO[str] | None = None
        self._writer: TableWriter | None = None

    @property
    def tmp(self) -> Path:
        """The temporary file (or directory) OUT is written to until it is published."""
        return self._out.tmp

    def __enter__(self) -> Self:
        self._stack.enter_context(self._out)
        if self.options.bad_rows == "skip":
            self._rejects_out = self._stack.enter_context(AtomicOutput(self.rejects))
            self._rejects_fh = self._stack.enter_context(
                self._rejects_out.tmp.open("w", encoding="utf-8")
            )
        if not self.directory:
            self._writer = self._stack.enter_context(open_writer(self._out.tmp, self.kind))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def add(
        self, columns: Columns | None, records: list[dict[str, Any]], rows: int, id_name: str
    ) -> None:
        """``rows`` rows: ``columns`` of the scored ones (None: written elsewhere, e.g. a
        shard; then ``rows`` counts them all), ``records`` of the bad ones."""
        self.policy.check(records, rows, self.unit, id_name)
        if self._rejects_fh is not None:
            self._rejects_fh.writelines(
                json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records
            )
        self.scored += rows - len(records)
        if columns is not None and self._writer is not None:
            self._writer.write(columns)

    def publish(self) -> None:
        """Rejects first (kept even if the job fails on the bad-row limit), then OUT."""
        if self._writer is not None:
            self._writer.close()
        if self._rejects_fh is not None and self._rejects_out is not None:
            self._rejects_fh.close()
            self._rejects_out.publish()
        self.policy.finish(self.options.data)
        self._out.publish()
        if self.options.bad_rows == "fail":  # an earlier skip run's rejects no longer apply
            self.rejects.unlink(missing_ok=True)

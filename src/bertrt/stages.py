"""The skeleton every stage runs in: require, stage, publish, record.

::

    with stage(rundir, "export", requires={"train": [rundir.merged]}) as out:
        export_onnx(model, out.path(rundir.onnx("fp32")), ...)
        out.facts["opset"] = 17
    return out.result

Inside the ``with`` block a stage writes every artifact to ``out.path(final)``,
a location inside ``<run>/.staging-<stage>-XXXX`` (same filesystem, so the
moves are renames). Only when the block ends without an exception is anything
published: files are fsynced and renamed, directories swapped in, and then the
stage is recorded in the manifest. An exception publishes nothing, so files
that belong together (a TensorRT plan and its sidecar) appear together or not
at all. The staging directory is always removed; one left by a killed process
is swept when the same stage next starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, publish_dir, publish_file

# Staging directories of the code before this module, swept the same way.
_LEGACY_STAGING = {"export": "onnx/.export-*", "calibrate": "onnx/.calibrate-*"}


@dataclass(frozen=True)
class StageResult:
    """What a stage did: the manifest's record of it, plus what its caller shows or reads."""

    stage: str
    outputs: list[Path]
    wall_s: float
    facts: dict[str, Any]  # the manifest's "extra" for this stage
    summary: str = ""  # what the CLI shows; empty when there is nothing to say
    report: dict[str, Any] = field(default_factory=dict)  # the stage's main JSON document


@dataclass
class Staging:
    """The stage in progress: where its outputs go and what will be recorded."""

    rundir: RunDir
    name: str
    inputs: list[Path]
    outputs: list[Path] = field(default_factory=list)
    external_inputs: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    started: float = field(default_factory=time.perf_counter, init=False)
    _discarded: bool = field(default=False, init=False)
    _staged: dict[Path, Path] = field(default_factory=dict, init=False)  # final -> staged
    _file_dirs: list[Path] = field(default_factory=list, init=False)  # see files_in()
    _result: StageResult | None = field(default=None, init=False)
    _root: Path | None = field(default=None, init=False)
    _lock: int | None = field(default=None, init=False)  # fd holding the flock on _root

    @property
    def root(self) -> Path:
        """The staging directory, made on first use: a stage that fails early leaves no trace."""
        if self._root is None:
            self._root, self._lock = _make_staging(self.rundir, self.name)
        return self._root

    def path(self, final: Path) -> Path:
        """Where to write ``final`` (a file or a directory) now; it is published at the end."""
        if final not in self._staged:
            staged = self.root / self.rundir.rel(final)
            staged.parent.mkdir(parents=True, exist_ok=True)
            self._staged[final] = staged
            self.outputs.append(final)
        return self._staged[final]

    def files_in(self, final_dir: Path) -> Path:
        """A staged directory whose files are published one by one into ``final_dir``.

        Unlike ``path(final_dir)``, which swaps the whole directory, the files
        ``final_dir`` already has and the stage does not rewrite are kept (the
        bench's history and previous results live beside the new reports).
        """
        staged = self.root / self.rundir.rel(final_dir)
        staged.mkdir(parents=True, exist_ok=True)
        if final_dir not in self._file_dirs:
            self._file_dirs.append(final_dir)
        return staged

    @property
    def scratch(self) -> Path:
        """A directory for intermediate files, removed with the staging directory."""
        path = self.root / ".scratch"
        path.mkdir(exist_ok=True)
        return path

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def discard(self) -> None:
        """Publish and record nothing (a non-main rank of distributed training)."""
        self._discarded = True

    @property
    def result(self) -> StageResult:
        if self._result is None:
            raise RuntimeError(f"stage {self.name}: result read before the stage finished")
        return self._result

    def close(self) -> None:
        """Remove the staging directory (empty after a publish) and release its lock."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
        self._root = self._lock = None

    def finish(self) -> None:
        """Move every staged output into place, then record the stage in the manifest."""
        if self._discarded:
            self._result = StageResult(self.name, [], self.elapsed, {})
            return
        for final_dir in self._file_dirs:
            staged_dir = self.root / self.rundir.rel(final_dir)
            for staged in sorted(p for p in staged_dir.rglob("*") if p.is_file()):
                self.path(final_dir / staged.relative_to(staged_dir))
        missing = [self.rundir.rel(f) for f, s in self._staged.items() if not s.exists()]
        if missing:
            raise RuntimeError(f"stage {self.name} did not write {', '.join(missing)}")
        for final, staged in self._staged.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            (publish_dir if staged.is_dir() else publish_file)(staged, final)
        wall_s = self.elapsed
        self.rundir.record(
            self.name,
            inputs=self.inputs,
            outputs=self.outputs,
            wall_s=wall_s,
            extra=self.facts,
            external_inputs=self.external_inputs,
        )
        self._result = StageResult(
            self.name, list(self.outputs), wall_s, self.facts, self.summary, self.report
        )


@contextlib.contextmanager
def stage(
    rundir: RunDir,
    name: str,
    requires: Mapping[str, Sequence[Path]] | None = None,
    reads: Sequence[Path] = (),
) -> Iterator[Staging]:
    """Run one stage: ``requires`` maps producer -> inputs checked with :meth:`RunDir.require`.

    The recorded inputs are the required paths followed by ``reads`` (inputs
    recorded but not checked); a stage may append more to ``out.inputs``.
    """
    required = [path for paths in (requires or {}).values() for path in paths]
    for producer, paths in (requires or {}).items():
        rundir.require(name, list(paths), producer=producer)
    _sweep(rundir, name)
    out = Staging(rundir, name, inputs=[*required, *reads])
    try:
        yield out
        out.finish()
    finally:
        out.close()


def _sweep(rundir: RunDir, name: str) -> None:
    """Remove the staging directories that killed runs of ``name`` left behind.

    Each live staging directory holds an flock (released by the kernel when
    its process dies, even on kill -9), so a sweep never removes the staging
    directory of a stage still running, e.g. rank 0's while rank 1 starts.
    Sweeping and creating hold a lock on the run root so they do not interleave.
    """
    if not rundir.root.is_dir():
        return
    patterns = [f".staging-{name}-*", *filter(None, [_LEGACY_STAGING.get(name)])]
    with _locked(rundir.root):
        for left in (p for pattern in patterns for p in rundir.root.glob(pattern)):
            _remove_if_abandoned(left)


def _make_staging(rundir: RunDir, name: str) -> tuple[Path, int]:
    """A new staging directory in the run root, and the open descriptor holding its lock."""
    rundir.root.mkdir(parents=True, exist_ok=True)
    with _locked(rundir.root):
        root = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=rundir.root))
        lock = os.open(root, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX)
    return root, lock


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_if_abandoned(path: Path) -> None:
    if not path.is_dir():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(BlockingIOError):  # locked: its stage is still running
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)

"""The run directory: where every artifact lives, how it is written, what it was made from.

Three rules hold for every stage:

* Nothing is written in place. A stage writes into a staging directory in
  the run root (:mod:`bertrt.stages`); once all of it is complete, files are
  fsynced and renamed into place and directories swapped in. Single files
  outside a stage go through a temporary sibling (:func:`atomic_file`). An
  interrupted stage leaves the previous artifact or nothing, never half.
* ``manifest.json`` records, per stage, the sha256 of what it read and wrote,
  the package versions and the wall time.
* Before a stage runs, :meth:`RunDir.require` checks that each input exists
  and still has the hash its producer recorded, and that the producer's own
  inputs are still current. Otherwise it names the stage to (re)run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertrt.errors import MissingArtifactError, StaleArtifactError

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "bertrt",
    "torch",
    "transformers",
    "peft",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "numpy",
)

# Which CLI command produces each stage's outputs, for error messages.
STAGE_COMMANDS = {
    "data": "bertrt data --data CSV",
    "train": "bertrt train",
    "import": "bertrt import --model SRC --data FILE",
    "export": "bertrt export",
    "calibrate": "bertrt calibrate",
    "qat": "bertrt qat",
    "build-engine": "bertrt build-engine",
    "bench": "bertrt bench",
}
# Stages that may write what another stage's consumers require instead of it:
# merged/ comes from `bertrt train` or `bertrt import` (a model trained elsewhere).
# The one whose record is newest among those listing the artifact is its producer.
PRODUCER_ALTERNATIVES = {"train": ("import",)}


class RunDir:
    """Paths of one run's artifacts and its manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- layout ---------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def train_metrics(self) -> Path:
        return self.root / "train_metrics.json"

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    def onnx(self, variant: str) -> Path:
        """``fp32`` → onnx/model.onnx; ``opt``/``fp16``/``int8``/``cpu`` → onnx/model.<v>.onnx."""
        name = "model.onnx" if variant == "fp32" else f"model.{variant}.onnx"
        return self.onnx_dir / name

    @property
    def qat_report(self) -> Path:
        """`bertrt qat`'s record: quantizers, validation history, parity, TensorRT check.

        Its models are ``onnx("mtq-int8")`` (ModelOpt post-training INT8) and
        ``onnx("qat")`` (quantization-aware fine-tuned), both explicit Q/DQ.
        """
        return self.root / "qat.json"

    @property
    def calibration_dir(self) -> Path:
        return self.root / "calibration"

    @property
    def engines_dir(self) -> Path:
        return self.root / "engines"

    def engine(self, precision: str) -> Path:
        return self.engines_dir / f"{precision}.plan"

    def engine_meta(self, precision: str) -> Path:
        return self.engines_dir / f"{precision}.json"

    @property
    def openvino_dir(self) -> Path:
        return self.root / "openvino"

    def openvino_ir(self, variant: str) -> Path:
        """``int8`` -> openvino/model.int8.xml (its weights beside it, model.int8.bin)."""
        return self.openvino_dir / f"model.{variant}.xml"

    @property
    def cpu_choice(self) -> Path:
        """Which model and runtime calibrate chose for CPU deployment, and on which CPU."""
        return self.root / "cpu.json"

    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    def rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    # -- manifest -------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        manifest = read_json(self.manifest_path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
            raise StaleArtifactError(
                f"{self.manifest_path}: not a manifest (no 'stages' mapping); restore it or "
                "rerun the stages from `bertrt data` on"
            )
        return manifest

    def recorded_outputs(self) -> dict[str, str]:
        """Relative path -> sha256 of every stage output the manifest records.

        After :meth:`require` has passed for a file, this is its hash without
        reading the file again.
        """
        return {
            rel: digest
            for record in self.read_manifest()["stages"].values()
            for rel, digest in record.get("outputs", {}).items()
        }

    def producer_of(self, path: Path) -> str | None:
        rel = self.rel(path)
        for stage, record in self.read_manifest()["stages"].items():
            if rel in record.get("outputs", {}):
                return str(stage)
        return None

    def require(self, stage: str, paths: list[Path], producer: str) -> None:
        """Refuse to run ``stage`` unless each path exists and is what ``producer`` wrote.

        Also checks one level up: the producer's own inputs must still be the
        files it read, otherwise its outputs are stale even if untouched.
        """
        manifest = self.read_manifest()["stages"]
        producer = self._current_producer(manifest, producer, paths)
        command = STAGE_COMMANDS.get(producer, f"bertrt {producer}")
        for path in paths:
            if not path.exists():
                raise MissingArtifactError(
                    f"{stage}: {path} does not exist; run `{command} --run-dir {self.root}` first"
                )
        record = manifest.get(producer)
        if record is None:
            raise MissingArtifactError(
                f"{stage}: {self.manifest_path} has no record of stage {producer!r}; "
                f"run `{command} --run-dir {self.root}` first"
            )
        for path in paths:
            rel = self.rel(path)
            expected = record.get("outputs", {}).get(rel)
            if expected is None:
                raise MissingArtifactError(
                    f"{stage}: {rel} was not written by `{command}`; rerun it"
                )
            if sha256_path(path) != expected:
                raise StaleArtifactError(
                    f"{stage}: {path} changed since `{command}` wrote it (sha256 mismatch); "
                    f"rerun `{command} --run-dir {self.root}`"
                )
        for rel, expected in record.get("inputs", {}).items():
            path = self.root / rel
            upstream = self.producer_of(path) if path.exists() else None
            if not path.exists() or sha256_path(path) != expected:
                up_cmd = STAGE_COMMANDS.get(upstream or "", command)
                raise StaleArtifactError(
                    f"{stage}: {rel}, which `{command}` was built from, has changed or gone "
                    f"(after `{up_cmd}` ran again?); rerun `{command} --run-dir {self.root}`"
                )

    def _current_producer(self, manifest: dict[str, Any], producer: str, paths: list[Path]) -> str:
        """``producer``, or the alternative (:data:`PRODUCER_ALTERNATIVES`) that last wrote ``paths``."""
        alternatives = PRODUCER_ALTERNATIVES.get(producer, ())
        rels = [self.rel(p) for p in paths]
        writers = [
            name
            for name in (producer, *alternatives)
            if name in manifest and all(r in manifest[name].get("outputs", {}) for r in rels)
        ]
        if not writers:
            return producer
        return max(writers, key=lambda name: str(manifest[name].get("finished", "")))

    def record(
        self,
        stage: str,
        inputs: list[Path],
        outputs: list[Path],
        wall_s: float,
        extra: dict[str, Any] | None = None,
        external_inputs: dict[str, str] | None = None,
    ) -> None:
        """Record a finished stage. Inputs/outputs are paths inside the run dir."""
        manifest = self.read_manifest()
        manifest.setdefault("stages", {})[stage] = {
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_s": round(wall_s, 3),
            "inputs": {self.rel(p): sha256_path(p) for p in inputs},
            "external_inputs": external_inputs or {},
            "outputs": {self.rel(p): sha256_path(p) for p in outputs},
            "versions": package_versions(),
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            **({"extra": extra} if extra else {}),
        }
        write_json(self.manifest_path, manifest)

    def stage_extra(self, stage: str) -> dict[str, Any]:
        return dict(self.read_manifest()["stages"].get(stage, {}).get("extra", {}))


@dataclass
class StageTimer:
    """Wall time of a stage, for the manifest."""

    start: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


# -- hashing ------------------------------------------------------------------
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory as the sorted list of (relative path, file hash)."""
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(sha256_file(file).encode())
        return digest.hexdigest()
    return sha256_file(path)


# -- atomic writes ------------------------------------------------------------
_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    For writers that insist on a file name (``torch.onnx.export``, TensorRT).
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        publish_file(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def publish_file(src: Path, dst: Path) -> None:
    """fsync ``src`` and rename it over ``dst`` (same filesystem), with the umask's mode.

    The mode is set here because ``mkstemp`` and some writers create files 0600.
    """
    _fsync_file(src)
    os.chmod(src, 0o666 & ~_UMASK)
    os.replace(src, dst)
    _fsync_dir(dst.parent)


def publish_dir(src: Path, dst: Path) -> None:
    """Swap the finished directory ``src`` in for ``dst``; the old one is removed afterwards.

    Two renames, not one: POSIX cannot atomically replace a non-empty
    directory, so ``dst`` moves to ``.<name>.old`` first. A crash between the
    renames leaves ``dst`` missing (the manifest then names the stage to rerun),
    never a mix of old and new files.
    """
    os.chmod(src, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    for file in src.rglob("*"):
        if file.is_file():
            _fsync_file(file)
            os.chmod(file, 0o666 & ~_UMASK)
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    _fsync_dir(dst.parent)
    if old.exists():
        shutil.rmtree(old)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_with(path: Path, writer: Callable[[Path], Any], suffix: str = "") -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_file(path, suffix=suffix) as tmp:
        writer(tmp)


def read_json(path: Path) -> Any:
    """A run's JSON artifact; one cut short or corrupted is a stale artifact (exit 4), named."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StaleArtifactError(
            f"{path}: not valid JSON ({err}); it was cut short or changed: restore it or "
            "rerun the stage that wrote it"
        ) from err


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")

"""SIGKILL of data, export and calibrate at points the stage's own progress marks.

Each point is a file the stage is about to produce (its staging directory,
one staged artifact, a published file replaced), polled for, never a sleep:
the kill lands there on any machine speed. After each kill, every artifact
the manifest records still has its recorded sha256, or (killed between two
renames of one stage's publish) the next stage refuses the half-published
set with exit 4; the next run of the killed stage succeeds; and nothing
stale (staging directories, temporary files) is left in the run.

Train is not killed here: even a tiny model takes most of this test's time
budget to train, and it publishes through the same skeleton (bertrt.stages).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bertrt.artifacts import RunDir, sha256_path
from bertrt.cli import main
from bertrt.errors import StaleArtifactError
from tests.conftest import make_trained_run
from tests.robustness.helpers import REPO, sets

SMALL = [
    "model.max_length=32",
    "export.verify_batch_sizes=[1,2]",
    "export.verify_seq_lengths=[32]",
    "export.verify_rows=8",
    "calibration.rows=32",
    "calibration.batch_size=8",
    "calibration.eval_rows=48",
    "calibration.cpu_candidates=[dynamic-int8,fp32-opt]",
]
NEXT = {"data": ("train", "split.json"), "export": ("calibrate", "onnx/model.onnx")}
NEXT["calibrate"] = ("build-engine", "onnx/model.int8.onnx")

Point = Callable[[RunDir], bool]


def staging(stage: str, rel: str = "") -> Point:
    """True once the stage's staging directory (or a file staged in it) exists."""
    return lambda run: any(run.root.glob(f".staging-{stage}-*/{rel}"))


def replaced(rel: str) -> Point:
    """True once the published ``rel`` is another file than when the stage started."""
    inodes: dict[Path, int] = {}

    def check(run: RunDir) -> bool:
        path = run.root / rel
        inode = path.stat().st_ino if path.exists() else -1
        return inodes.setdefault(run.root, inode) != inode

    return check


POINTS: dict[str, list[tuple[str, Point]]] = {
    "data": [("staging made", staging("data")), ("split staged", staging("data", "split.json"))],
    "export": [
        ("staging made", staging("export")),
        ("fp32 staged", staging("export", "onnx/model.onnx")),
        ("fp16 staged", staging("export", "onnx/model.fp16.onnx")),
        ("first file published", replaced("onnx/model.onnx")),
    ],
    "calibrate": [
        ("staging made", staging("calibrate")),
        ("int8 staged", staging("calibrate", "onnx/model.int8.onnx")),
        ("report staged", staging("calibrate", "calibration/report.json")),
    ],
}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    """A tiny run through data, (stand-in) train, export and calibrate."""
    run = make_trained_run(tmp_path_factory.mktemp("kill"), tiny_base, rows=240)
    for command in ("export", "calibrate"):
        assert main([command, "--run-dir", str(run.root), *sets(*SMALL)]) == 0
    return run


def argv(stage: str, run: RunDir) -> list[str]:
    extra = ["--data", str(run.root.parent / "train-sample.csv")] if stage == "data" else []
    return [stage, "--run-dir", str(run.root), *extra, *sets(*SMALL)]


def kill_at(stage: str, run: RunDir, point: Point, timeout_s: float = 240) -> bool:
    """Run the stage in a child; SIGKILL it when ``point`` holds. False: it finished first."""
    point(run)  # a point may note the state before the stage starts
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO / "src"))}
    child = subprocess.Popen(
        [sys.executable, "-m", "bertrt", *argv(stage, run)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while child.poll() is None and time.monotonic() < deadline:
            if point(run):
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        return child.wait(timeout=timeout_s) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def mismatched(run: RunDir) -> dict[str, str]:
    """Recorded outputs (relative path -> stage) whose file is gone or has another sha256."""
    return {
        rel: stage
        for stage, record in run.read_manifest()["stages"].items()
        for rel, digest in record["outputs"].items()
        if not (run.root / rel).exists() or sha256_path(run.root / rel) != digest
    }


def leftovers(run: RunDir) -> list[str]:
    """Hidden files or directories a stage writes while running (staging, temporaries)."""
    return sorted(
        run.rel(p) for p in run.root.rglob(".*") if ".cache" not in p.relative_to(run.root).parts
    )


@pytest.mark.parametrize("stage", ["data", "export", "calibrate"])
def test_sigkill_leaves_the_run_consistent(calibrated: RunDir, stage: str) -> None:
    run = calibrated
    landed = []
    for name, point in POINTS[stage]:
        killed = any(kill_at(stage, run, point) for _ in range(3))
        landed += [name] if killed else []
        bad = mismatched(run)
        if bad:  # killed between two renames of the publish: refused downstream, by hash
            assert set(bad.values()) == {stage}, bad
            consumer, rel = NEXT[stage]
            with pytest.raises(StaleArtifactError, match=f"rerun `bertrt {stage}"):
                run.require(consumer, [run.root / r for r in bad] + [run.root / rel], stage)
        assert main(argv(stage, run)) == 0, f"{stage} after a kill at {name!r}"
        assert mismatched(run) == {}
        assert leftovers(run) == [], f"{stage} after a kill at {name!r}"
    # Every point but a publish (a few renames) is wide enough to land on any machine.
    assert len(landed) >= len(POINTS[stage]) - 1, landed

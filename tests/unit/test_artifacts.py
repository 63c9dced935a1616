"""Atomic writes and the manifest's stale-input refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertrt.artifacts import RunDir, atomic_file, publish_dir, sha256_path, write_json
from bertrt.errors import MissingArtifactError, StaleArtifactError


def test_atomic_file_leaves_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_publish_dir_swaps_the_whole_directory(tmp_path: Path) -> None:
    target = tmp_path / "merged"
    target.mkdir()
    (target / "old.bin").write_text("1")
    (tmp_path / ".merged.old").mkdir()  # left by a crash between the two renames
    staged = tmp_path / "staging" / "merged"
    staged.mkdir(parents=True)
    (staged / "new.bin").write_text("2")
    publish_dir(staged, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "staging"]


def test_directory_hash_covers_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    before = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "x").write_text("2")
    assert sha256_path(tmp_path / "d") != before


def _two_stage_run(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path)
    write_json(run.split, {"splits": {}})
    run.record("data", inputs=[], outputs=[run.split], wall_s=0.1)
    run.merged.mkdir()
    (run.merged / "w.bin").write_bytes(b"weights")
    run.record("train", inputs=[run.split], outputs=[run.merged], wall_s=1.0)
    return run


def test_require_accepts_current_inputs(tmp_path: Path) -> None:
    run = _two_stage_run(tmp_path)
    run.require("export", [run.merged], producer="train")


def test_require_names_the_stage_to_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(MissingArtifactError, match="run `bertrt train --run-dir"):
        run.require("export", [run.merged], producer="train")


def test_require_refuses_a_changed_artifact(tmp_path: Path) -> None:
    run = _two_stage_run(tmp_path)
    (run.merged / "w.bin").write_bytes(b"tampered")
    with pytest.raises(StaleArtifactError, match=r"sha256 mismatch.*rerun `bertrt train"):
        run.require("export", [run.merged], producer="train")


def test_require_refuses_outputs_of_a_stale_producer(tmp_path: Path) -> None:
    run = _two_stage_run(tmp_path)
    write_json(run.split, {"splits": {"train": [1]}})  # data reran: train's input changed
    run.record("data", inputs=[], outputs=[run.split], wall_s=0.1)
    with pytest.raises(StaleArtifactError, match=r"split\.json.*rerun `bertrt train"):
        run.require("export", [run.merged], producer="train")

"""The stage skeleton: all or nothing, recorded, swept after a kill, normal file modes."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bertrt.artifacts import RunDir, sha256_path, write_json
from bertrt.errors import MissingArtifactError
from bertrt.stages import stage


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _trained(tmp_path: Path) -> RunDir:
    """A run whose data and train stages are recorded, so export's input is current."""
    rundir = RunDir(tmp_path / "run")
    write_json(rundir.split, {"splits": {}})
    rundir.record("data", inputs=[], outputs=[rundir.split], wall_s=0.1)
    rundir.merged.mkdir()
    (rundir.merged / "w.bin").write_bytes(b"weights")
    rundir.record("train", inputs=[rundir.split], outputs=[rundir.merged], wall_s=1.0)
    return rundir


def _hidden(rundir: RunDir) -> list[str]:
    return sorted(p.relative_to(rundir.root).as_posix() for p in rundir.root.rglob(".*"))


def test_successful_stage_publishes_every_output_and_records_hashes(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    with stage(rundir, "export", requires={"train": [rundir.merged]}) as out:
        out.path(rundir.onnx("fp32")).write_bytes(b"graph")
        adapter = out.path(rundir.adapter)
        adapter.mkdir()
        (adapter / "a.bin").write_bytes(b"lora")
        out.facts = {"opset": 17}
        out.summary = "done"
        assert not rundir.onnx("fp32").exists()  # nothing is visible before the end
    assert rundir.onnx("fp32").read_bytes() == b"graph"
    assert (rundir.adapter / "a.bin").read_bytes() == b"lora"
    record = rundir.read_manifest()["stages"]["export"]
    assert record["inputs"] == {"merged": sha256_path(rundir.merged)}
    assert record["outputs"] == {
        "onnx/model.onnx": sha256_path(rundir.onnx("fp32")),
        "adapter": sha256_path(rundir.adapter),
    }
    assert record["extra"] == {"opset": 17}
    result = out.result
    assert result.stage == "export" and result.summary == "done"
    assert result.outputs == [rundir.onnx("fp32"), rundir.adapter]
    assert result.wall_s == pytest.approx(record["wall_s"], abs=1e-3)
    assert _hidden(rundir) == []  # staging directory gone


def test_failing_stage_publishes_nothing_and_removes_its_staging(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    rundir.onnx("fp32").parent.mkdir()
    rundir.onnx("fp32").write_bytes(b"previous")
    before = rundir.read_manifest()
    with pytest.raises(RuntimeError, match="crash"), stage(rundir, "export") as out:
        out.path(rundir.onnx("fp32")).write_bytes(b"complete")
        merged = out.path(rundir.merged)
        merged.mkdir()
        (merged / "w.bin").write_bytes(b"new weights")
        raise RuntimeError("crash")
    assert rundir.onnx("fp32").read_bytes() == b"previous"
    assert (rundir.merged / "w.bin").read_bytes() == b"weights"
    assert rundir.read_manifest() == before
    assert _hidden(rundir) == []


def test_missing_input_fails_before_anything_is_created(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path / "run")
    with (
        pytest.raises(MissingArtifactError, match="bertrt train"),
        stage(rundir, "export", requires={"train": [rundir.merged]}),
    ):
        pytest.fail("the body must not run")
    assert not rundir.root.exists()


def test_staged_output_never_written_is_an_error_and_publishes_nothing(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    missing = pytest.raises(RuntimeError, match=r"did not write engines/int8\.plan")
    with missing, stage(rundir, "build-engine") as out:
        out.path(rundir.engine("fp16")).write_bytes(b"plan")
        out.path(rundir.engine("int8"))
    assert not rundir.engines_dir.exists()


def test_plan_and_sidecar_are_published_together(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    rundir.engines_dir.mkdir()
    rundir.engine("fp16").write_bytes(b"old plan")
    write_json(rundir.engine_meta("fp16"), {"build": "old"})
    with pytest.raises(RuntimeError), stage(rundir, "build-engine") as out:
        out.path(rundir.engine("fp16")).write_bytes(b"new plan")
        raise RuntimeError("died while writing the sidecar")
    assert rundir.engine("fp16").read_bytes() == b"old plan"
    with stage(rundir, "build-engine") as out:
        out.path(rundir.engine("fp16")).write_bytes(b"new plan")
        write_json(out.path(rundir.engine_meta("fp16")), {"build": "new"})
    assert rundir.engine("fp16").read_bytes() == b"new plan"
    assert '"new"' in rundir.engine_meta("fp16").read_text()


def test_published_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    with stage(rundir, "export") as out:
        staged = out.path(rundir.onnx("fp32"))
        fd, name = tempfile.mkstemp(dir=staged.parent)  # 0600, as some writers make them
        os.write(fd, b"graph")
        os.close(fd)
        os.replace(name, staged)
        folder = out.path(rundir.adapter)
        folder.mkdir(mode=0o700)
        fd, _ = tempfile.mkstemp(dir=folder)
        os.close(fd)
    [inner] = rundir.adapter.iterdir()
    for file in (rundir.onnx("fp32"), inner):
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~_umask() != 0o600
    assert stat.S_IMODE(rundir.adapter.stat().st_mode) == 0o777 & ~_umask()


def test_discarded_stage_publishes_and_records_nothing(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    with stage(rundir, "export") as out:
        out.path(rundir.onnx("fp32")).write_bytes(b"rank 1's copy")
        out.discard()
    assert out.result.outputs == [] and not rundir.onnx("fp32").exists()
    assert "export" not in rundir.read_manifest()["stages"]
    assert _hidden(rundir) == []


KILLED = """
import os, sys
from bertrt.artifacts import RunDir
from bertrt.stages import stage
rundir = RunDir(sys.argv[1])
with stage(rundir, "export") as out:
    out.path(rundir.onnx("fp32")).write_bytes(b"half")
    os.kill(os.getpid(), 9)
"""


def test_staging_of_a_killed_run_is_swept_at_the_next_start(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    done = subprocess.run([sys.executable, "-c", KILLED, str(rundir.root)], check=False)
    assert done.returncode == -9
    [left] = rundir.root.glob(".staging-export-*")
    (rundir.onnx_dir / ".export-old").mkdir(parents=True)  # the layout before stages.py
    other = rundir.root / ".staging-calibrate-x"
    other.mkdir()
    with stage(rundir, "export"):
        assert not left.exists() and not (rundir.onnx_dir / ".export-old").exists()
    assert other.is_dir()  # another stage's staging is that stage's to sweep
    assert not rundir.onnx("fp32").exists()


def test_sweep_spares_the_staging_of_a_stage_still_running(tmp_path: Path) -> None:
    """Distributed training: rank 1 starting must not remove rank 0's staging directory."""
    rundir = _trained(tmp_path)
    live = rundir.root / ".staging-train-rank0"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with stage(rundir, "train") as out:
            out.discard()
        assert live.is_dir()
    finally:
        os.close(fd)
    with stage(rundir, "train") as out:
        out.discard()
    assert not live.exists()


def test_files_in_publishes_file_by_file_and_keeps_the_others(tmp_path: Path) -> None:
    rundir = _trained(tmp_path)
    rundir.bench_dir.mkdir()
    (rundir.bench_dir / "history.jsonl").write_text("old\n")
    (rundir.bench_dir / "results.json").write_text("{}")
    with stage(rundir, "bench", requires={"train": [rundir.merged]}) as out:
        staged = out.files_in(rundir.bench_dir)
        (staged / "results.json").write_text('{"new": 1}')
        (staged / "plots").mkdir()
        (staged / "plots" / "a.png").write_bytes(b"png")
        assert (rundir.bench_dir / "results.json").read_text() == "{}"
    assert (rundir.bench_dir / "results.json").read_text() == '{"new": 1}'
    assert (rundir.bench_dir / "plots" / "a.png").read_bytes() == b"png"
    assert (rundir.bench_dir / "history.jsonl").read_text() == "old\n"  # not rewritten: kept
    outputs = rundir.read_manifest()["stages"]["bench"]["outputs"]
    assert sorted(outputs) == ["bench/plots/a.png", "bench/results.json"]
    assert _hidden(rundir) == []

"""The CLI's contract: every stage is a subcommand, errors are one line with a documented code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bertrt.cli import build_parser, main

STAGES = ("data", "train", "export", "calibrate", "build-engine", "bench", "evaluate", "predict")


def test_every_stage_is_a_subcommand() -> None:
    parser = build_parser()
    for stage in STAGES:
        extra = ["--data", "x.csv"] if stage in ("data", "evaluate") else []
        args = parser.parse_args([stage, "--run-dir", "r", "--set", "seed=1", *extra])
        assert args.command == stage and args.run_dir == "r" and args.overrides == ["seed=1"]


def test_bad_override_is_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--run-dir", "r", "--set", "export.opset=seventeen"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bertrt export: error:") and "export.opset" in err and "\n" not in err


def test_stage_before_its_input_names_the_stage_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--run-dir", str(tmp_path / "empty")]) == 4
    assert "bertrt data --data CSV" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bertrt",
            "data",
            "--data",
            str(tmp_path / "none.csv"),
            "--run-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "Kaggle" in done.stderr and "Traceback" not in done.stderr

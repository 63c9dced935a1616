"""The CLI's contract: every stage is a subcommand, errors are one line with a documented code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bertrt.cli import STAGES as STAGE_COMMANDS
from bertrt.cli import build_parser, config_overrides, main
from bertrt.runners.registry import MODEL_NAMES

STAGES = (
    "data",
    "import",
    "train",
    "export",
    "qat",
    "calibrate",
    "build-engine",
    "bench",
    "evaluate",
    "predict",
)
# Options a command cannot parse without.
REQUIRED = {
    "data": ["--data", "x.csv"],
    "evaluate": ["--data", "x.csv"],
    "import": ["--model", "m", "--data", "x.csv"],
}


def test_every_stage_is_a_subcommand() -> None:
    parser = build_parser()
    for stage in STAGES:
        extra = REQUIRED.get(stage, [])
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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["data", "--data", "x.csv"], ["data.csv=x.csv"]),
        (
            ["train", "--data", "moved.csv", "--preset", "full"],
            ["data.csv=moved.csv", "train.preset=full"],
        ),
        (["export", "--data", "moved.csv"], ["data.csv=moved.csv"]),
        (["calibrate", "--data", "moved.csv"], ["data.csv=moved.csv"]),
        (["bench", "--data", "moved.csv"], ["data.csv=moved.csv"]),
        (["calibrate", "--sweep"], ["calibration.sweep=true"]),
        (["calibrate"], []),
        (["build-engine", "--precision", "fp16"], ["engines.precisions=fp16"]),
        (["bench", "--quick", "--against", "a.json"], ["bench.quick=true", "bench.against=a.json"]),
        (["evaluate", "--data", "x.csv"], []),  # the file to score, not the run's CSV
    ],
)
def test_flags_become_config_overrides(argv: list[str], expected: list[str]) -> None:
    args = build_parser().parse_args([*argv, "--set", "seed=3"])
    assert config_overrides(args) == ["seed=3", *expected]


def test_every_stage_command_names_a_module_with_run() -> None:
    import importlib.util

    assert set(STAGE_COMMANDS) == set(STAGES) - {"evaluate", "predict"}
    for command in STAGE_COMMANDS.values():
        assert importlib.util.find_spec(command.module) is not None


def test_model_choices_come_from_the_registry() -> None:
    for command in ("evaluate", "predict"):
        extra = ["--data", "x.csv"] if command == "evaluate" else []
        for model in MODEL_NAMES:
            args = build_parser().parse_args([command, "--model", model, *extra])
            assert args.model == model
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--model", "no-such-model"])


def test_data_prints_the_split_summary(
    synthetic_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "--data", str(synthetic_csv), "--run-dir", str(tmp_path / "r")]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"wrote {tmp_path / 'r' / 'split.json'}: train 160 {{")

"""`bertrt evaluate` and `bertrt predict` through the CLI, on a tiny trained run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bertrt.artifacts import RunDir
from bertrt.cli import main
from bertrt.config import load_config
from bertrt.data import stage as data_stage
from bertrt.errors import ConfigError, MissingArtifactError
from bertrt.evaluate import evaluate_file, format_report
from bertrt.trainer import stage as train_stage
from tests.conftest import synthetic_rows, write_csv


@pytest.fixture(scope="module")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_base: Path
) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("evaluate")
    csv = write_csv(tmp / "train-sample.csv", synthetic_rows(120))
    overrides = [
        f"model.base={tiny_base}",
        "model.max_length=32",
        "train.batch_size=8",
        "train.max_train_rows=48",
        "train.eval_batch_size=16",
    ]
    config = load_config(None, [*overrides, f"data.csv={csv}"])
    run = RunDir(tmp / "run")
    data_stage.run(config, run)
    train_stage.run(config, run)
    sets = [arg for o in overrides for arg in ("--set", o)]
    return run.root, sets


def test_evaluate_json_on_any_kaggle_file(
    trained_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, sets = trained_run
    other = write_csv(tmp_path / "other.csv", synthetic_rows(37, seed=9))  # not the split's file
    capsys.readouterr()
    code = main(["evaluate", "--run-dir", str(root), "--data", str(other), "--json", *sets])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 37
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["model"] == "merged" and report["runner"].startswith("torch")
    cm = report["confusion_matrix"]
    assert sum(map(sum, cm)) == 37
    assert report["accuracy"] == pytest.approx((cm[0][0] + cm[1][1]) / 37)


def test_evaluate_text_report(
    trained_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, sets = trained_run
    other = write_csv(tmp_path / "other.csv", synthetic_rows(10, seed=3))
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(root), "--data", str(other), *sets]) == 0
    out = capsys.readouterr().out
    for word in ("accuracy", "loss", "precision", "recall", "f1", "confusion matrix"):
        assert word in out


def test_predict_prints_label_and_probability(
    trained_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, sets = trained_run
    capsys.readouterr()
    assert main(["predict", "--run-dir", str(root), "--text", "best book?", *sets]) == 0
    text_out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"(open|closed)\t(0\.[5-9]\d{3}|1\.0000)", text_out)
    args = ["predict", "--run-dir", str(root), "--title", "Why crash?", "--body", "error code"]
    assert main([*args, *sets]) == 0
    assert re.fullmatch(r"(open|closed)\t\d\.\d{4}", capsys.readouterr().out.strip())


def test_unknown_model_and_missing_artifacts(
    trained_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, _ = trained_run
    config = load_config(None, [])
    csv = write_csv(tmp_path / "x.csv", synthetic_rows(4))
    with pytest.raises(ConfigError, match="onnx-int8"):
        evaluate_file(config, RunDir(root), csv, "tensorflow")
    with pytest.raises(MissingArtifactError, match="bertrt export"):
        evaluate_file(config, RunDir(root), csv, "onnx-fp32")


def test_format_report_layout() -> None:
    report = {
        "data": "x.csv",
        "n": 10,
        "model": "merged",
        "runner": "torch/fp32/cpu",
        "accuracy": 0.7,
        "loss": 0.5,
        "precision": 0.75,
        "recall": 0.6,
        "f1": 2 / 3,
        "confusion_matrix": [[4, 1], [2, 3]],
    }
    text = format_report(report)
    assert "accuracy   0.7000" in text
    assert re.search(r"closed\s+2\s+3$", text)

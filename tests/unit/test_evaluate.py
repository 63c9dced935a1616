"""`bertrt evaluate` and `bertrt predict` through the CLI, on a tiny trained run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.cli import main
from bertrt.config import load_config
from bertrt.data import stage as data_stage
from bertrt.errors import ConfigError, MissingArtifactError
from bertrt.evaluate import evaluate_file, format_report, predict_text
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
    # The run's class names (a binary run: open/closed) and the N-class figures.
    assert report["labels"] == ["open", "closed"] and report["positive_class"] == "closed"
    assert [c["name"] for c in report["per_class"]] == ["open", "closed"]
    assert [c["support"] for c in report["per_class"]] == [sum(row) for row in cm]
    assert report["f1"] == report["per_class"][1]["f1"]
    assert 0.0 <= report["macro_f1"] <= 1.0
    assert report["log_loss"] == pytest.approx(report["loss"], rel=1e-4)


def test_evaluate_text_report(
    trained_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, sets = trained_run
    other = write_csv(tmp_path / "other.csv", synthetic_rows(10, seed=3))
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(root), "--data", str(other), *sets]) == 0
    out = capsys.readouterr().out
    for word in ("accuracy", "macro-F1", "log loss", "precision", "recall", "confusion matrix"):
        assert word in out
    assert re.search(r"^class\s+precision\s+recall\s+f1\s+support$", out, re.M)
    assert re.search(r"^closed\s+\d+\s+\d+$", out, re.M)  # the matrix's last row


PREDICTION = re.compile(r"(open|closed)\topen=(\d\.\d{4})\tclosed=(\d\.\d{4})")


def test_predict_prints_label_and_every_class_probability(
    trained_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, sets = trained_run
    for args in (
        ["--text", "best book?"],
        ["--title", "Why crash?", "--body", "error code"],
    ):
        capsys.readouterr()
        assert main(["predict", "--run-dir", str(root), *args, *sets]) == 0
        line = capsys.readouterr().out.strip()
        match = PREDICTION.fullmatch(line)
        assert match, line
        label, p_open, p_closed = match[1], float(match[2]), float(match[3])
        assert p_open + p_closed == pytest.approx(1.0, abs=2e-4)
        assert label == ("open" if p_open >= p_closed else "closed")


def test_predict_text_returns_every_class_by_name(trained_run: tuple[Path, list[str]]) -> None:
    root, sets = trained_run
    config = load_config(None, [s for s in sets if s != "--set"])
    prediction = predict_text(config, RunDir(root), "merged", "best book?", None, None)
    assert set(prediction) == {"label", "probabilities"}
    probabilities = prediction["probabilities"]
    assert list(probabilities) == ["open", "closed"]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert prediction["label"] == max(probabilities, key=probabilities.__getitem__)
    json.dumps(prediction)


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


def _report(logits: list[list[float]], labels: list[int], names: tuple[str, ...]) -> dict:
    from bertrt.metrics import classification_metrics

    report = classification_metrics(np.array(logits), np.array(labels), names)
    return {"data": "x.csv", "model": "merged", "runner": "torch/fp32/cpu", **report}


def test_format_report_layout() -> None:
    # 10 rows: 4 open right, 1 open as closed, 2 closed as open, 3 closed right.
    logits = [[1.0, 0.0]] * 4 + [[0.0, 1.0]] + [[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 3
    labels = [0] * 5 + [1] * 5
    text = format_report(_report(logits, labels, ("open", "closed")))
    assert "accuracy   0.7000" in text
    assert "precision  0.7500  (class 'closed')" in text
    assert re.search(r"^macro-F1   0\.\d{4}$", text, re.M)
    assert re.search(r"^log loss   0\.\d{4}", text, re.M)
    assert re.search(r"^closed\s+0\.7500\s+0\.6000\s+0\.6667\s+5$", text, re.M)
    assert text.splitlines()[-4:] == [
        "confusion matrix (rows: true, columns: predicted)",
        "        open  closed",
        "  open     4       1",
        "closed     2       3",
    ]
    assert re.search(r"closed\s+2\s+3$", text)


def test_format_report_of_five_named_classes() -> None:
    names = ("open", "not a real question", "not constructive", "off topic", "too localized")
    labels = [0, 0, 1, 2, 3, 4, 4, 4]
    predicted = [0, 1, 1, 2, 0, 4, 3, 4]
    logits = [[3.0 if i == p else 0.0 for i in range(5)] for p in predicted]
    report = _report(logits, labels, names)
    text = format_report(report)
    assert "(class" not in text  # no positive class with five
    for name in names:
        assert re.search(rf"^{name}\s+\d\.\d{{4}}\s+\d\.\d{{4}}\s+\d\.\d{{4}}\s+\d+$", text, re.M)
    matrix = text.splitlines()[-6:]
    assert matrix[0].split() == [w for n in names for w in n.split()]  # the column names
    assert matrix[-1].split() == ["too", "localized", "0", "0", "0", "1", "2"]
    assert matrix[3].split()[-5:] == ["0", "0", "1", "0", "0"]  # not constructive
    assert len({len(line) for line in matrix}) == 1  # aligned


def test_a_five_class_run_from_a_two_label_base_trains_and_evaluates(
    tiny_base: Path, tmp_path: Path
) -> None:
    """tiny_base has a 2-label head: the 5-class run gets a new one (not a size-mismatch crash)."""
    from bertrt.artifacts import read_json, write_json
    from bertrt.data.labels import CLOSE_REASON_LABELS
    from bertrt.errors import StaleArtifactError

    csv = write_csv(tmp_path / "train-sample.csv", synthetic_rows(200))
    config = load_config(
        None,
        [
            f"model.base={tiny_base}",
            "model.max_length=32",
            "train.batch_size=8",
            "train.max_train_rows=48",
            "train.eval_batch_size=16",
            "data.task=close-reason",
            f"data.csv={csv}",
        ],
    )
    run = RunDir(tmp_path / "run")
    data_stage.run(config, run)
    train_stage.run(config, run)
    test = read_json(run.train_metrics)["test"]
    assert test["labels"] == list(CLOSE_REASON_LABELS) and len(test["confusion_matrix"]) == 5
    report = evaluate_file(config, run, csv, "merged")
    assert [c["name"] for c in report["per_class"]] == list(CLOSE_REASON_LABELS)
    assert report["n"] == 200 and report["positive_class"] is None

    # A 5-class merged/ put by hand into a run of two classes: the manifest agrees (both
    # recorded again), so only the class count can tell.
    document = read_json(run.split)
    write_json(run.split, {**document, "labels": ["open", "closed"]})
    run.record("data", inputs=[], outputs=[run.split], wall_s=0.0)
    run.record("train", inputs=[run.split], outputs=[run.merged], wall_s=0.0)
    with pytest.raises(StaleArtifactError, match=r"gives 5 classes but .* names 2"):
        predict_text(config, run, "merged", "best book?", None, None)

"""A generic `text,label` file made from real rows goes through every CPU stage.

The file has no Kaggle column: five string labels (the close reasons as
written in the Kaggle file) and one text column. The Kaggle reader is
replaced by one that fails, so nothing Kaggle-specific is on the path:
data -> train -> export -> calibrate -> evaluate.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bertrt.artifacts import RunDir, read_json
from bertrt.cli import main

pytestmark = pytest.mark.integration

SETTINGS = [
    "model.max_length=64",
    "train.max_train_rows=384",
    "train.max_eval_rows=128",
    "train.batch_size=16",
    "export.verify_rows=16",
    "export.verify_batch_sizes=[1,8]",
    "export.verify_seq_lengths=[32,64]",
    "calibration.rows=64",
    "calibration.eval_rows=128",
    "calibration.cpu_candidates=[dynamic-int8,fp32-opt]",
]
ROWS = 1500


def _generic_file(real_data: Path, out: Path, skip: int = 0) -> Path:
    """``ROWS`` real rows as `text,label`: title and body in one column, OpenStatus as label."""
    with real_data.open(newline="", encoding="utf-8") as fh, out.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["text", "label"])
        for i, row in enumerate(csv.DictReader(fh)):
            if i < skip:
                continue
            if i >= skip + ROWS:
                break
            writer.writerow([f"{row['Title']}\n{row['BodyMarkdown']}", row["OpenStatus"]])
    return out


def test_generic_text_label_file_end_to_end(
    real_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bertrt.data import stage as data_stage

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Kaggle reader ran for a generic file")

    monkeypatch.setattr(data_stage, "load_kaggle_csv", refuse)
    data = _generic_file(real_data, tmp_path / "questions.csv")
    run = RunDir(tmp_path / "run")
    sets = [arg for s in SETTINGS for arg in ("--set", s)]
    common = ["--run-dir", str(run.root), *sets]
    assert main(["data", "--data", str(data), "--label-column", "label", *common]) == 0
    labels = read_json(run.split)["labels"]
    assert labels == sorted(labels) and len(labels) == 5 and "open" in labels
    for command in ("train", "export", "calibrate"):
        assert main([command, *common]) == 0, command
    merged = json.loads((run.merged / "config.json").read_text())
    assert [merged["id2label"][str(i)] for i in range(5)] == labels
    metrics = read_json(run.train_metrics)["test"]
    assert len(metrics["confusion_matrix"]) == 5
    assert metrics["accuracy"] > 0.45, metrics  # "open" is ~53 %: the model must have learned it

    held_out = _generic_file(real_data, tmp_path / "held-out.csv", skip=ROWS)
    capsys.readouterr()
    for model in ("merged", "cpu"):
        args = ["evaluate", "--data", str(held_out), "--model", model, "--json", *common]
        code = main(args)
        captured = capsys.readouterr()
        assert code == 0, captured.err
        report = json.loads(captured.out)
        assert report["n"] == ROWS and len(report["confusion_matrix"]) == 5
        assert report["labels"] == labels

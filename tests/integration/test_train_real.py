"""Train stage on a few hundred real rows with the packaged MiniLM: it learns, merges, evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bertrt.artifacts import RunDir, read_json
from bertrt.cli import main

pytestmark = pytest.mark.integration

SETTINGS = [
    "model.max_length=64",
    "train.max_train_rows=384",
    "train.max_eval_rows=200",
    "train.batch_size=16",
    "train.learning_rate=1e-3",
]


def test_minilm_lora_on_real_rows(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = RunDir(tmp_path / "run")
    sets = [arg for s in SETTINGS for arg in ("--set", s)]
    assert main(["data", "--data", str(real_data), "--run-dir", str(run.root)]) == 0
    assert main(["train", "--run-dir", str(run.root), *sets]) == 0
    metrics = read_json(run.train_metrics)
    assert metrics["parameters"]["trainable"] == 258_818  # MiniLM-L6, lora-r8-ffn + head
    assert metrics["merge"]["max_abs_diff"] <= 1e-4
    # The classes are nearly balanced (~53% open); 384 rows already beat the majority class.
    assert metrics["test"]["accuracy"] > 0.56, metrics["test"]
    assert metrics["test"]["n"] == 200

    # evaluate scores any Kaggle-format file: here 300 test-split rows in a temporary CSV.
    test_ids = set(read_json(run.split)["splits"]["test"][:300])
    frame = pd.read_csv(real_data, dtype=str, keep_default_na=False)
    sample = tmp_path / "sample.csv"
    frame[frame["PostId"].astype(int).isin(test_ids)].to_csv(sample, index=False)
    capsys.readouterr()
    args = ["evaluate", "--run-dir", str(run.root), "--data", str(sample), "--json", *sets]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["n"] == 300
    assert abs(report["accuracy"] - metrics["test"]["accuracy"]) < 0.1  # same model, other rows

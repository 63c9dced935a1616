"""`bertrt predict --data IN --out OUT`: whole files scored in one process, on a tiny run.

Every file is written here; the model is the tiny random BERT standing in for
`bertrt train` (``make_trained_run``), scored as ``merged``. What is checked:
each input and output format, that OUT is in input order whatever the chunk
size, that the texts are the training texts, kept columns, the bad-row policy
with its rejects file, and that a SIGKILLed job leaves no partial OUT.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bertrt.artifacts import RunDir
from bertrt.cli import main
from bertrt.config import load_config
from bertrt.data.kaggle import COLUMNS
from bertrt.data.stage import load_examples
from bertrt.data.stream import Layout, read_chunks
from bertrt.runners.run_model import RunModel
from bertrt.scoring.output import rejects_path
from tests.conftest import REPO, make_trained_run, synthetic_rows, write_csv

SETS = ["--set", "model.max_length=32", "--set", "train.eval_batch_size=16", "--set", "threads=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    return make_trained_run(tmp_path_factory.mktemp("predict-file"), tiny_base, rows=120)


def predict(run: RunDir, data: Path, out: Path, *extra: str) -> int:
    args = ["predict", "--run-dir", str(run.root), "--data", str(data), "--out", str(out)]
    return main([*args, "--model", "merged", *SETS, *extra])


def read_out(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, dtype={"PostId": str, "row": str}, keep_default_na=False)


def expected(run: RunDir, data: Path) -> np.ndarray:
    """Probabilities of the file's rows through evaluate's reader (the training texts)."""
    frame, _ = load_examples(data, run)
    config = load_config(None, ["model.max_length=32", "train.eval_batch_size=16", "threads=1"])
    with RunModel.open(config, run, "merged") as rm:
        return rm.probabilities(list(frame["text"]))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_kaggle_csv_to_every_format_in_input_order(
    run: RunDir, tmp_path: Path, suffix: str
) -> None:
    data = write_csv(tmp_path / "in.csv", synthetic_rows(53, seed=4))
    out = tmp_path / f"out{suffix}"
    assert predict(run, data, out, "--chunk-rows", "8", "--keep-column", "Tag1") == 0
    frame = read_out(out)
    assert list(frame.columns) == ["PostId", "label", "open", "closed", "Tag1"]
    source = pd.read_csv(data, dtype=str, keep_default_na=False)
    assert [str(v) for v in frame["PostId"]] == list(source["PostId"])  # input order
    assert list(frame["Tag1"]) == list(source["Tag1"])
    probabilities = frame[["open", "closed"]].to_numpy(dtype=np.float64)
    assert np.abs(probabilities - expected(run, data)).max() < 1e-6
    names = np.array(["open", "closed"])[probabilities.argmax(axis=1)]
    assert list(frame["label"]) == list(names)
    assert not rejects_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.csv", out.name])


def test_chunk_size_changes_no_prediction(run: RunDir, tmp_path: Path) -> None:
    """Rows sorted into length buckets inside each chunk come back in file order."""
    data = write_csv(tmp_path / "in.csv", synthetic_rows(61, seed=8))
    one = read_out_after(run, data, tmp_path / "one.csv", "--chunk-rows", "1000")
    small = read_out_after(run, data, tmp_path / "small.csv", "--chunk-rows", "5")
    assert list(one["PostId"]) == list(small["PostId"])
    assert list(one["label"]) == list(small["label"])
    assert (
        np.abs(one[["open", "closed"]].to_numpy() - small[["open", "closed"]].to_numpy()).max()
        < 1e-6
    )


def read_out_after(run: RunDir, data: Path, out: Path, *extra: str) -> pd.DataFrame:
    assert predict(run, data, out, *extra) == 0
    return read_out(out)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_generic_file_with_text_column_keeps_columns(
    run: RunDir, tmp_path: Path, suffix: str
) -> None:
    rows = [
        {"body": "how do i sort a list in python", "lang": "en", "n": i, "label": "x"}
        for i in range(9)
    ]
    data = tmp_path / f"in{suffix}"
    if suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(data, index=False)
    else:
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    extra = ["--text-column", "body", "--keep-column", "n", "--keep-column", "lang"]
    assert predict(run, data, out, *extra) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [list(line) for line in lines[:1]] == [["row", "label", "open", "closed", "n", "lang"]]
    assert [line["row"] for line in lines] == list(range(1, 10))  # no id column: row numbers
    assert [line["n"] for line in lines] == list(range(9))  # the label column is ignored


def test_stream_texts_are_the_training_texts(tmp_path: Path) -> None:
    """Chunked reading builds exactly the texts the data stage built, features included."""
    from bertrt.data.stage import read_examples

    data = write_csv(tmp_path / "in.csv", synthetic_rows(40, seed=2))
    for options in ({"code_blocks": "mark"}, {"code_blocks": "drop", "features_in_text": True}):
        layout = Layout(
            ("Title", "BodyMarkdown"),
            "PostId",
            code_blocks=options["code_blocks"],
            kaggle_features=bool(options.get("features_in_text")),
        )
        texts = [t for chunk in read_chunks(data, layout, 7) for t in chunk.texts]
        frame = read_examples(data, {"format": "kaggle"}, options, "fail", 0.01).frame
        assert texts == list(frame["text"])


def bad_csv(tmp_path: Path) -> Path:
    rows = synthetic_rows(30, seed=6)
    rows[4]["Title"] = rows[4]["BodyMarkdown"] = "  "
    path = write_csv(tmp_path / "bad.csv", rows)
    raw = path.read_bytes().replace(rows[9]["Title"].encode(), b"Bad \xff byte", 1)
    path.write_bytes(raw)
    return path


def test_bad_row_fails_naming_file_and_row(
    run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = bad_csv(tmp_path), tmp_path / "out.csv"
    capsys.readouterr()
    assert predict(run, data, out) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        f"{data}: data row 5 (PostId 1004): text columns Title, BodyMarkdown are all empty" in err
    )
    assert "data.bad_rows=skip" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # nothing half-written


def test_skip_writes_rejects_and_scores_the_rest(run: RunDir, tmp_path: Path) -> None:
    data, out = bad_csv(tmp_path), tmp_path / "out.parquet"
    sets = ["--set", "data.bad_rows=skip", "--set", "data.max_bad_fraction=0.1"]
    assert predict(run, data, out, *sets) == 0
    assert len(read_out(out)) == 28
    rejects = [json.loads(x) for x in rejects_path(out).read_text(encoding="utf-8").splitlines()]
    assert [(r["row"], r["PostId"]) for r in rejects] == [(5, "1004"), (10, "1009")]
    assert "not UTF-8 text (byte 0xff)" in rejects[1]["reason"]
    assert all(r["file"] == str(data) for r in rejects)


def test_skip_past_the_limit_fails_with_rejects_and_no_out(
    run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = bad_csv(tmp_path), tmp_path / "out.csv"
    capsys.readouterr()
    assert predict(run, data, out, "--set", "data.bad_rows=skip") == 1  # 2 of 30 > 1%
    assert "2 of 30 rows are malformed" in capsys.readouterr().err
    assert not out.exists() and len(rejects_path(out).read_text().splitlines()) == 2


def test_jsonl_line_that_is_not_an_object(
    run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "a question"}\n\n[1, 2]\n{"text": "another"}\n', encoding="utf-8")
    capsys.readouterr()
    assert predict(run, data, tmp_path / "out.csv", "--text-column", "text") == 1
    assert f"{data}: line 3: a JSON array, not an object" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.txt"], "the extension names the format"),
        (["--keep-column", "label"], "output column 'label' appears twice"),
        (["--workers", "2"], "need --engine ray"),
        (["--text-column", "nope"], "missing text column 'nope'"),
    ],
)
def test_refused_options(
    run: RunDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    rows = [{**row, "label": "x"} for row in synthetic_rows(5)]
    data = write_csv(tmp_path / "in.csv", rows, (*COLUMNS, "label"))
    capsys.readouterr()
    code = predict(run, data, tmp_path / "out.csv", *extra)
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_default_model_is_the_deployment_model(
    run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --model a file is scored with the run's deployment model (here not built)."""
    data = write_csv(tmp_path / "in.csv", synthetic_rows(5))
    capsys.readouterr()
    args = ["predict", "--run-dir", str(run.root), "--data", str(data), "--out"]
    assert main([*args, str(tmp_path / "o.csv"), *SETS]) == 4
    assert "onnx" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_job_leaves_no_partial_out(run: RunDir, tmp_path: Path, sig: int) -> None:
    """IN is a pipe fed one chunk at a time: the job's own progress line says a chunk was
    written to the temporary file, then the job is killed while it waits for more.
    SIGTERM unwinds (no temporary file); SIGKILL cannot, and the next job sweeps it."""
    fifo, out = tmp_path / "in.csv", tmp_path / "out.csv"
    os.mkfifo(fifo)
    rows = synthetic_rows(40, seed=3)
    command = [sys.executable, "-m", "bertrt", "predict", "--run-dir", str(run.root)]
    command += ["--out", str(out), "--model", "merged", *SETS]
    first = [*command, "--data", str(fifo), "--chunk-rows", "10"]
    child = subprocess.Popen(first, stderr=subprocess.PIPE, cwd=REPO)
    assert child.stderr is not None
    with fifo.open("w", newline="", encoding="utf-8") as feed:
        writer = csv.DictWriter(feed, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:15])  # one whole chunk, then the pipe stays open
        feed.flush()
        seen = _wait_for_progress(child.stderr, "10row")
        child.send_signal(sig)
        assert child.wait(timeout=30) == (-sig if sig == signal.SIGKILL else 128 + sig)
    assert seen, "the job never reported its first chunk"
    assert not out.exists()
    left = [p.name for p in tmp_path.glob(".out.csv.*.partial")]
    assert bool(left) == (sig == signal.SIGKILL)  # only SIGKILL leaves one
    data = write_csv(tmp_path / "again.csv", rows)
    done = subprocess.run([*command, "--data", str(data)], cwd=REPO)
    assert done.returncode == 0
    assert len(read_out(out)) == 40
    assert not list(tmp_path.glob(".out.csv.*"))  # the next job swept it


def _wait_for_progress(stream: Any, marker: str, timeout: float = 120.0) -> bool:
    """Read the child's stderr until ``marker`` shows (or the stream ends)."""
    found = threading.Event()
    seen = bytearray()

    def read() -> None:
        while not found.is_set():
            data = os.read(stream.fileno(), 4096)
            if not data:
                return
            seen.extend(data)
            if marker.encode() in seen.replace(b" ", b""):
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    found.wait(timeout)
    return found.is_set()

"""The eleven defects of issue 13, one test (or more) each, through the CLI a user runs.

Each test fails on the code the issue was filed against (8f707a2) and passes now.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bertrt.artifacts import RunDir, read_json, sha256_path
from bertrt.cli import main
from tests.conftest import make_trained_run, synthetic_rows, write_csv
from tests.robustness.helpers import REPO, SMALL_EXPORT, fails_cleanly, run_cli, sets, snapshot


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A run split from 200 synthetic rows, tiny_base standing in for `bertrt train`."""
    return make_trained_run(tmp_path_factory.mktemp("trained"), tiny_base).root.parent


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> RunDir:
    """A private copy of the trained run (the CSV beside it, as split.json records it)."""
    shutil.copytree(trained, tmp_path / "copy")
    run = RunDir(tmp_path / "copy" / "run")
    document = read_json(run.split)
    document["csv"]["path"] = str(tmp_path / "copy" / "train-sample.csv")
    run.split.write_text(json.dumps(document))
    run.record("data", inputs=[], outputs=[run.split], wall_s=0.0)
    run.record("train", inputs=[run.split], outputs=[run.merged], wall_s=0.0)
    return run


def data(csv: Path, run_dir: Path, *extra: str) -> int:
    return main(["data", "--data", str(csv), "--run-dir", str(run_dir), *extra])


# 1 ---------------------------------------------------------------------------------
def test_1_duplicate_ids_count_against_the_bad_row_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = synthetic_rows(600)
    for first, second in zip(rows[:300], rows[300:], strict=True):
        second["PostId"] = first["PostId"]
        second["OpenStatus"] = "not constructive" if first["OpenStatus"] == "open" else "open"
    csv = write_csv(tmp_path / "dups.csv", rows)
    argv = ["data", "--data", str(csv), "--run-dir", str(tmp_path / "run")]
    fails_cleanly(
        capsys,
        [*argv, *sets("data.bad_rows=skip")],
        1,
        "300 of 600 rows are malformed",
        "data row 301 (PostId 1000): duplicate PostId 1000 (first at data row 1)",
    )
    assert not (tmp_path / "run").exists()


def test_1_duplicates_within_the_limit_are_reported(tmp_path: Path) -> None:
    rows = synthetic_rows(200)
    rows[150]["PostId"] = rows[3]["PostId"]
    csv = write_csv(tmp_path / "one-dup.csv", rows)
    assert data(csv, tmp_path / "run", *sets("data.bad_rows=skip")) == 0
    document = read_json(tmp_path / "run" / "split.json")
    assert document["skipped_rows"] == [
        "data row 151 (PostId 1003): duplicate PostId 1003 (first at data row 4)"
    ]
    assert document["csv"]["rows"] == 199


# 2 ---------------------------------------------------------------------------------
def test_2_leading_zero_ids_are_one_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = synthetic_rows(200)
    rows[50]["PostId"] = "0" + rows[7]["PostId"]  # 01007 is PostId 1007
    csv = write_csv(tmp_path / "zeros.csv", rows)
    fails_cleanly(
        capsys,
        ["data", "--data", str(csv), "--run-dir", str(tmp_path / "a")],
        1,
        str(csv),
        "data row 51 (PostId 01007): duplicate PostId 1007 (first at data row 8)",
    )
    assert data(csv, tmp_path / "b", *sets("data.bad_rows=skip")) == 0
    document = read_json(tmp_path / "b" / "split.json")
    ids = [i for name in ("train", "val", "test") for i in document["splits"][name]]
    assert len(ids) == len(set(ids)) == document["csv"]["rows"] == 199


@pytest.mark.parametrize("column", ["PostId", "ReputationAtPostCreation"])
def test_2_ids_beyond_int64_are_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str
) -> None:
    rows = synthetic_rows(50)
    rows[9][column] = "99999999999999999999"
    csv = write_csv(tmp_path / "huge.csv", rows)
    fails_cleanly(
        capsys,
        ["data", "--data", str(csv), "--run-dir", str(tmp_path / "run")],
        1,
        str(csv),
        "data row 10",
        f"{column} '99999999999999999999' is not",
    )


# 3 ---------------------------------------------------------------------------------
def test_3_a_moved_csv_is_accepted_by_export(
    run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = tmp_path / "elsewhere" / "renamed.csv"
    moved.parent.mkdir()
    shutil.move(run.root.parent / "train-sample.csv", moved)
    argv = ["export", "--run-dir", str(run.root), *sets(*SMALL_EXPORT)]
    fails_cleanly(capsys, argv, 4, "is gone; pass --data with the same CSV")
    assert main([*argv, "--data", str(moved)]) == 0
    before = snapshot(run.root)
    assert main([*argv, *sets(f"data.csv={moved}")]) == 0  # data.csv= is honoured too
    assert run.read_manifest()["stages"]["data"]["outputs"] == {
        "split.json": sha256_path(run.split)
    }
    assert set(before) == set(snapshot(run.root))


def test_3_a_different_csv_is_refused_by_name(
    run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_csv(tmp_path / "other.csv", synthetic_rows(200, seed=1))
    fails_cleanly(
        capsys,
        ["export", "--run-dir", str(run.root), "--data", str(other), *sets(*SMALL_EXPORT)],
        4,
        f"{other} is not the CSV",
    )


# 4 ---------------------------------------------------------------------------------
def test_4_undecodable_predict_text_is_one_line(run: RunDir) -> None:
    done = run_cli(["predict", "--run-dir", str(run.root), "--text", b"abc\xff"])
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "not UTF-8 text (byte 0xff at character 3)" in err


def test_4_truncated_manifest_is_one_line(run: RunDir, capsys: pytest.CaptureFixture[str]) -> None:
    text = run.manifest_path.read_text()
    run.manifest_path.write_text(text[: len(text) // 2])
    fails_cleanly(
        capsys,
        ["export", "--run-dir", str(run.root), *sets(*SMALL_EXPORT)],
        4,
        f"{run.manifest_path}: not valid JSON",
    )


@pytest.mark.parametrize("below", ["", "sub"])
def test_4_run_dir_that_is_a_file_is_one_line(
    synthetic_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], below: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run_dir = blocker / below if below else blocker
    fails_cleanly(
        capsys,
        ["data", "--data", str(synthetic_csv), "--run-dir", str(run_dir)],
        2,
        f"{blocker} is a file, not a directory",
    )
    assert blocker.read_text() == "not a directory"


# 5 ---------------------------------------------------------------------------------
def test_5_staging_left_by_killed_exports_is_swept(run: RunDir) -> None:
    """Leftovers of a killed export (the old onnx/.export-* and today's staging) go at the
    next export; the kill test (test_kill.py) makes them with real SIGKILLs."""
    legacy = run.onnx_dir / ".export-k1ll3d"
    staging = run.root / ".staging-export-k1ll3d"
    for left in (legacy, staging):
        left.mkdir(parents=True)
        (left / "model.onnx").write_bytes(b"\0" * 1024)
    assert main(["export", "--run-dir", str(run.root), *sets(*SMALL_EXPORT)]) == 0
    assert not legacy.exists() and not staging.exists()
    assert [p.name for p in run.onnx_dir.iterdir() if p.name.startswith(".")] == []


# 6 ---------------------------------------------------------------------------------
def test_6_evaluate_reports_skipped_rows(
    run: RunDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = synthetic_rows(40, seed=3)
    rows[4]["OpenStatus"] = "closed for fun"
    csv = write_csv(tmp_path / "score.csv", rows)
    argv = ["evaluate", "--run-dir", str(run.root), "--data", str(csv), "--json"]
    assert main([*argv, *sets("data.bad_rows=skip", "data.max_bad_fraction=0.1")]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["n"] == 39
    assert report["skipped_rows"] == [
        "data row 5 (PostId 1004): unknown OpenStatus 'closed for fun'; expected one of "
        "open, not a real question, not constructive, off topic, too localized"
    ]
    stderr = captured.err + caplog.text  # the warning goes to stderr (pytest captures logging)
    assert f"skipped 1 malformed rows of {csv}; first: data row 5" in stderr


# 7 ---------------------------------------------------------------------------------
def test_7_undecodable_byte_is_named_by_file_offset_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = synthetic_rows(60)
    rows[40]["BodyMarkdown"] = "caf\u00e9 MARK here"
    csv = write_csv(tmp_path / "latin1.csv", rows)
    raw = csv.read_bytes().replace("caf\u00e9 MARK".encode(), b"caf\xe9 MARK")
    csv.write_bytes(raw)
    offset = raw.index(b"\xe9 MARK")
    assert offset > 2000
    fails_cleanly(
        capsys,
        ["data", "--data", str(csv), "--run-dir", str(tmp_path / "run")],
        1,
        str(csv),
        f"byte 0xe9 at offset {offset}",
        "data row 41 (PostId '1040'), column BodyMarkdown",
    )


def test_7_parse_errors_name_the_data_row_and_post_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = synthetic_rows(20)
    csv = write_csv(tmp_path / "ragged.csv", rows)
    # a row with two extra fields, after rows whose bodies span several lines
    lines = csv.read_text().split("\n")
    where = next(i for i, line in enumerate(lines) if line.startswith("1006,"))
    lines[where] = "1006,extra,extra," + lines[where].removeprefix("1006,")
    text = "\n".join(lines)
    csv.write_text(text)
    fails_cleanly(
        capsys,
        ["data", "--data", str(csv), "--run-dir", str(tmp_path / "run")],
        1,
        str(csv),
        "data row 7 (PostId 1006): 17 fields, expected 15",
    )


def test_7_set_of_a_section_blames_that_setting(
    synthetic_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails_cleanly(
        capsys,
        ["data", "--data", str(synthetic_csv), "--run-dir", str(tmp_path / "r"), "--set", "data=3"],
        2,
        "--set 'data=3': data is a section, not a value",
    )


def test_7_directory_as_data_is_named_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails_cleanly(
        capsys,
        ["data", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run")],
        1,
        f"{tmp_path}: is a directory, not a CSV file",
    )


# 8 ---------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_8_makefile_quotes_user_values(tmp_path: Path) -> None:
    folder = tmp_path / "with space" / "it's here"
    folder.mkdir(parents=True)
    csv = write_csv(folder / "train sample.csv", synthetic_rows(100))
    run_dir = folder / "run dir"
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO / "src"))}
    done = subprocess.run(
        [
            *("make", "-C", str(REPO), "data", f"DATA={csv}", f"RUN={run_dir}"),
            *(f"PYTHON={sys.executable}", "SET=seed=7 data.bad_rows=skip"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = read_json(run_dir / "split.json")
    assert document["csv"]["path"] == str(csv) and document["seed"] == 7


# 9 ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given", [["--text", ""], ["--text", " \t\n "], ["--title", " ", "--body", "\n"]]
)
def test_9_predict_refuses_empty_text(
    run: RunDir, capsys: pytest.CaptureFixture[str], given: list[str]
) -> None:
    fails_cleanly(
        capsys,
        ["predict", "--run-dir", str(run.root), *given],
        1,
        "the text is empty or only whitespace",
    )


def test_9_predict_reads_a_file_and_stdin(run: RunDir, tmp_path: Path) -> None:
    long_text = "why does my python list index error crash " * 20_000  # > one argv string
    question = tmp_path / "question.md"
    question.write_text(long_text)
    by_file = run_cli(["predict", "--run-dir", str(run.root), "--file", str(question)])
    by_stdin = run_cli(
        ["predict", "--run-dir", str(run.root), "--file", "-"], input=long_text.encode()
    )
    assert by_file.returncode == 0, by_file.stderr.decode()
    assert by_file.stdout == by_stdin.stdout
    assert by_file.stdout.decode().split("\t")[0] in ("open", "closed")


# 10 --------------------------------------------------------------------------------
def test_10_bench_exits_4_when_its_only_backend_is_stale(
    run: RunDir, capsys: pytest.CaptureFixture[str]
) -> None:
    run.onnx_dir.mkdir()
    run.onnx("fp32").write_bytes(b"an onnx model")
    run.record("export", inputs=[run.merged], outputs=[run.onnx("fp32")], wall_s=0.0)
    with run.onnx("fp32").open("ab") as fh:
        fh.write(b" changed")
    fails_cleanly(
        capsys,
        [
            "bench",
            "--run-dir",
            str(run.root),
            "--quick",
            "--set",
            "bench.backends=[onnxruntime/fp32/cpu]",
        ],
        4,
        "model.onnx changed since `bertrt export` wrote it",
    )
    assert not run.bench_dir.exists()


# 11 --------------------------------------------------------------------------------
def test_11_artifacts_are_shared_readable_and_adapter_names_its_base(
    synthetic_csv: Path, tmp_path: Path
) -> None:
    """A LoRA run of the packaged MiniLM for two steps: every file the umask's mode, and
    adapter_config.json names ``minilm`` (resolved where it is loaded), not a venv path."""
    run = RunDir(tmp_path / "run")
    assert data(synthetic_csv, run.root) == 0
    settings = [
        "model.max_length=32",
        "train.max_steps=2",
        "train.batch_size=8",
        "train.max_eval_rows=16",
        "train.eval_batch_size=16",
    ]
    assert main(["train", "--run-dir", str(run.root), *sets(*settings)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    modes = {
        run.rel(p): stat.S_IMODE(p.stat().st_mode)
        for p in run.root.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }
    assert "merged/model.safetensors" in modes and "adapter/adapter_model.safetensors" in modes
    assert {rel: mode for rel, mode in modes.items() if mode != 0o666 & ~umask} == {}
    adapter_config = read_json(run.adapter / "adapter_config.json")
    assert adapter_config["base_model_name_or_path"] == "minilm"
    from bertrt.trainer.merge import load_adapter

    assert (
        load_adapter(run.adapter, num_labels=2).peft_config["default"].base_model_name_or_path
        == "minilm"
    )

"""The data stage: Kaggle schema checks, stable stratified split, split.json, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertrt.artifacts import RunDir
from bertrt.cli import main
from bertrt.config import load_config
from bertrt.data import load_kaggle_csv, load_split, split
from bertrt.data.features import tabular_features
from bertrt.data.kaggle import COLUMNS
from bertrt.data.text import clean_body, question_text
from bertrt.errors import DataError, StaleArtifactError
from tests.conftest import synthetic_rows, write_csv


def run_data(csv: Path, run_dir: Path, *extra: str) -> int:
    return main(["data", "--data", str(csv), "--run-dir", str(run_dir), *extra])


def test_split_is_stratified_and_byte_identical(synthetic_csv: Path, tmp_path: Path) -> None:
    assert run_data(synthetic_csv, tmp_path / "a") == 0
    assert run_data(synthetic_csv, tmp_path / "b") == 0
    first = (tmp_path / "a" / "split.json").read_bytes()
    assert first == (tmp_path / "b" / "split.json").read_bytes()
    document = json.loads(first)
    sizes = {name: len(ids) for name, ids in document["splits"].items()}
    assert sizes == {"train": 160, "val": 20, "test": 20}
    for counts in document["counts"].values():
        assert counts["open"] == counts["closed"]  # synthetic file is 50/50
    all_ids = [i for ids in document["splits"].values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == 200
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert "split.json" in manifest["stages"]["data"]["outputs"]


def test_split_keeps_rows_in_place_when_others_are_added() -> None:
    import pandas as pd

    frame = pd.DataFrame({"PostId": range(1000), "label": [i % 2 for i in range(1000)]})
    small = split(frame.iloc[:800], seed=1)
    big = split(frame, seed=1)
    moved = [pid for name in small for pid in small[name] if pid not in big[name]]
    # Adding rows shifts the cut points a little, but most rows keep their split.
    assert len(moved) < 40


def test_labels_features_and_text(tmp_path: Path) -> None:
    rows = synthetic_rows(4)
    rows[1]["OpenStatus"] = "too localized"
    rows[2]["OwnerCreationDate"] = "2008-09-01"  # the ISO form one real row uses
    rows[0]["Tag2"], rows[0]["Tag3"] = "a", "b"
    loaded = load_kaggle_csv(write_csv(tmp_path / "x.csv", rows))
    frame = loaded.frame
    assert frame["label"].tolist() == [0, 1, 0, 1]
    feats = tabular_features(frame)
    assert feats.loc[0, "num_tags"] == 3
    assert (feats["account_age_days"] > 0).all()
    assert feats.loc[0, "title_words"] == len(rows[0]["Title"].split())


def test_code_block_treatment() -> None:
    body = "Why does this fail?\n\n    x = 1\n    y = 2\n\nThanks"
    assert "x = 1" in clean_body(body, "keep")
    marked = clean_body(body, "mark")
    assert "[code]" in marked and "x = 1" not in marked and "Thanks" in marked
    assert "[code]" not in clean_body(body, "drop")
    assert question_text("Title", body).startswith("Title\n")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda rows: rows[3].update(OpenStatus="closed for fun"),
            "unknown OpenStatus 'closed for fun'",
        ),
        (
            lambda rows: rows[4].update(Title="", BodyMarkdown="  "),
            "Title and BodyMarkdown are both empty",
        ),
        (lambda rows: rows[5].update(PostId="abc"), "PostId 'abc' is not an integer"),
        (lambda rows: rows[6].update(PostCreationDate="yesterday"), "PostCreationDate 'yesterday'"),
        (
            lambda rows: rows[7].update(PostId=rows[2]["PostId"]),
            "data row 8 (PostId 1002): duplicate PostId 1002 (first at data row 3)",
        ),
    ],
)
def test_bad_rows_fail_with_row_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate, expected: str
) -> None:
    rows = synthetic_rows(20)
    mutate(rows)
    csv = write_csv(tmp_path / "bad.csv", rows)
    run_dir = tmp_path / "run"
    assert run_data(csv, run_dir) != 0
    err = capsys.readouterr().err
    assert expected in err and str(csv) in err and "data row" in err
    assert not run_dir.exists()


def test_skip_mode_drops_and_reports_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = synthetic_rows(200)
    rows[10]["OpenStatus"] = "??"
    csv = write_csv(tmp_path / "one-bad.csv", rows)
    assert run_data(csv, tmp_path / "run", "--set", "data.bad_rows=skip") == 0
    assert "skipped 1 malformed rows" in capsys.readouterr().out
    document = json.loads((tmp_path / "run" / "split.json").read_text())
    assert document["csv"]["rows"] == 199
    assert "data row 11 (PostId 1010)" in document["skipped_rows"][0]


def test_skip_mode_still_fails_when_too_many_rows_are_bad(tmp_path: Path) -> None:
    rows = synthetic_rows(20)
    for row in rows[:5]:
        row["OpenStatus"] = "??"
    with pytest.raises(DataError, match="5 of 20 rows are malformed"):
        load_kaggle_csv(write_csv(tmp_path / "bad.csv", rows), bad_rows="skip")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        (",".join(COLUMNS).encode() + b"\n", "has a header but no data rows"),
        (b"\xff\xfe\x00garbage\x00\xff", "not UTF-8"),
        (b'PostId,Title\n1,"unterminated\n', "cannot be parsed as CSV"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        load_kaggle_csv(path)
    assert str(path) in str(info.value)


def test_unparseable_csv(tmp_path: Path) -> None:
    """A ragged row is a malformed row: named by its data row and PostId, skippable."""
    path = write_csv(tmp_path / "ragged.csv", synthetic_rows(1))
    with path.open("a") as fh:
        fh.write(",".join(["2"] * 17) + "\n")
    with pytest.raises(DataError, match="data row 2 \\(PostId 2\\): 17 fields, expected 15"):
        load_kaggle_csv(path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    columns = tuple(c for c in COLUMNS if c != "OpenStatus")
    path = write_csv(tmp_path / "no-status.csv", synthetic_rows(5), columns)
    with pytest.raises(DataError, match="missing column\\(s\\) OpenStatus"):
        load_kaggle_csv(path)


def test_missing_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Kaggle"):
        load_kaggle_csv(tmp_path / "nope.csv")


def test_load_split_refuses_a_changed_csv(synthetic_csv: Path, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run_data(synthetic_csv, run.root) == 0
    frames = load_split(run, ("val",))
    assert len(frames["val"]) == 20 and set(frames["val"]["label"]) == {0, 1}
    synthetic_csv.write_text(synthetic_csv.read_text().replace("python", "rust", 1))
    with pytest.raises(StaleArtifactError, match="rerun `bertrt data"):
        load_split(run, ("val",))


def test_features_in_text_option(synthetic_csv: Path, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run_data(synthetic_csv, run.root, "--set", "data.features_in_text=true") == 0
    text = load_split(run, ("test",))["test"]["text"].iloc[0]
    assert text.startswith("reputation ")
    assert load_config(None, ["data.features_in_text=true"]).data.features_in_text


def test_stage_result_carries_the_split_document(synthetic_csv: Path, tmp_path: Path) -> None:
    from bertrt.artifacts import sha256_file
    from bertrt.data import stage as data_stage

    run = RunDir(tmp_path / "run")
    result = data_stage.run(load_config(overrides=[f"data.csv={synthetic_csv}"]), run)
    assert result.report == json.loads(run.split.read_text())
    assert result.outputs == [run.split] and result.facts["rows"] == 200
    record = run.read_manifest()["stages"]["data"]
    assert record["extra"] == result.facts and record["inputs"] == {}
    assert record["external_inputs"] == {str(synthetic_csv.resolve()): sha256_file(synthetic_csv)}


# -- tasks and generic files -------------------------------------------------------
def test_close_reason_task_keeps_the_five_classes(synthetic_csv: Path, tmp_path: Path) -> None:
    from bertrt.data.labels import CLOSE_REASON_LABELS, run_labels

    run = RunDir(tmp_path / "run")
    assert run_data(synthetic_csv, run.root, "--task", "close-reason") == 0
    document = json.loads(run.split.read_text())
    assert document["source"] == {"format": "kaggle", "task": "close-reason"}
    assert tuple(document["labels"]) == run_labels(run) == CLOSE_REASON_LABELS
    assert set(document["counts"]["train"]) == set(CLOSE_REASON_LABELS)
    frame = load_split(run, ("train",))["train"]
    assert set(frame["label"]) == set(range(5))
    rows = {int(r["PostId"]): r["OpenStatus"] for r in synthetic_rows(200)}
    pairs = zip(frame["post_id"], frame["label"], strict=True)
    assert all(rows[pid] == CLOSE_REASON_LABELS[label] for pid, label in pairs)


def test_binary_split_is_the_same_as_before_tasks(synthetic_csv: Path, tmp_path: Path) -> None:
    """The binary task's ids per split are those of the pre-N-class code (sha256 of the ids)."""
    import hashlib

    assert run_data(synthetic_csv, tmp_path / "run") == 0
    document = json.loads((tmp_path / "run" / "split.json").read_text())
    ids = json.dumps(document["splits"], sort_keys=True).encode()
    assert document["labels"] == ["open", "closed"]
    assert hashlib.sha256(ids).hexdigest()[:16] == BINARY_SPLIT_SHA


# sha256 of the synthetic_rows(200) split's ids, computed with the code before tasks existed
BINARY_SPLIT_SHA = "b4f06fd80968c9e0"


def _generic_rows(n: int) -> list[dict[str, str]]:
    """Three string labels, a title and a body; the label follows a cue word."""
    names = ("positive", "negative", "neutral")
    cues = {"positive": "great love", "negative": "awful hate", "neutral": "table chair"}
    return [
        {
            "title": f"Row {i}",
            "body": f"words {i % 7} {cues[names[i % 3]]}\n\n    code line",
            "sentiment": names[i % 3],
            "ref": str(5000 + i),
        }
        for i in range(n)
    ]


def write_generic(path: Path, rows: list[dict[str, str]]) -> Path:
    return write_csv(path, rows, columns=("ref", "title", "body", "sentiment"))


def test_generic_csv_with_three_string_labels(tmp_path: Path) -> None:
    from bertrt.data.labels import run_labels

    data = write_generic(tmp_path / "reviews.csv", _generic_rows(90))
    run = RunDir(tmp_path / "run")
    flags = ["--text-column", "title", "--text-column", "body", "--label-column", "sentiment"]
    assert run_data(data, run.root, *flags, "--id-column", "ref") == 0
    document = json.loads(run.split.read_text())
    assert run_labels(run) == ("negative", "neutral", "positive")  # discovered, sorted
    assert document["source"]["format"] == "generic"
    assert {name: len(ids) for name, ids in document["splits"].items()} == {
        "train": 72,
        "val": 9,
        "test": 9,
    }
    frame = load_split(run, ("test",))["test"]
    row = next(r for r in _generic_rows(90) if int(r["ref"]) == frame["post_id"].iloc[0])
    assert frame["text"].iloc[0] == question_text(row["title"], row["body"])
    assert run_labels(run)[frame["label"].iloc[0]] == row["sentiment"]


def test_generic_file_path_never_reads_the_kaggle_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertrt.data import stage as data_stage

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Kaggle reader ran for a generic file")

    monkeypatch.setattr(data_stage, "load_kaggle_csv", refuse)
    rows = [{"text": f"sample {i}", "label": "ab"[i % 2]} for i in range(40)]
    data = write_csv(tmp_path / "t.csv", rows, columns=("text", "label"))
    run = RunDir(tmp_path / "run")
    assert run_data(data, run.root, "--label-column", "label") == 0
    assert set(load_split(run, ("val",))["val"]["label"]) == {0, 1}


def test_a_label_the_model_does_not_know_names_the_row(tmp_path: Path) -> None:
    from bertrt.data import load_examples

    rows = _generic_rows(30)
    data = write_generic(tmp_path / "train.csv", rows)
    run = RunDir(tmp_path / "run")
    assert run_data(data, run.root, "--text-column", "body", "--label-column", "sentiment") == 0
    rows[4]["sentiment"] = "sarcastic"
    other = write_generic(tmp_path / "other.csv", rows)
    with pytest.raises(DataError, match=r"other\.csv: data row 5: label 'sarcastic' is not"):
        load_examples(other, run)
    frame, skipped = load_examples(data, run)
    assert len(frame) == 30 and not skipped


def test_a_class_too_small_to_split_is_named(tmp_path: Path) -> None:
    rows = [{"text": f"t {i}", "label": "big"} for i in range(40)]
    rows += [{"text": "rare one", "label": "rare"}, {"text": "rare two", "label": "rare"}]
    data = write_csv(tmp_path / "t.csv", rows, columns=("text", "label"))
    assert run_data(data, tmp_path / "run", "--label-column", "label") == 2
    assert not (tmp_path / "run" / "split.json").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.text_columns=[title]"], "need data.label_column"),
        (["data.label_column=label", "data.task=close-reason"], "task of the Kaggle file"),
        (["data.label_column=label", "data.features_in_text=true"], "tabular columns"),
    ],
)
def test_generic_settings_that_contradict_are_refused(
    synthetic_csv: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    from bertrt.data import stage as data_stage
    from bertrt.errors import ConfigError

    config = load_config(overrides=[f"data.csv={synthetic_csv}", *overrides])
    with pytest.raises(ConfigError, match=message):
        data_stage.run(config, RunDir(tmp_path / "run"))


# ---------------------------------------------------------------- a file read as meant


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, *argv: str) -> str:
    """Run `bertrt data`: the exit code, one stderr line, no traceback; the line."""
    assert main(["data", *argv]) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def two_class_rows(n: int = 40) -> list[dict[str, str]]:
    return [{"text": f"sample {i}", "label": "ab"[i % 2]} for i in range(n)]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_jsonl_or_parquet_file_without_its_columns_is_never_read_as_kaggle(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    path = tmp_path / f"mine{suffix}"
    frame = pd.DataFrame(two_class_rows())
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    line = one_line_error(capsys, 2, "--data", str(path), "--run-dir", str(tmp_path / "run"))
    kind = "Parquet" if suffix == ".parquet" else "JSONL"
    assert line.endswith(
        f"{path}: a {kind} file is not the Kaggle CSV; name its columns: --label-column NAME "
        "(and --text-column NAME, default 'text'); the file's columns are 'text', 'label'"
    )
    assert line.isprintable() and "PAR1" not in line
    assert not (tmp_path / "run").exists()


def test_a_generic_csv_without_its_columns_lists_them_and_the_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "mine.csv", two_class_rows(), columns=("text", "label"))
    line = one_line_error(capsys, 1, "--data", str(data), "--run-dir", str(tmp_path / "run"))
    assert "its columns are 'text', 'label'" in line and "--label-column NAME" in line


def test_a_parquet_file_named_csv_prints_no_undecoded_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    path = tmp_path / "really.csv"
    pd.DataFrame(two_class_rows()).to_parquet(path, index=False)
    line = one_line_error(capsys, 1, "--data", str(path), "--run-dir", str(tmp_path / "run"))
    assert line.endswith(
        f"{path}: is a Parquet file (it starts with PAR1), not CSV text; "
        "name it .parquet and pass its columns (--label-column, --text-column)"
    )


def test_a_kaggle_body_over_the_csv_field_limit_is_read(tmp_path: Path) -> None:
    rows = synthetic_rows(40)
    rows[7]["BodyMarkdown"] = "long line of a pasted log\n" * 8_000  # 208,000 characters
    frame = load_kaggle_csv(write_csv(tmp_path / "long.csv", rows)).frame
    assert frame["BodyMarkdown"].str.len().max() == 208_000


def test_a_text_column_given_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "t.csv", two_class_rows(), columns=("text", "label"))
    flags = ["--text-column", "text", "--text-column", "text", "--label-column", "label"]
    line = one_line_error(
        capsys, 2, "--data", str(data), "--run-dir", str(tmp_path / "run"), *flags
    )
    assert line.endswith(
        "data.text_columns (--text-column): column 'text' is given twice; "
        "each column may be named once"
    )
    assert not (tmp_path / "run").exists()


def test_a_header_naming_the_label_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "t.csv"
    data.write_text("text,label,label\n" + "".join(f"t{i},a,b\n" for i in range(40)))
    line = one_line_error(
        capsys,
        1,
        "--data",
        str(data),
        "--run-dir",
        str(tmp_path / "run"),
        "--label-column",
        "label",
    )
    assert "column 'label' 2 times (columns 2 and 3)" in line
    assert not (tmp_path / "run").exists()


def test_a_file_of_one_class_is_refused_at_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"text": f"t {i}", "label": "spam"} for i in range(40)]
    data = write_csv(tmp_path / "t.csv", rows, columns=("text", "label"))
    line = one_line_error(
        capsys,
        1,
        "--data",
        str(data),
        "--run-dir",
        str(tmp_path / "run"),
        "--label-column",
        "label",
    )
    assert line.endswith(
        f"{data}: every usable row is of class 'spam' (label column 'label'); "
        "a classifier needs rows of at least two classes"
    )
    assert not (tmp_path / "run" / "split.json").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--label-column", ""], "data.label_column (--label-column): a column name is empty"),
        (["--label-column", "label", "--id-column", ""], "data.id_column (--id-column): a column"),
        (["--id-column", ""], "data.id_column (--id-column): a column name is empty"),
        (["--label-column", "label", "--text-column", ""], "data.text_columns (--text-column)"),
    ],
)
def test_an_empty_column_name_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    data = write_csv(tmp_path / "t.csv", two_class_rows(), columns=("text", "label"))
    line = one_line_error(
        capsys, 2, "--data", str(data), "--run-dir", str(tmp_path / "run"), *flags
    )
    assert message in line


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.train_fraction=1.5"], "data.train_fraction=1.5: must be above 0 and below 1"),
        (["data.test_fraction=-0.1"], "data.test_fraction=-0.1: must be above 0 and below 1"),
        (["data.val_fraction=0", "data.train_fraction=0.9"], "data.val_fraction=0.0: must be"),
        (["data.train_fraction=1", "data.val_fraction=0", "data.test_fraction=0"], "(every split"),
        (["data.val_fraction=.nan"], "data.val_fraction=nan"),
        (["data.train_fraction=0.7"], "sum to 0.9, must sum to 1"),
        (["data.max_bad_fraction=1.5"], "data.max_bad_fraction=1.5: must be a fraction in [0, 1]"),
        (["data.max_bad_fraction=-1"], "data.max_bad_fraction=-1.0"),
        (["data.max_bad_fraction=.inf"], "data.max_bad_fraction=inf"),
    ],
)
def test_data_options_that_make_no_sense_are_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], message: str
) -> None:
    data = tmp_path / "never-read.csv"  # absent: the options are checked first
    sets = [arg for item in overrides for arg in ("--set", item)]
    line = one_line_error(capsys, 2, "--data", str(data), "--run-dir", str(tmp_path / "run"), *sets)
    assert message in line
    assert not (tmp_path / "run").exists()


def test_an_undecodable_binary_file_is_named_without_its_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte in the header is "in the header"; a control character is never printed."""
    import gzip

    zipped = tmp_path / "zipped.csv"
    zipped.write_bytes(gzip.compress(b"text,label\n" + b"a,b\n" * 40))
    line = one_line_error(capsys, 1, "--data", str(zipped), "--run-dir", str(tmp_path / "run"))
    assert "at offset 1, in the header" in line
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"PostId,Ti\x00tle\n\x01\x02,caf\xe9\n")
    line = one_line_error(capsys, 1, "--data", str(odd), "--run-dir", str(tmp_path / "run"))
    assert line.isprintable() and "in data row 1, column field 2;" in line

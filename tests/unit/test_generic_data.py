"""The generic labelled-file reader (CSV, JSONL, Parquet) and the N-class stratified split.

Every file is written here, in ``tmp_path``: no real row is read. Messages are
checked for the file and the row (JSONL: line) they must name, because a
message that does not say where is the failure these tests guard against.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertrt.data.generic import discover_labels, join_text, load_labelled_file
from bertrt.data.split import SPLITS, split
from bertrt.data.text import clean_body, question_text
from bertrt.errors import DataError, UnavailableError

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
THREE = ("open", "off topic", "too localized")


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Objects as JSON lines; a str item is written as the raw line."""
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_table(path: Path, table: dict[str, list[Any]]) -> Path:
    """The same columns as CSV, JSONL or Parquet, by the path's suffix."""
    if path.suffix == ".parquet":
        pd.DataFrame(table).to_parquet(path, index=False)
        return path
    names = list(table)
    rows = [list(values) for values in zip(*table.values(), strict=True)]
    if path.suffix == ".csv":
        return write_csv(path, names, rows)
    return write_jsonl(path, [dict(zip(names, row, strict=True)) for row in rows])


def three_class_table(n: int = 30) -> dict[str, list[Any]]:
    """Rows with a title, a Markdown body (code blocks included), an id and three labels."""
    return {
        "id": [5000 + 7 * i for i in range(n)],
        "title": [f"  Question {i} about lists?  " for i in range(n)],
        "body": [
            f"How do I sort {i}?\n\n\n    sorted(xs)\n    print(xs)\nthanks   a lot"
            for i in range(n)
        ],
        "label": [THREE[i % 3] for i in range(n)],
    }


# ---------------------------------------------------------------- reading each format


def test_csv_with_text_and_label(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "d.csv", ["text", "label"], [["  good day ", "pos"], ["bad\nday", "neg"]]
    )
    frame = load_labelled_file(path, ["text"], "label").frame
    assert list(frame.columns) == ["row", "PostId", "text", "label_name"]
    assert frame["row"].tolist() == [1, 2]
    assert frame["PostId"].tolist() == [1, 2]  # no id column: the row number
    assert str(frame["PostId"].dtype) == "int64"
    assert frame["text"].tolist() == ["good day", "bad\nday"]
    assert frame["label_name"].tolist() == ["pos", "neg"]


def test_jsonl_rows_are_numbered_by_line_and_json_values_become_text(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"text": "alpha", "label": 2}, "", "   ", {"text": 42, "label": "10", "extra": [1]}],
    )
    frame = load_labelled_file(path, ["text"], "label").frame
    assert frame["row"].tolist() == [1, 4]  # blank lines 2 and 3 are skipped, not renumbered
    assert frame["PostId"].tolist() == [1, 4]
    assert frame["text"].tolist() == ["alpha", "42"]
    assert frame["label_name"].tolist() == ["2", "10"]
    assert discover_labels(frame["label_name"]) == ("2", "10")


def test_ndjson_suffix_and_integral_float_labels(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.ndjson", [{"t": "x", "y": 1.0}, {"t": "y", "y": 0}])
    assert load_labelled_file(path, ["t"], "y").frame["label_name"].tolist() == ["1", "0"]


def test_parquet_with_text_and_label(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    # A nullable integer column comes back as floats with NaN: 1.0 is the class "1".
    pd.DataFrame({"text": ["a", None, "c"], "label": [1, 0, None]}).to_parquet(path)
    pd.DataFrame({"text": ["a", "b"], "label": [1, 0]}).to_parquet(tmp_path / "ok.pq")
    ok = load_labelled_file(tmp_path / "ok.pq", ["text"], "label").frame
    assert ok["label_name"].tolist() == ["1", "0"] and ok["text"].tolist() == ["a", "b"]
    loaded = load_labelled_file(path, ["text"], "label", bad_rows="skip", max_bad_fraction=1.0)
    assert loaded.frame["text"].tolist() == ["a"]
    assert loaded.frame["label_name"].tolist() == ["1"]
    assert [b.describe() for b in loaded.skipped] == [
        "data row 2: text column text is empty",  # no id column: the row number says it
        "data row 3: label column 'label' is empty",
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_three_labels_two_text_columns_and_an_id_in_every_format(
    tmp_path: Path, suffix: str
) -> None:
    table = three_class_table()
    path = write_table(tmp_path / f"d{suffix}", table)
    frame = load_labelled_file(path, ["title", "body"], "label", "id", code_blocks="mark").frame
    assert frame["PostId"].tolist() == table["id"]
    expected = [
        question_text(t, b, "mark") for t, b in zip(table["title"], table["body"], strict=True)
    ]
    assert frame["text"].tolist() == expected
    assert frame["text"][0] == "Question 0 about lists?\nHow do I sort 0?\n[code]\nthanks a lot"
    labels = discover_labels(frame["label_name"])
    assert labels == ("off topic", "open", "too localized")
    frame["label"] = frame["label_name"].map({n: i for i, n in enumerate(labels)})
    ids = split(frame, seed=3, label_names=labels)
    assert sorted(i for name in SPLITS for i in ids[name]) == sorted(table["id"])
    for name in SPLITS:  # 10 rows per class: 8/1/1 of each class
        per_class = frame.set_index("PostId").loc[ids[name], "label_name"].value_counts()
        assert per_class.to_dict() == dict.fromkeys(THREE, {"train": 8}.get(name, 1))


def test_prediction_file_without_a_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", ["text"], [["first"], ["  "], ["third"]])
    with pytest.raises(DataError, match=r"p\.csv: data row 2: text column text is"):
        load_labelled_file(path, ["text"], None)
    loaded = load_labelled_file(path, ["text"], None, bad_rows="skip", max_bad_fraction=0.5)
    assert loaded.frame["label_name"].tolist() == ["", ""]
    assert loaded.frame["row"].tolist() == [1, 3]


# ---------------------------------------------------------------- text and labels


@given(
    title=st.text(max_size=30),
    body=st.lists(
        st.sampled_from(["a", "b", " ", "\t", "\n", "\r", "\n\n", "    x = 1\n", "\tcode\n"]),
        max_size=20,
    ).map("".join),
    code_blocks=st.sampled_from(["keep", "mark", "drop"]),
)
@SETTINGS
def test_join_text_of_title_and_body_is_question_text(
    title: str, body: str, code_blocks: str
) -> None:
    assert join_text([title, body], code_blocks) == question_text(title, body, code_blocks)


def test_join_text_of_more_parts_cleans_every_later_part() -> None:
    assert join_text(["  T ", "a\n\n\nb", "    code\nc  d"], "drop") == "T\na\nb\nc d"
    assert join_text([" only "]) == "only"
    # One column is cleaned like `bertrt predict --text` cleans a text: the same model input.
    assert join_text(["Why   does\n\n\n    int x = 1;\nfail?"], "drop") == clean_body(
        "Why   does\n\n\n    int x = 1;\nfail?", "drop"
    )
    assert join_text(["a\n\n\nb"]) == "a\nb"
    with pytest.raises(TypeError):
        join_text("title")


def test_discover_labels_sorts_integers_numerically_and_names_as_strings() -> None:
    assert discover_labels(["10", "2", "1", "2", "-3"]) == ("-3", "1", "2", "10")
    assert discover_labels(["10", "2", "b"]) == ("10", "2", "b")
    assert discover_labels(["too localized", "open", "off topic", "open"]) == (
        "off topic",
        "open",
        "too localized",
    )
    assert discover_labels(["1.5", "10"]) == ("1.5", "10")
    assert discover_labels([]) == ()


# ---------------------------------------------------------------- bad rows


def bad_csv(tmp_path: Path) -> Path:
    rows = [
        ["1", "fine", "a"],
        ["2", "ragged"],  # data row 2
        ["3", "  ", "a"],  # 3: empty text
        ["4", "text", " "],  # 4: empty label
        ["x4", "text", "b"],  # 5: id not an integer
        ["01", "text", "b"],  # 6: duplicates row 1 (01 is 1)
    ] + [[str(10 + i), f"t{i}", "ab"[i % 2]] for i in range(94)]
    return write_csv(tmp_path / "bad.csv", ["id", "text", "label"], rows)


def test_bad_rows_fail_by_default_naming_file_row_and_the_count(tmp_path: Path) -> None:
    path = bad_csv(tmp_path)
    with pytest.raises(DataError) as info:
        load_labelled_file(path, ["text"], "label", "id")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: data row 2 (id 2): 2 fields, expected 3 (and 4 more)")
    assert "--set data.bad_rows=skip" in message


def test_skip_drops_bad_rows_and_reports_each_with_its_row(tmp_path: Path) -> None:
    path = bad_csv(tmp_path)
    loaded = load_labelled_file(
        path, ["text"], "label", "id", bad_rows="skip", max_bad_fraction=0.05
    )
    assert [b.describe() for b in loaded.skipped] == [
        "data row 2 (id 2): 2 fields, expected 3",  # the id column's name, not PostId
        "data row 3 (id 3): text column text is empty",
        "data row 4 (id 4): label column 'label' is empty",
        "data row 5 (id 'x4'): id column 'id' value 'x4' is not an integer in "
        "0..9223372036854775807",
        "data row 6 (id 1): duplicate id 1 in column 'id' (first at data row 1)",
    ]
    assert len(loaded.frame) == 95 and loaded.frame["PostId"].iloc[0] == 1
    assert not loaded.frame["row"].isin([2, 3, 4, 5, 6]).any()
    with pytest.raises(DataError, match=r"bad\.csv: 5 of 100 rows are malformed.*data row 2"):
        load_labelled_file(path, ["text"], "label", "id", bad_rows="skip", max_bad_fraction=0.04)


def test_jsonl_bad_lines_are_named_by_line(tmp_path: Path) -> None:
    lines: list[Any] = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    lines[2] = '{"text": "unterminated'
    lines[4] = ["not", "an", "object"]
    lines[5] = {"text": "x", "label": True}
    lines[6] = {"text": "x", "label": 1.5}
    lines[7] = {"text": {"nested": 1}, "label": "a"}
    lines[8] = {"label": "b"}  # text key absent from this line only
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3: not valid JSON"):
        load_labelled_file(path, ["text"], "label")
    loaded = load_labelled_file(path, ["text"], "label", bad_rows="skip", max_bad_fraction=1.0)
    assert [b.describe().split(":")[0] for b in loaded.skipped] == [
        f"line {n}" for n in (3, 5, 6, 7, 8, 9)
    ]
    reasons = [b.reason for b in loaded.skipped]
    assert reasons[1] == "a JSON array, not an object"
    assert reasons[2] == "label column 'label' holds 'True', not a class name"
    assert reasons[3] == "label column 'label' holds '1.5', not a class name"
    assert reasons[4].startswith("text column 'text' holds")
    assert reasons[5] == "text column text is empty"
    assert loaded.frame["row"].tolist() == [1, 2, 4, 10]


def test_ids_must_be_int64_integers(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "ids.jsonl",
        [
            {"id": 2**63 - 1, "t": "max", "y": "a"},
            {"id": 2**63, "t": "over", "y": "a"},
            {"id": -1, "t": "negative", "y": "a"},
            {"id": "7", "t": "text id", "y": "a"},
            {"id": None, "t": "null", "y": "a"},
        ],
    )
    loaded = load_labelled_file(path, ["t"], "y", "id", bad_rows="skip", max_bad_fraction=1.0)
    assert loaded.frame["PostId"].tolist() == [2**63 - 1, 7]
    assert [b.row for b in loaded.skipped] == [2, 3, 5]
    assert [b.reason for b in loaded.skipped] == [
        "id column 'id' value '9223372036854775808' is not an integer in 0..9223372036854775807",
        "id column 'id' value '-1' is not an integer in 0..9223372036854775807",
        "id column 'id' is empty",
    ]


def test_no_usable_rows_left_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "none.csv", ["text", "label"], [["", "a"]])
    with pytest.raises(DataError, match=r"none\.csv: no usable rows left"):
        load_labelled_file(path, ["text"], "label", bad_rows="skip", max_bad_fraction=1.0)


# ---------------------------------------------------------------- file-level problems


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_missing_column_names_file_column_and_the_columns_present(
    tmp_path: Path, suffix: str
) -> None:
    path = write_table(tmp_path / f"d{suffix}", {"title": ["a"], "label": ["x"]})
    with pytest.raises(DataError) as info:
        load_labelled_file(path, ["title", "body"], "category")
    assert str(info.value) == (
        f"{path}: missing text column 'body', label column 'category'; "
        "the file's columns are 'title', 'label'"
    )
    with pytest.raises(DataError, match=r"missing id column 'id'"):
        load_labelled_file(path, ["title"], "label", "id")


def test_unknown_suffix_missing_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_labelled_file(path, ["text"], "label")
    assert str(info.value) == (
        f"{path}: unsupported file type '.tsv'; supported: .csv, .jsonl, .ndjson, .parquet, .pq"
    )
    with pytest.raises(DataError, match=r"gone\.csv: no such file$"):
        load_labelled_file(tmp_path / "gone.csv", ["text"], "label")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jsonl: the file is empty"):
        load_labelled_file(tmp_path / "empty.jsonl", ["text"], "label")
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.jsonl: has no data rows"):
        load_labelled_file(tmp_path / "blank.jsonl", ["text"], "label")
    write_csv(tmp_path / "header.csv", ["text", "label"], [])
    with pytest.raises(DataError, match=r"header\.csv: has no data rows"):
        load_labelled_file(tmp_path / "header.csv", ["text"], "label")


def test_invalid_utf8_names_the_byte_offset_and_where(tmp_path: Path) -> None:
    csv_path = tmp_path / "latin.csv"
    csv_path.write_bytes(b"text,label\nfine,a\ncaf\xe9,b\n")
    with pytest.raises(DataError) as info:
        load_labelled_file(csv_path, ["text"], "label")
    assert str(info.value) == (
        f"{csv_path}: not UTF-8 text: byte 0xe9 at offset 21 (line 3, data row 2, "
        "column 'text'); save the file as UTF-8"
    )
    jsonl_path = tmp_path / "latin.jsonl"
    jsonl_path.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl: not UTF-8 text: byte 0xe9 at offset 42 "):
        load_labelled_file(jsonl_path, ["text"], "label")
    with pytest.raises(DataError, match=r"\(line 2\)"):
        load_labelled_file(jsonl_path, ["text"], "label")


def test_csv_quoting_error_names_the_data_row(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('text,label\nfine,a\n"open quote,b\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"quote\.csv: cannot be parsed as CSV: data row 2"):
        load_labelled_file(path, ["text"], "label")


def test_unreadable_parquet_and_missing_pyarrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot be read as Parquet: "):
        load_labelled_file(path, ["text"], "label")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UnavailableError, match=r"broken\.parquet: .*pip install pyarrow$"):
        load_labelled_file(path, ["text"], "label")


# ---------------------------------------------------------------- the split


def test_a_class_too_small_to_split_is_named() -> None:
    frame = pd.DataFrame({"PostId": range(22), "label": [0] * 10 + [1] * 10 + [2] * 2})
    with pytest.raises(ValueError) as info:
        split(frame, seed=0, label_names=("open", "off topic", "too localized"))
    assert str(info.value) == (
        "class 'too localized' has 2 rows, too few for the train/val/test fractions "
        "0.8/0.1/0.1: every split needs at least one row of each class; add rows or drop "
        "the class"
    )
    with pytest.raises(ValueError, match=r"^class 2 has 2 rows"):
        split(frame, seed=0)
    # A split with fraction 0 needs no rows: two rows fill train and test.
    ids = split(frame, seed=0, fractions=(0.5, 0.0, 0.5), label_names=("a", "b", "c"))
    assert ids["val"] == []
    assert len({20, 21} & set(ids["train"])) == 1 and len({20, 21} & set(ids["test"])) == 1


def test_split_on_another_id_column() -> None:
    frame = pd.DataFrame({"key": range(100, 140), "label": [i % 2 for i in range(40)]})
    ids = split(frame, seed=5, id_column="key")
    assert sorted(i for name in SPLITS for i in ids[name]) == list(range(100, 140))


def _old_split(
    frame: pd.DataFrame, seed: int, fractions: tuple[float, float, float]
) -> dict[str, list[int]]:
    """The split before N classes, frozen: existing runs' split.json must not change."""
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for _, group in frame.groupby("label", sort=True):
        ids = sorted(
            group["PostId"].tolist(),
            key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest(),
        )
        n_train = round(len(ids) * fractions[0])
        n_val = round(len(ids) * fractions[1])
        out["train"] += ids[:n_train]
        out["val"] += ids[n_train : n_train + n_val]
        out["test"] += ids[n_train + n_val :]
    return {name: sorted(ids) for name, ids in out.items()}


fraction_sets = st.sampled_from(
    [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.5, 0.5, 0.0), (1.0, 0.0, 0.0), (0.6, 0.2, 0.2)]
)


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=7),
    seed=st.integers(min_value=0, max_value=2**31),
    fractions=fraction_sets,
    first_id=st.integers(min_value=0, max_value=2**62),
)
@SETTINGS
def test_split_is_a_stratified_partition_for_any_number_of_classes(
    sizes: list[int], seed: int, fractions: tuple[float, float, float], first_id: int
) -> None:
    labels = [label for label, size in enumerate(sizes) for _ in range(size)]
    frame = pd.DataFrame({"PostId": range(first_id, first_id + len(labels)), "label": labels})
    names = [f"class-{label}" for label in range(len(sizes))]
    try:
        ids = split(frame, seed, fractions, label_names=names)
    except ValueError as err:
        small = [
            label
            for label, size in enumerate(sizes)
            if any(f > 0 and round(size * f) < 1 for f in fractions[:2])
            or (
                fractions[2] > 0
                and size - round(size * fractions[0]) - round(size * fractions[1]) < 1
            )
        ]
        assert small and str(err).startswith(f"class 'class-{small[0]}' has {sizes[small[0]]} ")
        return
    every = [i for name in SPLITS for i in ids[name]]
    assert sorted(every) == frame["PostId"].tolist()  # each id in exactly one split
    assert ids == _old_split(frame, seed, fractions)
    by_id = frame.set_index("PostId")["label"]
    for label, size in enumerate(sizes):
        for name, fraction in zip(SPLITS, fractions, strict=True):
            count = int((by_id.loc[ids[name]] == label).sum())
            assert abs(count - size * fraction) <= 1.0  # stratified: each class cut alike
            assert count >= 1 or fraction == 0


def test_binary_split_is_unchanged_for_the_kaggle_task() -> None:
    frame = pd.DataFrame({"PostId": range(3, 3000, 3), "label": [i % 7 == 0 for i in range(999)]})
    frame["label"] = frame["label"].astype("int64")
    assert split(frame, seed=42) == _old_split(frame, 42, (0.8, 0.1, 0.1))


def test_a_named_class_with_no_rows_is_an_error() -> None:
    """The Kaggle close-reason task has five fixed classes: a file lacking one must not train."""
    frame = pd.DataFrame({"PostId": range(60), "label": [i % 2 * 2 for i in range(60)]})
    with pytest.raises(ValueError, match="class 'b' has 0 rows"):
        split(frame, seed=1, label_names=("a", "b", "c"))


def test_a_label_that_is_not_printable_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [{"text": f"row {i}", "label": "a\tb" if i == 2 else "a"} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"line 3: .*a class name must be printable"):
        load_labelled_file(path, ["text"], "label")


# ---------------------------------------------------------------- the file read as meant


def test_a_csv_cell_over_the_csv_modules_field_limit_is_read(tmp_path: Path) -> None:
    """The csv module refuses a cell over 131,072 characters by default; the file is valid."""
    long = "word " * 60_000  # 300,000 characters
    rows = [[f"short {i}", "ab"[i % 2]] for i in range(6)]
    rows[3][0] = long
    path = write_csv(tmp_path / "long.csv", ["text", "label"], rows)
    frame = load_labelled_file(path, ["text"], "label").frame
    assert len(frame) == 6 and frame["text"].str.len().max() == len(long.strip())


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_wanted_column_named_twice_in_the_header_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"twice{suffix}"
    if suffix == ".csv":
        write_csv(path, ["text", "label", "label"], [["a", "x", "y"], ["b", "y", "x"]])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = [pa.array(["a", "b"]), pa.array(["x", "y"]), pa.array(["y", "x"])]
        pq.write_table(pa.table(columns, names=["text", "label", "label"]), path)
    with pytest.raises(DataError) as info:
        load_labelled_file(path, ["text"], "label")
    assert str(info.value) == (
        f"{path}: the header names column 'label' 2 times (columns 2 and 3); "
        "rename one so the file says which to read"
    )


def test_an_unused_column_named_twice_is_harmless(tmp_path: Path) -> None:
    """Spreadsheets often end a header with empty names; only the named columns matter."""
    path = write_csv(tmp_path / "blank.csv", ["text", "", "label", ""], [["a", "", "x", ""]])
    assert load_labelled_file(path, ["text"], "label").frame["label_name"].tolist() == ["x"]


def test_a_jsonl_object_repeating_a_wanted_key_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_text(
        '{"text": "a", "label": "x"}\n'
        '{"text": "b", "label": "x", "label": "y"}\n'
        '{"text": "c", "label": "y", "note": 1, "note": 2, "nested": {"label": 1, "label": 2}}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError) as info:
        load_labelled_file(path, ["text"], "label")
    assert str(info.value).startswith(
        f"{path}: line 2: key 'label' appears more than once in the object. Fix the file"
    )
    loaded = load_labelled_file(path, ["text"], "label", bad_rows="skip", max_bad_fraction=0.5)
    assert loaded.frame["text"].tolist() == ["a", "c"]


@pytest.mark.parametrize(
    ("text", "label", "id_column", "message"),
    [
        (["text", "text"], "label", None, "column 'text' is given twice"),
        (["title", "body", "title"], "label", None, "column 'title' is given twice"),
        (["text"], "", None, "data.label_column (--label-column): a column name is empty"),
        (["text"], "label", "", "data.id_column (--id-column): a column name is empty"),
        ([""], "label", None, "data.text_columns (--text-column): a column name is empty"),
        (["label"], "label", None, "column 'label' is also data.text_columns"),
        (["text"], "label", "label", "column 'label' is also data.label_column"),
    ],
)
def test_column_options_that_cannot_mean_what_they_say_are_refused(
    tmp_path: Path, text: list[str], label: str, id_column: str | None, message: str
) -> None:
    from bertrt.errors import ConfigError

    path = write_csv(tmp_path / "d.csv", ["text", "title", "body", "label"], [["a", "b", "c", "x"]])
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_labelled_file(path, text, label, id_column)


@pytest.mark.parametrize(("suffix", "expected"), [(".csv", "CSV"), (".jsonl", "JSONL")])
def test_a_parquet_file_under_a_text_suffix_is_named_so(
    tmp_path: Path, suffix: str, expected: str
) -> None:
    path = tmp_path / f"really-parquet{suffix}"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}).to_parquet(path, index=False)
    with pytest.raises(DataError) as info:
        load_labelled_file(path, ["text"], "label")
    assert str(info.value) == (
        f"{path}: is a Parquet file (it starts with PAR1), not {expected} text; "
        "name it .parquet and pass its columns (--label-column, --text-column)"
    )

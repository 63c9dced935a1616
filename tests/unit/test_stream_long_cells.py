"""Chunked reading (predict --data) takes a CSV cell over the csv module's default limit."""

from __future__ import annotations

import csv
from pathlib import Path

from bertrt.data.stream import Layout, read_chunks


def test_a_cell_longer_than_the_csv_default_limit_is_read(tmp_path: Path) -> None:
    csv.field_size_limit(131_072)  # the module's default: another test may have raised it
    long_text = "word " * 60_000  # 300,000 characters: a valid cell
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerows([["text"], ["short question"], [long_text]])
    texts = [t for chunk in read_chunks(path, Layout(("text",)), 10) for t in chunk.texts]
    assert len(texts) == 2 and texts[1].startswith("word word")

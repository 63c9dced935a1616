"""The data stage on the real StackOverflow rows (skipped where the file is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertrt.cli import main

pytestmark = pytest.mark.integration


def test_real_split_is_80_10_10_stratified_and_stable(real_data: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["data", "--data", str(real_data), "--run-dir", str(tmp_path / name)]) == 0
    first = (tmp_path / "a" / "split.json").read_bytes()
    assert first == (tmp_path / "b" / "split.json").read_bytes()
    document = json.loads(first)
    total = document["csv"]["rows"]
    closed_share = sum(c["closed"] for c in document["counts"].values()) / total
    for name, fraction in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        counts = document["counts"][name]
        size = counts["open"] + counts["closed"]
        assert abs(size / total - fraction) <= 0.005
        assert abs(counts["closed"] / size - closed_share) <= 0.005

"""`bertrt predict --data --engine ray`: a local Ray with 2 actors gives the single-process
predictions, in input order, as one file or as shards, with the same rejects.

Kept small for CI: one local Ray for the module (3 logical CPUs: two one-thread
actors and the read task; a 100 MB object store), the tiny random BERT, ~100 rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertrt.artifacts import RunDir
from bertrt.config import load_config
from bertrt.data.stream import Layout
from bertrt.errors import DataError
from bertrt.scoring.job import ScoreOptions
from bertrt.scoring.local import score_file
from bertrt.scoring.output import rejects_path
from tests.conftest import make_trained_run, synthetic_rows, write_csv

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install -e '.[scale]')")
from bertrt.scoring.ray_engine import RayOptions, score_with_ray  # noqa: E402

CONFIG = ["model.max_length=32", "train.eval_batch_size=16"]
KAGGLE = Layout(("Title", "BodyMarkdown"), "PostId", keep_columns=("Tag1",))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=3, object_store_memory=100 * 2**20, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    return make_trained_run(tmp_path_factory.mktemp("predict-ray"), tiny_base, rows=120)


def options(data: Path, out: Path, **kw: object) -> ScoreOptions:
    return ScoreOptions(data, out, kw.pop("layout", KAGGLE), chunk_rows=8, progress=False, **kw)  # type: ignore[arg-type]


def frames(path: Path) -> pd.DataFrame:
    files = sorted(path.glob("part-*")) if path.is_dir() else [path]
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def same(local: pd.DataFrame, remote: pd.DataFrame) -> None:
    assert list(local.columns) == list(remote.columns)
    assert list(local["PostId"]) == list(remote["PostId"])
    assert list(local["label"]) == list(remote["label"])
    assert list(local["Tag1"]) == list(remote["Tag1"])
    diff = local[["open", "closed"]].to_numpy() - remote[["open", "closed"]].to_numpy()
    assert np.abs(diff).max() <= 1e-6


def test_ray_two_workers_equals_single_process(
    run: RunDir, tmp_path: Path, local_ray: None
) -> None:
    config = load_config(None, CONFIG)
    data = write_csv(tmp_path / "in.csv", synthetic_rows(100, seed=11))
    single = score_file(config, run, options(data, tmp_path / "one.parquet"), "merged")
    report = score_with_ray(
        config, run, options(data, tmp_path / "ray.parquet"), "merged", RayOptions(workers=2)
    )
    assert single.rows == report.rows == 100
    assert report.engine == "ray (2 workers)"
    same(frames(tmp_path / "one.parquet"), frames(tmp_path / "ray.parquet"))


def test_ray_shards_in_and_out(run: RunDir, tmp_path: Path, local_ray: None) -> None:
    """A directory of CSV shards in, a directory of Parquet shards out, in input order."""
    config = load_config(None, CONFIG)
    rows = synthetic_rows(60, seed=12)
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "a.csv", rows[:25])
    write_csv(tmp_path / "in" / "b.csv", rows[25:])
    whole = write_csv(tmp_path / "whole.csv", rows)
    score_file(config, run, options(whole, tmp_path / "one.parquet"), "merged")
    out = tmp_path / "shards.parquet"
    ray_options = RayOptions(workers=2, shards=True)
    score_with_ray(config, run, options(tmp_path / "in", out), "merged", ray_options)
    assert out.is_dir() and len(list(out.glob("part-*.parquet"))) >= 2
    same(frames(tmp_path / "one.parquet"), frames(out))
    assert not list(tmp_path.glob(".shards.parquet.*"))


def test_ray_rejects_match_single_process(run: RunDir, tmp_path: Path, local_ray: None) -> None:
    config = load_config(None, CONFIG)
    rows = synthetic_rows(40, seed=13)
    rows[3]["Title"] = rows[3]["BodyMarkdown"] = ""
    data = write_csv(tmp_path / "in.csv", rows)
    kw = {"bad_rows": "skip", "max_bad_fraction": 0.1}
    score_file(config, run, options(data, tmp_path / "one.parquet", **kw), "merged")
    out = tmp_path / "ray.parquet"
    score_with_ray(config, run, options(data, out, **kw), "merged", RayOptions(workers=2))
    same(frames(tmp_path / "one.parquet"), frames(out))
    local = rejects_path(tmp_path / "one.parquet").read_text(encoding="utf-8")
    remote = rejects_path(out).read_text(encoding="utf-8")
    assert local == remote and json.loads(local)["row"] == 4


def test_ray_worker_error_is_the_one_line_message(
    run: RunDir, tmp_path: Path, local_ray: None
) -> None:
    """An unbalanced quote deep in the file is found by the read task on a worker; the
    job fails with the reader's one line (file, data row), not Ray's traceback text."""
    config = load_config(None, CONFIG)
    data = write_csv(tmp_path / "in.csv", synthetic_rows(40, seed=14))
    text = data.read_text(encoding="utf-8")
    at = text.index("\n1030,")
    data.write_text(text[:at] + '\n"1030,' + text[at + 6 :], encoding="utf-8")
    out = tmp_path / "out.csv"
    with pytest.raises(DataError) as caught:
        score_with_ray(config, run, options(data, out), "merged", RayOptions(workers=1))
    message = str(caught.value)
    assert message.startswith(f"{data}: cannot be parsed as CSV: data row 31")
    assert "\n" not in message and "UDF" not in message and "Traceback" not in message
    assert not out.exists() and not list(tmp_path.glob(".out.csv.*"))

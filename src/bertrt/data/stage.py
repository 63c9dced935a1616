"""The data stage: validate the CSV, split it, and serve split rows to later stages.

Only ``split.json`` is written: PostIds per split, the CSV's path and sha256,
and how text is built. Later stages re-read the CSV through :func:`load_split`,
which refuses a CSV whose hash differs from the one recorded, so a run can
never mix rows of two files. No row of the data is copied into the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bertrt.artifacts import RunDir, read_json, sha256_file, write_json
from bertrt.config import Config
from bertrt.data.features import FEATURES, tabular_features
from bertrt.data.kaggle import LABEL_NAMES, load_kaggle_csv
from bertrt.data.split import SPLITS, split
from bertrt.data.text import question_text
from bertrt.errors import ConfigError, MissingArtifactError, StaleArtifactError
from bertrt.stages import StageResult, stage


def run(config: Config, rundir: RunDir) -> StageResult:
    """Validate and split the CSV; the result's report is the split.json document."""
    cfg = config.data
    if not cfg.csv:
        raise ConfigError("data: no CSV given; pass --data PATH (Makefile: DATA=PATH)")
    with stage(rundir, "data") as out:
        csv_path = Path(cfg.csv).resolve()
        loaded = load_kaggle_csv(csv_path, cfg.bad_rows, cfg.max_bad_fraction)
        fractions = (cfg.train_fraction, cfg.val_fraction, cfg.test_fraction)
        try:
            ids = split(loaded.frame, config.seed, fractions)
        except ValueError as err:
            raise ConfigError(f"data: {err}") from err
        labels = loaded.frame.set_index("PostId")["label"]
        counts = {
            name: {
                LABEL_NAMES[k]: int(v)
                for k, v in labels.loc[ids[name]].value_counts().sort_index().items()
            }
            for name in SPLITS
        }
        csv_sha = sha256_file(csv_path)
        out.report = {
            "csv": {"path": str(csv_path), "sha256": csv_sha, "rows": len(loaded.frame)},
            "seed": config.seed,
            "fractions": dict(zip(SPLITS, fractions, strict=True)),
            "text": {"code_blocks": cfg.code_blocks, "features_in_text": cfg.features_in_text},
            "skipped_rows": [b.describe() for b in loaded.skipped],
            "counts": counts,
            "splits": ids,
        }
        write_json(out.path(rundir.split), out.report)
        out.external_inputs = {str(csv_path): csv_sha}
        out.facts = {"rows": len(loaded.frame), "skipped": len(loaded.skipped), "counts": counts}
        out.summary = _summary(rundir, out.report)
    return out.result


def _summary(rundir: RunDir, document: dict[str, Any]) -> str:
    skipped = document["skipped_rows"]
    return (
        f"wrote {rundir.split}: "
        + ", ".join(f"{k} {sum(v.values())} {v}" for k, v in document["counts"].items())
        + (f"; skipped {len(skipped)} malformed rows" if skipped else "")
    )


def read_split(run: RunDir) -> dict[str, Any]:
    if not run.split.exists():
        raise MissingArtifactError(
            f"{run.split} does not exist; run `bertrt data --data CSV --run-dir {run.root}` first"
        )
    return dict(read_json(run.split))


def build_texts(frame: pd.DataFrame, text_options: dict[str, Any]) -> pd.Series:
    feats = tabular_features(frame) if text_options.get("features_in_text") else None
    code_blocks = str(text_options.get("code_blocks", "keep"))
    return pd.Series(
        [
            question_text(title, body, code_blocks, feats.loc[idx] if feats is not None else None)
            for idx, title, body in zip(
                frame.index, frame["Title"], frame["BodyMarkdown"], strict=True
            )
        ],
        index=frame.index,
        dtype=object,
    )


def examples(frame: pd.DataFrame, text_options: dict[str, Any]) -> pd.DataFrame:
    """Model-ready rows: post_id, text, label and the tabular features."""
    feats = tabular_features(frame)
    out = pd.DataFrame(
        {
            "post_id": frame["PostId"].to_numpy(),
            "text": build_texts(frame, text_options).to_numpy(),
            "label": frame["label"].to_numpy(),
        }
    )
    for name in FEATURES:
        out[name] = feats[name].to_numpy()
    return out


def load_examples(
    path: str | Path,
    run: RunDir | None = None,
    bad_rows: str = "fail",
    max_bad_fraction: float = 0.01,
) -> tuple[pd.DataFrame, list[str]]:
    """Every row of any Kaggle-format file, texts built as the run's data stage decided,
    and the rows dropped under ``bad_rows="skip"`` (described), which the caller must report."""
    text_options = read_split(run)["text"] if run is not None else {}
    loaded = load_kaggle_csv(path, bad_rows=bad_rows, max_bad_fraction=max_bad_fraction)
    return examples(loaded.frame, text_options), [b.describe() for b in loaded.skipped]


def load_split(
    run: RunDir, names: tuple[str, ...] = SPLITS, csv: str | Path | None = None
) -> dict[str, pd.DataFrame]:
    """The rows of the named splits, read from the CSV the data stage recorded.

    ``csv`` (``--data`` / ``data.csv`` of every stage that reads rows) points at
    a moved copy of the same file: it is accepted when its sha256 is the one
    recorded, so a run goes on after its CSV moves without rerunning `bertrt
    data` (which would mark every later stage stale).
    """
    document = read_split(run)
    recorded = Path(document["csv"]["path"])
    csv_path = Path(csv) if csv else recorded
    if not csv_path.is_file():
        raise MissingArtifactError(
            f"{csv_path} (recorded in {run.split}) is gone; pass --data with the same CSV or "
            f"rerun `bertrt data --data CSV --run-dir {run.root}`"
        )
    if sha256_file(csv_path) != document["csv"]["sha256"]:
        what = "changed since" if csv_path == recorded else f"is not the CSV ({recorded}) that"
        raise StaleArtifactError(
            f"{csv_path} {what} `bertrt data` split it (sha256 differs from {run.split}); "
            f"pass --data with that CSV, or rerun `bertrt data --data {csv_path} "
            f"--run-dir {run.root}` and the stages after it"
        )
    frame = load_kaggle_csv(csv_path, bad_rows="skip", max_bad_fraction=1.0).frame
    frame = frame.set_index("PostId", drop=False)
    out = {}
    for name in names:
        rows = frame.loc[document["splits"][name]].reset_index(drop=True)
        out[name] = examples(rows, document["text"])
    return out

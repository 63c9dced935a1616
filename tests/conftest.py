"""Shared fixtures: synthetic Kaggle-format CSVs, a tiny random BERT, the real data's path.

No real StackOverflow row lives in this repository. Unit tests generate
rows; integration tests read the shared file (``$BERTRT_DATA`` or
``../shared/data/train-sample.csv``) and skip with the reason when it is absent.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
from pathlib import Path

import pytest

from bertrt.artifacts import RunDir
from bertrt.data.kaggle import COLUMNS

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(
    os.environ.get("BERTRT_DATA", REPO.parent / "shared" / "data" / "train-sample.csv")
)

_WORDS = (
    "python list index error how do i convert string array loop function class "
    "java script page server database query table join sql best way opinion "
    "recommend book which language better framework why does my code crash"
).split()
_STATUSES = ("open", "not a real question", "not constructive", "off topic", "too localized")


def synthetic_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Kaggle-format rows of random words; label correlates with a few cue words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        status = "open" if i % 2 == 0 else rng.choice(_STATUSES[1:])
        cue = "error code crash" if status == "open" else "best opinion recommend"
        body_lines = [" ".join(rng.choices(_WORDS, k=rng.randint(5, 40))), cue]
        if rng.random() < 0.5:
            body_lines.append("    for x in range(10):\n        print(x)")
        rows.append(
            {
                "PostId": str(1000 + i),
                "PostCreationDate": f"0{rng.randint(1, 9)}/1{rng.randint(0, 9)}/2011 10:00:00",
                "OwnerUserId": str(rng.randint(1, 5000)),
                "OwnerCreationDate": "01/01/2010 09:00:00",
                "ReputationAtPostCreation": str(rng.randint(1, 3000)),
                "OwnerUndeletedAnswerCountAtPostTime": str(rng.randint(0, 50)),
                "Title": " ".join(rng.choices(_WORDS, k=rng.randint(3, 10))).capitalize() + "?",
                "BodyMarkdown": "\n\n".join(body_lines),
                "Tag1": rng.choice(["python", "sql", "javascript"]),
                "Tag2": rng.choice(["", "list", "join"]),
                "Tag3": "",
                "Tag4": "",
                "Tag5": "",
                "PostClosedDate": "" if status == "open" else "02/01/2012 10:00:00",
                "OpenStatus": status,
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_trained_run(root: Path, model_dir: Path, rows: int = 200) -> RunDir:
    """A run with a split of synthetic rows and ``model_dir`` standing in for `bertrt train`."""
    from bertrt.config import load_config
    from bertrt.data.stage import run as data_stage

    csv = write_csv(root / "train-sample.csv", synthetic_rows(rows))
    run = RunDir(root / "run")
    data_stage(load_config(overrides=[f"data.csv={csv}"]), run)
    shutil.copytree(model_dir, run.merged)
    run.record("train", inputs=[run.split], outputs=[run.merged], wall_s=0.0)
    return run


@pytest.fixture
def synthetic_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "train-sample.csv", synthetic_rows(200))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForSequenceClassification with MiniLM's tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertForSequenceClassification

    from bertrt.modeling import load_tokenizer, resolve_base_model

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer(resolve_base_model("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
    )
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_file():
        pytest.skip(f"real StackOverflow rows not found at {REAL_DATA} (set BERTRT_DATA)")
    return REAL_DATA

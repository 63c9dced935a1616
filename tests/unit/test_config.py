"""The typed config tree: YAML files, --set overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertrt.config import CONFIG_DIR, Config, load_config
from bertrt.errors import ConfigError


def test_shipped_configs_load() -> None:
    default = load_config(CONFIG_DIR / "default.yaml")
    assert default.model.base == "minilm"
    reference = load_config(CONFIG_DIR / "bert-base.yaml")
    assert reference.model.base == "bert-base-uncased" and reference.train.epochs == 5
    assert isinstance(load_config(), Config)


def test_overrides_are_typed() -> None:
    config = load_config(
        None,
        [
            "train.epochs=3",
            "train.learning_rate=2e-4",
            "engines.precisions=fp16",
            "bench.batch_sizes=[1,4]",
            "train.max_train_rows=null",
        ],
    )
    assert config.train.epochs == 3
    assert config.train.learning_rate == pytest.approx(2e-4)
    assert config.engines.precisions == ["fp16"]
    assert config.bench.batch_sizes == [1, 4]
    assert config.train.max_train_rows is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("train.epochs=three", "train.epochs='three': expected int"),
        ("data.code_blocks=strip", "must be one of keep, mark, drop"),
        ("noequals", "expected key=value"),
        ("data.features_in_text=maybe", "expected true or false"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace("[", "\\[")):
        load_config(None, [override])


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")

"""Train stage on a tiny random BERT and synthetic rows: artifacts, metrics, errors, resume."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bertrt.artifacts import RunDir, read_json, sha256_path
from bertrt.config import Config, load_config
from bertrt.data import stage as data_stage
from bertrt.data.labels import BINARY_LABELS
from bertrt.errors import ConfigError, MissingArtifactError, StaleArtifactError
from bertrt.trainer import PRESETS, stage
from bertrt.trainer.presets import get_preset
from bertrt.trainer.train import fingerprint, stable_subsample, train_model
from tests.conftest import synthetic_rows, write_csv


def make_config(base: Path, csv: Path, *extra: str) -> Config:
    return load_config(
        None,
        [
            f"model.base={base}",
            f"data.csv={csv}",
            "model.max_length=32",
            "train.epochs=1",
            "train.batch_size=8",
            "train.eval_batch_size=16",
            "train.logging_steps=5",
            "train.max_train_rows=120",
            *extra,
        ],
    )


def prepared_run(tmp: Path, base: Path, *extra: str) -> tuple[Config, RunDir, Path]:
    csv = write_csv(tmp / "train-sample.csv", synthetic_rows(200))
    config = make_config(base, csv, *extra)
    run = RunDir(tmp / "run")
    data_stage.run(config, run)
    return config, run, csv


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_base: Path
) -> tuple[Config, RunDir, Path]:
    config, run, csv = prepared_run(tmp_path_factory.mktemp("trained"), tiny_base)
    result = stage.run(config, run)
    assert result.report == read_json(run.train_metrics)
    assert result.summary.startswith("test accuracy ") and str(run.merged) in result.summary
    return config, run, csv


def test_lora_run_writes_adapter_merged_and_metrics(trained: tuple[Config, RunDir, Path]) -> None:
    _, run, _ = trained
    assert (run.adapter / "adapter_config.json").is_file()
    assert (run.merged / "model.safetensors").is_file()
    assert (run.merged / "tokenizer_config.json").is_file()
    metrics = read_json(run.train_metrics)
    assert metrics["preset"] == "lora-r8-ffn"
    params = metrics["parameters"]
    assert 0 < params["trainable"] < params["total"]
    assert params["trainable_percent"] == pytest.approx(
        100 * params["trainable"] / params["total"], abs=1e-3
    )
    assert metrics["rows"]["train"] == 120
    [epoch] = metrics["epochs"]
    assert epoch["epoch"] == 1 and epoch["train_loss"] > 0 and epoch["val_loss"] > 0
    assert 0.0 <= epoch["val_accuracy"] <= 1.0
    assert metrics["best_epoch"] == 1
    assert metrics["test"]["n"] == 20 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert metrics["merge"]["applied"] and metrics["merge"]["max_abs_diff"] <= 1e-4
    assert metrics["train_samples_per_s"] > 0 and metrics["wall_s"] > 0
    assert metrics["device"]["type"] in ("cpu", "cuda")
    # Checkpoints of a finished run are removed; the manifest names every output.
    assert not any(run.checkpoints.glob("*/checkpoint-*"))
    record = run.read_manifest()["stages"]["train"]
    assert set(record["outputs"]) == {"adapter", "merged", "train_metrics.json"}
    assert record["inputs"] == {"split.json": sha256_path(run.split)}
    run.require("export", [run.merged], producer="train")  # later stages accept it


def test_merged_model_is_plain_bert_without_lora(trained: tuple[Config, RunDir, Path]) -> None:
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    _, run, _ = trained
    model = AutoModelForSequenceClassification.from_pretrained(run.merged)
    assert type(model) is BertForSequenceClassification
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert model.config.id2label == {0: "open", 1: "closed"}


def test_preset_parameter_counts_follow_the_table(tiny_base: Path) -> None:
    from bertrt.trainer.train import apply_preset, load_base, parameter_counts

    config = load_config(None, [f"model.base={tiny_base}"])
    counts = {}
    for name in PRESETS:
        model, _, _ = load_base(config, BINARY_LABELS)
        counts[name] = parameter_counts(apply_preset(model, get_preset(name)))["trainable"]
    hidden, inner, layers, head = 32, 64, 2, 32 * 2 + 2
    qv = layers * 2 * (2 * hidden)  # per rank: A (hidden x r) + B (r x hidden)
    assert counts["lora-r1"] == qv * 1 + head
    assert counts["lora-r8"] == qv * 8 + head
    assert counts["lora-r8-last4"] == counts["lora-r8"]  # the tiny model has only 2 layers
    ffn = layers * ((hidden + inner) + (inner + hidden))
    assert counts["lora-r8-ffn"] == (qv + ffn) * 8 + head
    assert counts["full"] > counts["lora-r8-ffn"]


def test_last4_targets_only_the_last_layers() -> None:
    regex = get_preset("lora-r8-last4").target_regex(6)
    import re

    assert re.fullmatch(regex, "bert.encoder.layer.2.attention.self.query")
    assert not re.fullmatch(regex, "bert.encoder.layer.1.attention.self.query")
    ffn = get_preset("lora-r8-ffn").target_regex(6)
    assert re.fullmatch(ffn, "bert.encoder.layer.0.output.dense")
    assert not re.fullmatch(ffn, "bert.encoder.layer.0.attention.output.dense")


def test_unknown_preset_lists_valid_ones(tmp_path: Path, tiny_base: Path) -> None:
    config, run, _ = prepared_run(tmp_path, tiny_base, "train.preset=lora-r99")
    with pytest.raises(ConfigError) as err:
        stage.run(config, run)
    for name in PRESETS:
        assert name in str(err.value)


def test_missing_split_names_the_data_stage(tmp_path: Path, tiny_base: Path) -> None:
    config = make_config(tiny_base, tmp_path / "x.csv")
    with pytest.raises(MissingArtifactError, match="bertrt data"):
        stage.run(config, RunDir(tmp_path / "empty"))


def test_changed_csv_names_the_data_stage(tmp_path: Path, tiny_base: Path) -> None:
    config, run, csv = prepared_run(tmp_path, tiny_base)
    write_csv(csv, synthetic_rows(200, seed=1))
    with pytest.raises(StaleArtifactError, match="bertrt data"):
        stage.run(config, run)


def test_full_preset_has_no_adapter(tmp_path: Path, tiny_base: Path) -> None:
    config, run, _ = prepared_run(
        tmp_path, tiny_base, "train.preset=full", "train.max_train_rows=40"
    )
    metrics = stage.run(config, run).report
    assert not run.adapter.exists()
    assert (run.merged / "model.safetensors").is_file()
    assert metrics["merge"]["applied"] is False and metrics["adapter"] is None
    assert set(run.read_manifest()["stages"]["train"]["outputs"]) == {
        "merged",
        "train_metrics.json",
    }


def test_interrupted_run_resumes_from_last_checkpoint(tmp_path: Path, tiny_base: Path) -> None:
    from transformers import TrainerCallback

    from bertrt.data import load_split

    config, run, _ = prepared_run(
        tmp_path, tiny_base, "train.preset=lora-r8", "train.epochs=2", "train.max_train_rows=40"
    )

    class Interrupt(TrainerCallback):  # type: ignore[misc]
        """Stops the process the way Ctrl-C would, once epoch 1's checkpoint is saved."""

        def on_epoch_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.epoch >= 1:
                raise KeyboardInterrupt

    splits = load_split(run)
    frames = {
        k: stable_subsample(v, 40 if k == "train" else None, config.seed) for k, v in splits.items()
    }
    output_dir = run.checkpoints / fingerprint(config, sha256_path(run.split))
    with pytest.raises(KeyboardInterrupt):
        train_model(config, get_preset("lora-r8"), frames, output_dir, BINARY_LABELS, [Interrupt()])
    assert [p.name for p in output_dir.glob("checkpoint-*")] == ["checkpoint-5"]
    assert not run.merged.exists()

    metrics = stage.run(config, run).report  # the same config picks the checkpoint up
    assert metrics["resumed_from"].endswith("checkpoint-5")
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][0]["train_seconds"] is None  # epoch 1 ran in the interrupted process
    assert metrics["epochs"][1]["train_seconds"] > 0


def test_other_config_does_not_resume(tmp_path: Path, tiny_base: Path) -> None:
    a = make_config(tiny_base, tmp_path / "x.csv")
    b = make_config(tiny_base, tmp_path / "x.csv", "train.learning_rate=5e-4")
    cosmetic = make_config(tiny_base, tmp_path / "x.csv", "train.logging_steps=1")
    assert fingerprint(a, "s") != fingerprint(b, "s")
    assert fingerprint(a, "s") != fingerprint(a, "other split")
    assert fingerprint(a, "s") == fingerprint(cosmetic, "s")


def test_manifest_extra_is_json(trained: tuple[Config, RunDir, Path]) -> None:
    _, run, _ = trained
    extra = run.stage_extra("train")
    assert extra["preset"] == "lora-r8-ffn"
    json.dumps(extra)


def test_preset_table_script_writes_markdown_and_json(tmp_path: Path, tiny_base: Path) -> None:
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "preset_table", REPO / "scripts" / "preset_table.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    csv = write_csv(tmp_path / "train-sample.csv", synthetic_rows(120))
    md, js = tmp_path / "presets.md", tmp_path / "presets.json"
    argv = ["--data", str(csv), "--train-rows", "32", "--eval-rows", "16"]
    argv += ["--presets", "lora-r1,full", "--runs-dir", str(tmp_path / "runs")]
    argv += ["--markdown", str(md), "--json", str(js), "--set", f"model.base={tiny_base}"]
    argv += ["--set", "model.max_length=32", "--set", "train.batch_size=8"]
    assert script.main(argv) == 0
    table = read_json(js)
    assert [r["preset"] for r in table["presets"]] == ["lora-r1", "full"]
    r1, full = table["presets"]
    assert r1["trainable"] < full["trainable"] and r1["rows"]["train"] == 32
    assert "| lora-r1 |" in md.read_text() and "| full |" in md.read_text()
    with pytest.raises(ConfigError, match="lora-r8-ffn"):
        script.main([*argv[:6], "--presets", "nope"])


def test_non_main_rank_writes_and_records_nothing(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun every rank trains; only rank 0 may publish and record."""
    config, run, _ = prepared_run(tmp_path, tiny_base)

    class Rank1:
        def is_world_process_zero(self) -> bool:
            return False

    def trained_on_rank1(*args: object, **kwargs: object) -> SimpleNamespace:
        return SimpleNamespace(trainer=Rank1())

    monkeypatch.setattr(stage, "train_model", trained_on_rank1)
    result = stage.run(config, run)
    assert result.outputs == [] and result.report == {} and result.summary == ""
    assert not run.merged.exists() and not run.train_metrics.exists()
    assert "train" not in run.read_manifest()["stages"]
    assert not list(run.root.glob(".staging-*"))

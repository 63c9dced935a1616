"""Train stage on a tiny random BERT and synthetic rows: artifacts, metrics, errors, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bertrt.artifacts import RunDir, read_json, sha256_path
from bertrt.config import Config, load_config
from bertrt.data import stage as data_stage
from bertrt.data.labels import BINARY_LABELS
from bertrt.errors import ConfigError, MissingArtifactError, StaleArtifactError
from bertrt.trainer import PRESETS, stage
from bertrt.trainer.presets import BERT, get_preset
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
    assert counts["lora-qkv"] == qv * 3 // 2 * 8 + head
    assert counts["head-only"] == head
    assert counts["full"] > counts["lora-r8-ffn"]


def test_last4_targets_only_the_last_layers() -> None:
    regex = get_preset("lora-r8-last4").target_regex(6, BERT)

    assert re.fullmatch(regex, "bert.encoder.layer.2.attention.self.query")
    assert not re.fullmatch(regex, "bert.encoder.layer.1.attention.self.query")
    ffn = get_preset("lora-r8-ffn").target_regex(6, BERT)
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
    table = read_json(js)["closed"]
    assert table["task"] == "closed"
    assert [r["preset"] for r in table["presets"]] == ["lora-r1", "full"]
    r1, full = table["presets"]
    assert r1["wall_s"] > 0 and r1["test_log_loss"] > 0
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


# -- architectures: peft module names per family, checked on tiny random models --------
# Written out by hand (not derived from presets.py), so a wrong pattern there fails here.
_BERT_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}
LAYER_NAMES: dict[str, tuple[str, dict[str, str]]] = {
    "bert": ("bert.encoder.layer", _BERT_NAMES),
    "roberta": ("roberta.encoder.layer", _BERT_NAMES),
    "xlm-roberta": ("roberta.encoder.layer", _BERT_NAMES),
    "electra": ("electra.encoder.layer", _BERT_NAMES),
    "distilbert": (
        "distilbert.transformer.layer",
        {
            "query": "attention.q_lin",
            "key": "attention.k_lin",
            "value": "attention.v_lin",
            "ffn_in": "ffn.lin1",
            "ffn_out": "ffn.lin2",
        },
    ),
}
_QV = ("query", "value")
# preset -> (roles it puts LoRA on, only the last N layers)
LORA_TARGETS: dict[str, tuple[tuple[str, ...], int | None]] = {
    "lora-r1": (_QV, None),
    "lora-r8": (_QV, None),
    "lora-r8-last4": (_QV, 4),
    "lora-r8-ffn": ((*_QV, "ffn_in", "ffn_out"), None),
    "lora-qkv": (("query", "key", "value"), None),
    "qlora": ((*_QV, "ffn_in", "ffn_out"), None),  # lora-r8-ffn's, over a 4-bit base
}
_SEQ_HEAD = {f"classifier.{m}.{p}" for m in ("dense", "out_proj") for p in ("weight", "bias")}
HEAD_PARAMETERS = {
    "bert": {"classifier.weight", "classifier.bias"},
    "distilbert": {
        f"{m}.{p}" for m in ("pre_classifier", "classifier") for p in ("weight", "bias")
    },
    "roberta": _SEQ_HEAD,
    "xlm-roberta": _SEQ_HEAD,
    "electra": _SEQ_HEAD,
}
TINY_LAYERS = 6  # more than 4, so lora-r8-last4 leaves some layers out


def tiny_model(model_type: str, layers: int = TINY_LAYERS, vocab: int = 64) -> object:
    """A random ``*ForSequenceClassification`` of ``model_type``, small enough to build per test."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if model_type == "distilbert":
        size = {"dim": 16, "n_layers": layers, "n_heads": 2, "hidden_dim": 32}
    else:
        size = {"hidden_size": 16, "num_hidden_layers": layers, "num_attention_heads": 2}
        size["intermediate_size"] = 32
        if model_type == "electra":
            size["embedding_size"] = 8  # adds electra.embeddings_project, a Linear to leave alone
    config = AutoConfig.for_model(
        model_type, vocab_size=vocab, max_position_embeddings=128, num_labels=2, **size
    )
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")


def _plain(name: str) -> str:
    """A peft parameter/module name as the plain model calls it."""
    return name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")


def expected_targets(model_type: str, preset: str, layers: int = TINY_LAYERS) -> set[str]:
    prefix, names = LAYER_NAMES[model_type]
    roles, last = LORA_TARGETS[preset]
    first = 0 if last is None else layers - last
    return {f"{prefix}.{i}.{names[r]}" for i in range(first, layers) for r in roles}


def test_every_lora_preset_and_architecture_is_covered_here() -> None:
    from bertrt.trainer import ARCHITECTURES

    assert {p.name for p in PRESETS.values() if p.is_lora} == set(LORA_TARGETS)
    assert {t for a in ARCHITECTURES for t in a.model_types} == set(LAYER_NAMES)


@pytest.mark.parametrize("model_type", sorted(LAYER_NAMES))
def test_lora_targets_are_exactly_the_intended_modules(model_type: str) -> None:
    """The regex against every module name, and what peft really wrapped, per LoRA preset."""

    from bertrt.trainer import architecture_for
    from bertrt.trainer.train import apply_preset

    architecture = architecture_for(model_type)
    for name in LORA_TARGETS:
        model = tiny_model(model_type)
        regex = get_preset(name).target_regex(TINY_LAYERS, architecture)
        matched = {n for n, _ in model.named_modules() if re.fullmatch(regex, n)}  # type: ignore[attr-defined]
        assert matched == expected_targets(model_type, name), (model_type, name)
        peft_model = apply_preset(model, get_preset(name))
        wrapped = {_plain(n) for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
        assert wrapped == expected_targets(model_type, name), (model_type, name)
        # Besides LoRA's A/B matrices, exactly the whole classification head trains.
        trainable = {_plain(n) for n, p in peft_model.named_parameters() if p.requires_grad}
        assert {n for n in trainable if "lora_" not in n} == HEAD_PARAMETERS[model_type]


def test_bert_presets_select_what_they_selected_before_architectures() -> None:
    """The regexes of the BERT-only presets.py, applied to every module name of a tiny BERT."""

    def old_regex(modules: str, last: int | None) -> str:
        first = 0 if last is None else max(0, TINY_LAYERS - last)
        layers = "|".join(str(i) for i in range(first, TINY_LAYERS))
        return rf".*encoder\.layer\.({layers})\.({modules})"

    qv, ffn = r"attention\.self\.(query|value)", r"intermediate\.dense|output\.dense"
    before = {
        "lora-r1": old_regex(qv, None),
        "lora-r8": old_regex(qv, None),
        "lora-r8-last4": old_regex(qv, 4),
        "lora-r8-ffn": old_regex(f"{qv}|{ffn}", None),
    }
    names = [n for n, _ in tiny_model("bert").named_modules()]  # type: ignore[attr-defined]
    for preset, regex in before.items():
        now = get_preset(preset).target_regex(TINY_LAYERS, BERT)
        assert {n for n in names if re.fullmatch(now, n)} == {
            n for n in names if re.fullmatch(regex, n)
        }, preset
    assert get_preset("lora-r8-ffn") == get_preset(load_config().train.preset)


@pytest.mark.parametrize("model_type", sorted(LAYER_NAMES))
def test_head_only_trains_the_whole_head_and_nothing_else(model_type: str) -> None:
    from bertrt.trainer.train import apply_preset, parameter_counts

    model = apply_preset(tiny_model(model_type), get_preset("head-only"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == HEAD_PARAMETERS[model_type]
    head = sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert parameter_counts(model)["trainable"] == head


def test_lora_qkv_and_head_only_presets() -> None:
    qkv = get_preset("lora-qkv")
    assert (qkv.trains, qkv.rank, qkv.alpha, qkv.roles) == (
        "lora",
        8,
        16,
        ("query", "key", "value"),
    )
    assert qkv.description == "LoRA r=8, alpha 16 on query, key, value"
    head = get_preset("head-only")
    assert head.trains == "head" and not head.is_lora and "head only" in head.description


def test_unknown_architecture_is_one_config_error_naming_the_supported(tmp_path: Path) -> None:
    from transformers import GPT2Config

    from bertrt.trainer.train import apply_preset, load_base

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)  # config.json only
    config = load_config(None, [f"model.base={tmp_path}"])
    with pytest.raises(ConfigError) as err:
        load_base(config, BINARY_LABELS)  # before any weights are read (there are none)
    message = str(err.value)
    assert "\n" not in message and "'gpt2'" in message and str(tmp_path) in message
    for family in ("BERT (bert)", "DistilBERT (distilbert)", "RoBERTa (roberta", "ELECTRA"):
        assert family in message
    fake = SimpleNamespace(config=SimpleNamespace(model_type="gpt2", name_or_path="x"))
    with pytest.raises(ConfigError, match="supports the BERT family"):
        apply_preset(fake, get_preset("full"))


# -- train.lora_rank / train.lora_alpha ---------------------------------------------------
def test_lora_rank_and_alpha_override_the_preset() -> None:
    from bertrt.trainer import resolve_preset

    config = load_config(None, ["train.preset=lora-qkv", "train.lora_rank=4"])
    assert config.train.lora_rank == 4 and config.train.lora_alpha is None
    preset = resolve_preset(config.train.preset, config.train.lora_rank, config.train.lora_alpha)
    assert (preset.name, preset.rank, preset.alpha) == ("lora-qkv", 4, 16)
    assert "r=4, alpha 16" in preset.description
    assert resolve_preset("lora-r1", None, 8).alpha == 8
    assert resolve_preset("lora-r8", None, None) == get_preset("lora-r8")


@pytest.mark.parametrize(
    ("preset", "rank", "alpha", "match"),
    [
        ("full", 4, None, r"train\.lora_rank=4: preset 'full' has no LoRA adapter.*lora-qkv"),
        ("head-only", None, 32, r"train\.lora_alpha=32: preset 'head-only' has no LoRA"),
        ("lora-r8", 0, None, r"train\.lora_rank=0: must be a positive integer"),
        ("lora-r8", None, -2, r"train\.lora_alpha=-2: must be a positive integer"),
    ],
)
def test_lora_rank_and_alpha_errors(
    preset: str, rank: int | None, alpha: int | None, match: str
) -> None:
    from bertrt.trainer import resolve_preset

    with pytest.raises(ConfigError, match=match):
        resolve_preset(preset, rank, alpha)


def test_lora_rank_on_full_stops_the_stage_before_training(tmp_path: Path, tiny_base: Path) -> None:
    config, run, _ = prepared_run(tmp_path, tiny_base, "train.preset=full", "train.lora_rank=4")
    with pytest.raises(ConfigError, match=r"train\.lora_rank=4"):
        stage.run(config, run)
    assert not run.merged.exists()
    with pytest.raises(ConfigError, match=r"train\.lora_rank"):
        load_config(None, ["train.lora_rank=four"])


# -- DistilBERT end to end: two inputs, pre_classifier head, head-only and overrides ------
@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A tiny random DistilBERT saved like a hub model, with the tiny BERT's tokenizer."""
    from bertrt.modeling import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-distilbert")
    tokenizer = load_tokenizer(tiny_base)
    model = tiny_model("distilbert", layers=2, vocab=tokenizer.vocab_size)
    model.save_pretrained(path)  # type: ignore[attr-defined]
    tokenizer.save_pretrained(path)
    return path


def test_head_only_on_distilbert_trains_the_head_and_merged_is_the_model(
    tmp_path: Path, tiny_distilbert: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, DistilBertForSequenceClassification

    config, run, _ = prepared_run(
        tmp_path, tiny_distilbert, "train.preset=head-only", "train.max_train_rows=40"
    )
    metrics = stage.run(config, run).report
    assert not run.adapter.exists() and metrics["adapter"] is None and metrics["lora"] is None
    assert metrics["trains"] == "head" and metrics["architecture"] == "DistilBERT"
    assert metrics["head_modules"] == ["pre_classifier", "classifier"]
    assert metrics["merge"]["applied"] is False and "head only" in metrics["merge"]["reason"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).state_dict()
    merged = AutoModelForSequenceClassification.from_pretrained(run.merged)
    assert type(merged) is DistilBertForSequenceClassification
    head = {n for n in base if n.startswith(("pre_classifier.", "classifier."))}
    assert head == HEAD_PARAMETERS["distilbert"]
    assert metrics["parameters"]["trainable"] == sum(base[n].numel() for n in head)
    after = merged.state_dict()
    assert all(torch.equal(base[n], after[n]) for n in base if n not in head)  # encoder frozen
    assert not all(torch.equal(base[n], after[n]) for n in head)  # the head trained


def test_lora_overrides_on_distilbert_are_recorded_and_merge(
    tmp_path: Path, tiny_distilbert: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    config, run, _ = prepared_run(
        tmp_path,
        tiny_distilbert,
        "train.preset=lora-qkv",
        "train.lora_rank=2",
        "train.lora_alpha=8",
        "train.max_train_rows=40",
    )
    metrics = stage.run(config, run).report
    lora = metrics["lora"]
    assert (lora["r"], lora["alpha"], lora["lora_rank"], lora["lora_alpha"]) == (2, 8, 2, 8)
    assert lora["modules_to_save"] == ["pre_classifier", "classifier"]
    assert "q_lin|" in lora["target_modules"] and "transformer" in lora["target_modules"]
    assert metrics["description"] == "LoRA r=2, alpha 8 on query, key, value"
    adapter = json.loads((run.adapter / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (2, 8)
    assert metrics["merge"]["applied"] and metrics["merge"]["ok"]  # two inputs, no token types
    merged = AutoModelForSequenceClassification.from_pretrained(run.merged)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    hidden, layers = 16, 2
    head = (hidden * hidden + hidden) + (hidden * 2 + 2)
    assert metrics["parameters"]["trainable"] == layers * 3 * (2 * hidden) * 2 + head


# -- a base that is nowhere --------------------------------------------------------------
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, also for the huggingface_hub already imported (it reads it at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_missing_hub_base_says_where_it_looked_and_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    from bertrt.errors import UnavailableError
    from bertrt.trainer.train import load_base

    _offline(monkeypatch)
    monkeypatch.chdir(tmp_path)
    name = "bertrt-tests/no-such-model-7f3e9"
    with pytest.raises(UnavailableError) as err:
        load_base(load_config(None, [f"model.base={name}"]), BINARY_LABELS)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"model.base={name!r}: no local directory {tmp_path / name}")
    assert f"hub id {name!r} not in the cache {constants.HF_HUB_CACHE}" in message
    assert "hub not asked (HF_HUB_OFFLINE=1)" in message
    assert f"hf download {name} --local-dir DIR" in message
    assert f"huggingface-cli download {name} --local-dir DIR" in message
    assert message.endswith("then --set model.base=DIR")
    assert isinstance(err.value.__cause__, OSError)
    with pytest.raises(UnavailableError, match=r"models/my bert, and not a hub id"):
        load_base(load_config(None, ["model.base=./models/my bert"]), BINARY_LABELS)


def test_local_directory_that_is_not_a_model_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bertrt.errors import UnavailableError
    from bertrt.trainer.train import load_base

    _offline(monkeypatch)
    with pytest.raises(
        UnavailableError, match=re.escape(f"{tmp_path} is a directory but not a model")
    ):
        load_base(load_config(None, [f"model.base={tmp_path}"]), BINARY_LABELS)


# -- per-epoch metrics --------------------------------------------------------------------
def test_epoch_metrics_report_accuracy_f1_and_macro_f1() -> None:
    import numpy as np

    from bertrt.trainer import train

    # Predicted [0, 1] for true [0, 0]: class 1 never right, class 0 half found.
    pred = SimpleNamespace(
        predictions=np.array([[2.0, 0.0], [0.0, 1.0]]), label_ids=np.array([0, 0])
    )
    metrics = train._compute_metrics(pred)
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "macro_f1"}
    assert metrics["accuracy"] == 0.5
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 0.0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


# -- scripts/preset_table.py: one table per task ------------------------------------------
def load_preset_table() -> object:
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "preset_table", REPO / "scripts" / "preset_table.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _old_row(preset: str) -> dict[str, object]:
    """A row as the single-task script wrote it (no macro-F1, log loss or wall time)."""
    return {
        "preset": preset,
        "description": "LoRA r=8 on query and value",
        "test_accuracy": 0.61,
        "test_loss": 0.6369,
        "test_f1_closed": 0.2292,
        "val_accuracy": 0.612,
        "trainable": 74498,
        "total": 22788484,
        "trainable_percent": 0.3269,
        "seconds_per_epoch": 43.18,
        "train_samples_per_s": 46.3,
        "epochs": 1,
        "rows": {"train": 2000, "val": 500, "test": 500},
        "device": {"type": "cpu", "name": "AMD EPYC", "threads": 2, "precision": "bf16-autocast"},
    }


def _train_metrics(preset: str, task: str) -> dict[str, object]:
    """A train_metrics.json as the stage writes it, with the metrics module's macro_f1."""
    return {
        "preset": preset,
        "description": get_preset(preset).description,
        "trains": get_preset(preset).trains,
        "architecture": "BERT",
        "lora": None,
        "parameters": {"trainable": 1234, "total": 100000, "trainable_percent": 1.234},
        "epochs": [{"epoch": 1, "val_accuracy": 0.5}],
        "best_epoch": 1,
        "test": {"accuracy": 0.75, "loss": 0.61, "log_loss": 0.62, "f1": 0.7, "macro_f1": 0.6789},
        "seconds_per_epoch": 12.34,
        "wall_s": 56.78,
        "train_samples_per_s": 9.9,
        "rows": {"train": 8, "val": 4, "test": 4},
        "device": {"type": "cpu", "name": "test cpu", "threads": 2, "precision": "fp32"},
        "peak_memory": {"kind": "rss_peak", "mib": 1234.5, "since": "training start"},
        "task_seen": task,
    }


def test_preset_table_migrates_the_single_task_file_and_keeps_other_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--task close-reason adds its table next to the migrated closed one; no training."""
    script = load_preset_table()
    md, js = tmp_path / "presets.md", tmp_path / "presets.json"
    header = {"command": "python scripts/preset_table.py --data x.csv", "date": "2026-11-23"}
    header |= {"base_model": "minilm", "max_length": 128, "seed": 42, "epochs": 1}
    header |= {"batch_size": 32, "learning_rate": 0.001, "data": "/x.csv"}
    js.write_text(json.dumps({**header, "presets": [_old_row("lora-r8")]}))
    assert list(script.load_tables(js)) == ["closed"]  # type: ignore[attr-defined]
    assert script.load_tables(js)["closed"]["presets"][0]["preset"] == "lora-r8"  # type: ignore[attr-defined]

    tasks_seen: list[str] = []

    def fake_data(config: Config, run: RunDir) -> None:
        tasks_seen.append(config.data.task)

    def fake_train(config: Config, run: RunDir) -> SimpleNamespace:
        metrics = _train_metrics(config.train.preset, config.data.task)
        return SimpleNamespace(report=metrics, summary="")

    monkeypatch.setattr(script.data_stage, "run", fake_data)  # type: ignore[attr-defined]
    monkeypatch.setattr(script.train_stage, "run", fake_train)  # type: ignore[attr-defined]
    argv = ["--data", "x.csv", "--markdown", str(md), "--json", str(js)]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--presets", "head-only,lora-qkv"]
    assert script.main([*argv, "--task", "close-reason"]) == 0  # type: ignore[attr-defined]
    assert tasks_seen == ["close-reason", "close-reason"]
    tables = read_json(js)
    assert list(tables) == ["closed", "close-reason"]
    assert tables["closed"]["presets"] == [_old_row("lora-r8")]
    reason = tables["close-reason"]
    assert reason["task"] == "close-reason" and "--task close-reason" in reason["command"]
    assert [r["preset"] for r in reason["presets"]] == ["head-only", "lora-qkv"]
    assert reason["presets"][0]["test_macro_f1"] == 0.6789
    text = md.read_text()
    assert text.index("## Task `closed`") < text.index("## Task `close-reason`")
    # old row: no peak memory, macro-F1 or wall time recorded, its training loss as log loss
    assert (
        "| lora-r8 | LoRA r=8 on query and value | 74,498 | 0.33% | - | 43.2 | - | 0.6100 | - "
        "| 0.6369 |" in text
    )
    head = get_preset("head-only").description
    assert (
        f"| head-only | {head} | 1,234 | 1.23% | 1,234 | 12.3 | 56.8 | 0.7500 | 0.6789 | 0.6200 |"
        in text
    )

    assert script.main(argv) == 0  # type: ignore[attr-defined]  # closed again: replaced, reason kept
    tables = read_json(js)
    assert list(tables) == ["closed", "close-reason"] and tasks_seen[-1] == "closed"
    assert [r["preset"] for r in tables["closed"]["presets"]] == ["head-only", "lora-qkv"]
    assert tables["close-reason"] == reason
    assert md.read_text().count("## Task ") == 2

    # --name: a second table of a task (a few presets compared) next to the task's own
    assert script.main([*argv, "--name", "closed-qlora"]) == 0  # type: ignore[attr-defined]
    tables = read_json(js)
    assert list(tables) == ["closed", "close-reason", "closed-qlora"]
    assert tables["closed-qlora"]["task"] == "closed" and tables["close-reason"] == reason
    assert "## Task `closed`: open vs closed (2 classes) — `closed-qlora`" in md.read_text()


def test_online_hub_failure_keeps_the_hubs_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from bertrt.trainer.hub import unavailable_message

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    message = unavailable_message("org/gated", "org/gated", OSError("401:\nthis repo is gated"))
    assert f"not served by the hub at {constants.ENDPOINT} (OSError: 401: this repo is gated)" in (
        message
    )
    assert "hf download org/gated --local-dir DIR" in message and "\n" not in message


def test_training_says_its_precision_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU without native bf16 trains in fp32, about twice as slow: said before it starts."""
    from bertrt.trainer import train as train_module

    monkeypatch.setattr(train_module, "cpu_name", lambda: "Some Xeon")
    monkeypatch.setattr(train_module, "cpu_flags", lambda: ["avx512_vnni"])
    line = train_module.precision_reason("fp32", cuda=False)
    assert "fp32" in line and "no native bf16" in line and "max_train_rows" in line
    monkeypatch.setattr(train_module, "cpu_flags", lambda: ["amx_bf16", "avx512_bf16"])
    assert "amx_bf16, avx512_bf16" in train_module.precision_reason("bf16", cuda=False)


def test_rows_tokenized_in_chunks_are_the_rows_of_one_call(
    tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunking bounds the tokenizer's memory; it must not change a single token."""
    import pandas as pd

    from bertrt.modeling import load_tokenizer
    from bertrt.trainer import train

    tokenizer = load_tokenizer(tiny_base)
    frame = pd.DataFrame({"text": [f"row {i} " + "word " * (i % 40) for i in range(7)]})
    frame["label"] = [i % 2 for i in range(7)]
    names = ("input_ids", "token_type_ids", "attention_mask")
    whole = train.TokenizedRows(tokenizer, frame, 16, names).rows
    monkeypatch.setattr(train, "TOKENIZE_CHUNK", 3)  # 3 + 3 + 1 rows
    assert train.TokenizedRows(tokenizer, frame, 16, names, sort=False).rows == whole
    encoded = tokenizer(list(frame["text"]), truncation=True, max_length=16)
    assert [row["input_ids"] for row in whole] == encoded["input_ids"]


def test_training_gives_freed_memory_back_every_hundred_steps_and_after_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bertrt.trainer import memory

    calls: list[int] = []
    monkeypatch.setattr(memory, "give_back_freed_memory", lambda: calls.append(1))
    giver = memory.heap_giver(every_steps=100)
    for step in range(1, 301):
        giver.on_step_end(None, SimpleNamespace(global_step=step), None)
    assert len(calls) == 3  # steps 100, 200, 300
    giver.on_evaluate(None, SimpleNamespace(global_step=300), None)
    assert len(calls) == 4

"""``--preset qlora`` on a tiny random BERT: a 4-bit NF4 base under LoRA, merged into fp32.

Needs bitsandbytes (0.50 runs NF4 forward and backward on the CPU); skips,
saying why, where it is absent or cannot run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bertrt.artifacts import RunDir, read_json
from bertrt.config import Config, load_config
from bertrt.data import stage as data_stage
from bertrt.errors import UnavailableError
from bertrt.trainer import qlora, stage
from bertrt.trainer.presets import get_preset, resolve_preset
from tests.conftest import synthetic_rows, write_csv

WHY = qlora.unavailable("cpu")
needs_nf4 = pytest.mark.skipif(WHY is not None, reason=f"no 4-bit NF4 training here: {WHY}")


def _config(base: Path, csv: Path, *extra: str) -> Config:
    return load_config(
        None,
        [f"model.base={base}", f"data.csv={csv}", "model.max_length=32", "train.epochs=1",
         "train.batch_size=8", "train.eval_batch_size=16", "train.max_train_rows=48",
         "train.preset=qlora", *extra],
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> tuple[Config, RunDir]:
    if WHY is not None:
        pytest.skip(f"no 4-bit NF4 training here: {WHY}")
    tmp = tmp_path_factory.mktemp("qlora")
    config = _config(tiny_base, write_csv(tmp / "train-sample.csv", synthetic_rows(160)))
    run = RunDir(tmp / "run")
    data_stage.run(config, run)
    stage.run(config, run)
    return config, run


def test_qlora_is_lora_r8_ffn_over_a_4bit_base_unless_set() -> None:
    qlora_preset, ffn = get_preset("qlora"), get_preset("lora-r8-ffn")
    assert (qlora_preset.rank, qlora_preset.alpha, qlora_preset.roles) == (
        ffn.rank,
        ffn.alpha,
        ffn.roles,
    )
    assert qlora_preset.quantized and not ffn.quantized and qlora_preset.is_lora
    assert qlora_preset.description.endswith("over a 4-bit NF4 base (QLoRA)")
    assert resolve_preset("qlora", 4, 8).rank == 4 and resolve_preset("qlora", 4, 8).quantized


def test_the_base_is_nf4_with_double_quantization_and_the_head_full(tiny_base: Path) -> None:
    from bertrt.trainer.presets import BERT

    config = qlora.quantization_config("bf16", BERT)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert config.llm_int8_skip_modules == ["classifier"]


@needs_nf4
def test_qlora_run_records_the_merge_check_and_peak_memory(trained: tuple[Config, RunDir]) -> None:
    config, run = trained
    metrics = read_json(run.train_metrics)
    merge = metrics["merge"]
    assert metrics["preset"] == "qlora" and merge["applied"] and merge["ok"]
    assert merge["into"].startswith("the dequantized NF4 base") and merge["dtype"] == "fp32"
    assert merge["max_abs_diff"] <= merge["tolerance"] == config.train.merge_tolerance
    assert 0 <= merge["accuracy_4bit"] <= 1 and 0 <= merge["accuracy"] <= 1
    assert merge["rows"] == metrics["rows"]["val"]
    # Merging into the weights the adapter never saw moves the logits more than the
    # dequantized merge does (the NF4 rounding of every base weight).
    assert merge["into_original_weights"]["max_abs_diff"] > merge["max_abs_diff"]
    peak = metrics["peak_memory"]
    assert peak["kind"] == "rss_peak" and peak["since"] == "training start"
    assert peak["mib"] >= peak["start_mib"] > 0
    assert (run.adapter / "adapter_config.json").is_file()


@needs_nf4
def test_merged_model_is_plain_fp32_and_reproduces_the_4bit_model(
    trained: tuple[Config, RunDir],
) -> None:
    """Independently of the stage's own check: the saved adapter on a freshly loaded 4-bit
    base gives the merged/ model's logits."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from bertrt.data.labels import run_labels
    from bertrt.trainer.train import load_base

    config, run = trained
    merged = AutoModelForSequenceClassification.from_pretrained(run.merged)
    assert qlora.quantized_layers(merged) == 0
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    base, tokenizer, _ = load_base(config, run_labels(run), "fp32")
    assert qlora.quantized_layers(base) > 0
    # What training computed: dequantize, then matmul (not bitsandbytes' bf16 CPU kernel).
    quantized = PeftModel.from_pretrained(qlora.keep_training_layout(base), str(run.adapter))
    batch = tokenizer(
        ["why does my code crash with an index error", "best book to learn sql?"],
        padding=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        expected = _logits(quantized, batch)
        got = _logits(merged, batch)
    np.testing.assert_allclose(got, expected, atol=config.train.merge_tolerance)


def _logits(model: Any, batch: Any) -> np.ndarray:
    model.eval()
    return model(**batch).logits.float().numpy()


def test_qlora_where_bitsandbytes_cannot_run_is_one_line_exit_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_base: Path
) -> None:
    monkeypatch.setattr(qlora, "unavailable", lambda device: f"no NF4 on {device} (test)")
    config = _config(tiny_base, write_csv(tmp_path / "train-sample.csv", synthetic_rows(40)))
    run = RunDir(tmp_path / "run")
    data_stage.run(config, run)
    with pytest.raises(UnavailableError) as err:
        stage.run(config, run)
    assert err.value.exit_code == 3
    assert str(err.value) == "train.preset=qlora: no NF4 on cpu (test)"
    assert not run.train_metrics.exists()


def test_unavailable_says_when_bitsandbytes_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_bnb(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    assert qlora.unavailable("cpu") == (
        "bitsandbytes is not installed (No module named 'bitsandbytes'); "
        "pip install 'bertrt[qlora]'"
    )


@needs_nf4
def test_a_4bit_layer_trains_after_an_evaluation() -> None:
    """The Trainer evaluates between epochs; on an AVX512-BF16 CPU bitsandbytes then repacked
    the weights for its inference kernel, and the next training step had no backward."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(128, 64, compute_dtype=torch.bfloat16, quant_type="nf4")
    model = qlora.keep_training_layout(torch.nn.Sequential(layer.to("cpu")))
    x = torch.randn(4, 128)

    def input_grad() -> torch.Tensor:
        model.train()
        xs = x.clone().requires_grad_(True)
        model(xs).float().sum().backward()
        assert xs.grad is not None
        return xs.grad

    before = input_grad()
    model.eval()
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(input_grad(), before)

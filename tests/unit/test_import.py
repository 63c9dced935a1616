"""`bertrt import`: a classifier trained elsewhere through the pipeline, labelled or not.

Tiny random models of each architecture, saved with ``save_pretrained``, go
through import -> export -> calibrate -> evaluate (a labelled file) and
import -> export -> calibrate -> bench --quick (an unlabelled one); a peft
adapter is merged with the train stage's parity check; and each source the
pipeline cannot take stops with one line, the right exit code and nothing
written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertrt.artifacts import RunDir, read_json
from bertrt.cli import main
from bertrt.config import load_config
from bertrt.modeling import encode, load_tokenizer, resolve_base_model
from tests.conftest import synthetic_rows, write_csv
from tests.unit.test_architectures import save_tiny

# Small everything: 120 rows, short verification, two quick CPU candidates.
SMALL = [
    "model.max_length=64",
    "export.verify_batch_sizes=[1,3]",
    "export.verify_seq_lengths=[8,64]",
    "export.verify_rows=8",
    "calibration.rows=16",
    "calibration.batch_size=8",
    "calibration.cpu_candidates=[static-u8s8,fp32-opt]",
]
SETS = [arg for item in SMALL for arg in ("--set", item)]


def _cli(*args: str) -> int:
    return main([*args, *SETS])


def _generic(path: Path, rows: int, labels: list[str] | None) -> Path:
    """A CSV with a ``text`` column (and ``label`` when labels are given) of synthetic rows."""
    source = synthetic_rows(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"] if labels else ["text"])
        for i, row in enumerate(source):
            text = f"{row['Title']} {row['BodyMarkdown']}"
            writer.writerow([text, labels[i % len(labels)]] if labels else [text])
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def kaggle_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("kaggle") / "train-sample.csv", synthetic_rows(120))


# -- labelled: each architecture through evaluate ---------------------------------
@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta", "electra"])
def test_import_export_calibrate_evaluate(
    arch: str, kaggle_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save_tiny(arch, tmp_path / "model")
    run = RunDir(tmp_path / "run")
    code = _cli(
        "import", "--model", str(source), "--data", str(kaggle_csv), "--labels", "open,closed",
        "--run-dir", str(run.root),
    )  # fmt: skip
    assert code == 0
    record = read_json(run.manifest_path)["stages"]["import"]
    assert record["extra"]["kind"] == "directory" and record["extra"]["model_type"] == arch
    assert list(record["extra"]["weights_sha256"]) == ["model.safetensors"]
    assert record["extra"]["labels"] == ["open", "closed"]
    config = json.loads((run.merged / "config.json").read_text())
    assert config["id2label"] == {"0": "open", "1": "closed"}
    for stage in ("export", "calibrate"):
        assert _cli(stage, "--run-dir", str(run.root)) == 0
    capsys.readouterr()
    scores = {}
    for model in ("merged", "onnx-fp32", "onnx-int8", "cpu"):
        assert (
            _cli(
                "evaluate",
                "--run-dir",
                str(run.root),
                "--data",
                str(kaggle_csv),
                "--model",
                model,
                "--json",
            )
            == 0
        )
        scores[model] = json.loads(capsys.readouterr().out)
    assert scores["merged"]["n"] == 120
    assert scores["onnx-fp32"]["accuracy"] == scores["merged"]["accuracy"]
    cpu = read_json(run.cpu_choice)
    assert cpu["rule"]["name"] == "accuracy"


def test_import_splits_exactly_as_bertrt_data(kaggle_csv: Path, tmp_path: Path) -> None:
    source = save_tiny("bert", tmp_path / "model")
    data_run, import_run = tmp_path / "data-run", tmp_path / "import-run"
    assert main(["data", "--data", str(kaggle_csv), "--run-dir", str(data_run)]) == 0
    assert (
        main(
            [
                "import",
                "--model",
                str(source),
                "--data",
                str(kaggle_csv),
                "--labels",
                "open,closed",
                "--run-dir",
                str(import_run),
            ]
        )
        == 0
    )
    assert (import_run / "split.json").read_bytes() == (data_run / "split.json").read_bytes()


def test_imported_logits_are_the_sources(tmp_path: Path) -> None:
    """merged/ computes what the source computes, and keeps the model's class names."""
    from transformers import AutoModelForSequenceClassification

    source = save_tiny("distilbert", tmp_path / "model", num_labels=3)
    data = _generic(tmp_path / "data.csv", 90, ["a", "b", "c"])
    assert (
        main(["import", "--model", str(source), "--data", str(data), "--text-column", "text",
              "--label-column", "label", "--labels", "a,b,c", "--run-dir", str(tmp_path / "r")])
        == 0
    )  # fmt: skip
    tokenizer = load_tokenizer(source)
    batch = encode(tokenizer, ["how do i join two tables", "best book"], 32)
    inputs = {k: v for k, v in batch.items() if k != "token_type_ids"}
    logits = [
        _logits(AutoModelForSequenceClassification.from_pretrained(str(path)), inputs)
        for path in (source, tmp_path / "r" / "merged")
    ]
    np.testing.assert_array_equal(logits[0], logits[1])
    assert read_json(tmp_path / "r" / "split.json")["labels"] == ["a", "b", "c"]


def _logits(model: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()


# -- unlabelled: export, calibrate, bench; evaluate refuses --------------------------
def test_unlabelled_import_calibrates_and_benches_by_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save_tiny("bert", tmp_path / "model")
    data = _generic(tmp_path / "texts.csv", 120, None)
    run = RunDir(tmp_path / "run")
    assert (
        _cli(
            "import",
            "--model",
            str(source),
            "--data",
            str(data),
            "--text-column",
            "text",
            "--run-dir",
            str(run.root),
        )
        == 0
    )
    split = read_json(run.split)
    assert split["source"]["label_column"] is None and split["labels"] == ["LABEL_0", "LABEL_1"]
    assert {k: sum(v.values()) for k, v in split["counts"].items()} == {
        "train": 96,
        "val": 12,
        "test": 12,
    }
    assert _cli("export", "--run-dir", str(run.root)) == 0
    assert _cli("calibrate", "--run-dir", str(run.root)) == 0
    cpu = read_json(run.cpu_choice)
    assert cpu["rule"]["name"] == "agreement" and cpu["rule"]["min_agreement"] == 0.99
    assert all(c["val_accuracy"] is None for c in cpu["candidates"].values())
    assert cpu["candidates"]["fp32-opt"]["agreement"] == 1.0
    report = read_json(run.calibration_dir / "report.json")
    assert report["fp32_val_accuracy"] is None and "no labels" in report["accuracy"]
    assert "val_agreement" in report["int8"] and "val_accuracy" not in report["int8"]
    capsys.readouterr()
    code = _cli("evaluate", "--run-dir", str(run.root), "--data", str(data), "--model", "merged")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no accuracy" in err
    bench = [
        "--quick",
        "--set",
        "bench.backends=[torch/fp32/cpu,onnxruntime/fp32/cpu,onnxruntime/cpu/cpu]",
        "--set",
        "bench.latency_budget_s=2",
    ]
    assert _cli("bench", "--run-dir", str(run.root), *bench) == 0
    results = read_json(run.bench_dir / "results.json")
    rows = {r["backend"]: r for r in results["accuracy"]}
    assert rows["torch/fp32/cpu"]["accuracy"] is None
    assert rows["onnxruntime/fp32/cpu"]["agreement"] == 1.0
    assert rows["onnxruntime/fp32/cpu"]["max_abs_diff"] < 1e-4
    markdown = (run.bench_dir / "results.md").read_text()
    assert "has no labels" in markdown
    assert not (run.bench_dir / "accuracy_vs_throughput.png").exists()


# -- a peft adapter --------------------------------------------------------------------
def _adapter(tmp_path: Path, classes: int) -> Path:
    """A LoRA adapter (non-zero B, its own 3-class head) over a tiny plain BertModel base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    tokenizer = load_tokenizer(resolve_base_model("minilm"))
    base_dir = tmp_path / "base"
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    model = BertForSequenceClassification.from_pretrained(str(base_dir), num_labels=classes)
    lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    return adapter


def test_adapter_is_merged_and_verified(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, 3)
    data = _generic(tmp_path / "data.csv", 90, ["x", "y", "z"])
    run = RunDir(tmp_path / "run")
    code = main(
        ["import", "--model", str(adapter), "--data", str(data), "--text-column", "text",
         "--label-column", "label", "--labels", "x,y,z", "--run-dir", str(run.root)]
    )  # fmt: skip
    assert code == 0
    extra = read_json(run.manifest_path)["stages"]["import"]["extra"]
    assert extra["kind"] == "adapter" and extra["base"] == str(tmp_path / "base")
    assert extra["merge"]["applied"] and extra["merge"]["ok"] and extra["merge"]["rows"] == 9
    assert list(extra["weights_sha256"]) == ["adapter_model.safetensors"]
    merged = json.loads((run.merged / "config.json").read_text())
    assert merged["id2label"] == {"0": "x", "1": "y", "2": "z"}
    assert not any("lora" in k for k in _tensor_names(run.merged / "model.safetensors"))


def test_an_adapter_failing_the_merge_check_writes_no_merged_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = _adapter(tmp_path, 2)
    data = _generic(tmp_path / "data.csv", 60, ["x", "y"])
    run = RunDir(tmp_path / "run")
    capsys.readouterr()
    code = main(
        ["import", "--model", str(adapter), "--data", str(data), "--text-column", "text",
         "--label-column", "label", "--labels", "x,y", "--run-dir", str(run.root),
         "--set", "train.merge_tolerance=-1"]
    )  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' load report
    assert code == 6 and last.startswith("bertrt import: error: import: merged model's logits")
    assert not run.merged.exists() and "import" not in read_json(run.manifest_path)["stages"]


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as tensors:
        return list(tensors.keys())


# -- what is refused: one line, the right code, nothing written ----------------------
def _refused(capsys: pytest.CaptureFixture[str], run: Path, args: list[str], code: int) -> str:
    capsys.readouterr()
    assert main([*args, "--run-dir", str(run)]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert _files(run) == []
    return err


def test_unsupported_architecture_is_one_line_exit_2(
    kaggle_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    source = tmp_path / "gpt2"
    GPT2ForSequenceClassification(
        GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100, n_positions=32)
    ).save_pretrained(source)
    err = _refused(
        capsys, tmp_path / "run", ["import", "--model", str(source), "--data", str(kaggle_csv)], 2
    )
    assert "'gpt2'" in err and "BERT (bert)" in err and "ELECTRA (electra)" in err


def test_a_model_without_a_classification_head_is_refused(
    kaggle_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import DistilBertConfig, DistilBertModel

    tokenizer = load_tokenizer(resolve_base_model("minilm"))
    source = tmp_path / "encoder"
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=16, n_layers=1, n_heads=2)
    DistilBertModel(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    args = ["import", "--model", str(source), "--data", str(kaggle_csv)]
    err = _refused(capsys, tmp_path / "run", args, 2)
    assert "DistilBertModel without a sequence classification head" in err


def test_pickle_only_is_refused_unless_trusted(
    kaggle_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    source = save_tiny("bert", tmp_path / "model")
    model = AutoModelForSequenceClassification.from_pretrained(str(source))
    torch.save(model.state_dict(), source / "pytorch_model.bin")
    (source / "model.safetensors").unlink()
    args = ["import", "--model", str(source), "--data", str(kaggle_csv), "--labels", "open,closed"]
    err = _refused(capsys, tmp_path / "run", args, 2)
    assert "pytorch_model.bin" in err and "--trust-pickle" in err
    assert main([*args, "--trust-pickle", "--run-dir", str(tmp_path / "trusted")]) == 0
    extra = read_json(tmp_path / "trusted" / "manifest.json")["stages"]["import"]["extra"]
    assert extra["pickle"] is True and list(extra["weights_sha256"]) == ["pytorch_model.bin"]


def test_a_label_the_model_does_not_know_is_named_with_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save_tiny("bert", tmp_path / "model")
    data = _generic(tmp_path / "data.csv", 30, ["a", "b", "c"])  # row 3 has "c"
    args = ["import", "--model", str(source), "--data", str(data), "--text-column", "text",
            "--label-column", "label", "--labels", "a,b"]  # fmt: skip
    err = _refused(capsys, tmp_path / "run", args, 1)
    assert "data row 3" in err and "'c'" in err and "not a class of this model" in err


def test_kaggle_file_needs_the_tasks_classes(
    kaggle_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save_tiny("bert", tmp_path / "model")
    args = ["import", "--model", str(source), "--data", str(kaggle_csv)]
    err = _refused(capsys, tmp_path / "run", args, 2)
    assert "LABEL_0, LABEL_1" in err and "--labels open,closed" in err
    err = _refused(capsys, tmp_path / "run", [*args, "--labels", "a,b,c"], 2)
    assert "3 classes" in err


def test_hub_id_from_the_cache_records_its_revision(
    kaggle_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id resolves through huggingface_hub's cache (offline here): id and commit recorded."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny-bert"
    save_tiny("bert", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    run = tmp_path / "run"
    args = ["import", "--model", "org/tiny-bert", "--data", str(kaggle_csv)]
    assert main([*args, "--labels", "open,closed", "--run-dir", str(run)]) == 0
    extra = read_json(run / "manifest.json")["stages"]["import"]["extra"]
    assert extra["kind"] == "hub" and extra["source"] == "org/tiny-bert"
    assert extra["revision"] == commit


def test_missing_hub_model_is_one_line_exit_3(
    kaggle_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    args = ["import", "--model", "org/absent", "--data", str(kaggle_csv)]
    err = _refused(capsys, tmp_path / "run", args, 3)
    assert "org/absent" in err and "--model DIR" in err


# -- the producer of merged/ ------------------------------------------------------------
def test_later_stages_take_merged_from_whichever_stage_wrote_it_last(tmp_path: Path) -> None:
    from bertrt.errors import StaleArtifactError

    run = RunDir(tmp_path)
    run.merged.mkdir(parents=True)
    (run.merged / "w").write_text("trained")
    run.record("train", inputs=[], outputs=[run.merged], wall_s=0.0)
    run.require("export", [run.merged], producer="train")
    (run.merged / "w").write_text("imported")
    manifest = read_json(run.manifest_path)
    run.record("import", inputs=[], outputs=[run.merged], wall_s=0.0)
    manifest = read_json(run.manifest_path)
    manifest["stages"]["import"]["finished"] = "9999-01-01T00:00:00+00:00"
    run.manifest_path.write_text(json.dumps(manifest))
    run.require("export", [run.merged], producer="train")  # import's record is current
    (run.merged / "w").write_text("changed")
    with pytest.raises(StaleArtifactError, match="bertrt import"):
        run.require("export", [run.merged], producer="train")


def test_load_config_knows_min_agreement() -> None:
    assert load_config(None, ["min_agreement=0.95"]).min_agreement == 0.95

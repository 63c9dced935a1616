"""`bertrt qat`: ModelOpt INT8 Q/DQ models on a tiny random BERT, and the install they need."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertrt.artifacts import RunDir, read_json
from bertrt.cli import main
from tests.conftest import make_trained_run

needs_modelopt = pytest.mark.skipif(
    importlib.util.find_spec("modelopt") is None,
    reason="nvidia-modelopt is not installed (pip install -e '.[qat]')",
)
TINY = [
    "calibration.rows=32",
    "calibration.batch_size=8",
    "qat.steps=4",
    "qat.eval_every=2",
    "qat.eval_rows=40",
    "qat.batch_size=8",
    "export.verify_rows=16",
    "export.verify_batch_sizes=[1,4]",
    "export.verify_seq_lengths=[16,64]",
]


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@needs_modelopt
def test_the_qat_extra_keeps_the_cpu_onnxruntime() -> None:
    """modelopt's own [onnx] extra would swap in onnxruntime-gpu; the qat extra must not."""
    if _installed("tensorrt"):
        pytest.skip("the TensorRT image installs onnxruntime-gpu on purpose (Dockerfile.trt)")
    import onnxruntime

    assert _installed("onnxruntime")
    assert not _installed("onnxruntime-gpu")
    assert "CPUExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    if importlib.util.find_spec("modelopt") is None:
        pytest.skip("nvidia-modelopt is not installed (pip install -e '.[qat]')")
    run = make_trained_run(tmp_path_factory.mktemp("qat"), tiny_base, rows=240)
    args = ["qat", "--run-dir", str(run.root), *(a for s in TINY for a in ("--set", s))]
    assert main(args) == 0
    return run


def _qdq_counts(path: Path) -> dict[str, int]:
    import onnx

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    return {op: ops.count(op) for op in ("QuantizeLinear", "DequantizeLinear", "MatMul")}


@needs_modelopt
@pytest.mark.parametrize("variant", ["mtq-int8", "qat"])
def test_qat_writes_qdq_onnx_with_dynamic_axes(qat_run: RunDir, variant: str) -> None:
    import onnx

    path = qat_run.onnx(variant)
    counts = _qdq_counts(path)
    # 2 layers x 6 Linear + pooler + classifier: an input and a weight Q/DQ each.
    assert counts["QuantizeLinear"] == counts["DequantizeLinear"] == 2 * (2 * 6 + 2)
    for graph_input in onnx.load(str(path)).graph.input:
        dims = [d.dim_param for d in graph_input.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], graph_input.name


@needs_modelopt
def test_qat_records_the_stage_and_its_checks(qat_run: RunDir) -> None:
    report = read_json(qat_run.qat_report)
    assert report["quantizers"] == {"weight": 14, "input": 14, "attention": 0}
    assert report["mtq-int8"]["tensorrt_check"]["qdq"]["per_channel_weights"] == 14
    for variant in ("mtq-int8", "qat"):  # the tolerance is a share of the logits' range
        parity = report[variant]["parity"]
        assert parity["limit"] == pytest.approx(parity["tolerance"] * parity["logit_range"])
        assert parity["logit_range"] > 0 and parity["max_abs_diff"] <= parity["limit"]
        assert {"argmax_flips", "max_abs_diff"} <= set(parity["cases"][0])
    history = report["qat"]["history"]
    assert [h["step"] for h in history] == [0, 2, 4]
    best = max(history, key=lambda h: (h["accuracy"], -h["loss"]))
    assert report["qat"]["best"]["accuracy"] == best["accuracy"]
    stages = qat_run.read_manifest()["stages"]
    assert {qat_run.rel(qat_run.onnx("qat")), qat_run.rel(qat_run.onnx("mtq-int8"))} <= set(
        stages["qat"]["outputs"]
    )


def _calibrated_torch_model(run: RunDir, attention: bool = False) -> tuple[Any, Any, list[str]]:
    """The post-training model the stage exported, rebuilt the way the stage builds it."""
    from bertrt.calibration.reader import calibration_texts, tokenized_batches
    from bertrt.data import load_split
    from bertrt.export.onnx_export import load_torch_model
    from bertrt.modeling import load_tokenizer
    from bertrt.qat.quantize import quantize

    splits = load_split(run, ("train", "val"))
    tokenizer = load_tokenizer(run.merged)
    model = load_torch_model(run.merged)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    texts = calibration_texts(splits["train"], 32, 8, 42)
    with contextlib.redirect_stdout(sys.stderr):
        quantize(model, tokenized_batches(tokenizer, texts, 8, 128, names), attention)
    return model, tokenizer, splits["val"]["text"].tolist()


@needs_modelopt
def test_qdq_onnx_logits_match_the_fake_quantized_model(qat_run: RunDir) -> None:
    """ONNX Runtime on the Q/DQ graph against the torch model with ModelOpt's fake quantization.

    Tolerance: torch rounds x*(127/amax), QuantizeLinear x/(amax/127); about one
    value in 10^7 falls a float ulp on the other side of a rounding boundary
    and moves one INT8 step (docs/qat.md), which MiniLM's millions of activations a row
    meet and this model's few thousand rarely do. Here the logits are ~0.02
    and the gap measured 5e-9; 1e-4 (0.5 % of a logit) leaves room for another
    CPU's kernels flipping a value, and fails a wrong scale or axis.
    """
    import torch

    from bertrt.modeling import encode
    from bertrt.ort_sessions import cpu_session

    model, tokenizer, texts = _calibrated_torch_model(qat_run)
    session = cpu_session(qat_run.onnx("mtq-int8"))
    for size, seq in ((1, 16), (8, 64)):
        batch = encode(tokenizer, texts[:size], seq, "max_length")
        feed = {i.name: batch[i.name] for i in session.get_inputs()}
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        got = session.run(["logits"], feed)[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@needs_modelopt
def test_attention_option_quantizes_the_attention_matmul_inputs(
    tmp_path: Path, tiny_base: Path
) -> None:
    from bertrt.config import load_config
    from bertrt.modeling import load_tokenizer
    from bertrt.qat.export import export_qdq
    from bertrt.qat.quantize import quantizer_counts

    run = make_trained_run(tmp_path, tiny_base, rows=120)
    model, _, texts = _calibrated_torch_model(run, attention=True)
    assert quantizer_counts(model) == {"weight": 14, "input": 14, "attention": 6}
    config = load_config(overrides=TINY)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    tokenizer = load_tokenizer(run.merged)
    facts = export_qdq(model, tmp_path / "a.onnx", "a.onnx", tokenizer, texts, names, config)
    # q, k and v of each layer's two attention matmuls: 3 more Q/DQ pairs per layer.
    assert facts["tensorrt_check"]["qdq"]["quantize"] == 28 + 6
    assert _qdq_counts(tmp_path / "a.onnx")["QuantizeLinear"] == 34


@needs_modelopt
def test_missing_merged_model_is_refused_with_exit_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["qat", "--run-dir", str(tmp_path / "empty")]) == 4
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "bertrt train" in line


def test_impossible_settings_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["qat", "--run-dir", str(tmp_path), "--set", "qat.eval_every=0"]
    assert main([*args, "--set", "qat.steps=-1"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "qat.steps=-1" in line and "qat.eval_every=0" in line


def test_missing_modelopt_is_one_line_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", None)
    assert main(["qat", "--run-dir", str(tmp_path / "empty")]) == 3
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "pip install -e '.[qat]'" in line


def test_finetune_keeps_the_post_training_model_when_no_step_beats_it(tiny_base: Path) -> None:
    """Validation falling after step 0: the weights end as they started, best_step 0."""
    import torch

    from bertrt.export.onnx_export import load_torch_model
    from bertrt.qat.finetune import finetune

    model = load_torch_model(tiny_base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = iter([0.8, 0.7, 0.6])
    ids = torch.randint(1000, 2000, (4, 12))
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.ones(4).long(),
    }

    outcome = finetune(
        model, [batch], lambda m: {"accuracy": next(scores), "loss": 1.0}, 4, 1e-2, 2
    )
    assert outcome.best_step == 0
    assert [h["step"] for h in outcome.history] == [0, 2, 4]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@needs_modelopt
def test_zero_steps_exports_the_post_training_model_as_qat(tmp_path: Path, tiny_base: Path) -> None:
    """qat.steps=0 once failed tokenizing an empty fine-tuning sample; now QAT = PTQ there."""
    from bertrt.modeling import encode, load_tokenizer
    from bertrt.ort_sessions import cpu_session

    run = make_trained_run(tmp_path, tiny_base, rows=120)
    sets = [*TINY, "qat.steps=0"]
    assert main(["qat", "--run-dir", str(run.root), *(a for s in sets for a in ("--set", s))]) == 0
    assert [h["step"] for h in read_json(run.qat_report)["qat"]["history"]] == [0]
    batch = encode(load_tokenizer(run.merged), ["a question about python lists"] * 2, 32)
    ptq, qat = (cpu_session(run.onnx(v)) for v in ("mtq-int8", "qat"))
    feed = {i.name: batch[i.name] for i in ptq.get_inputs()}
    np.testing.assert_array_equal(ptq.run(None, feed)[0], qat.run(None, feed)[0])


@needs_modelopt
def test_the_qat_models_run_under_their_registry_names(qat_run: RunDir) -> None:
    """onnx-mtq-int8/onnx-qat (ONNX Runtime) and ov-mtq-int8/ov-qat (OpenVINO): the two
    runtimes read the same Q/DQ file to the same classes."""
    from bertrt.config import load_config
    from bertrt.runners.run_model import RunModel

    texts = ["how do I sort a list in python", "why does my C++ code crash?", "help"]
    config = load_config(None, [])
    out = {}
    for name in ("onnx-mtq-int8", "onnx-qat", "ov-mtq-int8", "ov-qat"):
        with RunModel.open(config, qat_run, name) as model:
            out[name] = model.logits(texts)
        assert out[name].shape == (3, len(model.labels)) and np.isfinite(out[name]).all()
    for variant in ("mtq-int8", "qat"):
        ort, ov = out[f"onnx-{variant}"], out[f"ov-{variant}"]
        assert (ort.argmax(axis=1) == ov.argmax(axis=1)).all()


@needs_modelopt
def test_calibrate_times_the_qat_models_where_they_exist(qat_run: RunDir, tmp_path: Path) -> None:
    """The CPU choice offers OpenVINO on bertrt qat's models (static shapes too) and records
    the files it timed as calibrate's inputs."""
    import shutil

    run = RunDir(tmp_path / "run")
    shutil.copytree(qat_run.root, run.root)
    sets = [*TINY, "calibration.eval_rows=48"]
    sets += ["calibration.cpu_candidates=[fp32-opt,ov-mtq-int8-static,ov-qat]"]
    args = [a for s in sets for a in ("--set", s)]
    assert main(["export", "--run-dir", str(run.root), *args]) == 0
    assert main(["calibrate", "--run-dir", str(run.root), *args]) == 0
    choice = read_json(run.cpu_choice)
    assert set(choice["candidates"]) == {"fp32-opt", "ov-mtq-int8-static", "ov-qat"}
    assert choice["candidates"]["ov-qat"]["model"] == "ov-qat"
    if choice["candidate"] == "ov-mtq-int8-static":
        assert choice["model"] == "ov-mtq-int8" and choice["static_shapes"] is True
    inputs = run.read_manifest()["stages"]["calibrate"]["inputs"]
    assert {run.rel(run.onnx("mtq-int8")), run.rel(run.onnx("qat"))} <= set(inputs)


def test_weight_bits_changes_only_the_weight_quantizers() -> None:
    if importlib.util.find_spec("modelopt") is None:
        pytest.skip("nvidia-modelopt is not installed (pip install -e '.[qat]')")
    from bertrt.qat.quantize import quant_config

    def cfgs(bits: int) -> dict[str, Any]:
        entries = quant_config(False, bits)["quant_cfg"]
        return {e["quantizer_name"]: e["cfg"] for e in entries if "cfg" in e}

    assert cfgs(8)["*weight_quantizer"] == {"num_bits": 8, "axis": 0}  # TensorRT's INT8
    assert cfgs(4)["*weight_quantizer"] == {"num_bits": 4, "axis": 0}
    assert cfgs(4)["*input_quantizer"] == cfgs(8)["*input_quantizer"]


@needs_modelopt
def test_qat_recipe_scores_qat_against_ptq_and_its_fp32_control(
    qat_run: RunDir, tmp_path: Path
) -> None:
    """bench/qat_recipe.py end to end on the tiny run: five models, one report, one table."""
    spec = importlib.util.spec_from_file_location(
        "qat_recipe", Path(__file__).resolve().parents[2] / "bench" / "qat_recipe.py"
    )
    assert spec is not None and spec.loader is not None
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = tmp_path / "recipe.json"
    args = ["--run-dir", str(qat_run.root), "--test-rows", "20", "--out", str(out)]
    assert recipe.main([*args, *(a for s in TINY for a in ("--set", s))]) == 0
    report = read_json(out)
    assert (report["weight_bits"], report["test_rows"]) == (4, 20)
    for name in recipe.ROWS:
        assert set(report[name]) == {"accuracy", "loss", "macro_f1", "log_loss"}
    # 4-bit weights change the tiny model's outputs; the fp32 rows are the merged model's.
    assert report["ptq"]["log_loss"] != report["fp32"]["log_loss"]
    assert [h["step"] for h in report["qat-history"]] == [0, 2, 4]
    assert recipe.table(report).count("\n") == len(recipe.ROWS) + 1

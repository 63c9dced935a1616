"""BERT, DistilBERT, RoBERTa and ELECTRA through export -> calibrate -> evaluate, on the CPU.

Each architecture is a tiny random sequence classifier built here, with an
offline tokenizer of its own kind (WordPiece from MiniLM's vocab.txt for
BERT, DistilBERT and ELECTRA; a byte-level BPE of the 256 byte characters for
RoBERTa), saved like a hub model and put through the real stages. The
weights are initialised wide (``initializer_range``) so logits are of order
one and the parity tolerances mean something.

What is checked per architecture: the ONNX graphs take the model's own inputs
(no ``token_type_ids`` for DistilBERT and RoBERTa) in every variant; export
parity against PyTorch; ORT's optimizer fuses what was measured
(docs/findings.md, "Other encoder architectures"); the INT8 model has Q/DQ on
MatMul/Gemm inputs only, symmetric and per channel, and passes the TensorRT
checks; every runner scores it (a batch with extra keys works, a missing key is
named); evaluate scores onnx-fp32, onnx-int8 and the cpu model; engine
profiles, the ORT TensorRT provider's profile and triton-repo name the
model's own inputs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bertrt.artifacts import RunDir, read_json
from bertrt.config import load_config
from bertrt.errors import ConfigError
from bertrt.modeling import (
    INPUT_NAMES,
    MissingInputError,
    encode,
    graph_input_names,
    load_tokenizer,
    model_input_names,
    resolve_base_model,
)
from bertrt.runners.predict import TokenizedRows, predict_logits
from tests.conftest import make_trained_run, synthetic_rows, write_csv

LAYERS = 2
TWO = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class Arch:
    """One architecture under test and what it was measured to do."""

    name: str
    inputs: tuple[str, ...]
    fused: dict[str, int]  # ORT's fused-operator statistics on the 2-layer model
    # MatMuls beyond the encoder layers' six (ELECTRA's embedding projection, 16 -> 32).
    extra_matmuls: int = 0

    @property
    def quantized_weights(self) -> int:
        """MatMul/Gemm weights with per-channel Q/DQ: 6 per layer, the head's 2 Gemms, extras."""
        return 6 * LAYERS + 2 + self.extra_matmuls


_LAYER_FUSIONS = {"Attention": LAYERS, "SkipLayerNormalization": 2 * LAYERS, "BiasGelu": LAYERS}
ARCHS = {
    a.name: a
    for a in (
        Arch("bert", INPUT_NAMES, {**_LAYER_FUSIONS, "EmbedLayerNormalization": 1}),
        Arch("distilbert", TWO, {**_LAYER_FUSIONS, "EmbedLayerNormalization": 1}),
        # ORT does not match RoBERTa's position ids (counted from the pad id): the
        # embeddings keep their own LayerNormalization.
        Arch("roberta", TWO, {**_LAYER_FUSIONS, "LayerNormalization": 1}),
        # The head's GELU follows a Gemm (bias inside): Gelu, not BiasGelu.
        Arch(
            "electra",
            INPUT_NAMES,
            {**_LAYER_FUSIONS, "EmbedLayerNormalization": 1, "Gelu": 1},
            extra_matmuls=1,
        ),
    )
}
# 128 tokens: RoBERTa's byte-level tokens are single characters, and rows shorter than
# the padded width are what exercise the attention mask.
MAX_LENGTH = 128
SMALL = [
    f"model.max_length={MAX_LENGTH}",
    "export.verify_batch_sizes=[1,3]",
    f"export.verify_seq_lengths=[8,{MAX_LENGTH}]",
    "export.verify_rows=16",
    "calibration.rows=32",
    "calibration.batch_size=8",
    "calibration.eval_rows=40",
    "calibration.cpu_candidates=[static-u8s8-folded,fp32-opt,openvino-fp32,openvino-nncf-int8]",
]


# -- tiny models of each architecture, saved like hub models -----------------------------
def _wordpiece(cls: Any) -> Any:
    return cls(vocab=str(Path(resolve_base_model("minilm")) / "vocab.txt"))


def _byte_level_bpe() -> Any:
    """A RoBERTa tokenizer over single bytes: special tokens + the 256 byte characters, no merges."""
    from transformers import RobertaTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = ["<s>", "<pad>", "</s>", "<unk>", *bytes_to_unicode().values(), "<mask>"]
    return RobertaTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def _model_and_tokenizer(name: str, num_labels: int) -> tuple[Any, Any]:
    import transformers as tf

    common: dict[str, Any] = {"num_labels": num_labels, "initializer_range": 0.3}
    layer = {"num_hidden_layers": LAYERS, "num_attention_heads": 2, "intermediate_size": 64}
    if name == "bert":
        tok = _wordpiece(tf.BertTokenizerFast)
        config = tf.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, **layer, **common)
        return tf.BertForSequenceClassification(config), tok
    if name == "distilbert":
        tok = _wordpiece(tf.DistilBertTokenizerFast)
        config = tf.DistilBertConfig(
            vocab_size=tok.vocab_size, dim=32, n_layers=LAYERS, n_heads=2, hidden_dim=64, **common
        )
        return tf.DistilBertForSequenceClassification(config), tok
    if name == "electra":
        tok = _wordpiece(tf.ElectraTokenizerFast)
        config = tf.ElectraConfig(
            vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32, **layer, **common
        )
        return tf.ElectraForSequenceClassification(config), tok
    tok = _byte_level_bpe()
    config = tf.RobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        max_position_embeddings=MAX_LENGTH + tok.pad_token_id + 1,  # positions follow the pad id
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **layer,
        **common,
    )
    return tf.RobertaForSequenceClassification(config), tok


def save_tiny(name: str, path: Path, num_labels: int = 2) -> Path:
    import torch

    torch.manual_seed(0)
    model, tokenizer = _model_and_tokenizer(name, num_labels)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(ARCHS))
def arch_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(architecture, run) after `bertrt export` and `bertrt calibrate` on the tiny model."""
    from bertrt.calibration.stage import run as calibrate_stage
    from bertrt.export.stage import run as export_stage

    arch = ARCHS[request.param]
    root = tmp_path_factory.mktemp(arch.name)
    run = make_trained_run(root, save_tiny(arch.name, root / "base"), rows=120)
    export_stage(load_config(overrides=SMALL), run)
    calibrate_stage(load_config(overrides=SMALL), run)
    return arch, run


def _graph_inputs(path: Path) -> tuple[str, ...]:
    return graph_input_names(onnx.load(str(path), load_external_data=False))


# -- inputs, export parity, fusion ---------------------------------------------------------
def test_inputs_are_the_models_own_in_every_graph(arch_run: tuple[Arch, RunDir]) -> None:
    from transformers import AutoModelForSequenceClassification

    arch, run = arch_run
    model = AutoModelForSequenceClassification.from_pretrained(str(run.merged))
    assert model_input_names(model, load_tokenizer(run.merged)) == arch.inputs
    for variant in ("fp32", "opt", "fp16", "int8", "cpu"):
        assert _graph_inputs(run.onnx(variant)) == arch.inputs, variant
    extra = read_json(run.manifest_path)["stages"]["export"]["extra"]
    assert extra["model_type"] == arch.name and extra["inputs"] == list(arch.inputs)


def test_export_matches_pytorch(arch_run: tuple[Arch, RunDir]) -> None:
    import torch

    from bertrt.export.onnx_export import load_torch_model
    from bertrt.runners.ort_runner import OrtRunner

    arch, run = arch_run
    parity = read_json(run.manifest_path)["stages"]["export"]["extra"]["parity"]
    assert parity["fp32"]["max_abs_diff"] <= 1e-4 and parity["opt"]["max_abs_diff"] <= 1e-4
    assert parity["fp16"]["max_abs_diff"] <= 1e-2
    assert any(c["padded_fraction"] > 0 for c in parity["fp32"]["cases"])
    # Independently of the stage: a padded batch through ORT against PyTorch.
    texts = [r["Title"] for r in synthetic_rows(6, seed=5)]
    batch = encode(load_tokenizer(run.merged), texts, MAX_LENGTH)
    assert 0 < batch["attention_mask"].mean() < 1  # padded rows
    model = load_torch_model(run.merged)
    with torch.inference_mode():
        want = model(**{k: torch.from_numpy(batch[k]) for k in arch.inputs}).logits.numpy()
    assert np.abs(want).max() > 0.1  # logits far above the tolerance: parity means something
    for variant in ("fp32", "opt"):
        with OrtRunner(run.onnx(variant), threads=1) as runner:
            assert np.abs(runner(batch) - want).max() <= 1e-4, variant


def test_optimizer_fuses_what_was_measured(arch_run: tuple[Arch, RunDir]) -> None:
    arch, run = arch_run
    opt = read_json(run.manifest_path)["stages"]["export"]["extra"]["opt"]
    assert opt["fused_operators"] == arch.fused
    assert opt["fully_fused"] is True and opt["attention_fully_fused"] is True
    ops = Counter(n.op_type for n in onnx.load(str(run.onnx("opt"))).graph.node)
    # Attention takes q, k, v and both batched matmuls; attention-out, FFN in and out remain.
    assert ops["Attention"] == LAYERS and ops["MatMul"] == 3 * LAYERS + arch.extra_matmuls
    assert ops["EmbedLayerNormalization"] == arch.fused.get("EmbedLayerNormalization", 0)


# -- calibration: Q/DQ placement and the CPU model -------------------------------------
def test_int8_has_qdq_on_matmul_inputs_only(arch_run: tuple[Arch, RunDir]) -> None:
    from bertrt.trt.onnx_support import check_trt_ready

    arch, run = arch_run
    model = onnx.load(str(run.onnx("int8")))
    report = check_trt_ready(model, "model.int8.onnx")  # raises on a broken TensorRT rule
    assert report.qdq["per_channel_weights"] == arch.quantized_weights
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    initializers = {t.name: t for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    for node in dq:
        assert set(consumers[node.output[0]]) <= {"MatMul", "Gemm"}, node.name
    for node in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):
        zero = numpy_helper.to_array(initializers[node.input[2]])
        assert zero.dtype == np.int8 and not zero.any(), node.name
    # LayerNorm, Softmax and every residual Add read float tensors, never a DQ output.
    dq_out = {n.output[0] for n in dq}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Add", "Gelu", "Erf"):
            assert not set(node.input) & dq_out, node.name
    quantized = {n.name for n in model.graph.node if set(n.input) & dq_out}
    float_matmuls = [
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and n.name not in quantized
    ]
    assert float_matmuls == []  # nothing excluded without the sweep


def test_calibrate_report_and_cpu_folds(arch_run: tuple[Arch, RunDir]) -> None:
    arch, run = arch_run
    report = read_json(run.calibration_dir / "report.json")
    assert report["int8"]["tensorrt_check"]["ok"] is True
    cands = {c["name"]: c for c in report["cpu"]["candidates"]}
    assert set(cands) == {"static-u8s8-folded", "fp32-opt", "openvino-fp32", "openvino-nncf-int8"}
    folds = cands["static-u8s8-folded"]["graph"]
    # Per layer q, k, v, attention-out and FFN-out biases and the attention scale;
    # ELECTRA's embedding projection bias is one more.
    assert folds["biases_folded"] == 5 * LAYERS + arch.extra_matmuls
    assert folds["scales_folded"] == LAYERS
    assert run.openvino_ir("int8").is_file()


# -- runners and evaluate ------------------------------------------------------------------
@pytest.mark.parametrize(
    "model", ["merged", "onnx-fp32", "onnx-opt", "onnx-int8", "ov-int8", "cpu"]
)
def test_every_runner_feeds_its_models_own_inputs(
    arch_run: tuple[Arch, RunDir], model: str
) -> None:
    from bertrt.runners.registry import runner_for_model

    arch, run = arch_run
    batch = encode(load_tokenizer(run.merged), ["why does my code crash", "best book"], 16)
    batch["position_ids"] = np.zeros_like(batch["input_ids"])  # an extra key is ignored
    with runner_for_model(run, model, threads=1) as runner:
        assert runner(batch).shape == (2, 2)
        assert runner.input_names == arch.inputs
        missing = {k: v for k, v in batch.items() if k != "attention_mask"}
        with pytest.raises(MissingInputError, match="no attention_mask"):
            runner(missing)


def test_evaluate_scores_fp32_int8_and_the_cpu_model(
    arch_run: tuple[Arch, RunDir], tmp_path: Path
) -> None:
    from bertrt.evaluate import evaluate_file

    _, run = arch_run
    csv = write_csv(tmp_path / "other.csv", synthetic_rows(24, seed=11))
    config = load_config(overrides=SMALL)
    reports = {m: evaluate_file(config, run, csv, m) for m in ("onnx-fp32", "onnx-int8", "cpu")}
    for name, report in reports.items():
        assert report["n"] == 24 and 0.0 <= report["accuracy"] <= 1.0, name
        assert sum(map(sum, report["confusion_matrix"])) == 24
    # The same rows through the same runners as the stage functions: identical logits.
    from bertrt.runners.registry import runner_for_model

    texts = [r["Title"] for r in synthetic_rows(8, seed=2)]
    rows = TokenizedRows.build(load_tokenizer(run.merged), texts, MAX_LENGTH, 4)
    with runner_for_model(run, "onnx-fp32", threads=1) as ort:
        fp32 = predict_logits(ort, rows)
    with runner_for_model(run, "merged", threads=1) as torch_runner:
        assert np.abs(predict_logits(torch_runner, rows) - fp32).max() <= 1e-4


# -- TensorRT plans and serving, read from the artifacts ------------------------------------
def test_engine_profiles_and_trt_provider_use_the_graphs_inputs(
    arch_run: tuple[Arch, RunDir],
) -> None:
    from bertrt.engines.stage import plan_engines
    from bertrt.runners.ort_runner import trt_ep_options

    arch, run = arch_run
    config = load_config(None, [*SMALL, f"engines.profile.seq=[16,64,{MAX_LENGTH}]"])
    profile, jobs = plan_engines(config, run, "10.13.3.9")
    assert [j.precision for j in jobs] == ["fp16", "int8"]
    for job in jobs:
        assert job.inputs == arch.inputs
        assert list(job.input_shapes(profile)) == list(arch.inputs)
    options = trt_ep_options(run, "int8", run.onnx("int8"), 32, 128)
    assert options["trt_profile_max_shapes"] == ",".join(f"{n}:32x128" for n in arch.inputs)


def test_triton_repo_names_the_models_inputs(
    arch_run: tuple[Arch, RunDir], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from bertrt.serve.options import RepoOptions
    from bertrt.serve.repo import write_standalone_repository

    arch, run = arch_run
    out = write_standalone_repository(
        load_config(None, SMALL), run, RepoOptions("onnx-int8"), tmp_path / "r"
    )
    configs = {
        p.parent.name: text_format.Parse(p.read_text(), pb.ModelConfig())
        for p in out.glob("*/config.pbtxt")
    }
    assert [i.name for i in configs["classifier"].input] == list(arch.inputs)
    assert [o.name for o in configs["tokenizer"].output] == list(arch.inputs)
    classify = configs["bertrt"].ensemble_scheduling.step[1]
    assert sorted(classify.input_map) == sorted(arch.inputs)
    assert list(next(o for o in configs["bertrt"].output if o.name == "probabilities").dims) == [2]
    settings = json.loads((out / "tokenizer" / "1" / "bertrt_text.json").read_text())
    assert settings["inputs"] == list(arch.inputs)
    assert settings["pad_id"] == load_tokenizer(run.merged).pad_token_id
    assert json.loads((out / "postprocess" / "1" / "labels.json").read_text()) == ["open", "closed"]
    _check_tokenizer_model(out / "tokenizer" / "1", run, arch, monkeypatch)


def _check_tokenizer_model(
    model_dir: Path, run: RunDir, arch: Arch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the generated tokenizer model's encoding: exactly the model's inputs, pad id padded.

    ``triton_python_backend_utils`` exists only inside Triton's Python backend;
    the encoding under test uses nothing of it but ``Tensor(name, array)``.
    """
    import importlib.util
    import sys
    import types

    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor = lambda name, array: (name, array)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    monkeypatch.delitem(sys.modules, "text_builder", raising=False)
    monkeypatch.syspath_prepend(str(model_dir))
    spec = importlib.util.spec_from_file_location("triton_tokenizer_model", model_dir / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({})
    texts = ["why does my code crash", "best book for c++ templates and generic code?"]
    tensors = dict(model._encode(texts))
    assert tuple(tensors) == arch.inputs
    tokenizer = load_tokenizer(run.merged)
    for row, ids in enumerate(
        tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    ):
        got = tensors["input_ids"][row]
        assert got[: len(ids)].tolist() == ids
        assert (got[len(ids) :] == tokenizer.pad_token_id).all()
        assert tensors["attention_mask"][row].sum() == len(ids)


@pytest.fixture(scope="module")
def five_class_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A close-reason (5-class) run of a 5-label DistilBERT, through export."""
    import shutil

    from bertrt.data.stage import run as data_stage
    from bertrt.export.stage import run as export_stage

    root = tmp_path_factory.mktemp("five")
    csv = write_csv(root / "train-sample.csv", synthetic_rows(160))
    run = RunDir(root / "run")
    data_stage(load_config(overrides=[f"data.csv={csv}", "data.task=close-reason"]), run)
    shutil.copytree(save_tiny("distilbert", root / "base", num_labels=5), run.merged)
    run.record("train", inputs=[run.split], outputs=[run.merged], wall_s=0.0)
    export_stage(load_config(overrides=SMALL), run)
    return run


def test_triton_repo_has_one_probability_per_class(five_class_run: RunDir, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from bertrt.data.labels import CLOSE_REASON_LABELS
    from bertrt.serve.options import RepoOptions
    from bertrt.serve.repo import write_standalone_repository

    out = write_standalone_repository(
        load_config(None, SMALL), five_class_run, RepoOptions("onnx-fp32"), tmp_path / "r"
    )
    configs = {
        p.parent.name: text_format.Parse(p.read_text(), pb.ModelConfig())
        for p in out.glob("*/config.pbtxt")
    }
    assert [list(o.dims) for o in configs["classifier"].output] == [[5]]
    for model in ("bertrt", "postprocess"):
        probs = next(o for o in configs[model].output if o.name == "probabilities")
        assert list(probs.dims) == [5], model
    labels = json.loads((out / "postprocess" / "1" / "labels.json").read_text())
    assert labels == list(CLOSE_REASON_LABELS)
    assert [i.name for i in configs["classifier"].input] == list(TWO)


def test_triton_repo_refuses_a_model_of_other_classes(
    five_class_run: RunDir, tmp_path: Path
) -> None:
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from bertrt.errors import StaleArtifactError
    from bertrt.serve.options import RepoOptions
    from bertrt.serve.repo import write_standalone_repository

    binary = json.loads(five_class_run.split.read_text())
    saved = five_class_run.split.read_text()
    binary["labels"] = ["open", "closed"]
    try:
        five_class_run.split.write_text(json.dumps(binary))
        with pytest.raises(StaleArtifactError, match=r"logits has dims \[5\].*2 classes"):
            write_standalone_repository(
                load_config(None, SMALL), five_class_run, RepoOptions("onnx-fp32"), tmp_path / "r"
            )
    finally:
        five_class_run.split.write_text(saved)
    assert not (tmp_path / "r").exists()


# -- what the pipeline does not know --------------------------------------------------------
def test_model_input_names_needs_tokenizer_and_forward_to_agree(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    bert = AutoModelForSequenceClassification.from_pretrained(
        str(save_tiny("bert", tmp_path / "bert"))
    )
    assert model_input_names(bert, _wordpiece(BertTokenizerFast)) == INPUT_NAMES
    # A tokenizer without token_type_ids (RoBERTa's) drops it even where the forward has it.
    assert model_input_names(bert, _byte_level_bpe()) == TWO


def test_an_unknown_architecture_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from bertrt.cli import main

    base = tmp_path / "gpt2"
    config = GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=300, n_positions=64)
    GPT2ForSequenceClassification(config).save_pretrained(base)
    _byte_level_bpe().save_pretrained(base)
    run = make_trained_run(tmp_path, base, rows=40)
    capsys.readouterr()
    code = main(["export", "--run-dir", str(run.root), "--set", "model.max_length=32"])
    assert code == ConfigError.exit_code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "'gpt2'" in err[0] and "bert, distilbert, electra, roberta, xlm-roberta" in err[0]
    assert not run.onnx("fp32").exists()

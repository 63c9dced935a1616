"""The two PyTorch modes a user tries on a CPU without bf16, as registry models and bench peers.

``torch-int8`` (dynamic INT8 of every ``nn.Linear``) and ``torch-compile``
(Inductor, dynamic shapes) are each one module and one line in
``registry.RUNTIMES``; these tests show that evaluate, predict, discover and
triton-repo take them with nothing else changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.cli import main
from bertrt.modeling import Batch, load_tokenizer
from bertrt.runners.torch_runner import TorchRunner
from tests.conftest import make_trained_run, synthetic_rows, write_csv


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    return make_trained_run(tmp_path_factory.mktemp("torch-peers"), tiny_base, rows=60)


def _batch(model_dir: Path, rows: int, seed: int = 3, max_length: int = 48) -> Batch:
    """Padded rows of varied length (the attention mask has zeros)."""
    texts = [f"{r['Title']} {r['BodyMarkdown']}" for r in synthetic_rows(rows, seed=seed)]
    encoded = load_tokenizer(model_dir)(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}


def _fp32_logits(run: RunDir, batch: Batch) -> np.ndarray:
    with TorchRunner(run.merged) as runner:
        return runner(batch)


def test_dynamic_int8_quantizes_every_linear_and_stays_close_to_fp32(run: RunDir) -> None:
    """Bound: per-tensor int8 weights (step max|w|/127) and 7-bit activations (fbgemm's
    reduce_range) cost about 1 % per Linear; logits pass about 7 Linears (Q, K, V, attention
    out, FFN in and out, then pooler and classifier), so a few %: 2.4 % of max |logit| was
    measured on this model, 5 % is the bound. Every row keeps its class: the smallest fp32
    margin here (0.005) is ten times the measured shift (0.0005)."""
    import torch

    from bertrt.runners.torch_dynamic_int8 import TorchDynamicInt8Runner

    batch = _batch(run.merged, 32)
    reference = _fp32_logits(run, batch)
    with TorchDynamicInt8Runner(run.merged) as runner:
        linears = [m for m in runner.model.modules() if isinstance(m, torch.nn.Linear)]
        quantized = [
            m for m in runner.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
        ]
        logits = runner(batch)
        one = runner({k: v[:1, :7] for k, v in batch.items()})
    assert runner.label == "torch/dynamic-int8/cpu" and runner.precision == "int8"
    assert not linears and len(quantized) == 2 * 6 + 2  # 6 per layer, pooler, classifier
    diff = np.abs(logits - reference).max()
    assert 0 < diff <= 0.05 * np.abs(reference).max()
    assert (logits.argmax(-1) == reference.argmax(-1)).all()
    assert one.shape == (1, 2)


def test_compile_matches_fp32_and_compiles_only_at_activation(run: RunDir) -> None:
    """Compiled once at activation (batch 1 and a dynamic-batch graph); every later shape,
    padded or not, reuses them. fp32 throughout, so only the order of floating-point
    sums differs: 1e-6 is far above that (2e-9 measured) and well below the spread of
    this model's logits across rows (3e-5), which a wrong mask or input would move."""
    from bertrt.runners.torch_compile import TorchCompileRunner, compiled_graphs

    batch = _batch(run.merged, 12)
    reference = _fp32_logits(run, batch)
    before = compiled_graphs()
    with TorchCompileRunner(run.merged) as runner:
        compiled = compiled_graphs()
        logits = runner(batch)
        for rows, seq in ((1, 9), (3, 17), (5, 40), (1, 48), (12, 48)):
            runner({k: v[:rows, :seq] for k, v in batch.items()})
        after = compiled_graphs()
    assert runner.label == "torch/compile/cpu"
    assert compiled - before == 2 and after == compiled
    np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-6)


def test_evaluate_and_predict_take_torch_int8(
    run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "rows.csv", synthetic_rows(23, seed=5))
    common = ["--run-dir", str(run.root), "--set", "model.max_length=32"]
    capsys.readouterr()
    assert main(["evaluate", *common, "--data", str(data), "--model", "torch-int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "torch-int8" and report["runner"] == "torch/dynamic-int8/cpu"
    assert report["n"] == 23 and sum(map(sum, report["confusion_matrix"])) == 23
    assert main(["predict", *common, "--model", "torch-int8", "--text", "how do I sort"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("open", "closed")


def test_discover_lists_both_and_bench_patterns_select_them(run: RunDir) -> None:
    from bertrt.runners.registry import discover

    labels = discover(run, 1, ["torch"]).labels()
    assert {"torch/fp32/cpu", "torch/dynamic-int8/cpu", "torch/compile/cpu"} <= set(labels)
    only = discover(run, 1, ["torch/compile"])
    assert only.labels() == ["torch/compile/cpu"]
    assert any(s.backend == "torch/dynamic-int8/cpu" for s in only.skipped)


@pytest.mark.parametrize("model", ["torch-int8", "torch-compile"])
def test_triton_repo_refuses_in_one_line(
    run: RunDir, model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "repo"
    code = main(["triton-repo", "--run-dir", str(run.root), "--model", model, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not out.exists()
    assert f"--model {model}" in err and "serve an ONNX model instead" in err


def test_speedups_are_against_eager_fp32_not_the_compiled_peer() -> None:
    """torch/compile/cpu is fp32 PyTorch too; the reference is the eager merged model only."""
    from bertrt.bench.report import add_speedups
    from tests.unit.test_bench_results import latency_row

    eager = latency_row("torch/fp32/cpu", 1, [10.0, 10.0, 10.0])
    compiled = latency_row("torch/compile/cpu", 1, [8.0, 8.0, 8.0])
    int8 = latency_row("torch/dynamic-int8/cpu", 1, [5.0, 5.0, 5.0])
    add_speedups([eager, compiled, int8])
    assert eager.speedup_vs_torch_fp32 == pytest.approx(1.0)
    assert compiled.speedup_vs_torch_fp32 == pytest.approx(1.25)
    assert int8.speedup_vs_torch_fp32 == pytest.approx(2.0)

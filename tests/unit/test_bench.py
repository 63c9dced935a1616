"""The benchmark harness on a tiny random BERT: discovery, timing, batching, scoring, the stage.

The run directory is built here (data stage on synthetic rows, the tiny
model as the "merged" model, a TorchScript ONNX export) so these tests do
not depend on the trainer or exporter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.bench import accuracy as acc
from bertrt.bench.backends.torch_backend import TorchRunner
from bertrt.bench.batching import bucketed_batches, pad_to_max_batches, tokenize_unpadded
from bertrt.bench.discovery import discover, selected
from bertrt.bench.report import add_speedups, choose_best
from bertrt.bench.stage import QUICK, effective
from bertrt.bench.timing import TimingPlan, measure, summarize, synthetic_batch
from bertrt.config import load_config
from bertrt.export.onnx_export import export_onnx, load_torch_model
from bertrt.modeling import INPUT_NAMES, load_tokenizer
from tests.conftest import make_trained_run

REPO = Path(__file__).resolve().parents[2]
FAST = [
    "bench.batch_sizes=[1,4]",
    "bench.seq_lengths=[16,1024]",
    "bench.warmup=1",
    "bench.iterations=2",
    "bench.repeats=2",
    "bench.min_round_s=0",
    "bench.e2e_repeats=1",
    "bench.e2e_batch_size=8",
    "bench.accuracy_batch_size=8",
]


@pytest.fixture(scope="module")
def bench_run(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """data -> "train" (the tiny model as merged) -> "export" (fp32 ONNX), recorded in the manifest."""

    run = make_trained_run(tmp_path_factory.mktemp("bench-run"), tiny_base)
    run.onnx_dir.mkdir(parents=True)
    sample = {name: np.ones((2, 8), dtype=np.int64) for name in INPUT_NAMES}
    export_onnx(load_torch_model(run.merged), run.onnx("fp32"), sample, opset=17)
    run.record("export", [run.merged], [run.onnx("fp32")], 0.0)
    return run


def test_discovery_lists_runners_and_why_others_are_skipped(bench_run: RunDir) -> None:
    found = discover(bench_run, threads=1)
    assert found.labels() == ["torch/fp32/cpu", "torch/bf16-autocast/cpu", "onnxruntime/fp32/cpu"]
    reasons = {s["backend"]: s["reason"] for s in found.skipped}
    assert "bertrt calibrate" in reasons["onnxruntime/int8/cpu"]
    assert "bertrt export" in reasons["onnxruntime/opt/cpu"]
    assert "tensorrt" in reasons["tensorrt/int8/cuda"]
    assert "torch/fp32/cuda" in reasons


def test_discovery_filters_by_pattern(bench_run: RunDir) -> None:
    found = discover(bench_run, threads=1, patterns=["onnxruntime"])
    assert found.labels() == ["onnxruntime/fp32/cpu"]
    assert any("not selected" in s["reason"] for s in found.skipped)
    assert selected("onnxruntime/int8/cpu", ["onnxruntime/int8"])
    assert selected("torch/bf16-autocast/cpu", ["torch/*/cpu"])
    assert not selected("torch/fp32/cpu", ["onnxruntime", "torch/fp3"])


def test_stale_onnx_is_skipped_with_the_stage_to_rerun(bench_run: RunDir, tmp_path: Path) -> None:
    copy = RunDir(tmp_path / "run")
    shutil.copytree(bench_run.root, copy.root)
    with copy.onnx("fp32").open("ab") as fh:
        fh.write(b"\0")
    reasons = {s["backend"]: s["reason"] for s in discover(copy, threads=1).skipped}
    assert "sha256 mismatch" in reasons["onnxruntime/fp32/cpu"]


def test_summarize_takes_median_over_rounds() -> None:
    rounds = [[10.0] * 9 + [100.0], [12.0] * 10, [11.0] * 10]
    result = summarize(rounds, batch=4, timer="perf_counter")
    assert result.p50_ms == 11.0
    assert result.p50_spread_ms == (10.0, 12.0)
    assert result.iterations == 30 and result.repeats == 3
    # throughput per round = batch / mean latency; median of (4/19, 4/12, 4/11) per ms
    assert result.samples_per_s == pytest.approx(4e3 / 12.0)
    assert result.p99_ms > result.p50_ms


def test_synthetic_batch_is_the_same_for_every_caller() -> None:
    a, b = synthetic_batch(4, 32, 30522, seed=1), synthetic_batch(4, 32, 30522, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in INPUT_NAMES)
    assert a["input_ids"].shape == (4, 32) and a["attention_mask"].all()


def test_measure_times_a_real_runner(tiny_base: Path) -> None:
    with TorchRunner(tiny_base, "fp32", "cpu", threads=1) as runner:
        result = measure(runner, synthetic_batch(2, 16, 1000), TimingPlan(1, 3, 1))
    assert result.iterations == 3 and result.timer == "perf_counter"
    assert 0 < result.min_ms <= result.p50_ms <= result.p99_ms
    # one round: throughput is exactly batch / mean latency
    assert result.samples_per_s == pytest.approx(2e3 / result.mean_ms)


def test_bucketed_batches_sort_by_length_and_pad_per_batch(tiny_base: Path) -> None:
    tokenizer = load_tokenizer(tiny_base)
    texts = ["a " * n for n in (30, 2, 17, 5, 40, 1)]
    enc = tokenize_unpadded(tokenizer, texts, max_length=32)
    got = list(bucketed_batches(enc, batch_size=2))
    assert [list(rows) for rows, _ in got] == [[5, 1], [3, 2], [0, 4]]
    widths = [b["input_ids"].shape[1] for _, b in got]
    assert widths == sorted(widths) and widths[-1] == 32
    for rows, batch in got:
        assert batch["attention_mask"].sum(1).tolist() == [len(enc.input_ids[i]) for i in rows]
    fixed = list(pad_to_max_batches(tokenizer, texts, 4, 32))
    assert [b["input_ids"].shape for _, b in fixed] == [(4, 32), (2, 32)]


def test_score_compares_with_labels_and_reference() -> None:
    ref = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    other = ref.copy()
    other[2] = [0.0, 0.5]  # flips row 2
    labels = np.array([0, 1, 1, 1])
    out = acc.score(other, labels, ref)
    assert out["accuracy"] == 1.0 and out["agreement"] == 0.75
    assert out["max_abs_diff"] == pytest.approx(1.0)
    assert acc.score(ref, labels, ref)["agreement"] == 1.0


def test_best_backend_respects_accuracy_budget() -> None:
    def lat(backend: str, framework: str, precision: str, p50: float) -> dict:
        return {
            "backend": backend,
            "framework": framework,
            "precision": precision,
            "device": "cpu",
            "batch": 32,
            "seq": 128,
            "p50_ms": p50,
            "samples_per_s": 32e3 / p50,
        }

    latency = [
        lat("torch/fp32/cpu", "torch", "fp32", 300),
        lat("onnxruntime/int8/cpu", "onnxruntime", "int8", 100),
        lat("onnxruntime/opt/cpu", "onnxruntime", "fp32", 200),
    ]
    accuracy = [
        {"backend": "torch/fp32/cpu", "framework": "torch", "precision": "fp32", "accuracy": 0.80},
        {
            "backend": "onnxruntime/int8/cpu",
            "framework": "onnxruntime",
            "precision": "int8",
            "accuracy": 0.79,
        },
        {
            "backend": "onnxruntime/opt/cpu",
            "framework": "onnxruntime",
            "precision": "fp32",
            "accuracy": 0.80,
        },
    ]
    assert choose_best(latency, accuracy, budget_points=0.5) == "onnxruntime/opt/cpu"
    assert choose_best(latency, accuracy, budget_points=1.0) == "onnxruntime/int8/cpu"
    add_speedups(latency)
    assert latency[1]["speedup_vs_torch_fp32"] == pytest.approx(3.0)


def test_quick_lays_the_small_grid_over_the_config() -> None:
    cfg = effective(load_config(None, ["bench.quick=true"]).bench)
    assert cfg.batch_sizes == QUICK["batch_sizes"] and cfg.accuracy_rows == QUICK["accuracy_rows"]


def test_stage_writes_every_report(bench_run: RunDir) -> None:
    from bertrt.bench.stage import run as bench

    results = bench(load_config(None, FAST), bench_run)
    out = bench_run.bench_dir
    for name in (
        "results.json",
        "results.csv",
        "results.md",
        "latency.png",
        "accuracy_vs_throughput.png",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["latency"] == json.loads(json.dumps(results["latency"]))
    cells = {(r["backend"], r["batch"], r["seq"]) for r in saved["latency"]}
    assert ("onnxruntime/fp32/cpu", 4, 16) in cells and len(cells) == 6
    assert any("max_position_embeddings" in s["reason"] for s in saved["skipped"])
    for row in saved["latency"]:
        assert {"p50_ms", "p90_ms", "p99_ms", "samples_per_s", "precision", "device"} <= set(row)
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    by_backend = {r["backend"]: r for r in saved["accuracy"]}
    assert by_backend["torch/fp32/cpu"]["agreement"] == 1.0
    assert by_backend["onnxruntime/fp32/cpu"]["agreement"] == 1.0
    assert by_backend["onnxruntime/fp32/cpu"]["max_abs_diff"] < 1e-4
    assert by_backend["torch/fp32/cpu"]["n"] == 20  # the synthetic test split
    e2e = saved["e2e"]
    assert e2e["pad_to_max"]["samples_per_s"] > 0 and e2e["bucketed"]["samples_per_s"] > 0
    assert e2e["bucketed"]["real_token_fraction"] >= e2e["pad_to_max"]["real_token_fraction"]
    assert saved["machine"]["threads"]["onnxruntime_intra_op"] >= 1
    assert "| onnxruntime/fp32/cpu |" in (out / "results.md").read_text()
    record = bench_run.read_manifest()["stages"]["bench"]
    assert {"merged", "onnx/model.onnx", "split.json"} <= set(record["inputs"])
    assert "bench/results.json" in record["outputs"]


def test_compare_script_is_the_bench_command() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "compare.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--quick" in proc.stdout and "--run-dir" in proc.stdout

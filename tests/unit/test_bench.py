"""The benchmark harness on a tiny random BERT: discovery, timing, batching, scoring, the stage.

The run directory is built here (data stage on synthetic rows, the tiny
model as the "merged" model, a TorchScript ONNX export) so these tests do
not depend on the trainer or exporter.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertrt.artifacts import RunDir, sha256_path
from bertrt.bench import accuracy as acc
from bertrt.bench import reproducibility
from bertrt.bench.machine import steal_percent
from bertrt.bench.report import add_speedups, choose_best, paired_ratio
from bertrt.bench.results import AccuracyRow, Backend, BenchResults, ModelInfo, Target
from bertrt.config import QUICK_OVERRIDES, load_config
from bertrt.errors import ConfigError
from bertrt.export.onnx_export import export_onnx, load_torch_model
from bertrt.modeling import INPUT_NAMES, load_tokenizer
from bertrt.runners.base import Runner
from bertrt.runners.batching import bucketed_batches, pad_to_max_batches, tokenize_unpadded
from bertrt.runners.registry import discover, selected
from bertrt.runners.timing import (
    MIN_ITERATIONS,
    MIN_REPEATS,
    Budget,
    ShapeTimer,
    TimingPlan,
    fit_to_budget,
    interleave,
    measure,
    summarize,
    synthetic_batch,
)
from bertrt.runners.torch_runner import TorchRunner
from tests.conftest import make_trained_run
from tests.unit.test_bench_results import (
    CSV_HEADER,
    RESULTS_SCHEMA,
    accuracy_row,
    fixed_results,
    key_structure,
    latency_row,
)

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
    export_onnx(load_torch_model(run.merged), run.onnx("fp32"), sample, 17, INPUT_NAMES)
    run.record("export", [run.merged], [run.onnx("fp32")], 0.0)
    return run


def test_discovery_lists_runners_and_why_others_are_skipped(bench_run: RunDir) -> None:
    found = discover(bench_run, threads=1)
    assert found.labels() == [
        "torch/fp32/cpu",
        "torch/bf16-autocast/cpu",
        "torch/dynamic-int8/cpu",
        "torch/compile/cpu",
        "onnxruntime/fp32/cpu",
        "openvino/fp32/cpu",  # OpenVINO out of the box on the exported model.onnx
    ]
    reasons = {s.backend: s.reason for s in found.skipped}
    assert "bertrt calibrate" in reasons["openvino/int8/cpu"]
    assert "bertrt calibrate" in reasons["onnxruntime/int8/cpu"]
    assert "bertrt export" in reasons["onnxruntime/opt/cpu"]
    assert "tensorrt" in reasons["tensorrt/int8/cuda"]
    assert "torch/fp32/cuda" in reasons


def test_discovery_filters_by_pattern(bench_run: RunDir) -> None:
    found = discover(bench_run, threads=1, patterns=["onnxruntime"])
    assert found.labels() == ["onnxruntime/fp32/cpu"]
    assert any("not selected" in s.reason for s in found.skipped)
    assert selected("onnxruntime/int8/cpu", ["onnxruntime/int8"])
    assert selected("torch/bf16-autocast/cpu", ["torch/*/cpu"])
    assert not selected("torch/fp32/cpu", ["onnxruntime", "torch/fp3"])


def test_stale_onnx_is_skipped_with_the_stage_to_rerun(bench_run: RunDir, tmp_path: Path) -> None:
    copy = RunDir(tmp_path / "run")
    shutil.copytree(bench_run.root, copy.root)
    with copy.onnx("fp32").open("ab") as fh:
        fh.write(b"\0")
    reasons = {s.backend: s.reason for s in discover(copy, threads=1).skipped}
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
    named = acc.score(other, labels, ref, ("open", "closed"))
    assert named["positive_class"] == "closed" and named["macro_f1"] == 1.0
    assert [c["name"] for c in named["per_class"]] == ["open", "closed"]
    assert named["log_loss"] == pytest.approx(named_loss(other, labels))
    assert acc.score(other, labels, None)["agreement"] is None


def named_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Log loss by the textbook formula, for rows far from a clipped probability."""
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return float(-np.log(probs[np.arange(len(labels)), labels]).mean())


def test_score_of_five_classes_uses_the_run_names() -> None:
    names = ("open", "not a real question", "not constructive", "off topic", "too localized")
    labels = np.array([0, 1, 2, 3, 4, 4])
    ref = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 3]] * 2  # row 5 wrong (3 for 4)
    out = acc.score(ref, labels, ref, names)
    assert out["accuracy"] == pytest.approx(5 / 6) and out["agreement"] == 1.0
    assert out["positive_class"] is None
    f1s = [c["f1"] for c in out["per_class"]]
    assert f1s == pytest.approx([1.0, 1.0, 1.0, 2 / 3, 2 / 3])
    assert out["macro_f1"] == pytest.approx(sum(f1s) / 5) == out["f1"]
    assert out["log_loss"] == pytest.approx(named_loss(ref, labels))
    row = AccuracyRow.from_score(Backend("torch/fp32/cpu", "torch", "fp32", "fp32", "cpu"), out)
    assert row.per_class[4]["name"] == "too localized" and row.macro_f1 == out["macro_f1"]


def test_best_backend_respects_accuracy_budget() -> None:
    labels = ("torch/fp32/cpu", "onnxruntime/int8/cpu", "onnxruntime/opt/cpu")
    latency = [latency_row(b, 32, [p50]) for b, p50 in zip(labels, (300, 100, 200), strict=True)]
    accuracy = [accuracy_row(b, a) for b, a in zip(labels, (0.80, 0.79, 0.80), strict=True)]
    assert choose_best(latency, accuracy, budget_points=0.5) == "onnxruntime/opt/cpu"
    assert choose_best(latency, accuracy, budget_points=1.0) == "onnxruntime/int8/cpu"
    add_speedups(latency)
    assert latency[1].speedup_vs_torch_fp32 == pytest.approx(3.0)


def test_quick_lays_the_small_grid_over_the_config_and_the_sets() -> None:
    cfg = load_config(None, ["bench.quick=true", "bench.batch_sizes=[4]"]).bench
    assert "bench.batch_sizes=[1, 32]" in QUICK_OVERRIDES and "bench.accuracy_rows=512" in (
        QUICK_OVERRIDES
    )
    assert cfg.quick and cfg.batch_sizes == [1, 32] and cfg.accuracy_rows == 512
    assert cfg.e2e_max_lengths == [] and cfg.min_round_s == 0.3
    assert load_config(None, ["bench.batch_sizes=[4]"]).bench.batch_sizes == [4]


def test_stage_writes_every_report(bench_run: RunDir) -> None:
    from bertrt.bench.stage import run as bench

    # Every backend but torch/compile, whose compile (20-60 s here) test_torch_peers covers.
    most = "bench.backends=[torch/fp32,torch/bf16-autocast,torch/dynamic-int8,onnxruntime,openvino]"
    config = load_config(None, [*FAST, most])
    results = bench(config, bench_run)
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
    assert saved == json.loads(json.dumps(results.report))
    assert (out / "results.csv").read_text().splitlines()[0] == CSV_HEADER
    cells = {(r["backend"], r["batch"], r["seq"]) for r in saved["latency"]}
    assert ("onnxruntime/fp32/cpu", 4, 16) in cells and len(cells) == 10
    assert any("max_position_embeddings" in s["reason"] for s in saved["skipped"])
    for row in saved["latency"]:
        assert {"p50_ms", "p90_ms", "p99_ms", "samples_per_s", "precision", "device"} <= set(row)
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    by_backend = {r["backend"]: r for r in saved["accuracy"]}
    assert by_backend["torch/fp32/cpu"]["agreement"] == 1.0
    assert by_backend["onnxruntime/fp32/cpu"]["agreement"] == 1.0
    assert by_backend["onnxruntime/fp32/cpu"]["max_abs_diff"] < 1e-4
    assert by_backend["torch/fp32/cpu"]["n"] == 20  # the synthetic test split
    fp32 = by_backend["torch/fp32/cpu"]
    assert fp32["positive_class"] == "closed"  # the run's names, not class ids
    assert [c["name"] for c in fp32["per_class"]] == ["open", "closed"]
    assert sum(c["support"] for c in fp32["per_class"]) == 20
    assert fp32["f1"] == fp32["per_class"][1]["f1"] and 0 <= fp32["macro_f1"] <= 1
    assert fp32["log_loss"] > 0
    e2e = saved["e2e"]
    assert e2e["pad_to_max"]["samples_per_s"] > 0 and e2e["bucketed"]["samples_per_s"] > 0
    assert e2e["bucketed"]["real_token_fraction"] >= e2e["pad_to_max"]["real_token_fraction"]
    assert saved["machine"]["threads"]["onnxruntime_intra_op"] >= 1
    assert "| onnxruntime/fp32/cpu |" in (out / "results.md").read_text()
    record = bench_run.read_manifest()["stages"]["bench"]
    assert {"merged", "onnx/model.onnx", "split.json"} <= set(record["inputs"])
    assert "bench/results.json" in record["outputs"]
    assert "reproducibility" not in saved  # first run: nothing to compare with

    # A second run compares itself with the first, cell by cell, and keeps the first.
    again = bench(config, bench_run)
    # The file keeps the keys, nesting and types it had before the results were typed.
    written = json.loads((out / "results.json").read_text())
    assert key_structure(written) == RESULTS_SCHEMA and list(written) == list(RESULTS_SCHEMA)
    assert list(written["latency"][0]) == list(RESULTS_SCHEMA["latency"][0])
    assert key_structure(saved) == {
        k: v for k, v in RESULTS_SCHEMA.items() if k != "reproducibility"
    }
    section = again.report["reproducibility"]
    assert section["comparable"] and section["cells"] == 10 and not section["models_changed"]
    assert set(saved["backend_models"]) == {c[0] for c in cells}
    onnx_hash = saved["backend_models"]["onnxruntime/fp32/cpu"]["onnx/model.onnx"]
    assert onnx_hash == sha256_path(bench_run.onnx("fp32"))
    assert json.loads((out / "results.previous.json").read_text())["latency"] == saved["latency"]
    for cell in section["latency"]:
        low, high = cell["previous_spread_ms"]
        assert cell["within_previous_spread"] == (low <= cell["p50_ms"] <= high)
    assert "## Run-to-run" in (out / "results.md").read_text()
    # Both runs are in the history; each cell's run-to-run range spans both p50s.
    lines = (out / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2 and again.report["runs_in_history"] == 2
    first = {(r["backend"], r["batch"], r["seq"]): r["p50_ms"] for r in saved["latency"]}
    for row in again.report["latency"]:
        assert row["run_to_run_p50_ms"] is not None and row["run_to_run_runs"] == 2
        low, high = row["run_to_run_p50_ms"]
        cell = first[(row["backend"], row["batch"], row["seq"])]
        assert (low, high) == (min(row["p50_ms"], cell), max(row["p50_ms"], cell))
    assert "run-to-run p50 ms (runs)" in (out / "results.md").read_text()


def test_stage_refuses_an_unreadable_against_file_before_measuring(
    bench_run: RunDir, tmp_path: Path
) -> None:
    from bertrt.bench.stage import run as bench

    bogus = tmp_path / "results.json"
    bogus.write_text("{not json")
    with pytest.raises(ConfigError, match=str(bogus)):
        bench(load_config(None, [*FAST, f"bench.against={bogus}"]), bench_run)


class _LoggingRunner(Runner):
    """A runner that only logs the order in which it was called."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.variant, self.log = name, log

    def _activate(self) -> None:
        return None

    def _deactivate(self) -> None:
        return None

    def _infer(self, prepared: object) -> object:
        self.log.append(self.variant)
        return prepared


def test_interleave_runs_round_r_of_every_timer_before_round_r_plus_1() -> None:
    order: list[str] = []
    plan = TimingPlan(warmup=1, iterations=2, repeats=3, round_warmup=0)
    batch = synthetic_batch(1, 4, 1000)
    timers = [ShapeTimer(_LoggingRunner(n, order).__enter__(), batch, plan) for n in ("a", "b")]
    order.clear()  # forget the warm-up calls
    interleave(timers, plan.repeats)
    assert order == ["a", "a", "b", "b"] * 3
    assert all(len(t.rounds) == 3 and len(t.result().round_p50_ms) == 3 for t in timers)


class _FlakyRunner(_LoggingRunner):
    """Fails on its fifth call: after warm-up and the first timed round."""

    def _infer(self, prepared: object) -> object:
        if len(self.log) >= 4:
            raise RuntimeError("device lost")
        return super()._infer(prepared)


def test_a_runner_failing_mid_bench_is_skipped_and_the_others_go_on(bench_run: RunDir) -> None:
    from bertrt.bench.stage import _measure_all
    from bertrt.runners.registry import Benchable

    found = discover(bench_run, threads=1, patterns=["torch/fp32/cpu"])
    calls: list[str] = []
    found.runners.append(Benchable(lambda: _FlakyRunner("flaky", calls)))
    cfg = load_config(None, FAST).bench
    eval_set = acc.build_eval_set(load_tokenizer(bench_run.merged), ["a b", "c"], [0, 1], 2, 16)
    latency, logits, runners, _ = _measure_all(
        found, [(1, 8)], cfg, 1000, eval_set, 0, (bench_run, 1)
    )
    assert list(runners) == ["torch/fp32/cpu"] and set(logits) == {"torch/fp32/cpu"}
    assert [r.backend for r in latency] == ["torch/fp32/cpu"]
    assert latency[0].repeats == cfg.repeats
    reasons = {s.backend: s.reason for s in found.skipped}
    assert "device lost" in reasons["runner/flaky/cpu"] and len(calls) == 4


def test_paired_ratio_cancels_drift_that_hits_both_backends() -> None:
    # The machine got 20% slower in round 2 for both backends alike.
    slow = latency_row("torch/fp32/cpu", 1, [20.0, 24.0, 20.0])
    fast = latency_row("onnxruntime/cpu/cpu", 1, [5.0, 6.0, 5.0])
    assert paired_ratio(slow, fast) == (4.0, 4.0, 4.0)
    # Rounds that do not pair up: ratio of medians.
    slow.round_p50_ms, slow.p50_ms = [], 9.0
    assert paired_ratio(slow, fast) == (9.0 / 5.0,) * 3


def _results(p50: float, spread: tuple[float, float], cpu: str = "EPYC") -> dict:
    return {
        "machine": {"cpu": cpu, "cores": 2, "threads": {"t": 2}, "gpu": None, "versions": {}},
        "model": {"model_type": "bert", "layers": 6, "hidden_size": 384},
        "quick": False,
        "latency": [
            {"backend": "x", "batch": 1, "seq": 128, "p50_ms": p50, "p50_spread_ms": list(spread)}
        ],
        "targets": [{"target": "t", "measured": 3.1, "met": True, "spread": [3.0, 3.2]}],
    }


def _current(
    p50: float, spread: tuple[float, float], cpu: str = "EPYC", models: dict | None = None
) -> BenchResults:
    """This run, typed, on the machine and model of :func:`_results` (an earlier run's file)."""
    results = fixed_results()
    results.machine = _results(p50, spread, cpu)["machine"]
    results.model = ModelInfo("merged", "bert", 6, 384, 1000, 512)
    row = latency_row("x/fp32/cpu", 1, [p50])
    results.latency = [dataclasses.replace(row, backend="x", p50_spread_ms=list(spread))]
    results.targets = [Target("t", 3.1, ">= 3x", True, "", [3.0, 3.2])]
    results.backend_models = models or {}
    return results


def test_reproducibility_flags_a_p50_outside_the_previous_spread() -> None:
    first = _results(10.0, (9.8, 10.3))
    inside = reproducibility.compare(first, _current(10.2, (10.0, 10.4)), "a.json")
    assert inside["within_previous_spread"] == 1 and inside["cells"] == 1
    assert inside["targets"][0]["within_previous_spread"] is True
    outside = reproducibility.compare(first, _current(11.5, (11.4, 11.6)), "a.json")
    cell = outside["latency"][0]
    assert not cell["within_previous_spread"] and not cell["spreads_overlap"]
    assert cell["change_pct"] == pytest.approx(15.0)
    text = "\n".join(reproducibility.markdown(outside))
    assert "0 of 1 latency cells" in text and "**no**" in text
    rebuilt = _current(11.5, (11.4, 11.6), models={"x": {"onnx/model.cpu.onnx": "bbb"}})
    first["backend_models"] = {"x": {"onnx/model.cpu.onnx": "aaa"}}
    skipped = reproducibility.compare(first, rebuilt, "a.json")
    assert skipped["models_changed"] == ["x"] and skipped["cells"] == 0
    assert skipped["targets"] == []
    other = reproducibility.compare(first, _current(10.0, (9.9, 10.1), cpu="Xeon"), "a.json")
    assert not other["comparable"] and "cpu" in other["reason"]


def test_run_to_run_range_counts_only_comparable_runs_with_the_same_model() -> None:
    current = _current(10.0, (9.9, 10.1), models=current_models()["backend_models"])
    same = reproducibility.history_entry({**_results(12.0, (11.0, 13.0)), **current_models()})
    rebuilt = reproducibility.history_entry(_results(30.0, (29.0, 31.0)))
    rebuilt["backend_models"] = {"x": {"m.onnx": "old"}}
    elsewhere = reproducibility.history_entry(_results(50.0, (49.0, 51.0), cpu="Xeon"))
    elsewhere["backend_models"] = current.backend_models
    runs = reproducibility.add_run_to_run(current, [same, rebuilt, elsewhere])
    row = current.latency[0]
    assert runs == 3  # this run, `same` and `rebuilt` (same machine); `elsewhere` is not
    assert row.run_to_run_p50_ms == [10.0, 12.0] and row.run_to_run_runs == 2


def current_models() -> dict:
    return {"backend_models": {"x": {"m.onnx": "aaa"}}}


def test_history_is_seeded_from_existing_results(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(_results(10.0, (9.9, 10.1))))
    (tmp_path / "results.previous.json").write_text("{damaged")
    history = reproducibility.load_history(tmp_path)
    assert [h["latency"][0]["p50_ms"] for h in history] == [10.0]
    path = reproducibility.write_history(tmp_path, history, _current(11.0, (10.5, 11.5)))
    again = reproducibility.load_history(tmp_path)
    assert path.name == "history.jsonl" and [h["latency"][0]["p50_ms"] for h in again] == [
        10.0,
        11.0,
    ]


def test_steal_percent_reads_the_steal_column() -> None:
    before = [100, 0, 50, 800, 0, 0, 0, 50]
    after = [200, 0, 100, 1600, 0, 0, 0, 100]  # 1000 jiffies, 50 of them stolen
    assert steal_percent(before, after) == 5.0
    assert steal_percent(None, after) is None


def test_compare_script_is_the_bench_command() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "compare.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--quick" in proc.stdout and "--run-dir" in proc.stdout


def _timers_costing(costs_ms: list[float], plan: TimingPlan) -> list[ShapeTimer]:
    """Timers whose warm-up said each iteration takes ``costs_ms[i]`` (set after the pilot)."""
    timers = []
    for i, cost in enumerate(costs_ms):
        timer = ShapeTimer(
            _LoggingRunner(str(i), []).__enter__(), synthetic_batch(1, 4, 1000), plan
        )
        timer.typical_ms, timer.per_round = cost, plan.iterations
        timers.append(timer)
    return timers


def test_a_plan_within_the_latency_budget_is_left_alone() -> None:
    plan = TimingPlan(warmup=1, iterations=10, repeats=5, round_warmup=0)
    timers = _timers_costing([10.0, 20.0], plan)  # 0.3 s a round, 1.5 s in all
    budget = fit_to_budget(timers, plan.repeats, 60.0)
    assert (budget.repeats, budget.cells_cut, budget.unfitted_s) == (5, 0, 1.5)
    assert [t.per_round for t in timers] == [10, 10]


def test_the_latency_budget_cuts_iterations_then_rounds_never_below_the_floors() -> None:
    plan = TimingPlan(warmup=1, iterations=10, repeats=5, round_warmup=0)
    timers = _timers_costing([1000.0, 2000.0], plan)  # 30 s a round, 150 s in all
    budget = fit_to_budget(timers, plan.repeats, 60.0)
    assert budget.unfitted_s == 150.0 and budget.cells_cut == 2
    assert budget.planned_s <= 60.0 and budget.repeats >= MIN_REPEATS
    assert all(MIN_ITERATIONS <= t.per_round < 10 for t in timers)
    # A budget no plan can meet still keeps enough to report a median.
    tiny = fit_to_budget(_timers_costing([1000.0, 2000.0], plan), plan.repeats, 1.0)
    assert tiny.repeats == MIN_REPEATS and tiny.planned_s > 1.0


def test_rounds_stop_when_the_next_would_pass_the_budget() -> None:
    """The warm-up's estimate is not trusted alone: a machine slower than it said stops early."""
    budget = Budget(10.0, 6, 5.0, 5.0, 0, 4)
    assert not budget.over(spent_s=8.0, done=2)  # below the floor of rounds: always go on
    assert not budget.over(spent_s=6.0, done=3)  # 8 s after a fourth round
    assert budget.over(spent_s=9.0, done=3)  # 12 s after a fourth
    assert not Budget(None, 6, 5.0, 5.0, 0, 4).over(spent_s=1e9, done=5)
    assert budget.ran(4, 9.04).to_dict()["rounds_run"] == 4


def test_the_pattern_cpu_selects_the_runs_cpu_model(bench_run: RunDir, tmp_path: Path) -> None:
    """bench.backends=[cpu] times the model cpu.json names, whatever its runner's label."""
    from bertrt.artifacts import write_json
    from bertrt.hardware import cpu_flags, cpu_name

    run = RunDir(tmp_path / "run")
    shutil.copytree(bench_run.root, run.root)
    choice = {"model": "onnx-fp32", "static_shapes": False, "cpu": cpu_name()}
    write_json(run.cpu_choice, {**choice, "isa_flags": cpu_flags()})
    run.record("calibrate", [run.onnx("fp32")], [run.cpu_choice], 0.0)
    assert discover(run, threads=1, patterns=["cpu"]).labels() == ["onnxruntime/fp32/cpu"]
    assert discover(run, threads=1, patterns=["torch/fp32"]).labels() == ["torch/fp32/cpu"]

"""Choosing the CPU deployment model per machine: the rule, what is recorded, the moved-run warning.

The machines differ by ISA (an Intel Xeon with AMX, an AMD EPYC with AVX-512
VNNI/BF16 and no AMX), so the flags are given here, not read from this CPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertrt.artifacts import RunDir, write_json
from bertrt.cpu_choice import choose
from bertrt.cpu_choice import document as cm
from bertrt.cpu_choice.candidate import CandidateSpec
from bertrt.cpu_choice.choose import CpuCandidate, pick
from bertrt.cpu_choice.document import cpu_choice_document
from bertrt.runners import openvino_runner, registry
from bertrt.runners.base import Runner
from bertrt.runners.registry import MODELS
from bertrt.runners.timing import TimingPlan

AMX = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
EPYC = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]


# The registry model each OpenVINO candidate is (bertrt.calibration.cpu_candidates);
# ONNX Runtime's graphs may become onnx-cpu.
PUBLISHED = {"openvino-fp32": "ov-fp32", "openvino-nncf-int8": "ov-int8"}


def _cand(name: str, runtime: str, b1: float, b32: float, ok: bool = True) -> CpuCandidate:
    score = (b1 * b32 / 32) ** 0.5
    static = name.endswith("-static")
    return CpuCandidate(
        name,
        "model.onnx",
        runtime,
        "ov-qdq" if name.startswith("openvino-qdq") else PUBLISHED.get(name, "onnx-cpu"),
        static_shapes=static,
        published_if_best_of_runtime=runtime == "onnxruntime",
        val_accuracy=80.0 - (0 if ok else 1),
        latency_ms_b1=b1,
        latency_ms_b32=b32,
        score_ms=score,
        within_budget=ok,
    )


# As measured on the two machines (docs/findings.md): OpenVINO's bf16 wins on AMX,
# ONNX Runtime's folded int8 graph on the EPYC.
ON_AMX = [
    _cand("static-u8s8-folded", "onnxruntime", 6.3, 178.0),
    _cand("fp32-opt", "onnxruntime", 15.3, 460.0),
    _cand("openvino-fp32", "openvino", 4.9, 98.0),
    _cand("openvino-nncf-int8", "openvino", 4.3, 92.0),
]
ON_EPYC = [
    _cand("static-u8s8-folded", "onnxruntime", 3.6, 121.0),
    _cand("fp32-opt", "onnxruntime", 8.5, 280.0),
    _cand("openvino-fp32", "openvino", 7.0, 190.0),
    _cand("openvino-nncf-int8", "openvino", 5.0, 150.0, ok=False),  # over budget here
]


def test_the_fastest_candidate_within_budget_wins_and_ort_keeps_its_own() -> None:
    assert pick(ON_AMX).name == "openvino-nncf-int8"
    assert pick(ON_AMX, runtime="onnxruntime").name == "static-u8s8-folded"
    assert pick(ON_EPYC).name == "static-u8s8-folded"  # the faster int8 IR is over budget
    nothing = [_cand("a", "onnxruntime", 1, 1, ok=False), _cand("b", "onnxruntime", 9, 9)]
    nothing[1].within_budget = False
    nothing[1].val_accuracy = 81.0
    assert pick(nothing).name == "b"  # none in budget: the most accurate


@pytest.mark.parametrize(
    ("flags", "candidates", "model", "runtime"),
    [(AMX, ON_AMX, "ov-int8", "openvino"), (EPYC, ON_EPYC, "onnx-cpu", "onnxruntime")],
)
def test_the_choice_is_recorded_with_the_cpu_and_its_isa(
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    candidates: list[CpuCandidate],
    model: str,
    runtime: str,
) -> None:
    monkeypatch.setattr(cm, "cpu_flags", lambda: flags)
    monkeypatch.setattr(cm, "cpu_name", lambda: "Some CPU")
    document = cpu_choice_document(candidates, threads=2)
    assert (document["model"], document["runtime"]) == (model, runtime)
    assert document["isa_flags"] == flags and document["cpu"] == "Some CPU"
    assert document["threads"] == 2
    assert document["candidates"]["static-u8s8-folded"]["model"] == "onnx-cpu"
    assert document["candidates"]["fp32-opt"]["model"] is None  # not published
    assert document["static_shapes"] is False


def test_a_static_shape_winner_is_served_with_static_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faster = [*ON_AMX, _cand("openvino-qdq-static", "openvino", 3.6, 71.0)]
    document = cpu_choice_document(faster, threads=2)
    assert document["model"] == "ov-qdq" and document["static_shapes"] is True


def test_a_static_shape_cpu_model_runs_on_dynamic_shapes_where_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server sees every shape: it asks for dynamic ones (bertrt.serve.model.load_served)."""
    run = RunDir(tmp_path)
    write_json(run.cpu_choice, {"model": "ov-qdq", "static_shapes": True})
    monkeypatch.setattr(RunDir, "require", lambda *a, **k: None)
    monkeypatch.setattr(registry, "chosen_cpu_model", lambda run: "ov-qdq")
    static = registry.runner_for_model(run, "cpu")
    dynamic = registry.runner_for_model(run, "cpu", static_shapes=False)
    assert isinstance(static, openvino_runner.OpenVinoRunner)
    assert isinstance(dynamic, openvino_runner.OpenVinoRunner)
    assert static.static_shapes and not dynamic.static_shapes


def test_a_run_moved_to_a_cpu_with_other_flags_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunDir(tmp_path)
    write_json(run.cpu_choice, {"model": "ov-int8", "cpu": "Xeon", "isa_flags": AMX})
    monkeypatch.setattr(registry, "cpu_name", lambda: "Xeon")
    monkeypatch.setattr(registry, "cpu_flags", lambda: AMX)
    with caplog.at_level(logging.WARNING):
        assert registry.chosen_cpu_model(run) == "ov-int8"
    assert not caplog.records
    monkeypatch.setattr(registry, "cpu_name", lambda: "EPYC")
    monkeypatch.setattr(registry, "cpu_flags", lambda: EPYC)
    with caplog.at_level(logging.WARNING):
        assert registry.chosen_cpu_model(run) == "ov-int8"
    [record] = caplog.records
    assert "chosen on Xeon" in record.getMessage() and "amx_int8" in record.getMessage()
    assert "rerun `bertrt calibrate" in record.getMessage()


def test_openvino_computes_in_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openvino_runner, "cpu_has_native_bf16", lambda: True)
    assert openvino_runner.OpenVinoRunner("m.onnx").inference_precision == "bf16"
    monkeypatch.setattr(openvino_runner, "cpu_has_native_bf16", lambda: False)
    assert openvino_runner.OpenVinoRunner("m.onnx").inference_precision == "f32"


@pytest.mark.parametrize(("flags", "goal"), [(AMX, 1.1), (EPYC, 1.0)])
def test_the_bench_holds_the_cpu_model_to_its_machines_goals(flags: list[str], goal: float) -> None:
    from bertrt.bench.report import summary_targets
    from tests.unit.test_bench_results import accuracy_row, fixed_results, latency_row

    results = fixed_results()
    results.machine["cpu_flags"] = flags
    results.cpu_model = "openvino/int8/cpu"
    for label, b1, b32 in (
        ("openvino/int8/cpu", 4.0, 80.0),
        ("openvino/fp32/cpu", 4.9, 98.0),
        ("torch/bf16-autocast/cpu", 18.0, 160.0),
    ):
        results.latency += [latency_row(label, 1, [b1] * 3), latency_row(label, 32, [b32] * 3)]
        results.accuracy.append(accuracy_row(label, 0.79))
    targets = {t.target: t for t in summary_targets(results, 0.5)}
    isa = "AMX" if "amx_bf16" in flags else "no AMX"
    oob = targets[f"cpu model vs openvino/fp32/cpu, batch 32, seq 128 ({isa})"]
    assert oob.goal == f">= {goal:g}x" and oob.measured == pytest.approx(98.0 / 80.0)
    assert oob.met == (goal <= 98.0 / 80.0)
    bf16 = targets[f"cpu model vs torch/bf16-autocast/cpu, batch 32, seq 128 ({isa})"]
    assert bf16.measured == pytest.approx(2.0) and bf16.met
    assert "accuracy drop of openvino/int8/cpu vs torch fp32 (points)" in targets


def test_roofline_counts_bert_flops_and_the_isas_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertrt.bench import roofline as rl

    # MiniLM-L6 (6 layers, hidden 384, FFN 1536) at batch 32 x seq 128: ~92 GFLOP.
    assert rl.bert_flops(6, 384, 1536, 32, 128) / 1e9 == pytest.approx(91.8, abs=0.1)
    assert rl.peak_per_cycle(AMX, "bf16") == (1024, "amx_bf16")
    assert rl.peak_per_cycle(EPYC, "bf16") == (128, "avx512_bf16")
    assert rl.peak_per_cycle(EPYC, "int8") == (256, "avx512_vnni")
    monkeypatch.setattr(rl, "nominal_ghz", lambda: 2.0)
    line = rl.roofline("openvino/fp32/cpu", 92.0, 32, 128, (6, 384, 1536), "bf16", AMX, 2)
    assert line.achieved_tflops == pytest.approx(0.998, abs=0.01)
    assert line.peak_tflops == pytest.approx(4.1, abs=0.01)  # 2 cores x 2 GHz x 1024
    assert line.fraction_of_peak == pytest.approx(0.244, abs=0.01)


class _Clock(Runner):
    """A runner that logs each call and takes a fixed time per row."""

    def __init__(self, name: str, ms_per_row: float, calls: list[str]) -> None:
        super().__init__()
        self.variant, self.ms_per_row, self.calls = name, ms_per_row, calls

    def _activate(self) -> None: ...

    def _deactivate(self) -> None: ...

    def _infer(self, prepared: Any) -> Any:
        rows = len(prepared["input_ids"])
        self.calls.append(f"{self.variant}/b{rows}")
        time.sleep(self.ms_per_row * rows / 1e3)
        return np.zeros((rows, 2), dtype=np.float32)


def test_candidates_are_timed_in_interleaved_rounds_with_paired_ratios(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round r of every (candidate, shape) runs before round r + 1 of any, and each
    candidate's margin is a ratio taken within rounds."""
    calls: list[str] = []
    speeds = {"fast": 0.5, "slow": 1.0}
    monkeypatch.setattr(
        CandidateSpec, "runner", lambda self, threads: _Clock(self.name, speeds[self.name], calls)
    )
    monkeypatch.setattr(
        choose,
        "TIMING",
        {1: TimingPlan(1, 2, 3, round_warmup=0), 32: TimingPlan(1, 1, 3, round_warmup=0)},
    )
    specs = [CandidateSpec(n, "x", MODELS["onnx-cpu"], Path(n)) for n in speeds]
    scored = [(_cand(n, "onnxruntime", 1, 1), spec) for n, spec in zip(speeds, specs, strict=True)]
    batches = [{"input_ids": np.zeros((b, 8), dtype=np.int64)} for b in (1, 32)]
    rounds = choose.time_all(scored, batches, threads=1)
    timed = calls[4:]  # after one warm-up call per (candidate, shape)
    one_round = ["fast/b1", "fast/b1", "fast/b32", "slow/b1", "slow/b1", "slow/b32"]
    assert timed == one_round * 3
    assert len(rounds["fast"]) == 3 and all(
        s / f > 1.5 for s, f in zip(rounds["slow"], rounds["fast"], strict=True)
    )
    fast, slow = (cand for cand, _ in scored)
    assert fast.score_ms < slow.score_ms

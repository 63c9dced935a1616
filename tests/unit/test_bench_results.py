"""Typed bench results: results.json keeps the schema it had as dicts, results.md its text.

``RESULTS_SCHEMA`` is the key structure of a results.json written (second
run, so with ``reproducibility``) by the dict-based stage before the results
were typed, plus the keys added since (only added: the N-class accuracy
figures, after the old ones, which ``ACCURACY_KEYS_BEFORE_N_CLASSES`` pins);
``tests/unit/test_bench.py`` checks the stage's file against it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bertrt.bench import reproducibility
from bertrt.bench.report import ACC_FIELDS, LATENCY_FIELDS, summary_targets, to_csv, to_markdown
from bertrt.bench.results import (
    AccuracyRow,
    Backend,
    BenchResults,
    E2eRun,
    E2eSummary,
    LatencyRow,
    ModelInfo,
    PolicyFigures,
)
from bertrt.config import BenchConfig

# Not structure: which GPU, which packages, which backends and model files.
# Present with either a value or null, depending on the run and machine.
OPAQUE = {"machine.versions", "machine.gpu", "backend_models", "cpu_model", "roofline"}
CSV_HEADER = (
    "backend,framework,variant,precision,device,batch,seq,p50_ms,p90_ms,p99_ms,mean_ms,"
    "samples_per_s,speedup_vs_torch_fp32,iterations,repeats,timer,accuracy,f1,agreement,"
    "max_abs_diff,macro_f1,log_loss"
)
# The accuracy row of results.json before N-class support, in its order: every later
# version keeps these keys first (new ones go after them), so old readers still work.
ACCURACY_KEYS_BEFORE_N_CLASSES = (
    "backend", "framework", "variant", "precision", "device", "n", "accuracy", "f1",
    "closed_precision", "closed_recall", "agreement", "max_abs_diff",
)  # fmt: skip


def key_structure(value: Any, path: str = "") -> Any:
    """Keys and nesting of a JSON value, with type names at the leaves; a list is its kinds."""
    if path in OPAQUE:
        return "any"
    if isinstance(value, dict):
        return {k: key_structure(v, f"{path}.{k}".lstrip(".")) for k, v in value.items()}
    if isinstance(value, list):
        kinds = {json.dumps(key_structure(v, path)) for v in value}
        return [json.loads(k) for k in sorted(kinds)]
    return type(value).__name__


RESULTS_SCHEMA: dict[str, Any] = {
    "run": "str",
    "quick": "bool",
    "settings": {
        "batch_sizes": ["int"],
        "seq_lengths": ["int"],
        "warmup": "int",
        "iterations": "int",
        "min_round_s": "float",
        "max_iterations": "int",
        "repeats": "int",
        "latency_budget_s": "float",  # added with the bench's time budget
        "threads": "NoneType",
        "backends": ["str"],
        "accuracy_rows": "NoneType",
        "accuracy_batch_size": "int",
        "e2e_batch_size": "int",
        "e2e_backends": ["str"],
        "e2e_rows": "int",
        "e2e_repeats": "int",
        "e2e_max_lengths": ["int"],
        "quick": "bool",
        "against": "NoneType",
    },
    "model": {
        "dir": "str",
        "model_type": "str",
        "layers": "int",
        "hidden_size": "int",
        "vocab_size": "int",
        "max_position_embeddings": "int",
    },
    "machine": {
        "cpu": "str",
        "cpu_flags": ["str"],
        "cores": "int",
        "torch_cpu_capability": "str",
        "threads": {
            "torch_intra_op": "int",
            "torch_inter_op": "int",
            "onnxruntime_intra_op": "int",
            "onnxruntime_inter_op": "int",
        },
        "gpu": "any",
        "load_average_at_end": ["float"],
        "onnxruntime_providers": ["str"],
        "platform": "str",
        "python": "str",
        "versions": "any",
        "load_average_at_start": ["float"],
        "cpu_steal_percent_latency_phase": "float",
    },
    "reference": "str",
    "latency_inputs": "str",
    "latency": [
        {
            "backend": "str",
            "framework": "str",
            "variant": "str",
            "precision": "str",
            "device": "str",
            "batch": "int",
            "seq": "int",
            "p50_ms": "float",
            "p90_ms": "float",
            "p99_ms": "float",
            "mean_ms": "float",
            "min_ms": "float",
            "samples_per_s": "float",
            "p50_spread_ms": ["float"],
            "samples_per_s_spread": ["float"],
            "iterations": "int",
            "repeats": "int",
            "timer": "str",
            "round_p50_ms": ["float"],
            "speedup_vs_torch_fp32": "float",
            "run_to_run_p50_ms": ["float"],
            "run_to_run_runs": "int",
        }
    ],
    "accuracy": [
        {
            "backend": "str",
            "framework": "str",
            "variant": "str",
            "precision": "str",
            "device": "str",
            "n": "int",
            "accuracy": "float",
            "f1": "float",
            "closed_precision": "float",
            "closed_recall": "float",
            "agreement": "float",
            "max_abs_diff": "float",
            # Added with N-class support (after the keys above, which stay).
            "macro_f1": "float",
            "log_loss": "float",
            "positive_class": "str",
            "per_class": [
                {
                    "name": "str",
                    "precision": "float",
                    "recall": "float",
                    "f1": "float",
                    "support": "int",
                }
            ],
        }
    ],
    "e2e": {
        "backend": "str",
        "rows": "int",
        "max_length": "int",
        "pad_to_max": {
            "samples_per_s": "float",
            "samples_per_s_spread": ["float"],
            "wall_s": "float",
            "real_token_fraction": "float",
        },
        "bucketed": {
            "samples_per_s": "float",
            "samples_per_s_spread": ["float"],
            "wall_s": "float",
            "real_token_fraction": "float",
        },
        "bucketing_speedup": "float",
        "runs": [
            {
                "backend": "str",
                "rows": "int",
                "batch_size": "int",
                "max_length": "int",
                "repeats": "int",
                "pad_to_max": {
                    "samples_per_s": "float",
                    "samples_per_s_spread": ["float"],
                    "wall_s": "float",
                    "real_token_fraction": "float",
                },
                "bucketed": {
                    "samples_per_s": "float",
                    "samples_per_s_spread": ["float"],
                    "wall_s": "float",
                    "real_token_fraction": "float",
                },
                "bucketing_speedup": "float",
            }
        ],
    },
    "skipped": [{"backend": "str", "reason": "str"}],
    "backend_models": "any",
    "targets": [
        {
            "target": "str",
            "measured": "float",
            "goal": "str",
            "met": "bool",
            "detail": "str",
            "spread": ["float"],
        },
        {"target": "str", "measured": "float", "goal": "str", "met": "bool", "detail": "str"},
    ],
    "phases": {"latency_and_accuracy_s": "float", "e2e_s": "float"},
    "wall_s": "float",
    "written_at": "str",
    "reproducibility": {
        "previous": "str",
        "previous_written_at": "str",
        "comparable": "bool",
        "cells": "int",
        "within_previous_spread": "int",
        "spreads_overlap": "int",
        "max_abs_change_pct": "float",
        "models_changed": [],
        "latency": [
            {
                "backend": "str",
                "batch": "int",
                "seq": "int",
                "previous_p50_ms": "float",
                "previous_spread_ms": ["float"],
                "p50_ms": "float",
                "change_pct": "float",
                "within_previous_spread": "bool",
                "spreads_overlap": "bool",
            }
        ],
        "targets": [
            {
                "target": "str",
                "previous": "float",
                "previous_spread": "NoneType",
                "measured": "float",
                "within_previous_spread": "NoneType",
                "met_both": "bool",
            },
            {
                "target": "str",
                "previous": "float",
                "previous_spread": ["float"],
                "measured": "float",
                "within_previous_spread": "bool",
                "met_both": "bool",
            },
        ],
    },
    "runs_in_history": "int",
    "cpu_model": "any",
    "roofline": "any",
    # Added with the bench's time budget: what bench.latency_budget_s bought.
    "latency_budget": {
        "budget_s": "float",
        "repeats": "int",
        "planned_s": "float",
        "unfitted_s": "float",
        "cells_cut": "int",
        "cells": "int",
        "rounds_run": "int",
        "spent_s": "float",
    },
}


def backend(label: str) -> Backend:
    framework, variant, device = label.split("/")
    precision = "int8" if "int8" in variant else "fp32"
    return Backend(label, framework, variant, precision, device)


def latency_row(label: str, batch: int, rounds: list[float], seq: int = 128) -> LatencyRow:
    p50 = sorted(rounds)[len(rounds) // 2]
    return LatencyRow(
        **backend(label).__dict__,
        batch=batch,
        seq=seq,
        p50_ms=p50,
        p90_ms=p50 * 1.1,
        p99_ms=p50 * 1.2,
        mean_ms=p50,
        min_ms=min(rounds),
        samples_per_s=batch * 1e3 / p50,
        p50_spread_ms=[min(rounds), max(rounds)],
        samples_per_s_spread=[batch * 1e3 / max(rounds), batch * 1e3 / min(rounds)],
        iterations=10 * len(rounds),
        repeats=len(rounds),
        timer="perf_counter",
        round_p50_ms=rounds,
    )


def per_class(names: tuple[str, ...], f1s: list[float]) -> list[dict[str, Any]]:
    return [
        {"name": n, "precision": f, "recall": f, "f1": f, "support": 100}
        for n, f in zip(names, f1s, strict=True)
    ]


def accuracy_row(label: str, accuracy: float, agreement: float | None = 1.0) -> AccuracyRow:
    score = {"n": 1000, "accuracy": accuracy, "f1": 0.75, "closed_precision": 0.7}
    score |= {"closed_recall": 0.8, "agreement": agreement, "max_abs_diff": 0.0123}
    score |= {"macro_f1": 0.8125, "log_loss": 0.4321, "positive_class": "closed"}
    score["per_class"] = per_class(("open", "closed"), [0.875, 0.75])
    return AccuracyRow.from_score(backend(label), score)


def e2e_run(label: str, max_length: int, pad: float, bucketed: float) -> E2eRun:
    def figures(rate: float, real: float) -> PolicyFigures:
        return PolicyFigures(rate, [rate * 0.9, rate * 1.1], 1000 / rate, real)

    return E2eRun(
        label, 1000, 32, max_length, 3, figures(pad, 0.3), figures(bucketed, 0.9), bucketed / pad
    )


def fixed_results(slow: float = 1.0, quick: bool = False) -> BenchResults:
    """Two backends at batch 1 and 32, seq 128; ``slow`` scales every latency."""
    fp32, cpu = "torch/fp32/cpu", "onnxruntime/cpu/cpu"
    latency = [
        latency_row(fp32, 1, [18.0 * slow, 20.0 * slow, 19.0 * slow]),
        latency_row(cpu, 1, [4.0 * slow, 5.0 * slow, 4.5 * slow]),
        latency_row(fp32, 32, [540.0 * slow, 560.0 * slow, 550.0 * slow]),
        latency_row(cpu, 32, [120.0 * slow, 125.0 * slow, 122.0 * slow]),
    ]
    runs = [e2e_run(cpu, 128, 250.0, 320.0), e2e_run(cpu, 512, 60.0, 220.0)]
    results = BenchResults(
        run="runs/default",
        settings=BenchConfig(batch_sizes=[1, 32], seq_lengths=[128], repeats=3, quick=quick),
        model=ModelInfo("runs/default/merged", "bert", 6, 384, 30522, 512),
        machine={
            "cpu": "AMD EPYC",
            "cpu_flags": ["avx512f", "avx512_vnni"],
            "cores": 2,
            "threads": {"torch_intra_op": 2, "torch_inter_op": 1, "onnxruntime_intra_op": 2},
            "gpu": None,
            "versions": {"torch": "2.4.0", "onnxruntime": "1.19.0", "transformers": "4.44.0"},
            "load_average_at_end": [4.1, 2.0, 1.0],
            "load_average_at_start": [3.2, 2.0, 1.0],
            "cpu_steal_percent_latency_phase": 0.04,
        },
        reference=fp32,
        latency=latency,
        accuracy=[accuracy_row(fp32, 0.791), accuracy_row(cpu, 0.7918, 0.985)],
        e2e=E2eSummary(runs, primary=runs[0]),
        skipped=[{"backend": "tensorrt/fp16/cuda", "reason": "CUDA not available"}],
        backend_models={fp32: {"merged": "aaa"}, cpu: {"onnx/model.cpu.onnx": "bbb"}},
        phases={"latency_and_accuracy_s": 60.0, "e2e_s": 20.0},
        wall_s=85.4,
        written_at="2026-11-23T10:00:00+00:00",
    )
    from bertrt.bench.report import add_speedups

    add_speedups(results.latency)
    results.targets = summary_targets(results, 0.5)
    return results


def checked_against_previous() -> BenchResults:
    """A second run, 4 % slower, checked against the first and annotated from the history."""
    previous = fixed_results().to_dict()
    results = fixed_results(slow=1.04)
    results.reproducibility = reproducibility.compare(previous, results, "results.previous.json")
    history = [reproducibility.history_entry(previous)]
    results.runs_in_history = reproducibility.add_run_to_run(results, history)
    return results


def test_to_dict_has_the_schema_results_json_always_had() -> None:
    saved = json.loads(json.dumps(checked_against_previous().to_dict()))
    structure = key_structure(saved)
    for key in ("run", "quick", "model", "latency", "accuracy", "e2e", "targets", "skipped"):
        assert structure[key] == RESULTS_SCHEMA[key], key
    assert list(saved) == list(RESULTS_SCHEMA)
    assert list(saved["latency"][0]) == list(RESULTS_SCHEMA["latency"][0])
    assert structure["reproducibility"] == RESULTS_SCHEMA["reproducibility"]
    first = fixed_results().to_dict()
    assert "reproducibility" not in first and first["quick"] is False
    assert "spread" not in first["targets"][2] and first["targets"][0]["spread"][0] > 0


def test_results_json_only_gains_keys() -> None:
    """New figures are added after the old ones; none of the old keys may go."""
    saved = json.loads(json.dumps(fixed_results().to_dict()))
    for row in saved["accuracy"]:
        keys = tuple(row)
        assert keys[: len(ACCURACY_KEYS_BEFORE_N_CLASSES)] == ACCURACY_KEYS_BEFORE_N_CLASSES
        assert {"macro_f1", "log_loss", "positive_class", "per_class"} <= set(keys)
    schema_keys = tuple(RESULTS_SCHEMA["accuracy"][0])
    assert schema_keys[: len(ACCURACY_KEYS_BEFORE_N_CLASSES)] == ACCURACY_KEYS_BEFORE_N_CLASSES
    assert ACC_FIELDS[:4] == ("accuracy", "f1", "agreement", "max_abs_diff")


def test_accuracy_row_from_an_older_score_dict() -> None:
    """A score without the N-class figures still loads (they stay empty); a missing old key fails."""
    score = {"n": 10, "accuracy": 0.8, "f1": 0.8, "closed_precision": 0.8, "closed_recall": 0.8}
    score |= {"agreement": 1.0, "max_abs_diff": 0.0, "extra": "ignored"}
    row = AccuracyRow.from_score(backend("torch/fp32/cpu"), score)
    assert row.macro_f1 is None and row.log_loss is None and row.per_class == []
    del score["closed_recall"]
    with pytest.raises(KeyError, match="closed_recall"):
        AccuracyRow.from_score(backend("torch/fp32/cpu"), score)


def test_markdown_of_a_five_class_run() -> None:
    names = ("open", "not a real question", "not constructive", "off topic", "too localized")
    results = fixed_results()
    for row, f1s in zip(
        results.accuracy, ([0.9, 0.5, 0.4, 0.3, 0.2], [0.9, 0.5, 0.45, 0.3, 0.1]), strict=True
    ):
        row.positive_class, row.per_class = None, per_class(names, f1s)
        row.f1 = row.macro_f1 = sum(f1s) / 5
    md = to_markdown(results, []).splitlines()
    at = md.index("## Accuracy on the test split")
    assert md[at + 2] == (
        "| backend | precision | rows | accuracy | macro-F1 | log loss "
        "| agreement with torch/fp32/cpu | max abs logit diff |"
    )
    assert md[at + 5] == (
        "| onnxruntime/cpu/cpu | fp32 | 1000 | 0.7918 | 0.4500 | 0.4321 | 0.9850 | 0.01230 |"
    )
    at = md.index("F1 per class:")
    assert md[at + 2] == "| backend | " + " | ".join(names) + " |"
    assert md[at + 5] == "| onnxruntime/cpu/cpu | 0.9000 | 0.5000 | 0.4500 | 0.3000 | 0.1000 |"


def test_e2e_without_runs_keeps_only_the_note() -> None:
    assert E2eSummary(note="none selected").to_dict() == {"runs": [], "note": "none selected"}


def test_csv_keeps_its_columns() -> None:
    text = to_csv(fixed_results())
    assert text.splitlines()[0] == CSV_HEADER == ",".join([*LATENCY_FIELDS, *ACC_FIELDS])
    assert text.splitlines()[2].startswith("onnxruntime/cpu/cpu,onnxruntime,cpu,fp32,cpu,1,128,")
    assert text.splitlines()[2].endswith(",0.7918,0.75,0.985,0.0123,0.8125,0.4321")


def test_markdown_renders_every_section() -> None:
    md = to_markdown(checked_against_previous(), ["latency.png"]).splitlines()
    assert md[:2] == ["# Benchmark results", ""]
    assert md[2] == (
        "Machine: AMD EPYC, 2 cores (avx512f, avx512_vnni), GPU: none. Threads: torch 2, "
        "onnxruntime 2. torch 2.4.0, onnxruntime 1.19.0, transformers 4.44.0."
    )
    assert md[4].startswith("Model: bert, 6 layers, hidden 384. Mode: full; wall time 85 s.")
    assert md[4].endswith(" CPU steal time during the latency rounds: 0.04%.")
    assert md[6].startswith("**Warning:** the 1-minute load average was 3.2 then 4.1 on 2 cores")
    at = md.index("## Targets")
    assert md[at + 2 : at + 4] == [
        "| target | measured | goal | met | detail |",
        "|---|---|---|---|---|",
    ]
    assert md[at + 4] == (
        "| best ONNX Runtime vs torch fp32, batch 1, seq 128 | 4.22 (4.00–4.50) | >= 3x | yes | "
        "onnxruntime/cpu/cpu 4.68 ms vs torch/fp32/cpu 19.76 ms; per-round ratio 4.00–4.50 |"
    )
    assert (
        "| length-bucketed vs pad-to-max end-to-end throughput, max_length 128 | 1.28 |"
        in (md[at + 7])
    )
    at = md.index("## Run-to-run")
    assert md[at + 2].startswith("Compared with the previous run (results.previous.json, written ")
    assert "the p50 of 2 of 4 latency cells fell inside" in md[at + 2]
    assert "| torch/fp32/cpu | 32 | 128 | 550.00 (540.00–560.00) | 572.00 | +4.0% | **no** |" in md
    at = md.index("## Latency")
    assert md[at + 2].startswith("*run-to-run p50* is the range of each p50 over the 2 comparable")
    assert md[at + 4] == (
        "| backend | precision | batch | seq | p50 ms | p90 ms | p99 ms | p50 spread ms | "
        "run-to-run p50 ms (runs) | samples/s | vs torch fp32 |"
    )
    assert md[at + 6] == (
        "| onnxruntime/cpu/cpu | fp32 | 1 | 128 | 4.68 | 5.15 | 5.62 | 4.16–5.20 | 4.50–4.68 (2) "
        "| 213.7 | 4.22x |"
    )
    at = md.index("## Accuracy on the test split")
    assert md[at + 2] == (
        "| backend | precision | rows | accuracy | F1 (closed) | macro-F1 | log loss "
        "| agreement with torch/fp32/cpu | max abs logit diff |"
    )
    assert md[at + 5] == (
        "| onnxruntime/cpu/cpu | fp32 | 1000 | 0.7918 | 0.7500 | 0.8125 | 0.4321 | 0.9850 "
        "| 0.01230 |"
    )
    assert "F1 per class:" not in md  # binary: the F1 (closed) column says it
    at = md.index("## End-to-end (tokenize + infer)")
    assert md[at + 5] == (
        "| onnxruntime/cpu/cpu | 1000 | 32 | 512 | 60.0 | 220.0 | 3.67x | 30% / 90% |"
    )
    at = md.index("## Skipped")
    assert md[at + 2] == "- `tensorrt/fp16/cuda`: CUDA not available"
    assert md[md.index("## Plots") + 2 :] == ["![latency.png](latency.png)"]


def test_markdown_of_a_first_quick_run() -> None:
    results = fixed_results(quick=True)
    results.machine["load_average_at_start"] = [0.5, 0.5, 0.5]
    results.machine["load_average_at_end"] = None
    results.e2e = E2eSummary(note="no backend selected by bench.e2e_backends")
    md = to_markdown(results, []).splitlines()
    assert "Mode: quick" in md[4] and not any(line.startswith("**Warning") for line in md)
    assert "## Run-to-run" not in md and "## Plots" not in md
    assert "run-to-run p50 ms (runs)" not in md[md.index("## Latency") + 2]
    at = md.index("## End-to-end (tokenize + infer)")
    assert md[at + 2] == "no backend selected by bench.e2e_backends"

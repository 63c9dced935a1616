"""cpu.json: the run's `cpu` model, the rule that chose it, and the CPU and ISA it was chosen on.

The fastest runtime differs between CPUs (OpenVINO's bf16 kernels win on
AMX, ONNX Runtime's int8 graph on an AVX-512 EPYC), so a run moved to a CPU
with other flags is warned before it serves or benches
(:func:`bertrt.runners.registry.chosen_cpu_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertrt.cpu_choice.choose import ChoiceRule, CpuCandidate, pick
from bertrt.hardware import cpu_flags, cpu_name, usable_cores


def published_names(candidates: Sequence[CpuCandidate]) -> dict[str, str]:
    """The registry model each candidate is published as: its own, except that of the ONNX
    Runtime graphs only the fastest is published (as onnx-cpu)."""
    best_ort = pick(candidates, runtime="onnxruntime").name
    return {
        c.name: c.model
        for c in candidates
        if not c.published_if_best_of_runtime or c.name == best_ort
    }


def cpu_choice_document(
    candidates: Sequence[CpuCandidate], threads: int | None, rule: ChoiceRule | None = None
) -> dict[str, Any]:
    """What cpu.json holds (its keys and their meaning are what the registry reads)."""
    best = pick(candidates)
    published = published_names(candidates)
    return {
        "model": published[best.name],
        "candidate": best.name,
        "runtime": best.runtime,
        "static_shapes": best.static_shapes,
        **({"rule": rule.to_dict()} if rule is not None else {}),
        "cpu": cpu_name(),
        "isa_flags": cpu_flags(),
        "threads": threads or usable_cores(),
        "candidates": {
            c.name: {
                "model": published.get(c.name),
                "runtime": c.runtime,
                "within_budget": c.within_budget,
                "val_accuracy": c.val_accuracy,
                "agreement": c.agreement,
                "latency_ms_b1": c.latency_ms_b1,
                "latency_ms_b32": c.latency_ms_b32,
                "paired_ratio_vs_chosen": c.paired_ratio_vs_chosen,
            }
            for c in candidates
        },
    }

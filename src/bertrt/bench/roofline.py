"""How close the CPU model comes to what the CPU could do: achieved TFLOP/s against the ISA's peak.

A speed-up over another runtime says nothing about the headroom left. The
forward pass of a BERT encoder at (batch, seq) costs, per layer, the four
attention projections (8·s·h²), the feed-forward pair (4·s·h·i) and the two
attention matmuls (4·s²·h) multiply-add FLOPs, times the batch; the
classifier head is negligible. The peak is cores × clock × FLOPs per cycle of
the fastest units the ISA has for the precision the model computes in
(e.g. AMX: 1,024 bf16 or 2,048 int8 operations per cycle per core). On a VM
whose vCPUs are hyperthreads of fewer physical cores, and at the nominal
clock, that peak is an upper bound, so the fraction is a lower bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bertrt.hardware import nominal_ghz

# FLOPs (or int8 ops) per cycle per core of each ISA's fastest units, by precision.
PEAK_PER_CYCLE: dict[str, tuple[tuple[str, int], ...]] = {
    "int8": (("amx_int8", 2048), ("avx512_vnni", 256), ("avx_vnni", 128), ("avx2", 64)),
    "bf16": (("amx_bf16", 1024), ("avx512_bf16", 128), ("avx512f", 64), ("avx2", 32)),
    "fp32": (("avx512f", 64), ("avx2", 32)),
}


def bert_flops(layers: int, hidden: int, intermediate: int, batch: int, seq: int) -> float:
    """Multiply-add FLOPs of one encoder forward pass (see the module docstring)."""
    per_layer = 8 * seq * hidden**2 + 4 * seq * hidden * intermediate + 4 * seq**2 * hidden
    return float(layers * per_layer * batch)


def peak_per_cycle(flags: list[str], precision: str) -> tuple[int, str]:
    """FLOPs per cycle per core for ``precision`` on a CPU with ``flags``, and the unit."""
    for flag, per_cycle in PEAK_PER_CYCLE.get(precision, PEAK_PER_CYCLE["fp32"]):
        if flag in flags:
            return per_cycle, flag
    return 16, "scalar/SSE"


@dataclass
class Roofline:
    backend: str
    batch: int
    seq: int
    precision: str  # what the model computes its matmuls in
    gflop: float
    achieved_tflops: float
    peak_tflops: float | None
    peak_unit: str
    fraction_of_peak: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roofline(
    backend: str,
    p50_ms: float,
    batch: int,
    seq: int,
    dims: tuple[int, int, int],
    precision: str,
    flags: list[str],
    cores: int,
) -> Roofline:
    """``dims`` = (layers, hidden, intermediate) of the model."""
    flops = bert_flops(*dims, batch, seq)
    achieved = flops / (p50_ms / 1e3) / 1e12
    per_cycle, unit = peak_per_cycle(flags, precision)
    ghz = nominal_ghz()
    peak = cores * ghz * 1e9 * per_cycle / 1e12 if ghz else None
    return Roofline(
        backend,
        batch,
        seq,
        precision,
        round(flops / 1e9, 2),
        round(achieved, 3),
        round(peak, 2) if peak else None,
        unit,
        round(achieved / peak, 3) if peak else None,
    )

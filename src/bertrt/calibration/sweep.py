"""Choose the INT8 model on validation accuracy: methods/percentiles, then exclusions.

1. Every calibration candidate (minmax, entropy, percentiles) is quantized
   and scored on the validation split (capped at calibration.eval_rows).
2. If the best is still more than accuracy_budget points below
   fp32, a per-layer sensitivity pass quantizes one MatMul/Gemm at a time and
   measures how far its logits move from fp32 on a slice of validation rows;
   the most sensitive nodes are then left in float, 1, 2, 4, ... up to
   calibration.sensitivity_max_excluded, until the budget is met.
The test split is never read here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bertrt.calibration.quantize import Candidate, quantize_qdq
from bertrt.runners.predict import TokenizedRows, predict_logits
from bertrt.runners.registry import runner_for_file

log = logging.getLogger(__name__)


def logits(path: Path, data: TokenizedRows, threads: int | None = None) -> np.ndarray:
    """Logits of one ONNX model on the validation rows (CPU provider, the project's settings)."""
    with runner_for_file(path, "onnx-fp32", threads) as runner:
        return predict_logits(runner, data)


def accuracy_of(out: np.ndarray, data: TokenizedRows) -> float:
    """Accuracy in percent."""
    return 100.0 * data.accuracy(out)


@dataclass
class Scored:
    name: str
    val_accuracy: float
    drop: float
    excluded: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sensitivity(
    model_path: Path,
    ranges: Any,
    nodes: Sequence[str],
    reference: np.ndarray,
    data: TokenizedRows,
    workdir: Path,
) -> list[tuple[str, float]]:
    """Per node: mean squared logit error vs fp32 when only that node is quantized.

    Sorted most sensitive first.
    """
    scores = []
    for node in tqdm(nodes, desc="sensitivity", unit="node"):
        path = workdir / "one-node.onnx"
        others = [n for n in nodes if n != node]
        quantize_qdq(model_path, ranges, path, nodes_to_exclude=others)
        err = float(np.mean((logits(path, data) - reference) ** 2))
        scores.append((node, err))
    return sorted(scores, key=lambda s: -s[1])


def exclusion_steps(limit: int) -> list[int]:
    """1, 2, 4, ... up to ``limit`` (always including ``limit``)."""
    steps, k = [], 1
    while k < limit:
        steps.append(k)
        k *= 2
    return [*steps, limit] if limit > 0 else []


def pick_best(scored: Sequence[Scored]) -> Scored:
    """Highest validation accuracy; ties go to fewer excluded nodes, then the earlier candidate."""
    return max(enumerate(scored), key=lambda e: (e[1].val_accuracy, -len(e[1].excluded), -e[0]))[1]


def candidate_grid(percentiles: Sequence[float]) -> list[Candidate]:
    return [
        Candidate("minmax"),
        Candidate("entropy"),
        *(Candidate("percentile", p) for p in percentiles),
    ]

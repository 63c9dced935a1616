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
from bertrt.export.verify import ort_session
from bertrt.modeling import OUTPUT_NAME, Batch, encode

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Validation rows, tokenized once, batched by length (less padding, same accuracy)."""

    batches: list[Batch]
    labels: list[np.ndarray]

    @classmethod
    def build(
        cls,
        tokenizer: Any,
        texts: Sequence[str],
        labels: Sequence[int],
        max_length: int,
        batch_size: int = 32,
    ) -> EvalSet:
        lengths = [
            len(ids)
            for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        ]
        order = np.argsort(lengths, kind="stable")
        y = np.asarray(labels)
        batches, ys = [], []
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            batches.append(encode(tokenizer, [texts[j] for j in idx], max_length))
            ys.append(y[idx])
        return cls(batches, ys)

    @property
    def rows(self) -> int:
        return int(sum(len(y) for y in self.labels))


def logits(path: Path, data: EvalSet, threads: int = 2) -> np.ndarray:
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    return np.concatenate(
        [session.run([OUTPUT_NAME], {n: b[n] for n in names})[0] for b in data.batches]
    )


def accuracy_of(out: np.ndarray, data: EvalSet) -> float:
    """Accuracy in percent."""
    return float(100.0 * np.mean(out.argmax(axis=1) == np.concatenate(data.labels)))


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
    data: EvalSet,
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

"""Parity of an ONNX graph against the PyTorch model, apart from the export itself.

Like optimum's exporters, verification is its own function and raises typed
errors that say what differed, by how much, at which tolerance and on which
batch. The batches are real validation rows at several batch sizes and
sequence lengths, padded to the length (so padded positions are exercised)
and, once, dynamically padded to the longest row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.errors import VerificationError
from bertrt.modeling import OUTPUT_NAME, Batch, encode, select_inputs
from bertrt.ort_sessions import cpu_session


class ShapeMismatchError(VerificationError):
    """The ONNX output's shape differs from PyTorch's on the same batch."""


class ToleranceExceededError(VerificationError):
    """The largest absolute logit difference is above the tolerance."""


@dataclass
class ParityCase:
    name: str
    batch: Batch
    reference: np.ndarray | None = None


@dataclass
class CaseResult:
    case: str
    shape: list[int]
    max_abs_diff: float
    padded_fraction: float


@dataclass
class VerifyReport:
    model: str
    tolerance: float
    max_abs_diff: float
    cases: list[CaseResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parity_cases(
    tokenizer: Any,
    texts: Sequence[str],
    batch_sizes: Sequence[int],
    seq_lengths: Sequence[int],
) -> list[ParityCase]:
    """Batches of real rows: every (batch, seq) padded to seq, plus one dynamically padded."""
    texts = list(texts)
    if not texts:
        raise VerificationError("verify: no validation rows to check parity on")
    cases = []
    for bs in batch_sizes:
        for seq in seq_lengths:
            chunk = [texts[(i + bs * seq) % len(texts)] for i in range(bs)]
            cases.append(
                ParityCase(f"b{bs}-s{seq}", encode(tokenizer, chunk, seq, padding="max_length"))
            )
    bs = max(batch_sizes)
    chunk = [texts[i % len(texts)] for i in range(bs)]
    cases.append(ParityCase(f"b{bs}-longest", encode(tokenizer, chunk, max(seq_lengths))))
    return cases


def torch_reference(model: Any, cases: list[ParityCase], input_names: Sequence[str]) -> None:
    """Fill each case's reference logits with the PyTorch model's output on ``input_names``.

    Only the inputs the ONNX graph gets: a forward that swallows extra
    keyword arguments (DistilBERT's) must not see one the graph lacks.
    """
    import torch

    with torch.inference_mode():
        for case in cases:
            batch = select_inputs(case.batch, input_names, "torch reference")
            inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
            case.reference = model(**inputs).logits.float().numpy()


def verify_onnx(
    path: Path,
    cases: list[ParityCase],
    tolerance: float,
    session_factory: Callable[[Path], Any] = cpu_session,
    expected_inputs: Sequence[str] | None = None,
) -> VerifyReport:
    """Run ``path`` on every case and compare with its reference logits.

    ``expected_inputs``: the inputs the graph must declare, in order (the
    model's own, :func:`bertrt.modeling.model_input_names`). Raises
    ShapeMismatchError or ToleranceExceededError naming the case; returns
    the per-case figures (recorded in the manifest) when all pass.
    """
    session = session_factory(path)
    names = [i.name for i in session.get_inputs()]
    if expected_inputs is not None and names != list(expected_inputs):
        raise ShapeMismatchError(
            f"{path}: inputs are {names}, the model's are {list(expected_inputs)}"
        )
    results = []
    for case in cases:
        if case.reference is None:
            raise ValueError(f"verify: case {case.name} has no reference logits")
        out = session.run([OUTPUT_NAME], select_inputs(case.batch, names, str(path)))[0]
        if out.shape != case.reference.shape:
            raise ShapeMismatchError(
                f"{path}: on batch {case.name} output {OUTPUT_NAME} has shape {list(out.shape)}, "
                f"PyTorch gives {list(case.reference.shape)}"
            )
        diff = float(np.max(np.abs(out.astype(np.float32) - case.reference)))
        if not np.isfinite(diff) or diff > tolerance:
            raise ToleranceExceededError(
                f"{path}: on batch {case.name} max |logit diff| vs PyTorch is {diff:.3g}, "
                f"above the tolerance {tolerance:g}"
            )
        mask = case.batch["attention_mask"]
        results.append(CaseResult(case.name, list(out.shape), diff, float(1.0 - mask.mean())))
    return VerifyReport(
        model=path.name,
        tolerance=tolerance,
        max_abs_diff=max(r.max_abs_diff for r in results),
        cases=results,
    )

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
    """The largest absolute logit difference is above the tolerance (or its share of the range)."""


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
    argmax_flips: int  # rows whose top class differs from the reference's


@dataclass
class VerifyReport:
    model: str
    tolerance: float
    max_abs_diff: float
    cases: list[CaseResult]
    # The median over every row of its largest logit gap: a rounding flip moves a few rows,
    # an error in the graph moves them all (docs/qat.md, "The parity check").
    median_row_diff: float
    # With a relative tolerance: the reference logits' range over every case, and the
    # absolute limit it gives (tolerance x range); with an absolute one, limit == tolerance.
    limit: float
    logit_range: float | None = None

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
    relative: bool = False,
) -> VerifyReport:
    """Run ``path`` on every case and compare with its reference logits.

    ``expected_inputs``: the inputs the graph must declare, in order (the
    model's own, :func:`bertrt.modeling.model_input_names`). ``relative``:
    ``tolerance`` is a share of the reference logits' range over all cases
    (max - min), for graphs whose gap from their reference scales with the
    logits, as a Q/DQ graph's rounding flips do (docs/qat.md). Raises
    ShapeMismatchError or ToleranceExceededError naming the case; returns
    the per-case figures (recorded in the manifest) when all pass.
    """
    session = session_factory(path)
    names = [i.name for i in session.get_inputs()]
    if expected_inputs is not None and names != list(expected_inputs):
        raise ShapeMismatchError(
            f"{path}: inputs are {names}, the model's are {list(expected_inputs)}"
        )
    references = [_reference(case) for case in cases]
    spread = float(np.ptp(np.concatenate([r.ravel() for r in references]))) if relative else None
    limit = tolerance * spread if spread is not None else tolerance
    results, row_diffs = [], []
    for case, reference in zip(cases, references, strict=True):
        out = session.run([OUTPUT_NAME], select_inputs(case.batch, names, str(path)))[0]
        if out.shape != reference.shape:
            raise ShapeMismatchError(
                f"{path}: on batch {case.name} output {OUTPUT_NAME} has shape {list(out.shape)}, "
                f"PyTorch gives {list(reference.shape)}"
            )
        gaps = np.abs(out.astype(np.float32) - reference).reshape(len(reference), -1)
        row_diffs.append(gaps.max(axis=1))
        diff = float(gaps.max())
        if not np.isfinite(diff) or diff > limit:
            share = f" ({diff / spread:.1%} of the logits' range {spread:.3g})" if spread else ""
            raise ToleranceExceededError(
                f"{path}: on batch {case.name} max |logit diff| vs PyTorch is {diff:.3g}{share}, "
                f"above the tolerance {tolerance:g}{' of the range' if spread else ''}"
            )
        flips = int(np.sum(out.argmax(-1) != reference.argmax(-1)))
        mask = case.batch["attention_mask"]
        results.append(
            CaseResult(case.name, list(out.shape), diff, float(1.0 - mask.mean()), flips)
        )
    return VerifyReport(
        model=path.name,
        tolerance=tolerance,
        max_abs_diff=max(r.max_abs_diff for r in results),
        cases=results,
        median_row_diff=float(np.median(np.concatenate(row_diffs))),
        limit=limit,
        logit_range=spread,
    )


def _reference(case: ParityCase) -> np.ndarray:
    if case.reference is None:
        raise ValueError(f"verify: case {case.name} has no reference logits")
    return case.reference

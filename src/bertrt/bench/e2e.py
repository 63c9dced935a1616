"""End-to-end throughput over the test split: tokenize + batch + infer, timed together.

Latency on synthetic shapes says what one batch costs; this says what a user
gets for a file of real questions. Two batching policies are compared on the
same rows and runner (see :mod:`bertrt.runners.batching`): padding every row
to ``max_length`` versus sorting by length and padding per batch. Rounds
alternate the policies so slow drift of the machine hits both alike; each
figure is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from bertrt.runners.base import Runner
from bertrt.runners.batching import POLICIES, batches
from bertrt.runners.predict import RowBatch, predict_logits


def run_policy(
    runner: Runner,
    tokenizer: Any,
    texts: Sequence[str],
    policy: str,
    batch_size: int,
    max_length: int,
    progress: bool = True,
) -> dict[str, float]:
    """One timed pass over ``texts``: wall seconds, samples/s, and how many tokens were padding."""
    tokens = [0, 0]  # real, total
    start = time.perf_counter()
    stream = _count_tokens(batches(policy, tokenizer, texts, batch_size, max_length), tokens)
    desc = f"e2e {policy} {runner.label}"
    predict_logits(runner, stream, rows=len(texts), progress=progress, desc=desc)
    wall = time.perf_counter() - start
    real, total = tokens
    return {
        "wall_s": wall,
        "samples_per_s": len(texts) / wall,
        "real_token_fraction": real / total if total else 0.0,
    }


def _count_tokens(stream: Iterable[RowBatch], tokens: list[int]) -> Iterator[RowBatch]:
    """Pass batches through, adding up real (unmasked) and total token positions."""
    for rows, batch in stream:
        mask = batch["attention_mask"]
        tokens[0] += int(mask.sum())
        tokens[1] += int(mask.size)
        yield rows, batch


def measure_e2e(
    runner: Runner,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    repeats: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Both policies on one runner; medians over ``repeats`` rounds and the bucketing speed-up."""
    warm = list(texts[: batch_size * 2])
    for policy in POLICIES:  # untimed: first-call allocations, tokenizer caches
        run_policy(runner, tokenizer, warm, policy, batch_size, max_length, progress=False)
    rounds: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
    for _ in range(max(repeats, 1)):
        for policy in POLICIES:
            rounds[policy].append(
                run_policy(runner, tokenizer, texts, policy, batch_size, max_length, progress)
            )
    out: dict[str, Any] = {
        "backend": runner.label,
        "rows": len(texts),
        "batch_size": batch_size,
        "max_length": max_length,
        "repeats": max(repeats, 1),
    }
    for policy, results in rounds.items():
        rates = [r["samples_per_s"] for r in results]
        out[policy] = {
            "samples_per_s": statistics.median(rates),
            "samples_per_s_spread": [min(rates), max(rates)],
            "wall_s": statistics.median(r["wall_s"] for r in results),
            "real_token_fraction": results[0]["real_token_fraction"],
        }
    out["bucketing_speedup"] = out["bucketed"]["samples_per_s"] / out["pad_to_max"]["samples_per_s"]
    runner.release_memory()  # the bench holds every runner at once
    return out

"""Quantization-aware fine-tuning: a short, small-learning-rate run with the quantizers in place.

The calibrated ranges stay fixed; gradients pass the rounding straight
through (ModelOpt's straight-through estimator), so the float weights move to
where their INT8 rounding loses least. Validation accuracy is measured before
the first step (the post-training model) and every ``eval_every`` steps; the
best state is kept in memory and restored at the end, so QAT never returns a
model that scores below the post-training one on the validation rows.

A plain loop rather than transformers' Trainer: the best checkpoint is a copy
of a 22M-parameter state dict in memory, not a save/reload of a model whose
modules ModelOpt has replaced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

# (model) -> validation metrics with at least "accuracy" and "loss".
Evaluate = Callable[[Any], dict[str, float]]


@dataclass
class FinetuneOutcome:
    best_step: int  # 0: no step beat the post-training model
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0


def _better(candidate: dict[str, float], best: dict[str, float]) -> bool:
    """Higher accuracy wins; at equal accuracy, lower validation loss."""
    if candidate["accuracy"] != best["accuracy"]:
        return candidate["accuracy"] > best["accuracy"]
    return candidate["loss"] < best["loss"]


def _cycle(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def finetune(
    model: Any,
    loader: Any,
    evaluate: Evaluate,
    steps: int,
    learning_rate: float,
    eval_every: int,
) -> FinetuneOutcome:
    """Train ``model`` (in place) for ``steps`` batches of ``loader``; keep the best validation."""
    started = time.perf_counter()
    best = {"step": 0.0, **evaluate(model)}
    outcome = FinetuneOutcome(best_step=0, best=best, history=[best])
    best_state = _snapshot(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=max(steps, 1))
    batches = _cycle(loader)
    for step in range(1, steps + 1):
        model.train()
        loss = model(**next(batches)).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % eval_every and step != steps:
            continue
        metrics = {"step": float(step), "train_loss": float(loss.detach()), **evaluate(model)}
        outcome.history.append(metrics)
        log.info("qat: step %d, validation accuracy %.4f", step, metrics["accuracy"])
        if _better(metrics, outcome.best):
            outcome.best, outcome.best_step, best_state = metrics, step, _snapshot(model)
    model.load_state_dict(best_state)
    model.eval()
    outcome.steps, outcome.wall_s = steps, time.perf_counter() - started
    return outcome


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    """Weights and quantizer ranges, copied (the live tensors keep training)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

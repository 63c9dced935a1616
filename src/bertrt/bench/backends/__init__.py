"""Inference backends behind one runner interface (see base.Runner)."""

from bertrt.bench.backends.base import Batch, Runner

__all__ = ["Batch", "Runner"]

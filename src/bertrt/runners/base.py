"""One runner interface for every inference framework, in the style of Polygraphy's runners.

A runner is a context manager: constructing it is cheap, entering it loads
the model and allocates (device) memory, leaving it frees them. The harness
and ``bertrt evaluate`` see only this interface, never the framework inside.

The timed region is ``infer(prepared)`` followed by ``synchronize()``:
``prepare`` moves a numpy batch to where the framework wants it (a CUDA
tensor, an OrtValue) beforehand, so host-to-device copies and dtype
conversions are never timed as inference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self

import numpy as np

from bertrt.modeling import Batch


class Runner(ABC):
    name: str = "runner"  # framework: torch, onnxruntime, tensorrt
    precision: str = "fp32"  # fp32, bf16, fp16, int8, ...
    device: str = "cpu"  # cpu or cuda
    variant: str = ""  # what distinguishes two runners of one framework (model file, provider)

    @property
    def label(self) -> str:
        parts = [self.name, self.variant or self.precision, self.device]
        return "/".join(parts)

    def __enter__(self) -> Self:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def activate(self) -> None:
        """Load the model and allocate what inference needs."""

    @abstractmethod
    def close(self) -> None:
        """Free everything :meth:`activate` allocated; safe to call twice."""

    def prepare(self, batch: Batch) -> Any:
        """Convert a numpy batch to this runner's native input (outside the timed region)."""
        return batch

    @abstractmethod
    def infer(self, prepared: Any) -> Any:
        """Run the model on a prepared batch; may return before the device finishes."""

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU)."""
        return None

    def timing_stream(self) -> Any:
        """The CUDA stream this runner's work completes on, for CUDA-event timing.

        None means the current torch stream (PyTorch, ORT's providers). A runner
        that enqueues on a stream of its own (TrtRunner) overrides this;
        otherwise events would time only the enqueue.
        """
        return None

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output, dtype=np.float32)

    def __call__(self, batch: Batch) -> np.ndarray:
        out = self.infer(self.prepare(batch))
        self.synchronize()
        return self.to_numpy(out)

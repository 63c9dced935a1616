"""One runner interface for every inference framework, in the style of Polygraphy's runners.

A runner is a context manager: constructing it is cheap and touches no
framework; :meth:`Runner.activate` (entering the ``with`` block) loads the
model and allocates (device) memory, :meth:`Runner.deactivate` (leaving it)
frees them. Activating twice, or inferring on an inactive runner, raises
:class:`RunnerStateError` naming the runner. Everything that runs a model
(evaluate, predict, calibration scoring, the bench) sees only this interface.

The timed region is ``infer(prepared)`` followed by ``synchronize()``:
``prepare`` moves a numpy batch to where the framework wants it (a CUDA
tensor, an OrtValue) beforehand, so host-to-device copies and dtype
conversions are never timed as inference.

A runner's ``label`` (``framework/variant/device``, e.g.
``onnxruntime/int8/cpu``) is computed here and nowhere else: the registry
reads it from the runner, so the label a result is filed under and the label
its rows carry are one string.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self

import numpy as np

from bertrt.modeling import Batch
from bertrt.process_memory import give_back_freed_memory


class RunnerStateError(RuntimeError):
    """A runner used out of order: activated twice, or run before activation."""


class Runner(ABC):
    # bertrt.runners.identity's Framework, Precision, Device (plain strings in tests' fakes)
    framework: str = "runner"
    precision: str = "fp32"
    device: str = "cpu"
    variant: str = ""  # what tells two runners of one framework apart (model file, provider)

    def __init__(self) -> None:
        self.is_active = False

    @property
    def label(self) -> str:
        """``framework/variant/device``: the name results are filed under."""
        return "/".join([self.framework, self.variant or self.precision, self.device])

    @property
    def arithmetic(self) -> str:
        """The precision the model's arithmetic runs in, where it differs from the weights'
        (OpenVINO runs fp32 weights in bf16 on CPUs with native bf16)."""
        return self.precision

    # -- lifecycle -------------------------------------------------------------
    def activate(self) -> None:
        """Load the model and allocate what inference needs."""
        if self.is_active:
            raise RunnerStateError(f"{self.label}: activate() called on an active runner")
        self._activate()
        self.is_active = True

    def deactivate(self) -> None:
        """Free everything :meth:`activate` allocated; a no-op on an inactive runner."""
        if not self.is_active:
            return
        try:
            self._deactivate()
        finally:
            self.is_active = False

    def __enter__(self) -> Self:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    def _require_active(self) -> None:
        if not self.is_active:
            raise RunnerStateError(f"{self.label}: not active; use it in a `with` block")

    # -- shapes ----------------------------------------------------------------
    def refusal(self, batch: int, seq: int) -> str | None:
        """Why this runner cannot take a (batch, seq) input, or None when it can.

        Only runners with fixed limits (a TensorRT engine's optimization
        profile) refuse shapes; the harness skips such a cell with the reason.
        """
        return None

    def accepts(self, batch: int, seq: int) -> bool:
        return self.refusal(batch, seq) is None

    # -- inference -------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs this runner feeds its model, read from the loaded model (once active).

        Two or three by architecture; ``prepare`` takes these from a batch and
        ignores any other key. Runners over a model file override this.
        """
        raise NotImplementedError(f"{type(self).__name__} does not report its inputs")

    def prepare(self, batch: Batch) -> Any:
        """Convert a numpy batch to this runner's native input (outside the timed region)."""
        return batch

    def infer(self, prepared: Any) -> Any:
        """Run the model on a prepared batch; may return before the device finishes."""
        self._require_active()
        return self._infer(prepared)

    @abstractmethod
    def _infer(self, prepared: Any) -> Any: ...

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU)."""
        return None

    def timing_stream(self) -> Any:
        """The CUDA stream this runner's work completes on, for CUDA-event timing.

        None means the current torch stream (PyTorch, ORT's providers). A runner
        that enqueues on a stream of its own (the TensorRT runner) overrides
        this; otherwise events would time only the enqueue.
        """
        return None

    def release_memory(self) -> None:
        """Give back memory the runtime keeps between runs; the next run takes it again.

        The timing loop calls it between rounds, outside the timed region, so that runners
        held at once do not each keep their largest run's memory. Here: the process's freed
        heap pages (:func:`bertrt.process_memory.give_back_freed_memory`, what PyTorch's
        tensors leave); runtimes with a pool of their own (ONNX Runtime's arena, OpenVINO's
        buffers) empty it first, then call this.
        """
        give_back_freed_memory()

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output, dtype=np.float32)

    def __call__(self, batch: Batch) -> np.ndarray:
        """Logits of one numpy batch, as float32 numpy (prepare, infer, synchronize, copy back)."""
        out = self.infer(self.prepare(batch))
        self.synchronize()
        return self.to_numpy(out)

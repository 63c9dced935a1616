"""What a model or a runner is, as types mypy checks rather than strings parsed at run time.

A runner's label (``framework/variant/device``) is still a string, since it is
what results are filed under; but no code reads a framework, a precision or
a device back out of a label or a model name: they are fields of these types.
They are ``StrEnum``\\ s so that JSON documents (results.json, cpu.json) keep
the same plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Framework(StrEnum):
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class Skip:
    """A runner that will not run here, and why.

    ``artifact`` and ``stage`` say which run file is missing or stale and which
    ``bertrt`` stage rewrites it, when that is the reason; a consumer deciding
    on an exit code reads them instead of searching the reason's text.
    """

    backend: str
    reason: str
    artifact: Path | None = None
    stage: str | None = None

    def to_dict(self) -> dict[str, str]:
        """As results.json lists skipped runners (its schema has these two keys)."""
        return {"backend": self.backend, "reason": self.reason}

"""Is TensorRT (the real library, not its type stubs) and a CUDA GPU present? If not, why.

Every TensorRT command starts here so that a machine without them gets one
line naming what is missing and how to get it, instead of a traceback. Note
that ``import tensorrt`` *succeeds* where only ``tensorrt-stubs`` is
installed (the stubs leave a bare namespace package with no ``Builder``), so
the check looks for the API, not for the import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from bertrt.errors import UnavailableError
from bertrt.trt.metadata import GpuInfo

HOW_TO_GET = (
    "run it in the NVIDIA container (`make docker-build && make docker-run DATA=...`, "
    "see docs/tensorrt.md) on a machine with an NVIDIA GPU"
)
MIN_MAJOR = 10


@dataclass(frozen=True)
class Availability:
    """``reason`` is None when usable; otherwise one line saying what is missing."""

    version: str | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _import_tensorrt() -> ModuleType | str:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as err:  # bindings present but libnvinfer/libnvonnxparser missing, or none
        return f"TensorRT is not installed ({err})"
    except OSError as err:  # a shared library failed to load
        return f"TensorRT's libraries failed to load ({err})"


def tensorrt_availability() -> Availability:
    module = _import_tensorrt()
    if isinstance(module, str):
        return Availability(None, module)
    version = getattr(module, "__version__", None)
    if version is None or not hasattr(module, "Builder"):
        return Availability(
            None, "TensorRT is not installed (only the tensorrt-stubs type stubs were found)"
        )
    if trt_major(version) < MIN_MAJOR:
        return Availability(version, f"TensorRT {version} is too old; bertrt needs 10.0 or newer")
    return Availability(str(version), None)


def cuda_availability() -> Availability:
    try:
        import torch
    except ImportError as err:
        return Availability(None, f"PyTorch is not installed ({err})")
    if torch.version.cuda is None:
        return Availability(None, f"this PyTorch ({torch.__version__}) is a CPU-only build")
    if not torch.cuda.is_available():
        return Availability(
            torch.version.cuda, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        )
    return Availability(torch.version.cuda, None)


def require_tensorrt_and_cuda(what: str = "") -> str:
    """Return the TensorRT version, or raise :class:`UnavailableError` (exit code 3) in one line."""
    for status in (tensorrt_availability(), cuda_availability()):
        if not status.ok:
            raise UnavailableError(
                f"{what + ' ' if what else ''}needs TensorRT and an NVIDIA GPU: {status.reason}; {HOW_TO_GET}"
            )
    trt = tensorrt_availability()
    assert trt.version is not None
    return trt.version


def current_gpu(device: int = 0) -> GpuInfo:
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return GpuInfo(name=torch.cuda.get_device_name(device), compute_capability=f"{major}.{minor}")


def trt_major(version: str) -> int:
    """``"10.13.3.9"`` -> 10; raises ValueError on a string that is not a version."""
    head = version.strip().split(".")[0]
    if not head.isdigit():
        raise ValueError(f"not a TensorRT version: {version!r}")
    return int(head)

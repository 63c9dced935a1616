"""What this machine has: CPU model and the ISA flags that decide which kernels run, cores, CUDA.

Every figure the project reports names the CPU and its flags (AMX, AVX-512
BF16/VNNI): the same model is several times apart on two CPUs. This is the
one place that reads ``/proc/cpuinfo``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform

# The SIMD features that decide which int8/bf16 kernels PyTorch, ONNX Runtime
# and OpenVINO pick.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


@functools.cache
def _cpuinfo() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        return fh.read()
    return ""


def cpu_name() -> str:
    """The CPU's brand string (/proc/cpuinfo's "model name"), as cpu.json and results record it."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has, in that order."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in ISA_FLAGS if f in flags]
    return []


def nominal_ghz() -> float | None:
    """The clock the kernel reports for the first core; None where it says nothing."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("cpu mhz"):
            with contextlib.suppress(ValueError):
                return float(line.split(":", 1)[1]) / 1000.0
    return None


def cpu_has_native_bf16() -> bool:
    """AMX or AVX-512 BF16: bf16 autocast is then faster than fp32, not emulated."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_flags()))


def usable_cores() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())

"""What machine and software a benchmark ran on, and the thread counts it pinned.

Figures without this are not comparable: the same model is 3x apart on two
CPUs, and ONNX Runtime and PyTorch both pick thread counts on their own
unless told. :func:`pin_threads` fixes them; :func:`machine_info` records
the values actually in effect.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any

from bertrt.artifacts import package_versions
from bertrt.hardware import cpu_flags, cpu_name, usable_cores


def pin_threads(threads: int | None) -> int:
    """Pin PyTorch's intra-op threads (inter-op to 1); returns the count ORT should use too."""
    import torch

    count = threads or usable_cores()
    torch.set_num_threads(count)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel region
        torch.set_num_interop_threads(1)
    return count


def gpu_info() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
    }


def load_average() -> list[float] | None:
    """1/5/15-minute load: other processes on the cores make every figure slower."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def cpu_times() -> list[int] | None:
    """The aggregate line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/stat", encoding="utf-8") as fh:
            fields = fh.readline().split()
        if fields and fields[0] == "cpu":
            return [int(x) for x in fields[1:9]]
    return None


def steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to other guests between two :func:`cpu_times`.

    On a cloud VM this is a cause of slow, drifting figures that no process
    list shows. It is not the only one: a run measured here was 3-46 % slower
    than the next at 0.04 % steal (contention the hypervisor does not count).
    """
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    return round(100.0 * delta[7] / total, 2) if total > 0 else None


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": usable_cores(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": {
            "torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": torch.get_num_interop_threads(),
            "onnxruntime_intra_op": threads,
            "onnxruntime_inter_op": 1,
        },
        "gpu": gpu_info(),
        "load_average_at_end": load_average(),
        "onnxruntime_providers": ort.get_available_providers(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
    }

"""Peak memory of one training run, so presets can be compared on what they cost to train.

On a GPU it is torch's CUDA peak (bytes allocated by tensors). On the CPU it
is the process's resident-set high-water mark (``VmHWM``), reset when
training starts by writing ``5`` to ``/proc/self/clear_refs`` (Linux 4.0+),
so presets trained one after another in one process (scripts/preset_table.py)
each get their own peak, not the largest so far. Where the reset is refused
the figure is the peak since the process started, and says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bertrt.process_memory import give_back_freed_memory

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _reset_rss_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def peak_memory() -> Iterator[dict[str, Any]]:
    """Yields a dict filled on exit: ``kind``, ``mib`` and, on the CPU, since when and the
    resident set when training started."""
    report: dict[str, Any] = {}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reset = False if cuda else _reset_rss_peak()
    start = None if cuda else _status_kib("VmRSS")
    yield report
    if cuda:
        report.update(
            kind="cuda_peak_allocated", mib=round(torch.cuda.max_memory_allocated() / 2**20, 1)
        )
        return
    peak = _status_kib("VmHWM")
    report.update(
        kind="rss_peak",
        mib=None if peak is None else round(peak / 1024, 1),
        since="training start" if reset else "process start",
        # what the process held when training started (libraries, the split's rows)
        start_mib=None if start is None else round(start / 1024, 1),
    )


# Training steps between two give-backs of freed heap pages (heap_giver).
GIVE_BACK_EVERY_STEPS = 100


def heap_giver(every_steps: int = GIVE_BACK_EVERY_STEPS) -> Any:
    """A Trainer callback that gives freed heap pages back every ``every_steps`` steps and
    after each evaluation (:func:`bertrt.process_memory.give_back_freed_memory`).

    Dynamic padding gives every batch its own shape, so the allocator's free chunks
    fragment over an epoch and stay resident. A give-back took 0.6 ms (median, 11.5 ms
    the most) in the bench's process; once per 100 steps of about a second each on two
    cores, that bounds its cost far below 0.1 % (a bound, not a timed training run).
    """
    from transformers import TrainerCallback

    class HeapGiver(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % every_steps == 0:
                give_back_freed_memory()

        def on_evaluate(self, args, state, control, **kwargs):
            give_back_freed_memory()

    return HeapGiver()

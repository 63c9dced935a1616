"""Giving freed heap memory back to the operating system, between pieces of work.

Two allocators in this process keep what was freed for their next request,
and either can hold hundreds of MB that nothing uses:

- glibc's malloc keeps freed chunks in each thread's arena (PyTorch's CPU
  tensors, tokenizers, Python objects); ``malloc_trim(0)`` returns the free
  pages of every arena. After a runner's runs at batch 32 x seq 512 it gave
  back 0.04 GB (PyTorch eager) to 0.15 GB (``torch.compile``);
- Apache Arrow's memory pool (mimalloc; pandas keeps its string columns
  there): reading the split's CSV left 0.14 GB in it after the frame was
  dropped, which ``release_unused`` returns.

Measured on the bench's process (2-core Xeon with AMX, 2026-12-06): the test
split loaded and tokenized held 0.78 GB with the libraries imported (0.36),
0.42 GB after both. Called where a large transient has just ended: after
the bench loads its rows, after each timing round (``Runner.release_memory``,
outside the timed region), after training tokenizes a split
(``TokenizedRows``), and every 100 training steps (``trainer.memory``).
A call took 0.6 ms (median; 11.5 ms the most) with two runners held.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any


@cache
def _libc() -> Any:
    """glibc, or None where there is no malloc_trim (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 (an AttributeError here: not glibc)
    except (OSError, AttributeError):
        return None
    return libc


def give_back_freed_memory() -> None:
    """Return the free pages glibc's arenas and Arrow's pool hold; a no-op where neither is."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    arrow = sys.modules.get("pyarrow")  # only if something loaded it: never imported here
    if arrow is not None:
        arrow.default_memory_pool().release_unused()

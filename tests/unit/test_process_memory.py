"""Freed heap memory goes back to the operating system when asked (the bench asks between rounds)."""

from __future__ import annotations

import subprocess
import sys


def test_freed_heap_pages_are_given_back() -> None:
    """180 MB of freed malloc chunks under a live one stay resident until given back.

    Run in a fresh interpreter, so that what the test suite's own heap holds does not count.
    """
    code = """
from pathlib import Path
from bertrt.process_memory import give_back_freed_memory

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1e3

chunks = [bytearray(60_000) for _ in range(3000)]  # below glibc's mmap threshold: the heap
keep = bytearray(60_000)  # above them: free() alone cannot shrink the heap's top
del chunks
held = rss_mb()
give_back_freed_memory()
give_back_freed_memory()  # twice: nothing left to give, no error
print(held, rss_mb())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    held, after = map(float, done.stdout.split())
    assert held - after > 150, (held, after)


def test_arrow_pool_is_released_only_if_loaded() -> None:
    """pyarrow is never imported by the call (it costs ~0.1 GB); a loaded one is emptied."""
    code = """
import sys
from bertrt.process_memory import give_back_freed_memory
give_back_freed_memory()
print("pyarrow" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

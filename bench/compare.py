#!/usr/bin/env python
"""Benchmark every backend of a run: the same as `bertrt bench`.

    python bench/compare.py --run-dir runs/default [--quick] [--config FILE] [--set KEY=VALUE]

Writes runs/<run>/bench/results.{json,csv,md} and PNG plots; see
docs/benchmarking.md for what is measured and how.
"""

from __future__ import annotations

import sys

from bertrt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

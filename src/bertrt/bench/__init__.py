"""Benchmark harness: runners, latency, accuracy, end-to-end throughput and reports.

Entry point: :func:`bertrt.bench.stage.run` (``bertrt bench``, ``bench/compare.py``).
"""

"""The project's ONNX Runtime session settings, and the memory tool that checks their effect."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cpu_sessions_do_not_keep_an_arena() -> None:
    """With ORT's arena on, each bench session kept ~2.1 GB after batch 32 x 512 (10.5 GB in all)."""
    from bertrt.ort_sessions import session_options

    assert session_options(1).enable_cpu_mem_arena is False


def test_pipeline_memory_reports_a_childs_peak(tmp_path: Path) -> None:
    """The peak of a child that touched 300 MB and freed it is reported, not what it ended with."""
    tool = _script("pipeline_memory")
    code = "b = bytearray(300_000_000); del b"
    row = tool.measure("alloc", [sys.executable, "-c", code], interval=0.05)
    assert row.exit_code == 0
    assert 0.3 <= row.peak_rss_gb < 1.0

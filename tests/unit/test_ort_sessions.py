"""The project's ONNX Runtime session settings, and the memory tool that checks their effect."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cpu_sessions_keep_their_arena_and_give_it_back_on_request() -> None:
    """Arena off cost the deployment model 1.17-1.18x at batch 32 (bench/arena_ab.py); on,
    each bench session kept ~2.1 GB after batch 32 x 512 unless told to give it back."""
    from bertrt.ort_sessions import session_options, shrink_options

    assert session_options(1).enable_cpu_mem_arena is True
    # The memory pattern doubled the arena from a shape's second run (2.11 vs 1.20 GB).
    assert session_options(1).enable_mem_pattern is False
    entry = shrink_options().get_run_config_entry("memory.enable_memory_arena_shrinkage")
    assert entry == "cpu:0"


def test_an_ort_runner_gives_its_arena_back_with_a_shrink_run(tmp_path: Path) -> None:
    from bertrt.runners.ort_runner import OrtRunner

    calls: list[tuple[list[str], dict[str, Any], Any]] = []

    class _Session:
        def run(self, outputs: list[str], feed: dict[str, Any], run_options: Any = None) -> None:
            calls.append((outputs, feed, run_options))

    runner = OrtRunner(tmp_path / "m.onnx")
    runner.release_memory()  # inactive: nothing to give back
    assert calls == []
    runner.session, runner._inputs, runner.is_active = _Session(), ["input_ids"], True
    runner.release_memory()
    [(outputs, feed, options)] = calls
    assert outputs == ["logits"]
    assert list(feed) == ["input_ids"] and feed["input_ids"].shape == (1, 8)
    assert options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_timing_rounds_release_memory_outside_the_timed_region() -> None:
    from bertrt.runners.base import Runner
    from bertrt.runners.timing import ShapeTimer, TimingPlan

    log: list[str] = []

    class _Logged(Runner):
        def _activate(self) -> None: ...

        def _deactivate(self) -> None: ...

        def _infer(self, prepared: Any) -> Any:
            log.append("infer")

        def release_memory(self) -> None:
            log.append("release")

    with _Logged() as runner:
        timer = ShapeTimer(
            runner, {"input_ids": np.ones((1, 4), dtype=np.int64)}, TimingPlan(1, 3, 2)
        )
        assert log == ["infer", "release"]  # the warm-up (the pilot), then the memory back
        log.clear()
        timer.time_round()
    # the round's untimed warm-up, its three timed calls, then the memory back
    assert log == ["infer", "infer", "infer", "infer", "release"]
    assert len(timer.rounds[0]) == 3


def test_pipeline_memory_reports_a_childs_peak(tmp_path: Path) -> None:
    """The peak of a child that touched 300 MB and freed it is reported, not what it ended with.

    The tool runs as its own small process, as it is used: Linux carries the launching
    process's peak into a child's ru_maxrss across exec, so measured from inside this
    test process (1.3 GB into the suite) the child read 1.33 GB.
    """
    import json
    import subprocess

    code = "b = bytearray(300_000_000); del b"
    probe = (
        "import dataclasses, json, sys; sys.path.insert(0, 'bench'); import pipeline_memory as t; "
        f"print(json.dumps(dataclasses.asdict(t.measure('alloc', [sys.executable, '-c', {code!r}], 0.05))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["exit_code"] == 0
    assert 0.3 <= row["peak_rss_gb"] < 1.0


def test_pipeline_memory_timeline_places_samples_in_the_stages_output(tmp_path: Path) -> None:
    """--timeline pairs each RSS sample with the last line the stage printed (a tqdm bar's
    carriage returns end a line too), so a peak can be placed in the stage's phases."""
    import subprocess

    code = (
        "import sys, time; sys.stderr.write('loading\\n'); sys.stderr.flush(); time.sleep(0.3); "
        "b = bytearray(200_000_000); sys.stderr.write('bar 1/2\\rbar 2/2\\r'); sys.stderr.flush(); "
        "time.sleep(0.5)"
    )
    out = tmp_path / "mem"
    probe = (
        "import sys; sys.path.insert(0, 'bench'); import pipeline_memory as t; "
        "timeline = t.Timeline(); "
        f"t.measure('alloc', [sys.executable, '-c', {code!r}], 0.05, timeline); "
        f"timeline.write(__import__('pathlib').Path({str(out) + '.tsv'!r}))"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, check=True)
    rows = [line.split("\t") for line in (tmp_path / "mem.tsv").read_text().splitlines()[1:]]
    peak = max(rows, key=lambda row: float(row[1]))
    assert float(peak[1]) >= 0.2
    assert peak[2] == "bar 2/2"
    assert any(row[2] == "loading" for row in rows)

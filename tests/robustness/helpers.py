"""What every hostile-input test asserts: one line, the exit code, nothing changed in the run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertrt.cli import main

REPO = Path(__file__).resolve().parents[2]
# export settings that keep a tiny random BERT's export to a few seconds
SMALL_EXPORT = [
    "model.max_length=32",
    "export.verify_batch_sizes=[1,3]",
    "export.verify_seq_lengths=[8,32]",
    "export.verify_rows=16",
]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256), to show that nothing changed."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def fails_cleanly(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, *needles: str
) -> str:
    """Run the CLI in-process: exit ``code``, exactly one stderr line holding each needle."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_cli(args: list[str | bytes], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """``python -m bertrt`` in a child process (argv bytes, stdin, a traceback are real)."""
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO / "src"))}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "bertrt", *args],
        capture_output=True,
        check=False,
        cwd=REPO,
        env=env,
        **kwargs,
    )

"""Rules about the code's shape that a reviewer would otherwise have to remember.

* A function fits on a screen: over ``MAX_LINES`` lines its docstring must say
  why, in a line starting with ``Long:``.
* The repository stands alone: nothing in it cites notes that live outside it
  (measured facts go to docs/findings.md).
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 60
OUTSIDE_NOTES = re.compile(r"\b(FINDINGS|DESIGN|STYLE)\.md\b")


def _long_functions(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        doc = ast.get_docstring(node) or ""
        explained = any(line.strip().startswith("Long:") for line in doc.splitlines())
        if length > MAX_LINES and not explained:
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_src_is_over_a_screen_without_saying_why() -> None:
    offenders = [f for p in sorted((REPO / "src").rglob("*.py")) for f in _long_functions(p)]
    assert not offenders, "split these, or say why in a 'Long:' docstring line:\n" + "\n".join(
        offenders
    )


def test_the_long_function_rule_can_fail(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    path = tmp_path / "probe.py"
    path.write_text(f"def f():\n{body}\n", encoding="utf-8")
    assert _long_functions(path, tmp_path) == [f"probe.py:1 f ({MAX_LINES + 1} lines)"]
    path.write_text(f'def f():\n    """Long: a table."""\n{body}\n', encoding="utf-8")
    assert _long_functions(path, tmp_path) == []


def test_nothing_in_the_repository_cites_notes_outside_it() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    suffixes = {".py", ".md", ".toml", ".yaml", ".yml", ".sh", ".cfg", ".txt", ""}
    hits = []
    for name in tracked:
        path = REPO / name
        if path.suffix not in suffixes or not path.is_file() or path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE_NOTES.search(line):
                hits.append(f"{name}:{number}: {line.strip()}")
    assert not hits, "cite docs/ instead:\n" + "\n".join(hits)

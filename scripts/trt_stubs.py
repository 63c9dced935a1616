"""Make the installed tensorrt-stubs usable by mypy, in a separate directory.

Why: the PyPI package ``tensorrt-stubs`` (10.13.0.35.1, the only release) installs
``tensorrt/__init__.pyi`` and ``tensorrt_bindings/*.pyi`` without a ``py.typed``
marker, so mypy skips them and types every TensorRT call as ``Any`` (which would
make the type check prove nothing). Pointing ``MYPYPATH`` at them fixes that, but
the generated stubs contain lines that are not valid Python: parameters named
``in`` (a keyword), a parameter without a default after ones with defaults
(``INetworkDefinition.add_scale_nd``), and the module attribute ``bool`` (the
``DataType.BOOL`` alias) shadows the builtin in every ``-> bool``, so mypy
rejects each of those annotations; ``...`` stands for some unnamed types and
``typing_extensions``/``capsule`` are used without being imported. This script copies the stubs into
``build/trt-stubs`` (ignored by git) with exactly those lines repaired and leaves
the installed package untouched.

Usage: ``python scripts/trt_stubs.py [OUT_DIR]`` then
``MYPYPATH=build/trt-stubs mypy src/bertrt/engines``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")
_KEYWORD_PARAM = re.compile(r"([(,]\s*)in(\s*:)")
_ELLIPSIS_TYPE = re.compile(r"(:|->)\s*\.\.\.(?=\s*[,):])")
_BOOL = re.compile(r"(?<![\w.])bool(?!\w)")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed; run `pip install --no-deps tensorrt-stubs`")
    for location in spec.submodule_search_locations:
        if (Path(location) / "__init__.pyi").is_file():
            return Path(location)
    raise SystemExit(f"{name}: no __init__.pyi found; is tensorrt-stubs installed?")


def _fix_defaults(line: str) -> str:
    """Give ``= ...`` to parameters without a default that follow one with a default."""
    match = re.match(r"(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not match:
        return line
    params = [p.strip() for p in match.group(2).split(",")]
    seen_default = False
    fixed = []
    for param in params:
        if "=" in param:
            seen_default = True
        elif seen_default and ":" in param and not param.startswith("*"):
            param += " = ..."
        fixed.append(param)
    return match.group(1) + ", ".join(fixed) + match.group(3)


def repair(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line == "from __future__ import annotations":
            lines += [line, "import builtins", "import typing_extensions"]
            lines += ["import typing as _typing", "capsule: _typing.TypeAlias = _typing.Any"]
            continue
        if not line.startswith("bool:"):  # keep the module attribute trt.bool itself
            line = _BOOL.sub("builtins.bool", line)
        if line.lstrip().startswith("def "):
            line = _KEYWORD_PARAM.sub(r"\1in_\2", line)
            line = _fix_defaults(line)
            line = _ELLIPSIS_TYPE.sub(r"\1 _typing.Any", line)
        lines.append(line)
    # The stubs' remaining inconsistencies (overrides, self types) are not ours to
    # report; their types are still used to check our calls.
    repaired = "# mypy: ignore-errors\n" + "\n".join(lines) + "\n"
    ast.parse(repaired)  # fail here, loudly, if another kind of breakage appears
    return repaired


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "build/trt-stubs")
    count = 0
    for name in PACKAGES:
        src = _package_dir(name)
        for stub in sorted(src.rglob("*.pyi")):
            target = out / name / stub.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(repair(stub.read_text(encoding="utf-8")), encoding="utf-8")
            count += 1
    print(f"wrote {count} repaired stub files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

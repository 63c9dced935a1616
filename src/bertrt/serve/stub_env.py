"""A NumPy 1.x Python for Triton's Python-backend stub, which runs the served model, under NumPy 2.

The ``triton_python_backend_stub`` shipped with nvidia-pytriton 0.7 is
compiled against NumPy 1.x. Under NumPy 2 it builds every BYTES input with
wrong strides and dies on the first request, while Triton reports ready.
This project's environment needs NumPy 2 (pandas 3), so the stub gets a
Python of its own: a venv of this interpreter (same Python, same stdlib)
that sees this interpreter's site-packages (bertrt, ONNX Runtime, OpenVINO,
tokenizers, transformers, ...) but first its own, which hold only
``numpy<2`` and, where this interpreter's pandas needs NumPy 2, ``pandas<3``.
The compiled runtimes built against NumPy 2 run on NumPy 1.x (NumPy's
backward-compatible ABI); :func:`served_code_error` checks that the served
model's code and the libraries it loads lazily import there before the
environment is used.

This interpreter's site-packages are reached through a ``.pth`` file
(:func:`parent_sites_pth`), not ``--system-site-packages``: when this
interpreter is itself a venv (the README's install), ``python -m venv``
builds on the *base* Python, whose "system" packages are not the ones the
user installed, and the stub could not import transformers.

How the stub finds it: it embeds Python and locates its prefix from the
``python3`` it finds first on ``PATH``; ``bertrt serve`` starts Triton with
this environment's bin directory first (:func:`bertrt.serve.triton_process.triton_env`).

Built once per interpreter under ``~/.cache/bertrt`` (``make serve-env``, or
the first ``bertrt serve``): a ``venv --without-pip`` and a
``pip install --target`` of a few wheels, about 160 MB and 8 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

from bertrt.errors import UnavailableError

NUMPY_SPEC = "numpy>=1.23,<2"  # what the stub was compiled against
PANDAS_SPEC = "pandas>=2.2,<3"  # pandas 3 needs NumPy 2; bertrt.data imports pandas
SERVED_MODULE = "bertrt.serve.model"  # the served code the stub runs: it must import there
MARKER = "bertrt-stub-env.json"
PARENT_PTH = "bertrt-parent-site.pth"  # puts this interpreter's site-packages after the env's own
# Imported lazily by the served code, so importing SERVED_MODULE alone does not prove they load:
# each one this interpreter has must import in the stub's environment too.
LAZY_IMPORTS = ("transformers", "tokenizers", "onnxruntime", "openvino")
LAYOUT = 2  # bumped when the environment's layout changes: a new cache directory
PIP_TIMEOUT_S = 600


def numpy_major() -> int:
    return int(np.__version__.split(".")[0])


def needs_stub_env() -> bool:
    """True under NumPy 2: the stub cannot read BYTES with this interpreter's NumPy."""
    return numpy_major() >= 2


def stub_packages() -> list[str]:
    """What the stub needs of its own: NumPy 1.x, and a pandas that runs on it where ours does not."""
    packages = [NUMPY_SPEC]
    try:
        import pandas

        if int(pandas.__version__.split(".")[0]) >= 3:
            packages.append(PANDAS_SPEC)
    except ImportError:
        pass
    return packages


def source_root() -> Path:
    """The directory holding the ``bertrt`` package the stub imports (this one)."""
    return Path(__file__).resolve().parents[2]


def path_line() -> str:
    """The Python line that makes the stub import this ``bertrt``.

    A source tree (``src/``) goes first, before any other bertrt installed in
    site-packages; a site-packages directory (a non-editable install) goes
    last, so the stub env's own NumPy 1.x stays ahead of the NumPy 2 there.
    """
    root = source_root()
    if (root / "numpy").exists():
        return f"sys.path.append({str(root)!r})"
    return f"sys.path.insert(0, {str(root)!r})"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bertrt"


def default_env_dir() -> Path:
    """One environment per base interpreter and package list (a venv is tied to its interpreter)."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    key = json.dumps([base, sys.version, stub_packages(), parent_sites(), LAYOUT]).encode()
    tag = hashlib.sha256(key).hexdigest()[:10]
    return cache_root() / "triton-stub" / f"py{sys.version_info[0]}.{sys.version_info[1]}-{tag}"


def parent_sites() -> list[str]:
    """This interpreter's site-packages (a venv's own, and its base's where it includes them)."""
    return [str(Path(p).resolve()) for p in site.getsitepackages() if Path(p).is_dir()]


def parent_sites_pth() -> str:
    """A ``.pth`` that adds this interpreter's site-packages, their own ``.pth`` files
    included (editable installs), after the environment's own site-packages."""
    return "".join(f"import site; site.addsitedir({p!r})\n" for p in parent_sites())


def site_packages(env: Path) -> Path:
    return Path(
        sysconfig.get_path("purelib", "venv", vars={"base": str(env), "platbase": str(env)})
    )


def _run_isolated(env: Path, code: str) -> subprocess.CompletedProcess[str] | None:
    """``code`` in ``env``'s python3, isolated (``-I``, as the stub's environment is:
    ``bertrt serve`` starts it without PYTHONPATH and user site-packages), or None."""
    python = env / "bin" / "python3"
    if not python.exists():
        return None
    try:
        return subprocess.run(
            [str(python), "-I", "-c", code], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def stub_numpy(env: Path) -> str | None:
    """The NumPy 1.x version ``env``'s python3 imports, or None where it imports no NumPy 1.x."""
    done = _run_isolated(env, "import numpy; print(numpy.__version__)")
    version = done.stdout.strip().splitlines()[-1:] if done and done.returncode == 0 else []
    return version[0] if version and version[0].startswith("1.") else None


def served_code_error(env: Path) -> str | None:
    """Why ``env`` cannot import the served model's code (None: it can), from its last line.

    This ``bertrt`` goes on the path as the stub's model.py puts it (:func:`path_line`).
    """
    lazy = [m for m in LAZY_IMPORTS if importlib.util.find_spec(m) is not None]
    code = f"import sys; {path_line()}; import {', '.join([SERVED_MODULE, *lazy])}"
    done = _run_isolated(env, code)
    if done is None:
        return "its python3 did not run"
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    return None if done.returncode == 0 else (lines[-1] if lines else f"exit {done.returncode}")


def _pip_failure(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line] or lines
    return errors[-1].strip() if errors else f"pip exited {done.returncode}"


def _make_venv(path: Path) -> None:
    """``python -m venv`` of this interpreter; a failure is one line, not a traceback."""
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--clear", str(path)],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except subprocess.CalledProcessError as err:
        last = (err.stderr or "").strip().splitlines()[-1:] or [f"exit {err.returncode}"]
        raise UnavailableError(f"{path}: python -m venv failed: {last[0]}") from err
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UnavailableError(f"{path}: python -m venv failed: {err}") from err


def build_env(env: Path) -> None:
    """Create the environment beside ``env`` and rename it into place (a racing build loses)."""
    env.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{env.name}-", dir=env.parent))
    try:
        _make_venv(staging)
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-warn-conflicts", "--only-binary=:all:", "--target", str(site_packages(staging)),
               *stub_packages()]  # fmt: skip
        try:
            done = subprocess.run(pip, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise UnavailableError(
                f"could not build the NumPy 1.x environment for Triton's Python-backend stub: "
                f"pip ran over {PIP_TIMEOUT_S} s; build it where PyPI is reachable "
                "(make serve-env) or pass --stub-env DIR"
            ) from err
        if done.returncode != 0:
            raise UnavailableError(
                f"could not build the NumPy 1.x environment for Triton's Python-backend stub "
                f"({' '.join(stub_packages())}): {_pip_failure(done)}. Build it where PyPI is "
                "reachable (make serve-env) or pass --stub-env DIR"
            )
        (site_packages(staging) / PARENT_PTH).write_text(parent_sites_pth())
        (staging / MARKER).write_text(
            json.dumps(
                {"python": sys.version, "packages": stub_packages(), "parent": parent_sites()}
            )
        )
        try:
            staging.rename(env)
        except OSError:
            if stub_numpy(env) is None:  # not a racing build that won: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_stub_env(env: Path | None = None) -> Path | None:
    """The stub's environment (built on first use), or None where this NumPy serves as is.

    ``env`` given by the user is used as it is, never built or replaced.
    """
    if env is None and not needs_stub_env():
        return None
    given = env is not None
    env = env or default_env_dir()
    if stub_numpy(env) is None:
        if given:
            raise UnavailableError(
                f"--stub-env {env}: its bin/python3 -I imports no numpy<2; leave --stub-env "
                f"out (bertrt serve builds one) or create it with python -m venv {env}, "
                f"{env}/bin/pip install {' '.join(repr(p) for p in stub_packages())} and a .pth "
                f"in its site-packages that adds {', '.join(parent_sites())}"
            )
        if env.exists():
            shutil.rmtree(env)  # a broken cache: built again below
        build_env(env)
        if stub_numpy(env) is None:
            raise UnavailableError(f"{env}: built, but its python3 -I imports no numpy<2")
    why = served_code_error(env)
    if why:  # not the environment's fault: rebuilding it would not help
        raise UnavailableError(
            f"{env}: Triton's stub could not run the served model there ({SERVED_MODULE}: {why})"
        )
    return env


if __name__ == "__main__":  # make serve-env
    print(ensure_stub_env() or f"NumPy {np.__version__}: the stub needs no environment of its own")

"""A NumPy 1.x Python environment for PyTriton's Python-backend stub, so ``bertrt serve`` runs under NumPy 2.

nvidia-pytriton 0.7's ``triton_python_backend_stub`` is compiled against
NumPy 1.x (hence the package's ``numpy<2`` pin). Under NumPy 2 it builds
every BYTES input with wrong strides and dies on the first request, while
Triton reports ready. This project's environment needs NumPy 2 (pandas 3),
so the stub gets an environment of its own instead: a venv of this
interpreter (same Python, same stdlib) whose site-packages hold only what
PyTriton's proxy model imports, ``numpy<2`` and ``pyzmq``.

How the stub finds it: it embeds Python and locates its prefix from the
``python3`` it finds first on ``PATH``; PyTriton puts the bin directory of
:func:`pytriton.server.triton_server.get_triton_python_backend_python_env`
first on the ``PATH`` Triton starts with. :func:`backend_python` points that
choice at the stub environment (a venv's ``pyvenv.cfg`` then makes its
site-packages the stub's). This process keeps its own NumPy 2; the two only
exchange raw buffers through PyTriton's shared memory.

Built once per interpreter under ``~/.cache/bertrt`` (``make serve-env``, or
the first ``bertrt serve``): a ``venv --without-pip`` and a
``pip install --target`` of two wheels, about 80 MB and 10 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bertrt.errors import UnavailableError

NUMPY_SPEC = "numpy>=1.23,<2"  # what the stub was compiled against
MARKER = "bertrt-stub-env.json"
PIP_TIMEOUT_S = 600


def numpy_major() -> int:
    return int(np.__version__.split(".")[0])


def needs_stub_env() -> bool:
    """True under NumPy 2: the stub cannot read BYTES with this interpreter's NumPy."""
    return numpy_major() >= 2


def stub_packages() -> list[str]:
    """What PyTriton's proxy model imports besides the stdlib (its ``_PROXY_REQUIRED_MODULES``).

    pyzmq is pinned to this process's version where it is installed: both
    ends of PyTriton's sockets then run the same ZeroMQ.
    """
    try:
        import zmq

        pyzmq = f"pyzmq=={zmq.__version__}"
    except ImportError:
        pyzmq = "pyzmq>=23"
    return [NUMPY_SPEC, pyzmq]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bertrt"


def default_env_dir() -> Path:
    """One environment per base interpreter and package list (a venv is tied to its interpreter)."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    key = json.dumps([base, sys.version, stub_packages()]).encode()
    tag = hashlib.sha256(key).hexdigest()[:10]
    return cache_root() / "triton-stub" / f"py{sys.version_info[0]}.{sys.version_info[1]}-{tag}"


def site_packages(env: Path) -> Path:
    return Path(
        sysconfig.get_path("purelib", "venv", vars={"base": str(env), "platbase": str(env)})
    )


def stub_numpy(env: Path) -> str | None:
    """The NumPy version the stub would import from ``env``, or None where it cannot.

    Run isolated (``-I``) like the stub: neither PYTHONPATH nor the user's
    site-packages may hide a broken environment.
    """
    python = env / "bin" / "python3"
    if not python.exists():
        return None
    try:
        done = subprocess.run(
            [str(python), "-I", "-c", "import numpy, zmq; print(numpy.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version.startswith("1.") else None


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
        (staging / MARKER).write_text(
            json.dumps({"python": sys.version, "packages": stub_packages()})
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
                f"--stub-env {env}: no bin/python3 importing numpy<2 and zmq (python3 -I); "
                f"create it with python -m venv {env} && {env}/bin/pip install "
                f"'{NUMPY_SPEC}' pyzmq"
            )
        if env.exists():
            shutil.rmtree(env)  # a broken cache: built again below
        build_env(env)
        if stub_numpy(env) is None:
            raise UnavailableError(f"{env}: built, but its python3 cannot import numpy<2 and zmq")
    return env


@contextlib.contextmanager
def backend_python(env: Path | None) -> Iterator[None]:
    """While Triton starts, make PyTriton give the Python-backend stub ``env`` (None: its default).

    PyTriton chooses the stub's Python with
    ``get_triton_python_backend_python_env()`` (this interpreter's prefix,
    after checking that numpy and zmq import here); its bin directory goes
    first on Triton's ``PATH``, where the stub finds ``python3``.
    """
    if env is None:
        yield
        return
    from pytriton.server import triton_server

    chooser = getattr(triton_server, "get_triton_python_backend_python_env", None)
    if chooser is None:
        raise UnavailableError(
            "this nvidia-pytriton has no get_triton_python_backend_python_env(): cannot give "
            "its stub a NumPy 1.x environment; install nvidia-pytriton==0.7.0 (make serve-deps)"
        )
    triton_server.get_triton_python_backend_python_env = lambda: env
    try:
        yield
    finally:
        triton_server.get_triton_python_backend_python_env = chooser


if __name__ == "__main__":  # make serve-env
    print(ensure_stub_env() or f"NumPy {np.__version__}: the stub needs no environment of its own")

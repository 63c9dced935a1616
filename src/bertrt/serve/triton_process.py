"""The ``tritonserver`` process of ``bertrt serve``: found, started, watched, stopped.

nvidia-pytriton ships a real ``tritonserver`` with its Python backend
(:class:`TritonInstall`); it is started with flags that restrict its admin APIs
(:func:`triton_command`) in an environment where the Python-backend stub finds its
own NumPy 1.x Python and the libraries it links (:func:`triton_env`). While it runs,
:func:`watch` counts its model stubs through Linux's ``/proc``: a dead stub leaves a
"ready" model that answers nothing, so it stops the server instead. ``SIGTERM`` and
``SIGINT`` become :class:`Stopped` in the main thread (:func:`on_stop_signal`); a
second one while draining leaves at once (:func:`stop_again`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bertrt.errors import BertrtError, UnavailableError
from bertrt.serve.client import MODEL_NAME, open_direct
from bertrt.serve.options import ServeOptions

LOG = logging.getLogger(__name__)
READY_TIMEOUT_S = 300  # Triton start + every instance's model load and warm-up
SERVE_EXTRA = (
    "make serve-deps (pip install -e '.[serve]' && pip install --no-deps nvidia-pytriton==0.7.0)"
)
ADMIN_APIS = "shared-memory,model-repository,logging,trace"  # what a client could change
ADMIN_HEADER = "bertrt-admin"


@dataclass(frozen=True)
class TritonInstall:
    """The ``tritonserver`` binary and Python backend that nvidia-pytriton ships."""

    binary: Path
    backends: Path
    stub: Path  # triton_python_backend_stub for this Python version
    libs: Path  # the shared libraries the binary and the stub link

    @classmethod
    def find(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise UnavailableError(
                f"bertrt serve needs nvidia-pytriton's tritonserver; {SERVE_EXTRA}"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        dist = package / "tritonserver"
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        install = cls(
            dist / "bin" / "tritonserver",
            dist / "backends",
            dist / "python_backend_stubs" / version / "triton_python_backend_stub",
            package.parent / "nvidia_pytriton.libs",
        )
        missing = [p for p in (install.binary, install.backends, install.stub) if not p.exists()]
        if missing:
            raise UnavailableError(
                f"nvidia-pytriton at {package} lacks {missing[0]} (Python {version}); {SERVE_EXTRA}"
            )
        return install


def triton_command(root: Path, options: ServeOptions) -> list[str]:
    """Triton's flags: the repository, the addresses, and the admin APIs restricted.

    Restricted (``--http-restricted-api``/``--grpc-restricted-protocol``): a
    client must send header ``bertrt-admin`` with a random key nobody is
    told, so shared-memory registration, repository control, log and trace
    settings are refused, unless ``--open-admin-api``.
    """
    shm_prefix = f"bertrt{os.getpid()}-{os.urandom(4).hex()}-"  # one per server on this machine
    command = [
        "--model-repository", str(root / "models"),
        "--backend-directory", str(root / "backends"),
        "--backend-config", f"python,shm-region-prefix-name={shm_prefix}",
        "--http-address", options.host,
        "--http-port", str(options.http_port),
        "--grpc-address", options.host,
        "--grpc-port", str(options.grpc_port),
        "--metrics-address", options.host,
        "--metrics-port", str(options.metrics_port),
        "--exit-timeout-secs", str(options.drain_s),
        "--strict-readiness", "true",
        "--disable-auto-complete-config",  # the config is complete; no extra stub at load
    ]  # fmt: skip
    if not options.open_admin:
        restricted = f"{ADMIN_APIS}:{ADMIN_HEADER}={os.urandom(16).hex()}"
        command += ["--http-restricted-api", restricted, "--grpc-restricted-protocol", restricted]
    return command


def triton_env(install: TritonInstall, stub_python: Path) -> dict[str, str]:
    """Triton's environment: the stub's Python first on PATH, the libraries it links found.

    The stub embeds Python but not isolated: PYTHONPATH, PYTHONHOME and the
    user's site-packages (which a ``--system-site-packages`` venv turns on, ahead
    of its own) could bring NumPy 2 back in front of the stub env's NumPy 1.x,
    so they are left out. The stub links ``libpython3.x.so``; under an
    interpreter that is not the system one (pyenv, many venvs) it would pick
    the system library and fail at model load (``'_thread.RLock' object has
    no attribute '_recursion_count'``), so that interpreter's LIBDIR goes
    first (never the system's: it would come before CUDA's own libraries).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sys.base_prefix not in ("/usr", "/usr/local"):
        paths = [libdir, *(p for p in paths if p != libdir)]
    env["LD_LIBRARY_PATH"] = ":".join([*paths, str(install.libs)])
    env["PATH"] = f"{stub_python / 'bin'}:{env.get('PATH', '')}"
    return env


def _parent_death_signal() -> Any:
    """A child-side hook: SIGTERM when ``bertrt serve`` dies, even by SIGKILL (Linux prctl).

    prctl is looked up here, before the fork: the child only calls it.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


STARTED = re.compile(r"Started (GRPCInferenceService|HTTPService|Metrics Service) at")
SERVICES = {"GRPCInferenceService", "HTTPService", "Metrics Service"}


class TritonProcess:
    """A running ``tritonserver``; its output goes to our stderr, its last lines kept for errors."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.started: set[str] = set()  # the services this Triton said it started
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_parent_death_signal(),
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._copy, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _copy(self, stream: IO[bytes]) -> None:
        """Forward Triton's output; keep reading even when our stderr is gone (a full pipe
        would block Triton)."""
        for raw in stream:
            line = raw.decode("utf-8", errors="replace")
            self.tail.append(line.rstrip())
            found = STARTED.search(line)
            if found:
                self.started.add(found.group(1))
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def listening(self) -> bool:
        """Whether this Triton itself started HTTP, gRPC and metrics (not another server)."""
        return self.started >= SERVICES

    def alive(self) -> bool:
        return self.process.poll() is None

    def why(self) -> str:
        """The lines of Triton's output that say what went wrong (errors first)."""
        self._reader.join(timeout=2)
        lines = list(self.tail)
        errors = [x for x in lines if x.startswith("E") or "Error" in x or "error:" in x]
        return " | ".join((errors or lines)[-3:]) or f"exit {self.process.returncode}"

    def stop(self, timeout_s: float) -> int:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL after ``timeout_s``."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        code = self.process.wait()
        self._reader.join(timeout=2)
        return code


def loopback(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard: loopback)."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host else host


def wait_ready(
    triton: TritonProcess,
    http_port: int,
    timeout_s: float = READY_TIMEOUT_S,
    host: str = "127.0.0.1",
) -> None:
    """Until model ``bertrt`` is ready on this Triton's own HTTP service (an answer from
    another server on the port does not count); Triton exiting or the timeout is one line."""
    url = f"http://{loopback(host)}:{http_port}/v2/models/{MODEL_NAME}/ready"
    deadline = time.monotonic() + timeout_s
    while True:
        if not triton.alive():
            raise BertrtError(
                f"Triton or the {MODEL_NAME!r} model's stub failed to start: {triton.why()}"
            )
        try:
            with open_direct(url, 2) as answer:
                if answer.status == 200 and triton.listening():
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BertrtError(f"model {MODEL_NAME!r} was not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


STUB_COMM = "triton_python_b"  # /proc/<pid>/comm of triton_python_backend_stub (15 chars)


def processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command name) of every live process, from Linux's /proc.

    Zombies are left out: Triton does not reap a stub that was killed, so
    a dead stub stays in /proc (state ``Z``) for as long as Triton runs.
    """
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited while we read
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        table[int(stat.parent.name)] = (int(fields[1]), name)
    return table


def stub_processes(root: int) -> list[int]:
    """Pids of the live Python-backend stubs below process ``root``."""
    table = processes()
    below: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - below
        below |= frontier
    return sorted(pid for pid in below if table[pid][1] == STUB_COMM)


def watch(triton: TritonProcess, stubs: int, period_s: float = 1.0) -> int:
    """Block while Triton and its ``stubs`` model stubs run; 1 as soon as one of them is gone.

    When a stub dies, Triton keeps the model "ready" and answers every
    request with "Stub process is not healthy". So the stubs (one per
    instance) are counted, and a missing one stops the server (it is no
    longer ready) and ends ``bertrt serve`` with 1. Counted rather than
    remembered by pid, so a stub that dies before the first look is caught too.
    """
    if not Path("/proc/self/stat").exists():
        LOG.warning("no /proc here: a dead model stub goes unnoticed until Triton stops")
        stubs = 0
    while triton.alive():
        alive = stub_processes(triton.pid)
        if len(alive) < stubs:
            LOG.error(
                "a Python-backend stub of the %r model died (%d of %d left: %s)",
                MODEL_NAME, len(alive), stubs, alive,
            )  # fmt: skip
            return 1
        time.sleep(period_s)
    LOG.error("Triton stopped unexpectedly: %s", triton.why())
    return 1


class Stopped(Exception):
    """Raised in the main thread by SIGTERM/SIGINT: a requested, clean shutdown."""


def on_stop_signal(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_again(signum: int, frame: Any) -> None:
    """A second SIGTERM/SIGINT while draining: leave now (Triton follows: parent-death signal)."""
    raise SystemExit(f"bertrt serve: {signal.Signals(signum).name} again: stopped without draining")

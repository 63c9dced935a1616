"""``bertrt serve``: one of the run's models on Triton Inference Server.

nvidia-pytriton ships a real ``tritonserver`` (HTTP, gRPC, Prometheus
metrics, dynamic batching) with its Python backend. ``bertrt serve`` starts
that binary over a one-model repository written to a temporary directory
(:func:`write_repository`): model ``bertrt``, Python backend, whose stub
process runs the served model itself (:mod:`bertrt.serve.backend`). PyTriton's
Python API is not used: it puts a second process behind the stub, and that
hop cost more than the whole server's overhead target (docs/serving.md).

The order matters:

1. the model is loaded and run once here first, so a model that cannot run
   (missing artifact, no TensorRT, other classes than the run) is one line
   and an exit code before any server starts;
2. each Triton instance (a stub process) loads and warms up its own model
   in ``initialize``; ``/v2/models/bertrt/ready`` turns true only after that;
3. ``SIGTERM`` (and ``SIGINT``) are passed to Triton, which drains
   in-flight requests (``--exit-timeout-secs``) and exits; then so do we;
4. if Triton or a stub dies on its own, :func:`serve` stops Triton and
   returns non-zero with a message instead of leaving a server that is
   "ready" and answers nothing (:func:`watch`).

Under NumPy 2 the stub runs on a NumPy 1.x Python of its own
(:mod:`bertrt.serve.stub_env`): it is built against NumPy 1.x and reads
BYTES tensors wrongly with NumPy 2.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data.labels import run_labels
from bertrt.errors import BertrtError, UnavailableError
from bertrt.hardware import usable_cores
from bertrt.runners.run_model import deployment_model
from bertrt.serve.client import open_direct
from bertrt.serve.model import SETTINGS_PARAMETER, load_served
from bertrt.serve.preflight import (
    check_at_least,
    check_host,
    check_ports,
    check_ports_free,
    python_envs,
    remove_new_python_envs,
)
from bertrt.serve.stub_env import ensure_stub_env, path_line

LOG = logging.getLogger(__name__)
MODEL_NAME = "bertrt"
DRAIN_SECONDS = 30  # default: how long Triton waits for in-flight requests on shutdown
READY_TIMEOUT_S = 300  # Triton start + every instance's model load and warm-up
SERVE_EXTRA = (
    "make serve-deps (pip install -e '.[serve]' && pip install --no-deps nvidia-pytriton==0.7.0)"
)
MODEL_PY = f"""# Written by `bertrt serve`: Triton's Python backend runs bertrt's served model here.
import sys

{path_line()}
from bertrt.serve.backend import TritonPythonModel  # noqa: E402,F401
"""


ADMIN_APIS = "shared-memory,model-repository,logging,trace"  # what a client could change
ADMIN_HEADER = "bertrt-admin"
MAX_REQUEST_BYTES = 1 << 20  # default: the text of one request, all its rows together


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None  # None: the run's deployment_model(run)
    host: str = "127.0.0.1"  # what HTTP, gRPC and metrics bind: this machine only by default
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    # 0: a batch is whatever queued while the instance was busy. On one CPU instance
    # any wait is pure latency (docs/serving.md).
    max_queue_delay_us: int = 0
    # Two instances that take turns on the CPU (TURNS): one is always free to take the next
    # batch, which Triton 2.51's dynamic batcher needs not to stall ~500 ms (docs/serving.md).
    instances: int = 2
    parallel_instances: bool = False  # CPU instances run at once instead of taking turns
    dynamic_batching: bool = True
    # Rows Triton should aim for per execution (its preferred_batch_size); None: 1 for a CPU
    # model (one request per execution: batching bought no throughput on the CPU and cost
    # tail latency, docs/serving.md), Triton's own (as many as queued) for TensorRT; 0: Triton's.
    preferred_batch: int | None = None
    max_queue_size: int = 256  # beyond it requests are rejected at once, not queued
    stub_env: Path | None = None  # None: stub_env.ensure_stub_env()'s choice
    drain_s: int = DRAIN_SECONDS  # also how long a stop takes once a model stub is dead
    max_request_bytes: int = MAX_REQUEST_BYTES  # a bigger request is refused (400), never run
    open_admin: bool = False  # Triton's admin APIs (ADMIN_APIS) open to any client

    @property
    def ports(self) -> dict[str, int]:
        return {"--http-port": self.http_port, "--grpc-port": self.grpc_port,
                "--metrics-port": self.metrics_port}  # fmt: skip

    def check(self) -> None:
        """Every value in range, in one line naming the flag (ConfigError: exit 2)."""
        check_host(self.host)
        check_ports(self.ports)
        check_at_least({"--max-batch": self.max_batch, "--instances": self.instances,
                        "--max-queue-size": self.max_queue_size,
                        "--max-request-bytes": self.max_request_bytes}, 1)  # fmt: skip
        check_at_least({"--max-queue-delay-us": self.max_queue_delay_us,
                        "--preferred-batch": self.preferred_batch or 0,
                        "--drain-s": self.drain_s}, 0)  # fmt: skip


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


def takes_turns(options: ServeOptions, model: str) -> bool:
    """Whether the instances run the model one at a time (a lock they share).

    On the CPU, by default: each instance then gets every core, and the
    cores are never split between two models computing at once. A TensorRT
    model's instances run in parallel on the GPU.
    """
    return options.instances > 1 and not options.parallel_instances and not model.startswith("trt-")


def preferred_batch(options: ServeOptions, model: str) -> int:
    """Triton's preferred batch size for ``model`` (0: none, batches as large as queued)."""
    if options.preferred_batch is not None:
        return options.preferred_batch
    return 0 if model.startswith("trt-") else 1


def instance_threads(config: Config, instances: int, turns: bool = False) -> int:
    """Intra-op threads per Triton instance: every core when they take turns, else a share."""
    return config.threads or max(1, usable_cores() // (1 if turns else instances))


def engine_max_batch(run: RunDir, model: str) -> int | None:
    """A TensorRT model's largest profile batch (Triton must not batch beyond it), else None."""
    if not model.startswith("trt-"):
        return None
    from bertrt.trt.metadata import read_meta

    return int(read_meta(run.engine_meta(model.split("-")[-1])).profile.batch[2])


def model_config(
    config: Config, run: RunDir, model: str, options: ServeOptions, classes: int
) -> Any:
    """Model ``bertrt``'s configuration, built as Triton's own schema (tritonclient's protobuf)."""
    from bertrt.serve.repo import TEXT_SPECS, _pb, _tensors, out_specs

    pb = _pb()
    max_batch = min(options.max_batch, engine_max_batch(run, model) or options.max_batch)
    out = pb.ModelConfig(name=MODEL_NAME, backend="python", max_batch_size=max_batch)
    out.input.extend(_tensors(pb, TEXT_SPECS, "input"))
    out.output.extend(_tensors(pb, out_specs(classes), "output"))
    group = out.instance_group.add()
    group.count = options.instances
    group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_CPU")
    if options.dynamic_batching:
        out.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
        out.dynamic_batching.default_queue_policy.max_queue_size = options.max_queue_size
        preferred = preferred_batch(options, model)
        if preferred:
            out.dynamic_batching.preferred_batch_size.append(min(preferred, max_batch))
    settings = {
        "run_dir": str(run.root.resolve()),
        "model": model,
        "threads": instance_threads(config, options.instances, takes_turns(options, model)),
        "turns": takes_turns(options, model),
        "max_length": config.model.max_length,
        "max_request_bytes": options.max_request_bytes,
    }
    out.parameters[SETTINGS_PARAMETER].string_value = json.dumps(settings)
    return out


def write_repository(root: Path, install: TritonInstall, model_cfg: Any) -> None:
    """``root/models/bertrt`` (config + model.py) and ``root/backends`` (the Python backend + stub)."""
    from google.protobuf import text_format

    version = root / "models" / MODEL_NAME / "1"
    version.mkdir(parents=True)
    (version.parent / "config.pbtxt").write_text(text_format.MessageToString(model_cfg))
    (version / "model.py").write_text(MODEL_PY)
    shutil.copytree(install.backends, root / "backends")
    shutil.copy(install.stub, root / "backends" / "python" / install.stub.name)


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


def _processes() -> dict[int, tuple[int, str]]:
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
    table = _processes()
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


class _Stopped(Exception):
    """Raised in the main thread by SIGTERM/SIGINT: a requested, clean shutdown."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stopped(signal.Signals(signum).name)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _again(signum: int, frame: Any) -> None:
    """A second SIGTERM/SIGINT while draining: leave now (Triton follows: parent-death signal)."""
    raise SystemExit(f"bertrt serve: {signal.Signals(signum).name} again: stopped without draining")


def _prepare(
    config: Config, run: RunDir, options: ServeOptions
) -> tuple[str, TritonInstall, Path, Any]:
    """Everything checked before Triton starts: flags, ports, Triton, the stub's Python, and
    the model (loaded and run once here, so a model that cannot run is one line)."""
    options.check()
    check_ports_free(options.host, options.ports)
    model = options.model or deployment_model(run)
    install = TritonInstall.find()
    stub_python = ensure_stub_env(options.stub_env) or Path(sys.prefix)
    threads = instance_threads(config, options.instances, takes_turns(options, model))
    load_served(run, model, threads, config.model.max_length).deactivate()
    return model, install, stub_python, model_config(config, run, model, options,
                                                     len(run_labels(run)))  # fmt: skip


def serve(config: Config, run: RunDir, options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until Triton or a model stub dies (exit 1)."""
    model, install, stub_python, model_cfg = _prepare(config, run, options)
    previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    triton: TritonProcess | None = None
    envs = python_envs()
    try:
        with tempfile.TemporaryDirectory(prefix="bertrt-serve-") as tmp:
            root = Path(tmp)
            try:
                write_repository(root, install, model_cfg)
                check_ports_free(options.host, options.ports)  # again: the model load took a while
                LOG.info("%s: starting Triton (%d instance(s), stub Python %s)",
                         model, options.instances, stub_python)  # fmt: skip
                triton = TritonProcess(
                    [str(install.binary), *triton_command(root, options)],
                    triton_env(install, stub_python),
                )
                wait_ready(triton, options.http_port, host=options.host)
                LOG.info(
                    "serving %s as model %r on %s: http :%d, grpc :%d, metrics :%d", model,
                    MODEL_NAME, options.host, options.http_port, options.grpc_port,
                    options.metrics_port,
                )  # fmt: skip
                return watch(triton, options.instances)
            except _Stopped as why:
                LOG.info("%s: draining in-flight requests (up to %ds)", why, options.drain_s)
                return 0
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                for sig in STOP_SIGNALS:
                    signal.signal(sig, _again)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                if triton is not None:
                    triton.stop(options.drain_s + 10)
    except _Stopped:  # in the instant before the handlers above changed: Triton, if it
        return 0  # started, follows our exit (parent-death signal)
    finally:
        remove_new_python_envs(envs)  # Triton leaves its own after a failed start
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""``bertrt serve``: one of the run's models on Triton Inference Server, through PyTriton.

PyTriton starts a real ``tritonserver`` (HTTP, gRPC, Prometheus metrics,
dynamic batching) whose Python-backend proxy forwards each dynamic batch to a
:class:`~bertrt.serve.model.ServedModel` in this process. The order matters:

1. every instance's runner is activated and warmed up *before* Triton
   starts, so ``/v2/health/ready`` turns true only once the model has run;
2. ``SIGTERM`` (and ``SIGINT``) stop Triton, which drains in-flight
   requests (``exit_timeout_secs``) before the runners are freed;
3. if Triton or the model's proxy (the Python-backend stub) dies on its own,
   :func:`serve` stops Triton and returns non-zero with a message instead of
   leaving a server that is "ready" and answers nothing (:func:`watch`).

Under NumPy 2 the stub runs on a NumPy 1.x environment of its own
(:mod:`bertrt.serve.stub_env`): it is built against NumPy 1.x and reads
BYTES tensors wrongly with NumPy 2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data.labels import run_labels
from bertrt.errors import BertrtError, UnavailableError
from bertrt.hardware import usable_cores
from bertrt.runners.registry import runner_for_model, tensorrt_unavailable
from bertrt.serve.model import ServedModel
from bertrt.serve.stub_env import backend_python, ensure_stub_env
from bertrt.serve.texts import TEXT_INPUTS, TextOptions, load_run_tokenizer

LOG = logging.getLogger(__name__)
MODEL_NAME = "bertrt"
DRAIN_SECONDS = 30  # default: how long Triton waits for in-flight requests on shutdown
SERVE_EXTRA = (
    "make serve-deps (pip install -e '.[serve]' && pip install --no-deps nvidia-pytriton==0.7.0)"
)


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None  # None: default_model(run)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    # 0: a batch is whatever queued while the instance was busy. On one CPU instance
    # any wait is pure latency (2 ms: concurrency-1 p50 +3.3 ms, concurrency-32
    # throughput -3 %; docs/serving.md).
    max_queue_delay_us: int = 0
    instances: int = 1
    dynamic_batching: bool = True
    max_queue_size: int = 256  # beyond it requests are rejected at once, not queued
    stub_env: Path | None = None  # None: stub_env.ensure_stub_env()'s choice
    drain_s: int = DRAIN_SECONDS  # also how long a stop takes once a model stub is dead


def default_model(run: RunDir) -> str:
    """``trt-int8`` where its engine exists and TensorRT runs here; else the run's `cpu`
    model (cpu.json: whichever runtime calibrate found fastest on the CPU), else ``onnx-cpu``."""
    if run.engine("int8").is_file() and tensorrt_unavailable() is None:
        return "trt-int8"
    return "cpu" if run.cpu_choice.is_file() else "onnx-cpu"


def python_library_path() -> None:
    """Let Triton's Python-backend stub load *this* interpreter's libpython.

    The stub links ``libpython3.x.so``; under an interpreter that is not the
    system one (pyenv, many venvs) it would pick the system library and fail
    at model load (``'_thread.RLock' object has no attribute
    '_recursion_count'``). Triton inherits this process's environment, so
    putting the running interpreter's LIBDIR first fixes it.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not library or not (Path(libdir) / library).exists():
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if not paths or paths[0] != libdir:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *[p for p in paths if p != libdir]])


@contextlib.contextmanager
def triton_environment(stub_env: Path | None) -> Iterator[None]:
    """The environment tritonserver (and its stubs) start with; this process keeps its own.

    ``stub_env``: the stub's NumPy 1.x environment under NumPy 2
    (:mod:`bertrt.serve.stub_env`), None to let the stub use this interpreter's.
    """
    saved = os.environ.get("LD_LIBRARY_PATH")
    python_library_path()
    try:
        with backend_python(stub_env):
            yield
    finally:
        if saved is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved


def instance_models(config: Config, run: RunDir, model: str, instances: int) -> list[ServedModel]:
    """One activated, warmed-up model per Triton instance (cores split between them)."""
    threads = config.threads or max(1, usable_cores() // instances)
    tokenizer = load_run_tokenizer(run)
    options = TextOptions.of(run)
    labels = run_labels(run)
    served = []
    for _ in range(instances):
        runner = runner_for_model(run, model, threads=threads, stage="serve")
        one = ServedModel(runner, tokenizer, config.model.max_length, options, labels)
        one.activate()
        served.append(one)
    return served


def _pytriton() -> Any:
    try:
        import pytriton.triton
    except ImportError as err:
        raise UnavailableError(f"bertrt serve needs PyTriton ({err}); {SERVE_EXTRA}") from None
    return pytriton


def _bind(triton: Any, models: list[ServedModel], options: ServeOptions) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor

    batcher = None
    if options.dynamic_batching:
        batcher = DynamicBatcher(
            max_queue_delay_microseconds=options.max_queue_delay_us,
            default_queue_policy=QueuePolicy(max_queue_size=options.max_queue_size),
        )
    triton.bind(
        model_name=MODEL_NAME,
        infer_func=models,
        inputs=[Tensor(name=n, dtype=bytes, shape=(1,), optional=True) for n in TEXT_INPUTS],
        outputs=[
            Tensor(name="label", dtype=bytes, shape=(1,)),
            Tensor(name="probabilities", dtype=np.float32, shape=(-1,)),
        ],
        config=ModelConfig(max_batch_size=options.max_batch, batcher=batcher),
        strict=True,
    )


def triton_config(options: ServeOptions) -> Any:
    from pytriton.triton import TritonConfig

    return TritonConfig(
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        metrics_port=options.metrics_port,
        exit_timeout_secs=options.drain_s,
        strict_readiness=True,
    )


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
    """Pids of the live Python-backend stubs below process ``root`` (Triton's children)."""
    table = _processes()
    below: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - below
        below |= frontier
    return sorted(pid for pid in below if table[pid][1] == STUB_COMM)


def watch(triton: Any, stubs: int, period_s: float = 1.0) -> int:
    """Block while Triton and its ``stubs`` model stubs run; 1 as soon as one of them is gone.

    PyTriton's ``is_alive()`` watches tritonserver and this process's
    handlers, not the stub: when the stub dies, Triton keeps the model
    "ready" and answers every request with "Stub process is not healthy".
    So the stubs (one per instance) are counted here too, and a missing one
    stops the server (it is no longer ready) and ends ``bertrt serve`` with 1.
    Counted rather than remembered by pid, so a stub that dies before the
    first look is caught too.
    """
    if not Path("/proc/self/stat").exists():
        LOG.warning("no /proc here: a dead model stub goes unnoticed until Triton stops")
        stubs = 0
    while triton.is_alive():
        alive = stub_processes(os.getpid())
        if len(alive) < stubs:
            LOG.error(
                "a Python-backend stub of the %r model died (%d of %d left: %s)",
                MODEL_NAME, len(alive), stubs, alive,
            )  # fmt: skip
            return 1
        time.sleep(period_s)
    LOG.error("Triton or the %r model process stopped unexpectedly", MODEL_NAME)
    return 1


def start(triton: Any, stub_env: Path | None) -> None:
    """Start tritonserver and wait for the model: a failure is the user's line, not a traceback.

    The model can turn ready a moment before PyTriton has connected to its
    stub; a stub that dies in that moment fails PyTriton's connection
    (``ConnectionResetError``), reported here like any start that failed.
    """
    from pytriton.exceptions import PyTritonError

    with triton_environment(stub_env):
        try:
            triton.run()
        except (OSError, PyTritonError) as err:
            raise BertrtError(
                f"Triton or the {MODEL_NAME!r} model's stub failed to start: {err}"
            ) from None


class _Stopped(Exception):
    """Raised in the main thread by SIGTERM/SIGINT: a requested, clean shutdown."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stopped(signal.Signals(signum).name)


def serve(config: Config, run: RunDir, options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until Triton or the model dies (exit 1)."""
    model = options.model or default_model(run)
    pytriton = _pytriton()
    stub_env = ensure_stub_env(options.stub_env)
    if stub_env is not None:
        LOG.info("NumPy %s here: Triton's Python-backend stub runs on %s", np.__version__, stub_env)
    models = instance_models(config, run, model, options.instances)
    LOG.info("%s warmed up on %d instance(s); starting Triton", model, len(models))
    triton = pytriton.triton.Triton(config=triton_config(options))
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _bind(triton, models, options)
        start(triton, stub_env)
        LOG.info(
            "serving %s as model %r: http :%d, grpc :%d, metrics :%d",
            model,
            MODEL_NAME,
            options.http_port,
            options.grpc_port,
            options.metrics_port,
        )
        return watch(triton, len(models))
    except _Stopped as why:
        LOG.info("%s: draining in-flight requests (up to %ds)", why, options.drain_s)
        return 0
    finally:
        for sig, handler in previous.items():  # a second signal ends the process
            signal.signal(sig, handler)
        triton.stop()
        for one in models:
            one.deactivate()

"""``bertrt serve``: one of the run's models on Triton Inference Server, through PyTriton.

PyTriton starts a real ``tritonserver`` (HTTP, gRPC, Prometheus metrics,
dynamic batching) whose Python-backend proxy forwards each dynamic batch to a
:class:`~bertrt.serve.model.ServedModel` in this process. The order matters:

1. every instance's runner is activated and warmed up *before* Triton
   starts, so ``/v2/health/ready`` turns true only once the model has run;
2. ``SIGTERM`` (and ``SIGINT``) stop Triton, which drains in-flight
   requests (``exit_timeout_secs``) before the runners are freed;
3. if Triton or the model's proxy dies on its own, :func:`serve` returns
   non-zero with a message instead of hanging on a server that answers nothing.
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
from bertrt.errors import UnavailableError
from bertrt.hardware import usable_cores
from bertrt.runners.registry import runner_for_model, tensorrt_unavailable
from bertrt.serve.model import ServedModel
from bertrt.serve.texts import TEXT_INPUTS, TextOptions, load_run_tokenizer

LOG = logging.getLogger(__name__)
MODEL_NAME = "bertrt"
DRAIN_SECONDS = 30  # how long Triton waits for in-flight requests on shutdown
SERVE_EXTRA = "pip install 'bertrt[serve]' (nvidia-pytriton, tritonclient)"


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None  # None: default_model(run)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    max_queue_delay_us: int = 2000
    instances: int = 1
    dynamic_batching: bool = True
    max_queue_size: int = 256  # beyond it requests are rejected at once, not queued


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


def stub_numpy_problem() -> str | None:
    """Why PyTriton's Python-backend stub cannot read BYTES tensors here, or None.

    The stub shipped with nvidia-pytriton 0.7 is compiled against NumPy 1.x
    (hence the package's ``numpy<2`` pin) and imports the interpreter's own
    NumPy (it runs Python in isolated mode: PYTHONPATH and ``._pth`` files do
    not reach it). Under NumPy 2 it builds every BYTES input with wrong
    strides and the stub dies on the first request ("Stub process is not
    healthy"), measured with NumPy 2.4. Refusing at start beats a server
    that is ready and answers nothing.
    """
    major = int(np.__version__.split(".")[0])
    if major < 2:
        return None
    return (
        f"this interpreter has NumPy {np.__version__}; the Triton Python-backend stub of "
        "nvidia-pytriton 0.7 needs NumPy 1.x to read BYTES inputs (it crashes on the first "
        "request otherwise). Install the serve extra in an environment that resolves "
        "numpy<2 (pip install -e '.[serve]' in a fresh venv), or deploy the model "
        "repository of `bertrt triton-repo` on NVIDIA's tritonserver container"
    )


@contextlib.contextmanager
def triton_environment() -> Iterator[None]:
    """The environment tritonserver (and its stubs) start with; this process keeps its own."""
    saved = os.environ.get("LD_LIBRARY_PATH")
    python_library_path()
    try:
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
        exit_timeout_secs=DRAIN_SECONDS,
        strict_readiness=True,
    )


class _Stopped(Exception):
    """Raised in the main thread by SIGTERM/SIGINT: a requested, clean shutdown."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stopped(signal.Signals(signum).name)


def serve(config: Config, run: RunDir, options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until Triton or the model dies (exit 1)."""
    model = options.model or default_model(run)
    pytriton = _pytriton()
    if problem := stub_numpy_problem():
        raise UnavailableError(problem)
    models = instance_models(config, run, model, options.instances)
    LOG.info("%s warmed up on %d instance(s); starting Triton", model, len(models))
    triton = pytriton.triton.Triton(config=triton_config(options))
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _bind(triton, models, options)
        with triton_environment():
            triton.run()
        LOG.info(
            "serving %s as model %r: http :%d, grpc :%d, metrics :%d",
            model,
            MODEL_NAME,
            options.http_port,
            options.grpc_port,
            options.metrics_port,
        )
        while triton.is_alive():
            time.sleep(1.0)
        LOG.error("Triton or the %r model process stopped unexpectedly", MODEL_NAME)
        return 1
    except _Stopped as why:
        LOG.info("%s: draining in-flight requests (up to %ds)", why, DRAIN_SECONDS)
        return 0
    finally:
        for sig, handler in previous.items():  # a second signal ends the process
            signal.signal(sig, handler)
        triton.stop()
        for one in models:
            one.deactivate()

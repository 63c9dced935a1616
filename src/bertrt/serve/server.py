"""``bertrt serve``: one of the run's models on Triton Inference Server.

nvidia-pytriton ships a real ``tritonserver`` (HTTP, gRPC, Prometheus
metrics, dynamic batching) with its Python backend. ``bertrt serve`` starts
that binary over a one-model repository written to a temporary directory
(:func:`~bertrt.serve.model_config.write_serving_repository`): model ``bertrt``,
Python backend, whose stub process runs the served model itself
(:mod:`bertrt.serve.backend`). PyTriton's
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
   "ready" and answers nothing (:func:`~bertrt.serve.triton_process.watch`).

Under NumPy 2 the stub runs on a NumPy 1.x Python of its own
(:mod:`bertrt.serve.stub_env`): it is built against NumPy 1.x and reads
BYTES tensors wrongly with NumPy 2.

This module only orchestrates; each job has its own: the options
(:mod:`~bertrt.serve.options`), what is checked first (:mod:`~bertrt.serve.preflight`),
the served model (:mod:`~bertrt.serve.model`), its Triton configuration and
repository (:mod:`~bertrt.serve.model_config`), and the Triton process, found,
started, supervised and signalled (:mod:`~bertrt.serve.triton_process`).
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.runners.run_model import deployment_model
from bertrt.serve.client import MODEL_NAME
from bertrt.serve.model import load_served
from bertrt.serve.model_config import (
    instance_threads,
    model_config,
    takes_turns,
    write_serving_repository,
)
from bertrt.serve.options import ServeOptions
from bertrt.serve.preflight import check_ports_free, python_envs, remove_new_python_envs
from bertrt.serve.stub_env import ensure_stub_env
from bertrt.serve.triton_process import (
    STOP_SIGNALS,
    Stopped,
    TritonInstall,
    TritonProcess,
    on_stop_signal,
    stop_again,
    triton_command,
    triton_env,
    wait_ready,
    watch,
)

LOG = logging.getLogger(__name__)


def _prepare(
    config: Config, run: RunDir, options: ServeOptions
) -> tuple[str, TritonInstall, Path, Any]:
    """Everything checked before Triton starts: flags, ports, Triton, the stub's Python, and
    the model (loaded and run once here, so a model that cannot run is one line). Its class
    names, its device and the largest batch it takes come from the loaded model, not the run
    directory; it is loaded with a CPU model's threads (a GPU runner takes none)."""
    options.check()
    check_ports_free(options.host, options.ports)
    model = options.model or deployment_model(run)
    install = TritonInstall.find()
    stub_python = ensure_stub_env(options.stub_env) or Path(sys.prefix)
    threads = instance_threads(config, options.instances, takes_turns(options))
    served = load_served(run, model, threads, config.model.max_length)
    try:
        classes, device = len(served.labels), served.runner.device
        batch_limit = served.largest_batch(options.max_batch)
    finally:
        served.deactivate()
    cfg = model_config(config, run.root, model, options, classes, batch_limit, device)
    return model, install, stub_python, cfg


def serve(config: Config, run: RunDir, options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until Triton or a model stub dies (exit 1)."""
    model, install, stub_python, model_cfg = _prepare(config, run, options)
    previous = {s: signal.signal(s, on_stop_signal) for s in STOP_SIGNALS}
    triton: TritonProcess | None = None
    envs = python_envs()
    try:
        with tempfile.TemporaryDirectory(prefix="bertrt-serve-") as tmp:
            root = Path(tmp)
            try:
                write_serving_repository(root, install, model_cfg)
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
            except Stopped as why:
                LOG.info("%s: draining in-flight requests (up to %ds)", why, options.drain_s)
                return 0
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                for sig in STOP_SIGNALS:
                    signal.signal(sig, stop_again)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                if triton is not None:
                    triton.stop(options.drain_s + 10)
    except Stopped:  # in the instant before the handlers above changed: Triton, if it
        return 0  # started, follows our exit (parent-death signal)
    finally:
        remove_new_python_envs(envs)  # Triton leaves its own after a failed start
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""The serving commands of the ``bertrt`` CLI: their flags and what each runs.

Kept here so ``bertrt.cli`` only registers them; tritonserver and tritonclient are
imported when a command runs, never for ``bertrt --help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.errors import BertrtError, MissingArtifactError

LEVELS = "1,2,4,8,16,32"


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``serve``, ``triton-repo``, ``loadtest``, and ``predict --url`` (a running server)."""
    sub.choices["predict"].add_argument(
        "--url", default=None, help="ask a running `bertrt serve` (host:port) instead"
    )
    _serve_parser(sub, common)
    _repo_parser(sub, common)
    _loadtest_parser(sub, common)


def _serve_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("serve", help="serve a model on Triton Inference Server")
    common(p)
    p.add_argument(
        "--model", default=None, help="registry name (default: trt-int8, else cpu, else onnx-cpu)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="IP address HTTP, gRPC and metrics bind (default: %(default)s, this machine "
        "only; 0.0.0.0: every interface)",
    )
    for flag, default in (("http-port", 8000), ("grpc-port", 8001), ("metrics-port", 8002)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        help="how long Triton may hold a request to grow its batch (default: %(default)s: "
        "batches form while the model is busy)",
    )
    p.add_argument(
        "--instances",
        type=int,
        default=2,
        help="Triton instances of the model (default: %(default)s; on the CPU they take turns, "
        "each with every core)",
    )
    p.add_argument(
        "--parallel-instances",
        action="store_true",
        help="CPU instances run at once, the cores split between them",
    )
    _serve_limits(p)


def _serve_limits(p: argparse.ArgumentParser) -> None:
    """What one request, the queue and a shutdown may cost; what clients may touch."""
    p.add_argument("--no-dynamic-batching", action="store_true")
    p.add_argument(
        "--preferred-batch",
        type=int,
        default=None,
        help="rows Triton aims for per execution (default: 1 for a CPU model, one request at "
        "a time; as many as queued for TensorRT; 0: as many as queued)",
    )
    p.add_argument(
        "--max-queue-size", type=int, default=256, help="queued requests beyond it are refused"
    )
    p.add_argument(
        "--drain-s", type=int, default=30, help="on SIGTERM, wait this long for in-flight requests"
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=1 << 20,
        help="a request with more text (all rows) is refused with 400 (default: %(default)s)",
    )
    p.add_argument(
        "--open-admin-api",
        action="store_true",
        help="let any client use Triton's shared-memory, repository, logging and trace APIs "
        "(default: refused)",
    )
    p.add_argument(
        "--stub-env",
        default=None,
        help="NumPy 1.x venv for Triton's Python-backend stub under NumPy 2 "
        "(default: built once under ~/.cache/bertrt)",
    )


def _repo_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("triton-repo", help="model repository for NVIDIA's tritonserver container")
    common(p)
    p.add_argument(
        "--out",
        required=True,
        help="repository directory: new, empty, or one this command wrote (replaced whole)",
    )
    p.add_argument(
        "--model", default="onnx-cpu", help="onnx-*, ov-*, cpu or trt-* (default: %(default)s)"
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=1)


def _loadtest_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("loadtest", help="concurrency sweep against a running server")
    common(p)
    p.add_argument("--url", default="localhost:8000")
    p.add_argument("--metrics-url", default="http://localhost:8002/metrics")
    p.add_argument("--concurrency", default=LEVELS, help="comma list (default: %(default)s)")
    p.add_argument("--requests", type=int, default=400, help="per step (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=30.0, help="per step (default: %(default)s)")
    p.add_argument("--out", default=None, help="report directory (default: <run>/bench)")


def serve_command(args: argparse.Namespace, config: Config, run: RunDir) -> None:
    from bertrt.serve.server import ServeOptions, serve

    options = ServeOptions(
        model=args.model,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_batch=args.max_batch,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        parallel_instances=args.parallel_instances,
        dynamic_batching=not args.no_dynamic_batching,
        preferred_batch=args.preferred_batch,
        max_queue_size=args.max_queue_size,
        stub_env=Path(args.stub_env) if args.stub_env else None,
        drain_s=args.drain_s,
        host=args.host,
        max_request_bytes=args.max_request_bytes,
        open_admin=args.open_admin_api,
    )
    if serve(config, run, options) != 0:
        raise BertrtError("the server stopped on its own (Triton or a model stub died)")


def repo_command(args: argparse.Namespace, config: Config, run: RunDir) -> None:
    from bertrt.serve.repo import RepoOptions, write_repository

    options = RepoOptions(
        args.model, args.device, args.max_batch, args.max_queue_delay_us, args.instances
    )
    print(write_repository(config, run, options, Path(args.out)))


def loadtest_command(args: argparse.Namespace, config: Config, run: RunDir) -> None:
    from bertrt.data import load_split
    from bertrt.serve.loadtest import markdown, sweep

    texts = list(load_split(run, ("test",))["test"]["text"])
    if not texts:
        raise MissingArtifactError(f"{run.split}: the test split has no rows")
    levels = [int(x) for x in args.concurrency.split(",")]
    out = Path(args.out) if args.out else run.bench_dir
    steps = sweep(args.url, args.metrics_url, texts, levels, args.requests, args.seconds, out)
    print(markdown(steps, f"Load test of {args.url}"))


COMMANDS = {"serve": serve_command, "triton-repo": repo_command, "loadtest": loadtest_command}

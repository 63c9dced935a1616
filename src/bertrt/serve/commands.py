"""The serving commands of the ``bertrt`` CLI: their flags and what each runs.

Kept here so ``bertrt.cli`` only registers them; tritonserver and tritonclient are
imported when a command runs, never for ``bertrt --help``. Every default comes from
the command's options dataclass (:mod:`bertrt.serve.options`) or, for ``serve``,
from the config's ``serve`` section, which its flags override: none is repeated here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.config import Config, ServeConfig
from bertrt.errors import BertrtError, MissingArtifactError
from bertrt.serve.options import (
    SERVE_DEFAULTS,
    LoadtestOptions,
    RepoOptions,
    ServeOptions,
    defaults,
)


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``serve``, ``triton-repo``, ``loadtest``, and ``predict --url`` (a running server)."""
    sub.choices["predict"].add_argument(
        "--url", default=None, help="ask a running `bertrt serve` (host:port) instead"
    )
    _serve_parser(sub, common)
    _repo_parser(sub, common)
    _loadtest_parser(sub, common)


def _serve_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Each flag but --model and --stub-env overrides the config's ``serve`` section; its
    default (None: not given) comes from there, the shipped value named in the help."""
    p = sub.add_parser("serve", help="serve a model on Triton Inference Server")
    common(p)
    p.add_argument(
        "--model", default=None, help="registry name (default: trt-int8, else cpu, else onnx-cpu)"
    )
    p.add_argument(
        "--host",
        help="IP address HTTP, gRPC and metrics bind (default: serve.host, "
        f"{SERVE_DEFAULTS.host}: this machine only; 0.0.0.0: every interface)",
    )
    for flag in ("http-port", "grpc-port", "metrics-port", "max-batch"):
        p.add_argument(f"--{flag}", type=int, help=_from_config(flag))
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        help="how long Triton may hold a request to grow its batch "
        + _from_config("max-queue-delay-us", "batches form while the model is busy"),
    )
    p.add_argument(
        "--instances",
        type=int,
        help="Triton instances of the model "
        + _from_config("instances", "on the CPU they take turns, each with every core"),
    )
    p.add_argument(
        "--parallel-instances",
        action="store_const",
        const=True,
        help="CPU instances run at once, the cores split between them",
    )
    _serve_limits(p)


def _from_config(flag: str, why: str = "") -> str:
    """The help's default: the config key and its shipped value."""
    key = flag.replace("-", "_")
    shipped = getattr(SERVE_DEFAULTS, key)
    return f"(default: serve.{key}, {shipped}{': ' + why if why else ''})"


def _serve_limits(p: argparse.ArgumentParser) -> None:
    """What one request, the queue and a shutdown may cost; what clients may touch."""
    p.add_argument(
        "--no-dynamic-batching", dest="dynamic_batching", action="store_const", const=False
    )
    p.add_argument(
        "--preferred-batch",
        type=int,
        help="rows Triton aims for per execution (default: serve.preferred_batch, 1 for a CPU "
        "model, one request at a time; as many as queued for TensorRT; 0: as many as queued)",
    )
    p.add_argument(
        "--max-queue-size",
        type=int,
        help="queued requests beyond it are refused " + _from_config("max-queue-size"),
    )
    p.add_argument(
        "--drain-s",
        type=int,
        help="on SIGTERM, wait this long for in-flight requests " + _from_config("drain-s"),
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        help="a request with more text (all rows) is refused with 400 "
        + _from_config("max-request-bytes"),
    )
    p.add_argument(
        "--open-admin-api",
        dest="open_admin",
        action="store_const",
        const=True,
        help="let any client use Triton's shared-memory, repository, logging and trace APIs "
        "(default: serve.open_admin, refused)",
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
    p.set_defaults(**defaults(RepoOptions))
    p.add_argument(
        "--out",
        required=True,
        help="repository directory: new, empty, or one this command wrote (replaced whole)",
    )
    p.add_argument("--model", help="onnx-*, ov-*, cpu or trt-* (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "gpu"))
    p.add_argument("--max-batch", type=int)
    p.add_argument("--max-queue-delay-us", type=int)
    p.add_argument("--instances", type=int)


def _loadtest_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("loadtest", help="concurrency sweep against a running server")
    common(p)
    p.set_defaults(**defaults(LoadtestOptions))
    p.add_argument("--url")
    p.add_argument("--metrics-url")
    p.add_argument("--concurrency", help="comma list (default: %(default)s)")
    p.add_argument("--requests", type=int, help="per step (default: %(default)s)")
    p.add_argument("--seconds", type=float, help="per step (default: %(default)s)")
    p.add_argument("--out", default=None, help="report directory (default: <run>/bench)")


def serve_options(args: argparse.Namespace, config: Config) -> ServeOptions:
    """The config's ``serve`` section, with every flag given on the command line over it."""
    given = {
        name: getattr(args, name)
        for name in defaults(ServeConfig)
        if getattr(args, name, None) is not None
    }
    stub_env = Path(args.stub_env) if args.stub_env else None
    return ServeOptions.of(config.serve, model=args.model, stub_env=stub_env, **given)


def serve_command(args: argparse.Namespace, config: Config, run: RunDir) -> None:
    from bertrt.serve.server import serve

    if serve(config, run, serve_options(args, config)) != 0:
        raise BertrtError("the server stopped on its own (Triton or a model stub died)")


def repo_options(args: argparse.Namespace) -> RepoOptions:
    return RepoOptions(**{name: getattr(args, name) for name in defaults(RepoOptions)})


def repo_command(args: argparse.Namespace, config: Config, run: RunDir) -> None:
    from bertrt.serve.repo import write_standalone_repository

    print(write_standalone_repository(config, run, repo_options(args), Path(args.out)))


def loadtest_command(args: argparse.Namespace, config: Config, run: RunDir) -> None:
    from bertrt.data import load_split
    from bertrt.serve.loadtest import markdown, sweep

    texts = list(load_split(run, ("test",))["test"]["text"])
    if not texts:
        raise MissingArtifactError(f"{run.split}: the test split has no rows")
    opts = LoadtestOptions(**{name: getattr(args, name) for name in defaults(LoadtestOptions)})
    out = Path(args.out) if args.out else run.bench_dir
    steps = sweep(opts.url, opts.metrics_url, texts, opts.levels, opts.requests, opts.seconds, out)
    print(markdown(steps, f"Load test of {opts.url}"))


COMMANDS = {"serve": serve_command, "triton-repo": repo_command, "loadtest": loadtest_command}

"""What each serving command can be asked for: one frozen dataclass per command, its defaults
the only copy.

The CLI's flags (:mod:`bertrt.serve.commands`) take their defaults from here, and
``bertrt serve``'s settings that a user keeps with a run come from the config's
``serve:`` section (:class:`bertrt.config.ServeConfig`), which :class:`ServeOptions`
takes its defaults from; a flag given on the command line overrides it. Light on
purpose: the CLI imports it to build ``bertrt --help``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertrt.config import ServeConfig
from bertrt.errors import ConfigError
from bertrt.serve.preflight import check_at_least, check_host, check_ports

SERVE_DEFAULTS = ServeConfig()  # the config's serve section as shipped


def defaults(cls: type) -> dict[str, Any]:
    """Each field of dataclass ``cls`` that has a plain default, with it."""
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


@dataclass(frozen=True)
class ServeOptions:
    """``bertrt serve``'s settings: the config's ``serve`` section (what each field means is
    documented there) plus what is chosen per invocation (the model, the stub's Python)."""

    model: str | None = None  # None: the run's deployment_model(run)
    stub_env: Path | None = None  # None: stub_env.ensure_stub_env()'s choice
    host: str = SERVE_DEFAULTS.host
    http_port: int = SERVE_DEFAULTS.http_port
    grpc_port: int = SERVE_DEFAULTS.grpc_port
    metrics_port: int = SERVE_DEFAULTS.metrics_port
    max_batch: int = SERVE_DEFAULTS.max_batch
    max_queue_delay_us: int = SERVE_DEFAULTS.max_queue_delay_us
    instances: int = SERVE_DEFAULTS.instances
    parallel_instances: bool = SERVE_DEFAULTS.parallel_instances
    dynamic_batching: bool = SERVE_DEFAULTS.dynamic_batching
    preferred_batch: int | None = SERVE_DEFAULTS.preferred_batch
    max_queue_size: int = SERVE_DEFAULTS.max_queue_size
    drain_s: int = SERVE_DEFAULTS.drain_s
    max_request_bytes: int = SERVE_DEFAULTS.max_request_bytes
    open_admin: bool = SERVE_DEFAULTS.open_admin

    @classmethod
    def of(cls, settings: ServeConfig, **given: Any) -> ServeOptions:
        """The config's ``serve`` section, with ``given`` (flags from the command line) over it."""
        return cls(**{**dataclasses.asdict(settings), **given})

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
class RepoOptions:
    """``bertrt triton-repo``'s settings: the classifier served and its batching."""

    model: str = "onnx-cpu"  # any registry name but merged (cpu: what cpu.json names)
    device: str = "cpu"  # cpu or gpu: the classifier's instance group
    max_batch: int = 32
    max_queue_delay_us: int = 2000
    instances: int = 1

    def check(self) -> None:
        """Each value in range, in one line naming the flag (exit 2)."""
        for flag, value, least in (("--max-batch", self.max_batch, 1),
                                   ("--instances", self.instances, 1),
                                   ("--max-queue-delay-us", self.max_queue_delay_us, 0)):  # fmt: skip
            if value < least:
                raise ConfigError(f"triton-repo {flag} {value}: must be at least {least}")


@dataclass(frozen=True)
class LoadtestOptions:
    """``bertrt loadtest``'s settings: the server asked and the concurrency sweep."""

    url: str = "localhost:8000"
    metrics_url: str = "http://localhost:8002/metrics"
    concurrency: str = "1,2,4,8,16,32"  # comma list of concurrency levels, one step each
    requests: int = 400  # per step
    seconds: float = 30.0  # per step

    @property
    def levels(self) -> list[int]:
        try:
            return [int(x) for x in self.concurrency.split(",")]
        except ValueError:
            raise ConfigError(
                f"loadtest --concurrency {self.concurrency!r}: expected a comma list of "
                "integers, e.g. 1,2,4"
            ) from None

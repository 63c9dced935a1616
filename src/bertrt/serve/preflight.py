"""What ``bertrt serve`` checks before anything starts, and what it cleans after Triton.

Every flag is checked up front, so a bad value is one line and exit 2
instead of a traceback from inside the start-up or a Triton that silently
reads it otherwise (``--max-queue-size 0`` is "unlimited" to Triton). The
ports are tried on the address the server will bind: a port another server
holds is one line naming it, before anything claims to serve (otherwise the
readiness probe would get *that* server's answer).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from bertrt.errors import ConfigError

# Triton's Python backend makes one of these per start (a hard-coded /tmp template)
# and removes it only on a clean shutdown.
PYTHON_ENV_GLOB = "python_env_*"
PYTHON_ENV_ROOT = Path("/tmp")


def check_at_least(values: Mapping[str, int], minimum: int) -> None:
    """Each ``--flag value`` is an integer >= ``minimum``; else one line naming the flag."""
    for flag, value in values.items():
        if value < minimum:
            raise ConfigError(f"{flag} {value}: must be at least {minimum}")


def check_host(host: str) -> None:
    """An IP address Triton can bind (it takes no host names)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"--host {host!r}: give an IP address (127.0.0.1: this machine only; "
            "0.0.0.0: every interface)"
        ) from None


def check_ports(ports: Mapping[str, int]) -> None:
    """Ports in range and distinct."""
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"{flag} {port}: a port is 1 to 65535")
    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if port in seen:
            raise ConfigError(f"{flag} {port}: the same port as {seen[port]}")
        seen[port] = flag


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound (another server listens there).

    SO_REUSEADDR as Triton sets it: a port in TIME_WAIT after a stopped
    server is free, one with a listener (on this address or the wildcard) is not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise ConfigError(f"cannot bind {host}:{port}: {err.strerror}") from None
    return False


def check_ports_free(host: str, ports: Mapping[str, int]) -> None:
    """One line naming the first port in use, before Triton starts."""
    for flag, port in ports.items():
        if port_in_use(host, port):
            raise ConfigError(
                f"{flag} {port}: {host}:{port} is already in use (another server?); "
                f"stop it or choose another {flag}"
            )


def python_envs(root: Path = PYTHON_ENV_ROOT) -> set[Path]:
    return set(root.glob(PYTHON_ENV_GLOB))


def remove_new_python_envs(before: Iterable[Path], root: Path = PYTHON_ENV_ROOT) -> list[Path]:
    """Remove the empty ``/tmp/python_env_*`` directories that appeared since ``before``.

    Only empty ones (``os.rmdir``): ``bertrt serve`` never gives Triton an
    ``EXECUTION_ENV_PATH``, so its directory stays empty, and a directory
    with anything in it is not ours to delete.
    """
    removed = []
    for path in sorted(python_envs(root) - set(before)):
        try:
            os.rmdir(path)
            removed.append(path)
        except OSError:
            pass
    return removed

#!/usr/bin/env python
"""Load-test ``bertrt serve`` with dynamic batching on, then off: the serving figures.

    python bench/serve.py --run-dir runs/default [--model cpu] [--concurrency 1,4,16,64]
        [--requests 400] [--seconds 30] [--port 8000] [--set KEY=VALUE]

For each mode it starts ``bertrt serve`` on loopback, waits until model
``bertrt`` is ready, runs ``bertrt loadtest`` (reports in
``<run>/bench/serve-batching/`` and ``<run>/bench/serve-no-batching/``) and
stops the server with SIGTERM. The two share a machine with nothing else:
run it on an idle one, the offline ``bertrt bench`` figures beside it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BERTRT = [sys.executable, "-m", "bertrt"]


def ready(http: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/bertrt/ready", timeout=2)
        return True
    except OSError:
        return False


def serve(args: argparse.Namespace, batching: bool, log: Path) -> subprocess.Popen[bytes]:
    """A ``bertrt serve`` ready to answer (its output in ``log``); exits on failure to start."""
    cmd = [*BERTRT, "serve", "--run-dir", args.run_dir, "--http-port", str(args.port),
           "--grpc-port", str(args.port + 1), "--metrics-port", str(args.port + 2),
           *(["--model", args.model] if args.model else []),
           *(["--no-dynamic-batching"] if not batching else []),
           *[f"--set={s}" for s in args.set]]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not ready(args.port):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            sys.exit(f"bertrt serve did not start (see {log}):\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    return server


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="runs/default")
    p.add_argument("--model", default=None, help="registry name (default: bertrt serve's)")
    p.add_argument("--concurrency", default="1,4,16,64")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--port", type=int, default=8000, help="HTTP; gRPC and metrics on the next two")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    bench = Path(args.run_dir) / "bench"
    for batching, name in ((True, "serve-batching"), (False, "serve-no-batching")):
        out = bench / name
        out.mkdir(parents=True, exist_ok=True)
        server = serve(args, batching, out / "server.log")
        print(f"## {name}", flush=True)
        try:
            code = subprocess.call([*BERTRT, "loadtest", "--run-dir", args.run_dir,
                                    "--url", f"127.0.0.1:{args.port}",
                                    "--metrics-url", f"http://127.0.0.1:{args.port + 2}/metrics",
                                    "--concurrency", args.concurrency, "--requests",
                                    str(args.requests), "--seconds", str(args.seconds),
                                    "--out", str(out)])  # fmt: skip
        finally:
            server.terminate()
            try:
                stopped = server.wait(timeout=120)
            except subprocess.TimeoutExpired:  # never leave a server holding the ports
                server.kill()
                stopped = server.wait()
        if code or stopped:
            return code or stopped
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What one big request costs a running ``bertrt serve``: time, the stub's memory, a neighbour's wait.

Starts ``bertrt serve`` (extra flags after ``--``), then sends, one after the
other: one 10 MB text; three 10 MB texts in one request; a 10 MB text with a
small request sent one second later (how long the small one waits). After
each it reads the model stub's resident memory (VmRSS) and peak (VmHWM) from
/proc. ``--src DIR`` serves another checkout's ``src`` (the code before a
change), with ``--stub-env`` given after ``--`` where that code cannot build one.

    python bench/serve_request_cost.py --run-dir runs/x [--model onnx-fp32] [--src OLD/src] \\
        [-- --max-request-bytes 100000000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bertrt.serve.client import client, open_direct, text_inputs
from bertrt.serve.triton_process import stub_processes

BIG = "word " * 2_000_000  # 10 MB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


def _send(url: str, texts: list[str], out: dict[str, Any]) -> None:
    from tritonclient.utils import InferenceServerException

    start = time.perf_counter()
    try:
        with client(url, timeout_s=600) as conn:
            conn.infer("bertrt", text_inputs({"text": texts}))
        out["answer"] = "ok"
    except InferenceServerException as err:
        out["answer"] = f"{err.status()}: {(err.message() or '')[:80]}"
    out["seconds"] = round(time.perf_counter() - start, 2)


def _step(url: str, stub: int, texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"request_mb": round(sum(map(len, texts)) / 1e6, 1)}
    _send(url, texts, out)
    return {**out, **_memory_mb(stub)}


def _neighbour(url: str, stub: int) -> dict[str, Any]:
    big: dict[str, Any] = {}
    small: dict[str, Any] = {}
    thread = threading.Thread(target=_send, args=(url, [BIG], big))
    thread.start()
    time.sleep(1.0)
    _send(url, ["How do I sort a list in Python?"], small)
    thread.join()
    return {"big": big, "small_sent_1s_later": small, **_memory_mb(stub)}


def _start(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    http = _free_port()
    cmd = [sys.executable, "-m", "bertrt", "serve", "--run-dir", args.run_dir, "--model",
           args.model, "--http-port", str(http), "--grpc-port", str(_free_port()),
           "--metrics-port", str(_free_port()), *args.serve]  # fmt: skip
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"127.0.0.1:{http}"
    deadline = time.monotonic() + 600
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bertrt serve did not start:\n{log.read_text()[-2000:]}")
        try:
            with open_direct(f"http://{url}/v2/models/bertrt/ready", 2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--model", default="onnx-fp32")
    parser.add_argument("--src", default=None, help="serve this checkout's src instead")
    parser.add_argument("serve", nargs="*", help="extra bertrt serve flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, url = _start(args, Path(tmp) / "serve.log")
        try:
            (stub,) = stub_processes(process.pid)
            report = {"idle": _memory_mb(stub)}
            report["one_10mb_text"] = _step(url, stub, [BIG])
            report["three_10mb_texts"] = _step(url, stub, [BIG] * 3)
            report["neighbour"] = _neighbour(url, stub)
        finally:
            process.terminate()
            process.wait(timeout=120)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

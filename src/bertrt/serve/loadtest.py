"""Load test of a running server: a concurrency sweep on loopback, bounded in requests and time.

Each step runs ``concurrency`` closed-loop clients (one request in flight
each, one text per request) until ``requests`` were sent or ``seconds``
passed. Every request sent is either answered or counted as an error
(``sent == answered + errors`` is checked). Triton's own view comes from its
Prometheus endpoint, read before and after each step: rows per executed batch
(mean dynamic batch size), queue and compute time per request.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.artifacts import write_json, write_text
from bertrt.serve.client import MODEL_NAME, client, open_direct, text_inputs

METRICS = (
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_success",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)


@dataclass
class Step:
    concurrency: int
    sent: int
    answered: int
    errors: int
    seconds: float
    samples_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_batch: float
    queue_ms: float
    compute_ms: float


def scrape(metrics_url: str) -> dict[str, float]:
    """Triton's counters for the served model (summed over versions)."""
    with open_direct(metrics_url, 5) as answer:
        text = answer.read().decode()
    out = dict.fromkeys(METRICS, 0.0)
    for name in METRICS:
        for match in re.finditer(
            rf'^{name}\{{[^}}]*model="{MODEL_NAME}"[^}}]*\}} (\S+)$', text, re.M
        ):
            out[name] += float(match.group(1))
    return out


def scrape_counter(metrics_url: str, name: str) -> float:
    """One counter of the served model (e.g. bertrt serve's ``bertrt_request_refused``)."""
    with open_direct(metrics_url, 5) as answer:
        text = answer.read().decode()
    pattern = rf'^{re.escape(name)}\{{[^}}]*model="{MODEL_NAME}"[^}}]*\}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


def _worker(url: str, texts: Sequence[str], budget: dict[str, Any], out: list[float]) -> None:
    with client(url) as conn:
        while True:
            with budget["lock"]:
                if budget["left"] <= 0 or time.perf_counter() > budget["deadline"]:
                    return
                budget["left"] -= 1
                index = budget["next"] = budget["next"] + 1
            start = time.perf_counter()
            try:
                conn.infer(MODEL_NAME, text_inputs({"text": [texts[index % len(texts)]]}))
                out.append(time.perf_counter() - start)
            except Exception:
                budget["errors"] += 1


def run_step(
    url: str,
    metrics_url: str,
    texts: Sequence[str],
    concurrency: int,
    requests: int,
    seconds: float,
) -> Step:
    budget: dict[str, Any] = {"lock": threading.Lock(), "left": requests, "next": -1, "errors": 0}
    latencies: list[float] = []
    before = scrape(metrics_url)
    budget["deadline"] = time.perf_counter() + seconds
    start = time.perf_counter()
    threads = [
        threading.Thread(target=_worker, args=(url, texts, budget, latencies))
        for _ in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = scrape(metrics_url)
    delta = {k: after[k] - before[k] for k in METRICS}
    sent = requests - budget["left"]
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    done = max(delta["nv_inference_request_success"], 1.0)
    p50, p90, p99 = (round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99))
    return Step(
        concurrency, sent, len(latencies), budget["errors"], round(wall, 2),
        round(len(latencies) / wall, 1), p50, p90, p99,
        round(delta["nv_inference_count"] / max(delta["nv_inference_exec_count"], 1.0), 2),
        round(delta["nv_inference_queue_duration_us"] / done / 1000, 2),
        round(delta["nv_inference_compute_infer_duration_us"] / done / 1000, 2),
    )  # fmt: skip


@dataclass(frozen=True)
class Offline:
    """The same model without a server, same machine: what the serving targets compare with.

    ``batch1_p50_ms``: one text at a time through the served callable in
    process (build, tokenize at its own length, infer), on the texts the
    concurrency-1 step sends. ``e2e_samples_per_s``: the offline bench's
    length-bucketed end-to-end throughput (results.json ``e2e``).
    """

    model: str
    batch1_p50_ms: float
    e2e_samples_per_s: float | None


def targets(steps: Sequence[Step], offline: Offline, high: int = 32) -> list[dict[str, Any]]:
    """The serving targets, each with the measured figure, the goal and whether it is met.

    Throughput at concurrency ``high`` ≥ 3x concurrency 1 and ≥ 70 % of the
    offline e2e samples/s; concurrency-1 p50 ≤ offline batch 1 + 2 ms; no
    request lost. A target whose step was not run is left out.
    """
    by = {s.concurrency: s for s in steps}
    one, top = by.get(1), by.get(high)
    rows: list[dict[str, Any]] = [
        {
            "target": "zero lost requests",
            "measured": f"{sum(s.sent for s in steps)} sent, {sum(s.errors for s in steps)} errors",
            "met": all(s.errors == 0 and s.sent == s.answered for s in steps),
        }
    ]
    if one and top:
        ratio = top.samples_per_s / one.samples_per_s
        rows.append({
            "target": f"concurrency {high} >= 3x concurrency 1",
            "measured": f"{top.samples_per_s} / {one.samples_per_s} = {ratio:.2f}x",
            "met": ratio >= 3.0,
        })  # fmt: skip
    if top and offline.e2e_samples_per_s:
        share = top.samples_per_s / offline.e2e_samples_per_s
        rows.append({
            "target": f"concurrency {high} >= 70% of offline bucketed e2e",
            "measured": f"{top.samples_per_s} / {offline.e2e_samples_per_s:.1f} = {share:.0%}",
            "met": share >= 0.70,
        })  # fmt: skip
    if steps:
        worst = max(steps, key=lambda s: s.p99_ms / max(s.p50_ms, 1e-9))
        rows.append({
            "target": "p99 <= 3x p50 at every concurrency",
            "measured": f"worst: concurrency {worst.concurrency}, p99 {worst.p99_ms} ms / "
            f"p50 {worst.p50_ms} ms = {worst.p99_ms / max(worst.p50_ms, 1e-9):.2f}x",
            "met": all(s.p99_ms <= 3 * s.p50_ms for s in steps),
        })  # fmt: skip
    if one:
        goal = offline.batch1_p50_ms + 2.0
        rows.append({
            "target": "concurrency-1 p50 <= offline batch 1 + 2 ms",
            "measured": f"{one.p50_ms} ms vs {offline.batch1_p50_ms:.2f} + 2 = {goal:.2f} ms",
            "met": one.p50_ms <= goal,
        })  # fmt: skip
    return rows


def targets_markdown(rows: Sequence[dict[str, Any]], offline: Offline) -> str:
    e2e = (
        f"bucketed e2e {offline.e2e_samples_per_s:.1f} samples/s"
        if offline.e2e_samples_per_s
        else "no bucketed e2e of this runner in results.json"
    )
    lines = [
        f"# Serving targets: {offline.model}",
        "",
        f"Offline, same machine: batch 1 through the served callable p50 "
        f"{offline.batch1_p50_ms:.2f} ms; {e2e}.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else 'no'} |" for r in rows],
    ]
    return "\n".join(lines) + "\n"


def markdown(steps: list[Step], title: str) -> str:
    head = "| concurrency | samples/s | p50 ms | p90 ms | p99 ms | mean batch | queue ms | compute ms | sent | errors |"
    rows = [head, "|" + "---|" * 10]
    for s in steps:
        rows.append(
            f"| {s.concurrency} | {s.samples_per_s} | {s.p50_ms} | {s.p90_ms} | {s.p99_ms} | "
            f"{s.mean_batch} | {s.queue_ms} | {s.compute_ms} | {s.sent} | {s.errors} |"
        )
    return f"# {title}\n\n" + "\n".join(rows) + "\n"


def plot(steps: list[Step], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [s.concurrency for s in steps]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(conc, [s.samples_per_s for s in steps], "o-", label="samples/s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("samples/s")
    twin = ax.twinx()
    twin.plot(conc, [s.p99_ms for s in steps], "s--", color="tab:red", label="p99 ms")
    twin.set_ylabel("p99 latency (ms)")
    fig.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep(
    url: str,
    metrics_url: str,
    texts: Sequence[str],
    levels: Sequence[int],
    requests: int,
    seconds: float,
    out_dir: Path,
) -> list[Step]:
    """Every concurrency level in turn; JSON, Markdown and PNG written to ``out_dir``."""
    steps = [run_step(url, metrics_url, texts, c, requests, seconds) for c in levels]
    for s in steps:
        if s.sent != s.answered + s.errors:
            raise AssertionError(f"concurrency {s.concurrency}: lost requests ({s})")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "serve.json", [asdict(s) for s in steps])
    write_text(out_dir / "serve.md", markdown(steps, f"Load test of {url}"))
    plot(steps, out_dir / "serve.png")
    return steps

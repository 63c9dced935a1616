"""PNG plots of the results: latency by backend per shape, and accuracy vs throughput.

Matplotlib with the Agg backend (no display); files are written atomically
like every other artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertrt.artifacts import write_with
from bertrt.bench.results import AccuracyRow, BenchResults, LatencyRow


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_plot(path: Path, latency: list[LatencyRow]) -> None:
    """One panel per (batch, seq): p50 per backend, whiskers at the rounds' min/max p50."""
    plt = _figure()
    shapes = sorted({(r.batch, r.seq) for r in latency})
    cols = min(3, len(shapes))
    rows = -(-len(shapes) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(5.5 * cols, 0.4 * _n_backends(latency) * rows + 1.5 * rows),
        squeeze=False,
    )
    for ax, (batch, seq) in zip(axes.flat, shapes, strict=False):
        cells = sorted(
            (r for r in latency if (r.batch, r.seq) == (batch, seq)),
            key=lambda r: -r.p50_ms,
        )
        names = [r.backend for r in cells]
        p50 = [r.p50_ms for r in cells]
        err = [
            [r.p50_ms - r.p50_spread_ms[0] for r in cells],
            [r.p50_spread_ms[1] - r.p50_ms for r in cells],
        ]
        ax.barh(names, p50, xerr=err, color="tab:blue", capsize=3)
        for y, value in enumerate(p50):
            ax.text(value, y, f" {value:.1f}", va="center", fontsize=8)
        ax.set_title(f"batch {batch}, seq {seq}")
        ax.set_xlabel("p50 latency (ms), lower is better")
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(shapes) :]:
        ax.axis("off")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110), suffix=".png")
    plt.close(fig)


def _n_backends(latency: list[LatencyRow]) -> int:
    return max(len({r.backend for r in latency}), 1)


def accuracy_throughput_plot(
    path: Path, latency: list[LatencyRow], accuracy: list[AccuracyRow], batch: int, seq: int
) -> None:
    plt = _figure()
    rate = {r.backend: r.samples_per_s for r in latency if r.batch == batch and r.seq == seq}
    points = [
        (rate[a.backend], 100 * a.accuracy, a.backend)
        for a in accuracy
        if a.backend in rate and a.accuracy is not None
    ]
    # Runtimes often tie on accuracy (INT8 within a row of fp32; a quick run's few
    # rows): names written beside the points would print on top of each other. Each
    # point gets a number, a colour and a marker, and the legend names it.
    fig, ax = plt.subplots(figsize=(10, 4.5))
    colours, markers = plt.get_cmap("tab10").colors, "os^Dv<>pPX"
    points.sort(key=lambda p: (-p[1], -p[0]))
    for i, (x, y, name) in enumerate(points, start=1):
        ax.scatter(
            x,
            y,
            s=60,
            color=colours[i % 10],
            marker=markers[i % len(markers)],
            alpha=0.8,
            label=f"{i}  {name}  ({y:.2f}%, {x:.1f}/s)",
        )
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"throughput at batch {batch}, seq {seq} (samples/s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs throughput")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110), suffix=".png")
    plt.close(fig)


def write_plots(bench_dir: Path, results: BenchResults) -> list[Path]:
    latency = results.latency
    if not latency:
        return []
    out = [bench_dir / "latency.png"]
    latency_plot(out[0], latency)
    batch = max(r.batch for r in latency)
    seqs = sorted({r.seq for r in latency})
    seq = 128 if 128 in seqs else seqs[0]
    if results.accuracy and any(a.accuracy is not None for a in results.accuracy):
        out.append(bench_dir / "accuracy_vs_throughput.png")
        accuracy_throughput_plot(out[1], latency, results.accuracy, batch, seq)
    return out

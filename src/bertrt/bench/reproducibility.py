"""Does this run land within the spread the previous one reported?

A benchmark's spread is only a claim until a second run is checked against
it. When ``bertrt bench`` finds an earlier ``results.json`` for the same
machine, software and model shape (or is given one with ``--against``), it
compares every latency cell and target with it and reports, per cell,
whether the new p50 fell inside the earlier run's p50 spread. Nothing is
averaged away: a cell outside the spread is listed as such, with its change.
Backends whose model file changed in between (sha256 under
``backend_models``) are left out and named: their change is not drift.

On a shared VM the machine itself has slow and fast phases lasting minutes,
longer than one run, which no within-run spread can capture (measured here:
a whole 7-minute run 3-46 % slower than the next in every cell). So every run is also
appended to ``bench/history.jsonl``, and each latency cell reports the
range of its p50 over all comparable runs (``run_to_run_p50_ms``): the band
a reader should take a figure's uncertainty from once there are a few runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertrt.artifacts import write_text
from bertrt.bench.results import BenchResults, LatencyRow, Target

# What must match for two runs' latencies to be comparable at all.
_MACHINE_KEYS = ("cpu", "cores", "threads", "gpu")
_VERSION_KEYS = ("torch", "onnxruntime", "tensorrt")
HISTORY = "history.jsonl"
HISTORY_LIMIT = 20


def load(path: Path) -> dict[str, Any] | None:
    """The results of an earlier run, or None when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "latency" in data else None


def incomparable(previous: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why two runs cannot be compared, or None when they can.

    Both are JSON: a results.json or a history entry of any version (the
    current run as :func:`history_entry` of it), hence the lenient ``get``s.
    """
    pm, cm = previous.get("machine", {}), current.get("machine", {})
    for key in _MACHINE_KEYS:
        if pm.get(key) != cm.get(key):
            return f"machine differs in {key}: {pm.get(key)!r} vs {cm.get(key)!r}"
    pv, cv = pm.get("versions", {}), cm.get("versions", {})
    for key in _VERSION_KEYS:
        if pv.get(key) != cv.get(key):
            return f"{key} differs: {pv.get(key)} vs {cv.get(key)}"
    shape = ("model_type", "layers", "hidden_size")
    if any(previous.get("model", {}).get(k) != current.get("model", {}).get(k) for k in shape):
        return "the model's architecture differs"
    if bool(previous.get("quick")) != bool(current.get("quick")):
        return "one run is --quick and the other is not"
    return None


def _key(row: dict[str, Any]) -> tuple[str, int, int]:
    return row["backend"], int(row["batch"]), int(row["seq"])


def _row_key(row: LatencyRow) -> tuple[str, int, int]:
    return row.backend, row.batch, row.seq


def compare(previous: dict[str, Any], current: BenchResults, source: str = "") -> dict[str, Any]:
    """Every latency cell and target of ``current`` set against ``previous``'s spread."""
    reason = incomparable(previous, history_entry(current.to_dict()))
    if reason is not None:
        return {"previous": source, "comparable": False, "reason": reason}
    old_models = previous.get("backend_models", {})
    new_models = current.backend_models
    changed = sorted(
        label
        for label in new_models
        if label in old_models and old_models[label] != new_models[label]
    )
    before = {_key(r): r for r in previous.get("latency", [])}
    cells = [
        _cell(before[_row_key(row)], row)
        for row in current.latency
        if _row_key(row) in before and row.backend not in changed
    ]
    # A target's ratio involves the chosen backends; skip it when any model changed.
    old_targets = {} if changed else {t["target"]: t for t in previous.get("targets", [])}
    targets = [
        _target(old_targets[t.target], t)
        for t in current.targets
        if t.target in old_targets
        and old_targets[t.target].get("measured") is not None
        and t.measured is not None
    ]
    changes = [abs(c["change_pct"]) for c in cells]
    return {
        "previous": source,
        "previous_written_at": previous.get("written_at"),
        "comparable": True,
        "cells": len(cells),
        "within_previous_spread": sum(c["within_previous_spread"] for c in cells),
        "spreads_overlap": sum(c["spreads_overlap"] for c in cells),
        "max_abs_change_pct": max(changes) if changes else None,
        "models_changed": changed,
        "latency": cells,
        "targets": targets,
    }


def _cell(old: dict[str, Any], row: LatencyRow) -> dict[str, Any]:
    low, high = old["p50_spread_ms"]
    return {
        "backend": row.backend,
        "batch": row.batch,
        "seq": row.seq,
        "previous_p50_ms": old["p50_ms"],
        "previous_spread_ms": [low, high],
        "p50_ms": row.p50_ms,
        "change_pct": 100.0 * (row.p50_ms / old["p50_ms"] - 1.0),
        "within_previous_spread": low <= row.p50_ms <= high,
        "spreads_overlap": row.p50_spread_ms[0] <= high and low <= row.p50_spread_ms[1],
    }


def _target(old: dict[str, Any], new: Target) -> dict[str, Any]:
    assert new.measured is not None  # compare() passes measured targets only
    spread = old.get("spread")
    return {
        "target": new.target,
        "previous": old["measured"],
        "previous_spread": spread,
        "measured": new.measured,
        "within_previous_spread": spread[0] <= new.measured <= spread[1] if spread else None,
        "met_both": bool(old.get("met")) and bool(new.met),
    }


def markdown(section: dict[str, Any]) -> list[str]:
    """The results.md section; empty when there was nothing to compare with."""
    if not section:
        return []
    lines = ["## Run-to-run", ""]
    if not section.get("comparable"):
        return [*lines, f"Not compared with {section['previous']}: {section['reason']}.", ""]
    n, inside = section["cells"], section["within_previous_spread"]
    lines += [
        f"Compared with the previous run ({section['previous']}, written "
        f"{section.get('previous_written_at') or 'at an unrecorded time'}): the p50 of "
        f"{inside} of {n} latency cells fell inside the previous run's p50 spread, "
        f"{section['spreads_overlap']} of {n} spreads overlap; the largest change was "
        + (
            f"{section['max_abs_change_pct']:.1f}%."
            if section["max_abs_change_pct"] is not None
            else "– (no common cells)."
        ),
        "",
    ]
    if section.get("models_changed"):
        lines += [
            "Not compared, because their model file changed since: "
            + ", ".join(f"`{label}`" for label in section["models_changed"])
            + " (and so the targets).",
            "",
        ]
    lines += [
        "| backend | batch | seq | previous p50 ms (spread) | this p50 ms | change | inside |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in section["latency"]:
        low, high = c["previous_spread_ms"]
        lines.append(
            f"| {c['backend']} | {c['batch']} | {c['seq']} | {c['previous_p50_ms']:.2f} "
            f"({low:.2f}–{high:.2f}) | {c['p50_ms']:.2f} | {c['change_pct']:+.1f}% | "
            + ("yes" if c["within_previous_spread"] else "**no**")
            + " |"
        )
    if section["targets"]:
        lines += ["", "| target | previous (spread) | this run | inside | met in both |"]
        lines.append("|---|---|---|---|---|")
        for t in section["targets"]:
            spread = t["previous_spread"]
            shown = f" ({spread[0]:.2f}–{spread[1]:.2f})" if spread else ""
            inside_mark = {True: "yes", False: "**no**", None: "–"}[t["within_previous_spread"]]
            lines.append(
                f"| {t['target']} | {t['previous']:.2f}{shown} | {t['measured']:.2f} | "
                f"{inside_mark} | {'yes' if t['met_both'] else 'no'} |"
            )
    return [*lines, ""]


# -- history across runs ----------------------------------------------------------
def history_entry(results: dict[str, Any]) -> dict[str, Any]:
    """What a later run needs of a results.json: when, where, which models, each cell's p50."""
    machine = results.get("machine", {})
    versions = machine.get("versions", {})
    return {
        "written_at": results.get("written_at"),
        "quick": bool(results.get("quick")),
        "machine": {
            **{k: machine.get(k) for k in _MACHINE_KEYS},
            "versions": {k: versions.get(k) for k in _VERSION_KEYS if k in versions},
        },
        "model": {
            k: results.get("model", {}).get(k) for k in ("model_type", "layers", "hidden_size")
        },
        "backend_models": results.get("backend_models", {}),
        "latency": [
            {k: r[k] for k in ("backend", "batch", "seq", "p50_ms", "p50_spread_ms")}
            for r in results.get("latency", [])
        ],
        "targets": [
            {k: t.get(k) for k in ("target", "measured", "spread")}
            for t in results.get("targets", [])
        ],
    }


def load_history(bench_dir: Path) -> list[dict[str, Any]]:
    """Earlier runs of this bench directory, oldest first.

    A directory benched before the history existed is seeded from its
    results.previous.json and results.json, when they can be read.
    """
    path = bench_dir / HISTORY
    if path.is_file():
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:  # a damaged line loses that run only
                continue
        return entries
    seeds = [load(bench_dir / name) for name in ("results.previous.json", "results.json")]
    return [history_entry(s) for s in seeds if s is not None]


def write_history(bench_dir: Path, history: list[dict[str, Any]], results: BenchResults) -> Path:
    """The history with this run appended (the last HISTORY_LIMIT runs), written atomically."""
    entries = [*history, history_entry(results.to_dict())][-HISTORY_LIMIT:]
    path = bench_dir / HISTORY
    write_text(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    return path


def add_run_to_run(results: BenchResults, history: list[dict[str, Any]]) -> int:
    """Annotate each latency row with its p50's range over all comparable runs; returns the runs.

    A run counts for a backend only when it ran on a comparable machine and
    setup (:func:`incomparable`) with the same model file for that backend.
    """
    models = results.backend_models
    this = history_entry(results.to_dict())
    comparable = [h for h in history if incomparable(h, this) is None]
    for row in results.latency:
        values = [row.p50_ms]
        for entry in comparable:
            if entry.get("backend_models", {}).get(row.backend) != models.get(row.backend):
                continue
            old = next((c for c in entry["latency"] if _key(c) == _row_key(row)), None)
            if old is not None:
                values.append(old["p50_ms"])
        row.run_to_run_p50_ms = [min(values), max(values)]
        row.run_to_run_runs = len(values)
    return 1 + len(comparable)

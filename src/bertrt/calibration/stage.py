"""`bertrt calibrate`: INT8 Q/DQ model (TensorRT's input) and the CPU deployment model.

Calibrates on real training rows, chooses on validation accuracy (never
test), checks the Q/DQ graph for TensorRT, and writes onnx/model.int8.onnx,
onnx/model.cpu.onnx and calibration/report.json (every candidate's figures).
Everything is built in a staging directory and moved into place at the end.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, StageTimer, write_json
from bertrt.calibration.cpu_model import build_candidates, choose_cpu_model
from bertrt.calibration.quantize import (
    Candidate,
    calibrate_ranges,
    prepare_model,
    quantize_qdq,
    quantized_nodes,
)
from bertrt.calibration.reader import CalibrationReader, calibration_texts, tokenized_batches
from bertrt.calibration.sweep import (
    EvalSet,
    Scored,
    accuracy_of,
    candidate_grid,
    exclusion_steps,
    logits,
    pick_best,
    sensitivity,
)
from bertrt.config import CalibrationConfig, Config
from bertrt.data import load_split
from bertrt.export.stage import publish
from bertrt.modeling import encode, load_onnx, load_tokenizer
from bertrt.trt.onnx_support import check_trt_ready

log = logging.getLogger(__name__)


def run(config: Config, run: RunDir) -> dict[str, Any]:
    cfg = config.calibration
    fp32, opt = run.onnx("fp32"), run.onnx("opt")
    run.require("calibrate", [fp32, opt], producer="export")
    load_onnx(fp32, load_weights=False)  # an unreadable file is named before any work
    timer = StageTimer()
    tokenizer = load_tokenizer(run.merged)
    max_length = config.model.max_length
    splits = load_split(run, ("train", "val"))
    texts = calibration_texts(splits["train"], cfg.rows, cfg.batch_size, config.seed)
    reader = CalibrationReader(tokenized_batches(tokenizer, texts, cfg.batch_size, max_length))
    val = splits["val"] if cfg.eval_rows is None else splits["val"].head(cfg.eval_rows)
    data = EvalSet.build(tokenizer, val["text"].tolist(), val["label"].tolist(), max_length)

    report: dict[str, Any] = {
        "calibration_rows": len(reader) * cfg.batch_size,
        "batch_size": cfg.batch_size,
        "eval_rows": data.rows,
        "accuracy_budget": config.accuracy_budget,
        "sweep": cfg.sweep,
    }
    run.onnx_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".calibrate-", dir=run.onnx_dir))
    try:
        prepared = work / "prepared.onnx"
        prepare_model(fp32, prepared)
        fp32_out = logits(fp32, data)
        fp32_acc = accuracy_of(fp32_out, data)
        report["fp32_val_accuracy"] = fp32_acc
        int8_path, chosen, ranges = _int8(
            cfg, config.accuracy_budget, fp32, prepared, reader, data, fp32_acc, work, report
        )
        report["int8"]["tensorrt_check"] = check_trt_ready(
            load_onnx(int8_path), run.onnx("int8").name
        ).to_dict()

        def u8_ranges() -> Any:
            found = calibrate_ranges(prepared, reader, "minmax", symmetric=False)
            return next(iter(found.values()))

        timing = _timing_batches(tokenizer, val["text"].tolist(), max_length)
        cands = build_candidates(cfg.cpu_candidates, fp32, opt, prepared, u8_ranges, work)
        best_cpu, cpu_all, cpu_path = choose_cpu_model(
            cands, data, fp32_out, config.accuracy_budget, timing
        )
        report["cpu"] = {
            "chosen": best_cpu.name,
            "timing": (
                f"ms at seq {max_length}, batch 1 and 32, 2 threads: best of 3 round-robin medians"
            ),
            "candidates": [c.to_dict() for c in cpu_all],
        }
        ranges_path = run.calibration_dir / "ranges.json"
        _save_ranges(ranges, ranges_path)
        publish(int8_path, run.onnx("int8"))
        publish(cpu_path, run.onnx("cpu"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = round(timer.elapsed, 1)
    report_path = run.calibration_dir / "report.json"
    write_json(report_path, report)
    summary = {
        "fp32_val_accuracy": fp32_acc,
        "int8": {k: report["int8"][k] for k in ("chosen", "val_accuracy", "drop")},
        "cpu": {
            "chosen": best_cpu.name,
            "val_accuracy": best_cpu.val_accuracy,
            "latency_ms_b1": best_cpu.latency_ms_b1,
        },
        "tensorrt_check": {"int8": "ok"},
        "eval_rows": data.rows,
    }
    run.record(
        "calibrate",
        inputs=[fp32, opt, run.merged, run.split],
        outputs=[run.onnx("int8"), run.onnx("cpu"), report_path, ranges_path],
        wall_s=timer.elapsed,
        extra=summary,
    )
    log.info(
        "calibrate: int8 %s val %.2f%% (fp32 %.2f%%); cpu model %s",
        chosen.name,
        chosen.val_accuracy,
        fp32_acc,
        best_cpu.name,
    )
    return report


def _int8(
    cfg: CalibrationConfig,
    budget: float,
    fp32: Path,
    prepared: Path,
    reader: CalibrationReader,
    data: EvalSet,
    fp32_acc: float,
    work: Path,
    report: dict[str, Any],
) -> tuple[Path, Scored, Any]:
    """Quantize each candidate (one, or the sweep's grid), then exclusions if still over budget."""
    if cfg.sweep:
        grid = candidate_grid(cfg.sweep_percentiles)
    else:
        grid = [Candidate(cfg.method, cfg.percentile if cfg.method == "percentile" else None)]
    ranges: dict[Candidate, Any] = {}
    for method in dict.fromkeys(c.method for c in grid):
        pct = [c.percentile for c in grid if c.method == method and c.percentile is not None]
        ranges.update(calibrate_ranges(prepared, reader, method, pct or (cfg.percentile,)))
    scored: list[Scored] = []
    paths: dict[str, tuple[Path, Any]] = {}

    def score(name: str, cand_ranges: Any, excluded: list[str]) -> Scored:
        start = time.perf_counter()
        path = work / f"int8-{name}.onnx"
        quantize_qdq(prepared, cand_ranges, path, nodes_to_exclude=excluded)
        acc = accuracy_of(logits(path, data), data)
        result = Scored(
            name, acc, round(fp32_acc - acc, 3), excluded, round(time.perf_counter() - start, 1)
        )
        log.info("int8 candidate %s: val %.2f%% (drop %.2f)", name, acc, result.drop)
        scored.append(result)
        paths[name] = (path, cand_ranges)
        return result

    for cand in grid:
        score(cand.name, ranges[cand], [])
    best = pick_best(scored)
    report["int8"] = {"sensitivity": None}
    if cfg.sweep and best.drop > budget and cfg.sensitivity_max_excluded > 0:
        best_ranges = paths[best.name][1]
        # Every k-th length-sorted batch: a spread of lengths in ~sensitivity_rows rows.
        step = max(1, -(-data.rows // max(1, cfg.sensitivity_rows)))
        subset = EvalSet(data.batches[::step], data.labels[::step])
        reference = logits(fp32, subset)
        nodes = quantized_nodes(load_onnx(prepared, load_weights=False))
        ranked = sensitivity(prepared, best_ranges, nodes, reference, subset, work)
        report["int8"]["sensitivity"] = [{"node": n, "logit_mse": e} for n, e in ranked]
        for k in exclusion_steps(min(cfg.sensitivity_max_excluded, len(ranked))):
            result = score(f"{best.name}-exclude{k}", best_ranges, [n for n, _ in ranked[:k]])
            if result.drop <= budget:
                break
        best = pick_best(scored)
    if best.drop > budget:
        log.warning(
            "calibrate: int8 %s is %.2f points below fp32 on validation (budget %.2f)%s",
            best.name,
            best.drop,
            budget,
            "" if cfg.sweep else "; try `bertrt calibrate --sweep`",
        )
    report["int8"].update(
        chosen=best.name,
        val_accuracy=best.val_accuracy,
        drop=best.drop,
        excluded=best.excluded,
        candidates=[s.to_dict() for s in scored],
    )
    return paths[best.name][0], best, paths[best.name][1]


def _timing_batches(tokenizer: Any, texts: list[str], max_length: int) -> list[dict[str, Any]]:
    """Batch 1 and batch 32 of real rows padded to max_length, for CPU latency."""
    rows = (texts * 32)[:32]
    return [
        encode(tokenizer, rows[:1], max_length, padding="max_length"),
        encode(tokenizer, rows, max_length, padding="max_length"),
    ]


def _save_ranges(ranges: Any, path: Path) -> None:
    from onnxruntime.quantization import save_tensors_data

    from bertrt.artifacts import write_with

    write_with(path, lambda tmp: save_tensors_data(ranges, tmp), suffix=".json")

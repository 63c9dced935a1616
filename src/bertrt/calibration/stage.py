"""`bertrt calibrate`: INT8 Q/DQ model (TensorRT's input) and the CPU deployment model.

Calibrates on real training rows, chooses on validation accuracy (never
test; a run without labels: on argmax agreement with fp32), checks the Q/DQ graph for TensorRT, and writes onnx/model.int8.onnx,
onnx/model.cpu.onnx and calibration/report.json (every candidate's figures).
Everything is built in the stage's staging directory and moved into place at the end.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir, write_json
from bertrt.calibration.cpu_candidates import CandidateInputs, build_candidates
from bertrt.calibration.quantize import (
    Candidate,
    calibrate_ranges,
    prepare_model,
    quantize_qdq,
    quantized_nodes,
)
from bertrt.calibration.reader import CalibrationReader, calibration_texts, tokenized_batches
from bertrt.calibration.sweep import (
    Scored,
    accuracy_of,
    candidate_grid,
    exclusion_steps,
    logits,
    pick_best,
    sensitivity,
)
from bertrt.config import CalibrationConfig, Config
from bertrt.cpu_choice.choose import TIMING, ChoiceRule, CpuCandidate, choose_cpu_model, pick
from bertrt.cpu_choice.document import cpu_choice_document
from bertrt.data import load_split
from bertrt.data.labels import run_is_labelled
from bertrt.hardware import usable_cores
from bertrt.modeling import encode, load_onnx, load_tokenizer, onnx_input_names
from bertrt.runners.predict import TokenizedRows
from bertrt.stages import StageResult, Staging, stage
from bertrt.trt.onnx_support import check_trt_ready

log = logging.getLogger(__name__)


def run(config: Config, rundir: RunDir) -> StageResult:
    """Calibrate, choose and write both models; the result's report is calibration/report.json."""
    fp32, opt = rundir.onnx("fp32"), rundir.onnx("opt")
    requires = {"export": [fp32, opt]}
    with stage(rundir, "calibrate", requires, reads=[rundir.merged, rundir.split]) as out:
        load_onnx(fp32, load_weights=False)  # an unreadable file is named before any work
        rows = _Rows.load(config, rundir)
        prepared = out.scratch / "prepared.onnx"
        prepare_model(fp32, prepared)
        fp32_out = logits(fp32, rows.data)
        if not rows.labelled:  # INT8 candidates are scored by agreement with fp32's argmax
            rows.data = replace(rows.data, labels=fp32_out.argmax(axis=1))
        fp32_acc = accuracy_of(fp32_out, rows.data)
        int8 = _choose_int8(config, fp32, prepared, rows, fp32_acc, out.scratch)
        int8.report["tensorrt_check"] = check_trt_ready(
            load_onnx(int8.path), rundir.onnx("int8").name
        ).to_dict()
        cpu = _choose_cpu(config, rundir, prepared, int8.path, rows, fp32_out, out.scratch)
        # Other stages' files it timed (e.g. bertrt qat's), once each.
        out.inputs += [path for path in cpu.offered if path not in out.inputs]
        best_cpu = cpu.best
        out.report = {
            **_report_header(config, rows),
            "fp32_val_accuracy": fp32_acc if rows.labelled else None,
            "int8": int8.report if rows.labelled else _agreement_keys(int8.report),
            "cpu": {
                "chosen": best_cpu.name,
                "rule": cpu.rule.to_dict(),
                "onnxruntime_chosen": cpu.best_ort.name,
                "timing": f"ms at seq {config.model.max_length}, batch 1 and 32, "
                f"{config.threads or usable_cores()} threads: median of "
                f"{TIMING[1].repeats} interleaved rounds (bertrt.runners.timing); "
                "paired_ratio_vs_chosen: [median, min, max] of per-round score ratios",
                "candidates": [c.to_dict() for c in cpu.candidates],
            },
        }
        _publish(out, int8, cpu, config.threads)
        out.facts = _facts(out.report, best_cpu)
        scored = f"val {int8.scored.val_accuracy:.2f}% (fp32 {fp32_acc:.2f}%)"
        if not rows.labelled:
            scored = f"agreement with fp32 {int8.scored.val_accuracy:.2f}% (no labels)"
        out.summary = f"calibrate: int8 {int8.scored.name} {scored}; cpu model {best_cpu.name}"
    return out.result


@dataclass
class _Rows:
    """What calibration reads: training batches to calibrate on, validation rows to choose on."""

    tokenizer: Any
    reader: CalibrationReader
    val_texts: list[str]
    data: TokenizedRows  # unlabelled run: labelled with fp32's argmax once it is known
    labelled: bool = True

    @classmethod
    def load(cls, config: Config, rundir: RunDir) -> _Rows:
        cfg, max_length = config.calibration, config.model.max_length
        tokenizer = load_tokenizer(rundir.merged)
        # The graph's own inputs (two or three by architecture), as export wrote them.
        names = onnx_input_names(rundir.onnx("fp32"))
        splits = load_split(rundir, ("train", "val"), csv=config.data.csv)
        texts = calibration_texts(splits["train"], cfg.rows, cfg.batch_size, config.seed)
        batches = tokenized_batches(tokenizer, texts, cfg.batch_size, max_length, names)
        reader = CalibrationReader(batches)
        val = splits["val"] if cfg.eval_rows is None else splits["val"].head(cfg.eval_rows)
        labelled = run_is_labelled(rundir)
        labels = val["label"].tolist() if labelled else None
        data = TokenizedRows.build(tokenizer, val["text"].tolist(), max_length, 32, labels=labels)
        return cls(tokenizer, reader, val["text"].tolist(), data, labelled)


def _report_header(config: Config, rows: _Rows) -> dict[str, Any]:
    cfg = config.calibration
    return {
        "calibration_rows": len(rows.reader) * cfg.batch_size,
        "batch_size": cfg.batch_size,
        "eval_rows": rows.data.rows,
        "accuracy_budget": config.accuracy_budget,
        "sweep": cfg.sweep,
        **({} if rows.labelled else {"accuracy": NO_LABELS}),
    }


NO_LABELS = (
    "skipped: the run's data has no labels; INT8 candidates are scored by argmax agreement "
    "with fp32 (val_agreement, %), CPU candidates qualify by calibration's min_agreement"
)


def _agreement_keys(int8_report: dict[str, Any]) -> dict[str, Any]:
    """The INT8 section of a run without labels: its 'accuracy' is agreement with fp32."""

    def renamed(d: dict[str, Any]) -> dict[str, Any]:
        return {("val_agreement" if k == "val_accuracy" else k): v for k, v in d.items()}

    out = renamed(int8_report)
    out["candidates"] = [renamed(c) for c in int8_report["candidates"]]
    return out


def _publish(out: Staging, int8: _Int8Choice, cpu: _CpuChoice, threads: int | None) -> None:
    """Stage the chosen models, the report and the ranges (manifest order: as listed)."""
    rundir = out.rundir
    os.replace(int8.path, out.path(rundir.onnx("int8")))
    os.replace(cpu.best_ort_path, out.path(rundir.onnx("cpu")))
    if cpu.nncf_ir.is_file():
        os.replace(cpu.nncf_ir.parent, out.path(rundir.openvino_dir))
    write_json(out.path(rundir.cpu_choice), cpu_choice_document(cpu.candidates, threads, cpu.rule))
    report_path = out.path(rundir.calibration_dir / "report.json")
    _save_ranges(int8.ranges, out.path(rundir.calibration_dir / "ranges.json"))
    out.report["wall_s"] = round(out.elapsed, 1)
    write_json(report_path, out.report)


def _facts(report: dict[str, Any], best_cpu: CpuCandidate) -> dict[str, Any]:
    """The manifest's summary of the report."""
    return {
        "fp32_val_accuracy": report["fp32_val_accuracy"],
        "int8": {k: report["int8"].get(k) for k in ("chosen", "val_accuracy", "drop")},
        "cpu": {
            "chosen": best_cpu.name,
            "val_accuracy": best_cpu.val_accuracy,
            "latency_ms_b1": best_cpu.latency_ms_b1,
        },
        "tensorrt_check": {"int8": "ok"},
        "eval_rows": report["eval_rows"],
    }


# -- INT8 (TensorRT's input) ---------------------------------------------------------
@dataclass
class _Int8Search:
    """Quantized candidates and their validation scores, in the order they were tried."""

    prepared: Path
    data: TokenizedRows
    fp32_acc: float
    work: Path
    scored: list[Scored] = field(default_factory=list)
    files: dict[str, tuple[Path, Any]] = field(default_factory=dict)  # name -> (model, ranges)

    def score(self, name: str, ranges: Any, excluded: list[str]) -> Scored:
        start = time.perf_counter()
        path = self.work / f"int8-{name}.onnx"
        quantize_qdq(self.prepared, ranges, path, nodes_to_exclude=excluded)
        acc = accuracy_of(logits(path, self.data), self.data)
        wall_s = round(time.perf_counter() - start, 1)
        result = Scored(name, acc, round(self.fp32_acc - acc, 3), excluded, wall_s)
        log.info("int8 candidate %s: val %.2f%% (drop %.2f)", name, acc, result.drop)
        self.scored.append(result)
        self.files[name] = (path, ranges)
        return result

    def best(self) -> Scored:
        return pick_best(self.scored)


@dataclass
class _Int8Choice:
    path: Path
    scored: Scored
    ranges: Any
    report: dict[str, Any]  # the report's "int8" section


def _choose_int8(
    config: Config, fp32: Path, prepared: Path, rows: _Rows, fp32_acc: float, work: Path
) -> _Int8Choice:
    """Quantize each candidate (one, or the sweep's grid), then exclusions if still over budget."""
    cfg, budget = config.calibration, config.accuracy_budget
    search = _Int8Search(prepared, rows.data, fp32_acc, work)
    grid, ranges = _candidate_ranges(cfg, prepared, rows.reader)
    for cand in grid:
        search.score(cand.name, ranges[cand], [])
    best = search.best()
    ranked = None
    if cfg.sweep and best.drop > budget and cfg.sensitivity_max_excluded > 0:
        best_ranges = search.files[best.name][1]
        ranked = _sensitivity(cfg, fp32, prepared, best_ranges, rows.data, work)
        for k in exclusion_steps(min(cfg.sensitivity_max_excluded, len(ranked))):
            name = f"{best.name}-exclude{k}"
            if search.score(name, best_ranges, [n for n, _ in ranked[:k]]).drop <= budget:
                break
        best = search.best()
    if best.drop > budget:
        log.warning(
            "calibrate: int8 %s is %.2f points below fp32 on validation (budget %.2f)%s",
            best.name,
            best.drop,
            budget,
            "" if cfg.sweep else "; try `bertrt calibrate --sweep`",
        )
    report = {
        "sensitivity": None if ranked is None else [{"node": n, "logit_mse": e} for n, e in ranked],
        "chosen": best.name,
        "val_accuracy": best.val_accuracy,
        "drop": best.drop,
        "excluded": best.excluded,
        "candidates": [s.to_dict() for s in search.scored],
    }
    path, best_ranges = search.files[best.name]
    return _Int8Choice(path, best, best_ranges, report)


def _candidate_ranges(
    cfg: CalibrationConfig, prepared: Path, reader: CalibrationReader
) -> tuple[list[Candidate], dict[Candidate, Any]]:
    """The candidates to try and their calibrated ranges (one calibration pass per method)."""
    if cfg.sweep:
        grid = candidate_grid(cfg.sweep_percentiles)
    else:
        grid = [Candidate(cfg.method, cfg.percentile if cfg.method == "percentile" else None)]
    ranges: dict[Candidate, Any] = {}
    for method in dict.fromkeys(c.method for c in grid):
        pct = [c.percentile for c in grid if c.method == method and c.percentile is not None]
        ranges.update(calibrate_ranges(prepared, reader, method, pct or (cfg.percentile,)))
    return grid, ranges


def _sensitivity(
    cfg: CalibrationConfig,
    fp32: Path,
    prepared: Path,
    ranges: Any,
    data: TokenizedRows,
    work: Path,
) -> list[tuple[str, float]]:
    """Quantizable nodes, most sensitive first, measured on a slice of the validation rows."""
    # Every k-th length-sorted batch: a spread of lengths in ~sensitivity_rows rows.
    step = max(1, -(-data.rows // max(1, cfg.sensitivity_rows)))
    subset = data.every(step)
    reference = logits(fp32, subset)
    nodes = quantized_nodes(load_onnx(prepared, load_weights=False))
    return sensitivity(prepared, ranges, nodes, reference, subset, work)


# -- the CPU deployment model --------------------------------------------------------
@dataclass
class _CpuChoice:
    candidates: list[CpuCandidate]
    best: CpuCandidate  # the run's `cpu` model, any runtime
    best_ort: CpuCandidate  # onnx/model.cpu.onnx
    best_ort_path: Path
    nncf_ir: Path  # OpenVINO's NNCF int8 IR, when it was built
    rule: ChoiceRule
    offered: list[Path]  # run files of other stages among the candidates


def _choose_cpu(
    config: Config,
    rundir: RunDir,
    prepared: Path,
    qdq: Path,
    rows: _Rows,
    fp32_out: np.ndarray,
    work: Path,
) -> _CpuChoice:
    """Build, score and time the CPU candidates; the winner overall and among ORT's graphs."""
    reader = rows.reader

    def u8_ranges() -> Any:
        found = calibrate_ranges(prepared, reader, "minmax", symmetric=False)
        return next(iter(found.values()))

    inputs = CandidateInputs(
        run=rundir,
        prepared=prepared,
        qdq=qdq,
        calibration=reader.batches,
        nncf_ir=work / "openvino" / rundir.openvino_ir("int8").name,
    )
    timing = _timing_batches(rows.tokenizer, rows.val_texts, config.model.max_length)
    specs = build_candidates(config.calibration.cpu_candidates, inputs, u8_ranges, work)
    rule = ChoiceRule("accuracy", config.accuracy_budget, config.min_agreement)
    data = rows.data
    if not rows.labelled:
        rule, data = replace(rule, name="agreement"), replace(data, labels=None)
    scored = choose_cpu_model(specs, data, fp32_out, rule, timing, threads=config.threads)
    best_ort = pick(scored, runtime="onnxruntime")
    path = next(s.path for s in specs if s.name == best_ort.name)
    offered = list(dict.fromkeys(s.path for s in specs if s.offered))
    return _CpuChoice(scored, pick(scored), best_ort, path, inputs.nncf_ir, rule, offered)


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

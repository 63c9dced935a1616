"""`bertrt` command line: a thin argparse layer over each stage's ``run(config, rundir)``.

Stage modules are imported only when their command runs, so `bertrt data`
does not pay for importing torch and `bertrt --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from bertrt.artifacts import RunDir
from bertrt.config import Config, load_config
from bertrt.errors import BertrtError
from bertrt.runners.registry import MODEL_NAMES as EVAL_MODELS
from bertrt.stages import StageResult

# Flags that are shortcuts for a config value: (command, flag) -> (key, value of the flag).
# A flag left at its default (None / False) sets nothing.
OVERRIDES: dict[tuple[str, str], tuple[str, Callable[[Any], str]]] = {
    ("data", "data"): ("data.csv", str),
    ("train", "preset"): ("train.preset", str),
    ("calibrate", "sweep"): ("calibration.sweep", lambda _: "true"),
    ("build-engine", "precision"): ("engines.precisions", str),
    ("bench", "quick"): ("bench.quick", lambda _: "true"),
    ("bench", "against"): ("bench.against", str),
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", default="runs/default", help="run directory (default: %(default)s)"
    )
    parser.add_argument(
        "--config", default=None, help="YAML config (default: configs/default.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=2 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertrt",
        description="Fine-tune, export, quantize, compile and benchmark a BERT classifier.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="validate the Kaggle CSV and write the stable split")
    _common(p)
    p.add_argument("--data", required=True, help="Kaggle-format CSV (train-sample.csv)")

    p = sub.add_parser("train", help="LoRA fine-tune, pick the best epoch, merge adapters")
    _common(p)
    p.add_argument("--data", default=None, help="the same CSV, if it moved since `bertrt data`")
    p.add_argument(
        "--preset", default=None, help="LoRA preset (shortcut for --set train.preset=...)"
    )

    p = sub.add_parser("export", help="ONNX fp32, optimized and fp16 models, verified")
    _common(p)

    p = sub.add_parser("calibrate", help="INT8 Q/DQ model and the CPU deployment model")
    _common(p)
    p.add_argument("--sweep", action="store_true", help="search methods/percentiles and exclusions")

    p = sub.add_parser("build-engine", help="TensorRT FP16/INT8 engines (needs an NVIDIA GPU)")
    _common(p)
    p.add_argument("--precision", default=None, help="comma list, e.g. fp16,int8")

    p = sub.add_parser("bench", help="latency, throughput and accuracy of every backend")
    _common(p)
    p.add_argument("--quick", action="store_true", help="small grid for CI and a first run")
    p.add_argument(
        "--against",
        default=None,
        help="results.json of an earlier run to check this one against "
        "(default: this run's previous results.json)",
    )

    p = sub.add_parser("evaluate", help="score a Kaggle-format CSV with one of the run's models")
    _common(p)
    p.add_argument("--data", required=True, help="Kaggle-format CSV to score (any file)")
    p.add_argument("--model", default="merged", choices=EVAL_MODELS, help="(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("predict", help="classify one question")
    _common(p)
    p.add_argument("--text", default=None, help="the whole text (title and body)")
    p.add_argument("--title", default=None)
    p.add_argument("--body", default=None)
    p.add_argument("--model", default="merged", choices=EVAL_MODELS, help="(default: %(default)s)")
    return parser


def config_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` values, then the shortcut flags of :data:`OVERRIDES` that were given."""
    overrides = list(args.overrides)
    for (command, flag), (key, value) in OVERRIDES.items():
        given = getattr(args, flag, None)
        if command == args.command and given not in (None, False):
            overrides.append(f"{key}={value(given)}")
    return overrides


# -- what each command runs ------------------------------------------------------
def _print(result: Any, module: str) -> None:
    """Bench does not return a StageResult yet; it prints its own lines."""
    if isinstance(result, StageResult) and result.summary:
        print(result.summary)


def _log(result: Any, module: str) -> None:
    """export and calibrate report on stderr through their own logger, so stdout stays empty."""
    if isinstance(result, StageResult) and result.summary:
        logging.getLogger(module).info(result.summary)


class StageCommand(NamedTuple):
    module: str  # its run(config, rundir, **kwargs(args)) runs the stage
    show: Callable[[Any, str], None]  # (result, module): how the result is shown
    kwargs: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {}


STAGES = {
    "data": StageCommand("bertrt.data.stage", _print),
    # --data points train at the CSV if it moved since `bertrt data` (same sha256).
    "train": StageCommand("bertrt.trainer.stage", _print, lambda args: {"csv": args.data}),
    "export": StageCommand("bertrt.export.stage", _log),
    "calibrate": StageCommand("bertrt.calibration.stage", _log),
    "build-engine": StageCommand("bertrt.engines.stage", _print),
    "bench": StageCommand("bertrt.bench.stage", _print),
}


def _evaluate(args: argparse.Namespace, config: Config, rundir: RunDir) -> None:
    from bertrt.evaluate import evaluate_file, format_report

    report = evaluate_file(config, rundir, args.data, args.model)
    print(json.dumps(report) if args.json else format_report(report))


def _predict(args: argparse.Namespace, config: Config, rundir: RunDir) -> None:
    from bertrt.evaluate import predict_text

    if args.text is None and args.title is None and args.body is None:
        raise BertrtError("predict: give --text, or --title and/or --body")
    label, prob = predict_text(config, rundir, args.model, args.text, args.title, args.body)
    print(f"{label}\t{prob:.4f}")


TOOLS: dict[str, Callable[[argparse.Namespace, Config, RunDir], None]] = {
    "evaluate": _evaluate,
    "predict": _predict,
}


def dispatch(args: argparse.Namespace, config: Config, rundir: RunDir) -> int:
    if args.command in TOOLS:
        TOOLS[args.command](args, config, rundir)
        return 0
    command = STAGES[args.command]
    run = importlib.import_module(command.module).run
    command.show(run(config, rundir, **command.kwargs(args)), command.module)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config, config_overrides(args))
        return dispatch(args, config, RunDir(args.run_dir))
    except BertrtError as err:
        print(f"bertrt {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

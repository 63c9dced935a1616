"""`bertrt` command line: a thin argparse layer over each stage's ``run(config, run_dir)``.

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
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.config import Config, load_config
from bertrt.errors import BertrtError
from bertrt.runners.registry import MODEL_NAMES as EVAL_MODELS


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


def _stage(module: str) -> Callable[..., Any]:
    return importlib.import_module(module).run  # type: ignore[no-any-return]


def dispatch(args: argparse.Namespace, config: Config, run: RunDir) -> int:
    command = args.command
    if command == "data":
        document = _stage("bertrt.data.stage")(config, run)
        counts = document["counts"]
        print(
            f"wrote {run.split}: "
            + ", ".join(f"{k} {sum(v.values())} {v}" for k, v in counts.items())
            + (
                f"; skipped {len(document['skipped_rows'])} malformed rows"
                if document["skipped_rows"]
                else ""
            )
        )
    elif command == "train":
        _stage("bertrt.trainer.stage")(config, run, csv=args.data)
    elif command == "export":
        _stage("bertrt.export.stage")(config, run)
    elif command == "calibrate":
        _stage("bertrt.calibration.stage")(config, run)
    elif command == "build-engine":
        _stage("bertrt.engines.stage")(config, run)
    elif command == "bench":
        _stage("bertrt.bench.stage")(config, run)
    elif command == "evaluate":
        from bertrt.evaluate import evaluate_file, format_report

        report = evaluate_file(config, run, args.data, args.model)
        print(json.dumps(report) if args.json else format_report(report))
    elif command == "predict":
        from bertrt.evaluate import predict_text

        if args.text is None and args.title is None and args.body is None:
            raise BertrtError("predict: give --text, or --title and/or --body")
        label, prob = predict_text(config, run, args.model, args.text, args.title, args.body)
        print(f"{label}\t{prob:.4f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    overrides = list(args.overrides)
    if getattr(args, "data", None) and args.command == "data":
        overrides.append(f"data.csv={args.data}")
    if getattr(args, "preset", None):
        overrides.append(f"train.preset={args.preset}")
    if getattr(args, "sweep", False):
        overrides.append("calibration.sweep=true")
    if getattr(args, "precision", None):
        overrides.append(f"engines.precisions={args.precision}")
    if getattr(args, "quick", False):
        overrides.append("bench.quick=true")
    if getattr(args, "against", None):
        overrides.append(f"bench.against={args.against}")
    try:
        config = load_config(args.config, overrides)
        return dispatch(args, config, RunDir(args.run_dir))
    except BertrtError as err:
        print(f"bertrt {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

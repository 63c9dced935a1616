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
from pathlib import Path
from typing import Any, NamedTuple

from bertrt.artifacts import RunDir
from bertrt.config import Config, load_config
from bertrt.data.labels import TASK_LABELS
from bertrt.errors import BertrtError, ConfigError
from bertrt.runners.registry import MODEL_NAMES as EVAL_MODELS
from bertrt.scoring import commands as scoring_commands
from bertrt.serve import commands as serve_commands
from bertrt.stages import StageResult

ROW_READERS = ("data", "import", "train", "export", "calibrate", "qat", "bench")
MOVED_CSV_HELP = "the same CSV, if it moved since `bertrt data` (same sha256)"

# Flags that are shortcuts for a config value: (command, flag) -> (key, value of the flag).
# A flag left at its default (None / False) sets nothing.
OVERRIDES: dict[tuple[str, str], tuple[str, Callable[[Any], str]]] = {
    # --data of every stage that reads rows: the CSV to split (data), or the same
    # CSV moved since `bertrt data` (the others; accepted when its sha256 matches).
    **{(command, "data"): ("data.csv", str) for command in ROW_READERS},
    ("data", "task"): ("data.task", str),
    ("data", "text_column"): ("data.text_columns", json.dumps),
    ("data", "label_column"): ("data.label_column", json.dumps),
    ("data", "id_column"): ("data.id_column", json.dumps),
    ("import", "task"): ("data.task", str),
    ("import", "text_column"): ("data.text_columns", json.dumps),
    ("import", "label_column"): ("data.label_column", json.dumps),
    ("import", "id_column"): ("data.id_column", json.dumps),
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


def _data_parser(sub: Any) -> None:
    """`bertrt data`: the Kaggle CSV (and its task) or a generic file's columns."""
    p = sub.add_parser("data", help="validate the labelled file and write the stable split")
    _common(p)
    p.add_argument(
        "--data", required=True, help="the Kaggle CSV, or a CSV/JSONL/Parquet with --label-column"
    )
    p.add_argument(
        "--task",
        choices=tuple(TASK_LABELS),
        default=None,
        help="Kaggle file: open vs closed (default) or the 5-class close reason",
    )
    p.add_argument(
        "--text-column",
        action="append",
        default=None,
        help="generic file: a text column (repeatable; joined like the Kaggle title and body)",
    )
    p.add_argument("--label-column", default=None, help="generic file: the label column")
    p.add_argument("--id-column", default=None, help="generic file: an integer row id column")


def _import_parser(sub: Any) -> None:
    """`bertrt import`: a classifier trained elsewhere, and the file to split for it."""
    p = sub.add_parser(
        "import", help="start the pipeline from a fine-tuned classifier or a LoRA adapter"
    )
    _common(p)
    p.add_argument(
        "--model",
        required=True,
        metavar="SRC",
        help="a directory save_pretrained wrote (*ForSequenceClassification + tokenizer), "
        "a peft LoRA adapter directory, or a hub id",
    )
    p.add_argument("--revision", default=None, help="hub id: branch, tag or commit")
    p.add_argument(
        "--labels", default=None, help="comma list renaming the model's classes (e.g. LABEL_0...)"
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="accept pickle weights (pytorch_model.bin), which can run code when loaded",
    )
    p.add_argument(
        "--data",
        required=True,
        help="the Kaggle CSV, a labelled CSV/JSONL/Parquet (--label-column), or an "
        "unlabelled one (--text-column only)",
    )
    p.add_argument("--task", choices=tuple(TASK_LABELS), default=None, help="Kaggle file's task")
    p.add_argument("--text-column", action="append", default=None, help="(repeatable)")
    p.add_argument("--label-column", default=None, help="omit for an unlabelled file")
    p.add_argument("--id-column", default=None, help="an integer row id column")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertrt",
        description="Fine-tune, export, quantize, compile and benchmark a BERT classifier.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _data_parser(sub)
    _import_parser(sub)  # (no blank line: build_parser is at its length limit)
    p = sub.add_parser("train", help="LoRA fine-tune, pick the best epoch, merge adapters")
    _common(p)
    p.add_argument("--data", default=None, help=MOVED_CSV_HELP)
    p.add_argument(
        "--preset", default=None, help="LoRA preset (shortcut for --set train.preset=...)"
    )

    p = sub.add_parser("export", help="ONNX fp32, optimized and fp16 models, verified")
    _common(p)
    p.add_argument("--data", default=None, help=MOVED_CSV_HELP)

    p = sub.add_parser("calibrate", help="INT8 Q/DQ model and the CPU deployment model")
    _common(p)
    p.add_argument("--data", default=None, help=MOVED_CSV_HELP)
    p.add_argument("--sweep", action="store_true", help="search methods/percentiles and exclusions")

    p = sub.add_parser("qat", help="ModelOpt INT8 Q/DQ ONNX: post-training and QAT (qat extra)")
    _common(p)
    p.add_argument("--data", default=None, help=MOVED_CSV_HELP)

    p = sub.add_parser("build-engine", help="TensorRT FP16/INT8 engines (needs an NVIDIA GPU)")
    _common(p)
    p.add_argument("--precision", default=None, help="comma list, e.g. fp16,int8")

    p = sub.add_parser("bench", help="latency, throughput and accuracy of every backend")
    _common(p)
    p.add_argument("--quick", action="store_true", help="small grid for CI and a first run")
    p.add_argument("--data", default=None, help=MOVED_CSV_HELP)
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

    _predict_parser(sub)
    serve_commands.add_parsers(sub, _common)
    _demo_parser(sub)
    return parser


def _predict_parser(sub: Any) -> None:
    """`bertrt predict`: one text (--text/--file/--title/--body), or a whole file (--data)."""
    p = sub.add_parser("predict", help="classify one question, or score a whole file (--data)")
    _common(p)
    p.add_argument("--text", default=None, help="the whole text (title and body)")
    p.add_argument(
        "--file", default=None, metavar="PATH", help="read the whole text from PATH (- = stdin)"
    )
    p.add_argument("--title", default=None)
    p.add_argument("--body", default=None)
    p.add_argument(
        "--model",
        default=None,
        choices=EVAL_MODELS,
        help="(default: merged for one text; the run's deployment model for --data)",
    )
    scoring_commands.add_arguments(p)


def _demo_parser(sub: Any) -> None:
    """`bertrt demo`: a web page over the run's model (in process, or a server's)."""
    p = sub.add_parser("demo", help="a web page to try the run's model (needs the demo extra)")
    _common(p)
    p.add_argument(
        "--model", default=None, choices=EVAL_MODELS, help="(default: the deployment model)"
    )
    p.add_argument("--url", default=None, help="ask a running `bertrt serve` (host:port) instead")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=7860, help="(default: %(default)s)")
    p.add_argument(
        "--examples", type=int, default=6, help="validation rows offered (default: %(default)s)"
    )


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
    """Print a stage's one-line summary on stdout (the stages that report on stdout)."""
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
    "import": StageCommand(
        "bertrt.trainer.importer",
        _print,
        lambda args: {
            "model": args.model,
            "revision": args.revision,
            "labels": args.labels.split(",") if args.labels else None,
            "trust_pickle": args.trust_pickle,
        },
    ),
    "train": StageCommand("bertrt.trainer.stage", _print),
    "export": StageCommand("bertrt.export.stage", _log),
    "calibrate": StageCommand("bertrt.calibration.stage", _log),
    "qat": StageCommand("bertrt.qat.stage", _log),
    "build-engine": StageCommand("bertrt.engines.stage", _print),
    "bench": StageCommand("bertrt.bench.stage", _print),
}


def _evaluate(args: argparse.Namespace, config: Config, rundir: RunDir) -> None:
    from bertrt.evaluate import evaluate_file, format_report

    report = evaluate_file(config, rundir, args.data, args.model)
    print(json.dumps(report) if args.json else format_report(report))


def prediction_line(prediction: dict[str, Any]) -> str:
    """``label<TAB>name=p<TAB>...``: one line per question, label first (what a script cuts).

    Then every class's probability, in class-id order, so no class is hidden.
    """
    probabilities = prediction["probabilities"].items()
    return "\t".join([prediction["label"], *(f"{name}={p:.4f}" for name, p in probabilities)])


def _predict(args: argparse.Namespace, config: Config, rundir: RunDir) -> None:
    from bertrt.data.text import read_question

    if args.data is not None:
        scoring_commands.predict_file(args, config, rundir)
        return
    if args.file is not None:
        if args.text is not None:
            raise ConfigError("predict: give --text or --file, not both")
        args.text = read_question(args.file)
    if args.text is None and args.title is None and args.body is None:
        raise ConfigError("predict: give --text, --file PATH (- = stdin), or --title and/or --body")
    if args.url is not None:
        from bertrt.serve.client import predict_url, served_labels

        if args.model is not None:
            raise ConfigError(
                "predict: --model picks a local model; with --url the server's model answers "
                "(choose it with bertrt serve --model)"
            )

        fields = {"text": [args.text]} if args.text is not None else {}
        fields.update({k: [v] for k, v in (("title", args.title), ("body", args.body)) if v})
        print(prediction_line(predict_url(args.url, fields, served_labels(rundir))[0]))
        return
    from bertrt.evaluate import predict_text

    model = args.model or "merged"
    prediction = predict_text(config, rundir, model, args.text, args.title, args.body)
    print(prediction_line(prediction))


def _demo(args: argparse.Namespace, config: Config, rundir: RunDir) -> None:
    from bertrt.demo import DemoOptions
    from bertrt.demo import run as demo

    options = DemoOptions(args.model, args.url, args.host, args.port, args.examples)
    demo(config, rundir, options)


TOOLS: dict[str, Callable[[argparse.Namespace, Config, RunDir], None]] = {
    "evaluate": _evaluate,
    "predict": _predict,
    "demo": _demo,
    **serve_commands.COMMANDS,
}


def dispatch(args: argparse.Namespace, config: Config, rundir: RunDir) -> int:
    if args.command in TOOLS:
        TOOLS[args.command](args, config, rundir)
        return 0
    command = STAGES[args.command]
    run = importlib.import_module(command.module).run
    command.show(run(config, rundir, **command.kwargs(args)), command.module)
    return 0


def user_error(err: Exception) -> tuple[str, int] | None:
    """The one line and exit code for an error the user can cause; None for a bug.

    The one place an exception becomes a message. Typed errors carry both.
    The rest are the system's answer to what the user pointed at: an OSError
    names its file (a --run-dir under a file, a full disk, a permission), a
    UnicodeError is text that is not UTF-8, a JSONDecodeError a JSON file cut
    short. Anything else is a bug and keeps its traceback.
    """
    if isinstance(err, BertrtError):
        return str(err), err.exit_code
    if isinstance(err, json.JSONDecodeError):
        return f"a JSON file is not valid JSON ({err}); rerun the stage that wrote it", 4
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}", 1
    if isinstance(err, UnicodeError):
        return f"not UTF-8 text: {err}", 1
    return None


def run_dir(path: str) -> RunDir:
    """``--run-dir``, refused here when it cannot be a directory, before any stage starts."""
    root = Path(path)
    blocker = next((p for p in (root, *root.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"--run-dir {path}: {blocker} is a file, not a directory")
    return RunDir(root)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config, config_overrides(args))
        return dispatch(args, config, run_dir(args.run_dir))
    except Exception as err:
        failure = user_error(err)
        if failure is None:
            raise
        message, code = failure
        print(f"bertrt {args.command}: error: {' '.join(message.splitlines())}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())

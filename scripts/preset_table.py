"""Train every preset on the same rows and write the comparison table of one task.

    python scripts/preset_table.py --data path/to/train-sample.csv \
        --task closed --train-rows 3000 --eval-rows 1000

Each preset gets its own run directory (``runs/presets/<task>/<preset>``) and
goes through the real stages (``bertrt data`` then ``bertrt train``), so the
table reports exactly what ``train_metrics.json`` recorded: trainable
parameters, time per epoch and the stage's wall time, test accuracy, macro-F1
and log loss, and the machine. ``docs/presets.json`` holds one entry per task
(``{"closed": {...}, "close-reason": {...}}``) and ``docs/presets.md`` one
table per task: a run for one task replaces that task's table and keeps the
others. Nothing in them is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir, read_json, write_json, write_text
from bertrt.config import Config, load_config
from bertrt.data import stage as data_stage
from bertrt.data.labels import TASK_LABELS
from bertrt.trainer import PRESETS, get_preset
from bertrt.trainer import stage as train_stage

REPO = Path(__file__).resolve().parents[1]
TASKS = tuple(TASK_LABELS)  # table order in docs/presets.md
# How each task reads in a heading; a task missing here is shown by its name alone.
TASK_TITLES = {
    "closed": "open vs closed (2 classes)",
    "close-reason": "open and the four close reasons (5 classes)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Kaggle-format CSV")
    parser.add_argument("--task", choices=TASKS, default="closed", help="data.task to train on")
    parser.add_argument(
        "--name",
        default=None,
        help="the table's key (default: the task): a second table of a task, e.g. a "
        "comparison of a few presets, without replacing the task's main table",
    )
    parser.add_argument("--train-rows", type=int, default=None, help="cap on training rows")
    parser.add_argument("--eval-rows", type=int, default=None, help="cap on val and test rows")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma list (default: all)")
    parser.add_argument(
        "--config", default=None, help="YAML config (default: configs/default.yaml)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "presets"), help="+ /<task>")
    parser.add_argument("--markdown", default=str(REPO / "docs" / "presets.md"))
    parser.add_argument("--json", default=str(REPO / "docs" / "presets.json"))
    parser.add_argument(
        "--reuse", action="store_true", help="keep a preset's finished run if its config matches"
    )
    return parser.parse_args(argv)


def preset_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """One table row from a train_metrics.json, older ones (no macro_f1, log_loss) included."""
    best: dict[str, Any] = next(
        (e for e in metrics["epochs"] if e["epoch"] == metrics["best_epoch"]), {}
    )
    test = metrics["test"]
    return {
        "preset": metrics["preset"],
        "description": metrics["description"],
        "trains": metrics.get("trains"),
        "architecture": metrics.get("architecture"),
        "lora": metrics.get("lora"),
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test.get("macro_f1"),
        "test_log_loss": test.get("log_loss", test["loss"]),
        "test_loss": test["loss"],
        "test_f1": test["f1"],
        "val_accuracy": best.get("val_accuracy"),
        "trainable": metrics["parameters"]["trainable"],
        "total": metrics["parameters"]["total"],
        "trainable_percent": metrics["parameters"]["trainable_percent"],
        "seconds_per_epoch": metrics["seconds_per_epoch"],
        "wall_s": metrics.get("wall_s"),
        "train_samples_per_s": metrics["train_samples_per_s"],
        "epochs": len(metrics["epochs"]),
        "rows": metrics["rows"],
        "device": metrics["device"],
        "peak_memory": metrics.get("peak_memory"),
    }


def load_tables(path: Path) -> dict[str, dict[str, Any]]:
    """The tables already written, by task.

    Before tasks existed the file was one table (header keys + ``presets``)
    of the open/closed task: it is read as task ``closed``.
    """
    if not path.is_file():
        return {}
    document = read_json(path)
    if "presets" in document:
        return {"closed": {**document, "task": document.get("task", "closed")}}
    return dict(document)


def ordered(tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Known tasks in TASKS order, then any other table in name order (a stable file)."""
    names = [t for t in TASKS if t in tables] + sorted(set(tables) - set(TASKS))
    return {name: tables[name] for name in names}


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table_row(r: dict[str, Any]) -> str:
    peak = (r.get("peak_memory") or {}).get("mib")
    return (
        f"| {r['preset']} | {r['description']} | {r['trainable']:,} "
        f"| {r['trainable_percent']:.2f}% | {_number(peak, ',.0f')} "
        f"| {_number(r.get('seconds_per_epoch'), '.1f')} "
        f"| {_number(r.get('wall_s'), '.1f')} | {r['test_accuracy']:.4f} "
        f"| {_number(r.get('test_macro_f1'), '.4f')} "
        f"| {_number(r.get('test_log_loss', r.get('test_loss')), '.4f')} |"
    )


def task_section(name: str, table: dict[str, Any]) -> list[str]:
    """The heading, what the rows were trained on, and the table of one task (or of the
    table ``name`` of that task)."""
    rows = table["presets"]
    device = rows[0]["device"] if rows else {}
    task = table.get("task", name)
    title = TASK_TITLES.get(task)
    return [
        f"## Task `{task}`"
        + (f": {title}" if title else "")
        + (f" — `{name}`" if name != task else ""),
        "",
        f"Generated by `{table['command']}` on {table['date']}; do not edit by hand.",
        "",
        f"- Machine: {device.get('name', '?')} ({device.get('type', '?')}, "
        f"{device.get('threads', device.get('count', '?'))} threads/devices"
        + (f"; {', '.join(device['isa'])}" if device.get("isa") else "")
        + f"), precision {device.get('precision', '?')}",
        f"- Base model: {table['base_model']}, max_length {table['max_length']}, "
        f"seed {table['seed']}",
        f"- Rows: {rows[0]['rows'] if rows else '?'} (train / val / test), "
        f"epochs {table['epochs']}, batch {table['batch_size']}, lr {table['learning_rate']}",
        "",
        "| preset | what is trained | trainable params | % of total | peak train MiB "
        "| train s / epoch | stage wall s | test accuracy | test macro-F1 | test log loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_table_row(r) for r in rows),
        "",
    ]


def markdown(tables: dict[str, dict[str, Any]]) -> str:
    """docs/presets.md: one section per task, every number from its JSON entry."""
    lines = [
        "# Training presets on the same data",
        "",
        "One table per task, each written by `scripts/preset_table.py --task TASK` "
        "(`make presets TASK=...`). Log loss is the competition's (probabilities clipped "
        "to [1e-15, 1 - 1e-15]) where the run recorded it, else the test cross-entropy; "
        "`-`: not recorded by the run that made the row. Peak train MiB: the process's "
        "resident-set peak while training on the CPU (reset when training starts), torch's "
        "CUDA peak on a GPU (`peak_memory` in train_metrics.json).",
        "",
    ]
    for task, table in ordered(tables).items():
        lines += task_section(task, table)
    return "\n".join(lines)


def train_presets(
    args: argparse.Namespace, names: list[str]
) -> tuple[list[dict[str, Any]], Config]:
    """Run data + train per preset (or reuse a finished run of the same config)."""
    common = [*args.overrides, f"data.csv={Path(args.data).resolve()}", f"data.task={args.task}"]
    if args.train_rows is not None:
        common.append(f"train.max_train_rows={args.train_rows}")
    if args.eval_rows is not None:
        common.append(f"train.max_eval_rows={args.eval_rows}")
    if args.epochs is not None:
        common.append(f"train.epochs={args.epochs}")
    rows = []
    config = load_config(args.config, common)
    for name in names:
        config = load_config(args.config, [*common, f"train.preset={name}"])
        run = RunDir(Path(args.runs_dir) / args.task / name)
        metrics = read_json(run.train_metrics) if run.train_metrics.exists() else None
        if not (args.reuse and metrics and _same_config(metrics, config)):
            print(f"== {args.task} {name}", file=sys.stderr)
            data_stage.run(config, run)
            trained = train_stage.run(config, run)
            print(trained.summary)
            metrics = trained.report
        assert metrics, "preset_table.py trains in one process; run it without torchrun"
        rows.append(preset_row(metrics))
    return rows, config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    for name in names:
        get_preset(name)  # unknown names fail before any training
    rows, config = train_presets(args, names)
    table = {
        "task": args.task,
        "command": "python scripts/preset_table.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "base_model": config.model.base,
        "max_length": config.model.max_length,
        "seed": config.seed,
        "epochs": config.train.epochs,
        "batch_size": config.train.batch_size,
        "learning_rate": config.train.learning_rate,
        "data": str(Path(args.data).resolve()),
        "presets": rows,
    }
    tables = ordered({**load_tables(Path(args.json)), args.name or args.task: table})
    text = markdown(tables)  # before either file is written: both change, or neither
    write_json(Path(args.json), tables)
    write_text(Path(args.markdown), text)
    print(f"wrote the {args.task} table to {args.markdown} and {args.json}")
    return 0


def _same_config(metrics: dict[str, Any], config: Any) -> bool:
    from dataclasses import asdict

    return metrics.get("config") == {"train": asdict(config.train), "model": asdict(config.model)}


if __name__ == "__main__":
    sys.exit(main())

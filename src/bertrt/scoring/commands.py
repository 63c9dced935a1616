"""The ``bertrt predict --data IN --out OUT`` flags and what they run.

Kept out of cli.py so the front end only wires them in; imports of the
scoring engines (torch, Ray) happen when a job runs, not when ``--help`` does.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data.stream import DEFAULT_CHUNK_ROWS
from bertrt.errors import ConfigError

ENGINES = ("local", "ray")
log = logging.getLogger("bertrt.scoring")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The file-scoring flags of `bertrt predict`."""
    p.add_argument(
        "--data", default=None, metavar="IN", help="score a whole CSV/JSONL/Parquet file"
    )
    p.add_argument(
        "--out", default=None, metavar="OUT", help="predictions file (.csv, .jsonl, .parquet)"
    )
    p.add_argument(
        "--text-column",
        action="append",
        default=None,
        help="a text column of IN (repeatable; default: the run's)",
    )
    p.add_argument("--id-column", default=None, help="IN's id column (default: the run's)")
    p.add_argument(
        "--keep-column",
        action="append",
        default=None,
        metavar="NAME",
        help="copy this column of IN to OUT (repeatable)",
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help="rows read, bucketed and written at a time (default: %(default)s)",
    )
    p.add_argument("--engine", choices=ENGINES, default="local", help="(default: %(default)s)")
    p.add_argument("--ray-address", default=None, help="a Ray cluster (default: a local Ray)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: 1 per GPU/CPU)")
    p.add_argument(
        "--shards",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Ray: OUT is a directory of shards (default: with --ray-address)",
    )


def _exit_on_sigterm() -> None:
    """SIGTERM (a scheduler stopping the job) unwinds like an error: the temporary OUT is
    removed and OUT left as it was. Only SIGKILL leaves a temporary file (swept next run)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def predict_file(args: argparse.Namespace, config: Config, rundir: RunDir) -> None:
    """Run one file-scoring job and print its summary line."""
    from bertrt.scoring.job import ScoreOptions, layout_for

    if args.out is None:
        raise ConfigError("predict --data IN needs --out OUT (.csv, .jsonl or .parquet)")
    if any(getattr(args, name) is not None for name in ("text", "file", "title", "body")):
        raise ConfigError("predict: give --data IN --out OUT, or one text, not both")
    if args.engine != "ray" and (args.ray_address or args.workers or args.shards):
        raise ConfigError("--ray-address, --workers and --shards need --engine ray")
    options = ScoreOptions(
        data=Path(args.data),
        out=Path(args.out),
        layout=layout_for(rundir, args.text_column, args.id_column, args.keep_column),
        chunk_rows=args.chunk_rows,
        bad_rows=config.data.bad_rows,
        max_bad_fraction=config.data.max_bad_fraction,
    )
    _exit_on_sigterm()
    if args.engine == "ray":
        from bertrt.scoring.ray_engine import RayOptions, score_with_ray

        ray = RayOptions(address=args.ray_address, workers=args.workers, shards=args.shards)
        report = score_with_ray(config, rundir, options, args.model, ray)
    else:
        from bertrt.scoring.local import score_file

        report = score_file(config, rundir, options, args.model)
    print(report.summary())

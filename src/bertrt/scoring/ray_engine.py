"""Score files on Ray Data: a read task per file, an actor pool of activated runners.

``bertrt predict --data IN --out OUT --engine ray`` runs the same reader
(:func:`bertrt.data.stream.read_chunks`) and the same model code
(:class:`bertrt.runners.run_model.RunModel`) as the single-process job, so
its predictions are the single-process ones: the same texts, the same
tokenizer, the same runner; only the batches a row is padded with may differ,
which masked padding keeps below float noise (a test holds it to 1e-6).

* Reading: one Ray task per input file (a file, a directory of shards or a
  glob), split into blocks of ``chunk_rows`` rows as it streams; a local Ray
  gets one CPU more than the actors reserve, for it.
* Scoring: ``map_batches`` on an actor pool; every actor opens the run's
  model once (one GPU each for a TensorRT model, ``threads`` CPUs otherwise).
  The run directory must be readable at the same path on every node.
* Writing: with one output file (a local run) the driver receives the scored
  rows in input order (``preserve_order``) and writes them through the same
  :class:`bertrt.scoring.sink.Sink`; with ``shards`` every actor writes its
  batches as ``part-<file>-<first row>.<ext>`` into a temporary directory that
  becomes OUT when every batch is done (a shared filesystem on a cluster).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data.generic import FORMATS
from bertrt.data.stream import Chunk, Layout, read_chunks, unit_of
from bertrt.errors import BertrtError, ConfigError, DataError, UnavailableError
from bertrt.hardware import usable_cores
from bertrt.metrics import softmax
from bertrt.runners.identity import Device
from bertrt.runners.registry import MODELS
from bertrt.runners.run_model import RunModel
from bertrt.scoring.job import ScoreOptions
from bertrt.scoring.local import Progress, ScoreReport
from bertrt.scoring.output import open_writer, out_format
from bertrt.scoring.predictions import output_names, prediction_columns, rejected
from bertrt.scoring.sink import Sink

SCALE_EXTRA = "install Ray Data with `pip install -e '.[scale]'` (ray[data])"
KEEP = "__keep__"  # prefix of a kept column inside the Ray blocks


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray for this job
    workers: int | None = None  # actors; None: one per GPU (TensorRT) or one locally
    shards: bool | None = None  # OUT a directory of shards; None: with an address
    init: dict[str, Any] = dataclasses.field(default_factory=dict)  # more ray.init() options


def input_files(data: Path) -> list[Path]:
    """IN as files: one file, every data file of a directory (sorted), or a glob's matches."""
    if data.is_dir():
        files = sorted(p for p in data.iterdir() if p.suffix.lower() in FORMATS)
        files = [p for p in files if not p.name.startswith(".")]
    elif any(ch in str(data) for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(data)))
    else:
        files = [data]
    if not files:
        raise DataError(f"{data}: no {', '.join(FORMATS)} files to score")
    kinds = {p.suffix.lower() for p in files}
    if len(kinds) > 1:
        raise DataError(f"{data}: shards of one job must share a format, found {sorted(kinds)}")
    return files


def _read_file(
    item: dict[str, np.ndarray], layout: Layout, chunk_rows: int
) -> Iterator[dict[str, Any]]:
    """Ray task: the rows of one input file, a block per chunk."""
    index, path = int(item["index"][0]), Path(str(item["file"][0]))
    for chunk in read_chunks(path, layout, chunk_rows):
        block: dict[str, Any] = {
            "__file": np.full(len(chunk), index, dtype=np.int64),
            "__row": np.asarray(chunk.rows, dtype=np.int64),
            "__id": _objects(chunk.ids),
            "__idname": np.full(len(chunk), chunk.id_name, dtype=object),
            "__text": _objects(chunk.texts),
            "__reason": _objects(chunk.reasons),
            "__bytes": np.full(len(chunk), chunk.bytes_read, dtype=np.int64),
        }
        block.update({KEEP + name: _objects(values) for name, values in chunk.keep.items()})
        yield block


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _chunk_of(batch: dict[str, np.ndarray], layout: Layout) -> Chunk:
    """A Ray batch back as the reader's chunk (rows of one or more chunks)."""
    return Chunk(
        id_name=str(batch["__idname"][0]),
        rows=[int(r) for r in batch["__row"]],
        ids=list(batch["__id"]),
        texts=list(batch["__text"]),
        reasons=[str(r) for r in batch["__reason"]],
        keep={name: list(batch[KEEP + name]) for name in layout.keep_columns},
    )


class Scorer:
    """A Ray actor: one activated runner of the run's model, scoring batch after batch."""

    def __init__(
        self, config: Config, run_root: str, model: str, layout: Layout, shard: dict[str, Any]
    ) -> None:
        self.rm = RunModel.open(config, RunDir(run_root), model, static_shapes=False)
        self.rm.__enter__()
        self.layout = layout
        self.shard = shard  # {"dir": temporary OUT directory, "kind": format} or {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        chunk = _chunk_of(batch, self.layout)
        rows = [i for i, reason in enumerate(chunk.reasons) if not reason]
        probabilities = np.zeros((0, len(self.rm.labels)), dtype=np.float32)
        if rows:
            probabilities = softmax(self.rm.logits([chunk.texts[i] for i in rows]))
        columns = prediction_columns(chunk, rows, probabilities, self.rm.labels, chunk.id_name)
        out = {k: v for k, v in batch.items() if k != "__text" and not k.startswith(KEEP)}
        if self.shard:
            if rows:
                self._write_shard(columns, int(batch["__file"][0]), chunk.rows[0])
            return out
        out["__label"] = np.full(len(chunk), "", dtype=object)
        out["__label"][rows] = columns["label"]
        for k, name in enumerate(self.rm.labels):
            out[f"__p{k}"] = np.full(len(chunk), np.nan, dtype=np.float32)
            out[f"__p{k}"][rows] = columns[name]
        out.update({KEEP + n: batch[KEEP + n] for n in self.layout.keep_columns})
        return out

    def _write_shard(self, columns: dict[str, Any], file: int, first_row: int) -> None:
        kind = self.shard["kind"]
        name = f"part-{file:05d}-{first_row:012d}{self.shard['suffix']}"
        with open_writer(Path(self.shard["dir"]) / name, kind) as writer:
            writer.write(columns)


def _rows_of(
    batch: dict[str, np.ndarray], labels: tuple[str, ...], layout: Layout, shards: bool
) -> tuple[dict[str, Any] | None, list[int]]:
    """The driver's view of a scored batch: OUT's columns (None for shards), good rows."""
    good = [i for i, reason in enumerate(batch["__reason"]) if not reason]
    if shards:
        return None, good
    id_name = str(batch["__idname"][0])
    columns: dict[str, Any] = {id_name: list(batch["__id"][good])}
    columns["label"] = list(batch["__label"][good])
    for k, name in enumerate(labels):
        columns[name] = batch[f"__p{k}"][good]
    for name in layout.keep_columns:
        columns[name] = list(batch[KEEP + name][good])
    return columns, good


@dataclass(frozen=True)
class Pool:
    """The actor pool: how many actors, and what each reserves and runs with."""

    workers: int
    threads: int | None  # intra-op threads of each actor's runner
    num_cpus: float
    num_gpus: float


def _pool(ray: Any, model: str, config: Config, options: RayOptions) -> Pool:
    """One GPU per actor for a TensorRT model (default: one actor per GPU); else ``threads``
    CPUs per actor (default: one actor sharing the local cores, or on a cluster 4 threads
    per actor and as many actors as fit, one CPU left for the read tasks)."""
    if options.workers is not None and options.workers < 1:
        raise ConfigError(f"--workers {options.workers}: must be at least 1")
    if model in MODELS and MODELS[model].device == Device.CUDA:
        gpus = ray.cluster_resources().get("GPU", 1) if ray is not None else 1
        return Pool(options.workers or max(1, int(gpus)), config.threads, 1, 1)
    if options.address is None:
        workers = options.workers or 1
        threads = config.threads or max(1, usable_cores() // workers)
    else:
        threads = config.threads or 4
        cpus = ray.cluster_resources().get("CPU", threads + 1)
        workers = options.workers or max(1, int((cpus - 1) // threads))
    return Pool(workers, threads, threads, 0)


def _start_ray(ray: Any, options: RayOptions, model: str, config: Config) -> tuple[bool, Pool]:
    """Connect to ``options.address`` or start a local Ray sized for the pool plus one CPU
    for the read tasks; True if this job started it (and must stop it)."""
    started = not ray.is_initialized()
    if started:
        extra = {"include_dashboard": False, "log_to_driver": False, **options.init}
        if options.address is None:
            pool = _pool(None, model, config, options)
            extra.setdefault("num_cpus", int(pool.workers * pool.num_cpus) + 1)
        ray.init(address=options.address, **extra)
    return started, _pool(ray, model, config, options)


def score_with_ray(
    config: Config,
    run: RunDir,
    options: ScoreOptions,
    model: str | None = None,
    ray_options: RayOptions | None = None,
) -> ScoreReport:
    """Score ``options.data`` (a file, a directory or a glob of shards) on Ray into OUT."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise UnavailableError(f"--engine ray needs Ray Data: {SCALE_EXTRA}") from err
    ray_options = ray_options or RayOptions()
    out_format(options.out)
    files = input_files(options.data)
    probe = RunModel.open(config, run, model, static_shapes=False)  # fails fast, not activated
    shards = ray_options.shards if ray_options.shards is not None else bool(ray_options.address)
    for path in files:  # a missing column or unreadable file: one line now, not from a worker
        next(read_chunks(path, options.layout, 1), None)
    stop, pool = _start_ray(ray, ray_options, probe.name, config)
    try:
        return _run(ray, config, run, options, probe, files, pool, shards)
    except Exception as err:
        cause = _user_cause(err)
        if cause is None:
            raise
        # The worker's one-line message, without the retry advice Ray appends on new lines.
        raise type(cause)(str(cause).splitlines()[0]) from None
    finally:
        if stop:
            ray.shutdown()


def _user_cause(err: BaseException) -> BertrtError | None:
    """The project's error (bad row, quote, ...) a Ray task raised, out of Ray's wrappers."""
    from ray.exceptions import RayTaskError

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BertrtError) and not isinstance(current, RayTaskError):
            return current
        nested = getattr(current, "cause", None)
        current = nested if isinstance(nested, BaseException) else current.__cause__
    return None


def _dataset(
    ray: Any, config: Config, run: RunDir, options: ScoreOptions, spec: dict[str, Any]
) -> Any:
    """Read tasks feeding the actor pool; rows come out in input order."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the job's own bar counts rows
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = [{"index": i, "file": str(p.resolve())} for i, p in enumerate(spec["files"])]
    pool: Pool = spec["pool"]
    config = dataclasses.replace(config, threads=pool.threads)
    return (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            _read_file,
            batch_size=1,
            fn_kwargs={"layout": options.layout, "chunk_rows": options.chunk_rows},
        )
        # A read task's chunks may arrive as one block; blocks of one chunk each
        # let every actor take a share (a streaming split, nothing materialized).
        .repartition(target_num_rows_per_block=options.chunk_rows)
        .map_batches(
            Scorer,
            batch_size=options.chunk_rows,
            compute=ray.data.ActorPoolStrategy(size=pool.workers),
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus,
            fn_constructor_kwargs={
                "config": config,
                "run_root": str(run.root.resolve()),
                "model": spec["model"],
                "layout": options.layout,
                "shard": spec["shard"],
            },
        )
    )


def _run(
    ray: Any,
    config: Config,
    run: RunDir,
    options: ScoreOptions,
    probe: RunModel,
    files: list[Path],
    pool: Pool,
    shards: bool,
) -> ScoreReport:
    unit = unit_of(files[0])
    with Sink(options, unit, directory=shards) as sink:
        shard = {"dir": str(sink.tmp.resolve()), "kind": sink.kind, "suffix": options.out.suffix}
        spec = {"files": files, "model": probe.name, "pool": pool}
        spec["shard"] = shard if shards else {}
        dataset = _dataset(ray, config, run, options, spec)
        start = time.perf_counter()
        progress = Progress(files[0] if len(files) == 1 else options.data, options.progress)
        try:
            _drain(dataset, sink, probe.labels, options, files, unit, shards, progress)
        finally:
            progress.close()
        sink.publish()
        return ScoreReport(
            out=options.out,
            rows=sink.scored,
            skipped=sink.policy.bad,
            seconds=time.perf_counter() - start,
            model=probe.name,
            runner=probe.runner.label,
            engine=f"ray ({pool.workers} worker{'s' if pool.workers > 1 else ''})",
            rejects=sink.rejects if options.bad_rows == "skip" else None,
        )


def _drain(
    dataset: Any,
    sink: Sink,
    labels: tuple[str, ...],
    options: ScoreOptions,
    files: list[Path],
    unit: str,
    shards: bool,
    progress: Progress,
) -> None:
    """Take the scored batches in input order into the sink (rejects, bad-row policy, OUT)."""
    id_name: str | None = None
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if not len(batch["__row"]):
            continue
        if id_name is None:
            id_name = str(batch["__idname"][0])
            output_names(options.layout, id_name, labels)
        elif str(batch["__idname"][0]) != id_name:
            raise DataError(f"{options.data}: the shards identify rows by different columns")
        columns, _ = _rows_of(batch, labels, options.layout, shards)
        by_file: dict[int, list[int]] = {}
        for i, f in enumerate(batch["__file"]):
            by_file.setdefault(int(f), []).append(i)
        records = []
        for f, positions in by_file.items():
            part = Chunk(
                id_name=id_name,
                rows=[int(batch["__row"][i]) for i in positions],
                ids=[batch["__id"][i] for i in positions],
                reasons=[str(batch["__reason"][i]) for i in positions],
            )
            records += rejected(part, files[f], unit, id_name)
        sink.add(columns, records, len(batch["__row"]), id_name)
        progress.advance(len(batch["__row"]), int(batch["__bytes"].max()) if len(files) == 1 else 0)

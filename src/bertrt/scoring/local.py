"""Score a whole file in one process: read a chunk, tokenize, run length-bucketed, append.

Memory is bounded by the chunk, not the file: at most three chunks are alive
(the one being scored, one ready and one being prepared), and each is written out
before the next is read. Inside a chunk :meth:`RunModel.logits` sorts rows by
token length into batches padded only to their own longest row and puts the
logits back in row order, so OUT keeps the input's order.

Reading, building texts and tokenizing the next chunk run on a thread while
the runner scores the current one (``ScoreOptions.overlap``): the fast
tokenizer and the ONNX Runtime / OpenVINO / PyTorch kernels release the GIL,
so the two overlap; docs/scoring.md has what that measured.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data.stream import Chunk, read_chunks, total_rows, unit_of
from bertrt.metrics import softmax
from bertrt.runners.predict import TokenizedRows
from bertrt.runners.run_model import RunModel
from bertrt.scoring.job import ScoreOptions
from bertrt.scoring.output import out_format
from bertrt.scoring.predictions import good_rows, output_names, prediction_columns, rejected
from bertrt.scoring.sink import Sink

Prepared = tuple[Chunk, list[int], TokenizedRows | None]


@dataclass
class ScoreReport:
    """What a finished job did, for the CLI's one line and the benchmark."""

    out: Path
    rows: int  # rows scored
    skipped: int  # bad rows written to the rejects file
    seconds: float
    model: str
    runner: str
    engine: str = "local"
    rejects: Path | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        skipped = f"; skipped {self.skipped} bad rows (see {self.rejects})" if self.skipped else ""
        return (
            f"wrote {self.out}: {self.rows} rows, model {self.model} ({self.runner}), "
            f"engine {self.engine}, {self.seconds:.1f} s, {self.rows_per_s:.1f} rows/s{skipped}"
        )


class Progress:
    """Rows, rows/s and ETA. A CSV's or JSONL's row count is estimated from the bytes read."""

    def __init__(self, path: Path, enabled: bool, desc: str = "predict") -> None:
        self.size = path.stat().st_size if path.is_file() else 0
        self.bar = tqdm(
            total=total_rows(path) if path.is_file() else None,
            desc=desc,
            unit="row",
            disable=not enabled,
            dynamic_ncols=True,
        )
        self.exact = self.bar.total is not None

    def advance(self, rows: int, bytes_read: int = 0) -> None:
        self.bar.update(rows)
        if not self.exact and bytes_read and self.size:
            self.bar.total = max(self.bar.n, round(self.bar.n * self.size / bytes_read))
        self.bar.refresh()  # every chunk shows, also where stderr is not a terminal

    def close(self) -> None:
        self.bar.close()


def prepared(chunks: Iterator[Chunk], rm: RunModel, overlap: bool) -> Iterator[Prepared]:
    """Each chunk with its good rows tokenized; with ``overlap`` one chunk ahead, on a thread."""

    def prepare() -> Prepared | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        rows = good_rows(chunk)
        tokenized = rm.tokenize([chunk.texts[i] for i in rows]) if rows else None
        return chunk, rows, tokenized

    if not overlap:
        while (item := prepare()) is not None:
            yield item
        return
    yield from _ahead(prepare)


def _ahead(prepare: Callable[[], Prepared | None]) -> Iterator[Prepared]:
    """Items of ``prepare()`` (until None) made on a daemon thread, one queued ahead.

    A daemon thread, not a pool: a job stopped while the thread waits on its input
    (a pipe) must exit without joining it. Its errors are raised here.
    """
    ready: queue.Queue[tuple[Prepared | None, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                item = prepare()
                ready.put((item, None))
                if item is None:
                    return
        except BaseException as err:  # handed to the consumer, raised there
            ready.put((None, err))

    threading.Thread(target=work, name="bertrt-tokenize", daemon=True).start()
    try:
        while True:
            item, err = ready.get()
            if err is not None:
                raise err
            if item is None:
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            ready.get_nowait()  # unblock a producer waiting to put


def score_file(
    config: Config, run: RunDir, options: ScoreOptions, model: str | None = None
) -> ScoreReport:
    """Score ``options.data`` into ``options.out`` with the run's ``model`` (default: the
    deployment model); OUT appears only complete."""
    out_format(options.out)  # a bad extension fails before the model loads
    unit = unit_of(options.data)
    with RunModel.open(config, run, model, static_shapes=False) as rm, Sink(options, unit) as sink:
        start = time.perf_counter()  # rows/s leaves out loading the model
        progress = Progress(options.data, options.progress, f"predict {rm.name}")
        try:
            chunks = read_chunks(options.data, options.layout, options.chunk_rows)
            for chunk, rows, tokenized in prepared(chunks, rm, options.overlap):
                output_names(options.layout, chunk.id_name, rm.labels)  # no clashes
                columns = None
                if tokenized is not None:
                    probabilities = softmax(rm.logits(tokenized))
                    columns = prediction_columns(
                        chunk, rows, probabilities, rm.labels, chunk.id_name
                    )
                records = rejected(chunk, options.data, unit, chunk.id_name)
                sink.add(columns, records, len(chunk), chunk.id_name)
                progress.advance(len(chunk), chunk.bytes_read)
        finally:
            progress.close()
        sink.publish()
        return ScoreReport(
            out=options.out,
            rows=sink.scored,
            skipped=sink.policy.bad,
            seconds=time.perf_counter() - start,
            model=rm.name,
            runner=rm.runner.label,
            rejects=sink.rejects if options.bad_rows == "skip" else None,
        )

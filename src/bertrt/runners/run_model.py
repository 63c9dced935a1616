"""One of a run's models, opened once per command with everything that turns text into classes.

Every consumer of a trained run — evaluate, predict, file scoring, the demo,
serving, the bench's accuracy and end-to-end figures — needs the same things
besides the runner: the tokenizer saved with the model, the run's class
names, how the data stage built its texts (split.json's text options),
``max_length`` and the batch size. :meth:`RunModel.open` reads them once, so
no consumer climbs back to the run directory after its runner is built, and
:meth:`RunModel.text_of` is the one place a request or a row becomes the text
the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data import read_split
from bertrt.data.labels import labels_of
from bertrt.data.text import request_text
from bertrt.errors import MissingArtifactError, StaleArtifactError
from bertrt.metrics import softmax
from bertrt.modeling import clip_text, load_tokenizer
from bertrt.runners.base import Runner
from bertrt.runners.predict import TokenizedRows, predict_logits
from bertrt.runners.registry import runner_for_model, tensorrt_unavailable


def deployment_model(run: RunDir) -> str:
    """The model a user gets without ``--model``: ``trt-int8`` where its engine exists and
    TensorRT runs here; else the run's `cpu` model (cpu.json: whichever runtime calibrate
    found fastest on the CPU); else ``onnx-cpu``."""
    if run.engine("int8").is_file() and tensorrt_unavailable() is None:
        return "trt-int8"
    return "cpu" if run.cpu_choice.is_file() else "onnx-cpu"


def run_tokenizer(run: RunDir) -> Any:
    """The tokenizer saved with the merged model: the one the model was trained with."""
    if not (run.merged / "tokenizer_config.json").is_file():
        raise MissingArtifactError(
            f"{run.merged} has no tokenizer; run `bertrt train --run-dir {run.root}` first"
        )
    return load_tokenizer(run.merged)


@dataclass
class RunModel:
    """A runner with the run's tokenizer, class names and text options; a context manager
    that activates the runner."""

    name: str  # the registry name asked for (e.g. "cpu", not what cpu.json resolves to)
    runner: Runner
    tokenizer: Any
    labels: tuple[str, ...]
    code_blocks: str  # split.json's text option: how Markdown code blocks were treated
    max_length: int
    batch_size: int

    @classmethod
    def open(
        cls,
        config: Config,
        run: RunDir,
        model: str | None = None,
        *,
        stage: str = "evaluate",
        static_shapes: bool = True,
    ) -> RunModel:
        """The run's ``model`` (default: :func:`deployment_model`), checked before any row is
        read: an unknown, absent or stale model fails fast (exit 2, 3 or 4).

        ``static_shapes`` False runs a `cpu` model chosen with static shapes on dynamic ones,
        for callers that see many batch shapes (each would compile on first use).
        """
        name = model or deployment_model(run)
        runner = runner_for_model(
            run,
            name,
            threads=config.threads,
            cuda_graphs=config.engines.cuda_graphs,
            stage=stage,
            static_shapes=static_shapes,
        )
        split = read_split(run)  # class names and text options, read once
        text_options = split.get("text", {})
        return cls(
            name=name,
            runner=runner,
            tokenizer=run_tokenizer(run),
            labels=labels_of(split),
            code_blocks=str(text_options.get("code_blocks", "keep")),
            max_length=config.model.max_length,
            batch_size=config.train.eval_batch_size,
        )

    def __enter__(self) -> Self:
        self.runner.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.runner.deactivate()

    def text_of(
        self, text: str | None = None, title: str | None = None, body: str | None = None
    ) -> str:
        """The model text of one question (:func:`bertrt.data.text.request_text`) with the
        run's text options."""
        return request_text(text, title, body, self.code_blocks)

    def tokenize(self, texts: Sequence[str]) -> TokenizedRows:
        """Length-sorted batches of ``texts`` (for a caller that scores them more than once)."""
        return TokenizedRows.build(self.tokenizer, texts, self.max_length, self.batch_size)

    def logits(self, texts: Sequence[str] | TokenizedRows, progress: bool = False) -> np.ndarray:
        """Logits [rows, classes] in the caller's row order; refuses a model whose class
        count is not the run's (a model trained on another split)."""
        rows = texts if isinstance(texts, TokenizedRows) else self.tokenize(texts)
        logits = predict_logits(self.runner, rows, progress=progress, desc=self.runner.label)
        if logits.shape[1] != len(self.labels):
            raise StaleArtifactError(
                f"{self.runner.label} gives {logits.shape[1]} classes but the run names "
                f"{len(self.labels)} ({', '.join(self.labels)}); the model is from another "
                "split: rerun `bertrt train` and the stages after it"
            )
        return logits

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [rows, classes], columns in the order of :attr:`labels`."""
        return softmax(self.logits(texts))

    def truncated(self, text: str) -> bool:
        """Whether ``text`` has more tokens than the model reads (the rest is ignored)."""
        ids = self.tokenizer(clip_text(text, self.max_length + 1), truncation=False, verbose=False)[
            "input_ids"
        ]
        return len(ids) > self.max_length

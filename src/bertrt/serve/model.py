"""The inference callable Triton runs: requests in, labels and probabilities out.

One :class:`ServedModel` per Triton instance, around the run's model opened as
every command opens it (:class:`bertrt.runners.run_model.RunModel`: runner,
tokenizer, class names, text options), each with its own activated runner, so
instances never share a session. Triton's dynamic batcher hands
it the requests it gathered; their texts are tokenized in one call and
padded only to the longest row of the batch (:func:`bertrt.runners.batching.pad_rows`,
rounded up to a multiple of 8), never to ``max_length``, then split back
per request.

The answer is the model's contract: ``label`` BYTES [n, 1], the run's name
of the most probable class, and ``probabilities`` FP32 [n, classes] in
class-id order (the run's split.json names them, :func:`bertrt.data.labels.run_labels`),
whatever the number of classes the run was trained with.

Everything a client can get wrong is checked before the model runs: a bad
request gets its own error (:class:`RequestError`) and the requests batched
with it are answered (:meth:`ServedModel.answer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.config import Config, ModelConfig
from bertrt.errors import BertrtError
from bertrt.metrics import softmax
from bertrt.runners.batching import pad_rows, tokenize_unpadded
from bertrt.runners.run_model import RunModel
from bertrt.serve.texts import RequestError, TextOptions, build_texts

SETTINGS_PARAMETER = "bertrt"  # the model configuration parameter the server's stub reads
WARMUP_TEXT = "How do I read a file line by line in Python?\nI tried open() but it fails."


class ServedModel:
    """Tokenize, batch and score the requests of one dynamic batch with one opened run model."""

    def __init__(self, model: RunModel, max_request_bytes: int | None = None) -> None:
        self.model = model
        self.runner = model.runner
        self.options = TextOptions(model.code_blocks, max_request_bytes)
        self.labels = model.labels

    def activate(self) -> None:
        """Load the model and run it once, so the first client never pays for warm-up.

        The warm-up also checks the model's class count against the run's
        labels: a mismatch fails the start, not every request after it.
        """
        self.runner.activate()
        classes = self.logits([WARMUP_TEXT] * 2).shape[1]
        if classes != len(self.labels):
            raise BertrtError(
                f"{self.runner.label} has {classes} classes but the run's labels are "
                f"{list(self.labels)}; retrain (`bertrt train`) after `bertrt data`"
            )

    def deactivate(self) -> None:
        self.runner.deactivate()

    def largest_batch(self, up_to: int) -> int:
        """The largest batch, at most ``up_to``, that the active runner takes at the warm-up's
        width: a TensorRT engine's profile bounds it, other runners take any (``up_to``).

        Triton must never hand the model a batch beyond it. Asked of the runner, which
        holds the engine's profile once active, not read again from the run directory.
        """
        encoded = tokenize_unpadded(self.model.tokenizer, [WARMUP_TEXT], self.model.max_length)
        width = int(encoded.lengths.max())
        accepted = (b for b in range(up_to, 0, -1) if self.runner.accepts(b, width))
        return next(accepted, up_to)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits [n, classes] of built texts, padded to their longest row."""
        encoded = tokenize_unpadded(self.model.tokenizer, texts, self.model.max_length)
        rows = np.arange(len(texts))
        refusal = self.runner.refusal(len(texts), int(encoded.lengths.max()))
        if refusal:
            raise RequestError(f"{self.runner.label} cannot take this batch: {refusal}")
        return np.asarray(self.runner(pad_rows(encoded, rows)))

    def answer(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, np.ndarray] | RequestError]:
        """One answer per request: its outputs, or the error of a request that is malformed.

        The well-formed requests run as one batch; a malformed one fails alone.
        """
        answers: list[dict[str, np.ndarray] | RequestError | None] = []
        texts_per_request: list[list[str]] = []
        for request in requests:
            try:
                texts_per_request.append(build_texts(request, self.options))
                answers.append(None)  # filled from the batch below
            except RequestError as err:
                answers.append(err)
        if texts_per_request:
            flat = [t for texts in texts_per_request for t in texts]
            sizes = [len(t) for t in texts_per_request]
            outputs = iter(responses(self.logits(flat), sizes, self.labels))
            answers = [next(outputs) if a is None else a for a in answers]
        return [a for a in answers if a is not None]

    def __call__(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        """Every request's outputs; the first malformed request raises its error."""
        out = []
        for answer in self.answer(requests):
            if isinstance(answer, RequestError):
                raise answer
            out.append(answer)
        return out


def load_served(
    run: RunDir, model: str, threads: int, max_length: int, max_request_bytes: int | None = None
) -> ServedModel:
    """Registry model ``model`` of ``run`` as the server runs it: activated and warmed up.

    Opened as every command opens a run's model (:meth:`RunModel.open`: runner, tokenizer,
    class names and text options read once), with the instance's ``threads`` and without
    CUDA graphs. Always on dynamic shapes: a server sees every batch size and width, and a
    `cpu` model chosen with static shapes compiled each new one on first use
    (~0.5 s a shape, 500 ms stalls at every concurrency; docs/serving.md).
    """
    settings = Config(threads=threads, model=ModelConfig(max_length=max_length))
    opened = RunModel.open(settings, run, model, stage="serve", static_shapes=False)
    served = ServedModel(opened, max_request_bytes)
    served.activate()
    return served


def responses(
    logits: np.ndarray, sizes: Sequence[int], labels: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """The per-request answers to a dynamic batch's logits [sum(sizes), classes]."""
    return split_outputs(softmax(logits).astype(np.float32), sizes, labels)


def split_outputs(
    probs: np.ndarray, sizes: Sequence[int], labels: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Per-request outputs: ``label`` BYTES [n, 1], ``probabilities`` FP32 [n, classes].

    ``labels`` name the columns in class-id order; a width that differs is a
    model of another run, refused rather than answered with wrong names.
    """
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities {probs.shape} do not match the labels {list(labels)}")
    names = np.array([name.encode() for name in labels], dtype=object)
    out, start = [], 0
    for size in sizes:
        part = probs[start : start + size]
        winners = names[part.argmax(axis=1)].reshape(-1, 1)
        out.append({"label": winners, "probabilities": part})
        start += size
    return out

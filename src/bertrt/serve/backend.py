"""The served model inside Triton's Python-backend stub: ``bertrt serve``'s ``model.py``.

``bertrt serve`` writes a one-model repository whose ``model.py`` imports
:class:`TritonPythonModel` from here, so Triton's own stub process runs the
run's tokenizer and runner: a request crosses Triton → stub → model and
back, with no second process behind the stub. (PyTriton puts its own proxy
there: the stub forwards each batch over ZeroMQ to the Python process that
bound the model. On 2 cores that hop cost 2.1 ms a request against 0.5 ms
for the whole round trip of a plain Python-backend model: docs/serving.md.)

Each Triton instance is one stub process with its own activated runner.
The model's settings come in the model configuration's ``bertrt``
parameter (JSON: run directory, registry model, threads, max_length).
A malformed request gets its own error; the others in its dynamic batch
are answered.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import IO, Any

import triton_python_backend_utils as pb_utils

from bertrt.artifacts import RunDir
from bertrt.serve.model import SETTINGS_PARAMETER, ServedModel, load_served
from bertrt.serve.texts import TEXT_INPUTS, RequestError

REFUSED_METRIC = "bertrt_request_refused"
TURN_LOCK = "turn.lock"  # in the model's directory: one instance runs the model at a time


def settings(model_config: dict[str, Any]) -> dict[str, Any]:
    """The ``bertrt`` parameter of a model configuration (as Triton passes it, JSON)."""
    return dict(json.loads(model_config["parameters"][SETTINGS_PARAMETER]["string_value"]))


class TritonPythonModel:
    """Triton's Python-backend interface around one :class:`ServedModel`."""

    served: ServedModel
    refused_family: Any
    refused: Any
    turn: IO[str] | None = None  # the lock the instances share when they take turns

    def initialize(self, args: dict[str, Any]) -> None:
        """Load and warm up the model: Triton marks it ready only once this returns."""
        given = settings(json.loads(args["model_config"]))
        self.served = load_served(
            RunDir(given["run_dir"]), given["model"], int(given["threads"]), given["max_length"],
            given.get("max_request_bytes"),
        )  # fmt: skip
        if given.get("turns"):
            self.turn = open(Path(args["model_repository"]) / TURN_LOCK, "a")  # noqa: SIM115
        # The family must outlive its metric (Triton deletes the metric with it).
        self.refused_family = pb_utils.MetricFamily(
            name=REFUSED_METRIC,
            description="requests refused as the client's mistake (answered 400 / "
            "INVALID_ARGUMENT); Triton 2.51 counts them in nv_inference_request_success too",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.refused = self.refused_family.Metric(
            labels={"model": args["model_name"], "version": args["model_version"]}
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = []
        for request in requests:
            tensors = {n: pb_utils.get_input_tensor_by_name(request, n) for n in TEXT_INPUTS}
            inputs.append({n: t.as_numpy() for n, t in tensors.items() if t is not None})
        if self.turn is None:
            answers = self.served.answer(inputs)
        else:
            fcntl.flock(self.turn, fcntl.LOCK_EX)
            try:
                answers = self.served.answer(inputs)
            finally:
                fcntl.flock(self.turn, fcntl.LOCK_UN)
        refused = sum(isinstance(a, RequestError) for a in answers)
        if refused:
            self.refused.increment(refused)
        return [_response(answer) for answer in answers]

    def finalize(self) -> None:
        self.served.deactivate()
        if self.turn is not None:
            self.turn.close()


def _response(answer: Any) -> Any:
    if isinstance(answer, RequestError):
        # INVALID_ARG: the client's mistake (HTTP 400, gRPC INVALID_ARGUMENT), not a server fault
        error = pb_utils.TritonError(str(answer), pb_utils.TritonError.INVALID_ARG)
        return pb_utils.InferenceResponse(error=error)
    return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in answer.items()])

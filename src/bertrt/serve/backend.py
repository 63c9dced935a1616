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

import json
from typing import Any

import triton_python_backend_utils as pb_utils

from bertrt.artifacts import RunDir
from bertrt.serve.model import SETTINGS_PARAMETER, ServedModel, load_served
from bertrt.serve.texts import TEXT_INPUTS, RequestError


def settings(model_config: dict[str, Any]) -> dict[str, Any]:
    """The ``bertrt`` parameter of a model configuration (as Triton passes it, JSON)."""
    return dict(json.loads(model_config["parameters"][SETTINGS_PARAMETER]["string_value"]))


class TritonPythonModel:
    """Triton's Python-backend interface around one :class:`ServedModel`."""

    served: ServedModel

    def initialize(self, args: dict[str, Any]) -> None:
        """Load and warm up the model: Triton marks it ready only once this returns."""
        given = settings(json.loads(args["model_config"]))
        self.served = load_served(
            RunDir(given["run_dir"]), given["model"], int(given["threads"]), given["max_length"]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = []
        for request in requests:
            tensors = {n: pb_utils.get_input_tensor_by_name(request, n) for n in TEXT_INPUTS}
            inputs.append({n: t.as_numpy() for n, t in tensors.items() if t is not None})
        return [_response(answer) for answer in self.served.answer(inputs)]

    def finalize(self) -> None:
        self.served.deactivate()


def _response(answer: Any) -> Any:
    if isinstance(answer, RequestError):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(answer)))
    return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in answer.items()])

"""Triton's model-configuration schema, shared by both repository writers.

``bertrt serve`` (:mod:`bertrt.serve.model_config`) and ``bertrt triton-repo``
(:mod:`bertrt.serve.repo`) build every ``config.pbtxt`` as tritonclient's
``ModelConfig`` protobuf, so a field Triton does not know cannot be written.
What both need lives here, public: the schema module itself, tensor specs and
their protobuf form, and the text-in / label-and-probabilities-out contract
every served model answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bertrt.errors import UnavailableError
from bertrt.serve.texts import TEXT_INPUTS


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # TYPE_* of Triton's schema
    dims: tuple[int, ...]  # without the batch axis


def schema() -> Any:
    """tritonclient's ``model_config_pb2`` (Triton's own schema), or one line naming the install."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as err:
        raise UnavailableError(
            f"triton-repo needs tritonclient ({err}); pip install 'tritonclient[http,grpc]'"
        ) from None
    return model_config_pb2


def tensors(pb: Any, specs: list[TensorSpec], kind: str) -> list[Any]:
    """``specs`` as the schema's ``ModelInput`` (``kind`` "input") or ``ModelOutput`` messages;
    the text inputs are optional (a request sends ``text`` or ``title``/``body``)."""
    cls = pb.ModelInput if kind == "input" else pb.ModelOutput
    out = []
    for s in specs:
        tensor = cls(name=s.name, data_type=pb.DataType.Value(s.data_type), dims=list(s.dims))
        if kind == "input" and s.name in TEXT_INPUTS:
            tensor.optional = True
        out.append(tensor)
    return out


TEXT_SPECS = [TensorSpec(n, "TYPE_STRING", (1,)) for n in TEXT_INPUTS]


def out_specs(classes: int) -> list[TensorSpec]:
    """What a served model answers: the winning class's name and every class's probability."""
    return [
        TensorSpec("label", "TYPE_STRING", (1,)),
        TensorSpec("probabilities", "TYPE_FP32", (classes,)),
    ]

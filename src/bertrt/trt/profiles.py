"""Optimization-profile shapes for TensorRT, computed from the ``engines.profile`` config.

A TensorRT engine built with dynamic shapes accepts only inputs whose shape
lies between the profile's min and max, and is tuned for ``opt``. Every model
input (two or three, by architecture: the ONNX graph's, never a constant list)
shares one [batch, seq] shape, so one (batch, seq) triple pair describes the
whole profile. This module is pure Python: it is tested on the
CPU and used by the builder (to set the profile), the sidecar (to record it)
and the runtime (to refuse shapes outside it with a readable message).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertrt.config import ProfileConfig
from bertrt.errors import BertrtError, ConfigError

Shape = tuple[int, int]


class ShapeOutsideProfileError(BertrtError):
    """An input's shape is outside the engine's optimization profile."""

    exit_code = 2


@dataclass(frozen=True)
class Profile:
    """min/opt/max of batch and sequence length; one profile for every model input."""

    batch: tuple[int, int, int]
    seq: tuple[int, int, int]

    @property
    def min(self) -> Shape:
        return (self.batch[0], self.seq[0])

    @property
    def opt(self) -> Shape:
        return (self.batch[1], self.seq[1])

    @property
    def max(self) -> Shape:
        return (self.batch[2], self.seq[2])

    def input_shapes(self, input_names: Sequence[str]) -> dict[str, tuple[Shape, Shape, Shape]]:
        """What ``IOptimizationProfile.set_shape`` receives, per input of the network.

        ``input_names`` are the network's (parsed from the ONNX graph), so a
        model without ``token_type_ids`` gets no profile entry for one.
        """
        if not input_names:
            raise ValueError("a profile needs the network's input names; got none")
        return {name: (self.min, self.opt, self.max) for name in input_names}

    def contains(self, shape: tuple[int, ...]) -> bool:
        return (
            len(shape) == 2
            and self.batch[0] <= shape[0] <= self.batch[2]
            and self.seq[0] <= shape[1] <= self.seq[2]
        )

    def check(self, name: str, shape: tuple[int, ...], engine: str = "engine") -> None:
        """Raise :class:`ShapeOutsideProfileError` naming the input, its shape and the bounds."""
        if not self.contains(shape):
            raise ShapeOutsideProfileError(
                f"{engine}: input {name!r} has shape {list(shape)}, outside the engine's "
                f"profile batch {self.batch[0]}..{self.batch[2]} x seq {self.seq[0]}..{self.seq[2]}; "
                "truncate/split the batch, or rebuild with wider engines.profile.batch/seq"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"batch": list(self.batch), "seq": list(self.seq)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        return cls(batch=_triple(data["batch"]), seq=_triple(data["seq"]))


def _triple(values: Any) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in values)
    return (a, b, c)


def _validate_axis(values: list[int], key: str, upper: int | None, upper_what: str) -> None:
    if len(values) != 3:
        raise ConfigError(f"{key}={values}: expected three numbers [min, opt, max]")
    lo, opt, hi = values
    if lo < 1:
        raise ConfigError(f"{key}={values}: min must be at least 1")
    if not lo <= opt <= hi:
        raise ConfigError(f"{key}={values}: need min <= opt <= max")
    if upper is not None and hi > upper:
        raise ConfigError(f"{key}={values}: max {hi} exceeds {upper_what} ({upper})")


def build_profile(config: ProfileConfig, max_positions: int | None = None) -> Profile:
    """Validate ``engines.profile`` and return the profile; errors name the config key.

    ``max_positions`` is the model's ``max_position_embeddings``: a longer
    sequence would index past the position-embedding table.
    """
    _validate_axis(list(config.batch), "engines.profile.batch", None, "")
    _validate_axis(
        list(config.seq),
        "engines.profile.seq",
        max_positions,
        "the model's max_position_embeddings",
    )
    return Profile(batch=_triple(config.batch), seq=_triple(config.seq))


def max_positions_of(model_dir: Path) -> int | None:
    """``max_position_embeddings`` from a Hugging Face ``config.json``, or None when absent."""
    path = model_dir / "config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("max_position_embeddings")
    return int(value) if value is not None else None

"""Train stage: presets per architecture (peft), training (transformers Trainer), merge and verification."""

from bertrt.trainer.presets import (
    ARCHITECTURES,
    PRESETS,
    Architecture,
    Preset,
    architecture_for,
    get_preset,
    resolve_preset,
)

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "Architecture",
    "Preset",
    "architecture_for",
    "get_preset",
    "resolve_preset",
]

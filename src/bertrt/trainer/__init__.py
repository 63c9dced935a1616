"""Train stage: LoRA presets (peft), training (transformers Trainer), merge and verification."""

from bertrt.trainer.presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "Preset", "get_preset"]

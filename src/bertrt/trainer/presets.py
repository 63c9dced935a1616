"""LoRA presets of the reference project's table, declared once.

Each preset names which linear layers of BERT get a LoRA adapter. The
classifier head is always trained in full (peft's ``SEQ_CLS`` task puts it in
``modules_to_save``); ``full`` trains every weight and has no adapter at all.
Targets are one regular expression over module names, so "only the last four
encoder layers" needs no extra mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass

from bertrt.errors import ConfigError

# Module names inside BertForSequenceClassification (``bert.encoder.layer.N....``).
_ATTENTION_QV = r"attention\.self\.(query|value)"
# `output.dense` right after the layer index is the FFN's second projection
# (encoder.layer.N.output.dense), not attention.output.dense: target_regex puts
# the alternation directly after `encoder.layer.N.` and peft full-matches it.
_FFN = r"intermediate\.dense|output\.dense"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    rank: int = 0  # 0 = no LoRA (full fine-tuning)
    alpha: int = 0
    modules: str = ""  # alternation of module-name patterns below ``encoder.layer.N.``
    last_layers: int | None = None  # only the last N encoder layers; None = all

    @property
    def is_lora(self) -> bool:
        return self.rank > 0

    def target_regex(self, num_layers: int) -> str:
        """peft ``target_modules`` as a regex (peft full-matches it against module names)."""
        first = 0 if self.last_layers is None else max(0, num_layers - self.last_layers)
        layers = "|".join(str(i) for i in range(first, num_layers))
        return rf".*encoder\.layer\.({layers})\.({self.modules})"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("lora-r1", "LoRA r=1 on query and value", rank=1, alpha=2, modules=_ATTENTION_QV),
        Preset("lora-r8", "LoRA r=8 on query and value", rank=8, alpha=16, modules=_ATTENTION_QV),
        Preset(
            "lora-r8-last4",
            "LoRA r=8 on query and value of the last 4 encoder layers",
            rank=8,
            alpha=16,
            modules=_ATTENTION_QV,
            last_layers=4,
        ),
        Preset(
            "lora-r8-ffn",
            "LoRA r=8 on query, value and the feed-forward dense layers",
            rank=8,
            alpha=16,
            modules=f"{_ATTENTION_QV}|{_FFN}",
        ),
        Preset("full", "full fine-tuning (every weight; no adapter)"),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"train.preset={name!r} is not a preset; valid presets: {', '.join(PRESETS)}"
        ) from None

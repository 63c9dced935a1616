"""Training presets and the encoder architectures they apply to, declared once.

A preset says *what* is trained: a LoRA adapter on some roles of each encoder
layer (query, key, value, the feed-forward pair), only the classification
head (``head-only``), or every weight (``full``). An :class:`Architecture`
says *where* one encoder family keeps those roles: peft's module names differ
between BERT (``encoder.layer.N.attention.self.query``) and DistilBERT
(``transformer.layer.N.attention.q_lin``), and so do the classification heads.
Keeping the two apart means a new preset works on every architecture and a
new architecture gets every preset.

LoRA targets are one regular expression over module names (peft full-matches
it), so "only the last four encoder layers" needs no extra mechanism. The
classification head is always trained in full: under LoRA it goes into peft's
``modules_to_save``; ``head-only`` unfreezes it and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from bertrt.errors import ConfigError

# The roles a preset may put LoRA on; every architecture maps each to its module name.
ROLES = ("query", "key", "value", "ffn_in", "ffn_out")
_ROLE_WORDS = {
    "query": "query",
    "key": "key",
    "value": "value",
    "ffn_in": "FFN in",
    "ffn_out": "FFN out",
}


@dataclass(frozen=True)
class Architecture:
    """Where one encoder family keeps what presets train (peft module names)."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values of this family
    layers: str  # regex of the layer list; layer N's modules follow `<layers>.N.`
    roles: tuple[tuple[str, str], ...]  # (role, regex below layer N), one per ROLES entry
    head: tuple[str, ...]  # top-level modules of the classification head

    def role_pattern(self, role: str) -> str:
        return dict(self.roles)[role]


# BERT, RoBERTa (and XLM-R) and ELECTRA share BERT's layer code. `output.dense`
# right after the layer index is the FFN's second projection
# (encoder.layer.N.output.dense), not attention.output.dense: the alternation
# comes directly after `encoder.layer.N.` and peft full-matches the regex.
_BERT_ROLES = (
    ("query", r"attention\.self\.query"),
    ("key", r"attention\.self\.key"),
    ("value", r"attention\.self\.value"),
    ("ffn_in", r"intermediate\.dense"),
    ("ffn_out", r"output\.dense"),
)
ARCHITECTURES: tuple[Architecture, ...] = (
    # BERT's pooler belongs to the encoder (bert.pooler): frozen like it.
    Architecture("BERT", ("bert",), r"encoder\.layer", _BERT_ROLES, ("classifier",)),
    Architecture(
        "DistilBERT",
        ("distilbert",),
        r"transformer\.layer",
        (
            ("query", r"attention\.q_lin"),
            ("key", r"attention\.k_lin"),
            ("value", r"attention\.v_lin"),
            ("ffn_in", r"ffn\.lin1"),
            ("ffn_out", r"ffn\.lin2"),
        ),
        # The head is pre_classifier (dim x dim) + classifier; both are trained.
        ("pre_classifier", "classifier"),
    ),
    # `classifier` is a head module of its own here (classifier.dense + classifier.out_proj).
    Architecture(
        "RoBERTa", ("roberta", "xlm-roberta"), r"encoder\.layer", _BERT_ROLES, ("classifier",)
    ),
    Architecture("ELECTRA", ("electra",), r"encoder\.layer", _BERT_ROLES, ("classifier",)),
)


def supported_architectures() -> str:
    return ", ".join(f"{a.name} ({', '.join(a.model_types)})" for a in ARCHITECTURES)


def architecture_for(model_type: str, base: str = "?") -> Architecture:
    """The family of ``model_type``; anything else stops before training with the list."""
    for architecture in ARCHITECTURES:
        if model_type in architecture.model_types:
            return architecture
    raise ConfigError(
        f"model.base={base!r} is a {model_type!r} model; the trainer supports the BERT family: "
        f"{supported_architectures()}"
    )


BERT = ARCHITECTURES[0]
_QV = ("query", "value")


@dataclass(frozen=True)
class Preset:
    name: str
    trains: Literal["lora", "head", "full"] = "lora"
    rank: int = 0  # LoRA only
    alpha: int = 0
    roles: tuple[str, ...] = ()  # which ROLES of each encoder layer get LoRA
    last_layers: int | None = None  # only the last N encoder layers; None = all
    quantized: bool = False  # QLoRA: the frozen base held in 4-bit NF4 (bertrt.trainer.qlora)

    @property
    def is_lora(self) -> bool:
        return self.trains == "lora"

    @property
    def description(self) -> str:
        """Derived from the fields, so a train.lora_rank override shows in every table."""
        if self.trains == "head":
            return "classification head only (encoder frozen; no adapter)"
        if self.trains == "full":
            return "full fine-tuning (every weight; no adapter)"
        where = ", ".join(_ROLE_WORDS[r] for r in self.roles)
        layers = f" of the last {self.last_layers} layers" if self.last_layers else ""
        base = " over a 4-bit NF4 base (QLoRA)" if self.quantized else ""
        return f"LoRA r={self.rank}, alpha {self.alpha} on {where}{layers}{base}"

    def target_regex(self, num_layers: int, architecture: Architecture) -> str:
        """peft ``target_modules`` as a regex (peft full-matches it against module names)."""
        first = 0 if self.last_layers is None else max(0, num_layers - self.last_layers)
        layers = "|".join(str(i) for i in range(first, num_layers))
        modules = "|".join(architecture.role_pattern(r) for r in self.roles)
        return rf".*{architecture.layers}\.({layers})\.({modules})"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("lora-r1", rank=1, alpha=2, roles=_QV),
        Preset("lora-r8", rank=8, alpha=16, roles=_QV),
        Preset("lora-r8-last4", rank=8, alpha=16, roles=_QV, last_layers=4),
        Preset("lora-r8-ffn", rank=8, alpha=16, roles=(*_QV, "ffn_in", "ffn_out")),
        Preset("lora-qkv", rank=8, alpha=16, roles=("query", "key", "value")),
        # lora-r8-ffn's adapter over a base loaded in 4-bit NF4 with double quantization.
        Preset("qlora", rank=8, alpha=16, roles=(*_QV, "ffn_in", "ffn_out"), quantized=True),
        Preset("head-only", trains="head"),
        Preset("full", trains="full"),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"train.preset={name!r} is not a preset; valid presets: {', '.join(PRESETS)}"
        ) from None


def resolve_preset(name: str, lora_rank: int | None, lora_alpha: int | None) -> Preset:
    """The preset with ``train.lora_rank`` / ``train.lora_alpha`` laid over its own r and alpha.

    They only mean something for a LoRA preset; on ``head-only`` or ``full``
    a value is a mistake the user should hear about, not a silent no-op.
    """
    preset = get_preset(name)
    given = {"lora_rank": lora_rank, "lora_alpha": lora_alpha}
    for key, value in given.items():
        if value is None:
            continue
        if not preset.is_lora:
            lora = ", ".join(p.name for p in PRESETS.values() if p.is_lora)
            raise ConfigError(
                f"train.{key}={value}: preset {name!r} has no LoRA adapter; "
                f"unset it or pick a LoRA preset ({lora})"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train.{key}={value!r}: must be a positive integer")
    return dataclasses.replace(
        preset,
        rank=preset.rank if lora_rank is None else lora_rank,
        alpha=preset.alpha if lora_alpha is None else lora_alpha,
    )

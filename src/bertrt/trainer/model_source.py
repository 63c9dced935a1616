"""What `bertrt import` was pointed at: a saved classifier, a hub id, or a peft LoRA adapter.

Everything here is decided from the source's JSON files and weight file
names, before any weight is loaded, so a source the pipeline cannot take
(another architecture, no classification head, pickle-only weights the user
has not said they trust) stops with one line and nothing written.

Pickle (``pytorch_model.bin``) can run code when it is loaded; safetensors
cannot. A source with only pickle weights is refused unless ``--trust-pickle``
says the user trusts whoever wrote it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bertrt.artifacts import sha256_file
from bertrt.errors import ConfigError, DataError, UnavailableError
from bertrt.modeling import resolve_base_model
from bertrt.trainer.hub import from_pretrained
from bertrt.trainer.presets import ARCHITECTURES, supported_architectures

ADAPTER_CONFIG = "adapter_config.json"
# Weight files by kind: (safetensors names, pickle names); an index names shards.
MODEL_WEIGHTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
ADAPTER_WEIGHTS = (("adapter_model.safetensors",), ("adapter_model.bin",))
_GENERIC_LABEL = re.compile(r"LABEL_[0-9]+")
# The last linear layer of each supported head as peft saves it (modules_to_save):
# classifier.weight (BERT, DistilBERT), classifier.out_proj.weight (RoBERTa, ELECTRA).
_HEAD_OUT = re.compile(r"(?:^|\.)classifier(?:\.out_proj)?\.weight$")
SUPPORTED_TYPES = frozenset(t for a in ARCHITECTURES for t in a.model_types)


@dataclass(frozen=True)
class ModelSource:
    """A source, resolved to a local directory and checked; nothing loaded yet."""

    given: str  # what the user passed (path or hub id)
    kind: Literal["directory", "hub", "adapter"]
    path: Path  # the directory holding it (hub: the cached snapshot)
    model_type: str  # of the model, or of an adapter's base
    labels: tuple[str, ...]  # id2label in id order (an adapter: LABEL_i)
    weights: dict[str, str]  # weight file -> sha256
    pickle: bool = False  # weights are pickle (allowed by --trust-pickle)
    revision: str | None = None  # hub: the snapshot's commit
    base: str | None = None  # adapter: its base, as adapter_config.json names it
    facts: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What the manifest keeps about the source."""
        return {
            "source": self.given,
            "kind": self.kind,
            "path": str(self.path),
            "revision": self.revision,
            "model_type": self.model_type,
            "base": self.base,
            "weights_sha256": self.weights,
            "pickle": self.pickle,
            **self.facts,
        }


def resolve_source(given: str, revision: str | None, trust_pickle: bool) -> ModelSource:
    """A local directory (model or adapter) or a hub id, checked as the module says."""
    local = Path(given).expanduser()
    if local.is_dir():
        if (local / ADAPTER_CONFIG).is_file():
            return _adapter(given, local, trust_pickle)
        return _model(given, local, "directory", None, trust_pickle)
    if local.exists():
        raise DataError(f"import: {given} is a file; pass the directory save_pretrained wrote")
    path, commit = _hub_snapshot(given, revision)
    if (path / ADAPTER_CONFIG).is_file():
        raise ConfigError(
            f"import: hub id {given} is a peft adapter; download it (`hf download {given} "
            "--local-dir DIR`) and import the directory"
        )
    return _model(given, path, "hub", commit, trust_pickle)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"import: {path.parent} has no {path.name}: not a saved model") from err
    except (OSError, ValueError) as err:
        raise DataError(f"import: {path}: not readable JSON ({err})") from err
    if not isinstance(document, dict):
        raise DataError(f"import: {path}: not a JSON object")
    return document


def _check_type(given: str, model_type: str, what: str) -> None:
    if model_type not in SUPPORTED_TYPES:
        raise ConfigError(
            f"import: {given} is {what} of architecture {model_type!r}; bertrt supports "
            f"{supported_architectures()}"
        )


def _model(
    given: str, path: Path, kind: Literal["directory", "hub"], commit: str | None, trust: bool
) -> ModelSource:
    """A saved ``*ForSequenceClassification`` with its tokenizer."""
    config = _read_json(path / "config.json")
    model_type = str(config.get("model_type", "?"))
    classes = [str(a) for a in config.get("architectures") or []]
    _check_type(given, model_type, f"a {'/'.join(classes) or 'model'}")
    if not any(c.endswith("ForSequenceClassification") for c in classes):
        raise ConfigError(
            f"import: {given} is a {'/'.join(classes) or model_type} without a sequence "
            "classification head (config.json architectures has no *ForSequenceClassification); "
            "fine-tune it with `bertrt train --set model.base=...` instead"
        )
    _require_tokenizer(given, path)
    weights, pickle = _weights(given, path, MODEL_WEIGHTS, trust)
    id2label = config.get("id2label") or {}
    count = int(config.get("num_labels") or len(id2label) or 2)
    labels = tuple(str(id2label.get(str(i), f"LABEL_{i}")) for i in range(count))
    return ModelSource(given, kind, path, model_type, labels, weights, pickle, commit)


def _adapter(given: str, path: Path, trust: bool) -> ModelSource:
    """A peft LoRA adapter for sequence classification; its base resolved like model.base."""
    from transformers import AutoConfig

    document = _read_json(path / ADAPTER_CONFIG)
    task = document.get("task_type")
    if task != "SEQ_CLS":
        raise ConfigError(
            f"import: {given} is a peft adapter for task {task!r}; bertrt imports "
            "sequence-classification adapters (task_type SEQ_CLS)"
        )
    base = str(document.get("base_model_name_or_path") or "")
    if not base:
        raise DataError(f"import: {path / ADAPTER_CONFIG} names no base_model_name_or_path")
    base_config = from_pretrained(AutoConfig, base, resolve_base_model(base))
    _check_type(given, str(base_config.model_type), f"an adapter whose base {base!r} is")
    weights, pickle = _weights(given, path, ADAPTER_WEIGHTS, trust)
    count = _adapter_classes(path, weights) or int(base_config.num_labels)
    labels = tuple(f"LABEL_{i}" for i in range(count))
    tokenizer = "adapter" if _has_tokenizer(path) else "base"
    return ModelSource(
        given,
        "adapter",
        path,
        str(base_config.model_type),
        labels,
        weights,
        pickle,
        base=base,
        facts={"tokenizer": tokenizer},
    )


def _adapter_classes(path: Path, weights: dict[str, str]) -> int | None:
    """The class count of the head an adapter saves (modules_to_save), read from safetensors;
    None where it saves none (the base's own head is used)."""
    name = next((n for n in weights if n.endswith(".safetensors")), None)
    if name is None:
        return None
    from safetensors import safe_open

    with safe_open(str(path / name), framework="np") as tensors:
        for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if _HEAD_OUT.search(key):
                return int(tensors.get_slice(key).get_shape()[0])
    return None


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file()


def _require_tokenizer(given: str, path: Path) -> None:
    if not _has_tokenizer(path):
        raise DataError(
            f"import: {given} has no tokenizer (tokenizer_config.json); save it beside the "
            "model with tokenizer.save_pretrained(DIR)"
        )


def _weights(
    given: str, path: Path, names: tuple[tuple[str, ...], ...], trust: bool
) -> tuple[dict[str, str], bool]:
    """The weight files and their sha256; pickle only with ``trust``."""
    safe, pickled = names
    for candidates, is_pickle in ((safe, False), (pickled, True)):
        files = _weight_files(path, candidates)
        if not files:
            continue
        if is_pickle and not trust:
            raise ConfigError(
                f"import: {given} has only pickle weights ({files[0]}), which can run code when "
                "loaded; convert them to safetensors, or pass --trust-pickle if you trust "
                "whoever wrote them"
            )
        return {name: sha256_file(path / name) for name in files}, is_pickle
    raise DataError(f"import: {given} has no weights ({', '.join(safe + pickled)})")


def _weight_files(path: Path, candidates: tuple[str, ...]) -> list[str]:
    """The single weight file, or an index and the shards it names."""
    for name in candidates:
        if not (path / name).is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(_read_json(path / name).get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise DataError(f"import: {path / name} names {missing[0]}, which is absent")
            return [name, *shards]
        return [name]
    return []


def _hub_snapshot(repo_id: str, revision: str | None) -> tuple[Path, str]:
    """The hub model's files, from the cache or the hub, and the commit they are at."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision))
    except HFValidationError as err:
        raise DataError(
            f"import: {repo_id}: no such directory, and not a hub id (namespace/name)"
        ) from err
    except Exception as err:  # huggingface_hub raises many kinds: one line for each
        cause = " ".join(str(err).split())[:160]
        raise UnavailableError(
            f"import: {repo_id}: no local directory of that name, and the hub model could not "
            f"be fetched ({type(err).__name__}: {cause}); where a hub is reachable run "
            f"`hf download {repo_id} --local-dir DIR`, then --model DIR"
        ) from err
    return folder, folder.name


def final_labels(source: ModelSource, renamed: list[str] | None) -> tuple[str, ...]:
    """The model's classes, or ``--labels`` in their place (same count, distinct, printable)."""
    if not renamed:
        return source.labels
    names = tuple(name.strip() for name in renamed)
    if len(names) != len(source.labels):
        raise ConfigError(
            f"import: --labels names {len(names)} classes but {source.given} has "
            f"{len(source.labels)} ({', '.join(source.labels)})"
        )
    bad = next((n for n in names if not n or not n.isprintable()), None)
    if bad is not None or len(set(names)) != len(names):
        raise ConfigError(
            f"import: --labels {','.join(names)}: names must be distinct and printable"
        )
    return names


def generic_labels(labels: tuple[str, ...]) -> bool:
    """Whether the names say nothing (``LABEL_0``...): transformers' defaults."""
    return all(_GENERIC_LABEL.fullmatch(name) for name in labels)

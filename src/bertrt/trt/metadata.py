"""The sidecar ``engines/<precision>.json``: what built an engine, and whether it can run here.

A serialized TensorRT engine is tied to the TensorRT version that built it
and to the GPU model it was tuned for; deserializing it elsewhere fails with
an opaque error or, worse, runs with kernels tuned for another GPU. The
sidecar records both, and :func:`check_engine_compatible` (pure, tested on the
CPU) turns a mismatch into one clear message that says to rebuild.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bertrt.artifacts import read_json, write_json
from bertrt.errors import MissingArtifactError, StaleArtifactError
from bertrt.trt.profiles import Profile

SCHEMA = 1


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "9.0"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuInfo:
        return cls(name=str(data["name"]), compute_capability=str(data["compute_capability"]))


@dataclass
class EngineMeta:
    precision: str
    tensorrt_version: str
    gpu: GpuInfo
    profile: Profile
    onnx_file: str  # relative to the run dir
    onnx_sha256: str
    build_s: float
    # The engine's input tensors, in order: the ONNX graph's (the model's own; no
    # token_type_ids for DistilBERT/RoBERTa). Empty in sidecars written before it was kept.
    inputs: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    io: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {mode, dtype}
    layer_precisions: dict[str, int] = field(default_factory=dict)
    built_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = self.profile.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineMeta:
        fields = dict(data)
        fields["gpu"] = GpuInfo.from_dict(data["gpu"])
        fields["profile"] = Profile.from_dict(data["profile"])
        return cls(**fields)


def write_meta(path: Path, meta: EngineMeta) -> None:
    write_json(path, meta.to_dict())


def read_meta(path: Path) -> EngineMeta:
    if not path.is_file():
        raise MissingArtifactError(
            f"{path} does not exist: the engine has no sidecar; rebuild it with "
            f"`bertrt build-engine --run-dir {path.parent.parent}`"
        )
    try:
        return EngineMeta.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError) as err:
        raise StaleArtifactError(
            f"{path} is not a sidecar this version of bertrt understands ({err}); rebuild with "
            f"`bertrt build-engine --run-dir {path.parent.parent}`"
        ) from err


def check_engine_compatible(
    meta: EngineMeta, current_trt_version: str, current_gpu: GpuInfo, where: str = "engine"
) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU.

    TensorRT engines are not portable across TensorRT versions (unless built
    version-compatible, which we do not) nor across GPU models; the message
    says what differs and how to rebuild.
    """
    problems = []
    if meta.tensorrt_version != current_trt_version:
        problems.append(
            f"built with TensorRT {meta.tensorrt_version}, this machine has {current_trt_version}"
        )
    if meta.gpu.compute_capability != current_gpu.compute_capability:
        problems.append(
            f"built for compute capability {meta.gpu.compute_capability} ({meta.gpu.name}), "
            f"this GPU is {current_gpu.compute_capability} ({current_gpu.name})"
        )
    elif meta.gpu.name != current_gpu.name:
        problems.append(f"built on {meta.gpu.name}, this GPU is {current_gpu.name}")
    if problems:
        raise StaleArtifactError(
            f"{where}: {'; '.join(problems)}. Rebuild it here: `bertrt build-engine "
            f"--precision {meta.precision} --run-dir <run dir>`"
        )

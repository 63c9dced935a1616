"""The CPU deployment model's candidates that calibrate builds, and those the run has already.

The Q/DQ model TensorRT wants (signed int8 activations) is slow on ONNX
Runtime's CPU provider: only half its MatMuls map to int8 kernels
(docs/findings.md, "INT8 with ONNX Runtime's quantizer"). So the CPU gets its
own model, chosen (:mod:`bertrt.cpu_choice`) among:

* ``dynamic-int8-opt``: dynamic int8 (weights int8, activations quantized at
  run time) on the fused graph (model.opt.onnx);
* ``dynamic-int8``: the same on the plain fp32 graph;
* ``static-u8s8``: calibrated static Q/DQ with unsigned activations (U8S8, the
  form ORT's CPU kernels fuse), MatMul/Gemm inputs only;
* ``static-u8s8-folded``: the same, optimized offline by ORT with the bias
  Adds and attention scale folded into its int8 matmuls (:mod:`cpu_graph`);
* ``fp32-opt``: the fused fp32 graph, the fallback that is always in budget;

(the fastest of these ONNX Runtime graphs is published as onnx/model.cpu.onnx,
``onnx-cpu``) and, run by OpenVINO's CPU plugin (bf16 where the CPU has it
natively, which on Intel CPUs with AMX beats every ONNX Runtime graph;
docs/findings.md, "Other runtimes"):

* ``openvino-fp32``: the exported model.onnx as it is (``ov-fp32``);
* ``openvino-nncf-int8``: NNCF's int8 IR, calibrated on the same rows (``ov-int8``);
* ``openvino-qdq``: the Q/DQ model.int8.onnx calibrated for TensorRT (``ov-qdq``);
* ``openvino-qdq-static``: the same, compiled per input shape (static shapes:
  1.38x OpenVINO's defaults at batch 32 on the Xeon with AMX, docs/findings.md);

and every model a runtime offers as it is (:attr:`bertrt.runners.spec.Runtime.cpu_candidates`,
e.g. PyTorch's dynamic INT8), named by its registry name.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.calibration.cpu_graph import optimize_for_ort_cpu
from bertrt.calibration.openvino_int8 import quantize_nncf
from bertrt.calibration.quantize import quantize_qdq, quiet_ort
from bertrt.cpu_choice.candidate import CandidateSpec
from bertrt.errors import ConfigError
from bertrt.modeling import Batch
from bertrt.runners.registry import MODELS, RUNTIMES, runtime_of
from bertrt.runners.spec import CpuOffer

log = logging.getLogger(__name__)

# The candidates calibrate builds, in the order they are scored; all but those in
# NOT_BY_DEFAULT are tried by default.
BUILT_CANDIDATES = (
    "dynamic-int8-opt",
    "dynamic-int8",
    "static-u8s8",
    "static-u8s8-folded",
    "fp32-opt",
    "openvino-fp32",
    "openvino-nncf-int8",
    "openvino-qdq",
    "openvino-qdq-static",
)
# dynamic-int8-opt never won anywhere measured; torch-compile costs about a minute of
# compiling and ran 1.05-1.15x PyTorch fp32 eager on the 2-core Xeon, several times
# slower than the run's cpu model (docs/runtimes.md): a candidate to add by hand.
NOT_BY_DEFAULT = {"dynamic-int8-opt", "torch-compile"}


def offered_candidates() -> dict[str, CpuOffer]:
    """The registry models runtimes offer the choice as they are (e.g. ``torch-int8``),
    by candidate name."""
    return {offer.name: offer for rt in RUNTIMES for offer in rt.cpu_candidates}


def known_candidates() -> tuple[str, ...]:
    return (*BUILT_CANDIDATES, *offered_candidates())


def default_candidates() -> list[str]:
    """What ``calibration.cpu_candidates`` unset means: every known candidate but the few
    that never won anywhere measured."""
    return [name for name in known_candidates() if name not in NOT_BY_DEFAULT]


def quantize_dynamic_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 of MatMul/Gemm (and the fused Attention in the optimized graph)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_ort():
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=False,
            weight_type=QuantType.QInt8,
            # Needed on the fused graph, whose contrib ops have no type info
            # (docs/findings.md, "INT8 with ONNX Runtime's quantizer").
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@dataclass(frozen=True)
class CandidateInputs:
    """The files and rows the candidates are made from."""

    run: RunDir
    prepared: Path  # model.onnx after ORT's quantization pre-processing
    qdq: Path  # the Q/DQ int8 model chosen for TensorRT (staged)
    calibration: Sequence[Batch]  # training batches, for NNCF
    nncf_ir: Path  # where the NNCF IR is written (published as openvino/model.int8.xml)


def build_candidates(
    names: Sequence[str] | None,
    inputs: CandidateInputs,
    u8_ranges: Callable[[], Any],
    workdir: Path,
) -> list[CandidateSpec]:
    """The named candidates (None: :func:`default_candidates`); ``u8_ranges`` calibrates
    lazily. Those of a runtime not installed here are left out, with a warning."""
    names = default_candidates() if names is None else list(names)
    unknown = sorted(set(names) - set(known_candidates()))
    if unknown:
        raise ConfigError(
            f"calibration.cpu_candidates: unknown {unknown}; choose from {list(known_candidates())}"
        )
    specs = [_built(name, inputs, u8_ranges, workdir) for name in names if name in BUILT_CANDIDATES]
    offers = offered_candidates()
    offered = (_offered(offers[n], inputs.run) for n in names if n not in BUILT_CANDIDATES)
    specs += [spec for spec in offered if spec is not None]
    kept = []
    for spec in specs:
        if missing := runtime_of(spec.model).unavailable():
            log.warning("calibrate: CPU candidate %s skipped: %s", spec.name, missing)
        else:
            kept.append(spec)
    return kept


def _offered(offer: CpuOffer, run: RunDir) -> CandidateSpec | None:
    """A registry model as it is; None, logged, when the stage that writes it has not run
    (e.g. ``bertrt qat``: an optional stage)."""
    model = MODELS[offer.model]
    path = model.model_file(run)
    if not path.exists():
        log.info("calibrate: CPU candidate %s left out: %s missing (`bertrt %s`)",
                 offer.name, path, model.producer)  # fmt: skip
        return None
    return CandidateSpec(
        offer.name, path.name, model, path, static_shapes=offer.static_shapes, offered=True
    )


def _built(
    name: str, inputs: CandidateInputs, u8_ranges: Callable[[], Any], workdir: Path
) -> CandidateSpec:
    fp32, opt = inputs.run.onnx("fp32"), inputs.run.onnx("opt")
    if name == "openvino-fp32":
        return CandidateSpec(name, "model.onnx", MODELS["ov-fp32"], fp32)
    if name in ("openvino-qdq", "openvino-qdq-static"):
        static = name.endswith("-static")
        return CandidateSpec(name, "model.int8.onnx", MODELS["ov-qdq"], inputs.qdq, None, static)
    if name == "openvino-nncf-int8":
        build_ir = functools.partial(quantize_nncf, fp32, inputs.calibration, inputs.nncf_ir)
        return CandidateSpec(name, "model.onnx", MODELS["ov-int8"], inputs.nncf_ir, build_ir)

    def static_u8s8(path: Path) -> None:
        quantize_qdq(inputs.prepared, u8_ranges(), path, activation_signed=False)

    def folded(path: Path) -> dict[str, int]:
        plain = workdir / "cpu-static-u8s8.onnx"
        if not plain.is_file():  # not among the candidates: build it here
            static_u8s8(plain)
        return dataclasses.asdict(optimize_for_ort_cpu(plain, path))

    builders: dict[str, tuple[str, Callable[[Path], object]]] = {
        "dynamic-int8-opt": ("model.opt.onnx", lambda p: quantize_dynamic_int8(opt, p)),
        "dynamic-int8": ("model.onnx", lambda p: quantize_dynamic_int8(fp32, p)),
        "static-u8s8": ("model.onnx", static_u8s8),
        "static-u8s8-folded": ("model.onnx", folded),
        "fp32-opt": ("model.opt.onnx", lambda p: shutil.copyfile(opt, p)),
    }
    source, build = builders[name]
    path = workdir / f"cpu-{name}.onnx"
    model = MODELS["onnx-cpu"]
    return CandidateSpec(
        name, source, model, path, functools.partial(build, path), published_if_best_of_runtime=True
    )

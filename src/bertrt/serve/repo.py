"""``bertrt triton-repo``: a model repository NVIDIA's ``tritonserver`` container serves as is.

Four models, the ensemble ``bertrt`` being the one clients call::

    bertrt (ensemble)  text | title, body ─► tokenizer ─► classifier ─► postprocess ─► label, probabilities
    tokenizer          Python backend: the run's tokenizer.json + the data stage's text builder
    classifier         onnxruntime on an ONNX model (CPU, or with the TensorRT accelerator
                       on a GPU), Triton's openvino backend on an OpenVINO model (model.onnx or
                       the NNCF IR), or tensorrt_plan on engines/<p>.plan; `cpu` is the model
                       cpu.json names
    postprocess        Python backend: softmax, label names

Every config.pbtxt is built as tritonclient's ``ModelConfig`` protobuf (Triton's
own schema) and printed with ``text_format``, so a field Triton does not know
cannot be written. Names, dtypes and dims come from the ONNX graph or the
engine sidecar, not from constants: the classifier's inputs are the model's
own (no ``token_type_ids`` for DistilBERT or RoBERTa) and the tokenizer model
emits exactly those. The number of classes and their names are the run's
(:func:`bertrt.data.labels.run_labels`): ``probabilities`` is [classes] and
the postprocess model's labels.json lists them in class-id order. The
repository is built in a temporary directory beside ``--out`` and renamed
into place: a failed run leaves the previous repository or none.

``--out`` must be new, empty, or a repository this command wrote before
(it holds :data:`REPO_MARKER`); anything else is refused and nothing is
deleted. The repository gets the umask's mode (a temporary directory is
0700, which the container's non-root user could not read) and a README with
the ``docker run`` line that serves it.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data import text as text_module
from bertrt.data.labels import run_labels
from bertrt.errors import ConfigError, StaleArtifactError
from bertrt.modeling import OUTPUT_NAME, load_onnx, load_tokenizer
from bertrt.runners import batching
from bertrt.runners.identity import Precision
from bertrt.runners.registry import MODEL_NAMES, MODELS, resolve, runtime_of
from bertrt.runners.spec import ModelSpec, TritonServing
from bertrt.serve.options import RepoOptions
from bertrt.serve.texts import TEXT_INPUTS, TextOptions
from bertrt.serve.triton_schema import TEXT_SPECS, TensorSpec, out_specs, schema, tensors
from bertrt.trt.metadata import read_meta

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ONNX_DTYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 6: "TYPE_INT32", 10: "TYPE_FP16"}
TRT_DTYPES = {"FLOAT": "TYPE_FP32", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32"}


def onnx_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX graph, batch axis dropped, dynamic axes as -1."""
    graph = load_onnx(path, load_weights=False).graph

    def spec(value: Any) -> TensorSpec:
        dims = [
            d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
        ]
        return TensorSpec(
            value.name, ONNX_DTYPES[value.type.tensor_type.elem_type], tuple(dims[1:])
        )

    initializers = {i.name for i in graph.initializer}
    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def _trt_type(io: dict[str, Any], default: str) -> str:
    return TRT_DTYPES.get(str(io.get("dtype", default)).split(".")[-1], f"TYPE_{default}")


def engine_io(
    run: RunDir, precision: str, classes: int
) -> tuple[list[TensorSpec], list[TensorSpec], int]:
    """The engine's I/O from its sidecar, and its profile's largest batch.

    The inputs are the ones the engine was built with (the sidecar's
    ``inputs``, else its I/O tensors marked INPUT), never a fixed list; the
    logits' width is the engine's (``classes``, the run's, where not recorded).
    """
    path = run.engine_meta(precision)
    meta = read_meta(path)
    names = list(meta.inputs) or [n for n, io in meta.io.items() if io.get("mode") == "INPUT"]
    if not names:
        raise StaleArtifactError(
            f"{path} records no engine inputs; rebuild with `bertrt build-engine --run-dir "
            f"{run.root}`"
        )
    # The sidecar records shapes with -1 for dynamic axes; Triton's dims omit the batch.
    inputs = [TensorSpec(n, _trt_type(meta.io.get(n, {}), "INT64"), (-1,)) for n in names]
    out = meta.io.get(OUTPUT_NAME, {})
    shape = [int(d) for d in out.get("shape") or []]
    dims = tuple(shape[1:]) if len(shape) == 2 and shape[1] > 0 else (classes,)
    output = TensorSpec(OUTPUT_NAME, _trt_type(out, "FLOAT"), dims)
    return inputs, [output], meta.profile.batch[2]


def _batched(pb: Any, config: Any, options: RepoOptions, kind: str) -> Any:
    config.max_batch_size = options.max_batch
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    group = config.instance_group.add()
    group.count = options.instances
    group.kind = pb.ModelInstanceGroup.Kind.Value(kind)
    return config


def tokenizer_config(pb: Any, options: RepoOptions, inputs: list[TensorSpec]) -> Any:
    config = pb.ModelConfig(name="tokenizer", backend="python")
    config.input.extend(tensors(pb, TEXT_SPECS, "input"))
    config.output.extend(tensors(pb, inputs, "output"))
    return _batched(pb, config, options, "KIND_CPU")


def postprocess_config(
    pb: Any, options: RepoOptions, outputs: list[TensorSpec], classes: int
) -> Any:
    config = pb.ModelConfig(name="postprocess", backend="python")
    config.input.extend(tensors(pb, outputs, "input"))
    config.output.extend(tensors(pb, out_specs(classes), "output"))
    return _batched(pb, config, options, "KIND_CPU")


@dataclass(frozen=True)
class Classifier:
    """What the classifier model serves: the registry model (``cpu`` resolved through
    cpu.json), how its runtime is served, the files of its version directory, and
    their inputs and outputs."""

    spec: ModelSpec
    serving: TritonServing
    files: dict[str, Path]  # name in the version directory -> the run's file
    io: tuple[list[TensorSpec], list[TensorSpec]]


def classifier_config(pb: Any, options: RepoOptions, classifier: Classifier) -> Any:
    serving = classifier.serving
    if serving.platform:
        config = pb.ModelConfig(name="classifier", platform=serving.platform)
    else:
        config = pb.ModelConfig(name="classifier", backend=serving.backend)
    config.input.extend(tensors(pb, classifier.io[0], "input"))
    config.output.extend(tensors(pb, classifier.io[1], "output"))
    kind = "KIND_GPU" if options.device == "gpu" else "KIND_CPU"
    config = _batched(pb, config, options, kind)
    if serving.files == "openvino-ir-or-onnx" and "model.onnx" in classifier.files:
        config.default_model_filename = "model.onnx"  # the backend's default is model.xml
    for key, value in serving.parameters:
        config.parameters[key].string_value = value
    if options.device == "gpu" and serving.backend == "onnxruntime":
        accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accel.name = "tensorrt"
        accel.parameters["precision_mode"] = (
            "INT8" if classifier.spec.precision == Precision.INT8 else "FP16"
        )
    return config


def ensemble_config(pb: Any, options: RepoOptions, inputs: list[TensorSpec], classes: int) -> Any:
    config = pb.ModelConfig(name="bertrt", platform="ensemble", max_batch_size=options.max_batch)
    config.input.extend(tensors(pb, TEXT_SPECS, "input"))
    config.output.extend(tensors(pb, out_specs(classes), "output"))
    steps = config.ensemble_scheduling.step
    tokenize = steps.add(model_name="tokenizer", model_version=-1)
    for name in TEXT_INPUTS:
        tokenize.input_map[name] = name
    classify = steps.add(model_name="classifier", model_version=-1)
    for spec in inputs:
        tokenize.output_map[spec.name] = spec.name
        classify.input_map[spec.name] = spec.name
    classify.output_map[OUTPUT_NAME] = OUTPUT_NAME
    post = steps.add(model_name="postprocess", model_version=-1)
    post.input_map[OUTPUT_NAME] = OUTPUT_NAME
    for spec in out_specs(classes):
        post.output_map[spec.name] = spec.name
    return config


def text_builder_source() -> str:
    """The data stage's text functions and the one padding rule, verbatim, without their
    modules' imports: the container runs them with the standard library only."""
    source = inspect.getsource(text_module)
    constants = [line for line in source.splitlines() if line.startswith("_") and " = re." in line]
    functions = [
        inspect.getsource(f)
        for f in (
            text_module.clean_body,
            text_module.question_text,
            text_module.request_text,
            batching.padded_width,
        )
    ]
    header = '"""Copied from bertrt.data.text and bertrt.runners.batching by `bertrt triton-repo`."""\n\n'
    header += "from __future__ import annotations\n\nimport re\n\n"
    return header + "\n".join(constants) + "\n\n\n" + "\n\n".join(functions)


def _write(path: Path, config: Any) -> None:
    from google.protobuf import text_format

    path.mkdir(parents=True, exist_ok=True)
    (path / "1").mkdir(exist_ok=True)
    (path / "config.pbtxt").write_text(text_format.MessageToString(config))


def servable_models() -> list[str]:
    """The model names Triton can serve: those of runtimes with a Triton backend, and cpu."""
    return [
        name
        for name in MODEL_NAMES
        if name not in MODELS or not isinstance(runtime_of(MODELS[name]).triton, str)
    ]


def _classifier(run: RunDir, options: RepoOptions, classes: int) -> Classifier:
    """The model the classifier serves, checked (present, fresh, servable on the device)."""
    if options.model not in MODEL_NAMES:
        raise ConfigError(
            f"triton-repo --model {options.model!r}: choose from {', '.join(servable_models())}"
        )
    spec, _ = resolve(run, options.model, "triton-repo")
    serving = runtime_of(spec).triton
    if isinstance(serving, str):
        raise ConfigError(f"triton-repo --model {options.model}: {serving}")
    if options.device == "gpu" and serving.gpu_refusal:
        raise ConfigError(f"triton-repo --model {options.model}: {serving.gpu_refusal}")
    path = spec.artifact(run)
    run.require("triton-repo", [path], producer=spec.producer)
    if serving.files == "tensorrt-plan":
        inputs, outputs, _ = engine_io(run, spec.variant, classes)
        return Classifier(spec, serving, {"model.plan": path}, (inputs, outputs))
    if serving.files == "openvino-ir-or-onnx" and spec.model_file(run).suffix == ".xml":
        xml = spec.model_file(run)
        files = {"model.xml": xml, "model.bin": xml.with_suffix(".bin")}
        return Classifier(spec, serving, files, ir_io(xml))
    return Classifier(spec, serving, {"model.onnx": path}, onnx_io(path))


def ir_io(xml: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an OpenVINO IR, as :func:`onnx_io` gives them for ONNX."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    types = {"i64": "TYPE_INT64", "i32": "TYPE_INT32", "f32": "TYPE_FP32", "f16": "TYPE_FP16"}

    def specs(ports: Any) -> list[TensorSpec]:
        out = []
        for port in ports:
            shape = port.get_partial_shape()
            dims = tuple(d.get_length() if d.is_static else -1 for d in shape)
            out.append(
                TensorSpec(
                    port.get_any_name(), types[port.get_element_type().get_type_name()], dims[1:]
                )
            )
        return out

    return specs(model.inputs), specs(model.outputs)


def _python_model(src: str, dst: Path) -> None:
    shutil.copyfile(Path(__file__).parent / "triton_models" / src, dst / "1" / "model.py")


def build_repository(config: Config, run: RunDir, options: RepoOptions, root: Path) -> None:
    """Every model directory of the repository under ``root``."""
    pb = schema()
    labels = run_labels(run)
    classifier = _classifier(run, options, len(labels))
    if classifier.serving.files == "tensorrt-plan":
        _, _, max_batch = engine_io(run, classifier.spec.variant, len(labels))
        options = RepoOptions(
            **{**options.__dict__, "max_batch": min(options.max_batch, max_batch)}
        )
    inputs, outputs = classifier.io
    _check_classes(outputs, labels, next(iter(classifier.files.values())))
    _write(root / "bertrt", ensemble_config(pb, options, inputs, len(labels)))
    _write(root / "tokenizer", tokenizer_config(pb, options, inputs))
    _write(root / "classifier", classifier_config(pb, options, classifier))
    _write(root / "postprocess", postprocess_config(pb, options, outputs, len(labels)))
    for name, source in classifier.files.items():
        shutil.copyfile(source, root / "classifier" / "1" / name)
    _tokenizer_files(config, run, root / "tokenizer" / "1", [s.name for s in inputs])
    _python_model("tokenizer.py", root / "tokenizer")
    _python_model("postprocess.py", root / "postprocess")
    (root / "postprocess" / "1" / "labels.json").write_text(json.dumps(list(labels)))


def _check_classes(outputs: list[TensorSpec], labels: tuple[str, ...], artifact: Path) -> None:
    """The classifier's logits must have one column per class of the run."""
    logits = next((o for o in outputs if o.name == OUTPUT_NAME), None)
    if logits is None or list(logits.dims) != [len(labels)]:
        dims = None if logits is None else list(logits.dims)
        raise StaleArtifactError(
            f"{artifact}: {OUTPUT_NAME} has dims {dims} (batch axis dropped), the run has "
            f"{len(labels)} classes {list(labels)}; rerun the stages after `bertrt train`"
        )


def _tokenizer_files(config: Config, run: RunDir, tok: Path, inputs: list[str]) -> None:
    """The run's tokenizer and the settings the tokenizer model reads (bertrt_text.json).

    ``inputs`` are the classifier's: the tokenizer model emits exactly those,
    padded with the tokenizer's own pad id (RoBERTa's is 1, not 0).
    """
    for name in TOKENIZER_FILES:
        if (run.merged / name).is_file():
            shutil.copyfile(run.merged / name, tok / name)
    settings = {
        "code_blocks": TextOptions.of(run).code_blocks,
        "max_length": config.model.max_length,
        "inputs": inputs,
        "pad_id": int(load_tokenizer(run.merged).pad_token_id or 0),
        "pad_multiple": batching.SERVED_PAD_MULTIPLE,
        "min_width": batching.MIN_WIDTH,
    }
    (tok / "bertrt_text.json").write_text(json.dumps(settings))
    (tok / "text_builder.py").write_text(text_builder_source())


REPO_MARKER = ".bertrt-triton-repo"  # in every repository this command writes
IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"


def check_out(out: Path) -> None:
    """``out`` is new, empty, or a previous repository of this command; else refused."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"triton-repo --out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / REPO_MARKER).is_file():
        raise ConfigError(
            f"triton-repo --out {out}: a non-empty directory that bertrt triton-repo did not "
            "write; give a new or empty directory (nothing was deleted)"
        )


def readme(options: RepoOptions) -> str:
    """How to serve the repository: the exact ``docker run`` line."""
    gpu = "--gpus all " if options.device == "gpu" else ""
    return (
        "# Triton model repository written by `bertrt triton-repo`\n\n"
        f"Model `bertrt` (ensemble: tokenizer, classifier `{options.model}` on "
        f"{options.device}, postprocess). Serve it from this directory with:\n\n"
        f'    docker run --rm {gpu}-p 8000-8002:8000-8002 -v "$PWD":/models {IMAGE} \\\n'
        '      bash -c "pip install -q tokenizers && tritonserver --model-repository=/models"\n\n'
        "Then: `curl localhost:8000/v2/models/bertrt/ready`. Running `bertrt triton-repo` "
        "again with this directory as --out replaces it whole.\n"
    )


def _umask_mode() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return 0o777 & ~mask


def write_standalone_repository(
    config: Config, run: RunDir, options: RepoOptions, out: Path
) -> Path:
    """Build beside ``out``, then swap it in: ``out`` is the old repository or the new one.

    Only an empty directory or a previous repository (:func:`check_out`) is
    ever replaced, so nothing else can be deleted.
    """
    options.check()
    out = out.resolve()
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        os.chmod(staging, _umask_mode())
        build_repository(config, run, options, staging)
        (staging / "README.md").write_text(readme(options))
        (staging / REPO_MARKER).write_text(json.dumps({"run": str(run.root.resolve())}) + "\n")
        old = out.with_name(f".{out.name}-old")
        if out.exists():
            check_out(out)  # still empty or ours
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out

"""`bertrt triton-repo --model NAME` for every deployment model: the right Triton backend and files.

Traced bugs this holds fixed: an OpenVINO model was written as an onnxruntime
classifier (`ov-fp32`), `cpu` handed cpu.json to the ONNX reader, and `ov-int8`
handed it a directory. Every written config is parsed back against Triton's own
``ModelConfig`` schema, and the classifier's inputs are checked against the
model file it serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bertrt.artifacts import RunDir, read_json
from bertrt.config import load_config
from bertrt.errors import ConfigError, MissingArtifactError
from tests.conftest import make_trained_run

SMALL = [
    "model.max_length=32",
    "export.verify_batch_sizes=[1,2]",
    "export.verify_seq_lengths=[32]",
    "export.verify_rows=8",
    "calibration.rows=32",
    "calibration.batch_size=8",
    "calibration.eval_rows=48",
    "calibration.cpu_candidates=[static-u8s8-folded,openvino-nncf-int8,openvino-qdq]",
]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from bertrt.calibration.stage import run as calibrate_stage
    from bertrt.export.stage import run as export_stage

    run = make_trained_run(tmp_path_factory.mktemp("repo-models"), tiny_base, rows=240)
    config = load_config(overrides=SMALL)
    export_stage(config, run)
    calibrate_stage(config, run)
    return run


def _repo(run: RunDir, model: str, out: Path, device: str = "cpu") -> dict[str, Any]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from bertrt.serve.options import RepoOptions
    from bertrt.serve.repo import write_standalone_repository

    write_standalone_repository(
        load_config(overrides=SMALL), run, RepoOptions(model, device=device), out
    )
    return {
        p.parent.name: text_format.Parse(p.read_text(), model_config_pb2.ModelConfig())
        for p in sorted(out.glob("*/config.pbtxt"))
    }


def _served_inputs(version_dir: Path) -> list[str]:
    """The input names of the model file Triton will load from ``version_dir``."""
    from bertrt.serve.repo import ir_io, onnx_io

    xml = version_dir / "model.xml"
    inputs, _ = ir_io(xml) if xml.is_file() else onnx_io(version_dir / "model.onnx")
    return [s.name for s in inputs]


@pytest.mark.parametrize(
    ("model", "files"),
    [
        ("ov-fp32", {"model.onnx"}),
        ("ov-qdq", {"model.onnx"}),
        ("ov-int8", {"model.xml", "model.bin"}),
    ],
)
def test_openvino_models_get_tritons_openvino_backend(
    calibrated: RunDir, tmp_path: Path, model: str, files: set[str]
) -> None:
    configs = _repo(calibrated, model, tmp_path / "repo")
    classifier = configs["classifier"]
    assert classifier.backend == "openvino"
    version = tmp_path / "repo" / "classifier" / "1"
    assert {p.name for p in version.iterdir()} == files
    # The backend loads model.xml unless told otherwise.
    assert classifier.default_model_filename == ("model.onnx" if "model.onnx" in files else "")
    assert classifier.parameters["NUM_STREAMS"].string_value == "1"
    assert [i.name for i in classifier.input] == _served_inputs(version)
    assert list(classifier.output[0].dims) == [2]


def test_cpu_is_the_model_cpu_json_names(calibrated: RunDir, tmp_path: Path) -> None:
    from bertrt.runners.registry import MODELS

    chosen = MODELS[str(read_json(calibrated.cpu_choice)["model"])]
    configs = _repo(calibrated, "cpu", tmp_path / "repo")
    assert configs["classifier"].backend == chosen.framework
    version = tmp_path / "repo" / "classifier" / "1"
    assert [i.name for i in configs["classifier"].input] == _served_inputs(version)


def test_onnx_models_keep_the_onnxruntime_backend(calibrated: RunDir, tmp_path: Path) -> None:
    configs = _repo(calibrated, "onnx-int8", tmp_path / "repo")
    assert configs["classifier"].backend == "onnxruntime"
    gpu = _repo(calibrated, "onnx-int8", tmp_path / "gpu", device="gpu")["classifier"]
    accelerator = gpu.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.parameters["precision_mode"] == "INT8"


def test_an_openvino_model_on_a_gpu_is_refused_in_one_line(
    calibrated: RunDir, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="OpenVINO model is served on the CPU") as err:
        _repo(calibrated, "ov-int8", tmp_path / "repo", device="gpu")
    assert "\n" not in str(err.value) and not (tmp_path / "repo").exists()


def test_every_registry_name_is_written_or_refused(calibrated: RunDir, tmp_path: Path) -> None:
    """No name reaches a reader that cannot read it: written, or one line with its exit code."""
    from bertrt.runners.registry import MODEL_NAMES, MODELS, runtime_of

    for name in MODEL_NAMES:
        try:
            configs = _repo(calibrated, name, tmp_path / name)
        except ConfigError as err:  # no Triton backend for the runtime: one line, exit 2
            assert "\n" not in str(err)
            assert isinstance(runtime_of(MODELS[name]).triton, str), f"{name}: {err}"
            continue
        except MissingArtifactError as err:  # a stage this run did not run: named, exit 4
            assert "\n" not in str(err)
            producer = MODELS[name].producer
            assert producer in ("build-engine", "qat"), f"{name}: {err}"
            assert f"bertrt {producer}" in str(err), f"{name}: {err}"
            continue
        assert configs["classifier"].backend in ("onnxruntime", "openvino"), name

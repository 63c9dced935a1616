"""CPU tests of the TensorRT stage: profiles, sidecar, version logic, refusal paths.

Real objects throughout (ONNX graphs built with onnx.helper, sidecar files on
disk, the CLI itself); nothing here imitates TensorRT's behaviour. Only the
stage's publishing tests stand opaque bytes in for a built engine. What needs
a GPU lives in tests/gpu/test_engines_gpu.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bertrt.artifacts import RunDir
from bertrt.config import Config, ProfileConfig, load_config
from bertrt.engines.builder import (
    check_engine_precision,
    layer_precisions,
    network_flags_and_builder_flags,
    onnx_precision,
    onnx_precision_of,
)
from bertrt.engines.stage import plan_engines
from bertrt.errors import (
    ConfigError,
    MissingArtifactError,
    StaleArtifactError,
    UnavailableError,
    VerificationError,
)
from bertrt.modeling import INPUT_NAMES
from bertrt.trt.availability import tensorrt_availability, trt_major
from bertrt.trt.metadata import (
    EngineMeta,
    GpuInfo,
    check_engine_compatible,
    read_meta,
    write_meta,
)
from bertrt.trt.profiles import (
    Profile,
    ShapeOutsideProfileError,
    build_profile,
    max_positions_of,
)

REPO = Path(__file__).resolve().parents[2]
H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")


def _trt_usable() -> bool:
    from bertrt.trt.availability import cuda_availability

    return tensorrt_availability().ok and cuda_availability().ok


# -- profiles ------------------------------------------------------------------------
def test_default_profile_matches_config() -> None:
    profile = build_profile(ProfileConfig(), max_positions=512)
    assert profile.min == (1, 16) and profile.opt == (8, 128) and profile.max == (32, 512)
    shapes = profile.input_shapes(INPUT_NAMES)
    assert set(shapes) == set(INPUT_NAMES)
    assert shapes["input_ids"] == ((1, 16), (8, 128), (32, 512))
    # A model without token_type_ids (DistilBERT, RoBERTa) gets no profile entry for one.
    assert set(profile.input_shapes(["input_ids", "attention_mask"])) == {
        "input_ids",
        "attention_mask",
    }
    with pytest.raises(ValueError, match="input names"):
        profile.input_shapes([])


@pytest.mark.parametrize(
    ("batch", "seq", "key"),
    [
        ([8, 1, 32], [16, 128, 512], "engines.profile.batch"),
        ([1, 8, 32], [16, 600, 512], "engines.profile.seq"),
        ([1, 8], [16, 128, 512], "engines.profile.batch"),
        ([0, 8, 32], [16, 128, 512], "engines.profile.batch"),
    ],
)
def test_profile_errors_name_the_config_key(batch: list[int], seq: list[int], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_profile(ProfileConfig(batch=batch, seq=seq))


def test_profile_seq_capped_by_model_positions(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    limit = max_positions_of(tmp_path)
    assert limit == 256
    with pytest.raises(ConfigError, match=r"engines\.profile\.seq.*max_position_embeddings"):
        build_profile(ProfileConfig(seq=[16, 128, 512]), limit)
    assert build_profile(ProfileConfig(seq=[16, 128, 256]), limit).max == (32, 256)
    assert max_positions_of(tmp_path / "absent") is None


def test_shape_outside_profile_is_refused_clearly() -> None:
    profile = Profile(batch=(1, 8, 32), seq=(16, 128, 512))
    profile.check("input_ids", (32, 16))
    with pytest.raises(ShapeOutsideProfileError, match=r"'input_ids'.*\[64, 128\].*batch 1\.\.32"):
        profile.check("input_ids", (64, 128))
    with pytest.raises(ShapeOutsideProfileError, match=r"seq 16\.\.512"):
        profile.check("attention_mask", (1, 8))


# -- sidecar -------------------------------------------------------------------------
def _meta(**overrides: object) -> EngineMeta:
    fields: dict[str, object] = {
        "precision": "fp16",
        "tensorrt_version": "10.13.3.9",
        "gpu": H100,
        "profile": Profile(batch=(1, 8, 32), seq=(16, 128, 512)),
        "onnx_file": "onnx/model.fp16.onnx",
        "onnx_sha256": "ab" * 32,
        "build_s": 12.5,
        "options": {"workspace_mib": 4096, "builder_flags": ["FP16"]},
    }
    fields.update(overrides)
    return EngineMeta(**fields)  # type: ignore[arg-type]


def test_sidecar_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "engines" / "fp16.json"
    meta = _meta()
    write_meta(path, meta)
    data = json.loads(path.read_text())
    assert data["tensorrt_version"] == "10.13.3.9"
    assert data["gpu"] == {"name": H100.name, "compute_capability": "9.0"}
    assert data["profile"] == {"batch": [1, 8, 32], "seq": [16, 128, 512]}
    assert read_meta(path) == meta


def test_sidecar_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match="build-engine"):
        read_meta(tmp_path / "engines" / "int8.json")
    bad = tmp_path / "engines" / "int8.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"precision": "int8"}))
    with pytest.raises(StaleArtifactError, match="rebuild"):
        read_meta(bad)


def test_engine_compatible_on_same_version_and_gpu() -> None:
    check_engine_compatible(_meta(), "10.13.3.9", H100)


@pytest.mark.parametrize(
    ("version", "gpu", "expected"),
    [
        ("11.4.0.1", H100, r"TensorRT 10\.13\.3\.9, this machine has 11\.4\.0\.1"),
        ("10.13.3.9", GpuInfo("NVIDIA A100-SXM4-80GB", "8.0"), r"compute capability 9\.0"),
        ("10.13.3.9", GpuInfo("NVIDIA H100 PCIe", "9.0"), "built on NVIDIA H100 80GB HBM3"),
    ],
)
def test_engine_refused_elsewhere(version: str, gpu: GpuInfo, expected: str) -> None:
    with pytest.raises(StaleArtifactError, match=expected) as info:
        check_engine_compatible(_meta(), version, gpu)
    assert "Rebuild it here: `bertrt build-engine --precision fp16" in str(info.value)


# -- ONNX precision and version logic ------------------------------------------------------
def _graph(kind: str, inputs: tuple[str, ...] = ("input_ids", "attention_mask")) -> onnx.ModelProto:
    """A one-MatMul graph: fp32, fp16 (fp16 weight + casts), or Q/DQ around the weight.

    Its I/O are a model's (int64 ``inputs``, ``logits``): ``x`` is the first
    input as float, the others are declared and unused.
    """
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 2)).astype(np.float32)
    graph_inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", 4]) for n in inputs
    ]
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    cast = helper.make_node("Cast", [inputs[0]], ["x"], to=TensorProto.FLOAT)
    if kind == "fp32":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"])]
        inits = [numpy_helper.from_array(weight, "w")]
    elif kind == "fp16":
        nodes = [
            helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["x16", "w"], ["y16"]),
            helper.make_node("Cast", ["y16"], ["logits"], to=TensorProto.FLOAT),
        ]
        inits = [numpy_helper.from_array(weight.astype(np.float16), "w")]
    else:
        nodes = [
            helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
            helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
            helper.make_node("MatMul", ["x", "wd"], ["logits"]),
        ]
        inits = [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array(0.02, dtype=np.float32), "s"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "z"),
        ]
    model = helper.make_model(
        helper.make_graph([cast, *nodes], kind, graph_inputs, [y], inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.checker.check_model(model)
    return model


def test_onnx_precision_reads_the_graph(tmp_path: Path) -> None:
    fp32, fp16, qdq = (onnx_precision_of(_graph(k)) for k in ("fp32", "fp16", "qdq"))
    assert not fp32.has_fp16 and not fp32.has_qdq
    assert fp16.has_fp16 and fp16.fp16_initializers == 1 and fp16.fp16_casts == 1
    assert qdq.has_qdq and qdq.qdq_nodes == 2 and not qdq.has_fp16
    path = tmp_path / "m.onnx"
    onnx.save(_graph("qdq"), str(path))
    assert onnx_precision(path) == qdq


def test_trt10_sets_precision_flags() -> None:
    fp16 = network_flags_and_builder_flags("10.13.3.9", "fp16", onnx_precision_of(_graph("fp16")))
    assert fp16.builder_flags == ("FP16",) and not fp16.strongly_typed
    int8 = network_flags_and_builder_flags("10.13.3.9", "int8", onnx_precision_of(_graph("qdq")))
    assert int8.builder_flags == ("INT8", "FP16")
    # 10.x can still lower an fp32 ONNX by flag; the plan says so.
    lowered = network_flags_and_builder_flags(
        "10.8.0.43", "fp16", onnx_precision_of(_graph("fp32"))
    )
    assert lowered.builder_flags == ("FP16",) and "BuilderFlag.FP16 alone" in lowered.notes[0]


def test_trt11_is_strongly_typed_without_flags() -> None:
    for precision, kind in (("fp16", "fp16"), ("int8", "qdq")):
        plan = network_flags_and_builder_flags(
            "11.4.0.1", precision, onnx_precision_of(_graph(kind))
        )
        assert plan.strongly_typed and plan.builder_flags == ()


def test_trt11_refuses_fp16_from_fp32_onnx() -> None:
    """TensorRT 11 would build a silent FP32 engine from an fp32 ONNX."""
    with pytest.raises(ConfigError, match=r"strongly typed.*silent FP32.*model\.fp16\.onnx"):
        network_flags_and_builder_flags(
            "11.4.0.1", "fp16", onnx_precision_of(_graph("fp32")), "onnx/model.onnx"
        )


@pytest.mark.parametrize("version", ["10.13.3.9", "11.4.0.1"])
def test_int8_without_qdq_is_refused(version: str) -> None:
    with pytest.raises(ConfigError, match=r"no QuantizeLinear/DequantizeLinear.*bertrt calibrate"):
        network_flags_and_builder_flags(version, "int8", onnx_precision_of(_graph("fp16")))


def test_unsupported_versions_and_precisions() -> None:
    facts = onnx_precision_of(_graph("fp16"))
    with pytest.raises(ConfigError, match=r"needs 10\.0"):
        network_flags_and_builder_flags("8.6.1", "fp16", facts)
    with pytest.raises(ConfigError, match=r"engines\.precisions"):
        network_flags_and_builder_flags("10.13.3.9", "bf16", facts)
    assert trt_major("11.4.0.1") == 11
    with pytest.raises(ValueError):
        trt_major("unknown")


# -- engine inspection: the silent-FP32 check ----------------------------------------------
INSPECTOR_10 = {  # TensorRT 10.x DETAILED inspector style
    "Layers": [
        {
            "Name": "gemm",
            "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}],
            "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP16 format"}],
        }
    ],
    "Bindings": ["input_ids", "logits"],
}
INSPECTOR_11 = {  # 11.x: "I/O Tensors", and DataType split from Format
    "Layers": [
        {
            "Name": "gemm",
            "Inputs": [{"Name": "x", "Format": "Row major linear", "DataType": "Int8"}],
            "Outputs": [{"Name": "y", "Format": "Row major linear", "DataType": "Float"}],
        }
    ],
    "I/O Tensors": ["input_ids", "logits"],
}


def test_layer_precisions_reads_both_inspector_formats() -> None:
    assert layer_precisions(json.dumps(INSPECTOR_10)) == Counter({"fp32": 1, "fp16": 1})
    assert layer_precisions(json.dumps(INSPECTOR_11)) == Counter({"int8": 1, "fp32": 1})
    assert layer_precisions("not json") == Counter()
    names_only = {"Layers": ["gemm", "softmax"], "Bindings": []}
    assert layer_precisions(json.dumps(names_only)) == Counter()


def test_silent_fp32_engine_is_refused() -> None:
    assert check_engine_precision("fp16", Counter({"fp16": 3, "fp32": 1})).startswith("ok")
    assert check_engine_precision("int8", Counter({"int8": 2})).startswith("ok")
    assert check_engine_precision("fp16", Counter()).startswith("unchecked")
    with pytest.raises(VerificationError, match="silent FP32"):
        check_engine_precision("fp16", Counter({"fp32": 10}))
    with pytest.raises(VerificationError, match="asked for int8"):
        check_engine_precision("int8", Counter({"fp16": 10, "fp32": 2}))


# -- stage planning: config, manifest and version checks before TensorRT -------------------
def _run_with_onnx(tmp_path: Path, fp16_kind: str = "fp16") -> RunDir:
    """A run dir whose export/calibrate records cover real ONNX files (built with onnx.helper)."""
    run = RunDir(tmp_path / "run")
    run.onnx_dir.mkdir(parents=True)
    onnx.save(_graph(fp16_kind), str(run.onnx("fp16")))
    run.record("export", [], [run.onnx("fp16")], 1.0)
    onnx.save(_graph("qdq"), str(run.onnx("int8")))
    run.record("calibrate", [], [run.onnx("int8")], 1.0)
    return run


@pytest.mark.parametrize("version", ["10.13.3.9", "11.4.0.1"])
def test_plan_engines_for_both_versions(tmp_path: Path, version: str) -> None:
    run = _run_with_onnx(tmp_path)
    profile, jobs = plan_engines(Config(), run, version)
    assert profile.max == (32, 512)
    assert [(j.precision, j.onnx_path.name) for j in jobs] == [
        ("fp16", "model.fp16.onnx"),
        ("int8", "model.int8.onnx"),
    ]
    # The profile covers the ONNX graph's inputs, read from the file (two here).
    assert all(j.inputs == ("input_ids", "attention_mask") for j in jobs)
    assert set(jobs[0].input_shapes(profile)) == {"input_ids", "attention_mask"}
    assert all(j.plan.strongly_typed == version.startswith("11") for j in jobs)


def test_plan_engines_refuses_fp32_file_on_trt11(tmp_path: Path) -> None:
    run = _run_with_onnx(tmp_path, fp16_kind="fp32")
    with pytest.raises(ConfigError, match="silent FP32"):
        plan_engines(Config(), run, "11.4.0.1")
    config = load_config(None, ["engines.precisions=int8"])
    assert [j.precision for j in plan_engines(config, run, "11.4.0.1")[1]] == ["int8"]


def test_plan_engines_refuses_missing_or_changed_onnx(tmp_path: Path) -> None:
    run = _run_with_onnx(tmp_path)
    run.onnx("int8").unlink()
    with pytest.raises(MissingArtifactError, match="bertrt calibrate"):
        plan_engines(Config(), run, "10.13.3.9")
    onnx.save(_graph("fp32"), str(run.onnx("fp16")))
    config = load_config(None, ["engines.precisions=fp16"])
    with pytest.raises(StaleArtifactError, match="bertrt export"):
        plan_engines(config, run, "10.13.3.9")


@pytest.mark.parametrize(
    "inputs",
    [("input_ids",), ("input_ids", "attention_mask", "position_ids"), ("ids", "attention_mask")],
)
def test_plan_engines_refuses_a_graph_that_is_not_a_model(
    tmp_path: Path, inputs: tuple[str, ...]
) -> None:
    from bertrt.engines.builder import OnnxParseError

    run = _run_with_onnx(tmp_path)
    onnx.save(_graph("fp16", inputs), str(run.onnx("fp16")))
    run.record("export", [], [run.onnx("fp16")], 1.0)
    config = load_config(None, ["engines.precisions=fp16"])
    with pytest.raises(OnnxParseError, match=r"model\.fp16\.onnx: inputs .*rerun `bertrt export`"):
        plan_engines(config, run, "10.13.3.9")


def test_plan_engines_takes_three_inputs_where_the_graph_has_them(tmp_path: Path) -> None:
    run = _run_with_onnx(tmp_path)
    onnx.save(_graph("fp16", INPUT_NAMES), str(run.onnx("fp16")))
    run.record("export", [], [run.onnx("fp16")], 1.0)
    profile, (job,) = plan_engines(load_config(None, ["engines.precisions=fp16"]), run, "11.4.0.1")
    assert job.inputs == INPUT_NAMES
    assert set(job.input_shapes(profile)) == set(INPUT_NAMES)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("engines.precisions=bf16", "engines.precisions"),
        ("engines.optimization_level=9", "engines.optimization_level"),
        ("engines.workspace_mib=0", "engines.workspace_mib"),
    ],
)
def test_plan_engines_config_errors(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan_engines(load_config(None, [override]), _run_with_onnx(tmp_path), "10.13.3.9")


def test_plan_engines_caps_seq_at_model_positions(tmp_path: Path) -> None:
    run = _run_with_onnx(tmp_path)
    run.merged.mkdir()
    (run.merged / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    with pytest.raises(ConfigError, match=r"engines\.profile\.seq=\[16, 128, 512\].*\(256\)"):
        plan_engines(Config(), run, "10.13.3.9")


def test_rebuilding_one_precision_keeps_the_other_current_engine(tmp_path: Path) -> None:
    """Manifest bookkeeping only: the engine file's bytes are opaque here, never run."""
    from bertrt.artifacts import sha256_path
    from bertrt.engines.stage import _keep_current_engines

    run = _run_with_onnx(tmp_path)
    run.engine("int8").parent.mkdir(parents=True)
    run.engine("int8").write_bytes(b"opaque engine bytes")
    write_meta(
        run.engine_meta("int8"),
        _meta(precision="int8", onnx_sha256=sha256_path(run.onnx("int8"))),
    )
    inputs: list[Path] = []
    outputs: list[Path] = []
    _keep_current_engines(run, {"fp16"}, inputs, outputs)
    assert inputs == [run.onnx("int8")]
    assert outputs == [run.engine("int8"), run.engine_meta("int8")]
    onnx.save(_graph("fp32"), str(run.onnx("int8")))  # the Q/DQ model changed since
    inputs, outputs = [], []
    _keep_current_engines(run, {"fp16"}, inputs, outputs)
    assert inputs == [] and outputs == []


def _stub_tensorrt(monkeypatch: pytest.MonkeyPatch, fail: str | None = None) -> None:
    """Stand opaque bytes in for TensorRT's build, so the stage's bookkeeping runs on a CPU."""
    from bertrt.engines import stage as engines_stage
    from bertrt.engines.builder import BuildResult

    def build(onnx_path: Path, plan: object, *args: object) -> BuildResult:
        if fail and fail in onnx_path.name:
            raise VerificationError(f"{onnx_path}: build failed")
        inputs = ["input_ids", "attention_mask"]
        return BuildResult(
            onnx_path.name.encode(), b"cache", inputs, {}, {"fp16": 1}, "ok: stub", 1.0
        )

    monkeypatch.setattr(engines_stage, "require_tensorrt_and_cuda", lambda: "10.13.3.9")
    monkeypatch.setattr(engines_stage, "current_gpu", lambda: H100)
    monkeypatch.setattr(engines_stage, "build_engine", build)


def test_stage_publishes_each_plan_with_its_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertrt.artifacts import sha256_path
    from bertrt.engines.stage import run as build_engines

    run = _run_with_onnx(tmp_path)
    run.merged.mkdir()
    (run.merged / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    _stub_tensorrt(monkeypatch)
    result = build_engines(Config(), run)
    for precision in ("fp16", "int8"):
        assert run.engine(precision).read_bytes() == run.onnx(precision).name.encode()
        meta = read_meta(run.engine_meta(precision))
        assert meta.onnx_sha256 == sha256_path(run.onnx(precision)) and meta.gpu == H100
        assert "network_flags" not in meta.options and meta.options["strongly_typed"] is False
        assert meta.inputs == ["input_ids", "attention_mask"]  # what the build parsed
    record = run.read_manifest()["stages"]["build-engine"]
    assert list(record["outputs"]) == [
        "engines/fp16.plan",
        "engines/fp16.json",
        "engines/int8.plan",
        "engines/int8.json",
    ]
    assert record["extra"]["precision_checks"] == {"fp16": "ok: stub", "int8": "ok: stub"}
    assert result.summary.splitlines()[1].startswith(f"wrote {run.engine('int8')} (1.0 s build")


def test_failed_build_publishes_no_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bertrt.engines.stage import run as build_engines

    run = _run_with_onnx(tmp_path)
    run.merged.mkdir()
    (run.merged / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    _stub_tensorrt(monkeypatch, fail="int8")
    with pytest.raises(VerificationError, match="build failed"):
        build_engines(Config(), run)
    # The fp16 engine was built, but a half-done stage publishes nothing.
    assert sorted(p.name for p in run.engines_dir.iterdir()) == ["timing.cache"]
    assert "build-engine" not in run.read_manifest()["stages"]
    assert not list(run.root.glob(".staging-*"))


# -- without TensorRT or a GPU ------------------------------------------------------------------
@pytest.mark.skipif(_trt_usable(), reason="TensorRT and a GPU are present here")
def test_build_engine_cli_exits_3_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bertrt.cli import main

    code = main(["build-engine", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == UnavailableError.exit_code == 3
    assert len(err.splitlines()) == 1
    assert "needs TensorRT and an NVIDIA GPU" in err and "docker" in err
    assert not (tmp_path / "run" / "engines").exists()


@pytest.mark.skipif(_trt_usable(), reason="TensorRT and a GPU are present here")
def test_runner_refuses_without_tensorrt(tmp_path: Path) -> None:
    from bertrt.runners.trt_runner import TrtRunner

    runner = TrtRunner(tmp_path / "engines" / "fp16.plan")  # construction touches nothing
    assert runner.label == "tensorrt/fp16/cuda"
    with pytest.raises(UnavailableError, match="needs TensorRT"), runner:
        pass


def test_stubs_alone_count_as_absent() -> None:
    status = tensorrt_availability()
    if status.ok:
        pytest.skip(f"a real TensorRT {status.version} is installed")
    assert status.reason and status.reason.startswith("TensorRT")


# -- the type check proves TensorRT calls exist ----------------------------------------
@pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy not installed")
def test_mypy_with_stubs_rejects_a_removed_call(tmp_path: Path) -> None:
    """With the repaired stubs, mypy sees the real API: a call TensorRT 10 removed fails."""
    stubs = tmp_path / "stubs"
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "trt_stubs.py"), str(stubs)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"tensorrt-stubs not installed: {made.stdout}{made.stderr}")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "import tensorrt as trt\n"
        "builder = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "network = builder.create_network(0)\n"
        "config = builder.create_builder_config()\n"
        "config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)\n"
        "engine = builder.build_engine(network, config)\n"  # removed in TensorRT 10
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
    )
    assert 'has no attribute "build_engine"' in result.stdout, result.stdout + result.stderr
    assert "snippet.py:5" not in result.stdout, result.stdout  # the correct calls type-check


@pytest.mark.parametrize("version", ["10.13.3.9", "11.4.0.1"])
def test_a_qat_engine_is_int8_from_the_qat_model(tmp_path: Path, version: str) -> None:
    """engines.precisions=[qat]: engines/qat.plan, built as INT8 from `bertrt qat`'s Q/DQ model
    (refused, naming the stage, where that model was never written)."""
    run = _run_with_onnx(tmp_path)
    config = load_config(None, ["engines.precisions=[int8,qat]"])
    with pytest.raises(MissingArtifactError, match="bertrt qat"):
        plan_engines(config, run, version)
    onnx.save(_graph("qdq"), str(run.onnx("qat")))
    run.record("qat", [], [run.onnx("qat")], 1.0)
    _, jobs = plan_engines(config, run, version)
    assert [(j.precision, j.onnx_path.name) for j in jobs] == [
        ("int8", "model.int8.onnx"),
        ("qat", "model.qat.onnx"),
    ]
    assert jobs[0].plan == jobs[1].plan  # the same INT8 build
    onnx.save(_graph("fp32"), str(run.onnx("qat")))
    run.record("qat", [], [run.onnx("qat")], 1.0)
    with pytest.raises(ConfigError, match="no QuantizeLinear"):
        plan_engines(config, run, version)


def test_a_qat_engine_is_published_and_served_under_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertrt.engines.stage import run as build_engines
    from bertrt.runners.registry import MODELS, runtime_of
    from bertrt.runners.spec import RunnerOptions

    run = _run_with_onnx(tmp_path)
    onnx.save(_graph("qdq"), str(run.onnx("qat")))
    run.record("qat", [], [run.onnx("qat")], 1.0)
    run.merged.mkdir()
    (run.merged / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    _stub_tensorrt(monkeypatch)
    build_engines(load_config(None, ["engines.precisions=[qat]"]), run)
    assert run.engine("qat").read_bytes() == b"model.qat.onnx"
    assert read_meta(run.engine_meta("qat")).onnx_file == "onnx/model.qat.onnx"
    model = MODELS["trt-qat"]
    runner = runtime_of(model).runner(model, run, RunnerOptions())  # construction only
    assert runner.label == "tensorrt/qat/cuda" and runner.precision == "int8"

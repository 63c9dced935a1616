"""TensorRT engines on a real GPU, compared with ONNX Runtime.

Builds fp16 and int8 engines (1) from the tiny test model, with its ONNX
files made here, and (2) from the default run (``runs/default``) when its
export and calibrate stages have run; then compares logits with ONNX Runtime:
fp16 max abs diff <= 1e-2 against the fp32 ONNX, int8 argmax agreement >= 99%
against the same Q/DQ ONNX. Skips with the reason where TensorRT or CUDA is
absent (see docs/tensorrt.md for the NVIDIA container that has both).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertrt.trt.availability import cuda_availability, tensorrt_availability

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUN = REPO / "runs" / "default"
FP16_ATOL = 1e-2
INT8_AGREEMENT = 0.99


@pytest.fixture(scope="module", autouse=True)
def _needs_tensorrt_and_cuda() -> None:
    for status in (tensorrt_availability(), cuda_availability()):
        if not status.ok:
            pytest.skip(f"{status.reason}; run `make gpu-check` in the NVIDIA container")


def _ort_logits(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], batch)[0], dtype=np.float32)


def _batches(
    vocab: int, rows: int, seq: int, batch: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        ids = rng.integers(1000, vocab, size=(n, seq), dtype=np.int64)
        mask = np.ones((n, seq), dtype=np.int64)
        lengths = rng.integers(seq // 2, seq + 1, size=n)
        for i, length in enumerate(lengths):
            mask[i, length:] = 0
            ids[i, length:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return out


@pytest.fixture(scope="module")
def tiny_onnx(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32, fp16 and Q/DQ int8 ONNX files of the tiny BERT, with a sharpened classifier."""
    import onnx
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-onnx")
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_base), attn_implementation="eager"
    ).eval()
    with torch.no_grad():  # large logit margins, so argmax agreement is meaningful
        model.classifier.weight.mul_(50.0)
    sample = _batches(model.config.vocab_size, 2, 16, 2)[0]
    axes = {name: {0: "batch", 1: "seq"} for name in sample}
    fp32 = out / "model.onnx"
    torch.onnx.export(
        model,
        tuple(
            torch.from_numpy(sample[k]) for k in ("input_ids", "attention_mask", "token_type_ids")
        ),
        str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    fp16 = out / "model.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(fp16))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(_batches(model.config.vocab_size, 64, 32, 8, seed=1))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    int8 = out / "model.int8.onnx"
    quantize_static(
        str(fp32),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return {"fp32": fp32, "fp16": fp16, "int8": int8}


@pytest.fixture(scope="module")
def vocab(tiny_base: Path) -> int:
    return int(json.loads((tiny_base / "config.json").read_text())["vocab_size"])


def _build(onnx_path: Path, precision: str, out: Path) -> Path:
    from bertrt.engines.builder import build_engine, network_flags_and_builder_flags, onnx_precision
    from bertrt.trt.availability import current_gpu, require_tensorrt_and_cuda
    from bertrt.trt.metadata import EngineMeta, write_meta
    from bertrt.trt.profiles import Profile

    version = require_tensorrt_and_cuda()
    plan = network_flags_and_builder_flags(version, precision, onnx_precision(onnx_path))
    profile = Profile(batch=(1, 8, 16), seq=(8, 32, 64))
    result = build_engine(onnx_path, plan, profile, 1024, 3, None)
    engine = out / f"{precision}.plan"
    engine.write_bytes(result.engine)
    write_meta(
        out / f"{precision}.json",
        EngineMeta(
            precision,
            version,
            current_gpu(),
            profile,
            onnx_path.name,
            "-",
            result.build_s,
            layer_precisions=result.layer_precisions,
        ),
    )
    return engine


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_tiny_fp16_engine_matches_onnxruntime(
    vocab: int, tiny_onnx: dict[str, Path], tmp_path: Path, cuda_graphs: bool
) -> None:
    from bertrt.runners.trt_runner import TrtRunner

    engine = _build(tiny_onnx["fp16"], "fp16", tmp_path)
    batches = _batches(vocab, 48, 32, 16)
    with TrtRunner(engine, cuda_graphs=cuda_graphs) as runner:
        for batch in batches:
            got = runner(batch)
            want = _ort_logits(tiny_onnx["fp32"], batch)
            assert got.shape == want.shape
            assert float(np.abs(got - want).max()) <= FP16_ATOL


def test_tiny_int8_engine_agrees_with_onnxruntime(
    vocab: int, tiny_onnx: dict[str, Path], tmp_path: Path
) -> None:
    from bertrt.runners.trt_runner import TrtRunner

    engine = _build(tiny_onnx["int8"], "int8", tmp_path)
    meta = json.loads((tmp_path / "int8.json").read_text())
    assert meta["layer_precisions"].get("int8", 0) > 0, meta["layer_precisions"]
    batches = _batches(vocab, 200, 32, 16, seed=3)
    with TrtRunner(engine) as runner:
        got = np.concatenate([runner(b).argmax(1) for b in batches])
    want = np.concatenate([_ort_logits(tiny_onnx["int8"], b).argmax(1) for b in batches])
    assert float((got == want).mean()) >= INT8_AGREEMENT


def test_shape_outside_profile_is_refused(
    vocab: int, tiny_onnx: dict[str, Path], tmp_path: Path
) -> None:
    from bertrt.runners.trt_runner import TrtRunner
    from bertrt.trt.profiles import ShapeOutsideProfileError

    engine = _build(tiny_onnx["fp16"], "fp16", tmp_path)
    too_long = _batches(vocab, 2, 128, 2)[0]
    with TrtRunner(engine) as runner, pytest.raises(ShapeOutsideProfileError, match=r"seq 8\.\.64"):
        runner(too_long)


def test_engine_from_another_trt_version_is_refused(
    tiny_onnx: dict[str, Path], tmp_path: Path
) -> None:
    from bertrt.errors import StaleArtifactError
    from bertrt.runners.trt_runner import TrtRunner

    engine = _build(tiny_onnx["fp16"], "fp16", tmp_path)
    sidecar = tmp_path / "fp16.json"
    data = json.loads(sidecar.read_text())
    data["tensorrt_version"] = "9.0.0.0"
    sidecar.write_text(json.dumps(data))
    with pytest.raises(StaleArtifactError, match="Rebuild"), TrtRunner(engine):
        pass


# -- the default run -------------------------------------------------------------------
def _default_run_ready() -> str | None:
    for rel in (
        "onnx/model.onnx",
        "onnx/model.fp16.onnx",
        "onnx/model.int8.onnx",
        "split.json",
        "merged",
    ):
        if not (DEFAULT_RUN / rel).exists():
            return f"{DEFAULT_RUN / rel} is missing; run `make all DATA=...` first"
    return None


@pytest.fixture(scope="module")
def default_engines() -> dict[str, Path]:
    reason = _default_run_ready()
    if reason:
        pytest.skip(reason)
    from bertrt.artifacts import RunDir
    from bertrt.config import load_config
    from bertrt.engines.stage import run as build

    run = RunDir(DEFAULT_RUN)
    build(load_config(), run)
    return {p: run.engine(p) for p in ("fp16", "int8")}


def _test_batches(limit: int = 512) -> list[dict[str, np.ndarray]]:
    from bertrt.artifacts import RunDir
    from bertrt.config import load_config
    from bertrt.data import load_split
    from bertrt.modeling import encode, load_tokenizer

    config = load_config()
    run = RunDir(DEFAULT_RUN)
    test = load_split(run, names=("test",))["test"].head(limit)
    tokenizer = load_tokenizer(run.merged)
    texts = test["text"].tolist()
    return [
        encode(tokenizer, texts[i : i + 32], config.model.max_length)
        for i in range(0, len(texts), 32)
    ]


def test_default_run_fp16_matches_onnxruntime(default_engines: dict[str, Path]) -> None:
    from bertrt.runners.trt_runner import TrtRunner

    with TrtRunner(default_engines["fp16"]) as runner:
        for batch in _test_batches():
            diff = np.abs(runner(batch) - _ort_logits(DEFAULT_RUN / "onnx" / "model.onnx", batch))
            assert float(diff.max()) <= FP16_ATOL


def test_default_run_int8_agrees_with_onnxruntime(default_engines: dict[str, Path]) -> None:
    from bertrt.runners.trt_runner import TrtRunner

    batches = _test_batches()
    with TrtRunner(default_engines["int8"]) as runner:
        got = np.concatenate([runner(b).argmax(1) for b in batches])
    qdq = DEFAULT_RUN / "onnx" / "model.int8.onnx"
    want = np.concatenate([_ort_logits(qdq, b).argmax(1) for b in batches])
    assert float((got == want).mean()) >= INT8_AGREEMENT


def test_served_engine_batches_stay_within_its_profile(
    tiny_base: Path, tiny_onnx: dict[str, Path], tmp_path: Path
) -> None:
    """`bertrt serve` asks the loaded engine, not the run directory, for its largest batch:
    the profile's (16 here) caps --max-batch 32, and the model is a GPU one (no turns)."""
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from bertrt.config import load_config
    from bertrt.modeling import load_tokenizer
    from bertrt.runners.run_model import RunModel
    from bertrt.runners.trt_runner import TrtRunner
    from bertrt.serve.model import ServedModel
    from bertrt.serve.model_config import model_config
    from bertrt.serve.options import ServeOptions

    engine = _build(tiny_onnx["fp16"], "fp16", tmp_path)
    opened = RunModel("trt-fp16", TrtRunner(engine), load_tokenizer(tiny_base), ("a", "b"),
                      "keep", max_length=32, batch_size=16)  # fmt: skip
    served = ServedModel(opened)
    served.activate()
    try:
        limit, device = served.largest_batch(32), served.runner.device
        assert (limit, served.largest_batch(4), device) == (16, 4, "cuda")
        (answer,) = served([{"text": np.array([[b"How do I sort a list?"]], dtype=object)}])
        assert answer["probabilities"].shape == (1, 2)
    finally:
        served.deactivate()
    options = ServeOptions(max_batch=32)
    cfg = model_config(load_config(None, []), tmp_path, "trt-fp16", options, 2, limit, device)
    settings = json.loads(cfg.parameters["bertrt"].string_value)
    assert cfg.max_batch_size == 16 and settings["turns"] is False
    assert not cfg.dynamic_batching.preferred_batch_size

"""Serving: request texts, the Triton model repository, and the server (where it can start).

The repository tests need only tritonclient (Triton's config schema) and run
on the CPU. The server test starts one ``bertrt serve`` for the module on free
ports and skips, with the reason, where PyTriton's stub cannot run here.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.config import load_config
from bertrt.data.text import clean_body, question_text
from bertrt.serve.texts import RequestError, TextOptions, build_texts

TEXTS = [
    "How do I sort?\n    for x in y:\n        print(x)\n\n\nthanks",
    "Best  book\tfor C++?",
    "x" * 3000,
]


def test_request_texts_are_built_like_the_data_stage() -> None:
    opts = TextOptions("mark")
    text = np.array([t.encode() for t in TEXTS], dtype=object).reshape(-1, 1)
    assert build_texts({"text": text}, opts) == [clean_body(t, "mark") for t in TEXTS]
    title = np.array([b"Why?"], dtype=object)
    body = np.array([b"    code\nprose"], dtype=object)
    assert build_texts({"title": title, "body": body}, opts) == [
        question_text("Why?", "    code\nprose", "mark")
    ]


@pytest.mark.parametrize(
    "request_, message",
    [
        ({}, "missing input"),
        ({"text": np.array([b"  \n "], dtype=object)}, "empty text"),
        ({"text": np.array([1, 2], dtype=np.int32)}, "expected BYTES"),
        ({"text": np.array([b"\xff\xfe"], dtype=object)}, "not valid UTF-8"),
        (
            {"text": np.array([b"a"], dtype=object), "title": np.array([b"b"], dtype=object)},
            "either",
        ),
    ],
)
def test_bad_requests_get_a_clear_error(request_: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        build_texts(request_, TextOptions())


# -- the model repository ------------------------------------------------------------
@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> RunDir:
    from bertrt.export import stage as export_stage
    from tests.conftest import make_trained_run

    run = make_trained_run(tmp_path_factory.mktemp("serve"), tiny_base, rows=60)
    export_stage.run(load_config(None, ["model.max_length=32"]), run)
    return run


def _configs(root: Path) -> dict[str, object]:
    from google.protobuf import text_format

    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    return {
        p.parent.name: text_format.Parse(p.read_text(), pb.ModelConfig())
        for p in sorted(root.glob("*/config.pbtxt"))
    }


def test_triton_repo_configs_match_the_onnx_io(exported_run: RunDir, tmp_path: Path) -> None:
    import onnx

    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from bertrt.serve.repo import RepoOptions, write_repository

    out = write_repository(
        load_config(None, []), exported_run, RepoOptions("onnx-fp32"), tmp_path / "repo"
    )
    configs = _configs(out)
    assert set(configs) == {"bertrt", "tokenizer", "classifier", "postprocess"}
    graph = onnx.load(str(out / "classifier" / "1" / "model.onnx"), load_external_data=False).graph
    cls = configs["classifier"]
    assert cls.backend == "onnxruntime" and cls.max_batch_size == 32
    assert [i.name for i in cls.input] == [i.name for i in graph.input]
    assert [o.name for o in cls.output] == [o.name for o in graph.output] == ["logits"]
    assert {i.data_type for i in cls.input} == {9}  # TYPE_INT64
    assert list(cls.output[0].dims) == [2] and cls.output[0].data_type == 11  # TYPE_FP32
    assert cls.dynamic_batching.max_queue_delay_microseconds == 2000
    ens = configs["bertrt"]
    assert ens.platform == "ensemble"
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [
        "tokenizer",
        "classifier",
        "postprocess",
    ]
    assert [o.name for o in ens.output] == ["label", "probabilities"]
    assert (out / "tokenizer" / "1" / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".repo-*")), "staging directory left behind"


def test_generated_text_builder_and_tokenizer_match_the_run(
    exported_run: RunDir, tmp_path: Path
) -> None:
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from tokenizers import Tokenizer

    from bertrt.modeling import load_tokenizer
    from bertrt.serve.repo import RepoOptions, write_repository

    out = write_repository(
        load_config(None, []), exported_run, RepoOptions("onnx-fp32"), tmp_path / "r"
    )
    namespace: dict[str, object] = {}
    exec((out / "tokenizer" / "1" / "text_builder.py").read_text(), namespace)
    for text in TEXTS:
        assert namespace["clean_body"](text, "mark") == clean_body(text, "mark")  # type: ignore[operator]
        assert namespace["question_text"]("T", text, "drop") == question_text("T", text, "drop")  # type: ignore[operator]
    tok = Tokenizer.from_file(str(out / "tokenizer" / "1" / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(32)
    reference = load_tokenizer(exported_run.merged)(TEXTS, max_length=32, truncation=True)[
        "input_ids"
    ]
    assert [e.ids for e in tok.encode_batch(TEXTS)] == reference


# -- the server ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_refuses_fast_where_the_stub_cannot_read_text(exported_run: RunDir) -> None:
    pytest.importorskip("pytriton")
    from bertrt.serve.server import stub_numpy_problem

    if stub_numpy_problem() is None:
        pytest.skip("NumPy 1.x here: the live server test below covers serving")
    cmd = [
        sys.executable,
        "-m",
        "bertrt",
        "serve",
        "--run-dir",
        str(exported_run.root),
        "--model",
        "onnx-fp32",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "NumPy 1.x" in done.stderr


def test_live_server_answers_and_survives_bad_input(exported_run: RunDir) -> None:
    pytest.importorskip("pytriton")
    from bertrt.serve.client import predict_url
    from bertrt.serve.server import stub_numpy_problem

    if problem := stub_numpy_problem():
        pytest.skip(f"tritonserver cannot serve BYTES here: {problem}")
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    cmd = [sys.executable, "-m", "bertrt", "serve", "--run-dir", str(exported_run.root),
           "--set", "model.max_length=32", "--model", "onnx-fp32", "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics)]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/bertrt/ready", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(1)
        url = f"127.0.0.1:{http}"
        assert predict_url(url, {"text": TEXTS})[0][0] in ("open", "closed")
        for bad in ({"text": ["   "]}, {}):
            with pytest.raises(Exception, match=r"empty text|missing input|0 inputs"):
                predict_url(url, bad)
        assert len(predict_url(url, {"title": ["Why?"], "body": ["x"]})) == 1
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0

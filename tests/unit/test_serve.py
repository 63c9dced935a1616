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
from typing import Any

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.config import load_config
from bertrt.data.text import clean_body, question_text
from bertrt.runners.base import Runner
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


# -- the answer: label names and every class's probability ------------------------------
FIVE = ("open", "not a real question", "not constructive", "off topic", "too localized")


@pytest.mark.parametrize("names", [("open", "closed"), FIVE])
def test_responses_name_the_run_classes_and_keep_every_probability(
    names: tuple[str, ...],
) -> None:
    from bertrt.serve.model import responses

    rng = np.random.default_rng(len(names))
    logits = rng.normal(size=(5, len(names))).astype(np.float32) * 3
    out = responses(logits, [2, 3], names)
    assert len(out) == 2
    probs = np.concatenate([o["probabilities"] for o in out])
    assert probs.dtype == np.float32 and probs.shape == (5, len(names))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(probs.argmax(1), logits.argmax(1))  # class-id order kept
    labels = np.concatenate([o["label"] for o in out])
    assert labels.shape == (5, 1) and labels.dtype == object
    assert [x.decode() for x in labels[:, 0]] == [names[i] for i in logits.argmax(1)]
    assert [o["probabilities"].shape[0] for o in out] == [2, 3]


def test_responses_refuse_a_model_of_other_classes() -> None:
    from bertrt.serve.model import responses

    with pytest.raises(ValueError, match="do not match the labels"):
        responses(np.zeros((2, 5), dtype=np.float32), [2], ("open", "closed"))


def _served(names: tuple[str, ...], rows: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """What the server answers: BYTES labels [n, 1] and FP32 probabilities [n, classes]."""
    from bertrt.serve.model import responses

    logits = np.random.default_rng(rows).normal(size=(rows, len(names))).astype(np.float32)
    (out,) = responses(logits, [rows], names)
    return out["label"], out["probabilities"]


@pytest.mark.parametrize("names", [("open", "closed"), FIVE])
def test_client_returns_every_class_by_name(names: tuple[str, ...]) -> None:
    from bertrt.serve.client import named_answers

    labels, probs = _served(names)
    answers = named_answers(labels, probs, names)
    for answer, row, label in zip(answers, probs, labels[:, 0], strict=True):
        assert answer["label"] == label.decode()
        assert list(answer["probabilities"]) == list(names)
        assert list(answer["probabilities"].values()) == pytest.approx(row.tolist())


def test_client_without_the_run_names_what_it_can() -> None:
    from bertrt.serve.client import named_answers

    labels = np.array([[b"off topic"]], dtype=object)
    probs = np.array([[0.1, 0.2, 0.1, 0.5, 0.1]], dtype=np.float32)
    (answer,) = named_answers(labels, probs, None)
    assert answer["label"] == "off topic"
    assert list(answer["probabilities"]) == [
        "class 0",
        "class 1",
        "class 2",
        "off topic",
        "class 4",
    ]


def test_client_refuses_names_of_another_run() -> None:
    from bertrt.errors import BertrtError
    from bertrt.serve.client import named_answers

    labels, probs = _served(FIVE)
    with pytest.raises(BertrtError, match="give the --run-dir of the run it serves"):
        named_answers(labels, probs, ("open", "closed"), "host:8000")
    # Same class count, other order: the server's "open" won column 0, named otherwise here.
    won = np.array([[b"open"]], dtype=object)
    first = np.array([[0.6, 0.1, 0.1, 0.1, 0.1]], dtype=np.float32)
    assert named_answers(won, first, FIVE)[0]["label"] == "open"
    with pytest.raises(BertrtError, match="5 classes"):
        named_answers(won, first, (FIVE[1], FIVE[0], *FIVE[2:]))


class _FixedLogits(Runner):
    """A runner whose logit of class i is i for the first row, reversed for the next ones."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, prepared: Any) -> np.ndarray:
        rows = len(prepared["input_ids"])
        logits = np.tile(np.arange(self.classes, dtype=np.float32)[::-1], (rows, 1))
        logits[0] = np.arange(self.classes)
        return logits


@pytest.mark.parametrize("names", [("open", "closed"), FIVE])
def test_served_model_answers_each_request_with_the_run_names(
    names: tuple[str, ...], tiny_base: Path
) -> None:
    from bertrt.modeling import load_tokenizer
    from bertrt.serve.model import ServedModel

    model = ServedModel(
        _FixedLogits(len(names)), load_tokenizer(tiny_base), 32, TextOptions(), names
    )
    model.activate()
    text = np.array([b"How do I sort?", b"Best book?"], dtype=object).reshape(-1, 1)
    first, second = model([{"text": text}, {"text": text[:1]}])
    assert [x.decode() for x in first["label"][:, 0]] == [names[-1], names[0]]
    assert second["label"][0, 0] == names[0].encode()
    assert first["probabilities"].shape == (2, len(names))
    model.deactivate()


def test_served_model_with_other_classes_than_the_run_fails_at_start(tiny_base: Path) -> None:
    from bertrt.errors import BertrtError
    from bertrt.modeling import load_tokenizer
    from bertrt.serve.model import ServedModel

    model = ServedModel(_FixedLogits(5), load_tokenizer(tiny_base), 32, TextOptions(), ("a", "b"))
    with pytest.raises(BertrtError, match="has 5 classes but the run's labels are"):
        model.activate()


def test_prediction_line_puts_the_label_first_then_every_class() -> None:
    from bertrt.cli import prediction_line

    line = prediction_line(
        {"label": "off topic", "probabilities": {"open": 0.25, "off topic": 0.70, "x": 0.05}}
    )
    assert line == "off topic\topen=0.2500\toff topic=0.7000\tx=0.0500"
    assert line.split("\t")[0] == "off topic"


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
    from bertrt.serve.client import predict_url, served_labels
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
        answer = predict_url(url, {"text": TEXTS}, served_labels(exported_run))[0]
        assert answer["label"] in ("open", "closed")
        assert list(answer["probabilities"]) == ["open", "closed"]
        for bad in ({"text": ["   "]}, {}):
            with pytest.raises(Exception, match=r"empty text|missing input|0 inputs"):
                predict_url(url, bad)
        assert len(predict_url(url, {"title": ["Why?"], "body": ["x"]})) == 1
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0

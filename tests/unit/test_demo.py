"""``bertrt demo``'s answers without a browser: what each click shows, over a real tiny model.

The browser test (tests/browser/test_demo_page.py) drives the page itself;
these check every kind of input and failure quickly.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.cli import build_parser, main
from bertrt.config import load_config
from bertrt.demo import (
    BOTH,
    EMPTY,
    DemoOptions,
    InProcess,
    Page,
    Remote,
    request_fields,
    validation_examples,
)
from tests.conftest import make_trained_run

MAX_LENGTH = 24


@pytest.mark.parametrize(
    ("text", "title", "body", "expected"),
    [
        ("Why?", "", "", {"text": "Why?"}),
        (None, "A title", None, {"title": "A title", "body": ""}),
        ("", " ", "only a body", {"title": " ", "body": "only a body"}),
    ],
)
def test_request_fields_take_the_whole_text_or_title_and_body(
    text: str | None, title: str | None, body: str | None, expected: dict[str, str]
) -> None:
    assert request_fields(text, title, body) == expected


@pytest.mark.parametrize(
    ("text", "title", "body", "message"),
    [
        ("", "", "", EMPTY),
        (None, None, None, EMPTY),
        ("  \n\t ", " ", "\n", EMPTY),
        ("a whole text", "and a title", "", BOTH),
        ("a whole text", "", "and a body", BOTH),
    ],
)
def test_nothing_or_two_questions_is_a_message(
    text: str | None, title: str | None, body: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        request_fields(text, title, body)


@pytest.fixture(scope="module")
def tiny_run(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return make_trained_run(tmp_path_factory.mktemp("demo"), tiny_base, rows=60)


@pytest.fixture(scope="module")
def page(tiny_run: RunDir) -> Iterator[Page]:
    from bertrt.runners.run_model import RunModel

    config = load_config(overrides=[f"model.max_length={MAX_LENGTH}"])
    with RunModel.open(config, tiny_run, "merged", static_shapes=False) as model:
        yield Page(InProcess(model))


def test_a_question_shows_every_class_and_the_model_and_latency(page: Page) -> None:
    probabilities, message = page.answer("How do I read a file in python?", "", "")
    assert probabilities is not None and list(probabilities) == ["open", "closed"]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    label = max(probabilities, key=probabilities.__getitem__)
    assert message.startswith(f"**{label}** — answered in **")
    assert "`merged` (torch/fp32/cpu), in this process" in message
    assert "truncated" not in message


def test_the_page_answers_what_the_model_answers(page: Page) -> None:
    """The page's probabilities are the run model's own, for a whole text and title + body."""
    model = page.backend.model  # type: ignore[attr-defined]
    title, body = "Best sql book?", "Which one do you recommend?"
    shown, _ = page.answer("", title, body)
    expected = model.probabilities([model.text_of(title=title, body=body)])[0]
    assert shown is not None
    np.testing.assert_allclose(list(shown.values()), expected, atol=1e-6)


@pytest.mark.parametrize("fields", [("", "", ""), ("   ", "\n", "\t"), ("text", "title", "")])
def test_nothing_to_classify_shows_a_message_and_no_label(
    page: Page, fields: tuple[str, str, str]
) -> None:
    before = len(page.latencies_ms)
    probabilities, message = page.answer(*fields)
    assert probabilities is None and message in (EMPTY, BOTH)
    assert len(page.latencies_ms) == before  # nothing was run, so nothing was timed


def test_a_text_over_max_length_says_it_was_truncated(page: Page) -> None:
    probabilities, message = page.answer("why does my code crash " * 20, "", "")
    assert probabilities is not None
    assert f"longer than max_length = {MAX_LENGTH} tokens: it was truncated" in message


def test_a_server_that_is_gone_is_a_message_not_an_exception(tiny_run: RunDir) -> None:
    pytest.importorskip("tritonclient.http")
    remote = Remote(url="127.0.0.1:9", names=("open", "closed"), description="served")
    probabilities, message = Page(remote).answer("Why?", "", "")
    assert probabilities is None
    assert message.startswith("Could not classify: ") and "127.0.0.1:9" in message, message
    assert "Connection refused" in message, message


def test_examples_are_short_validation_rows_of_every_class(tiny_run: RunDir) -> None:
    from bertrt.data import load_split

    examples, note = validation_examples(tiny_run, 4)
    val = load_split(tiny_run, ("val",))["val"]
    labels = dict(zip(val["text"], val["label"], strict=True))
    assert len(examples) == 4 and note == "Examples: 4 rows of the run's validation split."
    assert all(len(t) <= 400 and t in labels for t in examples)
    assert [labels[t] for t in examples[:2]] == [0, 1]  # the classes in turn
    assert validation_examples(tiny_run, 0) == ([], "")


def test_examples_of_a_run_whose_csv_is_gone_are_a_note(tmp_path: Path, tiny_base: Path) -> None:
    run = make_trained_run(tmp_path, tiny_base, rows=40)
    (tmp_path / "train-sample.csv").unlink()
    examples, note = validation_examples(run, 3)
    assert examples == [] and note.startswith("No examples: ") and "is gone" in note


def test_demo_binds_to_loopback_unless_told() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.model, args.url) == ("127.0.0.1", 7860, None, None)
    assert DemoOptions().host == "127.0.0.1"


def test_demo_with_model_and_url_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["demo", "--run-dir", str(tmp_path), "--model", "merged", "--url", "h:1"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "bertrt demo: error: demo: give --model or --url, not both"
    )


def test_demo_turns_gradio_analytics_off_whatever_the_environment(tmp_path: Path) -> None:
    """Gradio reads the variable when imported: the demo sets it first, even over a True."""
    pytest.importorskip("gradio")
    code = "from bertrt.demo import require_gradio; require_gradio(); " + (
        "import gradio.analytics as a; print(a.analytics_enabled())"
    )
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "True"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


# -- the page over a running `bertrt serve` (--url) ---------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_run: RunDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bertrt serve`` of the tiny run's ONNX model on free loopback ports; its URL."""
    pytest.importorskip("tritonclient.http")
    from bertrt.errors import UnavailableError
    from bertrt.export import stage as export_stage
    from bertrt.serve.triton_process import TritonInstall

    try:
        TritonInstall.find()
    except UnavailableError as err:
        pytest.skip(str(err))
    export_stage.run(load_config(None, [f"model.max_length={MAX_LENGTH}"]), tiny_run)
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "bertrt", "serve", "--run-dir", str(tiny_run.root), "--model",
           "onnx-fp32", "--set", f"model.max_length={MAX_LENGTH}", "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--drain-s", "2"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600  # the first start may build the stub's environment
        while "serving onnx-fp32 as model" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bertrt serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield f"127.0.0.1:{http}"
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_page_over_a_server_answers_what_the_run_model_answers(
    tiny_run: RunDir, server: str
) -> None:
    """``--url``: the server names its model and max_length; its answers are the in-process
    model's, and an empty question never reaches it."""
    from bertrt.demo import remote_backend
    from bertrt.runners.run_model import RunModel

    config = load_config(overrides=[f"model.max_length={MAX_LENGTH}"])
    remote = remote_backend(config, tiny_run, server)
    assert remote.description == f"`onnx-fp32` served at {server}"
    assert remote.max_length == MAX_LENGTH and remote.names == ("open", "closed")
    question = "Which sql book do you recommend?"
    shown, message = Page(remote).answer(question, "", "")
    with RunModel.open(config, tiny_run, "onnx-fp32") as model:
        expected = model.probabilities([model.text_of(text=question)])[0]
    assert shown is not None and f"`onnx-fp32` served at {server}" in message
    np.testing.assert_allclose(list(shown.values()), expected, atol=1e-5)
    assert Page(remote).answer(" ", "", "") == (None, EMPTY)
    _, long_message = Page(remote).answer("why does my code crash " * 20, "", "")
    assert "it was truncated" in long_message


def test_a_port_in_use_is_one_line_exit_2(tiny_run: RunDir) -> None:
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "bertrt", "demo", "--run-dir", str(tiny_run.root),
               "--model", "merged", "--port", str(port), "--examples", "0"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"bertrt demo: error: cannot listen on 127.0.0.1:{port} (in use, or not an address "
        "of this machine); give another --port or --host"
    )

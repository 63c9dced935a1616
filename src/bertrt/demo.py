"""``bertrt demo``: a Gradio page where a person types a question and sees what a run's model says.

The page shows the winning class and a bar for every class's probability,
the model that answered and how long the answer took, and offers rows of the
run's validation split as examples. The model runs in this process through
:class:`bertrt.runners.run_model.RunModel` (the run's deployment model unless
``--model``), or behind a running ``bertrt serve`` / Triton server (``--url``,
KServe v2 through :mod:`bertrt.serve.client`), so the page is the same either way.

A person can type anything, so nothing typed reaches the model unchecked: an
empty or whitespace-only question, or a whole text together with a
title/body, gets a message instead of a label, and a question longer than
``max_length`` tokens is answered with a note that the model read only its start.

Nothing leaves the machine: Gradio's analytics are off, no share link is
made, the theme uses the system's fonts (Gradio's default theme loads Google
Fonts), and the server binds to 127.0.0.1 unless ``--host`` says otherwise.
Gradio is optional (the ``demo`` extra) and imported only when the page is built.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bertrt.artifacts import RunDir
from bertrt.config import Config
from bertrt.data.text import request_text
from bertrt.errors import BertrtError, ConfigError, UnavailableError
from bertrt.modeling import clip_text

if TYPE_CHECKING:
    from bertrt.runners.run_model import RunModel

Fields = dict[str, str]  # a request: {"text": ...}, or {"title": ..., "body": ...}
Answer = tuple[dict[str, float] | None, str]  # what the page shows: (class -> p, message)

EMPTY = "Type a question first (the whole text, or a title and/or a body): there is nothing to classify."
BOTH = (
    "Give either the whole text or a title and body, not both: "
    "clear one of them and classify again."
)
EXAMPLE_CHARS = 400  # validation rows longer than this make an unreadable examples table


@dataclass(frozen=True)
class DemoOptions:
    """``bertrt demo``'s flags."""

    model: str | None = None  # registry name; None: the run's deployment model
    url: str | None = None  # a running `bertrt serve` / Triton server instead
    host: str = "127.0.0.1"
    port: int = 7860
    examples: int = 6


def request_fields(text: str | None, title: str | None, body: str | None) -> Fields:
    """The request of the page's three boxes; a :class:`ValueError` with the page's
    message when there is nothing to classify or two questions at once."""
    text, title, body = text or "", title or "", body or ""
    if text.strip() and (title.strip() or body.strip()):
        raise ValueError(BOTH)
    if text.strip():
        return {"text": text}
    if title.strip() or body.strip():
        return {"title": title, "body": body}
    raise ValueError(EMPTY)


def model_text(fields: Fields, code_blocks: str) -> str:
    """The text the model reads for ``fields``, built as the data stage built training texts."""
    return request_text(fields.get("text"), fields.get("title"), fields.get("body"), code_blocks)


def too_long(tokenizer: Any, text: str, max_length: int) -> bool:
    """Whether ``text`` has more tokens than a model of ``max_length`` reads."""
    ids = tokenizer(clip_text(text, max_length + 1), truncation=False, verbose=False)["input_ids"]
    return len(ids) > max_length


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]  # every class of the run, in class-id order
    seconds: float  # text to probabilities: tokenize + model, or the server's round trip
    truncated: bool | None  # None: not known (a server of a run without its tokenizer here)


class Backend(Protocol):
    """Where the page's questions are answered."""

    description: str  # the model, as the page names it
    max_length: int | None

    def classify(self, fields: Fields) -> Prediction: ...


class InProcess:
    """An activated :class:`~bertrt.runners.run_model.RunModel`; one question at a time
    (a runner's session is not shared between threads)."""

    def __init__(self, model: RunModel) -> None:
        self.model = model
        self.max_length: int | None = model.max_length
        self.description = f"`{model.name}` ({model.runner.label}), in this process"
        self._lock = threading.Lock()

    def classify(self, fields: Fields) -> Prediction:
        text = self.model.text_of(**fields)
        with self._lock:
            start = time.perf_counter()
            probabilities = self.model.probabilities([text])[0]
            seconds = time.perf_counter() - start
        named = {n: float(p) for n, p in zip(self.model.labels, probabilities, strict=True)}
        return Prediction(named, seconds, self.model.truncated(text))


@dataclass
class Remote:
    """A running ``bertrt serve`` or Triton server with the ``bertrt`` model (KServe v2).

    The server builds the model text itself; the run's tokenizer, where there is one,
    only tells the page whether the question was truncated.
    """

    url: str
    names: Sequence[str] | None  # the run's class names (checked against the server's)
    description: str
    max_length: int | None = None
    tokenizer: Any = None
    code_blocks: str = "keep"

    def classify(self, fields: Fields) -> Prediction:
        from bertrt.serve.client import predict_url

        start = time.perf_counter()
        answer = predict_url(self.url, {k: [v] for k, v in fields.items()}, self.names)[0]
        seconds = time.perf_counter() - start
        truncated = None
        if self.tokenizer is not None and self.max_length is not None:
            text = model_text(fields, self.code_blocks)
            truncated = too_long(self.tokenizer, text, self.max_length)
        return Prediction(dict(answer["probabilities"]), seconds, truncated)


@dataclass
class Page:
    """The page's answer to each click, and the latencies it has measured so far."""

    backend: Backend
    latencies_ms: list[float] = field(default_factory=list)

    def answer(self, text: str | None, title: str | None, body: str | None) -> Answer:
        """(probabilities by class, message): a message alone for anything not classifiable."""
        try:
            fields = request_fields(text, title, body)
        except ValueError as err:
            return None, str(err)
        try:
            prediction = self.backend.classify(fields)
        except BertrtError as err:
            return None, f"Could not classify: {' '.join(str(err).split())}"
        ms = prediction.seconds * 1000
        self.latencies_ms.append(ms)
        label = max(prediction.probabilities, key=prediction.probabilities.__getitem__)
        count = len(self.latencies_ms)
        lines = [
            f"**{label}** — answered in **{ms:.1f} ms** by {self.backend.description}; "
            f"median of this page's {count} answer{'s' if count > 1 else ''} "
            f"{statistics.median(self.latencies_ms):.1f} ms.",
            " · ".join(f"{name} {p:.4f}" for name, p in prediction.probabilities.items()),
        ]
        if prediction.truncated:
            lines.append(
                f"The text is longer than max_length = {self.backend.max_length} tokens: "
                "it was truncated, and the model read only its first "
                f"{self.backend.max_length} tokens."
            )
        return prediction.probabilities, "\n\n".join(lines)


def validation_examples(run: RunDir, count: int) -> tuple[list[str], str]:
    """Up to ``count`` short validation rows, the classes taken in turn, and a note.

    Without the run's CSV (moved, changed) the page still works, without examples,
    and says why.
    """
    if count <= 0:
        return [], ""
    from bertrt.data import load_split

    try:
        rows = load_split(run, ("val",))["val"]
    except BertrtError as err:
        return [], f"No examples: {err}"
    short = rows[rows["text"].str.len() <= EXAMPLE_CHARS]
    by_class = [list(group["text"]) for _, group in short.groupby("label", sort=True)]
    picked: list[str] = []
    for turn in range(count):
        for texts in by_class:
            if turn < len(texts) and len(picked) < count:
                picked.append(texts[turn])
    return picked, f"Examples: {len(picked)} rows of the run's validation split."


def theme() -> Any:
    """Gradio's default look on the system's fonts, so the page loads nothing from the internet."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )


def build_page(page: Page, header: str, examples: list[str], note: str) -> Any:
    """The Gradio Blocks: the three text boxes, the button, the label with every class's
    bar, the message, and the examples."""
    import gradio as gr

    with gr.Blocks(title="bertrt demo", analytics_enabled=False) as blocks:
        gr.Markdown(header, elem_id="model-info")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Question (whole text)", lines=5, elem_id="text")
                title = gr.Textbox(label="or a title", elem_id="title")
                body = gr.Textbox(label="and a body", lines=3, elem_id="body")
                button = gr.Button("Classify", variant="primary", elem_id="classify")
            with gr.Column():
                label = gr.Label(label="Prediction", elem_id="label")
                message = gr.Markdown(elem_id="message")
        if examples:
            gr.Examples([[t] for t in examples], inputs=[text], label=note)
        elif note:
            gr.Markdown(note, elem_id="examples-note")
        button.click(page.answer, [text, title, body], [label, message], concurrency_limit=1)
    return blocks


def header_of(run: RunDir, backend: Backend, labels: Sequence[str] | None) -> str:
    classes = ", ".join(labels) if labels else "as the server names them"
    limit = f"; max_length {backend.max_length} tokens" if backend.max_length else ""
    return (
        f"## bertrt demo\nRun `{run.root}` · model {backend.description} · "
        f"classes: {classes}{limit}"
    )


def serve_page(page: Page, run: RunDir, labels: Sequence[str] | None, options: DemoOptions) -> None:
    """Build the page and serve it until Ctrl-C or SIGTERM."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    examples, note = validation_examples(run, options.examples)
    blocks = build_page(page, header_of(run, page.backend, labels), examples, note)
    try:
        blocks.launch(
            server_name=options.host,
            server_port=options.port,
            share=False,
            prevent_thread_lock=True,
            quiet=True,
            theme=theme(),
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
        )
    except OSError:  # gradio's message names its own environment variables and launch()
        raise ConfigError(
            f"cannot listen on {options.host}:{options.port} (in use, or not an address of "
            "this machine); give another --port or --host"
        ) from None
    print(f"bertrt demo: http://{options.host}:{options.port}/ (Ctrl-C stops it)", flush=True)
    _wait_for_signal(blocks.close)


def _wait_for_signal(close: Callable[[], None]) -> None:
    """Block until Ctrl-C or SIGTERM, then stop the page's server."""
    import signal

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        close()


def served_settings(url: str) -> dict[str, Any]:
    """What ``bertrt serve`` says it runs (its model's ``bertrt`` config parameter:
    registry model name, max_length); empty for a server that does not say (an
    ensemble from ``bertrt triton-repo``)."""
    from tritonclient.utils import InferenceServerException

    from bertrt.serve.client import MODEL_NAME, client

    with client(url, timeout_s=10.0) as conn:
        try:
            config = conn.get_model_config(MODEL_NAME)
        except (OSError, InferenceServerException) as err:
            why = err.message() if isinstance(err, InferenceServerException) else err.strerror
            raise UnavailableError(
                f"--url {url}: no `{MODEL_NAME}` model answers ({why})"
            ) from None
    raw = config.get("parameters", {}).get("bertrt", {}).get("string_value")
    return dict(json.loads(raw)) if raw else {}


def remote_backend(config: Config, run: RunDir, url: str) -> Remote:
    """The server at ``url`` as the page's backend, named by what it says it runs."""
    from bertrt.data import read_split
    from bertrt.runners.run_model import run_tokenizer
    from bertrt.serve.client import served_labels

    settings = served_settings(url)
    model = settings.get("model")
    description = f"`{model}` served at {url}" if model else f"served at {url}"
    tokenizer = run_tokenizer(run) if (run.merged / "tokenizer_config.json").is_file() else None
    code_blocks = "keep"
    if run.split.exists():
        code_blocks = str(read_split(run).get("text", {}).get("code_blocks", "keep"))
    return Remote(
        url=url,
        names=served_labels(run),
        description=description,
        max_length=int(settings.get("max_length", config.model.max_length)),
        tokenizer=tokenizer,
        code_blocks=code_blocks,
    )


def require_gradio() -> None:
    """Gradio imported with its analytics off, or exit 3 before any model is loaded."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise UnavailableError(
            f"bertrt demo needs gradio ({err}); pip install 'bertrt[demo]'"
        ) from None


def run(config: Config, rundir: RunDir, options: DemoOptions) -> None:
    """``bertrt demo``: the page over the run's model in process, or over ``options.url``."""
    if options.url is not None and options.model is not None:
        raise ConfigError("demo: give --model or --url, not both")
    require_gradio()
    if options.url is not None:
        remote = remote_backend(config, rundir, options.url)
        serve_page(Page(remote), rundir, remote.names, options)
        return
    from bertrt.runners.run_model import RunModel

    with RunModel.open(config, rundir, options.model, stage="demo", static_shapes=False) as model:
        model.probabilities(["Warm-up: how do I read a file line by line?"])
        serve_page(Page(InProcess(model)), rundir, model.labels, options)

"""Talk to a running ``bertrt serve`` (or the ``triton-repo`` ensemble) with tritonclient.

The request is the model's contract: BYTES ``text`` [n, 1], or ``title`` and
``body``; the answer ``label`` [n, 1] (the class name) and ``probabilities``
[n, classes] in class-id order. Used by ``bertrt predict --url`` and the load test.

The answer names only the winning class of each row, so the names of the
probability columns come from the run the server was started with
(``--run-dir``'s split.json); the client checks that they agree with the
server's labels, so a run directory of another task is an error, not a
mislabelled answer.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.errors import BertrtError, UnavailableError
from bertrt.metrics import named_probabilities

MODEL_NAME = "bertrt"


def host_port(url: str) -> str:
    """``http://host:8000`` or ``host:8000`` → ``host:8000`` (what tritonclient takes)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    return parsed.netloc or parsed.path


def open_direct(url: str, timeout_s: float) -> Any:
    """``urlopen`` that never goes through an ``http_proxy``: the server is on this machine."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=timeout_s)


def client(url: str, concurrency: int = 1, timeout_s: float = 60.0) -> Any:
    try:
        import tritonclient.http as httpclient
    except ImportError as err:
        raise UnavailableError(
            f"--url needs tritonclient ({err}); pip install 'tritonclient[http,grpc]'"
        ) from None
    return httpclient.InferenceServerClient(
        host_port(url),
        concurrency=concurrency,
        connection_timeout=timeout_s,
        network_timeout=timeout_s,
    )


def text_inputs(fields: dict[str, list[str]]) -> list[Any]:
    """One BYTES [n, 1] input per given field (``text``, or ``title``/``body``)."""
    import tritonclient.http as httpclient

    inputs = []
    for name, values in fields.items():
        array = np.array([v.encode("utf-8") for v in values], dtype=object).reshape(-1, 1)
        tensor = httpclient.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def served_labels(run: RunDir) -> tuple[str, ...] | None:
    """The class names of ``run`` when it has a split, else None (a bare ``--url``)."""
    from bertrt.data.labels import run_labels

    return run_labels(run) if run.split.exists() else None


def named_answers(
    labels: np.ndarray, probabilities: np.ndarray, names: Sequence[str] | None, url: str = "server"
) -> list[dict[str, Any]]:
    """``{"label", "probabilities": {name: p}}`` per row from the server's two outputs.

    Without ``names`` a column is named by the server's label of a row it won,
    else ``class i``. With them, the server's labels must be ``names[argmax]``:
    otherwise the server runs another run's model and the names would lie.
    """
    served = [x.decode() if isinstance(x, bytes) else str(x) for x in labels.reshape(-1)]
    probs = np.asarray(probabilities, dtype=np.float32).reshape(len(served), -1)
    winners = probs.argmax(axis=1)
    if names is None:
        won = {int(i): label for i, label in zip(winners, served, strict=True)}
        names = [won.get(i, f"class {i}") for i in range(probs.shape[1])]
    agree = len(names) == probs.shape[1] and all(
        names[int(i)] == label for i, label in zip(winners, served, strict=True)
    )
    if not agree:
        raise BertrtError(
            f"{url} answers with {probs.shape[1]} classes (labels {sorted(set(served))}), "
            f"not this run's {list(names)}; give the --run-dir of the run it serves"
        )
    return named_probabilities(probs, names)


def server_error(message: str) -> str:
    """What the client got wrong, out of a server error that may carry a traceback.

    ``bertrt serve`` answers a malformed request with the message itself;
    a Python model that raised instead (an older ``bertrt serve``, any
    PyTriton server) sends its whole traceback, whose last ``RequestError:``
    line is the message meant for the client
    (:class:`bertrt.serve.texts.RequestError`). Errors Triton raises itself
    (dtype, shape, batch size, queue full) come as one line.
    """
    found = re.findall(r"RequestError: (.+)", message)
    return found[-1].strip() if found else " ".join(message.split())


def predict_url(
    url: str, fields: dict[str, list[str]], names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """``{"label": name, "probabilities": {name: p, ...}}`` per row, from the server at ``url``.

    ``names`` are the served run's class names (:func:`served_labels`), in class-id order.
    """
    from tritonclient.utils import InferenceServerException

    try:
        with client(url) as conn:
            result = conn.infer(MODEL_NAME, text_inputs(fields))
    except InferenceServerException as err:
        raise BertrtError(f"{url}: {server_error(err.message() or str(err))}") from None
    except OSError as err:  # refused, unknown host, timed out: one line, not gevent's traceback
        why = err.strerror or str(err) or type(err).__name__
        raise BertrtError(
            f"--url {url}: cannot reach a server there ({why}); is `bertrt serve` running?"
        ) from None
    return named_answers(result.as_numpy("label"), result.as_numpy("probabilities"), names, url)

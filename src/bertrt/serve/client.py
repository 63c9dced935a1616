"""Talk to a running ``bertrt serve`` (or the ``triton-repo`` ensemble) with tritonclient.

The request is the model's contract: BYTES ``text`` [n, 1], or ``title`` and
``body``; the answer ``label`` [n, 1] and ``probabilities`` [n, classes].
Used by ``bertrt predict --url`` and the load test.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import numpy as np

from bertrt.errors import BertrtError, UnavailableError

MODEL_NAME = "bertrt"


def host_port(url: str) -> str:
    """``http://host:8000`` or ``host:8000`` → ``host:8000`` (what tritonclient takes)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    return parsed.netloc or parsed.path


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


def predict_url(url: str, fields: dict[str, list[str]]) -> list[tuple[str, float]]:
    """(label, probability of that label) per row, from the server at ``url``."""
    from tritonclient.utils import InferenceServerException

    with client(url) as conn:
        try:
            result = conn.infer(MODEL_NAME, text_inputs(fields))
        except InferenceServerException as err:
            raise BertrtError(f"{url}: {err.message()}") from None
    labels = [x.decode() for x in result.as_numpy("label").reshape(-1)]
    probs = result.as_numpy("probabilities")
    return [(label, float(row.max())) for label, row in zip(labels, probs, strict=True)]

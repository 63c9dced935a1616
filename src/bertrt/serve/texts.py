"""Request payloads to model inputs, exactly as the data stage built the training texts.

A request carries ``text`` (the whole question) or ``title`` and/or ``body``;
either way the text goes through :func:`bertrt.data.text.request_text` (as
in every other consumer) with the run's own ``split.json`` text options, so a served question is tokenized like the rows the model was
trained and benchmarked on. Anything malformed raises :class:`RequestError`
with a message meant for the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertrt.artifacts import RunDir
from bertrt.data import read_split
from bertrt.data.text import request_text

TEXT_INPUTS = ("text", "title", "body")


class RequestError(ValueError):
    """A request the server answers with an error (bad input), never a crash."""


@dataclass(frozen=True)
class TextOptions:
    """How the run's data stage built texts (split.json ``text``), and the server's size limit."""

    code_blocks: str = "keep"
    max_request_bytes: int | None = None  # the text of one request, all rows; None: no limit

    @classmethod
    def of(cls, run: RunDir, max_request_bytes: int | None = None) -> TextOptions:
        return cls(str(read_split(run)["text"].get("code_blocks", "keep")), max_request_bytes)


def request_bytes(request: Mapping[str, Any]) -> int:
    """The bytes of text a request carries, every BYTES input and row together."""
    total = 0
    for name in TEXT_INPUTS:
        if name in request:
            array = np.asarray(request[name])
            if array.dtype.kind in ("O", "S"):
                total += sum(len(item) for item in array.reshape(-1))
    return total


def _check_size(request: Mapping[str, Any], limit: int | None) -> None:
    """Refused before any decoding or tokenizing: a request's cost stays bounded."""
    size = request_bytes(request) if limit is not None else 0
    if limit is not None and size > limit:
        raise RequestError(
            f"request too large: {size} bytes of text, over this server's limit of {limit} "
            "(bertrt serve --max-request-bytes); send fewer or shorter texts"
        )


def _strings(name: str, value: Any) -> list[str]:
    """One BYTES input ([n] or [n, 1]) as n decoded strings."""
    array = np.asarray(value)
    if array.dtype.kind not in ("O", "S"):
        raise RequestError(f"input {name!r}: expected BYTES (strings), got {array.dtype}")
    out = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError as err:
            raise RequestError(f"input {name!r}: not valid UTF-8 ({err.reason})") from None
    return out


def build_texts(request: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The model texts of one request (``text``, or ``title``/``body``), checked.

    All or nothing: one bad row (empty, not UTF-8) refuses the whole request,
    naming the row; other requests of the same dynamic batch are answered.
    """
    _check_size(request, options.max_request_bytes)
    given = {name: _strings(name, request[name]) for name in TEXT_INPUTS if name in request}
    if not given:
        raise RequestError("missing input: send BYTES `text`, or `title` and/or `body`")
    if "text" in given and len(given) > 1:
        raise RequestError("send either `text` or `title`/`body`, not both")
    if "text" in given:
        texts = [request_text(text=t, code_blocks=options.code_blocks) for t in given["text"]]
    else:
        titles, bodies = given.get("title"), given.get("body")
        n = len(titles if titles is not None else bodies or [])
        titles, bodies = titles or [""] * n, bodies or [""] * n
        if len(titles) != len(bodies):
            raise RequestError(f"`title` has {len(titles)} rows, `body` {len(bodies)}")
        texts = [
            request_text(title=t, body=b, code_blocks=options.code_blocks)
            for t, b in zip(titles, bodies, strict=True)
        ]
    if not texts:
        raise RequestError("empty request: no rows")
    for i, text in enumerate(texts):
        if not text.strip():
            raise RequestError(f"row {i}: empty text (nothing but whitespace)")
    return texts

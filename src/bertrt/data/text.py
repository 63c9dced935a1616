"""Model text from a question: title, optional feature words, and the Markdown body.

The body stays Markdown: the raw source is what the reference project fed
BERT, and inline code or formatting is itself a signal. Code blocks (lines
indented by four spaces or a tab, the Markdown of 2008-2012) are the one
choice offered: ``keep`` them, ``mark`` each with a short ``[code]`` marker so
the 128-token budget goes to prose, or ``drop`` them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from bertrt.errors import DataError

_CODE_BLOCK = re.compile(r"(?:^(?:    |\t).*(?:\r?\n|$))+", re.MULTILINE)
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def clean_body(body: str, code_blocks: str = "keep") -> str:
    if code_blocks == "mark":
        body = _CODE_BLOCK.sub("[code]\n", body)
    elif code_blocks == "drop":
        body = _CODE_BLOCK.sub("\n", body)
    body = _SPACES.sub(" ", body)
    return _BLANK_LINES.sub("\n", body).strip()


def feature_words(features: pd.Series) -> str:
    """Tabular features as a short phrase the tokenizer splits into familiar words."""
    return (
        f"reputation {int(features['reputation'])}, account {int(features['account_age_days'])} "
        f"days, {int(features['num_tags'])} tags."
    )


def question_text(
    title: str, body: str, code_blocks: str = "keep", features: pd.Series | None = None
) -> str:
    prefix = feature_words(features) + "\n" if features is not None else ""
    return f"{prefix}{title.strip()}\n{clean_body(body, code_blocks)}"


def request_text(
    text: str | None = None,
    title: str | None = None,
    body: str | None = None,
    code_blocks: str = "keep",
) -> str:
    """The model text of one question as a user sends it: the whole ``text``, or ``title``
    and ``body``, built as the data stage built the training texts. The one place a request
    or a scored row becomes text (RunModel.text_of, the served model, the demo). Tabular
    features are unknown at request time, so a run trained with features_in_text gets the
    text without them."""
    if text is not None:
        return clean_body(text, code_blocks)
    return question_text(title or "", body or "", code_blocks)


def require_text(text: str, where: str) -> str:
    """``text`` if a model may score it: the data stage drops rows with no text, so
    predicting on empty or whitespace-only text would be a confident guess about nothing."""
    if not text.strip():
        raise DataError(f"{where}: the text is empty or only whitespace; nothing to classify")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise DataError(
            f"{where}: not UTF-8 text ({byte} at character {err.start}); pass UTF-8 text"
        ) from err
    return text


def read_question(source: str) -> str:
    """The text of ``--file PATH`` (``-``: stdin), for questions too long for a command line.

    Decoded strictly as UTF-8 so a bad byte is named by its offset, not replaced.
    """
    name = "stdin" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as err:
        raise DataError(f"--file {name}: cannot be read: {err.strerror or err}") from err
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"--file {name}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from err

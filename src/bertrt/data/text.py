"""Model text from a question: title, optional feature words, and the Markdown body.

The body stays Markdown: the raw source is what the reference project fed
BERT, and inline code or formatting is itself a signal. Code blocks (lines
indented by four spaces or a tab, the Markdown of 2008-2012) are the one
choice offered: ``keep`` them, ``mark`` each with a short ``[code]`` marker so
the 128-token budget goes to prose, or ``drop`` them.
"""

from __future__ import annotations

import re

import pandas as pd

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

"""RunModel: one opened model per command, and texts clipped before they are tokenized."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from bertrt.config import load_config
from bertrt.data.labels import run_labels
from bertrt.modeling import CHARS_PER_TOKEN, clip_text, encode, load_tokenizer
from bertrt.runners.batching import tokenize_unpadded
from bertrt.runners.run_model import RunModel, deployment_model
from tests.conftest import make_trained_run

_WORDS = "the quick brown fox jumps over a lazy dog while parsing JSON arrays in C++".split()


def _long_text(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def test_clip_leaves_short_texts_alone() -> None:
    text = _long_text(50)
    assert clip_text(text, 128) is text


def test_clip_bounds_length_and_cuts_on_whitespace() -> None:
    text = _long_text(200_000)  # ~1 MB
    clipped = clip_text(text, 128)
    assert len(clipped) <= 128 * CHARS_PER_TOKEN
    assert text.startswith(clipped)
    assert text[len(clipped)] == " "  # no word split at the cut


def test_clip_without_whitespace_is_a_hard_cut() -> None:
    text = "x" * (128 * CHARS_PER_TOKEN * 3)
    assert clip_text(text, 128) == "x" * (128 * CHARS_PER_TOKEN)


@pytest.mark.parametrize("max_length", [16, 128])
def test_clipped_tokens_equal_whole_text_tokens(tiny_base: Path, max_length: int) -> None:
    """The tokens a model reads do not change: clipping only skips what truncation drops."""
    tokenizer = load_tokenizer(tiny_base)
    texts = [_long_text(60_000, seed) for seed in range(3)]
    whole = tokenizer(texts, max_length=max_length, truncation=True)["input_ids"]
    assert tokenize_unpadded(tokenizer, texts, max_length).input_ids == whole
    padded = encode(tokenizer, texts, max_length, "max_length")["input_ids"]
    assert padded.tolist() == whole


def test_run_model_scores_like_the_runner(tmp_path: Path, tiny_base: Path) -> None:
    run = make_trained_run(tmp_path, tiny_base)
    config = load_config()
    with RunModel.open(config, run, "merged") as model:
        assert model.labels == run_labels(run)
        texts = [model.text_of("How do I sort a list?"), model.text_of(title="T", body="b")]
        assert texts[1] == "T\nb"
        probabilities = model.probabilities(texts)
        assert probabilities.shape == (2, len(model.labels))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert not model.truncated("short question")
        assert model.truncated(_long_text(5_000))


def test_deployment_model_without_cpu_choice_is_onnx_cpu(tmp_path: Path, tiny_base: Path) -> None:
    run = make_trained_run(tmp_path, tiny_base)
    assert deployment_model(run) == "onnx-cpu"
    run.cpu_choice.parent.mkdir(parents=True, exist_ok=True)
    run.cpu_choice.write_text("{}")
    assert deployment_model(run) == "cpu"

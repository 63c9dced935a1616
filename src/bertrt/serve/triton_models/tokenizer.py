"""Triton Python-backend model: BYTES text (or title + body) → the classifier's int64 inputs.

Copied as ``tokenizer/1/model.py`` by ``bertrt triton-repo``, beside the run's
``tokenizer.json`` and ``text_builder.py`` (the data stage's text functions),
so the container needs only ``tokenizers`` and NumPy. It emits exactly the
classifier's inputs (``bertrt_text.json``: ``inputs``; no ``token_type_ids``
for DistilBERT or RoBERTa), padded with the tokenizer's own ``pad_id``. Each request is padded
by the project's one padding rule (``padded_width``, copied into text_builder.py
from bertrt.runners.batching) with the coarser multiple bertrt_text.json gives
(``pad_multiple``): the classifier's dynamic batcher batches only equal shapes,
so a few widths batch far better than every width. A request becomes text
through the same ``request_text`` as everywhere else in the project.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from text_builder import padded_width, request_text
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        here = Path(__file__).parent
        settings = json.loads((here / "bertrt_text.json").read_text())
        self.code_blocks = settings["code_blocks"]
        self.max_length = int(settings["max_length"])
        self.inputs = list(settings["inputs"])
        self.pad_id = int(settings["pad_id"])
        self.pad_multiple = int(settings["pad_multiple"])
        self.min_width = int(settings["min_width"])
        self.tokenizer = Tokenizer.from_file(str(here / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def _texts(self, request: Any) -> list[str]:
        def strings(name: str) -> list[str] | None:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return None
            return [bytes(x).decode("utf-8") for x in tensor.as_numpy().reshape(-1)]

        text, title, body = strings("text"), strings("title"), strings("body")
        if text is not None:
            texts = [request_text(text=t, code_blocks=self.code_blocks) for t in text]
        elif title is not None or body is not None:
            n = len(title if title is not None else body or [])
            pairs = zip(title or [""] * n, body or [""] * n, strict=True)
            texts = [request_text(title=t, body=b, code_blocks=self.code_blocks) for t, b in pairs]
        else:
            raise ValueError("missing input: send BYTES `text`, or `title` and/or `body`")
        if any(not t.strip() for t in texts):
            raise ValueError("empty text (nothing but whitespace)")
        return texts

    def _encode(self, texts: list[str]) -> list[Any]:
        encodings = self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        width = padded_width(longest, self.max_length, self.pad_multiple, self.min_width)
        arrays = {
            "input_ids": np.full((len(texts), width), self.pad_id, np.int64),
            "attention_mask": np.zeros((len(texts), width), np.int64),
            "token_type_ids": np.zeros((len(texts), width), np.int64),
        }
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            arrays["input_ids"][row, :n] = enc.ids
            arrays["attention_mask"][row, :n] = 1
            arrays["token_type_ids"][row, :n] = enc.type_ids
        return [pb_utils.Tensor(name, arrays[name]) for name in self.inputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:  # one bad request gets its own error, the others their answer
            try:
                tensors = self._encode(self._texts(request))
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except (ValueError, UnicodeDecodeError) as err:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses

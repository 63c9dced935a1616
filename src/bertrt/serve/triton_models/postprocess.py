"""Triton Python-backend model: logits → ``label`` (BYTES) and ``probabilities`` (FP32).

Copied as ``postprocess/1/model.py`` by ``bertrt triton-repo``; the label
names come from ``labels.json`` beside it (the run's class order).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        names = json.loads((Path(__file__).parent / "labels.json").read_text())
        self.labels = np.array([n.encode() for n in names], dtype=object)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
            labels = self.labels[probs.argmax(axis=1)].reshape(-1, 1)
            tensors = [pb_utils.Tensor("label", labels), pb_utils.Tensor("probabilities", probs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

"""QLoRA (``--preset qlora``): LoRA trained over a base held in 4-bit NF4, merged into fp32.

The frozen base is most of what a LoRA fine-tune keeps in memory. QLoRA
(Dettmers et al., 2023) stores it in 4-bit NormalFloat with double
quantization (the per-block scales quantized too), computes in the training
precision and trains the LoRA adapters in full precision on top.
transformers' ``BitsAndBytesConfig`` loads the base that way (every Linear
but the classification head, which is trained in full);
``peft.prepare_model_for_kbit_training`` casts what is left (embeddings,
LayerNorms, head) to fp32, lets gradients reach the inputs and turns on
gradient checkpointing; the preset's LoRA goes on top.

Every later stage wants a plain fp32 model. The adapter learned its
correction against the *dequantized* NF4 weights, not the original ones, so
it is merged into those: each 4-bit Linear of the trained model is
dequantized into an fp32 copy of the base, the trained adapter and head are
set on it, and peft merges them. The merged model is checked against the
4-bit model's logits on validation rows, both computed in fp32, and the gap,
the argmax agreement and both accuracies go into train_metrics.json, with
the same figures for the adapter merged into the original (never quantized)
weights, to show what merging there would cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertrt.errors import UnavailableError, VerificationError
from bertrt.modeling import encode, model_input_names, select_inputs
from bertrt.trainer.merge import fp32_logits
from bertrt.trainer.presets import Architecture

# Validation rows the merge is checked on: enough for the two accuracies to mean something.
CHECK_ROWS = 512


def _bitsandbytes() -> Any:
    """bitsandbytes, quietly: on an AVX512-BF16 CPU its import asks the `kernels` package for
    a hub kernel, which is refused offline and logs a warning; its own kernels are used."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def unavailable(device: str) -> str | None:
    """Why NF4 training cannot run on ``device`` here, or None.

    Tried, not guessed from a version table: one double-quantized NF4
    ``Linear4bit`` runs forward and backward on the device.
    """
    try:
        bnb = _bitsandbytes()
    except ImportError as err:
        return f"bitsandbytes is not installed ({err}); pip install 'bertrt[qlora]'"
    try:
        layer = bnb.nn.Linear4bit(
            64, 64, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4"
        ).to(device)
        x = torch.randn(2, 64, device=device, requires_grad=True)
        layer(x).sum().backward()
    except Exception as err:  # whatever the backend raises, the answer is "not on this device"
        return (
            f"bitsandbytes {bnb.__version__} cannot run a 4-bit NF4 layer on {device} "
            f"({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        )
    return None


def require() -> None:
    """Exit 3 with one line, before any row is read, where NF4 cannot train on this
    machine's training device (the GPU where there is one, else the CPU)."""
    why = unavailable("cuda" if torch.cuda.is_available() else "cpu")
    if why:
        raise UnavailableError(f"train.preset=qlora: {why}")


def quantization_config(precision: str, architecture: Architecture) -> Any:
    """NF4 with double quantization, computing in the training precision; the head stays fp32."""
    from transformers import BitsAndBytesConfig

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=list(architecture.head),
    )


def prepare(model: Any) -> Any:
    """peft's preparation of a k-bit base for training (fp32 rest, input grads, checkpointing),
    on weights that keep their training layout (:func:`keep_training_layout`)."""
    from peft import prepare_model_for_kbit_training

    keep_training_layout(model)
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def keep_training_layout(model: Any) -> Any:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit``'s
    weight the first time it runs in eval mode without gradients (the
    Trainer's evaluation at the end of an epoch), with its scales rounded to
    bf16, and keeps that layout: the next training step then takes the
    inference kernel, which has no backward (an in-place error, or no
    gradient reaching the layers below). Kept in the training layout, eval
    computes exactly as training does (dequantize, then matmul in the compute dtype).
    """
    bnb = _bitsandbytes()
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model


def dequantized_weights(quantized: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """fp32 (weight, bias) of every 4-bit Linear of ``quantized`` (a peft model), by the name
    the module has in the plain model (peft's ``.base_layer`` suffix dropped)."""
    bnb = _bitsandbytes()
    out = {}
    for name, module in quantized.get_base_model().named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            bias = None if module.bias is None else module.bias.data.float()
            out[name.removesuffix(".base_layer")] = (weight.float(), bias)
    return out


def merged_copy(quantized: Any, base: Any, dequantize: bool) -> Any:
    """``base`` (an fp32 model of the same architecture) with the trained adapter and head of
    ``quantized`` merged in; its Linear weights first replaced by the dequantized NF4 ones
    when ``dequantize``."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    if dequantize:
        modules = dict(base.named_modules())
        for name, (weight, bias) in dequantized_weights(quantized).items():
            modules[name].weight.data = weight.reshape(modules[name].weight.shape)
            if bias is not None:
                modules[name].bias.data = bias
    config = quantized.peft_config["default"]
    fp32 = get_peft_model(base, config)
    set_peft_model_state_dict(fp32, get_peft_model_state_dict(quantized))
    return fp32.merge_and_unload().float()


@contextmanager
def computing_in_fp32(model: Any) -> Iterator[None]:
    """Every 4-bit Linear of ``model`` computes in fp32 for a while (then as it did)."""
    bnb = _bitsandbytes()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    before = [m.compute_dtype for m in layers]
    for layer in layers:
        layer.compute_dtype = torch.float32
    try:
        yield
    finally:
        for layer, dtype in zip(layers, before, strict=True):
            layer.compute_dtype = dtype


def _compare(reference: np.ndarray, other: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    diff = np.abs(other - reference)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "argmax_agreement": float((other.argmax(1) == reference.argmax(1)).mean()),
        "accuracy": float((other.argmax(1) == labels).mean()),
    }


def merge_and_verify(
    quantized: Any,
    fresh_base: Any,
    original_base: Any,
    tokenizer: Any,
    rows: pd.DataFrame,
    max_length: int,
    tolerance: float,
) -> tuple[Any, dict[str, Any]]:
    """The fp32 model with the adapter merged into the dequantized base, and the check.

    ``fresh_base`` and ``original_base`` are two fp32 loads of the base (each is
    modified). Raises :class:`VerificationError` when the merged model's logits
    differ from the 4-bit model's by more than ``tolerance`` (``train.merge_tolerance``,
    as for any LoRA merge: both compute the same function in fp32 from the same
    dequantized weights, the LoRA product added to the weight instead of after the
    matmul, so only rounding differs).
    """
    rows = rows.head(CHECK_ROWS)
    if len(rows) == 0:
        raise VerificationError("train: no validation rows to verify the merged model on")
    names = model_input_names(fresh_base, tokenizer)
    batch = select_inputs(encode(tokenizer, list(rows["text"]), max_length), names, "qlora check")
    labels = rows["label"].to_numpy()
    quantized.eval()
    with computing_in_fp32(quantized):
        reference = fp32_logits(quantized, batch)
    merged = merged_copy(quantized, fresh_base, dequantize=True)
    into_original = fp32_logits(merged_copy(quantized, original_base, dequantize=False), batch)
    check = {
        "applied": True,
        "into": "the dequantized NF4 base (what the adapter was trained on)",
        "rows": len(rows),
        "dtype": "fp32",
        "tolerance": tolerance,
        "accuracy_4bit": float((reference.argmax(1) == labels).mean()),
        **_compare(reference, fp32_logits(merged, batch), labels),
        "into_original_weights": _compare(reference, into_original, labels),
    }
    check["ok"] = check["max_abs_diff"] <= tolerance
    if not check["ok"]:
        raise VerificationError(
            f"train: the merged QLoRA model's logits differ from the 4-bit model's by "
            f"{check['max_abs_diff']:.3g} on {len(rows)} validation rows (tolerance "
            f"{tolerance:g}, fp32); merged/ not written"
        )
    return merged, check


def quantized_layers(model: Any) -> int:
    """How many Linear layers of ``model`` are 4-bit (0 for a plain model)."""
    try:
        bnb = _bitsandbytes()
    except ImportError:
        return 0
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

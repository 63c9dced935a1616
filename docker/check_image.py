"""Fail the image build if pip replaced the base image's CUDA torch or TensorRT is unusable.

Usage (Dockerfile.trt): python docker/check_image.py TORCH_VERSION_BEFORE_INSTALL
"""

from __future__ import annotations

import sys

import tensorrt
import torch


def main(torch_before: str) -> int:
    if torch.__version__ != torch_before:
        print(f"pip replaced the image's torch {torch_before} by {torch.__version__}")
        return 1
    if not torch.version.cuda:
        print(f"torch {torch.__version__} is a CPU build; the image must keep its CUDA torch")
        return 1
    if not hasattr(tensorrt, "Builder"):
        print("tensorrt has no Builder: only type stubs are installed, not TensorRT")
        return 1
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), TensorRT {tensorrt.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

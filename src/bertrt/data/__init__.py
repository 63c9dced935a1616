"""Data stage: Kaggle CSV and generic labelled-file readers, text building, stable split."""

from bertrt.data.kaggle import load_kaggle_csv
from bertrt.data.split import SPLITS, split
from bertrt.data.stage import load_examples, load_split, read_split, run

__all__ = [
    "SPLITS",
    "load_examples",
    "load_kaggle_csv",
    "load_split",
    "read_split",
    "run",
    "split",
]

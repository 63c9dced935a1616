"""Stable, stratified train/validation/test split keyed on PostId.

Each row's place is decided by a hash of (seed, PostId), never by file order
or a random state, so the same CSV gives the same split byte for byte, and a
row keeps its split when other rows are added or removed.
"""

from __future__ import annotations

import hashlib

import pandas as pd

SPLITS = ("train", "val", "test")


def _rank_key(seed: int, post_id: int) -> str:
    return hashlib.sha256(f"{seed}:{post_id}".encode()).hexdigest()


def split(
    frame: pd.DataFrame, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[int]]:
    """PostIds per split; each label is cut in the given fractions (stratified)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for _, group in frame.groupby("label", sort=True):
        ids = sorted(group["PostId"].tolist(), key=lambda pid: _rank_key(seed, pid))
        n_train = round(len(ids) * fractions[0])
        n_val = round(len(ids) * fractions[1])
        out["train"] += ids[:n_train]
        out["val"] += ids[n_train : n_train + n_val]
        out["test"] += ids[n_train + n_val :]
    return {name: sorted(ids) for name, ids in out.items()}

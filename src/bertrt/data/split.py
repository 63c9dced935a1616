"""Stable, stratified train/validation/test split keyed on an integer row id (PostId).

Each row's place is decided by a hash of (seed, id), never by file order
or a random state, so the same file gives the same split byte for byte, and a
row keeps its split when other rows are added or removed.

Every class is cut on its own, in the given fractions, so each split has the
file's class balance. A class too small to give every split with a non-zero
fraction at least one row is an error naming it: a split missing a class would
train, calibrate or score the model without it, silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def _rank_key(seed: int, post_id: int) -> str:
    return hashlib.sha256(f"{seed}:{post_id}".encode()).hexdigest()


def _cut(size: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Rows of a class of ``size`` rows that go to train, val and test (the one rounding rule)."""
    n_train = min(round(size * fractions[0]), size)
    n_val = min(round(size * fractions[1]), size - n_train)
    return n_train, n_val, size - n_train - n_val


def split(
    frame: pd.DataFrame,
    seed: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    *,
    id_column: str = "PostId",
    label_names: Sequence[str] | None = None,
) -> dict[str, list[int]]:
    """Ids per split; each label (the ``label`` column) is cut in the given fractions.

    ``label_names[label]`` names a class in the error for a class too small to split.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    groups = [
        (label, group[id_column].tolist()) for label, group in frame.groupby("label", sort=True)
    ]
    sizes = dict.fromkeys(range(len(label_names or ())), 0) | {
        label: len(ids) for label, ids in groups
    }
    _check_class_sizes(list(sizes.items()), fractions, label_names)
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for _, group_ids in groups:
        ids = sorted(group_ids, key=lambda pid: _rank_key(seed, pid))
        n_train, n_val, _ = _cut(len(ids), fractions)
        out["train"] += ids[:n_train]
        out["val"] += ids[n_train : n_train + n_val]
        out["test"] += ids[n_train + n_val :]
    return {name: sorted(ids) for name, ids in out.items()}


def _check_class_sizes(
    sizes: list[tuple[object, int]],
    fractions: tuple[float, float, float],
    label_names: Sequence[str] | None,
) -> None:
    """Raise ValueError naming every class some split with a non-zero fraction would lack."""
    small = [
        (label, size)
        for label, size in sizes
        if any(f > 0 and n < 1 for f, n in zip(fractions, _cut(size, fractions), strict=True))
    ]
    if not small:
        return
    described = " and ".join(
        f"class {_class_name(label, label_names)} has {size} row{'' if size == 1 else 's'}"
        for label, size in small
    )
    these = "the class" if len(small) == 1 else "these classes"
    raise ValueError(
        f"{described}, too few for the {'/'.join(SPLITS)} fractions "
        f"{'/'.join(f'{f:g}' for f in fractions)}: every split needs at least one row of "
        f"each class; add rows or drop {these}"
    )


def _class_name(label: object, label_names: Sequence[str] | None) -> str:
    """The class as a message shows it: its name when known, else its id."""
    index = int(label) if isinstance(label, int | np.integer) else -1
    if label_names is not None and 0 <= index < len(label_names):
        return repr(label_names[index])
    return str(label)

"""Tabular features of the reference project, derived from a validated Kaggle frame."""

from __future__ import annotations

import pandas as pd

FEATURES = ("account_age_days", "num_tags", "reputation", "title_words", "body_words")


def tabular_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Account age at post time (days, 0 when unknown), tag count, reputation, word counts."""
    age = (frame["PostCreationDate"] - frame["OwnerCreationDate"]).dt.days
    tags = frame[["Tag1", "Tag2", "Tag3", "Tag4", "Tag5"]].ne("").sum(axis=1)
    return pd.DataFrame(
        {
            "account_age_days": age.fillna(0).clip(lower=0).astype("int64"),
            "num_tags": tags.astype("int64"),
            "reputation": frame["ReputationAtPostCreation"].astype("int64"),
            "title_words": frame["Title"].str.split().str.len().fillna(0).astype("int64"),
            "body_words": frame["BodyMarkdown"].str.split().str.len().fillna(0).astype("int64"),
        },
        index=frame.index,
    )

"""Typed errors the CLI turns into one clear line and an exit code.

Every error a user can cause (bad input, stale artifacts, missing hardware)
derives from :class:`BertrtError`; anything else is a bug and keeps its
traceback. Exit codes are part of the CLI's contract (README, "Exit codes").
"""

from __future__ import annotations


class BertrtError(Exception):
    """A problem the user can fix; the message says what and where."""

    exit_code = 1


class ConfigError(BertrtError):
    exit_code = 2


class DataError(BertrtError):
    """An input data file (CSV, JSONL, Parquet; the Kaggle CSV or a generic one) is unreadable,
    or a row, column or option does not fit it."""

    exit_code = 1


class MissingArtifactError(BertrtError):
    """A stage's input was never produced; the message names the stage to run."""

    exit_code = 4


class StaleArtifactError(BertrtError):
    """A stage's input changed since it was recorded; the message names the stage to rerun."""

    exit_code = 4


class UnavailableError(BertrtError):
    """Needed hardware or software (CUDA, TensorRT) is absent on this machine."""

    exit_code = 3


class VerificationError(BertrtError):
    """An artifact does not reproduce its reference within tolerance."""

    exit_code = 6

"""Loading the base model, with a failure that says where it looked and what to do.

transformers answers a base it cannot find with a multi-line OSError about
"connecting to huggingface.co" even when the user meant a local directory or
the machine is offline on purpose. The train stage turns that into one
:class:`~bertrt.errors.UnavailableError` line: the configured ``model.base``,
the hub id and the cache directory that were searched, whether offline mode
was on, and the two commands that fix it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bertrt.errors import UnavailableError

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def from_pretrained(loader: Any, base: str, path: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(path, **kwargs)``; a base it cannot find is one clear error.

    OSError is transformers' "not found" (no directory, not cached, hub
    unreachable). A local directory without a usable config.json is a
    ValueError ("Unrecognized model"), converted too, for that directory only.
    """
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        if isinstance(err, ValueError) and not Path(path).expanduser().is_dir():
            raise
        raise UnavailableError(unavailable_message(base, path, err)) from err


def unavailable_message(base: str, path: str, err: BaseException) -> str:
    """One line: what model.base was, where it was looked for, and how to point it elsewhere."""
    from huggingface_hub import constants

    cause = " ".join(str(err).split())
    if len(cause) > 160:
        cause = cause[:157] + "..."
    local = Path(path).expanduser()
    if local.is_dir():
        return (
            f"model.base={base!r}: {local.resolve()} is a directory but not a model transformers "
            f"can load ({type(err).__name__}: {cause}); it needs config.json and the weights "
            "as save_pretrained writes them"
        )
    if not _is_hub_id(path):
        return (
            f"model.base={base!r}: no local directory {local.resolve()}, and not a hub id "
            "(namespace/name); --set model.base=DIR with a directory save_pretrained wrote, "
            "or a hub id"
        )
    offline = [f"{v}={os.environ[v]}" for v in _OFFLINE_VARIABLES if os.environ.get(v)]
    if offline or constants.HF_HUB_OFFLINE:  # transformers' "check your connection" misleads
        asked = f"hub not asked ({', '.join(offline) or 'offline mode'})"
    else:  # the hub's answer says which: no such repo, gated, no network
        asked = f"not served by the hub at {constants.ENDPOINT} ({type(err).__name__}: {cause})"
    return (
        f"model.base={base!r}: no local directory {local.resolve()}, hub id {path!r} not in "
        f"the cache {constants.HF_HUB_CACHE} and {asked}; "
        f"where a hub is reachable run `hf download {path} --local-dir DIR` (huggingface_hub "
        f"< 1.0: `huggingface-cli download {path} --local-dir DIR`), then "
        "--set model.base=DIR"
    )


def _is_hub_id(name: str) -> bool:
    """Whether the hub could hold ``name`` at all (``./models/x`` is a path, never an id)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True

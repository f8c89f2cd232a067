"""Where data and results live.

One data root serves every real dataset: ``$BALLOT_DATA_ROOT`` if set, else ``~/ballot_data``. Results go to
``$BALLOT_RESULTS`` if set, else ``./results`` (relative to the working directory).
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "BALLOT_DATA_ROOT"
RESULTS_ENV = "BALLOT_RESULTS"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``root`` if given, else ``$BALLOT_DATA_ROOT``, else ``~/ballot_data``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / "ballot_data"


def results_root(root: str | os.PathLike | None = None) -> Path:
    """Return the results root: ``root`` if given, else ``$BALLOT_RESULTS``, else ``./results``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path("results")

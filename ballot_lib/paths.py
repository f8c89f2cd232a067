"""Where data and results live.

One data root serves every real dataset: ``$BALLOT_DATA_ROOT`` if set, else ``~/ballot_data``. Results go to
``$BALLOT_RESULTS`` if set, else ``./results`` (relative to the working directory).
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "BALLOT_DATA_ROOT"
RESULTS_ENV = "BALLOT_RESULTS"


def _root(root: str | os.PathLike | None, env: str, default: Path) -> Path:
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    value = os.environ.get(env)
    return Path(value).expanduser() if value else default


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``root`` if given, else ``$BALLOT_DATA_ROOT``, else ``~/ballot_data``."""
    return _root(root, DATA_ROOT_ENV, Path.home() / "ballot_data")


def results_root(root: str | os.PathLike | None = None) -> Path:
    """Return the results root: ``root`` if given, else ``$BALLOT_RESULTS``, else ``./results``."""
    return _root(root, RESULTS_ENV, Path("results"))

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


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file: ``0o666`` less the process umask (``0o644`` under the usual
    ``022``). Atomic writes create their temporary file with ``tempfile.mkstemp``, which makes it ``0o600``
    (owner only): the store's files get these permissions instead, so that a store shared between users or
    machines (a batch's store read by a collaborator's notebook 05) stays readable as the umask intends."""
    mask = None
    try:
        with open("/proc/self/status", encoding="ascii") as f:  # Linux: read without changing it
            for line in f:
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    if mask is None:  # elsewhere: set and restore (not atomic, but only a file created meanwhile would differ)
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask

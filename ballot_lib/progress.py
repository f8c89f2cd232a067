"""Progress bars that read well wherever the code runs: live widgets in JupyterLab, plain text in notebooks
executed by papermill (a stored widget reads "0%" once the kernel is gone), nothing when switched off.

The style comes from the environment variable ``BALLOT_PROGRESS``:

* ``auto`` (default): ``tqdm.auto`` — a widget in an interactive notebook, text in a terminal;
* ``text``: a plain text bar on stdout for bars that stay (``leave=True``, e.g. a grid's "runs" bar), so the
  stored output shows each bar's last state as text; transient bars (``leave=False``, e.g. the epochs of one
  run) are not drawn at all, since a stored notebook would keep every refresh of them. The notebook runner
  :mod:`ballot_lib.sweep` sets this style for every executed notebook;
* ``none``: no bar at all.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Optional

ENV = "BALLOT_PROGRESS"
STYLES = ("auto", "text", "none")


def style() -> str:
    """The progress-bar style chosen by ``$BALLOT_PROGRESS`` (``auto`` when unset)."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in STYLES:
        raise ValueError(f"{ENV}={value!r} is not a progress style; valid: {', '.join(STYLES)}")
    return value


def bar(it: Iterable, desc: str = "", total: Optional[int] = None, leave: bool = False, **kwargs: Any) -> Iterable:
    """Wrap ``it`` in a progress bar of the current :func:`style` (``it`` itself for ``none``).

    Extra keyword arguments go to ``tqdm`` (e.g. ``initial``, ``unit``).
    """
    s = style()
    if s == "none" or (s == "text" and not leave):
        return it
    if s == "text":
        from tqdm import tqdm

        # Text refreshes are stored in executed notebooks: refresh rarely, and as plain ASCII.
        kwargs.setdefault("mininterval", 15.0)
        return tqdm(it, desc=desc, total=total, leave=leave, file=sys.stdout, ascii=True, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=leave, **kwargs)

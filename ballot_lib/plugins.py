"""Extensions defined outside the library, loaded in every process: ``$BALLOT_PLUGINS``.

A method, model, dataset or mask strategy registered in a notebook exists in that kernel only: a notebook run by
papermill, a ``sweep`` job or a worker of another GPU is a new process that never ran the registering cell. List
the modules that register them in ``$BALLOT_PLUGINS`` (separated by ``,`` or the path separator ``:``), each an
importable module name (``mylab.methods``) or the path of a ``.py`` file; every process imports them when it
imports :mod:`ballot_lib.methods` (after the built-in registrations, so a plugin may use them), and the variable
is inherited by the processes ``sweep`` starts. Example::

    BALLOT_PLUGINS=$PWD/my_method.py python -m ballot_lib.sweep grid my_grid.yaml --out runs/

A plugin that cannot be imported is an error naming the variable and the entry (nothing trains before it).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from .checks import ParameterError

#: The environment variable listing the plugin modules.
ENV = "BALLOT_PLUGINS"

_loaded: dict[str, ModuleType] = {}
_failed: dict[str, ParameterError] = {}


def plugin_entries(value: str | None = None) -> list[str]:
    """The entries of ``$BALLOT_PLUGINS`` (or of ``value``): split on ``,`` and the path separator, blanks dropped."""
    value = os.environ.get(ENV, "") if value is None else value
    return [e.strip() for e in re.split(rf"[,{re.escape(os.pathsep)}]", value) if e.strip()]


def _is_path(entry: str) -> bool:
    """Whether an entry names a ``.py`` file (else an importable module name)."""
    return entry.endswith(".py") or os.sep in entry


def _same_file(module: ModuleType, path: Path) -> bool:
    f = getattr(module, "__file__", None)
    try:
        return f is not None and Path(f).resolve() == path.resolve()
    except OSError:
        return False


def _import_file(path: Path) -> ModuleType:
    name = "ballot_plugin_" + re.sub(r"\W", "_", str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    # The same file already imported under another name (``import my_method``, or run as ``__main__``): its
    # registrations are made; executing it again would register every name twice.
    for module in list(sys.modules.values()):
        if isinstance(module, ModuleType) and _same_file(module, path):
            return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def plugin_env(value: str | None = None, cwd: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment entries that let a process started elsewhere (a papermill kernel runs in ``notebooks/``) load
    the same plugins as this one: ``$BALLOT_PLUGINS`` with each ``.py`` entry made absolute, and this process's
    working directory first on ``PYTHONPATH`` (where a module entry was importable). Empty when no plugin is
    listed."""
    entries = plugin_entries(value)
    if not entries:
        return {}
    cwd = Path(cwd or os.getcwd())
    absolute = [str((cwd / e).resolve()) if _is_path(e) else e for e in entries]
    path = os.pathsep.join(x for x in (str(cwd), os.environ.get("PYTHONPATH", "")) if x)
    return {ENV: ",".join(absolute), "PYTHONPATH": path}


def load_plugins(value: str | None = None) -> list[ModuleType]:
    """Import every module ``$BALLOT_PLUGINS`` (or ``value``) lists, once per process; return them in order.

    Raises:
        ParameterError: naming the variable and the entry, if a file is missing or a module cannot be imported
            (with the import's own error).
    """
    modules = []
    for entry in plugin_entries(value):
        if entry in _loaded:
            modules.append(_loaded[entry])
            continue
        if entry in _failed:  # the first failure again (re-running a half-imported plugin would hide it)
            raise _failed[entry]
        is_file = _is_path(entry)
        if is_file and not Path(entry).is_file():
            raise ParameterError(f"${ENV} lists {entry!r}, which is not a file (give an importable module name or "
                                 f"the path of a .py file; entries are separated by ',' or {os.pathsep!r})")
        try:
            module = _import_file(Path(entry)) if is_file else importlib.import_module(entry)
        except ParameterError as e:
            _failed[entry] = e
            raise
        except Exception as e:  # the plugin's own failure, named with the entry that caused it
            _failed[entry] = ParameterError(f"${ENV} lists {entry!r}, which could not be imported: "
                                            f"{type(e).__name__}: {e}")
            raise _failed[entry] from e
        _loaded[entry] = module
        modules.append(module)
    return modules


__all__ = ["ENV", "load_plugins", "plugin_entries", "plugin_env"]

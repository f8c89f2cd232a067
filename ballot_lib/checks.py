"""Parameter checks shared by every config, the API, the notebooks and ``sweep validate``.

Every check raises :class:`ParameterError` whose message names the parameter, the offending value and what is
valid. Types are checked without silent coercion: an int is not accepted for a string, a string ``"3"`` is not an
int, ``2.5`` is not an int, and a bool is not a number (nor is a number a bool). Ints are accepted where a float is
expected.

* :func:`check_fields` checks every field of a config dataclass against its type annotation (``int``, ``float``,
  ``str``, ``bool``, ``Optional[...]``, ``tuple[int, ...]``, ...); each config's ``validate()`` calls it first and
  then checks ranges and cross-field rules.
* :func:`check_int`, :func:`check_number`, :func:`check_seed`, :func:`check_density`: the range checks.

This module imports nothing of the library: every layer (data, models, training, methods) can use it.
:mod:`ballot_lib.validation` re-exports it and adds the checks of whole notebooks' parameters.

Example:
    >>> check_int("epochs", 2.5, low=1)
    Traceback (most recent call last):
    ...
    ballot_lib.checks.ParameterError: epochs must be an integer, got 2.5 (float)
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import types
import typing
from typing import Any, Mapping, Optional, Sequence

#: Seeds are used as torch/numpy seeds: non-negative and below 2**63.
MAX_SEED = 2**63 - 1


class ParameterError(ValueError, TypeError):
    """A parameter has the wrong type or value; the message names it, the offending value and what is valid.

    It is both a ``ValueError`` and a ``TypeError``, so callers catching either keep working.
    """


# ------------------------------------------------------------------------------------------ scalar checks


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _yaml_number_hint(value: Any) -> str:
    """How to write a number that arrived as text: PyYAML (YAML 1.1) reads ``1e-3`` as a string (it wants a dot and
    a signed exponent); any other numeric string was quoted."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        if re.fullmatch(r"\s*[-+]?[0-9.]*[eE][-+]?[0-9]+\s*", value) and not re.fullmatch(
                r"\s*[-+]?[0-9]*\.[0-9]*[eE][-+][0-9]+\s*", value):
            return (f" (a parameter file's YAML reads {value} as text: write it with a dot and a signed exponent, "
                    "e.g. 1.0e-3)")
        return " (a number in quotes is text: remove the quotes)"
    return ""


def is_int(value: Any) -> bool:
    """True for Python/numpy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for real numbers (ints and floats, numpy's too), False for bools, strings and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    def fmt(v) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{fmt(low)}, {fmt(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {fmt(low)}"
    return f"{'<' if high_open else '<='} {fmt(high)}"


def _check_range(name: str, value, low, high, low_open: bool, high_open: bool, hint: str) -> None:
    bad = (low is not None and (value < low or (low_open and value == low))) or \
          (high is not None and (value > high or (high_open and value == high)))
    if bad:
        raise ParameterError(f"{name} must be {_range_text(low, high, low_open, high_open)}{hint}, got {value!r}")


def check_int(name: str, value: Any, low: Optional[int] = None, high: Optional[int] = None,
              high_open: bool = False, hint: str = "") -> int:
    """Return ``value`` if it is an integer (not a bool) within ``[low, high]`` (``high`` excluded if
    ``high_open``); else raise :class:`ParameterError` naming ``name``."""
    if not is_int(value):
        raise ParameterError(f"{name} must be an integer, got {_show(value)}")
    _check_range(name, value, low, high, False, high_open, hint)
    return int(value)


def check_number(name: str, value: Any, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """Return ``value`` as a float if it is a finite real number (not a bool) in the given range, else raise."""
    if not is_number(value):
        raise ParameterError(f"{name} must be a number, got {_show(value)}")
    if not math.isfinite(float(value)):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    _check_range(name, value, low, high, low_open, high_open, hint)
    return float(value)


def check_env_number(env: str, text: str, unit: str) -> float:
    """The text of environment variable ``env`` as a finite number >= 0 (in ``unit``), else a
    :class:`ParameterError` naming ``$env``."""
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"${env} must be a number of {unit} >= 0, got {text!r}") from None
    return check_number(f"${env}", value, 0)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not 0/1, not ``"no"``), else raise."""
    if not isinstance(value, bool):
        raise ParameterError(f"{name} must be true or false, got {_show(value)}")
    return value


def check_str(name: str, value: Any, choices: Optional[Sequence[str]] = None) -> str:
    """Return ``value`` if it is a string (one of ``choices`` if given), else raise."""
    if not isinstance(value, str):
        raise ParameterError(f"{name} must be a string, got {_show(value)}")
    if choices is not None and value not in choices:
        raise ParameterError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")
    return value


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return ``seed`` if it is a non-negative integer below 2**63 (not a bool, not ``1.5``, not ``"1"``)."""
    check_int(name, seed)
    if not 0 <= seed <= MAX_SEED:
        raise ParameterError(f"{name} must be a non-negative integer below 2**63, got {seed!r}")
    return int(seed)


def check_density(density: Any, name: str = "density") -> float:
    """Return ``density`` as a float if it is a number in (0, 1]; the message says what density means."""
    prefix = "" if name == "density" else f"{name}: "
    if not is_number(density) or math.isnan(float(density)):
        raise ParameterError(f"{prefix}density must be a number in (0, 1], got {_show(density)}")
    if not 0.0 < float(density) <= 1.0:
        raise ParameterError(f"{prefix}density must be in (0, 1] (fraction of prunable weights kept), "
                             f"got {density!r}")
    return float(density)


def check_device_name(device: Any, name: str = "device") -> str:
    """Return ``device`` if it is ``"auto"`` or a device name torch understands (``"cpu"``, ``"cuda:1"``, ...).

    Whether the device exists here is checked by :func:`ballot_lib.training.resolve_device`.
    """
    check_str(name, device)
    if device != "auto":
        import torch

        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ("cpu", "cuda"):  # torch knows 'mps', 'meta', ...: the suite trains on CPU or CUDA only
            raise ParameterError(f"unknown {name} {device!r}; valid: 'auto', 'cpu', 'cuda' or 'cuda:<index>'")
    return device


def check_list(name: str, value: Any, nonempty: bool = True, unique: bool = False) -> list:
    """Return ``value`` if it is a list (or tuple), non-empty if asked, without duplicates if asked."""
    if not isinstance(value, (list, tuple)):
        raise ParameterError(f"{name} must be a list, got {_show(value)}")
    if nonempty and not value:
        raise ParameterError(f"{name} must be a non-empty list, got {value!r}")
    if unique:
        seen = [v for i, v in enumerate(value) if v in value[:i]]
        if seen:
            raise ParameterError(f"{name} lists {seen[0]!r} twice: {list(value)!r}")
    return list(value)


def is_default(value: Any, default: Any) -> bool:
    """Whether an option's ``value`` is its ``default`` (a list equals its tuple default, ``1`` equals ``1.0``)."""
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value) == default
    if isinstance(default, bool) or isinstance(value, bool) or default is None or value is None:
        return value is default
    return value == default


def check_applies(name: str, value: Any, default: Any, applies: bool, only: str, here: str, fix: str = "") -> None:
    """Refuse a non-default ``value`` of option ``name`` where the option has no effect (``applies`` is false).

    An ignored option is still hashed into a run's id: the same computation would be trained and stored again
    under another id (and seeds paired across methods would split between the two). The default is always
    accepted, so no configuration that was valid before gets another id or an error. ``only``: what the option
    applies to; ``here``: the setting at hand; ``fix``: the other way out, if any.

    Example:
        >>> check_applies("gamma", 0.5, 0.1, False, "schedule 'multistep'", "schedule 'cosine'",
        ...               "set schedule='multistep'")
        Traceback (most recent call last):
        ...
        ballot_lib.checks.ParameterError: gamma=0.5 applies to schedule 'multistep' only, not schedule 'cosine': \
leave it at its default 0.1 or set schedule='multistep'
    """
    if applies or is_default(value, default):
        return
    shown = list(value) if isinstance(value, tuple) else value
    leave = "leave it unset" if default is None else \
        f"leave it at its default {list(default) if isinstance(default, tuple) else default!r}"
    raise ParameterError(f"{name}={shown!r} applies to {only} only, not {here}: {leave}"
                         + (f" or {fix}" if fix else ""))


# ------------------------------------------------------------------------------------------ annotated types


def check_type(name: str, value: Any, annotation: Any, paths: bool = False) -> Any:
    """Check ``value`` against a type annotation (no coercion); ``paths`` also accepts ``os.PathLike`` for str.

    Supported: ``Any``, ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``Optional``/``Union``,
    ``tuple[X, ...]``, ``tuple``, ``list[X]``, ``list``, ``dict``/``Mapping`` and classes (``isinstance``). Lists
    are accepted for tuple annotations (YAML and JSON have no tuples). Other annotations (``Callable``) are not
    checked.
    """
    if annotation is Any or annotation is None and value is None:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return value
        options = [a for a in args if a is not type(None)]
        errors = []
        for a in options:
            try:
                return check_type(name, value, a, paths)
            except ParameterError as e:
                errors.append(e)
        if len(errors) == 1 and type(None) not in args:
            raise errors[0]
        names = " or ".join(_type_name(a) for a in options) + (" or None" if type(None) in args else "")
        raise ParameterError(f"{name} must be {names}, got {_show(value)}")
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise ParameterError(f"unknown {name} {value!r}; valid choices: "
                                 f"{', '.join(str(a) for a in args)}")
        return value
    if annotation is int:
        return check_int(name, value)
    if annotation is float:
        if not is_number(value):
            raise ParameterError(f"{name} must be a number, got {_show(value)}" + _yaml_number_hint(value))
        if is_int(value):
            return float(value)  # 1 and 1.0 are one setting: check_fields stores the float (one run id for both)
        # NaN/inf would also hash like None in a run id (another run's results): check_number refuses them
        check_number(name, value)
        return value
    if annotation is bool:
        return check_bool(name, value)
    if annotation is str:
        if paths and isinstance(value, os.PathLike):
            return value
        return check_str(name, value)
    if annotation in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{name} must be a list, got {_show(value)}")
        if args:
            elem = args[0] if (len(args) == 2 and args[1] is Ellipsis) or origin is list else None
            for i, v in enumerate(value):
                check_type(f"{name}[{i}]", v, elem if elem is not None else args[min(i, len(args) - 1)], paths)
        return value
    if annotation in (dict, Mapping) or origin in (dict, Mapping, typing.Mapping) or \
            (origin is not None and getattr(origin, "__name__", "") in ("Mapping", "dict")):
        if not isinstance(value, Mapping):
            raise ParameterError(f"{name} must be a mapping, got {_show(value)}")
        return value
    if isinstance(annotation, type):
        if not isinstance(value, annotation):
            raise ParameterError(f"{name} must be a {annotation.__name__}, got {_show(value)}")
        return value
    return value  # an annotation this checker does not know (e.g. a Callable): nothing to check


def _type_name(a: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if a in names:
        return names[a]
    if a in (list, tuple) or typing.get_origin(a) in (list, tuple):
        return "a list"
    return getattr(a, "__name__", str(a))


def check_fields(obj: Any, paths: Sequence[str] = (), coerce: bool = True) -> Any:
    """Check every field of the dataclass instance ``obj`` against its annotation; return ``obj``.

    ``paths``: names of string fields that also accept ``os.PathLike`` (folders such as ``root``).
    With ``coerce``, an integer given for a float field is stored as that float (``lr=1`` and ``lr=1.0`` are the
    same setting and must hash to the same run id); ``coerce=False`` only checks (a config whose stored runs were
    hashed with the integer keeps their ids). Annotations that cannot be resolved (names imported only under
    ``TYPE_CHECKING``) are left unchecked with ``coerce=False``; with ``coerce`` they are an error.
    """
    try:
        hints = typing.get_type_hints(type(obj))
    except NameError:
        if coerce:
            raise
        return obj
    for f in dataclasses.fields(obj):
        if f.name in hints:
            value = getattr(obj, f.name)
            checked = check_type(f.name, value, hints[f.name], paths=f.name in paths)
            if coerce and isinstance(checked, float) and not isinstance(value, float):
                object.__setattr__(obj, f.name, checked)  # frozen dataclasses too
    return obj


def check_arguments(fn: Any, arguments: Mapping[str, Any], paths: Sequence[str] = ()) -> None:
    """Check keyword ``arguments`` against the annotations of function ``fn`` (unknown names are skipped)."""
    hints = typing.get_type_hints(fn)
    for name, value in arguments.items():
        if name in hints and name != "return":
            check_type(name, value, hints[name], paths=name in paths)


# ------------------------------------------------------------------------------------------ notebooks

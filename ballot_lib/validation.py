"""One validation of every parameter, shared by the API, the notebooks and ``sweep validate``.

Every check runs before anything is loaded, trained or written, and raises :class:`ParameterError` whose message
names the parameter, the offending value and what is valid. Types are checked without silent coercion: an int is
not accepted for a string, a string ``"3"`` is not an int, ``2.5`` is not an int, and a bool is not a number (nor
is a number a bool). Ints are accepted where a float is expected.

* :func:`check_fields` checks every field of a config dataclass against its type annotation (``int``, ``float``,
  ``str``, ``bool``, ``Optional[...]``, ``tuple[int, ...]``, ...); each config's ``validate()`` calls it first and
  then checks ranges and cross-field rules.
* :func:`check_int`, :func:`check_number`, :func:`check_seed`, :func:`check_density`: the range checks.
* :func:`validate_notebook_params`: a notebook's parameters against the notebook's annotated types (as papermill's
  ``inspect_notebook`` reports them) and the library's rules, including the list parameters of the notebooks
  (``densities``, ``seeds``, ``rewind_epochs``, ``etas``, ...). The cell after each notebook's ``parameters`` cell
  and ``python -m ballot_lib.sweep validate`` both call it.

Example:
    >>> check_int("epochs", 2.5, low=1)
    Traceback (most recent call last):
    ...
    ballot_lib.validation.ParameterError: epochs must be an integer, got 2.5 (float)
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from pathlib import Path
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
            torch.device(device)
        except (RuntimeError, ValueError):
            raise ParameterError(f"unknown {name} {device!r}; valid: 'auto', 'cpu', 'cuda' or 'cuda:<index>'") from None
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


# ------------------------------------------------------------------------------------------ annotated types


def check_type(name: str, value: Any, annotation: Any, paths: bool = False) -> Any:
    """Check ``value`` against a type annotation (no coercion); ``paths`` also accepts ``os.PathLike`` for str.

    Supported: ``Any``, ``int``, ``float``, ``bool``, ``str``, ``Optional``/``Union``, ``tuple[X, ...]``,
    ``tuple``, ``list[X]``, ``list``, ``dict``/``Mapping`` and classes (``isinstance``). Lists are accepted for
    tuple annotations (YAML and JSON have no tuples).
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
    if annotation is int:
        return check_int(name, value)
    if annotation is float:
        if not is_number(value):
            raise ParameterError(f"{name} must be a number, got {_show(value)}")
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


def check_fields(obj: Any, paths: Sequence[str] = ()) -> Any:
    """Check every field of the dataclass instance ``obj`` against its annotation; return ``obj``.

    ``paths``: names of string fields that also accept ``os.PathLike`` (folders such as ``root``).
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in hints:
            check_type(f.name, getattr(obj, f.name), hints[f.name], paths=f.name in paths)
    return obj


def check_arguments(fn: Any, arguments: Mapping[str, Any], paths: Sequence[str] = ()) -> None:
    """Check keyword ``arguments`` against the annotations of function ``fn`` (unknown names are skipped)."""
    hints = typing.get_type_hints(fn)
    for name, value in arguments.items():
        if name in hints and name != "return":
            check_type(name, value, hints[name], paths=name in paths)


# ------------------------------------------------------------------------------------------ notebooks

#: papermill's ``inferred_type_name`` -> annotation checked by :func:`check_type`.
NOTEBOOK_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple,
                  "dict": dict}


def notebook_path(notebook: str | os.PathLike) -> Path:
    """A notebook of the suite by file name (``"00_quickstart.ipynb"``, ``.ipynb`` optional) or by path."""
    p = Path(notebook)
    if p.suffix != ".ipynb":
        p = p.with_name(p.name + ".ipynb")
    if p.is_file():
        return p
    from .sweep import NOTEBOOKS

    if (NOTEBOOKS / p.name).is_file():
        return NOTEBOOKS / p.name
    raise FileNotFoundError(f"notebook {notebook} not found (looked for {p} and {NOTEBOOKS / p.name})")


def notebook_parameter_types(notebook: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """papermill's description of a notebook's ``parameters`` cell: name -> {inferred_type_name, default, help}."""
    import papermill

    return dict(papermill.inspect_notebook(str(notebook_path(notebook))))


def injected_parameter_names(namespace: Mapping[str, Any]) -> set[str]:
    """Names assigned by the parameters papermill injected into this kernel (its ``# Parameters`` cell, found in
    IPython's input history ``In``); empty outside a papermill run."""
    import ast

    history = namespace.get("In")
    if not isinstance(history, list):
        return set()
    for source in reversed(history):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return set()
            return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                    if isinstance(t, ast.Name)}
    return set()


def _ballot_check(options: Mapping[str, Any], density: Any) -> None:
    """Validate Ballot options with the method's own rules (when the method is available)."""
    from .methods import METHODS, make_config

    if "ballot" in METHODS:
        make_config("ballot", density=density if is_number(density) else 0.2, **options)


def _comparison_rules(params: Mapping[str, Any]) -> None:
    """Notebook 03's own parameters: dataset and model lists, per-dataset recipe overrides, Ballot candidates."""
    from .data.core import DATASETS
    from .experiment import experiment_params
    from .models import MODELS

    for key, registry in (("datasets", DATASETS), ("models", MODELS)):
        if key in params:
            for i, name in enumerate(check_list(key, params[key], unique=True)):
                if not isinstance(name, str) or name not in registry:
                    raise ParameterError(f"{key}[{i}] is {name!r}; valid choices: {', '.join(registry.names())}")
    if "dataset_overrides" in params:
        over = params["dataset_overrides"]
        if not isinstance(over, Mapping):
            raise ParameterError(f"dataset_overrides must be a dict dataset -> {{parameter: value}}, got {over!r}")
        allowed = set(experiment_params()) - {"dataset", "model", "results_dir", "device", "data_root", "progress"}
        for ds, changes in over.items():
            # An override of a dataset not in `datasets` is unused (the default names adult), but must be valid.
            if not isinstance(ds, str) or ds not in DATASETS:
                raise ParameterError(f"dataset_overrides names {ds!r}; valid datasets: {', '.join(DATASETS.names())}")
            if not isinstance(changes, Mapping) or set(changes) - allowed:
                raise ParameterError(f"dataset_overrides[{ds!r}] must be a dict of recipe parameters "
                                     f"({', '.join(sorted(allowed))}), got {changes!r}")
    if "ballot_candidates" in params:
        cands = params["ballot_candidates"]
        if not isinstance(cands, Mapping) or not cands:
            raise ParameterError(f"ballot_candidates must be a non-empty dict name -> Ballot options, got {cands!r}")
        for name, opts in cands.items():
            if not isinstance(opts, Mapping):
                raise ParameterError(f"ballot_candidates[{name!r}] must be a dict of Ballot options, got {opts!r}")
            try:
                _ballot_check(dict(opts), params.get("densities", [0.2])[0])
            except ValueError as e:
                raise ParameterError(f"ballot_candidates[{name!r}]: {e}") from None


def _rules(params: Mapping[str, Any], epochs: int) -> None:
    """The library's rules for the notebooks' own parameters (those not passed to ``experiment_from_params``)."""
    _comparison_rules(params)
    density = params.get("density", 0.2)
    for key in ("density", "training_density"):
        if key in params:
            check_density(params[key], key)
    if "densities" in params:
        for i, d in enumerate(check_list("densities", params["densities"], unique=True)):
            check_density(d, f"densities[{i}]")
    if "seed" in params:
        check_seed(params["seed"])
    for key in ("seeds", "ablation_seeds"):
        if key in params:
            for i, s in enumerate(check_list(key, params[key], unique=True)):
                check_seed(s, f"{key}[{i}]")
    hint = f" (train epochs = {epochs}: a rewind point inside the schedule)"
    if "rewind_epoch" in params:
        check_int("rewind_epoch", params["rewind_epoch"], 0, epochs, high_open=True, hint=hint)
    if "rewind_epochs" in params:
        for i, k in enumerate(check_list("rewind_epochs", params["rewind_epochs"])):
            check_int(f"rewind_epochs[{i}]", k, 0, epochs, high_open=True, hint=hint)
    if "include_ballot" in params:
        check_bool("include_ballot", params["include_ballot"])
    if "select_eps" in params:
        check_number("select_eps", params["select_eps"], 0)
        _ballot_check({"select_eps": float(params["select_eps"])}, density)
    # Prune Responsibly's population (notebook 04): techniques are methods; test and selection settings.
    if "techniques" in params:
        try:
            from .methods.prune_responsibly import TECHNIQUES
            valid = list(TECHNIQUES)
        except ImportError:  # pragma: no cover
            from .methods import METHODS
            valid = METHODS.names()
        for i, t in enumerate(check_list("techniques", params["techniques"], unique=True)):
            check_str(f"techniques[{i}]", t)
            if t not in valid:
                raise ParameterError(f"unknown techniques[{i}] {t!r}; valid choices: {', '.join(valid)}")
    if "retrain_epochs" in params:
        check_int("retrain_epochs", params["retrain_epochs"], 0, hint=" (0: the full recipe)")
    if "alpha" in params:
        check_number("alpha", params["alpha"], 0, 1, low_open=True, high_open=True)
    if "max_acc_drop" in params:
        check_number("max_acc_drop", params["max_acc_drop"], 0)
    if "max_disparity_rise" in params:
        check_number("max_disparity_rise", params["max_disparity_rise"])
    if "disparity" in params or "correction" in params:
        try:
            from . import population
        except ImportError:  # pragma: no cover  (the module ships with the library)
            population = None
        if population is not None and "disparity" in params:
            check_str("disparity", params["disparity"])
            try:
                population.disparity_column(params["disparity"])
            except (ValueError, KeyError) as e:
                raise ParameterError(f"disparity: {e}") from None
        if population is not None and "correction" in params:
            check_str("correction", params["correction"], population.CORRECTIONS)
    # Ballot's ablation lists: each value checked as the option it becomes.
    for key, option, kind in (("etas", "eta", float), ("gammas", "gamma", float),
                              ("vote_fractions", "vote_fraction", float), ("vote_epoch_counts", "vote_epochs", int)):
        if key in params:
            for i, v in enumerate(check_list(key, params[key])):
                name = f"{key}[{i}]"
                if kind is int:
                    check_int(name, v, 0)
                else:
                    check_number(name, v)
                if key == "etas":
                    check_number(name, v, 0, hint=" (weight of the fairness gradient)")
                try:
                    _ballot_check({option: kind(v)}, density)
                except ValueError as e:
                    raise ParameterError(f"{name}: {e}") from None


def validate_notebook_params(notebook: str | os.PathLike, params: Mapping[str, Any], *, check_device: bool = True,
                             only_declared: bool = False):
    """Check a notebook's parameters before anything is loaded, trained or written; return the experiment.

    Args:
        notebook: the notebook's file name (``"01_lth_fairness_failure.ipynb"``) or path.
        params: parameter values (missing ones take the notebook's defaults).
        check_device: also check that ``device`` exists here (``sweep validate`` on a CPU machine skips it).
        only_declared: take only the notebook's declared parameters from ``params`` (a notebook passes
            ``globals()``); otherwise a name the notebook does not declare is an error.
    Returns:
        The :class:`~ballot_lib.experiment.Experiment` the parameters describe (no data loaded), or ``None`` for a
        notebook that declares no experiment parameter.
    Raises:
        ParameterError: naming the parameter, its value and what is valid.
    """
    import ast

    from .experiment import experiment_from, experiment_params

    declared = notebook_parameter_types(notebook)
    name = notebook_path(notebook).name
    if only_declared:
        injected = injected_parameter_names(params)
        unknown = sorted(injected - set(declared))
        if unknown:  # papermill only warns about these: they would be silently ignored
            raise ParameterError(f"{name} has no parameter(s) {unknown}; valid: {sorted(declared)}")
        params = {k: v for k, v in params.items() if k in declared}
    unknown = set(params) - set(declared)
    if unknown:
        raise ParameterError(f"{name} has no parameter(s) {sorted(unknown)}; valid: {sorted(declared)}")
    # 1. Types, as annotated in the notebook's parameters cell.
    for key, value in params.items():
        annotation = NOTEBOOK_TYPES.get(str(declared[key].get("inferred_type_name")))
        if annotation is not None:
            check_type(key, value, annotation, paths=key in ("data_root", "results_dir"))
    merged: dict[str, Any] = {}
    for key, info in declared.items():
        try:
            merged[key] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            merged[key] = info["default"]
    merged.update(params)
    # 2. The experiment (data, model, training recipe) with the library's rules.
    exp = None
    if set(experiment_params()) & set(declared):
        exp = experiment_from(merged, check_device=check_device)
    # 3. The notebook's own parameters (densities, seeds, rewind points, ablation lists).
    _rules(merged, exp.train.epochs if exp is not None else 10**9)
    return exp

"""One validation of every parameter, shared by the API, the notebooks and ``sweep validate``.

Every check runs before anything is loaded, trained or written, and raises :class:`ParameterError` whose message
names the parameter, the offending value and what is valid.

* The single-value checks (:func:`check_fields`, :func:`check_int`, :func:`check_number`, :func:`check_seed`,
  :func:`check_density`, ...) live in :mod:`ballot_lib.checks`, which every layer of the library uses; they are
  re-exported here.
* :func:`validate_notebook_params`: a notebook's parameters against the notebook's annotated types (as papermill's
  ``inspect_notebook`` reports them) and the library's rules, including the list parameters of the notebooks
  (``densities``, ``seeds``, ``rewind_epochs``, ``etas``, ...). The cell after each notebook's ``parameters`` cell
  and ``python -m ballot_lib.sweep validate`` both call it.

Example:
    >>> check_int("epochs", 2.5, low=1)
    Traceback (most recent call last):
    ...
    ballot_lib.checks.ParameterError: epochs must be an integer, got 2.5 (float)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

from .checks import (MAX_SEED, ParameterError, check_arguments, check_bool, check_density,  # noqa: F401
                     check_device_name, check_fields, check_int, check_list, check_number, check_seed, check_str,
                     check_type, is_int, is_number)
from .models import check_takes_input, takes_input
from .notebook_files import injected_parameter_names, notebook_parameter_types, notebook_path  # noqa: F401

#: Public names, the single-value checks of :mod:`ballot_lib.checks` included (re-exported).
__all__ = ["MAX_SEED", "NOTEBOOK_TYPES", "ParameterError", "check_arguments", "check_bool", "check_density",
           "check_device_name", "check_fields", "check_int", "check_list", "check_number", "check_seed", "check_str",
           "check_type", "injected_parameter_names", "is_int", "is_number", "notebook_parameter_types",
           "notebook_path", "validate_notebook_params"]


#: papermill's ``inferred_type_name`` -> annotation checked by :func:`check_type`.
NOTEBOOK_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple,
                  "dict": dict}


def _ballot_check(options: Mapping[str, Any], density: Any) -> Any:
    """Validate Ballot options with the method's own rules; return the configuration (``None`` when the method
    is not available)."""
    from .methods import METHODS, make_config

    if "density" in options:
        raise ParameterError("'density' is not a Ballot option here: the notebook's densities set it")
    if "ballot" in METHODS:
        return make_config("ballot", density=density if is_number(density) else 0.2, **options)
    return None


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
    configs = {}
    # Notebook 03's rewind point applies to LTH and every Ballot candidate alike (ballot_lib.comparison.rewound).
    rewind = check_int("rewind_epoch", params["rewind_epoch"], 0) if "rewind_epoch" in params else None
    if "ballot_candidates" in params:
        cands = params["ballot_candidates"]
        if not isinstance(cands, Mapping) or not cands:
            raise ParameterError(f"ballot_candidates must be a non-empty dict name -> Ballot options, got {cands!r}")
        for name, opts in cands.items():
            if not isinstance(opts, Mapping):
                raise ParameterError(f"ballot_candidates[{name!r}] must be a dict of Ballot options, got {opts!r}")
            if rewind is not None:
                from .comparison import rewound

                try:
                    opts = rewound({name: opts}, rewind)[name]
                except ValueError as e:
                    raise ParameterError(str(e)) from None
            try:
                configs[name] = _ballot_check(dict(opts), params.get("densities", [0.2])[0])
            except ValueError as e:
                raise ParameterError(f"ballot_candidates[{name!r}]: {e}") from None
    _per_dataset_recipes(params, {k: c for k, c in configs.items() if c is not None})


def image_input(data: Any) -> Optional[bool]:
    """Whether the dataset of ``data`` (a :class:`~ballot_lib.data.DataConfig`) gives images (True) or feature
    vectors (False), known without loading a real dataset (its nominal sizes); None when it cannot be told."""
    from .data.sizes import split_sizes

    try:
        return split_sizes(data).side is not None
    except (ValueError, OSError):
        return None


#: Whether each real dataset of fixed attributes (sized without its files, :data:`ballot_lib.data.sizes.NOMINAL`)
#: gives sensitive groups; CelebA's and UTKFace's depend on ``target``/``sensitive``
#: (:func:`ballot_lib.data.core.resolved_attributes`).
REAL_GROUPS = {"cifar10": False, "cifar100": False, "cifar10s": True, "tinyimagenet": False}


def has_groups(data: Any) -> Optional[bool]:
    """Whether the dataset of ``data`` (a :class:`~ballot_lib.data.DataConfig`) has sensitive groups, known
    without reading a real dataset's files (an embedded one is loaded: it is small); None when it cannot be told."""
    from .data.core import ATTRIBUTE_DEFAULTS, get_dataset, resolved_attributes
    from .data.sizes import NOMINAL

    try:
        if data.name in ATTRIBUTE_DEFAULTS:
            return resolved_attributes(data)[1] is not None
        if data.name in NOMINAL:
            return REAL_GROUPS.get(data.name)
        return get_dataset(data).num_groups > 0
    except (ValueError, OSError, KeyError, AttributeError):
        return None


def _per_dataset_recipes(params: Mapping[str, Any], candidates: Mapping[str, Any]) -> None:
    """Notebook 03: each dataset's recipe (the parameters with its ``dataset_overrides``) is valid, and every Ballot
    candidate (``candidates``: name -> its checked configuration) fits it (e.g. a rewind point inside that
    dataset's epochs). No data is loaded, nothing is written."""
    from .experiment import experiment_from

    if "datasets" not in params and "dataset_overrides" not in params:
        return
    over = dict(params.get("dataset_overrides") or {})
    datasets = list(params.get("datasets") or [])
    models = [m for m in (params.get("models") or ["mlp"]) if isinstance(m, str)] or ["mlp"]
    pairs = 0
    for ds in dict.fromkeys(datasets + list(over)):
        where = f"dataset_overrides[{ds!r}]" if ds in over else f"dataset {ds!r}"
        try:
            exp = experiment_from({**params, **over.get(ds, {})}, dataset=ds, model=models[0], check_device=False)
        except ValueError as e:
            raise ParameterError(f"{where}: {e}") from None
        if ds not in datasets:
            continue
        if "rewind_epoch" in params and not 0 <= params["rewind_epoch"] < exp.train.epochs:
            raise ParameterError(f"rewind_epoch={params['rewind_epoch']} on {ds} ({exp.train.epochs} epochs): the "
                                 f"rewind point must be in [0, {exp.train.epochs}) for every dataset")
        image = image_input(exp.data)  # the notebook skips a model that cannot take the dataset's inputs
        pairs += sum(image is None or takes_input(m, image) for m in models)
        for name, cfg in candidates.items():
            try:
                cfg.validate_recipe(exp)
            except ValueError as e:
                raise ParameterError(f"ballot_candidates[{name!r}] on {ds} ({exp.train.epochs} epochs): {e}") from None
    if datasets and not pairs:
        raise ParameterError(f"no (dataset, model) pair of datasets {datasets} x models {models} is valid: the "
                             "models take images and the datasets give feature vectors")


def _rules(params: Mapping[str, Any], epochs: int, data: Any = None) -> None:
    """The library's rules for the notebooks' own parameters (those not passed to ``experiment_from_params``);
    ``data``: the experiment's :class:`~ballot_lib.data.DataConfig` (None when the notebook has no experiment)."""
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
    if "choice_eps" in params:
        check_number("choice_eps", params["choice_eps"], 0)
    if params.get("out_dir") and Path(params["out_dir"]).exists() and not Path(params["out_dir"]).is_dir():
        raise ParameterError(f"out_dir {params['out_dir']!r} exists and is not a folder")
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
            population = None  # type: ignore[assignment]
        if population is not None and "disparity" in params:
            check_str("disparity", params["disparity"])
            try:
                population.disparity_column(params["disparity"])
            except (ValueError, KeyError) as e:
                raise ParameterError(f"disparity: {e}") from None
            if params["disparity"] in population.GROUP_DISPARITIES and data is not None and \
                    has_groups(data) is False:
                valid = [d for d in sorted(population.DISPARITIES) if d not in population.GROUP_DISPARITIES]
                from .data.core import DATASET_OPTIONS

                hint = " (choose its sensitive attribute with `sensitive`)" if \
                    "sensitive" in DATASET_OPTIONS.get(data.name, {}) else ""
                raise ParameterError(f"disparity={params['disparity']!r} needs a dataset with a sensitive attribute "
                                     f"(groups); dataset {data.name!r} has none here{hint}; valid choices: "
                                     f"{', '.join(valid)}")
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
    undeclared = set(params) - set(declared)
    if undeclared:
        raise ParameterError(f"{name} has no parameter(s) {sorted(undeclared)}; valid: {sorted(declared)}")
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
        if "model" in declared and "dataset" in declared:
            check_takes_input(exp.model.name, exp.data.name, image_input(exp.data))
    # 3. The notebook's own parameters (densities, seeds, rewind points, ablation lists).
    _rules(merged, exp.train.epochs if exp is not None else 10**9, exp.data if exp is not None else None)
    return exp

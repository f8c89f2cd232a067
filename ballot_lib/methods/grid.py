"""Run many (variant, seed) combinations of one experiment and collect their results as one DataFrame."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from ..checks import ParameterError, check_density, check_list, check_seed
from ..experiment import Experiment
from ..results import Run, run_rows
from .base import (METHODS, check_kept_weights, check_method_args, config_dict, locked_run, make_config,
                   prepare_method)


@dataclass(frozen=True)
class Variant:
    """A method with fixed options, under a display label (e.g. ``Variant("LTH k=1", "lth", {"rewind_epoch": 1})``)."""

    label: str
    method: str
    options: dict = field(default_factory=dict)


def _as_list(name: str, values: Any, what: str, example: str) -> list:
    """``values`` as a non-empty list (a list, tuple, range or 1-d array), else a :class:`ParameterError`."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__") or \
            getattr(values, "ndim", 1) != 1:
        raise ParameterError(f"{name} must be a list of {what}, got {values!r} (with papermill's command line pass "
                             f"lists as YAML: -y '{name}: {example}')")
    return check_list(name, list(values))  # non-empty


def check_variants(variants: Iterable[Variant]) -> list[Variant]:
    """``variants`` as a non-empty list of :class:`Variant` with distinct labels, else a :class:`ParameterError`."""
    out = _as_list("variants", variants, "Variant(label, method, options)", "...")
    for i, v in enumerate(out):
        if not isinstance(v, Variant):
            raise ParameterError(f"variants[{i}] must be a Variant(label, method, options), got {v!r} "
                                 f"({type(v).__name__})")
    check_list("variants (labels)", [v.label for v in out], unique=True)
    return out


def check_densities(densities: Sequence[float]) -> list[float]:
    """``densities`` as a non-empty list of distinct numbers in (0, 1], else a :class:`ParameterError`."""
    out = _as_list("densities", densities, "numbers in (0, 1]", "[0.2, 0.05]")
    # each value once (a repeated one would run or count the same runs twice), compared as checked (1 == 1.0)
    return check_list("densities", [check_density(d, f"densities[{i}]") for i, d in enumerate(out)], unique=True)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` as a non-empty list of distinct seeds (see :func:`~ballot_lib.checks.check_seed`), else a
    :class:`ParameterError`."""
    out = _as_list("seeds", seeds, "non-negative integers", "[0, 1, 2]")
    return check_list("seeds", [check_seed(s, f"seeds[{i}]") for i, s in enumerate(out)], unique=True)


def expand(variants: Iterable[Variant], densities: Sequence[float]) -> list[tuple[Variant, Any]]:
    """Each sparse variant at each density (dense once), as (variant, validated config), before any training.

    The variants (non-empty, distinct labels) and every density (non-empty, distinct, each in (0, 1]) are checked
    first, whether or not a sparse variant uses them.
    """
    variants = check_variants(variants)
    densities = check_densities(densities)
    out = []
    for v in variants:
        # Options the grid would drop or override silently are refused (an extension review found both).
        if v.method == "dense" and v.options:
            raise ParameterError(f"variant {v.label!r}: the dense run takes no options, got {v.options}")
        if "density" in v.options:
            raise ParameterError(f"variant {v.label!r} sets density={v.options['density']!r}, which the grid sets "
                                 f"from its densities; leave it out of the variant's options")
        for d in [None] if v.method == "dense" else densities:
            kwargs = {} if d is None else {**v.options, "density": d}
            out.append((v, make_config(v.method, **kwargs)))
    return out


def prepare_grid(exp: Experiment, variants: Iterable[Variant], densities: Sequence[float]
                 ) -> list[tuple[Variant, Any]]:
    """Validate every (variant, density) job and let methods set up what the dense runs compute while they train.

    Calling this before the dense runs of a notebook train (e.g. with Ballot variants that come later) makes
    Ballot's vote gradients ride along with dense training instead of needing a replay.
    """
    jobs = expand(variants, densities)
    for v, cfg in jobs:
        check_method_args(exp, v.method, cfg)
        check_kept_weights(exp, cfg)  # as run_method does: a density keeping no weight trained a constant net
    for v, cfg in jobs:
        prepare_method(exp, v.method, cfg)
    return jobs


def run_grid(exp: Experiment, variants: Iterable[Variant], densities: Sequence[float], seeds: Sequence[int],
             progress: bool = True) -> pd.DataFrame:
    """Run every variant at every density under every seed (finished runs are loaded, not retrained).

    Returns the tidy rows of :func:`ballot_lib.results.run_rows` (one per run and split) with ``variant`` set to
    the variant's label. Every option is validated before training starts.
    """
    seeds = check_seeds(seeds)  # every seed (and below every variant and density) before the first job
    jobs = prepare_grid(exp, variants, densities)
    plan = [(seed, v, cfg) for seed in seeds for v, cfg in jobs]
    it: Any = plan
    if progress:
        from ..progress import bar

        it = bar(plan, desc="runs", leave=True)
    # One bar for the grid replaces the per-run bars (they would print a line per run in executed notebooks).
    inner_progress, exp.progress = exp.progress, exp.progress and not progress
    try:
        results = [(v, _finished_or_run(exp, v.method, cfg, seed)) for seed, v, cfg in it]
    finally:
        exp.progress = inner_progress
    rows = []
    for v, run in results:
        for row in run_rows(run.path):
            row["variant"] = v.label
            rows.append(row)
    return pd.DataFrame(rows)


def _finished_or_run(exp: Experiment, method: str, cfg: Any, seed: int) -> Run:
    """The run of (method, cfg, seed), trained first unless it is complete.

    A complete run of a method whose lifecycle :func:`locked_run` owns is not loaded here: the grid only needs its
    rows, which :func:`run_rows` reads and checks. Loading its mask as well would cost a ``torch.load`` per run
    (about 30 s on a store of 10,000 runs, see ``benchmarks/bench_store.py``). The dense run keeps its own path
    (it may still have extras to compute).
    """
    if getattr(METHODS.get(method), "managed", False):
        run = exp.store.run(exp.run_config(method, config_dict(cfg), seed))
        if run.complete:
            return run
    return locked_run(exp, method, cfg, seed).run

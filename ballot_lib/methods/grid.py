"""Run many (variant, seed) combinations of one experiment and collect their results as one DataFrame."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from ..experiment import Experiment
from ..results import run_rows
from .base import METHODS, check_method_args, make_config


@dataclass(frozen=True)
class Variant:
    """A method with fixed options, under a display label (e.g. ``Variant("LTH k=1", "lth", {"rewind_epoch": 1})``)."""

    label: str
    method: str
    options: dict = field(default_factory=dict)


def expand(variants: Iterable[Variant], densities: Sequence[float]) -> list[tuple[Variant, dict]]:
    """Each sparse variant at each density (dense once); options validated now, before any training."""
    if isinstance(densities, (str, bytes)) or not all(isinstance(d, (int, float)) for d in densities):
        raise ValueError(f"densities must be a list of numbers in (0, 1], got {densities!r} (with papermill's "
                         "command line pass lists as YAML: -y 'densities: [0.2, 0.05]')")
    out = []
    for v in variants:
        if v.method == "dense":
            out.append((v, {}))
            continue
        for d in densities:
            kwargs = {**v.options, "density": d}
            make_config(v.method, **kwargs)
            out.append((v, kwargs))
    return out


def prepare_grid(exp: Experiment, variants: Iterable[Variant], densities: Sequence[float]
                 ) -> list[tuple[Variant, dict]]:
    """Validate every (variant, density) job and let methods set up what the dense runs compute while they train.

    Calling this before the dense runs of a notebook train (e.g. with Ballot variants that come later) makes
    Ballot's vote gradients ride along with dense training instead of needing a replay.
    """
    jobs = expand(variants, densities)
    configs = [make_config(v.method, **kwargs) for v, kwargs in jobs]
    for (v, _), cfg in zip(jobs, configs):
        check_method_args(exp, v.method, cfg)
    for (v, _), cfg in zip(jobs, configs):
        prepare = METHODS.get(v.method).prepare
        if prepare is not None:
            prepare(exp, cfg)
    return jobs


def run_grid(exp: Experiment, variants: Iterable[Variant], densities: Sequence[float], seeds: Sequence[int],
             progress: bool = True) -> pd.DataFrame:
    """Run every variant at every density under every seed (finished runs are loaded, not retrained).

    Returns the tidy rows (one per run and split) with the extra columns ``variant`` (the label) and
    ``density_target`` (the requested density; 1.0 for dense). Every option is validated before training starts.
    """

    if isinstance(seeds, (str, bytes)) or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be a list of integers, got {seeds!r}")
    jobs = prepare_grid(exp, variants, densities)
    plan = [(seed, v, kwargs) for seed in seeds for v, kwargs in jobs]
    it: Any = plan
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(plan, desc="runs")
    rows = []
    # One bar for the grid replaces the per-run bars (they would print a line per run in executed notebooks).
    inner_progress, exp.progress = exp.progress, exp.progress and not progress
    try:
        results = [(v, kwargs, METHODS.get(v.method).run(exp, make_config(v.method, **kwargs), seed))
                   for seed, v, kwargs in it]
    finally:
        exp.progress = inner_progress
    for v, kwargs, res in results:
        for row in run_rows(res.run.path):
            row["variant"] = v.label
            row["density_target"] = float(kwargs.get("density", 1.0))
            rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["dataset"] = df["data.name"]
        df["model"] = df["model.name"]
    return df

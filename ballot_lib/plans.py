"""What each notebook trains, as data: the variant lists the notebooks call, and each notebook's whole plan.

A notebook trains through :func:`ballot_lib.methods.run_grid` (variants × densities × seeds of one experiment).
The variant lists live here, and the notebooks take them from here, so that a plan read off a parameter file
(:func:`notebook_plan`, used by ``python -m ballot_lib.sweep cost``) lists exactly the grids the notebook will
run -- before anything is loaded, trained or written. Where a notebook picks an option on val and then trains
with it (notebook 02's ablation winner, notebook 03's Ballot candidate), the plan assumes the library default
(``default``), which every candidate list contains, unless ``choices`` names the winner; a different winner
changes which Ballot runs train, not how many (unless its ``rewind_epoch`` differs, which changes the epochs by
the rewind point).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .methods.grid import Variant
from .models import takes_input

#: Ballot's attribution controls in notebook 03 (label suffix -> options over a candidate's).
BALLOT_CONTROLS: dict[str, dict[str, Any]] = {"plain": {"refined": False}, "eta0": {"eta": 0.0}}


@dataclass(frozen=True)
class Grid:
    """One ``run_grid`` call of a notebook: ``variants`` × ``densities`` × ``seeds`` on the experiment that the
    notebook builds from ``params`` (``experiment_from(params)``)."""

    stage: str
    params: Mapping[str, Any]
    variants: Sequence[Variant]
    densities: Sequence[float]
    seeds: Sequence[int]


# ------------------------------------------------------------------------------------------ notebook 01

def lth_failure_variants(rewind_epoch: int, include_ballot: bool) -> dict[str, Any]:
    """Notebook 01's variant lists: ``main`` (dense, MP, LTH), ``selection`` (same training θk, three masks: the
    magnitude mask, a random mask with its per-layer counts, Ballot's mask if ``include_ballot``), ``training``
    (one mask, five trainings) and ``ballot_mask`` (the Ballot variant, or None)."""
    ballot_mask = Variant("Ballot mask", "ballot", {"rewind_epoch": rewind_epoch, "refined": False})
    selection = [Variant("dense", "dense"), Variant("magnitude mask", "lth", {"rewind_epoch": rewind_epoch}),
                 Variant("random mask", "random", {"rewind_epoch": rewind_epoch})]
    if include_ballot:
        selection.append(ballot_mask)
    training = [
        Variant("dense", "dense"),
        Variant("rewind θ0", "lth", {"rewind_epoch": 0}),
        Variant("rewind θk", "lth", {"rewind_epoch": rewind_epoch}),
        Variant("fine-tune θT (short)", "mp", {"finetune": "short"}),
        Variant("LR rewinding", "mp", {"finetune": "lr_rewind", "rewind_epoch": rewind_epoch}),
        Variant("fine-tune θT (full)", "mp", {"finetune": "full"}),
    ]
    return {"main": [Variant("dense", "dense"), Variant("MP", "mp"), Variant("LTH", "lth")],
            "selection": selection, "training": training, "ballot_mask": ballot_mask if include_ballot else None}


def _plan_01(p: Mapping[str, Any], choices: Mapping[str, str]) -> list[Grid]:
    from .methods import METHODS

    v = lth_failure_variants(p["rewind_epoch"], p["include_ballot"] and "ballot" in METHODS)
    return [Grid("main", p, v["main"], p["densities"], p["seeds"]),
            Grid("selection", p, v["selection"], p["densities"], p["seeds"]),
            Grid("training", p, v["training"], [p["training_density"]], p["seeds"])]


# ------------------------------------------------------------------------------------------ notebook 02

def ballot_walkthrough_variants(select_eps: float) -> list[Variant]:
    """Notebook 02's walk-through of one seed at ``density``: LTH, Ballot plain and Ballot refined."""
    return [Variant("LTH", "lth"), Variant("Ballot plain", "ballot", {"refined": False}),
            Variant("Ballot refined", "ballot", {"refined": True, "select_eps": select_eps})]


def ballot_method_comparison(ballot_options: Mapping[str, Any], select_eps: float) -> list[Variant]:
    """Notebook 02's final comparison: dense, MP, LTH and Ballot with the options the ablation chose. MP and LTH
    take their checkpoint by Ballot's rule (:func:`ballot_lib.methods.ballot.same_selection`: the val rule with
    refined training), so the table compares like with like (a ``val_rule`` run reuses its stored last-epoch twin's
    training)."""
    from .methods.ballot import same_selection

    same = same_selection(ballot_options, select_eps)
    return [Variant("dense", "dense"), Variant("MP", "mp", same), Variant("LTH", "lth", same),
            Variant("Ballot", "ballot", {**ballot_options, "select_eps": select_eps})]


def _plan_02(p: Mapping[str, Any], choices: Mapping[str, str]) -> list[Grid]:
    from . import ablation
    from .methods.ballot import BallotConfig

    default = BallotConfig(density=p["density"])
    options, _ = ablation.deduplicate(default, ablation.candidate_options(
        p["etas"], p["gammas"], p["vote_fractions"], p["vote_epoch_counts"], p["rewind_epochs"]))
    seed0 = list(p["ablation_seeds"])[:1]
    chosen = choices.get("ablation", ablation.DEFAULT)
    if chosen not in options:
        raise ValueError(f"choices['ablation']: {chosen!r} is not an option set; option sets: {', '.join(options)}")
    return [Grid("walk-through", p, [Variant("dense", "dense")] + ballot_walkthrough_variants(p["select_eps"]),
                 [p["density"]], seed0),
            Grid("ablation", p, ablation.variants(default, options, p["select_eps"]), [p["density"]],
                 p["ablation_seeds"]),
            Grid("comparison", p, ballot_method_comparison({**ablation.base_options(default), **options[chosen]},
                                                           p["select_eps"]), p["densities"], p["seeds"])]


# ------------------------------------------------------------------------------------------ notebook 03

def ballot_candidate_variants(candidates: Mapping[str, Mapping[str, Any]], select_eps: float) -> list[Variant]:
    """Notebook 03's Ballot candidates (``Ballot[<name>]``), chosen among on the pooled val split."""
    return [Variant(f"Ballot[{name}]", "ballot", {**opts, "select_eps": select_eps})
            for name, opts in candidates.items()]


def ballot_control_variants(candidates: Mapping[str, Mapping[str, Any]], select_eps: float) -> list[Variant]:
    """The attribution controls of every candidate (announced before the dense runs train, so that their votes
    are streamed; only the chosen candidate's are trained, by :func:`ballot_lib.comparison.comparison_variants`)."""
    return [Variant(f"{name}[{c}]", "ballot", {**candidates[c], "select_eps": select_eps, **extra})
            for c in candidates for name, extra in BALLOT_CONTROLS.items()]


def _plan_03(p: Mapping[str, Any], choices: Mapping[str, str]) -> list[Grid]:
    from . import comparison as C

    baselines = C.baselines_for(p.get("compute_matched", True))
    rewind = p.get("rewind_epoch", 0)
    cands = C.rewound(p["ballot_candidates"], rewind)
    eps = p["select_eps"]
    chosen = choices.get("ballot", "default" if "default" in cands else next(iter(cands)))
    if chosen not in cands:
        raise ValueError(f"choices['ballot']: {chosen!r} is not a Ballot candidate; candidates: {', '.join(cands)}")
    out = []
    for ds, model, params in setting_params(p):
        # per setting: with late rewinding the compute-matched budgets depend on the setting's epochs
        comp = C.comparison_variants({**cands[chosen], "select_eps": eps}, baselines,
                                     {b: {"select_eps": eps} for b in baselines}, rewind_epoch=rewind,
                                     epochs=params.get("epochs"))
        out.append(Grid(f"{ds}/{model} candidates", params, ballot_candidate_variants(cands, eps), p["densities"],
                        p["seeds"]))
        out.append(Grid(f"{ds}/{model} comparison", params, comp, p["densities"], p["seeds"]))
    return out


def setting_params(p: Mapping[str, Any]) -> list[tuple[str, str, dict]]:
    """Notebook 03's (dataset, model, experiment parameters) pairs, as :func:`ballot_lib.comparison.settings_for`
    builds them, without loading data: image models are skipped on tabular datasets
    (:func:`ballot_lib.models.takes_input`)."""
    overrides = dict(p.get("dataset_overrides") or {})
    out = []
    for ds in p["datasets"]:
        for model in p["models"]:
            if not takes_input(model, image=not is_tabular(ds)):
                continue
            out.append((ds, model, {**p, **overrides.get(ds, {}), "dataset": ds, "model": model}))
    return out


def is_tabular(dataset: str) -> bool:
    """Whether ``dataset`` has flat feature vectors (no conv model can take it); real image datasets are known
    by name, embedded ones are loaded (they are small; :func:`ballot_lib.data.sizes.split_sizes`)."""
    from .data import DataConfig
    from .data.sizes import split_sizes

    return split_sizes(DataConfig(dataset)).side is None


# ------------------------------------------------------------------------------------------ notebook 04

def population_variants(techniques: Sequence[str], retrain_epochs: int) -> list[Variant]:
    """Notebook 04's population: the dense run and each pruning technique retrained for ``retrain_epochs``
    (0: the full recipe)."""
    retrain = {"retrain_epochs": retrain_epochs or None}
    return [Variant("dense", "dense")] + [Variant(t, t, retrain) for t in techniques]


def _plan_04(p: Mapping[str, Any], choices: Mapping[str, str]) -> list[Grid]:
    return [Grid("population", p, population_variants(p["techniques"], p["retrain_epochs"]), p["densities"],
                 p["seeds"])]


#: notebook file name -> planner (full parameters -> grids); notebooks 00 and 05 train nothing worth planning
#: (00: one seed of dense/MP/LTH; 05 trains nothing).
PLANNERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, str]], list[Grid]]] = {
    "01_lth_fairness_failure.ipynb": _plan_01,
    "02_ballot_method.ipynb": _plan_02,
    "03_baseline_comparison.ipynb": _plan_03,
    "04_prune_responsibly.ipynb": _plan_04,
}


def notebook_plan(notebook: str, params: Mapping[str, Any], choices: Optional[Mapping[str, str]] = None
                  ) -> list[Grid]:
    """The grids that ``notebook`` trains with ``params`` (the job's parameters over the notebook's defaults).

    ``choices``: what the notebook chose on val, where known (``{"ballot": <candidate>}`` for notebook 03,
    ``{"ablation": <option set>}`` for notebook 02); default: the library defaults. Raises ``ValueError`` naming
    the notebooks that have a plan when ``notebook`` has none.
    """
    from .notebook_files import notebook_parameters, notebook_path

    path = notebook_path(notebook)
    planner: Optional[Callable] = PLANNERS.get(path.name)
    if planner is None:
        raise ValueError(f"notebook {path.name!r} has no training plan; notebooks with one: {', '.join(PLANNERS)}")
    return planner({**notebook_parameters(path), **params}, dict(choices or {}))

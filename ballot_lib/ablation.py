"""Notebook 02's ablation of Ballot's options: which option sets to run, the val table with seed CIs, the choice.

Each option set changes the library default in one respect (one option, or the score and conflict rule
together). Option sets that turn out identical to the default (e.g. ``eta=1`` when the default η is 1) or to an
earlier option set are dropped, so no row of the table is a relabelled copy of another. Every row carries 95 %
Student-t CIs over the ablation seeds and the difference to the default *paired by seed*: on a small val split
one image moves a class's recall by several points, and a ranking without CIs reads noise as a finding.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

# A seed of an option set counts as collapsed when its balanced accuracy keeps less than COLLAPSE of the reference's
# (the default's) gain over chance in the same seed: the rule of ballot_lib.analysis.collapsed_runs, with the
# default in place of the dense run.
from .analysis import (COLLAPSE, balanced_accuracy, class_columns, collapsed_runs, paired, select_by_rule, skill_ratio,
                       summarize)
from .methods import ballot
from .methods.ballot import BUDGETS, CONFLICTS, SCORES, BallotConfig, same_selection
from .methods.grid import Variant
from .pruning import magnitude_mask

DEFAULT = "default"
#: Option sets never eligible for the val choice: the authors' final-layer procedure, the LTH reference, and plain
#: training (``refined=False``), which keeps its last epoch while the other rows pick theirs on val: its val metrics
#: are not comparable with theirs (the val-picked epochs are optimistic on val), so it is shown, not chosen.
NOT_CHOSEN = ("faithful (authors' vote, final layer)", "LTH", "refined=False")


def base_options(default: BallotConfig) -> dict[str, Any]:
    """The options of a Ballot configuration, without its density."""
    return {k: v for k, v in asdict(default).items() if k != "density"}


def over_base(base: Mapping[str, Any], opts: Mapping[str, Any]) -> dict[str, Any]:
    """An option set over the default's options. Faithful mode fixes some fields itself
    (``BallotConfig.FAITHFUL``) and refuses other values for them: those of the default are left out of a
    faithful option set (the option set's own are kept, so an explicit conflicting choice is still an error)."""
    merged = {**base, **opts}
    if merged.get("mode") == "faithful":
        for k in BallotConfig.FAITHFUL:
            if k not in opts:
                merged.pop(k, None)
    return merged


def candidate_options(etas: Sequence[float] = (0.0, 0.5, 1.0, 2.0), gammas: Sequence[float] = (1.0, 3.0),
                      vote_fractions: Sequence[float] = (0.05, 0.1, 0.3), vote_epoch_counts: Sequence[int] = (0, 5),
                      rewind_epochs: Sequence[int] = (0, 1)) -> dict[str, dict[str, Any]]:
    """Every option set of the ablation, labelled, before duplicates are removed (``default`` first)."""
    out: dict[str, dict[str, Any]] = {DEFAULT: {}}
    for score in SCORES:
        for conflict in CONFLICTS:
            out[f"score={score}, conflict={conflict}"] = {"score": score, "conflict": conflict}
    for eta in etas:
        out[f"eta={eta:g}"] = {"eta": float(eta)}
    for g in gammas:
        out[f"gamma={g:g}"] = {"gamma": float(g)}
    # w ∝ exp(val CE / τ): does not flatten when val recall saturates.
    out["weighting=loss"] = {"weighting": "loss"}
    for n in vote_epoch_counts:
        out[f"vote_epochs={n}"] = {"vote_epochs": int(n)}
    for f in vote_fractions:
        out[f"vote_fraction={f:g}"] = {"vote_fraction": float(f)}
    for k in rewind_epochs:
        out[f"rewind_epoch={k}"] = {"rewind_epoch": int(k)}
    for b in BUDGETS:
        out[f"budgets={b}"] = {"budgets": b}
    out["refined=False"] = {"refined": False}
    out["faithful (authors' vote, final layer)"] = {"mode": "faithful"}
    return out


def deduplicate(default: BallotConfig, candidates: Mapping[str, Mapping[str, Any]]
                ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Drop option sets whose configuration equals an earlier one (the default comes first).

    Returns ``(kept, dropped)``: ``kept`` maps label -> options (in the given order), ``dropped`` maps each
    dropped label to the label of the identical configuration that was kept.

    Example:
        >>> kept, dropped = deduplicate(BallotConfig(density=0.1), {"default": {}, "eta=1": {"eta": 1.0},
        ...                                                         "eta=2": {"eta": 2.0}})
        >>> list(kept), dropped
        (['default', 'eta=2'], {'eta=1': 'default'})
    """
    base = base_options(default)
    seen: dict[BallotConfig, str] = {}
    kept: dict[str, dict[str, Any]] = {}
    dropped: dict[str, str] = {}
    for label, opts in candidates.items():
        cfg = BallotConfig(density=default.density, **over_base(base, opts))
        if cfg in seen:
            dropped[label] = seen[cfg]
            continue
        seen[cfg] = label
        kept[label] = dict(opts)
    return kept, dropped


def variants(default: BallotConfig, options: Mapping[str, Mapping[str, Any]], select_eps: float,
             reference: Optional[str] = "LTH") -> list[Variant]:
    """One Ballot :class:`Variant` per option set (over the default's options), plus LTH as the reference.

    The reference takes its checkpoint by the default's rule (:func:`ballot_lib.methods.ballot.same_selection`:
    the val rule with refined training), like the option sets, so that the paired val differences compare like
    with like; its ``val_rule`` run reuses the training of its last-epoch twin."""
    base = base_options(default)
    out = [Variant(label, "ballot", {**over_base(base, opts), "select_eps": select_eps})
           for label, opts in options.items()]
    if reference:
        out.append(Variant(reference, "lth", same_selection(base, select_eps)))
    return out


def chance_level(df: pd.DataFrame) -> float:
    """Accuracy of a uniform guess: 1 / (number of classes), from the per-class recall columns (NaN without)."""
    cols = class_columns(df)
    return 1.0 / len(cols) if cols else float("nan")


def collapsed_seeds(df: pd.DataFrame, chance: float, split: str = "val", reference: str = DEFAULT,
                    threshold: float = COLLAPSE) -> pd.Series:
    """Per variant, the number of seeds whose ``split`` skill keeps less than ``threshold`` of the ``reference``'s
    in the same seed (0 where the reference has no such seed, or is itself at chance there).

    Skill is measured as in :func:`ballot_lib.analysis.collapsed_runs`: **balanced** accuracy over its chance level
    1/C when the rows carry per-class recalls (a majority-class predictor is then at chance whatever the class
    balance); rows without them fall back to plain accuracy over the given ``chance``."""
    d = df[df["split"] == split].drop_duplicates(["variant", "seed"]).copy()
    d["_score"], d["_chance"] = balanced_accuracy(d)
    d["_chance"] = d["_chance"].fillna(chance)
    ref = d[d["variant"] == reference].set_index("seed")["_score"]
    out = {}
    for v, g in d.groupby("variant", sort=False):
        g = g.set_index("seed")
        gain = ref.reindex(g.index) - g["_chance"]
        skill = (g["_score"] - g["_chance"]) / gain.where(gain > 0)
        out[v] = int((skill < threshold).sum())
    return pd.Series(out, dtype=int)


def table(df: pd.DataFrame, metrics: Sequence[str] = ("acc", "mcd", "cwv"), select_split: str = "val",
          report_split: str = "test", reference: str = DEFAULT, chance: Optional[float] = None,
          dense: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The ablation table: per option set, mean and 95 % CI over seeds of each metric on ``select_split``, the
    difference to ``reference`` paired by seed (with CI and significance) on ``select_split``, and the means on
    ``report_split`` (shown, never used for the choice).

    Columns: ``variant``, ``seeds``, ``<m>``, ``<m>_ci`` (select split), ``d_<m>``, ``d_<m>_low``, ``d_<m>_high``,
    ``d_<m>_sig`` (paired vs reference), ``<m>_<report_split>``, and ``collapsed``: the seeds whose balanced
    accuracy on ``select_split`` is near chance (:func:`collapsed_seeds`; ``chance`` defaults to 1 / number of
    classes, from the per-class columns; without them the column is 0). ``attrs["chance"]`` holds the chance level used.
    With ``dense`` (the same seeds' dense runs, rows of :func:`ballot_lib.methods.run_grid`), collapse is judged
    as in every comparison of the suite (:func:`ballot_lib.analysis.collapsed_runs`: less than half of the
    same-seed dense run's balanced-accuracy gain over chance) and ``attrs["collapse_reference"]`` is ``"dense"``;
    without it, against ``reference``. ``min_skill``: the lowest skill ratio over seeds on ``select_split``
    (:func:`seed_skills`, same reference): a run collapses below :data:`ballot_lib.analysis.COLLAPSE`. Rows keep the
    order of first appearance in ``df``.
    """
    order = list(dict.fromkeys(df["variant"]))
    chance = chance_level(df) if chance is None else float(chance)
    if dense is not None and "acc" in df:
        runs = collapsed_runs(pd.concat([df, dense.assign(variant="Dense")], ignore_index=True), split=select_split)
        collapsed = runs.groupby("variant")["seed"].nunique()
    elif "acc" in df and chance == chance:
        collapsed = collapsed_seeds(df, chance, select_split, reference)
    else:
        collapsed = pd.Series(dtype=int)
    skills = seed_skills(df, select_split, reference, dense) if "acc" in df else pd.DataFrame()
    min_skill = (skills.groupby("variant")["skill"].min() if len(skills) else pd.Series(dtype=float))
    sel = summarize(df, metrics, by=("variant",), split=select_split).set_index("variant")
    rep = summarize(df, metrics, by=("variant",), split=report_split).set_index("variant")
    rows = []
    for v in order:
        row: dict[str, Any] = {"variant": v, "seeds": int(sel.loc[v, "seeds"])}
        for m in metrics:
            row[m] = sel.loc[v, m]
            row[f"{m}_ci"] = sel.loc[v, f"{m}_ci"]
        if v != reference and reference in sel.index:
            p = paired(df, v, reference, metrics, split=select_split).set_index("metric")
            for m in metrics:
                row[f"d_{m}"], row[f"d_{m}_low"], row[f"d_{m}_high"] = (p.loc[m, "diff"], p.loc[m, "ci_low"],
                                                                       p.loc[m, "ci_high"])
                row[f"d_{m}_sig"] = bool(p.loc[m, "significant"])
                row[f"d_{m}_p"] = float(p.loc[m, "p"])
        else:
            for m in metrics:
                row[f"d_{m}"] = row[f"d_{m}_low"] = row[f"d_{m}_high"] = 0.0 if v == reference else float("nan")
                row[f"d_{m}_sig"] = False
                row[f"d_{m}_p"] = float("nan")
        for m in metrics:
            row[f"{m}_{report_split}"] = rep.loc[v, m] if v in rep.index else float("nan")
        row["collapsed"] = int(collapsed.get(v, 0))
        row["min_skill"] = float(min_skill.get(v, float("nan")))
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["chance"] = chance
    out.attrs["collapse_reference"] = "dense" if dense is not None else reference
    if dense is not None:
        d = dense[dense["split"] == select_split]
        out.attrs["dense_acc"] = float(d["acc"].mean()) if len(d) else float("nan")
    return out


def display_table(tab: pd.DataFrame, metrics: Sequence[str] = ("acc", "mcd")) -> pd.DataFrame:
    """A compact view of :func:`table`: accuracy and MCD in points, ``mean ± CI`` on val, Δ vs default with CI."""
    out = pd.DataFrame({"option set": tab["variant"], "seeds": tab["seeds"]})
    for m in metrics:
        out[f"val {m.upper()} (pts)"] = [f"{100 * a:.1f} ± {100 * c:.1f}" for a, c in zip(tab[m], tab[f"{m}_ci"])]
        out[f"Δ {m.upper()} vs default"] = [
            "" if pd.isna(d) or v == DEFAULT else
            f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" + (" *" if sig else "")
            for v, d, lo, hi, sig in zip(tab["variant"], tab[f"d_{m}"], tab[f"d_{m}_low"], tab[f"d_{m}_high"],
                                         tab[f"d_{m}_sig"])]
    for m in metrics:
        if f"{m}_test" in tab:
            out[f"test {m.upper()} (pts)"] = (100 * tab[f"{m}_test"]).round(1)
    if "collapsed" in tab and tab["collapsed"].any():
        out["collapsed seeds (val)"] = [f"{c}/{n}" if c else "" for c, n in zip(tab["collapsed"], tab["seeds"])]
    return out


#: Correction over the eligible option sets' paired val MCD tests when choosing (:func:`choose`).
CHOICE_CORRECTION = "holm"


def choice_pvalues(tab: pd.DataFrame, exclude: Sequence[str] = NOT_CHOSEN, reference: str = DEFAULT) -> pd.Series:
    """Per eligible option set (not ``reference``, not in ``exclude``, not a reference row such as LTH without a
    paired test): the p-value of its paired val MCD difference to the default, adjusted by
    :data:`CHOICE_CORRECTION` over all of them (one family: the sets the choice picks among). Index: variant."""
    from .metrics import adjust_pvalues

    rows = tab[~tab["variant"].isin(list(exclude)) & (tab["variant"] != reference)]
    p = rows["d_mcd_p"].astype(float) if "d_mcd_p" in rows else pd.Series(float("nan"), index=rows.index)
    return pd.Series(adjust_pvalues(p.to_numpy(), CHOICE_CORRECTION), index=rows["variant"].to_numpy(),
                     dtype=float)


def choose(tab: pd.DataFrame, eps: float, exclude: Sequence[str] = NOT_CHOSEN, reference: str = DEFAULT
           ) -> pd.Series:
    """The option set used after the ablation: the library default (``reference``) unless an option set is
    **significantly better on val**, i.e., paired by seed against the default (:func:`table`), its val MCD is lower
    with a p-value below 0.05 after Holm's correction over every eligible option set (:func:`choice_pvalues`; the
    paired t-test, or the exact sign-flip test when every seed moved alike) and its val accuracy is not below the
    default's by more than ``eps`` (mean paired difference ``d_acc >= -eps``). Among several such sets, the one
    with the lowest val MCD (ties: higher val accuracy, then first listed). Rows in ``exclude`` are never chosen.

    On a small val split the best-looking of many option sets is mostly seed noise (one image moves a class's
    recall by several points); without a significant paired difference the default is kept, not the row that
    happens to rank first. The returned row's ``reason`` says which happened (``"kept"``: no set qualified,
    ``"chosen"``: a set did). Raises ``ValueError`` when the default is missing or excluded."""
    if reference not in set(tab["variant"]) or reference in set(exclude):
        raise ValueError(f"no option set left to choose from: the default {reference!r} is missing or excluded "
                         f"({list(exclude)})")
    candidates = tab[~tab["variant"].isin(list(exclude)) & (tab["variant"] != reference)]
    padj = choice_pvalues(tab, exclude, reference).reindex(candidates["variant"]).to_numpy()
    better = candidates[(candidates["d_mcd"] < 0) & (padj < 0.05) & (candidates["d_acc"] >= -eps)]
    if better.empty:
        row = tab[tab["variant"] == reference].iloc[0].copy()
        row["reason"] = "kept"
        return row
    row = better.sort_values(["mcd", "acc"], ascending=[True, False], kind="stable").iloc[0].copy()
    row["reason"] = "chosen"
    return row


def seed_skills(df: pd.DataFrame, split: str = "val", reference: str = DEFAULT,
                dense: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Per (variant, seed) on ``split``: the skill ratio of the collapse rule, (bacc − chance) / (ref bacc −
    chance), with bacc the balanced accuracy (:func:`ballot_lib.analysis.balanced_accuracy`) and ref the same
    seed's dense run when ``dense`` is given (:func:`ballot_lib.analysis.collapsed_runs`), else ``reference``.
    A run collapses when its ratio is below :data:`ballot_lib.analysis.COLLAPSE`. Columns: variant, seed, skill
    (NaN where the reference is missing or at chance)."""
    d = df[df["split"] == split].drop_duplicates(["variant", "seed"]).copy()
    if d.empty or "acc" not in d:
        return pd.DataFrame(columns=["variant", "seed", "skill"])
    d["_score"], d["_chance"] = balanced_accuracy(d)
    if d["_chance"].isna().all():
        d["_chance"] = chance_level(df)
    if dense is not None:
        r = dense[dense["split"] == split].copy()
        r["_score"], _ = balanced_accuracy(r)
        ref = r.groupby("seed")["_score"].mean()
    else:
        ref = d[d["variant"] == reference].set_index("seed")["_score"]
    d["skill"] = skill_ratio(d["_score"], d["_chance"], ref.reindex(d["seed"]).to_numpy())
    return d[["variant", "seed", "skill"]].reset_index(drop=True)


def reference_masks(exp: Any, cfg: BallotConfig, seed: int) -> tuple[dict, dict, dict[str, dict]]:
    """Ballot's mask for ``seed``, its diagnostics, and the masks it is compared with at the same density:
    LTH's global magnitude mask of θT and the η = 0 vote (same tally without the fairness gradient, same budgets).

    Returns ``(mask, diagnostics, {label: mask})``; masks cover the voted tensors (all prunable ones in full mode).
    """
    mask, diag = ballot.select_mask(exp, cfg, seed)
    rec0 = ballot.load_votes(exp, seed, cfg.vote_config(), cfg.tally_config(eta=0.0))
    net_T = exp.model_from(exp.dense_weights(seed, exp.train.epochs))
    voted = list(rec0["votes"])
    budgets, scope = ballot.final_budgets(cfg, net_T, voted)
    eta0 = ballot.mask_from_votes(rec0["votes"], rec0["total"], cfg.density, scope, budgets)
    lth = magnitude_mask(net_T, cfg.density)
    return ({n: mask[n] for n in voted}, diag,
            {"LTH magnitude mask": {n: lth[n] for n in voted}, "η = 0 vote (no fairness term)": eta0})

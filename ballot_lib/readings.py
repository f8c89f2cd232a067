"""The "Reading" after each result section of the notebooks, written from this run's numbers.

Every sentence is conditional on what the numbers say: a difference is called a difference only when its
paired 95 % CI excludes 0, seed wins are counted, and an empty finding is reported as such. Nothing here holds a
conclusion of its own; the same function says "lower" on one run and "no significant difference" on another.
Percent-scale metrics (accuracy, MCD and the group metrics) are written in points.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .analysis import CORRECTION_NAMES, lower_is_better

#: Metrics written in percentage points (the others, e.g. CWV, as raw values).
POINTS = ("acc", "mcd", "group_acc_gap", "worst_group_acc", "worst_class_acc", "dp_gap", "eo_gap")


def fmt(metric: str, x: float, signed: bool = True) -> str:
    """``x`` in the metric's unit: points for accuracy-like metrics, four decimals for CWV. Unsigned, a rate
    (accuracy, a worst recall) is a percentage and a gap between two rates (MCD, group gaps) a number of points."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if metric in POINTS:
        gap = metric in ("mcd", "group_acc_gap", "dp_gap", "eo_gap")
        return f"{100 * x:+.1f} pts" if signed else f"{100 * x:.1f} {'pts' if gap else '%'}"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _densities(ds: Sequence[float]) -> str:
    return ", ".join(f"{d:g}" for d in ds)


def paired(tab: pd.DataFrame, metrics: Sequence[str] = ("acc", "cwv", "mcd")) -> list[str]:
    """One sentence per (a, b, metric) of a paired table (:func:`ballot_lib.analysis.versus`): at which densities
    ``a`` is significantly better or worse than ``b``, where the CI includes 0, and the seed wins overall."""
    out: list[str] = []
    if tab.empty:
        return out
    if "significant_adj" in tab:  # a table from analysis.adjust_family: the correction decides, and is stated
        from .analysis import correction_note

        note = correction_note(tab)
        tab = tab.assign(significant=tab["significant_adj"])
        if note:
            out.append(note)
    has_density = "density" in tab
    for (a, b, m), g in tab[tab["metric"].isin(metrics)].groupby(["a", "b", "metric"], sort=False):
        lower = lower_is_better(m)
        better = g[g["significant"] & ((g["diff"] < 0) if lower else (g["diff"] > 0))]
        worse = g[g["significant"] & ((g["diff"] > 0) if lower else (g["diff"] < 0))]
        no_ci = g[~g["significant"] & (g["n"] < 2)]  # fewer than 2 paired seeds: no CI, nothing decided
        unclear = g[~g["significant"] & (g["n"] >= 2)]
        word_b, word_w = ("lower", "higher") if lower else ("higher", "lower")

        def where(part: pd.DataFrame) -> str:
            if not has_density or len(g) == 1:
                return f"({fmt(m, part['diff'].iloc[0])})"
            return "at density " + ", ".join(f"{r.density:g} ({fmt(m, r.diff)})" for r in part.itertuples())

        parts = []
        if len(better):
            parts.append(f"significantly {word_b} (better) {where(better)}")
        if len(worse):
            parts.append(f"significantly {word_w} (worse) {where(worse)}")
        if len(unclear):
            parts.append("not significantly different" + (
                "" if not has_density or len(g) == 1 else " at " + _densities(unclear["density"])))
        if len(no_ci):
            parts.append(f"{where(no_ci)} with fewer than 2 paired seeds: no CI, nothing decided")
        wins, n = int(g["wins"].sum()), int(g["n"].sum())
        pairs = "(seed, density) pairs" if has_density and g["density"].nunique() > 1 else "seed pairs"
        out.append(f"{m.upper()} of {a} vs {b}: " + "; ".join(parts) + f" — {a} better in {wins}/{n} {pairs}.")
    return out


def verdict_counts(verdicts: pd.DataFrame) -> str:
    """How many (method, density) settings hurt fairness, improved it, levelled down or did not change it."""
    if verdicts.empty:
        return "No pruned setting was compared with dense."
    from .analysis import UNDECIDED

    counts = verdicts["verdict"].value_counts()
    total = len(verdicts)
    if counts.get(UNDECIDED, 0) == total:
        return (f"With fewer than 2 paired seeds no (method, density) setting could be tested against dense "
                f"({total} settings): nothing is decided here about whether pruning hurt fairness; re-run with "
                f"more seeds.")
    hurt = verdicts[verdicts["verdict"] == "hurt"]
    from .analysis import CORRECTION_NAMES

    k, c = verdicts.attrs.get("family", 0), verdicts.attrs.get("correction", "none")
    how = (f"; {CORRECTION_NAMES.get(c, c)} over the {k} paired tests of this table" if k and c != "none" else
           "; per test, no multiple-comparison correction")
    text = (f"Pruning significantly hurt class fairness (CWV or MCD up vs dense{how}) in {counts.get('hurt', 0)} of "
            f"{total} (method, density) settings")
    if len(hurt):
        text += ": " + ", ".join(f"{r.variant} @ {r.density:g}" for r in hurt.itertuples())
    others = {k: v for k, v in counts.items() if k != "hurt"}
    if others:
        text += "; elsewhere: " + ", ".join(f"{v}× {k}" for k, v in others.items())
    lost = verdicts.attrs.get("uncorrected") or []
    if lost:
        text += (". Significant per test but not after the correction: "
                 + ", ".join(f"{m.upper()} of {v} @ {d:g}" for v, d, m in lost))
    return text + "."


def quickstart(table: pd.DataFrame, reference: str = "dense") -> str:
    """Notebook 00 (one seed): what MP and LTH did to accuracy and MCD relative to dense, stated as single-seed."""
    ref = table.loc[reference]
    lines = []
    for label in [i for i in table.index if i != reference]:
        r = table.loc[label]
        da, dm = r["acc"] - ref["acc"], r["mcd"] - ref["mcd"]
        dc = r["cwv"] - ref["cwv"] if "cwv" in table else None
        up = [m for m, d in (("CWV", dc), ("MCD", dm)) if d is not None and d > 0]
        measured = "CWV and MCD" if dc is not None else "MCD"
        fair = (f" and became less fair ({' and '.join(up)} up)" if len(up) == (2 if dc is not None else 1) else
                f" and was mixed on fairness ({up[0]} up, the other not)" if up else
                f" and did not become less fair ({measured} not up)")
        change = ("lost accuracy" if da < 0 else "kept or gained accuracy") + fair
        lines.append(f"{label} {change}: accuracy {fmt('acc', da)}, "
                     + (f"CWV {fmt('cwv', dc)}, " if dc is not None else "") + f"MCD {fmt('mcd', dm)} vs dense.")
    lines.append("One seed only: differences of a few points are within seed noise here; notebook 01 repeats "
                 "this over paired seeds with confidence intervals.")
    return " ".join(lines)


def selection(summary: pd.DataFrame, tab: pd.DataFrame, reference: str = "magnitude mask",
              collapse: float = 0.5) -> str:
    """Notebook 01, selection effect: each mask against the magnitude mask; a mask whose mean accuracy is below
    ``collapse`` × the reference's at a density is called a collapse and explained by its numbers."""
    lines = paired(tab, ("acc", "mcd"))
    for v in [x for x in summary["variant"].unique() if x not in (reference, "dense")]:
        for d in sorted(summary.loc[summary["variant"] == v, "density"].unique(), reverse=True):
            row = summary[(summary["variant"] == v) & np.isclose(summary["density"], d)]
            ref = summary[(summary["variant"] == reference) & np.isclose(summary["density"], d)]
            if row.empty or ref.empty:
                continue
            acc, acc_ref = float(row["acc"].iloc[0]), float(ref["acc"].iloc[0])
            if acc < collapse * acc_ref:
                text = (f"At density {d:g} the {v} collapses: accuracy {fmt('acc', acc, False)} against {fmt('acc', acc_ref, False)} for the "
                        f"{reference}, with the same per-layer densities and the same training.")
                # Only what was measured: the two masks differ in which weights they keep (per-layer counts and
                # training are held equal and were not varied), and the accuracies above are the finding.
                if "mcd" in row and "mcd" in ref:
                    mcd, mcd_ref = float(row["mcd"].iloc[0]), float(ref["mcd"].iloc[0])
                    text += (f" Its MCD is {100 * mcd:.1f} pts against {100 * mcd_ref:.1f} pts"
                             + (": large because some classes are barely recognised at all, not because of a "
                                "subtle bias." if mcd > mcd_ref else
                                ": not larger — near chance every class is recognised about equally badly, so a "
                                "small MCD here is no sign of fairness."))
                lines.append(text)
    return " ".join(lines) if lines else "No mask was compared with the magnitude mask."


def votes(record: Mapping[str, Any], diagnostics: Mapping[str, Any], flat: float = 2.0) -> str:
    """Notebook 02, the vote diagnostics: when the fairness weights go flat, how much the two gradients agree
    early and late, and how far the fairness gradient moved the mask (overlap with the η = 0 mask).

    The weights count as (nearly) flat when the most-weighted cell weighs less than ``flat`` times the least.
    """
    epochs = list(record["epochs"])
    spread = [float(s) for s in record["weight_spread"]]
    lines = []
    if spread:
        # The first epoch from which the spread stays below `flat` for the rest of the run.
        flat_from = None
        for i in range(len(spread)):
            if all(s < flat for s in spread[i:]):
                flat_from = epochs[i]
                break
        if flat_from is None:
            lines.append(f"The fairness weights never went flat (max/min spread ≥ {flat:g} up to the last voting "
                         f"epoch, {spread[-1]:.2f} there): the fairness gradient differed from the accuracy "
                         "gradient throughout.")
        elif flat_from == epochs[0]:
            # "Nearly flat" is a threshold on the spread, not g_fair = g_acc: weights up to 2x apart still re-weight
            # the classes (the sign agreement and the η = 0 overlap below say how much that moved the vote).
            lines.append(f"The fairness weights were nearly flat (spread < {flat:g}, at most {max(spread):.2f}) at "
                         "every voting epoch: the fairness gradient was a mildly re-weighted accuracy gradient "
                         "throughout; how much that moved the selection is read from the agreement and the η = 0 "
                         "overlap below, not from the spread.")
        else:
            strong = sum(s >= flat for s in spread)  # votes whose weights were not flat (spread ≥ the threshold)
            lines.append(f"The fairness weights are spread (max/min up to {max(spread):.1f}) early and nearly flat "
                         f"(spread < {flat:g}) from epoch {flat_from} of {epochs[-1]} on: from then on the fairness "
                         f"gradient is a mildly re-weighted accuracy gradient. {strong} of {len(epochs)} votes had a "
                         f"weight spread ≥ {flat:g} (a strongly weighted fairness signal)"
                         + (f", {sum(e < flat_from for e in epochs) - strong} of the epochs before epoch {flat_from} "
                            f"already had a spread < {flat:g}" if sum(e < flat_from for e in epochs) > strong else "")
                         + ".")
    sign = record.get("sign_epochs") or []
    if len(sign) >= 2:
        def share(rec):
            same = sum(v[0] for v in rec.values())
            tot = sum(v[1] for v in rec.values())
            return same / tot if tot else float("nan")
        half = max(1, len(sign) // 2)
        early = float(np.nanmean([share(r) for r in sign[:half]]))
        late = float(np.nanmean([share(r) for r in sign[half:]]))
        lines.append(f"The two gradients agree in sign on {100 * early:.0f} % of the weights in the first half of "
                     f"the voting epochs and {100 * late:.0f} % in the second half.")
    ov = diagnostics.get("overlap_eta0")
    if ov is not None and not math.isnan(ov):
        if ov >= 0.9:
            lines.append(f"The mask keeps {100 * ov:.1f} % of the weights the η = 0 vote (accuracy gradient only) "
                         "keeps: here (this seed, these options) the fairness term changed few of the kept weights, "
                         "so this mask differs from LTH's mostly through the vote's accuracy part, not fairness. "
                         "This is one seed of the library default; the comparison in section 5 runs no η = 0 "
                         "control — notebook 03 compares Ballot with its η = 0 vote and with plain training over "
                         "seeds, which says what the fairness term does.")
        else:
            lines.append(f"The mask shares only {100 * ov:.1f} % of its weights with the η = 0 vote: the fairness "
                         "term moved a substantial part of the selection.")
    ol = diagnostics.get("overlap_lth")
    if ol is not None and not math.isnan(ol):
        lines.append(f"It shares {100 * ol:.1f} % of its kept weights with LTH's magnitude mask.")
    return " ".join(lines)


def refined(plain: Mapping[str, float], refined_: Mapping[str, float], selected_epoch: int, epochs: int,
            same_curves: bool = False) -> str:
    """Notebook 02, plain vs refined training of one ticket (one seed: an illustration). ``same_curves``: the two
    runs' per-epoch curves are identical (the same training; refined only keeps another checkpoint)."""
    same = (" The two runs' per-epoch val curves are identical: refined training trained exactly as plain did "
            "and differs only in the checkpoint it keeps, so the figure draws one curve."
            if same_curves else "")
    if selected_epoch >= epochs:
        first = f"Checkpoint selection kept the last epoch ({epochs}), so refined equals plain training here."
    else:
        first = (f"Checkpoint selection picked epoch {selected_epoch} of {epochs}: test accuracy "
                 f"{fmt('acc', refined_['acc'] - plain['acc'])} and test MCD "
                 f"{fmt('mcd', refined_['mcd'] - plain['mcd'])} against the plain ticket.")
    return first + same + " One seed: the ablation below measures refined training over seeds."


def _names(labels) -> str:
    """Option-set labels (which may contain commas) as a readable list."""
    return "; ".join(f"`{x}`" for x in labels)


#: Scores that ignore the weight's magnitude (``ballot_lib.methods.ballot.SCORES``): the authors' signed sum
#: ĝ_acc + η·ĝ_fair and its absolute value.
MAGNITUDE_FREE = {"signed": "the authors' signed score ĝ_acc + η·ĝ_fair",
                  "agreement": "the agreement score |ĝ_acc + η·ĝ_fair|"}


#: A row whose lowest per-seed skill ratio (``min_skill`` of :func:`ballot_lib.ablation.table`) is at or above the
#: collapse threshold (:data:`ballot_lib.analysis.COLLAPSE`) by less than this share of the threshold, i.e. below
#: COLLAPSE × (1 + NEAR_COLLAPSE) = 0.55, is read as "at the collapse threshold", never as "does not collapse".
NEAR_COLLAPSE = 0.10


def _near_collapse(min_skill: float) -> bool:
    from .analysis import COLLAPSE

    return bool(min_skill == min_skill and COLLAPSE <= min_skill < COLLAPSE * (1 + NEAR_COLLAPSE))


def collapses(tab: pd.DataFrame, options: Optional[Mapping[str, Mapping[str, Any]]] = None,
              reference: str = "default", base: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Notebook 02, the ablation's collapsed option sets (column ``collapsed`` of
    :func:`ballot_lib.ablation.table`: seeds near chance on val), with the reason where the option says it: a
    score that ignores the weight's magnitude (``papers/ballot.md``). ``options``: label -> the options that the
    set changes (as given to :func:`ballot_lib.ablation.variants`); ``base``: the default's options
    (:func:`ballot_lib.ablation.base_options`), which each set changes. Rows not collapsed but whose worst seed is
    within :data:`NEAR_COLLAPSE` of the threshold are named "at the collapse threshold" with their min skill ratio."""
    from .analysis import COLLAPSE

    skill = tab["min_skill"] if "min_skill" in tab else pd.Series(float("nan"), index=tab.index)
    near = tab[(tab.get("collapsed", 0) == 0) & skill.map(_near_collapse)]
    near_text = (f"At the collapse threshold (not collapsed, but the worst seed keeps less than "
                 f"{COLLAPSE * (1 + NEAR_COLLAPSE):.2f} of the reference's balanced-accuracy gain over chance, within "
                 f"{100 * NEAR_COLLAPSE:g} % of the threshold {COLLAPSE:g}): " +
                 "; ".join(f"`{r.variant}` (min skill ratio {r.min_skill:.2f})" for r in near.itertuples()) +
                 ". Their MCD and CWV partly measure near-chance seeds." if len(near) else "")
    if "collapsed" not in tab or not tab["collapsed"].any():
        return [near_text] if near_text else []
    base = dict(base or {})
    options = {k: {**base, **v} for k, v in dict(options or {}).items()}
    chance = tab.attrs.get("chance", float("nan"))
    bad = tab[tab["collapsed"] > 0]
    names = "; ".join(f"`{r.variant}` ({r.collapsed}/{r.seeds} seeds, mean val accuracy {fmt('acc', r.acc, False)})"
                      for r in bad.itertuples())
    if tab.attrs.get("collapse_reference") == "dense":
        rule = (f"balanced accuracy keeps less than half of the same-seed dense run's gain over chance "
                f"({fmt('acc', chance, False)}), the rule of notebooks 03 and 04; the dense runs have "
                f"{fmt('acc', tab.attrs.get('dense_acc', float('nan')), False)} mean val accuracy")
    else:
        ref = tab[tab["variant"] == reference]
        ref_acc = float(ref["acc"].iloc[0]) if len(ref) else float("nan")
        rule = (f"accuracy near chance, {fmt('acc', chance, False)}: less than half of the {reference}'s gain over "
                f"chance in the same seed; the {reference} has {fmt('acc', ref_acc, False)}")
    lines = [f"Collapsed on val ({rule}): {names}. Their MCD and CWV measure the collapse, not fairness."]
    scores: dict = {}
    for r in bad.itertuples():
        opt = options.get(r.variant, {})
        if opt.get("mode", "full") != "faithful" and opt.get("score") in MAGNITUDE_FREE:
            scores.setdefault(opt["score"], []).append(r.variant)
    if scores:
        which = " and ".join(MAGNITUDE_FREE[s] for s in scores)
        verb = "ignore" if len(scores) > 1 else "ignores"
        text = (f"Why: {which} {verb} the weight's magnitude. When every layer votes, the kept weights are chosen "
                "by their gradients alone, and the structure the dense network learned is thrown away "
                "(papers/ballot.md)")
        if base.get("score") == "taylor":
            text += f"; the {reference} scores |θ ⊙ (ĝ_acc + η·ĝ_fair)|, which keeps the magnitude"
        lines.append(text + ".")
        faithful = [r for r in tab.itertuples() if options.get(r.variant, {}).get("mode") == "faithful"]
        if "signed" in scores and faithful:
            f = faithful[0]
            ms = getattr(f, "min_skill", float("nan"))
            state = (f"and collapses too in {f.collapsed}/{f.seeds} seeds" if f.collapsed else
                     f"at the collapse threshold (min skill ratio {ms:.2f})" if _near_collapse(ms) else
                     "and does not collapse" + (f" (min skill ratio {ms:.2f})" if ms == ms else ""))
            lines.append(f"The authors vote with the signed score on the final layer only; the rest of the network "
                         f"keeps its magnitude (LTH) mask: that procedure (`{f.variant}`) reaches {fmt('acc', f.acc, False)} mean val "
                         f"accuracy here, {state}.")
    if near_text:
        lines.append(near_text)
    return lines


def ablation(tab: pd.DataFrame, chosen: pd.Series, dropped: Mapping[str, str], eps: float,
             reference: str = "default", others: Sequence[str] = ("LTH",), not_chosen: Sequence[str] = (),
             options: Optional[Mapping[str, Mapping[str, Any]]] = None,
             base: Optional[Mapping[str, Any]] = None) -> str:
    """Notebook 02, the ablation: which option sets differ significantly from the default on val, which
    collapsed to chance and why (:func:`collapses`; ``options``: label -> changed options, ``base``: the default's
    options), what was chosen and
    whether the choice rests on a significant difference (``others``: reference rows that are not option sets;
    ``not_chosen``: rows shown but not eligible, named in the reading)."""
    rows = tab[(tab["variant"] != reference) & ~tab["variant"].isin(list(others))]
    lines = []
    if dropped:
        lines.append(f"{len(dropped)} option sets equal the default (or an earlier row) and were not run twice "
                     f"({_names(dropped)}).")
    shown = [v for v in not_chosen if v in set(rows["variant"])]
    if shown:
        lines.append(f"Shown but not eligible: {_names(shown)}.")
    n = int(tab["seeds"].max()) if len(tab) else 0
    acc_worse = rows[rows["d_acc_sig"] & (rows["d_acc"] < 0)]["variant"].tolist()
    acc_better = rows[rows["d_acc_sig"] & (rows["d_acc"] > 0)]["variant"].tolist()
    mcd_better = rows[rows["d_mcd_sig"] & (rows["d_mcd"] < 0)]["variant"].tolist()
    mcd_worse = rows[rows["d_mcd_sig"] & (rows["d_mcd"] > 0)]["variant"].tolist()
    lines.append(f"Over {n} seed{'' if n == 1 else 's'} on val (per test, uncorrected), {len(acc_worse)} of {len(rows)} option sets have significantly lower "
                 f"accuracy than the default" + (f" ({_names(acc_worse)})" if acc_worse else "") +
                 f" and {len(acc_better)} higher" + (f" ({_names(acc_better)})" if acc_better else "") + "; "
                 f"{len(mcd_better)} have significantly lower MCD" +
                 (f" ({_names(mcd_better)})" if mcd_better else "") + f" and {len(mcd_worse)} higher MCD" +
                 (f" ({_names(mcd_worse)})" if mcd_worse else "") + ".")
    lines += collapses(tab, options, reference, base)
    c = chosen["variant"]
    from .ablation import choice_pvalues

    padj = choice_pvalues(tab, list(not_chosen) + list(others), reference)
    rule = (f"the rule keeps the library default unless an option set's val MCD, paired by seed against the "
            f"default, is significantly lower after Holm's correction over the {int(padj.notna().sum())} eligible "
            f"option sets and its val accuracy is at most {100 * eps:g} pts below the default's")
    eligible = rows[~rows["variant"].isin(list(not_chosen))]
    if c == reference:
        text = f"Kept the library default: no option set is significantly better on val ({rule})."
        if len(eligible) and "d_mcd" in eligible:
            ranked = eligible.sort_values("d_mcd", kind="stable")
            # Option sets can tie on the lowest val MCD (one val image moves it by points): name them all, and
            # speak of the one the seeds support best (smallest adjusted p), not of whichever is listed first.
            tied = ranked[(ranked["d_mcd"] - ranked["d_mcd"].iloc[0]).abs() <= 1e-12]
            best = tied.assign(_p=[float(padj.get(v, float("nan"))) for v in tied["variant"]],
                               _w=tied["d_mcd_high"] - tied["d_mcd_low"]).sort_values(
                ["_p", "_w"], kind="stable", na_position="last").iloc[0]
            d, lo, hi = float(best["d_mcd"]), float(best["d_mcd_low"]), float(best["d_mcd_high"])
            if d < 0:
                pa = float(padj.get(best["variant"], float("nan")))
                why = ("one seed: no CI" if lo != lo else
                       f"its val accuracy is {fmt('acc', float(best['d_acc']))} vs the default, more than "
                       f"{100 * eps:g} pts lower" if pa < 0.05 else
                       f"within seed noise: Holm-adjusted p = {pa:.3g}" + (" (its CI includes 0)" if hi >= 0 else ""))
                ci = "" if lo != lo else f" [95 % CI {fmt('mcd', lo)}, {fmt('mcd', hi)}]"
                if len(tied) > 1:
                    text += (f" The lowest val MCD, {fmt('mcd', d)} vs the default, is shared by {len(tied)} option "
                             f"sets ({_names(list(tied['variant']))}); of them `{best['variant']}` (the smallest "
                             f"adjusted p, then the narrowest CI){ci}: {why}.")
                else:
                    text += f" The lowest val MCD, `{best['variant']}`, is {fmt('mcd', d)}{ci} vs the default: {why}."
        lines.append(text)
    else:
        row = tab.loc[tab["variant"] == c].iloc[0]
        d, lo, hi = float(row["d_mcd"]), float(row["d_mcd_low"]), float(row["d_mcd_high"])
        pa = float(padj.get(c, float("nan")))
        if d < 0 and pa < 0.05:
            lines.append(f"Chose `{c}`: val MCD lower by {100 * -d:.1f} pts [95 % CI {fmt('mcd', lo)}, "
                         f"{fmt('mcd', hi)}; Holm-adjusted p = {pa:.3g}] paired by seed against the default, with "
                         f"val accuracy {fmt('acc', float(row['d_acc']))} vs the default ({rule}).")
        else:
            lines.append(f"`{c}` is used although it is not significantly better than the default on val (val MCD "
                         f"{fmt('mcd', d)} vs default, " +
                         ("one seed: no CI, so nothing says this is more than seed noise" if lo != lo else
                          "within seed noise: its CI includes 0") + f"); {rule}.")
    return " ".join(lines)


def comparison(pair_tabs: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("acc", "cwv", "mcd"),
               subject: str = "Ballot") -> str:
    """Notebook 02, Ballot against each baseline at equal density: significant wins and losses per metric, and
    a warning where a fairness gain came with a significant accuracy loss (levelling down)."""
    lines = []
    noted = False
    for b, t in pair_tabs.items():
        said = paired(t, metrics)
        if noted and said and said[0].startswith("Significance here is after"):
            said = said[1:]  # one family over every table: its note once
        noted = noted or bool(said)
        lines += said
        t = _decided(t)
        fair = t[t["metric"].isin(["cwv", "mcd"]) & t["significant"]]
        wins = fair[fair["diff"] < 0]
        acc_drop = set(t[(t["metric"] == "acc") & t["significant"] & (t["diff"] < 0)]["density"])
        levelled = sorted({d for d in wins["density"] if d in acc_drop}, reverse=True)
        if levelled:
            lines.append(f"At density {_densities(levelled)} {subject}'s lower disparity vs {b} came with "
                         "significantly lower accuracy: levelling down, not a fairer model.")
        tested = t[t["metric"].isin(["cwv", "mcd"])]
        if "n" in tested and len(tested) and (tested["n"].fillna(0) < 2).all():
            lines.append(f"With fewer than 2 paired seeds {subject} and {b} could not be tested against each other: "
                         "nothing is decided.")
        elif wins.empty and fair.empty:
            lines.append(f"{subject} did not differ significantly from {b} in CWV or MCD at any density.")
        elif wins.empty:
            lines.append(f"{subject} never beat {b} significantly on CWV or MCD here.")
    return " ".join(lines)


def _decided(t: pd.DataFrame) -> pd.DataFrame:
    """A paired table whose ``significant`` is the family-corrected decision where it has one
    (:func:`ballot_lib.analysis.adjust_family` / ``adjust_tables``)."""
    return t.assign(significant=t["significant_adj"]) if "significant_adj" in t else t


def win_loss(pair_tabs: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("acc", "cwv", "mcd")
             ) -> tuple[list[str], list[str]]:
    """Settings ("MCD vs LTH @ 0.05") where the subject is significantly better, and where significantly worse."""
    won: list = []
    lost: list = []
    for b, t in pair_tabs.items():
        t = _decided(t)
        for r in t[t["metric"].isin(metrics) & t["significant"]].itertuples():
            good = (r.diff < 0) if lower_is_better(r.metric) else (r.diff > 0)
            (won if good else lost).append(f"{r.metric.upper()} vs {b} @ {r.density:g}")
    return won, lost



def ballot_report(title: str, setting: str, chosen: str, pair_tabs: Mapping[str, pd.DataFrame],
                  summary: pd.DataFrame, cost: Optional[float | str] = None,
                  metrics: Sequence[str] = ("acc", "cwv", "mcd")) -> str:
    """Notebook 02's closing summary (markdown) from the paired tables of Ballot against each baseline.

    ``summary`` is :func:`ballot_lib.analysis.summarize` of the comparison (for the improvement in the paper's
    form, (F_B − F_A) / F_B averaged over densities and CWV/MCD); ``cost`` the vote-collection cost as a multiple
    of one LTH retraining, or the sentence that states it (:func:`vote_cost_text`).
    """
    from .analysis import describe_paired
    from .metrics import improvement

    def impr(a: str, b: str) -> float:
        # aligned by density value (the densities both were run at), never by list position
        fa = summary[summary["variant"] == a].set_index("density")
        fb = summary[summary["variant"] == b].set_index("density")
        common = sorted(set(fa.index) & set(fb.index))
        return improvement({m: fa.loc[common, m].tolist() for m in ("cwv", "mcd")},
                           {m: fb.loc[common, m].tolist() for m in ("cwv", "mcd")})

    def robust(a: str, b: str) -> float:
        # the pooled ratio (ΣF_B − ΣF_A) / ΣF_B over densities, mean over CWV and MCD (notebook 03's robust form)
        fa = summary[summary["variant"] == a].set_index("density")
        fb = summary[summary["variant"] == b].set_index("density")
        common = sorted(set(fa.index) & set(fb.index))
        terms = [(fb.loc[common, m].sum() - fa.loc[common, m].sum()) / fb.loc[common, m].sum()
                 for m in ("cwv", "mcd") if common and fb.loc[common, m].sum() != 0]
        return 100 * float(np.mean(terms)) if terms else float("nan")

    lines = [f"## {title}", f"{setting}; options chosen on val: `{chosen}`.", ""]
    won, lost = win_loss(pair_tabs, metrics)
    rows = pd.concat([t for t in pair_tabs.values()], ignore_index=True) if pair_tabs else pd.DataFrame()
    if len(rows) and "n" in rows and (rows["n"].fillna(0) < 2).all():
        lines.append("**Wins and losses:** none can be decided: with fewer than 2 paired seeds there is no CI "
                     "(re-run with more seeds).")
    else:
        adjusted = [t for t in pair_tabs.values() if "significant_adj" in t]
        if adjusted:
            a = adjusted[0].attrs
            name = CORRECTION_NAMES.get(a.get("correction", ""), "the correction")
            how = f"significant after {name} over all {a.get('family', 0)} paired tests of the comparison"
        else:
            how = "CI excludes 0"
        lines.append(f"**Where Ballot won ({how}):** " + ("; ".join(won) or "nowhere in this run") + ".")
        lines.append(f"**Where Ballot lost ({how}):** " + ("; ".join(lost) or "nowhere in this run") + ".")
    lines.append("")
    for b, t in pair_tabs.items():
        lines.append(f"**Ballot vs {b}** (improvement on seed means, no CI — the paired rows below decide: "
                     f"paper's form, mean over densities and CWV/MCD of (F_B − F_A)/F_B, {impr('Ballot', b):+.1f} %; "
                     f"robust pooled form {robust('Ballot', b):+.1f} %; the paper's form explodes where a "
                     "baseline's CWV is near 0):")
        for _, row in t[t["metric"].isin(metrics)].iterrows():
            lines.append(f"- density {row['density']:g}: " +
                         describe_paired(row, correction="Holm" if "significant_adj" in row else None))
        lines.append("")
    lines.append("**Reading.** " + comparison(pair_tabs, metrics))
    if cost is not None:
        lines += ["", cost if isinstance(cost, str) else
                  f"Vote collection cost: {cost:.2f}× one LTH retraining (the chosen option set's vote-streaming "
                  "seconds over the same seed's LTH retraining seconds, mean over seeds and densities)."]
    return "\n".join(lines)


def per_class(deltas: pd.DataFrame, unit: str = "class") -> str:
    """Notebook 01: the largest mean recall loss per (variant, density) and the class (or group) it hit."""
    cols = [c for c in deltas.columns if c.startswith(f"{unit} ")]
    if deltas.empty or not cols:
        return f"No per-{unit} changes to read."
    parts = []
    for _, r in deltas.iterrows():
        vals = pd.to_numeric(r[cols], errors="coerce").astype(float)
        if vals.isna().all():  # no seed shared with the reference: nothing paired to read
            parts.append(f"{r['variant']} @ {r['density']:g}: n/a (no paired seeds)")
            continue
        worst = vals.idxmin()
        if r[worst] < 0:
            parts.append(f"{r['variant']} @ {r['density']:g}: {worst} {fmt('acc', r[worst])}")
        else:
            parts.append(f"{r['variant']} @ {r['density']:g}: no {unit} lost recall")
    return (f"Largest mean recall loss vs dense per setting (mean over paired seeds; one {unit} moves by whole "
            "test images, so small changes are noise): " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ display

def rounded(table: pd.DataFrame, digits: int = 2, cwv_digits: int = 4) -> pd.DataFrame:
    """``table`` rounded for display: CWV columns (``cwv``, ``cwv_ci``, ``d_cwv`` ...) to ``cwv_digits`` decimals,
    every other numeric column to ``digits``. CWV is a variance of recalls (~0.01 here): at two decimals every
    value reads 0.01 ± 0.00."""
    cols = {c: (cwv_digits if "cwv" in str(c).lower() else digits) for c in table.columns
            if pd.api.types.is_numeric_dtype(table[c])}
    return table.round(cols)


# ------------------------------------------------------------------------------ notebook 01: training effect

def _per_seed(df: pd.DataFrame, variant: str, split: str, density: Optional[float] = None) -> pd.DataFrame:
    d = df[(df["split"] == split) & (df["variant"] == variant)]
    if density is not None and "density_target" in d:
        d = d[np.isclose(d["density_target"], density)]
    return d.drop_duplicates("seed").set_index("seed").sort_index()


def _settings(df: pd.DataFrame, split: str) -> list[tuple[str, Optional[float]]]:
    """(variant, density) pairs of ``df`` in order of appearance (density None without a density column)."""
    d = df[df["split"] == split]
    if "density_target" not in d:
        return [(v, None) for v in dict.fromkeys(d["variant"])]
    return list(dict.fromkeys(zip(d["variant"], d["density_target"].astype(float))))


def training_runs(df: pd.DataFrame, others: Optional[Mapping[str, pd.DataFrame]] = None,
                  split: str = "test") -> pd.DataFrame:
    """One row per (variant, density) of ``df``: its method, retraining epochs (``train_epochs``: the final
    training only), total compute (``compute_epochs``, the dense run included), its run ids in seed order, and
    ``same runs as``: the other (variant, density) settings -- of ``df`` or of a table in ``others`` (name ->
    results frame, e.g. another section of the notebook) -- that consist of exactly the same runs (the same run
    id in every seed). Two labels on one set of runs are one training shown twice: their rows repeat each other
    by construction."""
    pool = {("", v, d): _per_seed(df, v, split, d) for v, d in _settings(df, split)}
    for name, frame in dict(others or {}).items():
        for v, d in _settings(frame, split):
            pool[(name, v, d)] = _per_seed(frame, v, split, d)
    rows = []
    for v, d in _settings(df, split):
        g = pool[("", v, d)]
        ids = g["run_id"] if "run_id" in g else pd.Series(dtype=object)
        same = []
        for (name, w, e), h in pool.items():
            if (name, w, e) == ("", v, d) or "run_id" not in h or ids.empty:
                continue
            if len(h) == len(g) and set(h.index) == set(g.index) and (h.loc[g.index, "run_id"] == ids).all():
                where = f"{w} @ {e:g}" if e is not None else w
                same.append(f"`{where}` ({name})" if name else f"`{where}`")
        rows.append({"variant": v, "density": d, "method": g["method"].iloc[0] if "method" in g else "",
                     "retrain epochs": _median(g, "train_epochs"), "compute epochs": _median(g, "compute_epochs"),
                     "seeds": len(g), "run ids": ", ".join(str(x) for x in ids), "same runs as": "; ".join(same)})
    return pd.DataFrame(rows)


def _median(g: pd.DataFrame, col: str) -> float:
    return float(pd.to_numeric(g[col], errors="coerce").median()) if col in g else float("nan")


def metric_ties(df: pd.DataFrame, variants: Optional[Sequence[str]] = None,
                metrics: Sequence[str] = ("acc", "mcd"), split: str = "test", tol: float = 1e-12) -> pd.DataFrame:
    """Pairs of variants (of ``variants``, default: all but dense) at the same density whose value of a metric is
    the same in every shared seed, so that their summary rows and paired differences in it are identical.

    Columns: ``a``, ``b``, ``density``, ``metric``, ``seeds`` (shared seeds), ``same_runs`` (the same run id in
    every shared seed: one training under two labels), ``differs`` (the metrics of ``metrics`` that differ in at
    least one seed), ``same_extremes`` (the best and the worst class recall are each equal in every seed: a tie of
    MCD = max − min that comes from identical extremes)."""
    from .analysis import class_columns

    cols_out = ["a", "b", "density", "metric", "seeds", "same_runs", "differs", "same_extremes"]
    settings = _settings(df, split)
    if variants is None:
        variants = [v for v, _ in settings if v != "dense"]
    keep = set(variants)
    rows = []
    for i, (a, da) in enumerate(settings):
        for b, db in settings[i + 1:]:
            same = da == db or (da is not None and db is not None and np.isclose(da, db))
            if a not in keep or b not in keep or a == b or not same:
                continue
            A, B = _per_seed(df, a, split, da), _per_seed(df, b, split, db)
            seeds = A.index.intersection(B.index)
            if not len(seeds):
                continue
            A, B = A.loc[seeds], B.loc[seeds]
            same_runs = "run_id" in A and "run_id" in B and bool((A["run_id"] == B["run_id"]).all())
            equal = {m: bool(np.allclose(A[m].astype(float), B[m].astype(float), rtol=0, atol=tol))
                     for m in metrics if m in A and m in B}
            cls = class_columns(A)
            extremes = bool(cls) and bool(
                np.allclose(A[cls].max(axis=1), B[cls].max(axis=1), rtol=0, atol=tol)
                and np.allclose(A[cls].min(axis=1), B[cls].min(axis=1), rtol=0, atol=tol))
            for m, eq in equal.items():
                if eq:
                    rows.append({"a": a, "b": b, "density": da, "metric": m, "seeds": len(seeds),
                                 "same_runs": same_runs, "differs": [x for x, e in equal.items() if not e],
                                 "same_extremes": extremes})
    return pd.DataFrame(rows, columns=cols_out)


def training(df: pd.DataFrame, tab: pd.DataFrame, reference: str = "rewind θ0",
             others: Optional[Mapping[str, pd.DataFrame]] = None, metrics: Sequence[str] = ("acc", "mcd"),
             split: str = "test", confound: float = 0.5) -> str:
    """Notebook 01, training effect (one density): the paired sentences of ``tab`` against ``reference``, then
    :func:`training_notes`."""
    return " ".join(paired(tab, metrics) + training_notes(df, reference, others, metrics, split, confound))


def training_notes(df: pd.DataFrame, reference: str = "rewind θ0",
                   others: Optional[Mapping[str, pd.DataFrame]] = None, metrics: Sequence[str] = ("acc", "mcd"),
                   split: str = "test", confound: float = 0.5) -> list[str]:
    """What the training-effect numbers alone would hide: rows that are the same training as another row (same
    run ids; ``others``: the notebook's other sections, name -> results frame), rows whose metric ties in every
    seed although their runs differ (:func:`metric_ties`), and the compute of each recipe: a variant that
    retrains fewer than ``confound`` × the ``reference``'s epochs is named as confounded by compute."""
    lines: list[str] = []
    runs = training_runs(df, others, split)
    runs = runs[runs["method"] != "dense"].drop_duplicates("variant").set_index("variant")
    # One set of runs under two labels (within this table, or shared with another section).
    for v, r in runs.iterrows():
        if r["same runs as"]:
            lines.append(f"`{v}` is the same training as {r['same runs as']} (identical run ids in all {r['seeds']} "
                         "seeds): its numbers repeat that row, they are not a second measurement.")
    ties = metric_ties(df, list(runs.index), metrics, split)
    for t in ties[~ties["same_runs"]].itertuples():
        m = t.metric.upper()
        text = (f"`{t.a}` and `{t.b}` have the same {m} in all {t.seeds} seeds, so their {m} rows are identical, "
                "yet they are different runs (different run ids"
                + (f"; their {', '.join(x.upper() for x in t.differs)} "
                   f"{'differs' if len(t.differs) == 1 else 'differ'})" if t.differs else ")"))
        if t.metric == "mcd" and t.same_extremes:
            text += (": in every seed their best- and worst-recognised classes end with the same recall (a class's "
                     "recall moves in whole test images)")
        ma, mb = runs.loc[t.a, "method"], runs.loc[t.b, "method"]
        ea, eb = runs.loc[t.a, "retrain epochs"], runs.loc[t.b, "retrain epochs"]
        if ma == mb:
            text += f". Both are `{ma}` runs at density {t.density:g}, with {ea:g} and {eb:g} retraining epochs"
            if abs(ea - eb) <= 0.1 * max(ea, eb):
                text += ": two nearly identical trainings"
        lines.append(text + ". The tie is genuine, not one run counted twice.")
    # Compute: the retraining epochs of each recipe against the reference's.
    if reference in runs.index:
        r_ep, r_tot = runs.loc[reference, "retrain epochs"], runs.loc[reference, "compute epochs"]
        lines.append("Retraining epochs after the dense run: "
                     + ", ".join(f"{v} {r['retrain epochs']:g}" for v, r in runs.iterrows()) + ".")
        for v, r in runs.iterrows():
            ep, tot = r["retrain epochs"], r["compute epochs"]
            if v != reference and r_ep > 0 and ep < confound * r_ep:
                lines.append(f"`{v}` retrains {ep:g} epochs ({tot:g} with the dense run) against {r_ep:g} "
                             f"({r_tot:g}) for `{reference}` — {ep / r_ep:.2f}× the retraining compute — so its "
                             f"difference against `{reference}` mixes the recipe with less compute (a compute "
                             "confound), not the starting point alone.")
    return lines


# ------------------------------------------------------------------------------------ notebook 02: vote cost

#: The authors collect votes in a separate full training run: about one LTH retraining (papers/ballot.md).
AUTHORS_VOTE_COST = 1.0


def vote_cost(df: pd.DataFrame, subject: str = "Ballot", reference: str = "LTH", split: str = "test"
              ) -> pd.DataFrame:
    """The vote-collection cost per seed, as a multiple of one ``reference`` retraining.

    Per seed: ``vote_seconds`` (the ``subject``'s vote streaming -- the shared gradients plus its own scoring --
    mean over its densities), ``retrain_seconds`` (the ``reference``'s training seconds, mean over the same
    densities) and ``ratio`` = vote_seconds / retrain_seconds. The same quantity as :func:`vote_cost_walkthrough`
    reports for one seed and one density."""
    d = df[df["split"] == split]
    if "vote_seconds" not in d or "seconds" not in d:
        return pd.DataFrame(columns=["vote_seconds", "retrain_seconds", "ratio"]).rename_axis("seed")
    s = d[d["variant"] == subject]
    r = d[(d["variant"] == reference) & d["density_target"].isin(s["density_target"].unique())]
    out = pd.DataFrame({"vote_seconds": s.groupby("seed")["vote_seconds"].mean(),
                        "retrain_seconds": r.groupby("seed")["seconds"].mean()}).dropna()
    out["ratio"] = out["vote_seconds"] / out["retrain_seconds"]
    out.index.name = "seed"
    return out


def vote_cost_text(cost: pd.DataFrame, densities: Sequence[float], subject: str = "Ballot",
                   reference: str = "LTH") -> str:
    """Section 5 of notebook 02: the vote cost over seeds (:func:`vote_cost`), what it measures, and how it
    compares with the authors' separate vote run (:data:`AUTHORS_VOTE_COST` × one retraining)."""
    if cost.empty:
        return f"No {subject} run carried vote seconds: no vote cost to state."
    r = cost["ratio"]
    mean = float(r.mean())
    text = (f"Vote collection cost: {mean:.2f}× one {reference} retraining (mean over {len(r)} seeds of the "
            f"chosen option set's vote-streaming seconds — shared gradients plus its own scoring — over the same "
            f"seed's {reference} retraining seconds, each averaged over densities {_densities(densities)}; "
            f"min {r.min():.2f}×, max {r.max():.2f}×; wall-clock on this machine). ")
    text += (f"The reference point is the authors' separate vote run, a full training: ≈ {AUTHORS_VOTE_COST:g}× one "
             "retraining (papers/ballot.md); " +
             ("streaming the votes cost less than that here." if mean < AUTHORS_VOTE_COST else
              "streaming the votes saved nothing against it here."))
    return text


def vote_cost_walkthrough(record: Mapping[str, Any], retrain_seconds: float, dense_seconds: Optional[float],
                          n_tallies: int, seed: int, density: float, slow: float = 3.0) -> str:
    """Section 1 of notebook 02: the vote cost of one seed, the default options at one density -- the quantity
    of :func:`vote_cost` for one (seed, density) -- labelled as such. When the dense run of the seed took more
    than ``slow`` × (one retraining of equal length + every vote it streamed), the run was slowed by something
    other than the votes, and the sentence says so."""
    vote = float(record["seconds"])
    total = float(record.get("collector_seconds", vote))
    text = (f"Seed {seed}, library default options, density {density:g}: vote streaming {vote:.2f} s (shared "
            f"gradients plus this option set's scoring; {total:.2f} s for all {n_tallies} tallies this collection "
            f"carried) against {retrain_seconds:.2f} s for the same seed's LTH retraining: "
            f"{vote / retrain_seconds:.2f}× one retraining. One seed, one wall-clock measurement; section 5 measures "
            "the same ratio for the chosen option set over every seed and density, the figure the summary quotes.")
    if dense_seconds is not None and dense_seconds > slow * (retrain_seconds + total):
        text += (f" This seed's dense run took {dense_seconds:.2f} s, {dense_seconds / retrain_seconds:.0f}× an LTH "
                 "retraining of the same length, far more than its votes add: it was slowed by something else "
                 "(the first run of a process pays start-up costs; a shared CPU adds contention), and vote "
                 "seconds measured in it are inflated with it.")
    return text

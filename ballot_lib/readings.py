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

from .analysis import lower_is_better

#: Metrics written in percentage points (the others, e.g. CWV, as raw values).
POINTS = ("acc", "mcd", "group_acc_gap", "worst_group_acc", "dp_gap", "eo_gap")


def fmt(metric: str, x: float, signed: bool = True) -> str:
    """``x`` in the metric's unit: points for accuracy-like metrics, four decimals for CWV."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if metric in POINTS:
        return f"{100 * x:+.1f} pts" if signed else f"{100 * x:.1f} %"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _densities(ds: Sequence[float]) -> str:
    return ", ".join(f"{d:g}" for d in ds)


def paired(tab: pd.DataFrame, metrics: Sequence[str] = ("acc", "cwv", "mcd")) -> list[str]:
    """One sentence per (a, b, metric) of a paired table (:func:`ballot_lib.analysis.versus`): at which densities
    ``a`` is significantly better or worse than ``b``, where the CI includes 0, and the seed wins overall."""
    out = []
    if tab.empty:
        return out
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
    counts = verdicts["verdict"].value_counts()
    total = len(verdicts)
    hurt = verdicts[verdicts["verdict"] == "hurt"]
    text = (f"Pruning significantly hurt class fairness (CWV or MCD up vs dense) in {counts.get('hurt', 0)} of "
            f"{total} (method, density) settings")
    if len(hurt):
        text += ": " + ", ".join(f"{r.variant} @ {r.density:g}" for r in hurt.itertuples())
    others = {k: v for k, v in counts.items() if k != "hurt"}
    if others:
        text += "; elsewhere: " + ", ".join(f"{v}× {k}" for k, v in others.items())
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
                text = (f"At density {d:g} the {v} collapses: accuracy {acc:.3f} against {acc_ref:.3f} for the "
                        f"{reference}, with the same per-layer densities and the same training.")
                if "random" in v.lower():
                    text += (" Picking weights at random removes most of the paths the dense network learned, "
                             "and the kept random weights cannot recover them in the retraining budget — so "
                             "*which* weights are kept matters far more than how many each layer keeps.")
                if "mcd" in row and "mcd" in ref:
                    mcd, mcd_ref = float(row["mcd"].iloc[0]), float(ref["mcd"].iloc[0])
                    text += (f" Its MCD is {mcd:.3f} against {mcd_ref:.3f}"
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
            lines.append(f"The fairness weights were nearly flat (spread < {flat:g}) at every voting epoch: g_fair ≈ g_acc "
                         "all along, so the vote could only follow accuracy.")
        else:
            lines.append(f"The fairness weights are spread (max/min up to {max(spread):.1f}) early and nearly flat "
                         f"(spread < {flat:g}) from epoch {flat_from} of {epochs[-1]} on: from then on g_fair ≈ "
                         f"g_acc and only {sum(e < flat_from for e in epochs)} of {len(epochs)} votes carried a "
                         "fairness signal.")
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
                         "keeps: the fairness term changed few of the kept weights, so differences between Ballot "
                         "and LTH below come mostly from the vote's accuracy part and the training, not from "
                         "fairness.")
        else:
            lines.append(f"The mask shares only {100 * ov:.1f} % of its weights with the η = 0 vote: the fairness "
                         "term moved a substantial part of the selection.")
    ol = diagnostics.get("overlap_lth")
    if ol is not None and not math.isnan(ol):
        lines.append(f"It shares {100 * ol:.1f} % of its kept weights with LTH's magnitude mask.")
    return " ".join(lines)


def refined(plain: Mapping[str, float], refined_: Mapping[str, float], selected_epoch: int, epochs: int) -> str:
    """Notebook 02, plain vs refined training of one ticket (one seed: an illustration)."""
    if selected_epoch >= epochs:
        first = f"Checkpoint selection kept the last epoch ({epochs}), so refined equals plain training here."
    else:
        first = (f"Checkpoint selection picked epoch {selected_epoch} of {epochs}: test accuracy "
                 f"{fmt('acc', refined_['acc'] - plain['acc'])} and test MCD "
                 f"{fmt('mcd', refined_['mcd'] - plain['mcd'])} against the plain ticket.")
    return first + " One seed: the ablation below measures refined training over seeds."


def _names(labels) -> str:
    """Option-set labels (which may contain commas) as a readable list."""
    return "; ".join(f"`{x}`" for x in labels)


def ablation(tab: pd.DataFrame, chosen: pd.Series, dropped: Mapping[str, str], eps: float,
             reference: str = "default", others: Sequence[str] = ("LTH",), not_chosen: Sequence[str] = ()) -> str:
    """Notebook 02, the ablation: which option sets differ significantly from the default on val, what was
    chosen and whether the choice rests on a significant difference (``others``: reference rows that are not
    option sets; ``not_chosen``: rows shown but not eligible, named in the reading)."""
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
    lines.append(f"Over {n} seeds on val, {len(acc_worse)} of {len(rows)} option sets have significantly lower "
                 f"accuracy than the default" + (f" ({_names(acc_worse)})" if acc_worse else "") +
                 f" and {len(acc_better)} higher" + (f" ({_names(acc_better)})" if acc_better else "") + "; "
                 f"{len(mcd_better)} have significantly lower MCD" +
                 (f" ({_names(mcd_better)})" if mcd_better else "") + f" and {len(mcd_worse)} higher MCD" +
                 (f" ({_names(mcd_worse)})" if mcd_worse else "") + ".")
    c = chosen["variant"]
    if c == reference:
        lines.append(f"The rule (accuracy within {100 * eps:g} pts of the best, then lowest MCD) keeps the library "
                     "default.")
    else:
        sig = bool(tab.loc[tab["variant"] == c, "d_mcd_sig"].iloc[0])
        d = float(tab.loc[tab["variant"] == c, "d_mcd"].iloc[0])
        lines.append(f"The rule picks `{c}` (val MCD {fmt('mcd', d)} vs default, " +
                     ("a significant difference" if sig else "within seed noise: its CI includes 0, so the "
                      "choice is a coin toss among near-equal options") + ").")
    return " ".join(lines)


def comparison(pair_tabs: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("acc", "cwv", "mcd"),
               subject: str = "Ballot") -> str:
    """Notebook 02, Ballot against each baseline at equal density: significant wins and losses per metric, and
    a warning where a fairness gain came with a significant accuracy loss (levelling down)."""
    lines = []
    for b, t in pair_tabs.items():
        lines += paired(t, metrics)
        fair = t[t["metric"].isin(["cwv", "mcd"]) & t["significant"]]
        wins = fair[fair["diff"] < 0]
        acc_drop = set(t[(t["metric"] == "acc") & t["significant"] & (t["diff"] < 0)]["density"])
        levelled = sorted({d for d in wins["density"] if d in acc_drop}, reverse=True)
        if levelled:
            lines.append(f"At density {_densities(levelled)} {subject}'s lower disparity vs {b} came with "
                         "significantly lower accuracy: levelling down, not a fairer model.")
        if wins.empty and fair.empty:
            lines.append(f"{subject} did not differ significantly from {b} in CWV or MCD at any density.")
        elif wins.empty:
            lines.append(f"{subject} never beat {b} significantly on CWV or MCD here.")
    return " ".join(lines)


def win_loss(pair_tabs: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("acc", "cwv", "mcd")
             ) -> tuple[list[str], list[str]]:
    """Settings ("MCD vs LTH @ 0.05") where the subject is significantly better, and where significantly worse."""
    won, lost = [], []
    for b, t in pair_tabs.items():
        for r in t[t["metric"].isin(metrics) & t["significant"]].itertuples():
            good = (r.diff < 0) if lower_is_better(r.metric) else (r.diff > 0)
            (won if good else lost).append(f"{r.metric.upper()} vs {b} @ {r.density:g}")
    return won, lost



def ballot_report(title: str, setting: str, chosen: str, pair_tabs: Mapping[str, pd.DataFrame],
                  summary: pd.DataFrame, cost: Optional[float] = None,
                  metrics: Sequence[str] = ("acc", "cwv", "mcd")) -> str:
    """Notebook 02's closing summary (markdown) from the paired tables of Ballot against each baseline.

    ``summary`` is :func:`ballot_lib.analysis.summarize` of the comparison (for the improvement in the paper's
    form, (F_B − F_A) / F_B averaged over densities and CWV/MCD); ``cost`` the vote-collection cost as a multiple
    of one LTH retraining.
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

    lines = [f"## {title}", f"{setting}; options chosen on val: `{chosen}`.", ""]
    won, lost = win_loss(pair_tabs, metrics)
    lines.append("**Where Ballot won (CI excludes 0):** " + ("; ".join(won) or "nowhere in this run") + ".")
    lines.append("**Where Ballot lost (CI excludes 0):** " + ("; ".join(lost) or "nowhere in this run") + ".")
    lines.append("")
    for b, t in pair_tabs.items():
        lines.append(f"**Ballot vs {b}** (improvement in the paper's form, mean over densities and CWV/MCD: "
                     f"{impr('Ballot', b):+.1f} %):")
        for _, row in t[t["metric"].isin(metrics)].iterrows():
            lines.append(f"- density {row['density']:g}: " + describe_paired(row))
        lines.append("")
    lines.append("**Reading.** " + comparison(pair_tabs, metrics))
    if cost is not None:
        lines += ["", f"Vote collection cost: {cost:.2f}x one LTH retraining (mean over seeds)."]
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

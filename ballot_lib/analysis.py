"""Analyses over stored runs: paired comparisons by seed, per-class deltas, and findings stated from numbers.

All functions take the tidy DataFrame of :func:`ballot_lib.results.load_results` (or of
:func:`ballot_lib.methods.run_grid`): one row per (run, split). A *variant* is a method together with the options
that distinguish it (column ``variant``), so "lth" with two rewind points are two variants.

Seed noise is large relative to the effects studied, so every comparison is **paired by seed** (same θ0, same
data order): the difference A − B per seed, its Student-t 95 % CI, the number of seeds where A wins, and
whether the CI excludes 0. "No significant difference" is reported as such.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .metrics import mean_ci, paired_difference
from .paths import results_root

#: Direction of each headline metric: True when lower is better.
LOWER_IS_BETTER = {"acc": False, "cwv": True, "mcd": True, "group_acc_gap": True, "worst_group_acc": False,
                   "worst_class_acc": False, "dp_gap": True, "eo_gap": True}
HEADLINE = ("acc", "cwv", "mcd")
#: Values each metric can take: accuracies, recalls, gaps and MCD lie in [0, 1]; so does CWV (squared deviations
#: of recalls in [0, 1] from the overall accuracy, averaged). Paired differences' CIs are intersected with
#: ``[lo − hi, hi − lo]`` (:func:`ballot_lib.metrics.paired_difference`).
METRIC_RANGE = {m: (0.0, 1.0) for m in LOWER_IS_BETTER}


def metric_range(metric: str) -> Optional[tuple[float, float]]:
    """The values ``metric`` can take (:data:`METRIC_RANGE`; per-class/per-group recalls ``acc_class_<c>`` and
    ``acc_group_<g>`` lie in [0, 1]), or None when unknown (its paired differences are then left unbounded)."""
    if metric in METRIC_RANGE:
        return METRIC_RANGE[metric]
    if metric.startswith(("acc_class_", "acc_group_")):
        return (0.0, 1.0)
    return None


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better: :data:`LOWER_IS_BETTER`, and per-class/per-group recalls
    (``acc_class_<c>``, ``acc_group_<g>``) are higher-is-better. An unknown metric is an error (a guessed
    direction would count wins backwards)."""
    if metric in LOWER_IS_BETTER:
        return LOWER_IS_BETTER[metric]
    if metric.startswith(("acc_class_", "acc_group_")):
        return False
    raise ValueError(f"unknown direction for metric {metric!r}: known {', '.join(LOWER_IS_BETTER)} and "
                     "acc_class_<c>/acc_group_<g>; add it to ballot_lib.analysis.LOWER_IS_BETTER")


def class_columns(df: pd.DataFrame, prefix: str = "acc_class_") -> list[str]:
    """The per-class recall columns (``acc_class_<c>``; ``prefix="acc_group_"`` for groups) in index order."""
    cols = [c for c in df.columns if c.startswith(prefix)]
    return sorted(cols, key=lambda c: int(c.rsplit("_", 1)[1]))


def group_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in ("group_acc_gap", "worst_group_acc", "dp_gap", "eo_gap") if c in df.columns
            and df[c].notna().any()]


def summarize(df: pd.DataFrame, metrics: Sequence[str] = HEADLINE,
              by: Sequence[str] = ("variant", "density_target"), split: str = "test") -> pd.DataFrame:
    """Mean, 95 % CI half-width and seed count of each metric per group (default: per variant and requested
    density, shown as column ``density``)."""
    d = df[df["split"] == split]
    rows = []
    for key, g in d.groupby(list(by), sort=True, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        if "density_target" in row:
            row["density"] = row.pop("density_target")
        row["seeds"] = int(g["seed"].nunique())
        for m in metrics:
            if m in g:
                mean, half, _, _ = mean_ci(g[m].tolist())
                row[m] = mean
                row[f"{m}_ci"] = half
        rows.append(row)
    return pd.DataFrame(rows)


def paired(df: pd.DataFrame, a: str, b: str, metrics: Sequence[str] = HEADLINE, split: str = "test",
           a_density: Optional[float] = None, b_density: Optional[float] = None) -> pd.DataFrame:
    """Paired differences (variant ``a`` − variant ``b``) by seed, one row per metric.

    Densities default to each variant's single density; pass them to pick one when a variant has several.
    """
    d = df[df["split"] == split]
    A = d[d["variant"] == a]
    B = d[d["variant"] == b]
    if a_density is not None:
        A = A[np.isclose(A["density_target"], a_density)]
    if b_density is not None:
        B = B[np.isclose(B["density_target"], b_density)]
    for name, part, dens in ((a, A, a_density), (b, B, b_density)):
        if part["seed"].duplicated().any():
            densities = sorted(part["density_target"].unique())
            if len(densities) > 1:
                raise ValueError(f"variant {name!r} has several rows per seed (several densities: {densities}); "
                                 f"pass {'a_density' if name == a else 'b_density'} to pick one")
            raise ValueError(f"variant {name!r} has several runs per seed at density {densities[0]:g}: several "
                             f"configurations of one method (load_results labels a run by its method), e.g. "
                             f"select='last' and 'val_rule'; give them distinct 'variant' labels first, e.g. "
                             f"df['variant'] = df['method'] + '/' + df['select']")
    rows = []
    for m in metrics:
        if m not in d:
            continue
        res = paired_difference(dict(zip(A["seed"], A[m])), dict(zip(B["seed"], B[m])),
                                lower_is_better=lower_is_better(m), value_range=metric_range(m))
        rows.append({"a": a, "b": b, "metric": m, **res})
    return pd.DataFrame(rows)


def versus(df: pd.DataFrame, reference: str, variants: Iterable[str], metrics: Sequence[str] = HEADLINE,
           split: str = "test", reference_any_density: bool = True) -> pd.DataFrame:
    """Paired differences of each variant at each of its densities against ``reference``.

    With ``reference_any_density`` (the dense reference), the reference's single density is used for every
    comparison; otherwise the reference is taken at the same density.
    """
    d = df[df["split"] == split]
    out = []
    for v in variants:
        for dens in sorted(d.loc[d["variant"] == v, "density_target"].unique(), reverse=True):
            p = paired(df, v, reference, metrics, split, a_density=dens,
                       b_density=None if reference_any_density else dens)
            p.insert(0, "density", dens)
            out.append(p)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def per_class_deltas(df: pd.DataFrame, reference: str = "dense", split: str = "test",
                     unit: str = "class") -> pd.DataFrame:
    """Mean over seeds of acc_c(variant) − acc_c(reference), paired by seed; one row per (variant, density).

    ``unit="group"`` gives the per-group accuracy changes instead (datasets with a sensitive attribute).
    """
    d = df[df["split"] == split]
    setting = [c for c in ("dataset", "model") if c in d]
    if setting and len(d[setting].drop_duplicates()) > 1:
        raise ValueError(f"per_class_deltas takes one (dataset, model) setting; the frame has "
                         f"{sorted(map(tuple, d[setting].drop_duplicates().to_numpy()))}: filter it first")
    prefix = f"acc_{unit}_"
    cols = class_columns(d, prefix)
    ref = _reference_by_seed(d, reference, [])[cols]
    rows = []
    for (v, dens), g in d[d["variant"] != reference].groupby(["variant", "density_target"]):
        g = g.set_index("seed")[cols]
        seeds = g.index.intersection(ref.index)
        delta = (g.loc[seeds] - ref.loc[seeds]).mean()
        rows.append({"variant": v, "density": dens, **{c.replace(prefix, f"{unit} "): x for c, x in delta.items()}})
    return pd.DataFrame(rows)


def _reference_by_seed(d: pd.DataFrame, reference: str, setting: Sequence[str]) -> pd.DataFrame:
    """The ``reference`` variant's rows indexed by ``setting`` columns + seed (the unit of pairing); several
    reference runs for one key (e.g. two dense runs of a seed with different recipes) are an error, not a guess."""
    ref = d[d["variant"] == reference]
    keys = list(setting) + ["seed"]
    dup = ref[ref.duplicated(keys, keep=False)]
    if not dup.empty:
        raise ValueError(f"several {reference!r} runs for {keys} = "
                         f"{sorted(set(map(tuple, dup[keys].to_numpy())))}: pass a frame with one per seed")
    return ref.set_index(keys if len(keys) > 1 else "seed")


def ceag_excess(df: pd.DataFrame, reference: str = "dense", split: str = "test") -> pd.DataFrame:
    """CEAG's max_g ψ_g per pruned run against the same seed's ``reference`` run (datasets with a sensitive
    attribute): ψ_g = (acc_g(dense) − acc_g(sparse)) − (acc(dense) − acc(sparse)), the group's accuracy loss beyond
    the overall one. One row per (variant, density, seed): ``ceag_max`` and the group it names (``worst_group``).
    Empty when the runs have no per-group accuracies."""
    from .metrics import ceag

    d = df[df["split"] == split]
    cols = class_columns(d, "acc_group_")
    setting = [c for c in ("dataset", "model") if c in d]
    out_cols = setting + ["variant", "density", "seed", "ceag_max", "worst_group"]
    if not cols:
        return pd.DataFrame(columns=out_cols)
    ref = _reference_by_seed(d, reference, setting)
    rows = []
    for _, r in d[d["variant"] != reference].iterrows():
        key = tuple(r[c] for c in setting) + (r["seed"],) if setting else r["seed"]
        if key not in ref.index:
            continue
        base = ref.loc[key]
        psi = ceag(base[cols].to_numpy(dtype=float), r[cols].to_numpy(dtype=float), float(base["acc"]),
                   float(r["acc"])).numpy()
        ok = ~np.isnan(psi)
        if not ok.any():
            continue
        g = int(np.nanargmax(psi))
        rows.append({**{c: r[c] for c in setting}, "variant": r["variant"], "density": r["density_target"],
                     "seed": r["seed"],
                     "ceag_max": float(psi[g]), "worst_group": int(cols[g].rsplit("_", 1)[1])})
    return pd.DataFrame(rows, columns=out_cols)


#: A run collapses when it keeps less than this share of the same-seed dense run's balanced-accuracy gain over
#: chance (1/C): :func:`collapsed_runs`.
COLLAPSE = 0.5


def balanced_accuracy(d: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: balanced accuracy (the mean of the per-class recalls ``acc_class_<c>`` the row has) and chance,
    1 / (number of those classes). Rows without per-class columns fall back to accuracy and NaN chance."""
    cols = [c for c in d.columns if c.startswith("acc_class_")]
    if not cols:
        return d["acc"].astype(float), pd.Series(math.nan, index=d.index)
    n = d[cols].notna().sum(axis=1)
    return d[cols].mean(axis=1).astype(float), (1.0 / n.where(n > 0)).astype(float)


def skill_ratio(score: Any, chance: Any, reference: Any) -> np.ndarray:
    """The collapse rule's skill: (score − chance) / (reference − chance), elementwise; NaN where the reference is
    missing or not above chance (such a run is never flagged)."""
    score, chance, reference = (np.asarray(x, dtype=float) for x in (score, chance, reference))
    gain = reference - chance
    with np.errstate(invalid="ignore", divide="ignore"):
        return (score - chance) / np.where(gain > 0, gain, np.nan)


def collapsed_runs(df: pd.DataFrame, threshold: float = COLLAPSE, split: str = "val") -> pd.DataFrame:
    """Sparse runs that keep less than ``threshold`` of their dense run's skill over chance on ``split``.

    Skill = (bacc − chance) / (dense bacc − chance), with bacc the **balanced** accuracy (mean per-class recall),
    chance = 1/C and the dense run of the same dataset, model and seed. Balanced accuracy is at chance for any
    model that predicts one class, whatever the class balance (plain accuracy is not: on adult, always predicting
    the majority class scores 0.75). The default split is **val**: the runs left out of a comparison are chosen
    without looking at test. Columns: dataset, model, density, variant, seed, acc, balanced_acc,
    dense_balanced_acc, skill (one row per collapsed run, sorted); ``attrs["split"]`` names the split. Runs
    without a same-seed dense run, or whose dense run is itself at chance, are never flagged.
    """
    cols = ["dataset", "model", "density", "variant", "seed", "acc", "balanced_acc", "dense_balanced_acc", "skill"]
    d = df[df["split"] == split]
    empty = pd.DataFrame(columns=cols)
    empty.attrs["split"] = split
    if d.empty or "acc" not in d:
        return empty
    d = d.copy()
    d["balanced_acc"], d["_chance"] = balanced_accuracy(d)
    dense = d[d["variant"] == "Dense"].groupby(["dataset", "model", "seed"])["balanced_acc"].mean()
    sparse = d[d["variant"] != "Dense"].copy()
    if sparse.empty or dense.empty:
        return empty
    key = pd.MultiIndex.from_frame(sparse[["dataset", "model", "seed"]])
    sparse["dense_balanced_acc"] = dense.reindex(key).to_numpy()
    sparse["skill"] = skill_ratio(sparse["balanced_acc"], sparse["_chance"], sparse["dense_balanced_acc"])
    out = sparse[sparse["skill"] < threshold].drop(columns=["density"], errors="ignore").rename(
        columns={"density_target": "density"})
    out = out[cols].sort_values(["dataset", "model", "density", "variant", "seed"],
                                ascending=[True, True, False, True, True]).reset_index(drop=True)
    out.attrs["split"] = split
    return out


def _fmt(x: float, pct: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:+.2f} pts" if pct else f"{x:+.4f}"


def describe_paired(row: pd.Series, unit_pct: Optional[bool] = None, correction: Optional[str] = None) -> str:
    """One sentence from a paired-comparison row: difference, CI, wins, and whether the CI decides; for a row of
    :func:`adjust_family` (``significant_adj``), whether it stays significant after the correction
    (``correction``: its name in the sentence, e.g. "Holm")."""
    m = row["metric"]
    pct = unit_pct if unit_pct is not None else m in ("acc", "mcd", "group_acc_gap", "worst_group_acc",
                                                       "dp_gap", "eo_gap")
    better = "lower" if lower_is_better(m) else "higher"
    verdict = ("significant" if row["significant"] else "fewer than 2 seeds: no CI, nothing decided"
               if row["n"] < 2 else "no significant difference")
    if "significant_adj" in row and row["n"] >= 2:  # a table from adjust_family: the correction decides
        name = correction or "corrected"
        verdict = (f"significant after {name}, p_adj = {row['p_adj']:.3g}" if row["significant_adj"] else
                   f"not significant after {name}: p = {row['p']:.3g}, p_adj = {row['p_adj']:.3g}"
                   if row["significant"] else "no significant difference")
    return (f"{m.upper()} {row['a']} − {row['b']}: {_fmt(row['diff'], pct)} "
            f"[95% CI {_fmt(row['ci_low'], pct)}, {_fmt(row['ci_high'], pct)}], "
            f"{row['a']} {better} in {row['wins']}/{row['n']} seeds ({verdict})")


#: The verdict of a setting whose runs could not be tested (fewer than two paired seeds).
UNDECIDED = "undecided (fewer than 2 seeds)"


#: The multiple-comparison correction of notebook 01's paired tables (each table one family: every method,
#: density and metric it holds), the same as notebook 03's (:data:`ballot_lib.comparison.FAMILY_CORRECTION`);
#: notebook 04's Welch tests default to Benjamini–Hochberg (a screen over many classes, not a decision per cell).
VERDICT_CORRECTION = "holm"
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "no correction"}


def adjust_family(table: pd.DataFrame, correction: str = VERDICT_CORRECTION, alpha: float = 0.05) -> pd.DataFrame:
    """A copy of a paired table (:func:`versus`) with ``p_adj`` (every row's ``p`` adjusted over all rows of the
    table as one family, :func:`ballot_lib.metrics.adjust_pvalues`) and ``significant_adj`` (``p_adj < alpha``;
    rows without a test stay NaN / False). ``attrs["correction"]`` names the correction and ``attrs["family"]``
    counts the tests. A table without ``p`` is returned unchanged (``attrs["family"] = 0``)."""
    from .metrics import adjust_pvalues

    t = table.copy()
    if "p" not in t or t.empty:
        t.attrs.update(correction="none", family=0)
        return t
    p = t["p"].astype(float).to_numpy()
    t["p_adj"] = adjust_pvalues(p, correction)
    t["significant_adj"] = (t["p_adj"] < alpha).fillna(False).astype(bool)
    t.attrs.update(correction=correction, family=int(np.sum(~np.isnan(p))))
    return t


def adjust_tables(tables: Mapping[str, pd.DataFrame], correction: str = VERDICT_CORRECTION,
                  alpha: float = 0.05) -> dict[str, pd.DataFrame]:
    """Several paired tables (e.g. notebook 02's Ballot − MP and Ballot − LTH) corrected as **one** family: every
    row's ``p`` adjusted over all rows of all tables (:func:`adjust_family`). Each returned table carries its own
    rows with ``p_adj``/``significant_adj``, and ``attrs`` naming the correction, the family size and
    ``family_text`` (what the family spans, for :func:`correction_note`)."""
    keys = list(tables)
    if not keys:
        return {}
    both = pd.concat([t.assign(_table=k) for k, t in tables.items()], ignore_index=True)
    adj = adjust_family(both, correction, alpha)
    text = f"the {adj.attrs.get('family', 0)} paired tests of the {len(keys)} tables ({', '.join(map(str, keys))})"
    out = {}
    for k in keys:
        t = adj[adj["_table"] == k].drop(columns="_table").reset_index(drop=True)
        t.attrs.update(adj.attrs, family_text=text)
        out[k] = t
    return out


def correction_note(table: pd.DataFrame) -> str:
    """The sentence that states the correction of a table from :func:`adjust_family` ('' without one)."""
    k, c = table.attrs.get("family", 0), table.attrs.get("correction", "none")
    if not k or c == "none" or "significant_adj" not in table:
        return ""
    scope = table.attrs.get("family_scope")  # rows gathered from several tables, each corrected on its own
    if table.attrs.get("family_text"):  # one family over several tables (adjust_tables)
        where = table.attrs["family_text"]
    elif scope:  # k: the size shared by every table, or the list of their sizes
        where = (f"the paired tests of each {scope} ("
                 + (f"{', '.join(map(str, k))} tests)" if isinstance(k, (list, tuple)) else f"{k} tests each)"))
    else:
        where = f"the {k} paired tests of this table"
    return (f"Significance here is after {CORRECTION_NAMES.get(c, c)} correction over {where} (column p_adj; the "
            f"95 % CIs shown are per test, unadjusted).")


def fairness_verdicts(table: pd.DataFrame, correction: str = VERDICT_CORRECTION) -> pd.DataFrame:
    """Classify each (variant, density) of a ``versus(..., 'dense', ...)`` table: did pruning hurt fairness?

    Significance is taken after ``correction`` over every paired test of ``table`` (one family:
    :func:`adjust_family`) when the table has p-values (``p``); ``attrs["correction"]`` / ``attrs["family"]``
    state it and ``attrs["uncorrected"]`` lists the ``(variant, density, metric)`` CWV/MCD changes that were
    significant per test but not after the correction. Without ``p`` the per-test ``significant`` is used.

    ``hurt`` when CWV or MCD is significantly higher than dense; ``improved`` when one is significantly lower and
    none higher; ``levelled down`` when "improved" came with a significantly lower accuracy (all classes worse,
    so the gaps shrink); ``no significant change`` otherwise; ``undecided (fewer than 2 seeds)`` when no pair of
    runs could be tested (one paired seed: there is no test, so "no significant change" would claim too much).
    """
    if "significant_adj" not in table:
        table = adjust_family(table, correction)
    else:  # already corrected (adjust_family): its own correction is the one to name
        correction = table.attrs.get("correction", correction)
    family = table.attrs.get("family", 0)
    if "significant_adj" in table:
        uncorrected = [(r.a, float(r.density), r.metric) for r in table.itertuples()
                       if r.metric in ("cwv", "mcd") and r.significant and not r.significant_adj]
        table = table.assign(significant=table["significant_adj"])
    else:
        uncorrected = []
    rows = []
    acc = table[table["metric"] == "acc"]
    for (v, dens), g in table[table["metric"].isin(["cwv", "mcd"])].groupby(["a", "density"]):
        if "n" in g and (g["n"].fillna(0) < 2).all():
            rows.append({"variant": v, "density": dens, "verdict": UNDECIDED, "worse": "", "better": ""})
            continue
        worse = g[(g["significant"]) & (g["diff"] > 0)]["metric"].tolist()
        better = g[(g["significant"]) & (g["diff"] < 0)]["metric"].tolist()
        a = acc[(acc["a"] == v) & (acc["density"] == dens)]
        acc_down = bool(len(a) and a["significant"].iloc[0] and a["diff"].iloc[0] < 0)
        verdict = ("hurt" if worse else ("levelled down" if acc_down else "improved") if better
                   else "no significant change")
        rows.append({"variant": v, "density": dens, "verdict": verdict, "worse": ", ".join(worse),
                     "better": ", ".join(better)})
    out = pd.DataFrame(rows)
    out.attrs.update(correction=correction if family else "none", family=family, uncorrected=uncorrected)
    return out


def select_by_rule(table: pd.DataFrame, eps: float = 0.01, acc: str = "acc", fair: str = "mcd",
                   label: str = "variant") -> pd.Series:
    """The row chosen by the project's selection rule: among rows whose ``acc`` is within ``eps`` of the best,
    the one with the lowest ``fair`` (ties: higher ``acc``, then first listed). Used on the val split only."""
    best = table[acc].max()
    ok = table[table[acc] >= best - eps]
    return ok.sort_values([fair, acc], ascending=[True, False], kind="stable").iloc[0]


#: Metrics on a 0-1 scale that the notebooks state in percentage points.
POINT_METRICS = ("acc", "mcd", "group_acc_gap", "worst_group_acc", "dp_gap", "eo_gap")


def with_sparsity(table: pd.DataFrame, density: Optional[str] = None) -> pd.DataFrame:
    """A copy of ``table`` with a ``sparsity`` column (1 − density, rounded to 6 decimals) right after its density
    column (``density``, else ``density_target``, or the one named); unchanged if it has none or already has
    ``sparsity``."""
    t = table.copy()
    col = density or next((c for c in ("density", "density_target") if c in t.columns), None)
    if col is None or col not in t.columns or "sparsity" in t.columns:
        return t
    t.insert(t.columns.get_loc(col) + 1, "sparsity", (1 - pd.to_numeric(t[col], errors="coerce")).round(6))
    return t


def as_points(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of a paired table (:func:`versus`) or a summary (:func:`summarize`) with accuracy-like metrics in
    percentage points, as the notebooks' text states them (CWV, a variance, stays as is).

    Paired tables: ``diff``, ``ci_low`` and ``ci_high`` of those metrics are scaled and a ``unit`` column added.
    Summaries: ``<m>`` and ``<m>_ci`` are scaled and renamed ``<m> (pts)`` / ``<m>_ci (pts)``. Either way a
    ``sparsity`` column (1 − density) follows the density column (reports show both: :func:`with_sparsity`).
    """
    t = with_sparsity(table)
    if "metric" in t and "diff" in t:
        pts = t["metric"].isin(POINT_METRICS)
        for c in ("diff", "ci_low", "ci_high"):
            t[c] = t[c].astype(float).where(~pts, t[c] * 100)
        t.insert(t.columns.get_loc("diff"), "unit", np.where(pts, "pts", "raw"))
        return t
    rename = {}
    for m in POINT_METRICS:
        for c in (m, f"{m}_ci"):
            if c in t:
                t[c] = t[c] * 100
                rename[c] = f"{c} (pts)"
    return t.rename(columns=rename)


def layer_overlap(mask: Mapping[str, Any], others: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per layer, the share of ``mask``'s kept entries that each mask of ``others`` (label -> mask) also keeps.

    One row per (layer, other): ``layer``, ``vs``, ``kept`` (entries ``mask`` keeps in the layer), ``overlap``
    (NaN for a layer where ``mask`` keeps nothing). Layers are in ``mask``'s order.
    """
    rows = []
    for label, other in others.items():
        for n, m in mask.items():
            m = m.bool()
            kept = int(m.sum())
            both = int((m & other[n].bool()).sum())
            rows.append({"layer": n, "vs": label, "kept": kept, "overlap": both / kept if kept else float("nan")})
    return pd.DataFrame(rows)


def sign_agreement_by_epoch(record: Mapping[str, Any]) -> pd.DataFrame:
    """Per voting epoch and layer, the share of weights whose accuracy and fairness gradients have the same sign
    (zeros excluded), from a vote record of :func:`ballot_lib.methods.ballot.load_votes`."""
    rows = [{"epoch": e, "layer": n, "same sign": same / nonzero if nonzero else float("nan")}
            for e, rec in zip(record["epochs"], record["sign_epochs"]) for n, (same, nonzero) in rec.items()]
    return pd.DataFrame(rows, columns=["epoch", "layer", "same sign"])


#: Parameters that say where things are, not what was computed: left out of :func:`run_tag`'s hash.
LOCATION_PARAMETERS = ("results_dir", "data_root")
_NOT_PARAMETERS = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def notebook_parameters(namespace: Mapping[str, Any], notebook: Optional[str | Path] = None) -> dict[str, Any]:
    """The parameter values of a notebook, read from its globals (``globals()``).

    With ``notebook`` (its file, relative to the working directory, which is the notebook's folder under
    Jupyter, papermill and nbval), exactly the names its ``parameters`` cell declares are read, so re-running a
    cell later gives the same result. Without it (or when the file is not found), public names bound to plain
    values (str, int, float, bool, None, list, tuple, dict) are kept and IPython's own names (``In``, ``Out``,
    ``_i1`` ...) left out: call it then before the notebook defines anything else.
    """
    if notebook is not None and Path(notebook).is_file():
        from .notebook_files import notebook_parameters as declared

        return {k: namespace[k] for k in declared(Path(notebook)) if k in namespace}
    plain = (str, int, float, bool, type(None), list, tuple, dict)
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k not in _NOT_PARAMETERS and isinstance(v, plain)}


def run_tag(stem: str, params: Mapping[str, Any], length: int = 8) -> str:
    """The name of a notebook run's report and figures: ``<stem>_<dataset>_<model>_<hash>``.

    The hash covers every parameter except where things are stored (:data:`LOCATION_PARAMETERS`), so batch jobs
    that share a results store but differ in any setting (seeds, densities, epochs ...) never overwrite each
    other's reports or figures, and re-running the same job overwrites its own.
    """
    from .results import config_hash

    kept = {k: v for k, v in params.items() if k not in LOCATION_PARAMETERS}
    parts = [stem] + [str(params[k]) for k in ("dataset", "model") if params.get(k)]
    return "_".join(parts + [config_hash(kept)[:length]])


def write_report(name: str, text: str, results_dir: Optional[str | Path] = None) -> Path:
    """Save a notebook's closing summary as ``<results>/reports/<name>.md`` (collected by the suite runner)."""
    from .results import _atomic_write

    path = results_root(results_dir) / "reports" / f"{name}.md"
    return _atomic_write(path, lambda f: f.write(text.encode()))


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A small DataFrame as a GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)
    fmt = lambda x: (format(x, floatfmt) if isinstance(x, (float, np.floating)) and not math.isnan(x)  # noqa: E731
                     else "n/a" if isinstance(x, float) else str(x))
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)

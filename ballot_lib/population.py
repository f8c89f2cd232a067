"""Analyses of a population of pruned models (Prune Responsibly, Paganini 2020; SPEC §7) [reconstruction].

The paper's body is not available (only its abstract): the operationalisation below is ours, documented in
``papers/prune_responsibly.md``. Every function takes the tidy DataFrame of
:func:`ballot_lib.results.load_results` (one row per run and split); a *technique* is the column ``method`` by
default (``key="variant"`` groups by display label instead), and a *configuration* is a (technique, requested
density) pair run under several seeds. The dense runs (method ``dense``) are the reference.

* :func:`excess_change` — per pruned run and class, the excess change ``δ_c − δ`` where
  ``δ_c = acc_c(pruned) − acc_c(dense)`` and ``δ = acc(pruned) − acc(dense)``, against the dense model of the same
  seed: negative means the class lost more than the model did overall.
* :func:`collapsed_configurations` — per configuration, how many seeds *collapsed*: the rule of
  :func:`ballot_lib.comparison.collapsed_runs` (a run keeping less than :data:`~ballot_lib.comparison.COLLAPSE` of
  its same-seed dense run's balanced-accuracy gain over chance 1/C, judged on val). A collapsed model has lost most of its skill (at the
  extreme it predicts one class for everything), so its per-class changes measure the collapse, not who pays:
  :func:`who_pays` and :func:`who_pays_reading`
  name the most hurt class among the configurations with no collapsed seed and list the ones left out;
  :func:`ballot_lib.plots.excess_heatmap` draws the excess changes on a clipped colour scale with collapsed rows marked.
* :func:`hurt_classes` — classes significantly hurt, as Hooker et al. (2019): per configuration and class, a
  two-sided Welch t-test across seeds between the pruned and the dense models' normalised recall
  ``acc_c / acc``; p-values adjusted over the whole table (Benjamini–Hochberg by default, Holm optional); a class
  is *hurt* when the adjusted p-value is below ``alpha`` and its normalised recall went down.
* :func:`pareto_table` — one row per configuration (dense included) with val and test means; the front over
  (accuracy ↑, sparsity ↑, disparity ↓) is computed on **val** and reported on **test**. Disparity: ``mcd``
  (default), ``cwv``, ``worst_class`` (worst-class recall, ↑) or ``group_gap`` (max group accuracy gap).
* :func:`select` — an operating point chosen from the val front by a value judgement: ε-constraint,
  lexicographic or Chebyshev (see :mod:`ballot_lib.pareto`).
* :func:`technique_reevaluation` — per seed, the front pooled over all techniques' runs; each technique's share
  of it and the hypervolume its own runs dominate; mean ± Student-t 95 % CI over seeds.

``python -m ballot_lib.population RESULTS_DIR`` prints the Markdown tables of notebook 04 from a results store.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from . import pareto
from .analysis import COLLAPSE, class_columns, collapsed_runs, markdown_table, metric_range
from .metrics import CORRECTIONS, adjust_pvalues, mean_ci, paired_difference  # noqa: F401 (re-exported)

#: disparity name -> (column, larger is better)
DISPARITIES = {"mcd": ("mcd", False), "cwv": ("cwv", False), "worst_class": ("worst_class_acc", True),
               "group_gap": ("group_acc_gap", False)}
#: The disparities measured between sensitive groups: they need a dataset with a sensitive attribute.
GROUP_DISPARITIES = frozenset({"group_gap"})
#: Notebook 04's lexicographic rule: how much worse than the best val disparity still counts as a tie, in each
#: disparity's own unit (2 points for gaps and recalls; CWV is a variance of recalls, so 2 points is 0.02² there).
DISPARITY_TOLERANCE = {"mcd": 0.02, "cwv": 0.0004, "worst_class": 0.02, "group_gap": 0.02}
#: Reference point of the hypervolume: accuracy 0, sparsity 0, and the worst disparity (1 for gaps/variance,
#: 0 for worst-class recall).
HV_REFERENCE = {"acc": 0.0, "sparsity": 0.0, "mcd": 1.0, "cwv": 1.0, "worst_class_acc": 0.0, "group_acc_gap": 1.0}
RULES = ("epsilon", "lexicographic", "chebyshev")
#: The grid sparsity is rounded to in the fronts (0.1 % of the prunable weights): sparsities in one cell tie. A grid,
#: not a tolerance: two values either side of a grid line stay one step apart.
SPARSITY_RESOLUTION = 1e-3
#: A configuration is named by its requested density; its achieved density is added to the label when the two
#: differ by more than rounding of weight counts: more than half a unit of the third decimal the tables print.
#: Structured masks keep whole output rows and leave the classifier dense, so they land elsewhere (0.05 -> 0.094).
ACHIEVED_TOLERANCE = 5e-4


def density_label(target: float, achieved: Optional[float] = None) -> str:
    """A configuration's density as readings and tables name it: the requested density, and the achieved one
    when it differs by more than :data:`ACHIEVED_TOLERANCE` ("0.05 (achieved 0.094)")."""
    note = _achieved_note(target, achieved)
    return f"{float(target):g}" + (f" ({note})" if note else "")


def _achieved_note(target: float, achieved: Optional[float]) -> str:
    """'achieved 0.094', or '' when ``achieved`` is missing or equals ``target`` up to rounding."""
    if achieved is None:
        return ""
    a = float(achieved)
    if not math.isfinite(a) or abs(a - float(target)) <= ACHIEVED_TOLERANCE:
        return ""
    return f"achieved {a:.3f}"


def with_achieved(table: pd.DataFrame, df: pd.DataFrame, key: str = "method") -> pd.DataFrame:
    """``table`` (one row per configuration: ``key``, ``density_target``) with ``density_achieved``, the mean
    achieved density of the configuration's runs in ``df``, inserted after ``density_target``."""
    runs = df.drop_duplicates("run_id") if "run_id" in df else df
    ach = (runs.groupby([key, "density_target"])["density"].mean().rename("density_achieved").reset_index())
    out = table.drop(columns=["density_achieved"], errors="ignore").merge(ach, on=[key, "density_target"],
                                                                          how="left")
    cols = list(out.columns)
    cols.insert(cols.index("density_target") + 1, cols.pop(cols.index("density_achieved")))
    out = out[cols]
    out.attrs.update(table.attrs)
    return out


def disparity_column(disparity: str) -> tuple[str, bool]:
    """(column, maximise) of a disparity name; raises ``ValueError`` naming the valid ones."""
    if disparity not in DISPARITIES:
        raise ValueError(f"unknown disparity {disparity!r}; valid: {sorted(DISPARITIES)}")
    return DISPARITIES[disparity]


def check_disparity_data(df: pd.DataFrame, disparity: str) -> str:
    """The column of ``disparity`` in ``df``; a ``ValueError`` naming the disparity, the dataset(s) and the valid
    choices when the runs do not measure it (``group_gap`` on a dataset without a sensitive attribute)."""
    col, _ = disparity_column(disparity)
    if col in ("worst_class_acc",) or (col in df.columns and df[col].notna().any()):
        return col
    datasets = ", ".join(sorted(map(str, df["dataset"].dropna().unique()))) if "dataset" in df.columns else "?"
    valid = [d for d in sorted(DISPARITIES) if d not in GROUP_DISPARITIES and
             (DISPARITIES[d][0] == "worst_class_acc" or DISPARITIES[d][0] in df.columns)]
    what = "the accuracy gap between sensitive groups" if disparity in GROUP_DISPARITIES else f"column {col!r}"
    raise ValueError(f"disparity {disparity!r} needs {what}, which these runs (dataset {datasets}) do not have"
                     f"{' (no sensitive attribute)' if disparity in GROUP_DISPARITIES else ''}; valid choices: "
                     f"{', '.join(valid)}")


def with_derived(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``worst_class_acc`` (min over present classes) and ``sparsity`` columns added if missing."""
    df = df.copy()
    cols = class_columns(df)
    if cols and "worst_class_acc" not in df:
        df["worst_class_acc"] = df[cols].min(axis=1, skipna=True)
    if "sparsity" not in df or df["sparsity"].isna().any():
        df["sparsity"] = 1.0 - df["density"].astype(float)
    return df


def _split(df: pd.DataFrame, split: str) -> pd.DataFrame:
    d = df[df["split"] == split]
    if d.empty:
        raise ValueError(f"no rows for split {split!r}; splits present: {sorted(df['split'].unique())}")
    return d


def _dense(d: pd.DataFrame, reference: str, key: str) -> pd.DataFrame:
    ref = d[d[key] == reference]
    if ref.empty:
        raise ValueError(f"no {reference!r} runs to compare against (column {key!r} has {sorted(d[key].unique())})")
    if ref["seed"].duplicated().any():
        raise ValueError(f"several {reference!r} runs per seed; keep one dense configuration per seed")
    return ref.set_index("seed")


def excess_change(df: pd.DataFrame, reference: str = "dense", split: str = "test", key: str = "method"
                  ) -> pd.DataFrame:
    """Long table, one row per (pruned run, class): ``delta_c``, ``delta`` and ``excess = delta_c − delta``.

    Deltas are against the ``reference`` run of the same seed; runs whose seed has no reference are dropped.
    """
    d = _split(df, split)
    cols = class_columns(d)
    ref = _dense(d, reference, key)
    pruned = d[(d[key] != reference) & d["seed"].isin(ref.index)]
    if pruned.empty:
        return pd.DataFrame(columns=[key, "density_target", "density", "seed", "run_id", "class", "delta_c",
                                     "delta", "excess"])
    r = ref.loc[pruned["seed"]]
    delta = pruned["acc"].to_numpy() - r["acc"].to_numpy()
    frames = []
    for c in cols:
        delta_c = pruned[c].to_numpy() - r[c].to_numpy()
        frames.append(pd.DataFrame({key: pruned[key].to_numpy(), "density_target": pruned["density_target"].to_numpy(),
                                    "density": pruned["density"].to_numpy(), "seed": pruned["seed"].to_numpy(),
                                    "run_id": pruned["run_id"].to_numpy(), "class": int(c.rsplit("_", 1)[1]),
                                    "delta_c": delta_c, "delta": delta, "excess": delta_c - delta}))
    return pd.concat(frames, ignore_index=True)


def excess_summary(excess: pd.DataFrame, key: str = "method") -> pd.DataFrame:
    """Mean excess change per (technique, density, class) over seeds (wide: one column per class, plus the most
    hurt class, its mean excess and ``delta``, the mean overall accuracy change δ)."""
    rows = []
    for (t, dens), g in excess.groupby([key, "density_target"], sort=True):
        row: dict[str, Any] = {key: t, "density_target": dens, "seeds": int(g["seed"].nunique())}
        if "density" in g:  # the achieved density (structured masks land away from the requested one)
            row["density"] = float(g.drop_duplicates("run_id")["density"].mean())
        # Rounded before the minimum: classes whose recall changed by the same whole number of images tie exactly,
        # and float noise (1e-18) must not pick one of them. Ties keep the lowest class and name the others.
        means = g.groupby("class")["excess"].mean().round(12)
        for c, m in means.items():
            row[f"class {c}"] = m
        tied = [int(c) for c, m in means.items() if m == means.min()]
        row["most_hurt_class"] = tied[0]
        row["most_hurt_tied_with"] = ", ".join(map(str, tied[1:]))
        row["most_hurt_excess"] = float(means.min())
        row["delta"] = float(g.drop_duplicates("run_id")["delta"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def excess_view(summary: pd.DataFrame, key: str = "method") -> pd.DataFrame:
    """Notebook 04's table of a (flagged, :func:`flag_collapsed`) :func:`excess_summary`: one row per
    configuration (index: technique, requested density; the achieved density, 3 decimals, as the first column when
    the summary has it), the classes' mean excess change δ_c − δ, the most hurt
    class's and the mean accuracy change δ in percentage points (the stored fractions × 100: recall and accuracy
    are fractions of 1), each column named with its unit, and the collapsed seeds (a count). The summary itself
    keeps its column names (``class c``, ``most_hurt_excess``, ``delta``)."""
    classes = sorted((c for c in summary.columns if c.startswith("class ")), key=lambda c: int(c.split()[1]))
    t = summary.set_index([key, "density_target"])
    out = t[classes + ["most_hurt_excess", "delta"]] * 100
    out.columns = [f"{c}: δ_c − δ (pts)" for c in classes] + ["most hurt: δ_c − δ (pts)", "δ: accuracy change (pts)"]
    if "density" in t:  # the achieved density first: structured masks land away from the requested one
        out.insert(0, "density (achieved)", t["density"].round(3))
    if "collapsed_seeds" in t:
        out["collapsed seeds"] = t["collapsed_seeds"]
    return out


def excess_caption(summary: pd.DataFrame, split: str = "test") -> str:
    """The caption of :func:`excess_view`, from the summary: the seeds averaged over and what the units are."""
    seeds = sorted({int(x) for x in summary["seeds"]}) if "seeds" in summary and len(summary) else []
    n = "" if not seeds else f" over {seeds[0]}" if len(seeds) == 1 else f" over {seeds[0]}–{seeds[-1]}"
    return (f"Mean{n} seeds ({split} split), against the dense model of the same seed, in percentage points: "
            "δ_c is class c's recall change and δ the overall accuracy change, so δ_c − δ < 0 means the class lost "
            "more than the model as a whole (−5: five points more). `most hurt` is the row's lowest δ_c − δ; "
            "`collapsed seeds` counts the seeds whose run collapsed (a number of seeds, not points).")


def collapsed_configurations(df: pd.DataFrame, reference: str = "dense", split: str = "val", key: str = "method",
                             threshold: float = COLLAPSE) -> pd.DataFrame:
    """Per pruned configuration (technique, requested density): how many of its seeds collapsed on ``split``.

    The rule is :func:`ballot_lib.comparison.collapsed_runs` (notebook 03's): a run collapses when it keeps less
    than ``threshold`` of the same-seed ``reference`` run's balanced-accuracy gain over chance (1/C, C = classes
    present), judged on val by default (what is left out is not chosen by looking at test).
    Columns: ``key``, density_target, seeds, collapsed_seeds and ``collapsed`` (True when any seed collapsed: the
    configuration's means over seeds then mix in a collapse).
    """
    d = _split(df, split)
    pruned = d[d[key] != reference]
    out = (pruned.groupby([key, "density_target"], sort=True)["seed"].nunique().rename("seeds").reset_index())
    runs = d.assign(variant=np.where(d[key] == reference, "Dense", d[key].astype(str)))
    for c in ("dataset", "model"):  # collapsed_runs pairs runs by (dataset, model, seed)
        if c not in runs:
            runs[c] = ""
    gone = collapsed_runs(runs, threshold, split)
    n = {(str(v), float(dn)): int(g["seed"].nunique()) for (v, dn), g in gone.groupby(["variant", "density"])}
    out["collapsed_seeds"] = [n.get((str(t), float(dn)), 0) for t, dn in zip(out[key], out["density_target"])]
    out["collapsed"] = out["collapsed_seeds"] > 0
    out.attrs.update(threshold=threshold)
    return out


def flag_collapsed(table: pd.DataFrame, collapsed: pd.DataFrame, key: str = "method") -> pd.DataFrame:
    """``table`` (one row per configuration: :func:`excess_summary`, :func:`hurt_counts`, ...) with the
    ``collapsed_seeds`` and ``collapsed`` columns of :func:`collapsed_configurations` (0 / False where absent)."""
    flags = collapsed[[key, "density_target", "collapsed_seeds"]]
    out = table.drop(columns=["collapsed_seeds", "collapsed"], errors="ignore").merge(
        flags, on=[key, "density_target"], how="left")
    out["collapsed_seeds"] = out["collapsed_seeds"].fillna(0).astype(int)
    out["collapsed"] = out["collapsed_seeds"] > 0
    out.attrs.update(table.attrs, threshold=collapsed.attrs.get("threshold", COLLAPSE))
    return out


def who_pays(summary: pd.DataFrame, key: str = "method") -> tuple[Optional[pd.Series], pd.DataFrame]:
    """The configuration of a flagged :func:`excess_summary` (:func:`flag_collapsed`) with the largest mean
    excess loss among those with no collapsed seed (None when every one has a collapsed seed), and the rows left
    out (the collapsed configurations, sorted by technique and density)."""
    flagged = summary["collapsed"].astype(bool) if "collapsed" in summary else pd.Series(False, index=summary.index)
    kept = summary[~flagged]
    best = kept.loc[kept["most_hurt_excess"].idxmin()] if len(kept) else None
    left = summary[flagged].sort_values([key, "density_target"], ascending=[True, False])
    return best, left


def _collapse_rule(threshold: float) -> str:
    return (f"on val, at least one seed keeps less than {100 * threshold:.0f} % of its same-seed dense run's "
            "balanced-accuracy gain over chance, 1/C")


def _configs(rows: pd.DataFrame, key: str) -> str:
    """'t at 0.1 (5 of 5 seeds), 0.05 (5 of 5); u at 0.05 (achieved 0.094; 1 of 5)' for rows with
    ``collapsed_seeds`` (the achieved density where it differs from the requested one, :func:`density_label`)."""
    parts = []
    for t, g in rows.groupby(key, sort=True):
        items = []
        for _, r in g.sort_values("density_target", ascending=False).iterrows():
            note = _achieved_note(r["density_target"], r.get("density"))
            items.append(f"{r['density_target']:g} ({note + '; ' if note else ''}"
                         f"{int(r['collapsed_seeds'])} of {int(r['seeds'])} seeds)")
        parts.append(f"{t} at " + ", ".join(items))
    return "; ".join(parts)


def who_pays_reading(summary: pd.DataFrame, counts: Optional[pd.DataFrame] = None, key: str = "method",
                     correction: str = "bh", alpha: float = 0.05) -> str:
    """The "who pays" paragraph of notebook 04, generated from the numbers.

    ``summary``: :func:`excess_summary` flagged by :func:`flag_collapsed`; ``counts``: :func:`hurt_counts`
    flagged the same way (optional). The most hurt class is named among the configurations with no collapsed
    seed; the collapsed ones are listed with the reason, and the significant tests are counted with and without
    them.
    """
    threshold = summary.attrs.get("threshold", COLLAPSE)
    best, left = who_pays(summary, key)
    n_all = len(summary)
    lines = []
    if best is None:
        lines.append(f"**Who pays.** Every one of the {n_all} operating points (technique, density) has a collapsed "
                     "seed, so no class can be named as the one that pays.")
    else:
        kept = summary[~summary["collapsed"].astype(bool)] if "collapsed" in summary else summary
        # A configuration whose most hurt class ties with others names no single class: not counted.
        tied = (kept["most_hurt_tied_with"].astype(str) != "") if "most_hurt_tied_with" in kept else \
            pd.Series(False, index=kept.index)
        freq = kept.loc[~tied, "most_hurt_class"].value_counts()
        top = sorted(int(c) for c, v in freq.items() if v == freq.max())
        n_named = int((~tied).sum())
        ties = f"; {int(tied.sum())} point(s) with a tie for most hurt are not counted" if tied.any() else ""
        often = ("no single class (every point has a tie)" if freq.empty else
                 f"class {top[0]} ({int(freq.max())} of {n_named}{ties})" if len(top) == 1 else
                 f"classes {', '.join(map(str, top))} ({int(freq.max())} of {n_named} each{ties})")
        scope = (f"Among the {len(kept)} of {n_all} operating points (technique, density) with no collapsed seed"
                 if len(left) else f"Over all {n_all} operating points (technique, density; none collapsed)")
        lines.append(f"**Who pays.** {scope}, the largest mean excess loss is class {int(best['most_hurt_class'])} "
                     f"under {best[key]} at density {density_label(best['density_target'], best.get('density'))} "
                     f"({100 * best['most_hurt_excess']:+.1f} points beyond the overall change"
                     + (f" of {100 * best['delta']:+.1f}" if "delta" in best else "")
                     + f"); the most hurt class is most often {often}.")
    if len(left):
        worst_left = left.loc[left["most_hurt_excess"].idxmin()]
        wl_note = _achieved_note(worst_left["density_target"], worst_left.get("density"))
        lines.append(f"Left out as collapsed ({_collapse_rule(threshold)}: such a model has lost most of its skill, "
                     "so its per-class changes measure the collapse, not who pays): "
                     f"{_configs(left, key)}. Their largest excess loss is {100 * worst_left['most_hurt_excess']:+.1f} "
                     f"points (class {int(worst_left['most_hurt_class'])}, {worst_left[key]} at "
                     f"{worst_left['density_target']:g}{', ' + wl_note if wl_note else ''}).")
    if counts is not None and len(counts):
        flagged = counts["collapsed"].astype(bool) if "collapsed" in counts else pd.Series(False, index=counts.index)
        n_hurt, n_tests = int(counts["hurt"].sum()), int(counts["classes"].sum())
        seeds = int(summary["seeds"].max()) if "seeds" in summary and len(summary) else 0
        if n_hurt:
            in_left = int(counts.loc[flagged, "hurt"].sum())
            text = (f"{n_hurt} of {n_tests} (technique, density, class) tests find a class significantly hurt after "
                    f"{correction} correction (α = {alpha:g})")
            by_t = counts[~flagged].groupby(key)["hurt"].sum()
            top = sorted(t for t, v in by_t.items() if v == by_t.max()) if len(by_t) else []
            most = (f"the most under {' and '.join(map(str, top))} ({int(by_t.max())}"
                    f"{' each' if len(top) > 1 else ''})") if top else ""
            if in_left:
                text += f"; {in_left} of them in the collapsed configurations"
                text += (f"; of the other {n_hurt - in_left}, {most}." if n_hurt > in_left else
                         ", none elsewhere.")
            else:
                text += f"; {most}."
            lines.append(text)
            mild = counts[np.isclose(counts["density_target"], counts["density_target"].max())]
            if mild["hurt"].sum() == 0:
                lines.append(f"At the mildest density ({counts['density_target'].max():g}) no class is significantly "
                             "hurt by any technique.")
        else:
            lines.append(f"No class is significantly hurt after {correction} correction (α = {alpha:g}, {seeds} "
                         "seeds): with this many tests and seeds, the tests cannot separate the per-class changes "
                         "from noise.")
    return "\n".join(lines)


def robust_limit(values, q: float = 80.0, floor: float = 1.0) -> float:
    """Symmetric colour limit: the ``q``-th percentile of ``|values|`` (NaNs ignored), at least ``floor``, so a
    few extreme cells (a collapse) do not wash out the typical differences."""
    v = np.abs(np.asarray(values, dtype=float)).ravel()
    v = v[np.isfinite(v)]
    return max(floor, float(np.percentile(v, q))) if v.size else floor


def excess_matrix(summary: pd.DataFrame, key: str = "method", class_names: Optional[Sequence[str]] = None
                  ) -> pd.DataFrame:
    """Mean excess change δ_c − δ in points, one row per configuration of an :func:`excess_summary` (technique,
    then density from mild to severe), one column per class (named by ``class_names`` when given). Rows with a
    collapsed seed (:func:`flag_collapsed`) are labelled "technique @ density · collapsed k/n"."""
    cols = sorted((c for c in summary.columns if c.startswith("class ")), key=lambda c: int(c.split()[1]))
    s = summary.sort_values([key, "density_target"], ascending=[True, False])
    labels = []
    for _, r in s.iterrows():
        lab = f"{r[key]} @ {density_label(r['density_target'], r.get('density'))}"
        if "collapsed" in s and bool(r["collapsed"]):
            lab += f" · collapsed {int(r['collapsed_seeds'])}/{int(r['seeds'])}"
        labels.append(lab)
    mat = pd.DataFrame(100 * s[cols].to_numpy(dtype=float), index=labels,
                       columns=[class_names[int(c.split()[1])] if class_names else c.split()[1] for c in cols])
    mat.index.name, mat.columns.name = "configuration", "class"
    return mat


def welch(a: np.ndarray, b: np.ndarray):
    """Column-wise two-sided Welch t-test of samples ``a`` (n_a x m) against ``b`` (n_b x m), NaNs dropped.

    Returns ``((mean_a, n_a), (mean_b, n_b), t, p)`` per column; ``t`` and ``p`` are NaN where a sample has fewer
    than two values or both have zero variance. Same statistic and Welch–Satterthwaite degrees of freedom as
    ``scipy.stats.ttest_ind(equal_var=False)``, one vectorised call instead of one per column.
    """
    from scipy import stats

    def moments(x):
        n = (~np.isnan(x)).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(x, axis=0)
            var = np.where(n >= 2, np.nanvar(x, axis=0, ddof=1) if len(x) >= 2 else np.nan, np.nan)
        return mean, n, var

    ma, na, va = moments(a)
    mb, nb, vb = moments(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        sa, sb = va / na, vb / nb
        se2 = sa + sb
        ok = (na >= 2) & (nb >= 2) & (se2 > 0)
        t = np.where(ok, (ma - mb) / np.sqrt(se2), np.nan)
        dof = np.where(ok, se2 ** 2 / (sa ** 2 / (na - 1) + sb ** 2 / (nb - 1)), np.nan)
        p = np.where(ok, 2 * stats.t.sf(np.abs(t), dof), np.nan)
    return (ma, na), (mb, nb), t, p


def hurt_classes(df: pd.DataFrame, reference: str = "dense", split: str = "test", alpha: float = 0.05,
                 correction: str = "bh", key: str = "method") -> pd.DataFrame:
    """Welch t-test per (technique, density, class) of normalised recall ``acc_c / acc``, pruned vs dense.

    Returns one row per test: the two means over seeds, the change, Welch's t and p, the adjusted p (over every
    test of the table, ``correction``) and ``hurt`` (adjusted p < ``alpha`` and the normalised recall went down).
    Both samples are the seeds' models (Hooker et al. compare populations of models the same way); with few
    seeds the test has little power, which the adjusted p-values make visible.
    """
    d = _split(df, split)
    cols = class_columns(d)
    ref = _dense(d, reference, key)
    classes = [int(c.rsplit("_", 1)[1]) for c in cols]
    b = ref[cols].to_numpy(dtype=float) / ref["acc"].to_numpy(dtype=float)[:, None]
    rows = []
    for (t, dens), g in d[d[key] != reference].groupby([key, "density_target"], sort=True):
        a = g[cols].to_numpy(dtype=float) / g["acc"].to_numpy(dtype=float)[:, None]
        (ma, na), (mb, nb), tstat, p = welch(a, b)
        rows.append(pd.DataFrame({key: t, "density_target": dens, "class": classes, "n_pruned": na, "n_dense": nb,
                                  "norm_recall_pruned": ma, "norm_recall_dense": mb, "t": tstat, "p": p}))
    rows = [r for r in rows if len(r)]
    if not rows:
        return pd.DataFrame()
    out = pd.concat(rows, ignore_index=True)
    out["change"] = out["norm_recall_pruned"] - out["norm_recall_dense"]
    out["p_adj"] = adjust_pvalues(out["p"].to_numpy(), correction)
    out["correction"] = correction
    out["hurt"] = (out["p_adj"] < alpha) & (out["change"] < 0)
    return out


def hurt_counts(tests: pd.DataFrame, key: str = "method", alpha: float = 0.05) -> pd.DataFrame:
    """Number of significantly hurt classes per (technique, density), with the raw count (unadjusted p < ``alpha``
    and recall down) beside it."""
    tests = tests.assign(raw_hurt=(tests["p"] < alpha) & (tests["change"] < 0))
    g = tests.groupby([key, "density_target"], sort=True)
    return pd.DataFrame({"hurt": g["hurt"].sum().astype(int),
                         "hurt_unadjusted": g["raw_hurt"].sum().astype(int),
                         "classes": g.size()}).reset_index()


def sparsity_objective(sparsity, resolution: float = SPARSITY_RESOLUTION):
    """Sparsity as an objective: rounded to ``resolution``, so that masks differing by a few weights (a per-layer
    mask rounds each layer, a global one the total) tie instead of one dominating the other by a hair."""
    if resolution <= 0:
        return sparsity
    return np.round(np.asarray(sparsity, dtype=float) / resolution) * resolution


def pareto_table(df: pd.DataFrame, disparity: str = "mcd", select_split: str = "val", report_split: str = "test",
                 key: str = "method", sparsity_resolution: float = SPARSITY_RESOLUTION) -> pd.DataFrame:
    """One row per configuration (technique, requested density; dense included): seed count, run ids, mean
    achieved density/sparsity, and per split the mean (and CI half-width) of accuracy and the disparity, with
    ``on_front`` computed on ``select_split`` over (accuracy ↑, sparsity ↑, disparity).

    The ``sparsity`` column is the objective (rounded to ``sparsity_resolution``, see :func:`sparsity_objective`);
    ``sparsity_exact`` is the unrounded mean."""
    col = check_disparity_data(df, disparity)
    df = with_derived(df)
    rows = []
    for (t, dens), g in df.groupby([key, "density_target"], sort=True):
        row: dict[str, Any] = {key: t, "density_target": dens, "seeds": int(g["seed"].nunique()),
                               "run_ids": ",".join(sorted(g["run_id"].unique())),
                               "density": float(g["density"].mean()),
                               "sparsity": sparsity_objective(g["sparsity"].mean(), sparsity_resolution),
                               "sparsity_exact": float(g["sparsity"].mean())}
        for split in (select_split, report_split):
            s = g[g["split"] == split].sort_values("seed")  # one summation order, whatever the row order
            for m in ("acc", col):
                mean, half, _, _ = mean_ci(s[m].tolist()) if m in s else (np.nan, np.nan, np.nan, 0)
                row[f"{split}_{m}"], row[f"{split}_{m}_ci"] = mean, half
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("no runs to build a front from")
    table = table.dropna(subset=[f"{select_split}_acc", f"{select_split}_{col}"]).reset_index(drop=True)
    pts, mx = objective_points(table, disparity, select_split)
    table["on_front"] = pareto.non_dominated(pts, mx)
    table.attrs.update(disparity=disparity, select_split=select_split, report_split=report_split, key=key)
    return table


def objective_points(table: pd.DataFrame, disparity: str, split: str) -> tuple[np.ndarray, list[bool]]:
    """The (accuracy, sparsity, disparity) points of a table's rows on ``split`` and their directions."""
    col, mx = disparity_column(disparity)
    pts = table[[f"{split}_acc", "sparsity", f"{split}_{col}"]].to_numpy(dtype=float)
    # Means over seeds that are equal up to rounding (e.g. 0.9706293706293707 vs ...06) are ties, not dominance.
    return np.round(pts, 12), [True, True, mx]


def select(table: pd.DataFrame, rule: str, **params: Any) -> tuple[pd.Series, str]:
    """Choose an operating point among the front rows of a :func:`pareto_table` (on its select split).

    Rules (objectives are named ``acc``, ``sparsity``, ``disparity``):

    * ``"epsilon"``: maximise ``objective`` (default ``"sparsity"``) subject to ``min_acc`` and/or
      ``max_disparity`` (absolute values; ``max_acc_drop`` = a floor at the dense accuracy minus that much;
      ``max_disparity_rise`` = a ceiling at the dense disparity plus that much; for ``worst_class`` the
      disparity bound is a floor);
    * ``"lexicographic"``: ``order`` (e.g. ``["disparity", "acc", "sparsity"]``) with ``tolerances``;
    * ``"chebyshev"``: ``weights`` (mapping objective -> weight) against the ideal point of the front.

    Returns the chosen row and a sentence stating the rule with its numbers.
    """
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; valid: {list(RULES)}")
    disparity, split = table.attrs.get("disparity", "mcd"), table.attrs.get("select_split", "val")
    col, dmax = disparity_column(disparity)
    names = ["acc", "sparsity", "disparity"]
    front = table[table["on_front"]].reset_index(drop=True)
    pts, mx = objective_points(front, disparity, split)
    key = table.attrs.get("key", "method")
    dense = table[table[key] == "dense"]
    if rule == "epsilon":
        objective = params.get("objective", "sparsity")
        bounds: dict[int, float] = {}
        min_acc = params.get("min_acc")
        if params.get("max_acc_drop") is not None:
            if dense.empty:
                raise ValueError("max_acc_drop needs the dense configuration in the table")
            min_acc = float(dense[f"{split}_acc"].iloc[0]) - params["max_acc_drop"]
        # Bounds are rounded like the points (objective_points), so a tie with the dense value meets the bound.
        if min_acc is not None:
            bounds[0] = round(float(min_acc), 12)
        max_disp = params.get("max_disparity")
        if params.get("max_disparity_rise") is not None:
            if dense.empty:
                raise ValueError("max_disparity_rise needs the dense configuration in the table")
            rise = params["max_disparity_rise"]
            max_disp = float(dense[f"{split}_{col}"].iloc[0]) + (-rise if dmax else rise)
        if max_disp is not None:
            bounds[2] = round(float(max_disp), 12)
        i = pareto.epsilon_constraint(pts, mx, names.index(objective), bounds)
        parts = []
        # In the units of the tables: accuracy in %, gaps in points, CWV raw.
        if 0 in bounds:
            parts.append(f"{split} accuracy ≥ {100 * bounds[0]:.2f} %")
        if 2 in bounds:
            bound = f"{bounds[2]:.4f}" if disparity == "cwv" else f"{100 * bounds[2]:.2f} pts"
            parts.append(f"{split} {disparity.upper()} {'≥' if dmax else '≤'} {bound}")
        text = (f"ε-constraint: the front point with the highest {objective}" if objective != "disparity" or dmax
                else f"ε-constraint: the front point with the lowest {disparity.upper()}")
        text += (" subject to " + " and ".join(parts)) if parts else ""
    elif rule == "lexicographic":
        order = params.get("order", ["disparity", "acc", "sparsity"])
        tol = params.get("tolerances")
        i = pareto.lexicographic(pts, mx, [names.index(o) for o in order], tol)
        text = "lexicographic: " + ", then ".join(
            f"best {o if o != 'disparity' else disparity.upper()}"
            + (f" (within {tol[j]:g})" if tol and tol[j] else "") for j, o in enumerate(order))
    else:
        weights = params.get("weights", {"acc": 1.0, "sparsity": 1.0, "disparity": 1.0})
        w = [float(weights.get(n, 0.0)) for n in names]
        i = pareto.chebyshev(pts, mx, w)
        text = ("Chebyshev: the front point nearest the ideal in the weighted max-norm (each objective scaled to "
                "its range on the front), weights " + ", ".join(f"{n if n != 'disparity' else disparity.upper()} "
                                                                 f"{x:g}" for n, x in zip(names, w)))
    return front.iloc[i], text + f" (on the {split} split)"


def selection_labels(chosen: Mapping[str, pd.Series], key: str = "method") -> dict[str, pd.Series]:
    """Short figure labels for chosen operating points (``chosen``: judgement name -> row of a
    :func:`pareto_table`): each name cut at its first ":" ("A: efficiency" -> "A"), and judgements that chose the
    same configuration merged into one label ("A = B"), so that no two labels are drawn on the same point."""
    out: dict[tuple, tuple[list[str], pd.Series]] = {}
    for name, row in chosen.items():
        cfg = (row[key], float(row["density_target"]))
        out.setdefault(cfg, ([], row))[0].append(name.split(":", 1)[0].strip())
    return {" = ".join(names): row for names, row in out.values()}


def _per_seed(df: pd.DataFrame, row: pd.Series, col: str, split: str, key: str) -> dict:
    """Seed -> ``col`` on ``split`` of the runs of ``row``'s configuration (technique, requested density)."""
    d = df[(df["split"] == split) & (df[key] == row[key])
           & np.isclose(df["density_target"].astype(float), float(row["density_target"]))]
    return {int(s): float(v) for s, v in zip(d["seed"], d[col]) if v == v}


def bound_effect(df: pd.DataFrame, table: pd.DataFrame, row: pd.Series, max_disparity_rise: float = 0.0,
                 reference: str = "dense") -> dict:
    """Judgement B's disparity bound at a chosen configuration ``row`` (judgement A's), paired by seed.

    The bound of :func:`select` (``max_disparity_rise``) compares means over seeds on the table's select split:
    disparity(row) ≤ disparity(dense) + rise (≥ dense − rise for a maximised disparity). The runs are paired (every
    pruned run starts from the dense θT of its seed), so the relevant difference is the per-seed
    disparity(row) − disparity(dense of the same seed), :func:`ballot_lib.metrics.paired_difference`, against the
    bound's allowance ``edge`` (+rise, or −rise when maximised). ``decided``: the paired test of that difference
    minus ``edge`` rejects 0 — its CI excludes the bound (with zero spread, the exact sign-flip test decides, as
    everywhere). When it does not, whether the configuration meets the bound is within seed noise.
    Returns diff, ci_low, ci_high (of disparity(row) − disparity(dense)), n, edge, decided, maximise, split, col.
    """
    disparity, split = table.attrs.get("disparity", "mcd"), table.attrs.get("select_split", "val")
    key = table.attrs.get("key", "method")
    col, dmax = disparity_column(disparity)
    dense = table[table[key] == reference]
    if dense.empty:
        raise ValueError("the bound's effect needs the dense configuration in the table")
    edge = (-float(max_disparity_rise) if dmax else float(max_disparity_rise)) + 0.0  # never −0.0
    a = _per_seed(df, row, col, split, key)
    ref = _per_seed(df, dense.iloc[0], col, split, key)
    out = paired_difference(a, {s: v + edge for s, v in ref.items()}, lower_is_better=not dmax)
    return {"diff": out["diff"] + edge, "ci_low": out["ci_low"] + edge, "ci_high": out["ci_high"] + edge,
            "n": out["n"], "edge": edge, "decided": bool(out["n"] >= 2 and out["significant"]), "maximise": dmax,
            "split": split, "col": col}


def _paired_text(col: str, p: Mapping[str, Any]) -> str:
    from .readings import fmt

    def f(x: float, unit: bool = True) -> str:  # rounded first: a tie of means (−2e-17) reads +0.0, not −0.0
        text = fmt(col, round(float(x), 12) + 0.0)
        return text if unit else text.removesuffix(" pts")

    if p["n"] < 2:
        return f"{f(p['diff'])} (fewer than 2 paired seeds: no CI)"
    return f"{f(p['diff'])} [{f(p['ci_low'], False)}, {f(p['ci_high'], False)}]"


def judgements_reading(df: pd.DataFrame, table: pd.DataFrame, chosen: Mapping[str, pd.Series],
                       max_disparity_rise: float = 0.0, val_size: Optional[int] = None,
                       a_name: str = "A: efficiency", b_name: str = "B: efficiency + fairness",
                       reference: str = "dense") -> str:
    """Notebook 04's reading of the chosen operating points: one line per judgement (test accuracy in %, the
    disparity in its unit: points for MCD and gaps) and what judgement B's fairness bound did to judgement A's
    choice, stated only as far as the seeds decide it (:func:`bound_effect`). When the paired CI of the relevant
    difference includes the bound, the reading says the bound's effect cannot be decided at this val size
    (``val_size``: the val images, when given) instead of "did not change the choice". Configurations are named
    with their achieved density where it differs from the requested one (:func:`density_label`)."""
    from .readings import fmt

    disparity = table.attrs.get("disparity", "mcd")
    key = table.attrs.get("key", "method")
    col, dmax = disparity_column(disparity)
    rep = table.attrs.get("report_split", "test")
    dense_row = table[table[key] == reference].iloc[0]
    D = disparity.upper()

    def where(row: pd.Series) -> str:
        note = _achieved_note(row["density_target"], row.get("density"))
        return (f"{row[key]} at density {float(row['density_target']):g} ("
                + (f"{note}, " if note else "") + f"sparsity {row['sparsity']:.2f})")

    lines = []
    for name, row in chosen.items():
        lines.append(f"- {name}: {where(row)}; {rep} accuracy {100 * row[f'{rep}_acc']:.1f} % vs dense "
                     f"{100 * dense_row[f'{rep}_acc']:.1f} %, {rep} {D} {fmt(col, row[f'{rep}_{col}'], False)} vs "
                     f"dense {fmt(col, dense_row[f'{rep}_{col}'], False)}.")
    if a_name in chosen and b_name in chosen:
        a, b = chosen[a_name], chosen[b_name]
        same = (a[key], float(a["density_target"])) == (b[key], float(b["density_target"]))
        if a[key] == reference:
            lines.append("Judgement A keeps the dense model, which meets the fairness bound by definition: the "
                         "bound has nothing to change in this run.")
            return "\n".join(lines)
        eff = bound_effect(df, table, a, max_disparity_rise, reference)
        n_classes = len(class_columns(df))
        size = (f" ({val_size} {eff['split']} images over {n_classes} classes)" if val_size else "")
        rel = "at least" if dmax else "at most"
        test = (f"A's choice minus the dense model in {eff['split']} {D}, paired by seed: {_paired_text(col, eff)}"
                + (f" over {eff['n']} seeds" if eff["n"] >= 2 else ""))
        bound = f"the bound allows {rel} {fmt(col, eff['edge'])}"
        noise = (f"within seed noise: the bound's effect cannot be decided at this val size{size}. {test}"
                 + (f", a CI that includes the bound ({bound.removeprefix('the bound allows ')})." if eff["n"] >= 2
                    else "."))
        if same:
            if eff["decided"]:
                lines.append(f"Adding the fairness bound did not change the choice in this run: A's choice meets the "
                             f"bound beyond seed noise ({test}; {bound}).")
            else:
                lines.append(f"Adding the fairness bound left the choice unchanged in this run, but {noise}")
        else:
            change = (f"Adding the fairness bound changed the choice from {a[key]} at sparsity {a['sparsity']:.3f} "
                      f"to {b[key]} at sparsity {b['sparsity']:.3f}")
            if eff["decided"]:
                lines.append(f"{change}: A's choice exceeds the bound beyond seed noise ({test}; {bound}).")
            else:
                lines.append(f"{change}, but {noise}")
            da = paired_difference(_per_seed(df, b, col, rep, key), _per_seed(df, a, col, rep, key),
                                   lower_is_better=not dmax, value_range=metric_range(col))
            acc = paired_difference(_per_seed(df, b, "acc", rep, key), _per_seed(df, a, "acc", rep, key),
                                    lower_is_better=False, value_range=metric_range("acc"))
            lines.append(f"On {rep}: {D} {fmt(col, b[f'{rep}_{col}'], False)} instead of "
                         f"{fmt(col, a[f'{rep}_{col}'], False)}, accuracy {100 * b[f'{rep}_acc']:.1f} % instead of "
                         f"{100 * a[f'{rep}_acc']:.1f} % (B − A paired by seed: {D} {_paired_text(col, da)}, "
                         f"accuracy {_paired_text('acc', acc)}) — the value judgement's consequence, in numbers.")
    elif b_name not in chosen:
        lines.append("No front point meets judgement B's bounds (accuracy budget and disparity bound together)"
                     + (", nor judgement A's." if a_name not in chosen else "."))
    return "\n".join(lines)


def per_seed_hypervolume(df: pd.DataFrame, disparity: str = "mcd", split: str = "test", key: str = "method",
                         reference: str = "dense", sparsity_resolution: float = SPARSITY_RESOLUTION
                         ) -> pd.DataFrame:
    """Per (technique, seed): its share of the seed's pooled front and the hypervolume of its own runs
    (columns ``key``, seed, share, hv, hv_pooled); see :func:`technique_reevaluation`."""
    check_disparity_data(df, disparity)
    col, dmax = disparity_column(disparity)
    d = with_derived(_split(df, split))
    d = d[d[key] != reference].dropna(subset=["acc", col])
    ref = [HV_REFERENCE["acc"], HV_REFERENCE["sparsity"], HV_REFERENCE[col]]
    mx = [True, True, dmax]
    techniques = sorted(d[key].unique())
    per_seed = []
    for seed, g in d.groupby("seed"):
        pts = g[["acc", "sparsity", col]].to_numpy(dtype=float, copy=True)
        pts[:, 1] = sparsity_objective(pts[:, 1], sparsity_resolution)
        front = pareto.non_dominated(pts, mx)
        pooled = pareto.hypervolume(pts, ref, mx)
        for t in techniques:
            own = (g[key] == t).to_numpy()
            per_seed.append({key: t, "seed": seed, "share": float(own[front].sum() / max(front.sum(), 1)),
                             "hv": pareto.hypervolume(pts[own], ref, mx) if own.any() else 0.0,
                             "hv_pooled": pooled})
    out = pd.DataFrame(per_seed, columns=[key, "seed", "share", "hv", "hv_pooled"])
    out.attrs.update(reference=ref)
    return out


def technique_reevaluation(df: pd.DataFrame, disparity: str = "mcd", split: str = "test", key: str = "method",
                           reference: str = "dense", sparsity_resolution: float = SPARSITY_RESOLUTION,
                           per_seed: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Per technique: share of the pooled per-seed front and the hypervolume its own runs dominate.

    For each seed, every pruned run of that seed (all techniques and densities; the dense run excluded) is a
    point (accuracy ↑, sparsity ↑, disparity); the front is pooled over techniques. A technique's *share* is the
    fraction of front points that are its runs; its *hypervolume* is that of its own runs with the reference
    point :data:`HV_REFERENCE`. Mean and 95 % CI half-width over seeds, plus the hypervolume of the pooled
    front for scale. Two techniques are compared by :func:`paired_hypervolume` (paired by seed). ``per_seed``:
    :func:`per_seed_hypervolume` of the same arguments, when the caller has it (at the scale of a 10,000-model
    population, computing the per-seed fronts once for both functions matters).
    """
    ps = per_seed if per_seed is not None else per_seed_hypervolume(df, disparity, split, key, reference,
                                                                     sparsity_resolution)
    rows = []
    for t in sorted(ps[key].unique()):
        g = ps[ps[key] == t]
        share, share_ci, _, n = mean_ci(g["share"].tolist())
        hv, hv_ci, _, _ = mean_ci(g["hv"].tolist())
        rows.append({key: t, "seeds": n, "front_share": share, "front_share_ci": share_ci, "hypervolume": hv,
                     "hypervolume_ci": hv_ci, "hv_fraction_of_pooled": float((g["hv"] / g["hv_pooled"]).mean())})
    out = pd.DataFrame(rows).sort_values("hypervolume", ascending=False).reset_index(drop=True)
    out.attrs.update(disparity=disparity, split=split, reference=ps.attrs["reference"])
    return out


def paired_hypervolume(df: pd.DataFrame, a: str, b: str, disparity: str = "mcd", split: str = "test",
                       key: str = "method", reference: str = "dense",
                       sparsity_resolution: float = SPARSITY_RESOLUTION,
                       per_seed: Optional[pd.DataFrame] = None) -> dict:
    """Hypervolume of technique ``a`` minus that of ``b``, paired by seed (each seed's hypervolumes come from the
    same seed's runs): :func:`ballot_lib.metrics.paired_difference` (diff, CI, wins, n, significant, p).
    ``per_seed``: :func:`per_seed_hypervolume` of the same arguments, when the caller has it."""
    ps = per_seed if per_seed is not None else per_seed_hypervolume(df, disparity, split, key, reference,
                                                                     sparsity_resolution)
    hv = {t: dict(zip(g["seed"], g["hv"])) for t, g in ps.groupby(key)}
    return paired_difference(hv.get(a, {}), hv.get(b, {}), lower_is_better=False)


def _pm(mean: float, half: float, pct: bool = False, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    f = 100.0 if pct else 1.0
    return f"{f * mean:.{digits}f} ± {f * half:.{digits}f}" if half == half else f"{f * mean:.{digits}f}"


def _disparity_cells(values, halves, col: str) -> list[str]:
    """A disparity column's cells: points for accuracy-like disparities, 4 decimals for CWV (a variance of recalls:
    2 decimals showed every configuration as 0.03)."""
    return [_pm(m, h, col != "cwv", 2 if col != "cwv" else 4) for m, h in zip(values, halves)]


def _disparity_heading(split: str, disp: str, col: str) -> str:
    return f"{split} {disp.upper()}" + (" (pts)" if col != "cwv" else "")


def front_markdown(table: pd.DataFrame) -> str:
    """The val-front configurations as a Markdown table, reported on the report split."""
    disp, sel, rep = table.attrs["disparity"], table.attrs["select_split"], table.attrs["report_split"]
    col, _ = disparity_column(disp)
    key = table.attrs.get("key", "method")
    f = table[table["on_front"]].sort_values("sparsity")
    out = pd.DataFrame({
        "technique": f[key], "density (target)": f["density_target"].map("{:g}".format),
        "density (achieved)": f["density"].map("{:.3f}".format), "seeds": f["seeds"],
        f"{sel} acc (%)": [_pm(m, h, True) for m, h in zip(f[f"{sel}_acc"], f[f"{sel}_acc_ci"])],
        _disparity_heading(sel, disp, col): _disparity_cells(f[f"{sel}_{col}"], f[f"{sel}_{col}_ci"], col),
        f"{rep} acc (%)": [_pm(m, h, True) for m, h in zip(f[f"{rep}_acc"], f[f"{rep}_acc_ci"])],
        _disparity_heading(rep, disp, col): _disparity_cells(f[f"{rep}_{col}"], f[f"{rep}_{col}_ci"], col),
    })
    return markdown_table(out)


def reevaluation_markdown(reeval: pd.DataFrame, key: str = "method") -> str:
    out = pd.DataFrame({
        "technique": reeval[key], "seeds": reeval["seeds"],
        "share of front (%)": [_pm(m, h, True) for m, h in zip(reeval["front_share"], reeval["front_share_ci"])],
        "hypervolume": [f"{m:.4f} ± {h:.4f}" if h == h else f"{m:.4f}" for m, h in
                        zip(reeval["hypervolume"], reeval["hypervolume_ci"])],
        "of pooled HV (%)": (100 * reeval["hv_fraction_of_pooled"]).map("{:.1f}".format),
    })
    return markdown_table(out)


def hurt_markdown(counts: pd.DataFrame, key: str = "method", alpha: float = 0.05) -> str:
    """:func:`hurt_counts` (made with ``alpha``) as Markdown (with its ``collapsed_seeds`` column when flagged by
    :func:`flag_collapsed`)."""
    counts = counts.assign(density_target=counts["density_target"].map("{:g}".format))
    out = counts.drop(columns=["collapsed"], errors="ignore").rename(columns={
        key: "technique", "density_target": "density (target)", "hurt": "classes hurt (adjusted)",
        "hurt_unadjusted": f"p < {alpha:g} unadjusted", "collapsed_seeds": "collapsed seeds"})
    return markdown_table(out)


def tables(df: pd.DataFrame, disparity: str = "mcd", correction: str = "bh", key: str = "method",
           alpha: float = 0.05) -> str:
    """All Markdown tables of notebook 04 from a results DataFrame (used by ``python -m ballot_lib.population``);
    ``alpha``: the significance level of the hurt-class tests."""
    check_disparity_data(df, disparity)  # before the other tables' work
    tests = hurt_classes(df, correction=correction, key=key, alpha=alpha)
    collapsed = collapsed_configurations(df, key=key)
    excess = flag_collapsed(excess_summary(excess_change(df, key=key), key=key), collapsed, key)
    counts = flag_collapsed(hurt_counts(tests, key, alpha), collapsed, key)
    table = pareto_table(df, disparity, key=key)
    reeval = technique_reevaluation(df, disparity, key=key)
    n_pruned = df.loc[(df[key] != "dense") & (df["split"] == "test"), "run_id"].nunique()
    lines = [f"Population: {n_pruned} pruned runs over {df.loc[df[key] != 'dense', key].nunique()} techniques, "
             f"{df['seed'].nunique()} seeds.", "",
             "### Most hurt class per configuration (mean excess change δ_c − δ, test, points)", "",
             markdown_table(excess[[key, "density_target", "seeds", "collapsed_seeds", "most_hurt_class"]].assign(
                 density_target=excess["density_target"].map("{:g}".format),
                 most_hurt_class=[f"{c}" + (f" (tied with {t})" if t else "") for c, t in
                                  zip(excess["most_hurt_class"], excess.get("most_hurt_tied_with", [""] * len(excess)))],
                 most_hurt_excess_pts=100 * excess["most_hurt_excess"]).rename(columns={
                     key: "technique", "density_target": "density (target)", "collapsed_seeds": "collapsed seeds",
                     "most_hurt_class": "most hurt class", "most_hurt_excess_pts": "its excess change (points)"}),
                 floatfmt=".2f"), "",
             f"`collapsed seeds`: seeds whose run keeps less than {100 * COLLAPSE:.0f} % of its same-seed dense "
             "run's balanced-accuracy gain over chance (1/C) on val; such a configuration's per-class changes and "
             "tests measure the "
             "collapse, not who pays.", "",
             f"### Classes significantly hurt (Welch t-test across seeds, {correction} correction, α = {alpha:g})", "",
             hurt_markdown(counts, key, alpha), "",
             who_pays_reading(excess, counts, key, correction, alpha), "",
             f"### Pareto front (accuracy ↑, sparsity ↑, {disparity.upper()} "
             f"{'↑' if DISPARITIES[disparity][1] else '↓'}) chosen on val, reported on test", "",
             front_markdown(table), "",
             "### Technique re-evaluation (per-seed pooled fronts on test; mean ± 95 % CI over seeds)", "",
             reevaluation_markdown(reeval, key)]
    return "\n".join(lines)


def store_tables(results_dir=None, **kwargs: Any) -> Optional[str]:
    """The population tables (markdown, :func:`tables`) of every population a results store holds, else None.

    A shared store (the suite's) holds dense runs of other experiments too: one population per experiment (data,
    model, training recipe: the ``data.``/``model.``/``train.`` columns), each against its own dense runs."""
    from .methods.prune_responsibly import TECHNIQUES
    from .results import load_results

    df = load_results(results_dir)
    if df.empty or not df["method"].isin(TECHNIQUES).any():
        return None
    ident = [c for c in df.columns if c.startswith(("data.", "model.", "train."))]
    key = pd.Series([repr(t) for t in df[ident].itertuples(index=False)], index=df.index)
    out = []
    for k in sorted(set(key[df["method"].isin(TECHNIQUES)])):
        part = df[(key == k) & df["method"].isin(("dense",) + tuple(TECHNIQUES))]
        title = f"{part['dataset'].iloc[0]} / {part['model'].iloc[0]}"
        out.append((title, tables(part, **kwargs)))
    if len(out) == 1:
        return out[0][1]
    return "\n\n".join(f"#### {title}\n\n{text}" for title, text in out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ballot_lib.population RESULTS_DIR [--disparity mcd] [--correction bh]``: print the tables."""
    ap = argparse.ArgumentParser(prog="python -m ballot_lib.population", description=main.__doc__)
    ap.add_argument("results_dir", help="results store of notebook 04 (its results_dir)")
    ap.add_argument("--disparity", default="mcd", choices=sorted(DISPARITIES))
    ap.add_argument("--correction", default="bh", choices=CORRECTIONS)
    args = ap.parse_args(argv)
    from .results import ResultsError

    try:
        text = store_tables(args.results_dir, disparity=args.disparity, correction=args.correction)
    except (ValueError, ResultsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if text is None:
        print(f"no Prune Responsibly population in {args.results_dir}")
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The paper's comparison (notebook 03): Ballot against Dense, MP, LTH, SafeCompress and FairScratch, made fair.

A comparison is fair only when the methods share θ0, data order, compute (stated) **and the checkpoint-selection
rule**. Ballot's refined training picks its checkpoint on val; the baselines, as published, take the last epoch.
This module therefore builds every method twice — with the last epoch (``select="last"``) and with the same val
rule (``select="val_rule"``) — plus Ballot's controls:

* **Ballot plain**: Ballot's mask, trained like LTH (no refined training, last epoch): the vote alone;
* **Ballot plain +val**: the vote with the val rule;
* **Ballot η=0**: the vote without the fairness gradient (refined training as Ballot).

so that Ballot − LTH decomposes into the *vote* (Ballot plain − LTH) and the *selection* (Ballot − Ballot plain),
each with paired CIs. The tables here are computed from the tidy frame of
:func:`ballot_lib.results.load_results` / :func:`ballot_lib.methods.run_grid` (column ``variant`` = the labels
below), one row per (run, split); a *setting* is (dataset, model, density).

Improvement of A over B (the paper's headline form, SPEC §5, a reconstruction): the mean over settings and over
{CWV, MCD} of (F_B − F_A)/F_B × 100. It explodes when a baseline's CWV is near 0 (digits at high density), so a
**robust form** is reported beside it: the pooled ratio 100 × (ΣF_B − ΣF_A)/ΣF_B over settings, averaged over
the two metrics. Both come with 95 % CIs over seeds (each seed's improvement over all settings is one unit).

**Collapsed runs.** A sparse run that loses most of its accuracy (at high sparsity, training from θ0 can end near
chance on some seeds) also has extreme CWV/MCD, and a paired difference against it measures the collapse, not
fairness. :func:`collapsed_runs` names every run that keeps less than :data:`COLLAPSE` of its dense run's
balanced-accuracy skill over chance (same dataset, model and seed), decided on the val split so that what a
comparison leaves out is not chosen on test; the tables count them per row (column ``collapsed``), the
improvement-% and the decomposition leave their settings out (and say how many), and the reading lists them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .analysis import COLLAPSE, collapsed_runs, lower_is_better, metric_range  # noqa: F401 (collapse rule: re-exported)
from .analysis import CORRECTION_NAMES
from .checks import check_int
from .metrics import adjust_pvalues, mean_ci, paired_difference, seed_mean_test
from .methods import Variant

SETTING = ["dataset", "model", "density_target"]

#: The baselines of the paper, by label -> method name. SafeCompress and FairScratch train from θ0 only (T epochs
#: of the dense recipe, against the 2T of the methods that start from a trained dense network); their "2T"
#: variants train twice as long (:data:`BASELINE_OPTIONS`), so that Ballot is also compared at equal compute.
BASELINES = {"MP": "mp", "LTH": "lth", "SafeCompress": "safecompress", "FairScratch": "fairscratch",
             "SafeCompress 2T": "safecompress", "FairScratch 2T": "fairscratch"}
MATCHED = " 2T"
#: Options that define a baseline label beyond its method (the compute-matched variants).
BASELINE_OPTIONS = {"SafeCompress" + MATCHED: {"budget": 2.0}, "FairScratch" + MATCHED: {"budget": 2.0}}
#: The paper's improvements of Ballot over each baseline (fairness, mean over CWV and MCD), in percent.
PAPER_IMPROVEMENT = {"MP": 38.00, "LTH": 33.91, "SafeCompress": 17.96, "FairScratch": 35.82}
SELECTED = " +val"
#: Multiple-comparison correction over the paired tests of one comparison table (every baseline, setting and
#: metric of the table is one family): Holm–Bonferroni, which keeps the family-wise error at 5 %.
FAMILY_CORRECTION = "holm"
#: The class metrics every table shows, and the group metrics it adds where the data has a sensitive attribute
#: (:func:`metric_list`). A comparison table tests, shows and corrects over all of them alike: the family of
#: :func:`adjust_table` is exactly the cells :func:`markdown` shows, in notebook 03, notebook 05 and papers/.
CLASS_METRICS = ("acc", "cwv", "mcd")
GROUP_METRICS = ("dp_gap", "eo_gap", "group_acc_gap")
GROUP_NAMES = {"dp_gap": "DP gap", "eo_gap": "EO gap", "group_acc_gap": "group-accuracy gap"}


@dataclass(frozen=True)
class Table:
    """Which variants a comparison table pairs against which Ballot variant, and what rule it applies."""

    title: str
    ballot: str
    baselines: tuple[str, ...]
    rule: str


def baselines_for(compute_matched: bool = True) -> list[str]:
    """The baseline labels notebook 03 runs: every baseline whose method is registered, the compute-matched "2T"
    variants only with ``compute_matched``."""
    from .methods import METHODS

    return [b for b, m in BASELINES.items() if m in METHODS and (compute_matched or not b.endswith(MATCHED))]


#: The methods that rewind the kept weights to θk after selecting their mask (``rewind_epoch``): notebook 03's
#: ``rewind_epoch`` applies to all of them alike, so the comparison stays paired on the rewind point.
REWINDING = ("lth", "ballot")


def rewound(ballot_candidates: Mapping[str, Mapping[str, Any]], rewind_epoch: int = 0) -> dict[str, dict]:
    """Notebook 03's Ballot candidates with the comparison's rewind point θk (``rewind_epoch``; 0 = θ0, the
    original LTH). A candidate may not set its own ``rewind_epoch`` to another value: LTH rewinds to the same
    point, and a Ballot rewinding elsewhere would mix the rewind point into the comparison."""
    return {name: _rewind(opts, rewind_epoch, f"ballot_candidates[{name!r}]")
            for name, opts in ballot_candidates.items()}


def _rewind(opts: Mapping[str, Any], rewind_epoch: int, where: str) -> dict:
    opts = dict(opts)
    own = opts.get("rewind_epoch", rewind_epoch)
    if own != rewind_epoch:
        raise ValueError(f"{where} sets rewind_epoch={own!r} but the comparison's rewind_epoch is {rewind_epoch}: set "
                         "the notebook's rewind_epoch instead (it applies to LTH and Ballot alike)")
    if rewind_epoch:
        opts["rewind_epoch"] = rewind_epoch
    return opts


def matched_budget(budget: float, rewind_epoch: int, epochs: int) -> float:
    """The ``budget`` (in units of the recipe's T epochs) that trains as long as Ballot rewound to θk: 2T − k
    epochs for the "2T" variants, i.e. ``budget − k/T`` (``budget_recipe`` rounds budget × T to whole epochs)."""
    check_int("rewind_epoch", rewind_epoch, 0, epochs, high_open=True, hint=f" (train.epochs = {epochs})")
    return float(budget) - rewind_epoch / epochs


def comparison_variants(ballot_options: Optional[Mapping] = None, baselines: Iterable[str] = tuple(BASELINES),
                        baseline_options: Optional[Mapping[str, Mapping]] = None,
                        rewind_epoch: int = 0, epochs: Optional[int] = None) -> list[Variant]:
    """Dense, each baseline with the last epoch and with the val rule (the val rule first where that run's
    training serves the last-epoch run: :func:`val_rule_first`), Ballot and its three controls.

    ``rewind_epoch`` k > 0 rewinds every method of :data:`REWINDING` (LTH and Ballot) to θk instead of θ0 ("late
    rewinding"); ``ballot_options`` must then not name another rewind point (:func:`rewound`). Ballot then trains
    2T − k epochs (dense run included): given the setting's ``epochs`` T, the compute-matched variants
    (:data:`BASELINE_OPTIONS`, "2T") train 2T − k too (``budget`` 2 − k/T), so they stay matched; without
    ``epochs`` they keep 2T (and the comparison table says the compute differs). The "+val" variants pick their
    epoch by Ballot's rule, with ``ballot_options``' ``select_eps`` where it names one."""
    ballot_options = _rewind(ballot_options or {}, rewind_epoch, "ballot_options")
    baseline_options = {k: dict(v) for k, v in (baseline_options or {}).items()}
    out = [Variant("Dense", "dense", {})]
    for label in baselines:
        opts = {**BASELINE_OPTIONS.get(label, {}), **baseline_options.get(label, {})}
        if rewind_epoch and BASELINES[label] in REWINDING:
            opts["rewind_epoch"] = rewind_epoch
        if rewind_epoch and epochs and "budget" in BASELINE_OPTIONS.get(label, {}) \
                and "budget" not in baseline_options.get(label, {}):
            opts["budget"] = matched_budget(BASELINE_OPTIONS[label]["budget"], rewind_epoch, epochs)
        # The same val rule as Ballot's: its select_eps unless the baseline's own options name one. The last-epoch
        # variant carries it too, so that the two runs differ only in `select` and one training serves both.
        eps = {"select_eps": ballot_options["select_eps"]} if "select_eps" in ballot_options else {}
        last = Variant(label, BASELINES[label], {**eps, **opts, "select": "last"})
        if not selectable(BASELINES[label]):
            out.append(last)
            continue
        val = Variant(label + SELECTED, BASELINES[label], {**eps, **opts, "select": "val_rule"})
        # One training serves both: the twin that stores what the other needs runs first (a method whose mask
        # changes during training stores its final mask with its val-rule run; others derive the val-rule run).
        out += [val, last] if val_rule_first(BASELINES[label]) else [last, val]
    out += [
        Variant("Ballot", "ballot", {**ballot_options, "refined": True}),
        Variant("Ballot plain", "ballot", {**ballot_options, "refined": False, "select": "last"}),
        Variant("Ballot plain" + SELECTED, "ballot", {**ballot_options, "refined": False, "select": "val_rule"}),
        Variant("Ballot η=0", "ballot", {**ballot_options, "refined": True, "eta": 0.0}),
    ]
    return out


def val_rule_first(method: str) -> bool:
    """Whether ``method``'s val-rule run must train before its last-epoch run for one training to serve both
    (its config sets ``VAL_RULE_FINAL_MASK``: :func:`ballot_lib.methods.base.val_rule_twin`)."""
    from .methods import METHODS

    return bool(getattr(METHODS.get(method).config, "VAL_RULE_FINAL_MASK", False))


def selectable(method: str) -> bool:
    """Whether ``method`` offers the val checkpoint rule (a method whose config sets ``NO_VAL_RULE`` refuses it;
    SafeCompress and FairScratch, whose masks change during training, offer it: they store the selected epoch's
    mask)."""
    from .methods import METHODS

    return getattr(METHODS.get(method).config, "NO_VAL_RULE", None) is None


def tables(baselines: Sequence[str]) -> list[Table]:
    """The two fair tables: no method selects on val, and every method that can selects on val with the same
    rule (every built-in method can; one whose config sets ``NO_VAL_RULE`` keeps its last epoch, and the table's
    ``selection`` column says so)."""
    return [
        Table("no checkpoint selection (last epoch for every method)", "Ballot plain", tuple(baselines), "last"),
        Table("selection-matched (every method that can picks its epoch with the val rule)", "Ballot",
              tuple(b + SELECTED if selectable(BASELINES.get(b, b)) else b for b in baselines), "val_rule"),
    ]


def _test(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    return df[df["split"] == split]


def _settings(d: pd.DataFrame) -> list[tuple]:
    sparse = d[d["variant"] != "Dense"]
    return sorted({tuple(r) for r in sparse[SETTING].itertuples(index=False)}, key=lambda t: (t[0], t[1], -t[2]))


def _pick(d: pd.DataFrame, variant: str, setting: tuple) -> pd.DataFrame:
    ds, model, dens = setting
    part = d[(d["variant"] == variant) & (d["dataset"] == ds) & (d["model"] == model)]
    if variant != "Dense":
        part = part[np.isclose(part["density_target"], dens)]
    return part.set_index("seed")


def metric_list(df: pd.DataFrame, base: Sequence[str] = ("acc", "cwv", "mcd")) -> list[str]:
    """The headline metrics plus the group metrics the data has (DP/EO gap on a binary target with groups)."""
    extra = [m for m in GROUP_METRICS if m in df.columns and df[m].notna().any()]
    return list(base) + extra


def comparison_table(df: pd.DataFrame, table: Table, metrics: Optional[Sequence[str]] = None,
                     split: str = "test") -> pd.DataFrame:
    """One row per (setting, method): mean of each metric, compute, and Ballot − method paired by seed.

    Columns: dataset, model, density, method, seeds, collapsed (seeds whose run collapsed, see
    :func:`collapsed_runs`), compute_epochs, selection, ``<m>`` (mean), and for each baseline
    ``d_<m>``/``lo_<m>``/``hi_<m>`` (Ballot − baseline with its 95 % CI), ``wins_<m>`` (seeds where Ballot is
    better), ``sig_<m>`` (the CI excludes 0), ``p_<m>`` (the paired t-test's p-value) and ``padj_<m>`` /
    ``sigadj_<m>``: the p-value adjusted over all paired tests of the table (:data:`FAMILY_CORRECTION`) and
    whether it stays below 0.05. Each cell alone is a 5 % test; a table of dozens of them finds "significant"
    differences by chance, which the adjusted columns guard against. ``metrics`` defaults to :func:`metric_list`
    (the group metrics included where the data has them): every consumer (notebook 03, :func:`paper_comparison`
    for notebook 05 and papers/) builds the table this way, so the family is the same everywhere, and
    :func:`markdown` shows every cell of it.
    """
    d = _test(df, split)
    metrics = list(metrics or metric_list(d))
    gone = collapsed_runs(df).groupby(["dataset", "model", "density", "variant"]).size()  # decided on val
    rows = []
    for setting in _settings(d):
        ref = _pick(d, table.ballot, setting)
        for method in (table.ballot, *table.baselines, "Dense"):
            part = _pick(d, method, setting)
            if part.empty:
                continue
            row = {"dataset": setting[0], "model": setting[1], "density": setting[2], "method": method,
                   "seeds": int(part.index.nunique()),
                   "collapsed": int(gone.get((*setting, method), 0)),  # never "Dense": collapsed_runs skips it
                   "compute_epochs": float(part["compute_epochs"].mean()) if "compute_epochs" in part else math.nan,
                   "selection": "val_rule" if (method.endswith(SELECTED) or method in ("Ballot", "Ballot η=0"))
                   else "last"}
            for m in metrics:
                if m not in part:
                    continue
                row[m] = float(part[m].mean())
                if method not in (table.ballot, "Dense") and not ref.empty:
                    res = paired_difference(ref[m].to_dict(), part[m].to_dict(),
                                            lower_is_better=lower_is_better(m), value_range=metric_range(m))
                    row.update({f"d_{m}": res["diff"], f"lo_{m}": res["ci_low"], f"hi_{m}": res["ci_high"],
                                f"wins_{m}": res["wins"], f"n_{m}": res["n"], f"sig_{m}": res["significant"],
                                f"p_{m}": res["p"]})
            rows.append(row)
    return adjust_table(pd.DataFrame(rows))


def adjust_table(table: pd.DataFrame, correction: str = FAMILY_CORRECTION, alpha: float = 0.05) -> pd.DataFrame:
    """Add ``padj_<m>`` and ``sigadj_<m>`` to a comparison table: every ``p_<m>`` of the table (all baselines,
    settings and metrics) adjusted as one family (:func:`ballot_lib.metrics.adjust_pvalues`); rows without a
    test (Ballot's own row, Dense, fewer than 2 seeds) stay NaN and are not counted as tests."""
    cols = [c for c in table.columns if c.startswith("p_")]
    if not cols:
        return table
    out = table.copy()
    flat = out[cols].to_numpy(dtype=float).ravel()
    adj = adjust_pvalues(flat, correction).reshape(len(out), len(cols))
    for j, c in enumerate(cols):
        m = c[2:]
        out[f"padj_{m}"] = adj[:, j]
        out[f"sigadj_{m}"] = pd.Series([None if np.isnan(q) else bool(q < alpha) for q in adj[:, j]],
                                       index=out.index, dtype=object)
    return out


def family_size(table: pd.DataFrame) -> int:
    """The number of paired tests in a comparison table (the family :func:`adjust_table` corrects over)."""
    cols = [c for c in table.columns if c.startswith("p_")]
    return int(table[cols].notna().to_numpy().sum()) if cols else 0


def win_counts(table: pd.DataFrame, metrics: Sequence[str] = ("acc", "cwv", "mcd"),
               adjusted: bool = False) -> pd.DataFrame:
    """Per baseline and metric: settings where Ballot is significantly better, significantly worse, or neither;
    with ``adjusted``, significance after the table's multiple-comparison correction (``sigadj_<m>``)."""
    sig = "sigadj" if adjusted else "sig"
    rows = []
    for method, g in table[table["method"].isin(table["method"].unique())].groupby("method", sort=False):
        if f"d_{metrics[0]}" not in g or g[f"d_{metrics[0]}"].isna().all():
            continue
        for m in metrics:
            if f"d_{m}" not in g:
                continue
            gm = g[g[f"d_{m}"].notna()]  # settings where the two were both run: the only ones compared
            if f"{sig}_{m}" not in gm:
                raise ValueError(f"the table has no column {sig}_{m}: build it with comparison_table (or "
                                 "adjust_table) to count adjusted wins")
            better = (gm[f"{sig}_{m}"] == True) & ((gm[f"d_{m}"] < 0) if lower_is_better(m) else (gm[f"d_{m}"] > 0))  # noqa: E712
            worse = (gm[f"{sig}_{m}"] == True) & ~better  # noqa: E712
            rows.append({"baseline": method, "metric": m, "settings": len(gm), "Ballot better": int(better.sum()),
                         "Ballot worse": int(worse.sum()), "no significant difference": int(len(gm) - better.sum()
                                                                                            - worse.sum())})
    return pd.DataFrame(rows)


def _per_seed_fairness(d: pd.DataFrame, variant: str, settings: Sequence[tuple], metric: str) -> pd.DataFrame:
    """Seeds × settings table of ``metric`` for ``variant`` (NaN where missing)."""
    cols = {}
    for s in settings:
        part = _pick(d, variant, s)
        cols[s] = part[metric] if not part.empty else pd.Series(dtype=float)
    return pd.DataFrame(cols)


def _kept_settings(settings: Sequence[tuple], exclude: Optional[pd.DataFrame], variants) -> list[tuple]:
    """``settings`` without those where one of ``variants`` has a run in ``exclude`` (collapsed runs,
    :func:`collapsed_runs`: columns dataset, model, density, variant)."""
    if exclude is None or exclude.empty:
        return list(settings)
    hit = exclude[exclude["variant"].isin(list(variants))]
    gone = {(ds, m, float(dn)) for ds, m, dn in hit[["dataset", "model", "density"]].itertuples(index=False)}
    return [st for st in settings if not any(st[0] == g[0] and st[1] == g[1] and np.isclose(st[2], g[2])
                                             for g in gone)]


def _at_most_100(x: float) -> float:
    """A CI end of an improvement-% cut at 100 % (:func:`improvement_table`); NaN stays NaN."""
    return 100.0 if x > 100 else x


def improvement_table(df: pd.DataFrame, a: str, baselines: Mapping[str, str], split: str = "test",
                      metrics: Sequence[str] = ("cwv", "mcd"), exclude: Optional[pd.DataFrame] = None
                      ) -> pd.DataFrame:
    """Improvement (%) of variant ``a`` over each baseline (label -> variant name), paper form and robust form.

    Paper form: mean over settings and metrics of (F_B − F_A)/F_B × 100, on seed means (``paper``) and per seed
    (CI over seeds). Robust form: per metric 100 × (ΣF_B − ΣF_A)/ΣF_B over settings, averaged over metrics.
    ``exclude``: collapsed runs (:func:`collapsed_runs`); a setting where ``a`` or the baseline collapsed under
    any seed is left out of that baseline's row (a model near chance has a small CWV, so a collapse would pass for
    a fairness gain); columns ``settings`` and ``left out`` count the settings used and dropped.

    CWV and MCD are never negative, so neither form can exceed 100 % (a method with F_A = 0): the upper ends of
    the seeds' Student-t CIs are cut there (a few seeds with one collapsed run can reach beyond it); the lower
    ends are unbounded (a method can be many times less fair than the baseline).
    """
    d = _test(df, split)
    all_settings = _settings(d)
    rows = []
    for label, b in baselines.items():
        settings = _kept_settings(all_settings, exclude, (a, b))
        per_seed_paper: dict = {}
        per_seed_robust: dict = {}
        point_terms: list = []
        for m in metrics:
            A, B = _per_seed_fairness(d, a, settings, m), _per_seed_fairness(d, b, settings, m)
            seeds = A.index.intersection(B.index)
            A, B = A.loc[seeds], B.loc[seeds]
            ratio = (B - A) / B.where(B != 0)
            for s in seeds:
                per_seed_paper.setdefault(s, []).extend(ratio.loc[s].dropna().tolist())
                ok = A.loc[s].notna() & B.loc[s].notna()
                tot = B.loc[s][ok].sum()
                if tot != 0:
                    per_seed_robust.setdefault(s, []).append((tot - A.loc[s][ok].sum()) / tot)
            mA, mB = A.mean(), B.mean()
            point_terms += [((fb - fa) / fb) for fa, fb in zip(mA, mB) if fb != 0 and not (math.isnan(fa) or math.isnan(fb))]
        paper_seeds = [100 * float(np.mean(v)) for v in per_seed_paper.values() if v]
        robust_seeds = [100 * float(np.mean(v)) for v in per_seed_robust.values() if v]
        pm, ph, _, n = mean_ci(paper_seeds)
        rm, rh, _, _ = mean_ci(robust_seeds)
        # the robust form's one-sample t-test over seeds (the same Student t as its CI): adjust_improvements
        # corrects these over the improvement rows a run reads
        rp = seed_mean_test(robust_seeds)["p"] if len(robust_seeds) > 1 else math.nan
        rows.append({"baseline": label, "paper (seed means)": 100 * float(np.mean(point_terms)) if point_terms
                     else math.nan, "paper": pm, "paper_lo": pm - ph, "paper_hi": _at_most_100(pm + ph),
                     "robust": rm, "robust_lo": rm - rh, "robust_hi": _at_most_100(rm + rh), "p": rp, "seeds": n, "settings": len(settings),
                     "left out": len(all_settings) - len(settings),
                     "paper's number": PAPER_IMPROVEMENT.get(label.replace(SELECTED, "").replace(MATCHED, ""),
                                                             math.nan)})
    out = pd.DataFrame(rows)
    if exclude is not None and not exclude.empty and len(out) and (out["left out"] > 0).any():
        # The same rows over every setting: what leaving the collapsed settings out changed.
        full = improvement_table(df, a, baselines, split, metrics)
        for c in ("robust", "robust_lo", "robust_hi"):
            out[f"{c} (all settings)"] = full[c].to_numpy()
    return out


def adjust_improvements(improvements: Mapping[str, pd.DataFrame], correction: str = FAMILY_CORRECTION,
                        alpha: float = 0.05) -> dict[str, pd.DataFrame]:
    """The improvement tables (title -> :func:`improvement_table`) with ``padj``/``sigadj``: the robust form's
    p-values of every row of every table given, adjusted as **one** family (:data:`FAMILY_CORRECTION`). A run
    passes the rows it judges (notebook 03: no selection and selection-matched; :func:`paper_improvement` the
    same two), so "significantly fairer by this pooled measure" is decided after the correction."""
    keys = list(improvements)
    flat = np.concatenate([improvements[k]["p"].to_numpy(dtype=float) if "p" in improvements[k] else
                           np.full(len(improvements[k]), np.nan) for k in keys]) if keys else np.array([])
    adj = adjust_pvalues(flat, correction) if len(flat) else flat
    out, i = {}, 0
    for k in keys:
        t = improvements[k].copy()
        q = adj[i:i + len(t)]
        i += len(t)
        t["padj"] = q
        t["sigadj"] = pd.Series([None if np.isnan(x) else bool(x < alpha) for x in q], index=t.index, dtype=object)
        t.attrs["family"] = int(np.sum(~np.isnan(flat)))
        out[k] = t
    return out


def improvement_family_size(improvements: Mapping[str, pd.DataFrame]) -> int:
    """The number of improvement rows tested as one family (:func:`adjust_improvements`)."""
    return int(sum(t["p"].notna().sum() for t in improvements.values() if "p" in t))


#: The parts of :func:`decomposition`: label -> (A, B) of the paired difference A − B. The first three add up
#: (total = vote + selection); the last two are controls: Ballot against LTH under the same checkpoint rule, and
#: the fairness term of the vote (Ballot against its η = 0 twin, same refined training).
DECOMPOSITION_PARTS = {"total (Ballot − LTH)": ("Ballot", "LTH"),
                       "vote (Ballot plain − LTH)": ("Ballot plain", "LTH"),
                       "checkpoint selection (Ballot − Ballot plain)": ("Ballot", "Ballot plain"),
                       "selection-matched total (Ballot − LTH +val)": ("Ballot", "LTH" + SELECTED),
                       "fairness term (Ballot − Ballot η=0)": ("Ballot", "Ballot η=0")}


DECOMPOSITION_COLUMNS = ["dataset", "model", "density", "metric", "part", "diff", "ci_low", "ci_high", "n", "wins",
                         "significant", "p", "settings", "left out"]


def decomposition(df: pd.DataFrame, metrics: Sequence[str] = ("acc", "cwv", "mcd"), split: str = "test",
                  exclude: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Ballot − LTH = vote (Ballot plain − LTH) + checkpoint selection with refined training (Ballot − Ballot
    plain), and two controls (:data:`DECOMPOSITION_PARTS`): Ballot − LTH +val (both pick their checkpoint on val)
    and Ballot − Ballot η=0 (the fairness term of the vote).

    One row per (setting, metric, part) and a pooled row per (metric, part) whose unit is the seed (its mean over
    settings); every difference is paired by seed with its 95 % CI. ``exclude``: collapsed runs
    (:func:`collapsed_runs`); a setting where any variant of the decomposition collapsed under any seed is left
    out of every part (so the parts still add up), as :func:`improvement_table` does; the pooled rows count the
    settings used (``settings``) and left out (``left out``).
    """
    d = _test(df, split)
    all_settings = _settings(d)
    settings = _kept_settings(all_settings, exclude, {v for pair in DECOMPOSITION_PARTS.values() for v in pair})
    rows: list = []
    pooled: dict = {}
    for s in settings:
        for m in metrics:
            for part, (x, y) in DECOMPOSITION_PARTS.items():
                X, Y = _pick(d, x, s), _pick(d, y, s)
                if X.empty or Y.empty or m not in X:
                    continue
                res = paired_difference(X[m].to_dict(), Y[m].to_dict(), lower_is_better(m),
                                        value_range=metric_range(m))
                rows.append({"dataset": s[0], "model": s[1], "density": s[2], "metric": m, "part": part, **res})
                for seed in X.index.intersection(Y.index):
                    pooled.setdefault((m, part), {}).setdefault(seed, []).append(float(X.loc[seed, m] - Y.loc[seed, m]))
    for (m, part), by_seed in pooled.items():
        diffs = [float(np.mean(v)) for v in by_seed.values()]
        wins = sum((x < 0) if lower_is_better(m) else (x > 0) for x in diffs)
        rows.append({"dataset": "pooled", "model": "", "density": math.nan, "metric": m, "part": part,
                     **seed_mean_test(diffs, value_range=metric_range(m)), "wins": wins,
                     "settings": len(settings), "left out": len(all_settings) - len(settings)})
    out = pd.DataFrame(rows, columns=DECOMPOSITION_COLUMNS)
    out.attrs.update(settings=len(settings), left_out=len(all_settings) - len(settings))
    return out


#: What a difference of each metric is measured in, as :func:`decomposition` stores it (not scaled): accuracy and
#: class recalls are fractions of 1, so their differences are fractions where 0.01 is one percentage point; CWV is
#: the variance of the class recalls around accuracy (:func:`ballot_lib.metrics.cwv`), a squared fraction that
#: has no points.
DIFFERENCE_UNITS = {"acc": "fraction (0.01 = 1 pt of accuracy)", "mcd": "fraction (0.01 = 1 pt of class recall)",
                    "cwv": "variance of class recall (fraction², not pts)",
                    "worst_group_acc": "fraction (0.01 = 1 pt of accuracy)",
                    "group_acc_gap": "fraction (0.01 = 1 pt of accuracy)",
                    "dp_gap": "fraction (0.01 = 1 pt of positive rate)",
                    "eo_gap": "fraction (0.01 = 1 pt of true-positive rate)"}
#: Notebook 03's names of :func:`decomposition`'s columns in :func:`decomposition_view`.
DECOMPOSITION_VIEW_NAMES = {"diff": "Δ = A − B (unit)", "ci_low": "95 % CI low (unit)",
                            "ci_high": "95 % CI high (unit)", "n": "seeds", "wins": "seeds A better", "p": "p (paired)", "settings": "settings used"}


#: What a difference of each metric is in once :func:`decomposition_view` shows it in points (``points=True``):
#: accuracy-like metrics ×100, percentage points; CWV, a variance, stays as stored.
POINT_UNITS = {"acc": "pts of accuracy", "mcd": "pts of class recall",
               "cwv": DIFFERENCE_UNITS["cwv"], "worst_group_acc": "pts of accuracy",
               "group_acc_gap": "pts of accuracy", "dp_gap": "pts of positive rate",
               "eo_gap": "pts of true-positive rate"}


def decomposition_view(decomp: pd.DataFrame, points: bool = False) -> pd.DataFrame:
    """The pooled rows of :func:`decomposition` as notebook 03 shows them: a ``unit`` column saying what each
    row's difference is measured in (the metric decides it, so one column holds several units), and the columns
    named by what they hold (:data:`DECOMPOSITION_VIEW_NAMES`; a part "A − B" reads as first variant minus
    second), numbered from 0. By default the values are unchanged (not scaled; units :data:`DIFFERENCE_UNITS`);
    with ``points`` the differences and CIs of accuracy-like metrics are ×100, percentage points as the reading,
    the decomposition figure and notebook 05 state them (units :data:`POINT_UNITS`; CWV stays as stored). The
    table itself keeps its column names (:data:`DECOMPOSITION_COLUMNS`: the reading and notebook 05 use them)."""
    from .analysis import POINT_METRICS

    d = decomp[decomp["dataset"] == "pooled"].drop(columns=["dataset", "model", "density"]).reset_index(drop=True)
    units = POINT_UNITS if points else DIFFERENCE_UNITS
    if points:
        pts = d["metric"].isin(POINT_METRICS)
        for c in ("diff", "ci_low", "ci_high"):
            d[c] = d[c].astype(float).where(~pts, d[c].astype(float) * 100)
    d.insert(d.columns.get_loc("metric") + 1, "unit",
             [units.get(m, "the metric's own unit") for m in d["metric"]])
    for c in ("settings", "left out"):  # counts (NaN only on per-setting rows, which are not shown)
        if c in d:
            d[c] = d[c].astype("Int64")
    return d.rename(columns=DECOMPOSITION_VIEW_NAMES)


def decomposition_caption(decomp: pd.DataFrame, points: bool = False) -> str:
    """The caption of :func:`decomposition_view` (with the same ``points``), from the table: what is paired and
    pooled, over how many seeds and settings, and the unit of every metric in it."""
    d = decomp[decomp["dataset"] == "pooled"]
    if d.empty:
        return ("No pooled decomposition: " + (f"every one of the {decomp.attrs['left_out']} settings holds "
                                               "collapsed runs." if decomp.attrs.get("left_out") else "no rows."))
    seeds = sorted({int(x) for x in d["n"].dropna()})
    n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    settings, left = int(d["settings"].max()), int(d["left out"].max())
    unit_of = POINT_UNITS if points else DIFFERENCE_UNITS
    units = "; ".join(f"{m.upper()}: {unit_of.get(m, 'its own unit')}" for m in dict.fromkeys(d["metric"]))
    scale = ("Δ and its CI are in percentage points for accuracy and MCD (×100 of the stored fractions, as in the "
             "figure below and notebook 05); CWV, a variance of class recalls, has no points and stays as stored — "
             if points else "Δ and its CI are in the metric's own unit, unscaled — ")
    return (f"Each row is A − B for the part named (test split), paired by seed and averaged over {settings} "
            f"setting{'s' if settings != 1 else ''} per seed" + (f" ({left} left out: collapsed runs)" if left else "")
            + f"; mean and 95 % CI over {n} seeds. {scale}{units}. "
            "Higher is better for accuracy, lower for CWV and MCD; `seeds A better` counts the seeds where A does "
            "better.")


def choose_on_val(df: pd.DataFrame, candidates: Sequence[str], eps: float = 0.01,
                  acc: str = "acc", fair: str = "mcd", reference: Optional[str] = None) -> tuple[str, pd.DataFrame]:
    """Pick one option set on the val split, pooled over settings with the seed as the unit.

    Per candidate and seed: the mean over settings of val accuracy and val ``fair``; then per candidate the mean
    over seeds. With a ``reference`` (notebook 03: the library default), it is kept unless another candidate is
    **significantly better**: its pooled val ``fair``, paired by seed against the reference, is lower with a
    p-value below 0.05 after Holm's correction over the other candidates (paired t-test; the sign-flip test when
    every seed moved alike), and its pooled val accuracy is at most ``eps`` below the reference's; among several
    such, the lowest pooled val ``fair``. (As notebook 02's ablation: on a small val split the best-looking of
    several option sets is mostly seed noise.) Without a reference, the rank rule: among candidates whose pooled
    val accuracy is within ``eps`` of the best, the lowest pooled val ``fair`` (ties: higher accuracy).
    Returns the choice and the table it was made from (``attrs["rule"]``: which rule decided and why)."""
    from .metrics import paired_t_pvalue

    d = _test(df, "val")
    settings = _settings(d)
    rows, per_seed_of, cells = [], {}, {}
    for c in candidates:
        per_seed: dict = {}
        for s in settings:
            part = _pick(d, c, s)
            for seed, r in part.iterrows():
                per_seed.setdefault(seed, []).append((r[acc], r[fair]))
                cells[(c, seed, s)] = (float(r[acc]), float(r[fair]))
        if not per_seed:
            continue
        per_seed_of[c] = {seed: (float(np.mean([a for a, _ in v])), float(np.mean([f for _, f in v])))
                          for seed, v in per_seed.items()}
        accs = [a for a, _ in per_seed_of[c].values()]
        fairs = [f for _, f in per_seed_of[c].values()]
        am, ah, _, n = mean_ci(accs)
        fm, fh, _, _ = mean_ci(fairs)
        rows.append({"candidate": c, f"val {acc}": am, f"val {acc} ci": ah, f"val {fair}": fm,
                     f"val {fair} ci": fh, "seeds": n, "settings": len(settings)})
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"none of the candidates {list(candidates)} has val rows")
    if reference is not None and reference not in per_seed_of:
        raise ValueError(f"the reference candidate {reference!r} has no val rows (candidates: {list(candidates)})")
    if reference is not None:
        diffs = {}
        for c in table["candidate"]:
            if c == reference:  # no difference to itself: nothing to test
                diffs[c] = (math.nan, math.nan, math.nan, math.nan)
                continue
            # Paired by seed *and* setting: per seed, the mean over the settings both have (a candidate missing a
            # setting would otherwise be compared with the reference on another dataset).
            dv, da = [], []
            for seed in sorted(per_seed_of[c]):
                both = [s for s in settings if (c, seed, s) in cells and (reference, seed, s) in cells]
                if both:
                    dv.append(float(np.mean([cells[(c, seed, s)][1] - cells[(reference, seed, s)][1] for s in both])))
                    da.append(float(np.mean([cells[(c, seed, s)][0] - cells[(reference, seed, s)][0] for s in both])))
            m, h, sd, n = mean_ci(dv)
            diffs[c] = (m, h, paired_t_pvalue(m, sd, n), float(np.mean(da)) if da else float("nan"))
        table[f"Δ val {fair} vs {reference}"] = [diffs[c][0] for c in table["candidate"]]
        table[f"Δ val {fair} ci"] = [diffs[c][1] for c in table["candidate"]]
        table["p (paired)"] = [diffs[c][2] for c in table["candidate"]]
        table["p (Holm)"] = adjust_pvalues(table["p (paired)"].to_numpy(dtype=float), "holm")
        table[f"Δ val {acc} vs {reference}"] = [diffs[c][3] for c in table["candidate"]]
        better = table[(table[f"Δ val {fair} vs {reference}"] < 0) & (table["p (Holm)"] < 0.05)
                       & (table[f"Δ val {acc} vs {reference}"] >= -eps)]
        if better.empty:
            choice = reference
            table.attrs["rule"] = (f"kept {reference}: no candidate has a significantly lower pooled val "
                                   f"{fair.upper()} (paired by seed, Holm over the others) within "
                                   f"{100 * eps:g} pts of its val accuracy")
        else:
            choice = better.sort_values([f"val {fair}", f"val {acc}"], ascending=[True, False]).iloc[0]["candidate"]
            table.attrs["rule"] = (f"chose {choice}: pooled val {fair.upper()} significantly lower than {reference}'s "
                                   f"(paired by seed, Holm over the others) with val accuracy within {100 * eps:g} pts")
    else:
        best = table[f"val {acc}"].max()
        ok = table[table[f"val {acc}"] >= best - eps]
        choice = ok.sort_values([f"val {fair}", f"val {acc}"], ascending=[True, False]).iloc[0]["candidate"]
        table.attrs["rule"] = (f"rank rule: within {100 * eps:g} pts of the best pooled val accuracy, the lowest "
                               f"pooled val {fair.upper()}")
    table["chosen"] = table["candidate"] == choice
    return str(choice), table


def choice_view(table: pd.DataFrame, acc: str = "acc", fair: str = "mcd") -> pd.DataFrame:
    """:func:`choose_on_val`'s table as notebook 03 shows it, in percentage points as notebook 02's ablation
    (:func:`ballot_lib.ablation.display_table`): per candidate its pooled val accuracy and ``fair`` as
    ``mean ± CI half-width`` in points, the differences to the reference with their 95 % CI in points, the
    paired p-values (raw and Holm-adjusted) and the choice. The numbers are the table's, only scaled and
    formatted: the choice is made on the table itself."""
    A, F = acc.upper(), fair.upper()
    out = pd.DataFrame({"candidate": table["candidate"], "seeds": table["seeds"], "settings": table["settings"]})
    for m, M in ((acc, A), (fair, F)):
        out[f"val {M} (pts)"] = [f"{100 * x:.1f} ± {100 * h:.1f}" for x, h in
                                 zip(table[f"val {m}"], table[f"val {m} ci"])]
    d_fair = next((c for c in table.columns if c.startswith(f"Δ val {fair} vs ")), None)
    d_acc = next((c for c in table.columns if c.startswith(f"Δ val {acc} vs ")), None)
    if d_fair is not None:
        ref = d_fair[len(f"Δ val {fair} vs "):]
        out[f"Δ val {F} vs {ref} (pts)"] = [
            "" if pd.isna(x) else f"{100 * x:+.1f} [{100 * (x - h):+.1f}, {100 * (x + h):+.1f}]"
            for x, h in zip(table[d_fair], table[f"Δ val {fair} ci"])]
        if d_acc is not None:
            out[f"Δ val {A} vs {ref} (pts)"] = ["" if pd.isna(x) else f"{100 * x:+.1f}" for x in table[d_acc]]
        for c in ("p (paired)", "p (Holm)"):
            if c in table:
                out[c] = ["" if pd.isna(x) else f"{x:.3g}" for x in table[c]]
    out["chosen"] = table["chosen"] if "chosen" in table else False
    out.attrs.update(table.attrs)
    return out.reset_index(drop=True)


def _fmt_cell(row: Mapping, m: str) -> str:
    scale, fmt = (1, "{:+.4f}") if m == "cwv" else (100, "{:+.1f}")  # group gaps: points, as accuracy
    d = row.get(f"d_{m}")
    if d is None or (isinstance(d, float) and math.isnan(d)):
        return ""
    adjusted = row.get(f"sigadj_{m}")
    held = adjusted if adjusted is not None and not (isinstance(adjusted, float) and math.isnan(adjusted)) \
        else row.get(f"sig_{m}")
    bold = "**" if held is True or held == True else ""  # noqa: E712 (numpy bools)
    return (f"{bold}{fmt.format(scale * d)}{bold} [{ci_end(scale * row[f'lo_{m}'], fmt)}, "
            f"{ci_end(scale * row[f'hi_{m}'], fmt)}] {int(row[f'wins_{m}'])}/{int(row[f'n_{m}'])}")


def ci_end(x: float, fmt: str) -> str:
    """A CI end formatted with ``fmt``, with two significant digits instead where ``fmt`` would round a non-zero
    end to 0 (``+0.0`` could not say on which side of 0 the interval ends: "[+0.0, +0.8]" was a per-test win)."""
    text = fmt.format(x)
    if x == x and x != 0 and float(text) == 0:
        return f"{x:+.2g}"
    return text


def tested_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics a comparison table holds paired tests of (``p_<m>`` columns), class metrics first."""
    have = [c[2:] for c in table.columns if c.startswith("p_")]
    return [m for m in (*CLASS_METRICS, *GROUP_METRICS) if m in have] + [m for m in have if m not in
                                                                         (*CLASS_METRICS, *GROUP_METRICS)]


def _md_block(table: pd.DataFrame, metrics: Sequence[str]) -> str:
    head = ("| dataset | model | density | sparsity | method | selection | compute (epochs) | collapsed | "
            + " | ".join(metrics) + " | " + " | ".join(f"Ballot − method: {m}" for m in metrics) + " |")
    lines = [head, "|" + "---|" * (8 + 2 * len(metrics))]
    for _, r in table.iterrows():
        means = " | ".join("" if pd.isna(r.get(m)) else f"{r[m]:.4f}" if m == "cwv" else f"{r[m]:.3f}"
                           for m in metrics)
        cells = " | ".join(_fmt_cell(r, m) for m in metrics)
        gone = r.get("collapsed", 0)
        gone = "" if gone is None or (isinstance(gone, float) and math.isnan(gone)) else (
            f"{int(gone)}/{int(r['seeds'])}" if gone else "0")  # not bold: bold is for significance
        lines.append(f"| {r['dataset']} | {r['model']} | {r['density']:g} | {1 - r['density']:.6g} | {r['method']} | "
                     f"{r['selection']} | {r['compute_epochs']:g} | {gone} | {means} | {cells} |")
    return "\n".join(lines)


def markdown(table: pd.DataFrame, metrics: Optional[Sequence[str]] = None) -> str:
    """The paper-style table: per setting and method the means, compute, and Ballot − method (CI, Ballot wins).
    Bold: significant after the table's multiple-comparison correction (:func:`adjust_table`; a table without
    adjusted p-values: the CI excludes 0) -- the convention of every table of the library (``paper_tables``).
    The CIs are per test: one that excludes 0 without bold did not survive the correction.

    By default (``metrics`` None) every metric the table tests is shown, so the cells shown are the family the
    correction runs over: the class metrics (acc, CWV, MCD) for every setting, then, where the table holds group
    metrics (DP/EO gap, group-accuracy gap: datasets with a sensitive attribute), a second block with those
    metrics for the datasets that have them. Accuracy, MCD and the group gaps' differences are in points."""
    if metrics is not None:
        return _md_block(table, [m for m in metrics if m in table])
    tested = tested_metrics(table)
    cls = [m for m in tested if m not in GROUP_METRICS] or [m for m in CLASS_METRICS if m in table]
    out = _md_block(table, cls)
    grp = [m for m in tested if m in GROUP_METRICS]
    if grp:
        ds = sorted({d for d, g in table.groupby("dataset") if g[[f"p_{m}" for m in grp]].notna().any().any()})
        part = table[table["dataset"].isin(ds)]
        out += ("\n\n**Group metrics** (" + ", ".join(GROUP_NAMES.get(m, m) for m in grp) + "; lower is better; "
                f"datasets with a sensitive attribute: {', '.join(ds)}) — the same table, its cells in the same "
                "correction family:\n\n" + _md_block(part, grp))
    return out


def method_of(label: str) -> Optional[str]:
    """The method behind a label of :func:`comparison_variants` (``"LTH +val"`` -> ``"lth"``, ``"Ballot η=0"`` ->
    ``"ballot"``); None for ``"Dense"`` and unknown labels."""
    base = label[:-len(SELECTED)] if label.endswith(SELECTED) else label
    if base in BASELINES:
        return BASELINES[base]
    return "ballot" if base.startswith("Ballot") else None


def collapse_reading(collapsed: pd.DataFrame, threshold: float = COLLAPSE,
                     rewind_epoch: Optional[int] = None) -> str:
    """One sentence naming the collapsed runs (:func:`collapsed_runs`) per setting, or saying there were none.

    With ``rewind_epoch`` 0 (notebook 03's parameter) and a collapsed run of a method that rewinds (LTH, Ballot),
    it adds how to re-run with late rewinding for both: a suggestion, not a claim about this run."""
    split = collapsed.attrs.get("split", "val")
    rule = (f"{split} balanced accuracy keeping less than {100 * threshold:.0f} % of the same-seed dense run's "
            "skill over chance")
    if collapsed.empty:
        return f"- **Collapsed runs** ({rule}): none."
    parts = []
    for (ds, model, dens), g in collapsed.groupby(["dataset", "model", "density"], sort=False):
        who = []
        for variant, v in g.groupby("variant", sort=True):
            seeds = ", ".join(str(int(x)) for x in v["seed"])
            accs = ", ".join(f"{a:.3f}" for a in v["balanced_acc"])
            who.append(f"{variant} (seed{'s' if len(v) > 1 else ''} {seeds}: balanced acc {accs})")
        parts.append(f"{ds}/{model} @ {dens:g}: " + "; ".join(who))
    text = (f"- **Collapsed runs** ({rule}): " + " — ".join(parts) + ". Paired differences in these settings "
            "compare a collapsed model with a working one (or two collapsed ones): they measure the collapse, not "
            "fairness; the tables count collapsed seeds per row (column `collapsed`).")
    rewinders = sorted({str(v) for v in collapsed["variant"] if method_of(str(v)) in REWINDING})
    if rewind_epoch == 0 and rewinders:
        text += (f" {', '.join(rewinders)} retrained from θ0 (`rewind_epoch: 0`, the original LTH); re-running with "
                 "`rewind_epoch: 1` rewinds LTH and Ballot alike to θ1 (late rewinding, the usual remedy for a sparse "
                 "network that cannot train from θ0); its own collapse count will say whether it helped.")
    return text


def compute_unmatched(table: pd.DataFrame, rtol: float = 0.01) -> dict[str, tuple[float, float]]:
    """Baselines of a comparison table whose training compute differs from Ballot's in the same setting:
    method -> (smallest, largest) ratio of Ballot's compute to the baseline's over the settings where they differ
    (epochs of the dense recipe; settings may have different recipes, so ratios, not epochs, are comparable)."""
    first = next((c for c in table.columns if c.startswith("d_")), None)  # baseline rows carry differences
    if first is None or "compute_epochs" not in table:
        return {}
    out: dict[str, list[float]] = {}
    for _, g in table.groupby(["dataset", "model", "density"], sort=False):
        ballot = g[(g["method"] != "Dense") & g[first].isna()]  # the row the others are paired against
        if ballot.empty:
            continue
        ours = float(ballot["compute_epochs"].iloc[0])
        for _, r in g[g[first].notna()].iterrows():
            if not math.isclose(float(r["compute_epochs"]), ours, rel_tol=rtol):
                out.setdefault(r["method"], []).append(ours / float(r["compute_epochs"]))
    return {m: (min(v), max(v)) for m, v in out.items()}


def _times(lo: float, hi: float) -> str:
    """A compute ratio or range of ratios, e.g. ``2×`` or ``1.5–2×``."""
    return f"{lo:.2g}×" if math.isclose(lo, hi, rel_tol=0.01) else f"{lo:.2g}–{hi:.2g}×"


def _compute_note(table: pd.DataFrame, wc: pd.DataFrame, better: int) -> str:
    """The reading's sentence on baselines whose compute differs from Ballot's (:func:`compute_unmatched`) and
    how many of Ballot's significantly fairer results (``wc``: :func:`win_counts` of ``table``) are against them."""
    unmatched = compute_unmatched(table)
    if not unmatched:
        return ""
    fair = wc[wc["metric"].isin(["cwv", "mcd"]) & wc["baseline"].isin(list(unmatched))]

    names = "; ".join(f"{_times(lo, hi)} the epochs of {meth}" for meth, (lo, hi) in unmatched.items())
    text = f" Training epochs are not matched for every baseline: Ballot (its dense run included) trains {names}"
    if not better:  # "0 of its 0 significantly fairer results" said nothing
        return text + "; none of Ballot's results is fairer by its own test, against these baselines or others."
    return (text + f"; {int(fair['Ballot better'].sum())} of its {better} fairer results (each by its own test) are "
            "against these baselines.")


def _correction_possessive() -> str:
    """The tables' correction (:data:`FAMILY_CORRECTION`) as the readings name it: "Holm's"."""
    return CORRECTION_NAMES.get(FAMILY_CORRECTION, FAMILY_CORRECTION) + "'s"


def _family_note(table: pd.DataFrame) -> str:
    """The reading's sentence on the table's counts after the multiple-comparison correction."""
    if "sigadj_mcd" not in table and "sigadj_cwv" not in table:
        return ""
    k = family_size(table)
    better, worse, _ = _fair_counts(win_counts(table, ("acc", "cwv", "mcd"), adjusted=True))
    name = _correction_possessive()
    grp = [m for m in tested_metrics(table) if m in GROUP_METRICS]
    held = "accuracy, CWV, MCD" + (" and the group metrics (" + ", ".join(GROUP_NAMES[m] for m in grp) + ")"
                                   if grp else "")
    return (f" Each cell is a 5 % test and the table holds {k} of them ({held}, every one shown); with {name} "
            f"correction over all {k} (family-wise 5 %), Ballot stays significantly fairer in {better} and less "
            f"fair in {worse} of the class-fairness (CWV, MCD) comparisons (bold in the table).")


def _group_note(table: pd.DataFrame) -> str:
    """The reading's sentence on the group metrics of a table (datasets with a sensitive attribute): significant
    wins and losses per metric, unadjusted and after the table's correction; "" when the table has none."""
    grp = [m for m in tested_metrics(table) if m in GROUP_METRICS]
    if not grp:
        return ""
    wc = win_counts(table, grp)
    wa = win_counts(table, grp, adjusted=True) if all(f"sigadj_{m}" in table for m in grp) else None
    if wc.empty:
        return ""
    ds = sorted({d for d, g in table.groupby("dataset") if g[[f"p_{m}" for m in grp]].notna().any().any()})
    b, w, n = int(wc["Ballot better"].sum()), int(wc["Ballot worse"].sum()), int(wc["settings"].sum())
    per = "; ".join(f"{GROUP_NAMES[m]}: worse in {int(g['Ballot worse'].sum())}, better in "
                    f"{int(g['Ballot better'].sum())} of {int(g['settings'].sum())}"
                    for m, g in wc.groupby("metric", sort=False))
    text = (f" **Group metrics** ({', '.join(ds)}, the data with a sensitive attribute; lower gaps are fairer): "
            f"over {n} (baseline, setting, group metric) comparisons Ballot is significantly worse in {w} and "
            f"better in {b} ({per})")
    if wa is not None:
        text += (f"; after the correction, worse in {int(wa['Ballot worse'].sum())} and better in "
                 f"{int(wa['Ballot better'].sum())}")
    # The conclusion rests on what survives the table's correction (per-test counts alone are the 5 % tests of a
    # large family); without a correction it says that it is per test.
    wa_b, wa_w = (int(wa["Ballot better"].sum()), int(wa["Ballot worse"].sum())) if wa is not None else (b, w)
    if wa_w > wa_b:
        text += (". On group fairness Ballot loses more often than it wins here" +
                 ("" if wa is not None else " (per test, uncorrected)"))
    elif w > b:
        text += (". Per test Ballot is worse more often than better on group fairness, but no such difference "
                 "survives the correction" if wa is not None and wa_w == 0 else
                 ". Per test Ballot is worse more often than better on group fairness")
    unmatched = compute_unmatched(table)
    losers = wc[wc["Ballot worse"] > 0].groupby("baseline", sort=False)["Ballot worse"].sum()
    if len(losers):
        def name(k: str) -> str:
            r = unmatched.get(k)
            return k + (f" (Ballot trains {_times(*r)} its epochs)" if r else "")
        text += " (worse per test against " + ", ".join(f"{name(k)} in {int(v)}" for k, v in losers.items()) + ")"
    return text + "."


def _significant_direction(r: Mapping[str, Any]) -> int:
    """+1 (Ballot significantly fairer) or -1 (significantly less fair) when an improvement row's Holm-adjusted
    p-value (``padj``) is below 0.05 and its robust CI lies above or below 0; else 0."""
    q = r.get("padj")
    if q is None or pd.isna(q) or not float(q) < 0.05:
        return 0
    return 1 if r["robust_lo"] > 0 else -1 if r["robust_hi"] < 0 else 0


def improvement_sentence(r: Mapping[str, Any], title: str) -> str:
    """One improvement row (:func:`improvement_table`) in words: its direction from the robust form's CI over
    seeds (none with fewer than 2 seeds), its significance from the Holm-adjusted p-value of
    :func:`adjust_improvements` when the row has one (``padj``; else the unadjusted CI, and the sentence says
    so), and where the paper's number lies. The measure is class fairness (CWV and MCD) only."""
    claim = r["paper's number"]
    lo, hi = r["robust_lo"], r["robust_hi"]
    if "settings" in r and not pd.isna(r.get("settings")) and int(r["settings"]) == 0:
        # every setting was left out (each holds collapsed runs): there is no improvement to state, only "+nan %"
        out = (f"- Improvement over {r['baseline']} ({title}): every setting holds collapsed runs and is left out "
               f"({int(r.get('left out') or 0)}), so there is none to state.")
        if not pd.isna(r.get("robust (all settings)", math.nan)):
            out += (f" Over every setting, collapsed runs included, the robust form is "
                    f"{r['robust (all settings)']:+.1f} % [{r['robust_lo (all settings)']:+.1f}, "
                    f"{r['robust_hi (all settings)']:+.1f}] (it then measures the collapse, not fairness).")
        return out
    used = ""
    if "settings" in r and not pd.isna(r.get("settings")):
        used = f" over {int(r['settings'])} settings" + (
            f" ({int(r['left out'])} with collapsed runs left out)" if r.get("left out") else "")
    head = (f"- Class-fairness (CWV, MCD) improvement over {r['baseline']} ({title}){used}: paper form {r['paper']:+.1f} % "
            f"[{r['paper_lo']:+.1f}, {r['paper_hi']:+.1f}], robust form {r['robust']:+.1f} % "
            f"[{lo:+.1f}, {hi:+.1f}] over {int(r['seeds'])} seed{'' if int(r['seeds']) == 1 else 's'}; the paper reports "
            f"{claim:+.2f} %. ")
    if pd.isna(lo) or pd.isna(hi):
        return head + "With fewer than 2 seeds there is no CI: nothing is decided."
    q = r.get("padj", math.nan)
    q = math.nan if q is None else float(q)
    fam = r.get("family")
    fam = f" over the {int(fam)} improvement rows read" if fam is not None and not pd.isna(fam) else ""
    if "padj" in r and not math.isnan(q):
        adj = f"Holm-adjusted p = {q:.3g}{fam}"
        direction = _significant_direction(r)
        if direction > 0:
            verdict = f"Ballot is significantly fairer than {r['baseline']} by this pooled measure ({adj}), "
        elif direction < 0:
            verdict = f"Ballot is significantly less fair than {r['baseline']} by this pooled measure ({adj}), "
        elif lo > 0 or hi < 0:
            verdict = (f"The robust CI excludes 0 ({'above' if lo > 0 else 'below'} it), but not after the "
                       f"correction ({adj}): no significant difference, ")
        else:
            verdict = f"The robust CI includes 0 (no significant difference; {adj}), "
    elif lo > 0:
        verdict = (f"Ballot is fairer than {r['baseline']} by this pooled measure (the robust CI is above 0; "
                   "unadjusted for the other rows), ")
    elif hi < 0:
        verdict = (f"Ballot is less fair than {r['baseline']} by this pooled measure (the robust CI is below 0; "
                   "unadjusted for the other rows), ")
    else:
        verdict = "The robust CI includes 0 (no significant difference), "
    where = ("and the paper's number lies inside it" if lo <= claim <= hi else
             "and the paper's number lies outside it") + (
        " (for orientation only: the paper's number is its own form on its datasets and full-size models).")
    out = head + verdict + where
    if r.get("left out") and not pd.isna(r.get("robust (all settings)", math.nan)):
        out += (f" Over every setting, collapsed runs included, the robust form is "
                f"{r['robust (all settings)']:+.1f} % [{r['robust_lo (all settings)']:+.1f}, "
                f"{r['robust_hi (all settings)']:+.1f}].")
    return out


def vote_overhead(df: pd.DataFrame, subject: str = "Ballot", reference: str = "LTH") -> pd.DataFrame:
    """Ballot's vote computation per seed against one LTH retraining, from the runs' stored seconds
    (``vote_seconds`` of ``subject``'s runs, ``seconds`` of ``reference``'s, each a mean over the settings and
    densities of the frame; :func:`ballot_lib.readings.vote_cost`); empty when the runs carry no vote seconds."""
    from .readings import vote_cost

    return vote_cost(df, subject, reference)


def compute_statement(df: pd.DataFrame, subject: str = "Ballot", reference: str = "LTH") -> str:
    """The reading's sentence on what the compute column counts: training epochs only. Ballot's vote computation
    is measured from this run's stored seconds (:func:`vote_overhead`) when its runs carry them; SafeCompress's
    val probing is in no count."""
    cost = vote_overhead(df, subject, reference)
    text = ("- **Compute**: the `compute (epochs)` column counts training epochs of the dense recipe only, so "
            "\"matched\" means equal training epochs, not equal compute. ")
    if cost.empty:
        text += f"{subject}'s vote computation is not counted in it (this run's {subject} runs carry no vote seconds)"
    else:
        r = cost["ratio"]
        text += (f"{subject} also computes its votes: {r.mean():.2f}× one {reference} retraining in wall-clock "
                 f"seconds (mean over {len(r)} seeds of vote seconds / {reference} retraining seconds, each averaged "
                 f"over the settings and densities of this run; min {r.min():.2f}×, max {r.max():.2f}×), which the "
                 "epoch count leaves out")
    return text + "; SafeCompress's probing of the val split during training is not counted either."


def _verdict(better: int, worse: int, total: int) -> str:
    """The reading's summary of significant fairness wins and losses out of ``total`` comparisons."""
    none = total - better - worse
    if none * 2 >= total:
        return ("most comparisons show no significant difference"
                + ("; where one is significant, Ballot is more often the fairer" if better > worse else
                   "; where one is significant, Ballot is more often the less fair" if worse > better else ""))
    return ("Ballot is significantly fairer more often than not" if better > worse + none else
            "Ballot is more often significantly fairer than significantly less fair" if better > worse
            else "Ballot is more often significantly less fair than fairer" if worse > better else
            "Ballot is neither fairer nor less fair on balance")


def _fair_counts(wc: pd.DataFrame) -> tuple[int, int, int]:
    fair = wc[wc["metric"].isin(["cwv", "mcd"])]
    return int(fair["Ballot better"].sum()), int(fair["Ballot worse"].sum()), int(fair["settings"].sum())


def _tables_read(tables_: Mapping[str, pd.DataFrame]):
    """The comparison tables a reading has something to say about, with what every reading of them starts from:
    ``(title, table, win counts on acc/CWV/MCD, baselines whose training compute differs from Ballot's)``."""
    for title, t in tables_.items():
        wc = win_counts(t, ("acc", "cwv", "mcd"))
        if not wc.empty:
            yield title, t, wc, compute_unmatched(t)


def _table_lines(tables_: Mapping[str, pd.DataFrame]) -> list[str]:
    """The reading's bullet per comparison table (:func:`reading`)."""
    out = []
    for title, t, wc, unmatched in _tables_read(tables_):
        better, worse, total = _fair_counts(wc)
        acc = wc[wc["metric"] == "acc"]
        if unmatched:
            mb, mw, mt = _fair_counts(wc[~wc["baseline"].isin(list(unmatched))])
            head = (f"over {mt} (baseline, setting, class-fairness metric: CWV, MCD) comparisons **at equal "
                    f"training epochs**, Ballot is "
                    f"by each comparison's own 5 % test (uncorrected) fairer in {mb}, less fair in {mw}, and not "
                    f"significantly different in {mt - mb - mw}: {_verdict(mb, mw, mt) if mt else 'nothing to compare'}. With the baselines "
                    f"that train other epoch counts too ({total} comparisons): fairer in {better}, less fair in "
                    f"{worse}.")
        else:
            head = (f"over {total} (baseline, setting, class-fairness metric: CWV, MCD) comparisons, Ballot is "
                    f"by each comparison's own 5 % test (uncorrected) fairer "
                    f"in {better}, less fair in {worse}, and not significantly different in "
                    f"{total - better - worse}: {_verdict(better, worse, total)}.")
        out.append(f"- **{title}**: {head} On accuracy, by the same per-test rule, it is better in "
                   f"{int(acc['Ballot better'].sum())} and worse in {int(acc['Ballot worse'].sum())} of "
                   f"{int(acc['settings'].sum())}." + _compute_note(t, wc, better) + _family_note(t)
                   + _group_note(t))
    return out


def _unmatched_of(tables_: Optional[Mapping[str, pd.DataFrame]]) -> dict[str, tuple[float, float]]:
    """Every baseline whose training compute differs from Ballot's in some table (:func:`compute_unmatched`),
    which the improvement lines name."""
    out: dict[str, tuple[float, float]] = {}
    for t in (tables_ or {}).values():
        out.update(compute_unmatched(t))
    return out


def _improvement_lines(improvements: Mapping[str, pd.DataFrame],
                       unmatched_all: Mapping[str, tuple[float, float]]) -> list[str]:
    """The reading's improvement-% bullets (:func:`reading`): the family they are tested in, then one sentence per
    row (:func:`improvement_sentence`), naming the baselines whose training epochs differ from Ballot's."""
    out = []
    if improvements and not all("padj" in t for t in improvements.values()):
        improvements = adjust_improvements(improvements)  # the rows read here are one family
    if improvements:
        fam = improvement_family_size(improvements)
        name = {"holm": "Holm's", "bh": "Benjamini–Hochberg's"}.get(FAMILY_CORRECTION, FAMILY_CORRECTION)
        out.append(f"- Improvement-% (class fairness: CWV and MCD only; group metrics are in the tables above): "
                   f"{fam} rows ({', '.join(improvements)}) are tested as one family, {name} correction over the "
                   "robust form's p-values; \"significant\" below is after it.")
    for title, imp in improvements.items():
        for _, r in imp.iterrows():
            ratio = unmatched_all.get(r["baseline"]) or unmatched_all.get(f"{r['baseline']}{SELECTED}")
            r = {**r.to_dict(), "family": imp.attrs.get("family")}
            out.append(improvement_sentence(r, title) + (
                f" Training epochs are not matched: Ballot trains {_times(*ratio)} the epochs of {r['baseline']}"
                + (f" (its {r['baseline']}{MATCHED} row is the equal-epochs comparison)."
                   if f"{r['baseline']}{MATCHED}" in set(imp["baseline"]) else ".") if ratio else ""))
    return out


def _decomposition_say(parts: Mapping[str, Any], key: str) -> str:
    """One pooled MCD part of the decomposition in words: Δ in points with its CI and whether it is significant."""
    r = parts.get(key)
    if r is None:
        return "n/a"
    s = "significant" if r["significant"] else "not significant"
    return f"{100 * r['diff']:+.1f} pts MCD [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}], {s}"


def _decomposition_parts(decomp: pd.DataFrame) -> dict[str, Any]:
    pooled = decomp[(decomp["dataset"] == "pooled") & (decomp["metric"] == "mcd")]
    return {r["part"]: r for _, r in pooled.iterrows()}


def _decomposition_lines(decomp: pd.DataFrame) -> list[str]:
    """The reading's decomposition bullet (:func:`reading`): the pooled MCD parts in points."""
    parts = _decomposition_parts(decomp)
    if not parts and decomp.attrs.get("left_out") and not decomp.attrs.get("settings"):
        return [f"- Decomposition: every one of the {decomp.attrs['left_out']} settings holds collapsed runs of "
                "the decomposition's variants, so there is nothing to decompose."]
    if not parts:
        return []
    say = lambda key: _decomposition_say(parts, key)  # noqa: E731
    first = next(iter(parts.values()))
    left = (f" ({int(first['left out'])} setting{'s' if int(first['left out']) != 1 else ''} with collapsed "
            "runs left out)" if first.get("left out") else "")
    return [f"- Decomposition, pooled over settings (seed as unit){left}: Ballot − LTH = "
            f"{say('total (Ballot − LTH)')}; the vote alone (Ballot plain − LTH) = "
            f"{say('vote (Ballot plain − LTH)')}; checkpoint selection and refined training (Ballot − "
            f"Ballot plain) = {say('checkpoint selection (Ballot − Ballot plain)')}. Controls: Ballot − LTH "
            f"with both picking their checkpoint on val = {say('selection-matched total (Ballot − LTH +val)')}"
            f"; the vote's fairness term (Ballot − Ballot η=0) = "
            f"{say('fairness term (Ballot − Ballot η=0)')}."]


def _closing_lines(collapsed: Optional[pd.DataFrame], rewind_epoch: Optional[int],
                   frame: Optional[pd.DataFrame]) -> list[str]:
    """The reading's compute statement (with ``frame``) and collapsed-runs sentence (with ``collapsed``)."""
    out = []
    if frame is not None:
        out.append(compute_statement(frame))
    if collapsed is not None:
        out.append(collapse_reading(collapsed, rewind_epoch=rewind_epoch))
    return out


def reading(tables_: Mapping[str, pd.DataFrame], improvements: Mapping[str, pd.DataFrame],
            decomp: pd.DataFrame, collapsed: Optional[pd.DataFrame] = None,
            rewind_epoch: Optional[int] = None, frame: Optional[pd.DataFrame] = None) -> str:
    """Plain sentences generated from this run's numbers: where the paper's claim does and does not reproduce.

    Where some baselines train with other compute than Ballot (:func:`compute_unmatched`), each table's
    headline counts only the compute-matched baselines, then the counts with every baseline; improvement lines
    against an unmatched baseline say so. With ``collapsed`` (:func:`collapsed_runs`), a closing sentence names
    the runs that collapsed (and, with ``rewind_epoch``, how to re-run with late rewinding:
    :func:`collapse_reading`). Improvement rows are adjusted as one family (:func:`adjust_improvements`) unless
    they already are. With ``frame`` (the runs' tidy frame), a sentence states what the compute column leaves
    out, with Ballot's measured vote overhead (:func:`compute_statement`).

    The whole reading, as the report holds it. Notebook 03 shows it in parts, each under the table it reads:
    :func:`table_reading` (section 3), :func:`decomposition_reading` (section 4), :func:`improvement_reading`
    (section 5), and closes with :func:`reading_summary`; the bullets are the same."""
    out = _table_lines(tables_)
    out += _improvement_lines(improvements, _unmatched_of(tables_))
    out += _decomposition_lines(decomp)
    out += _closing_lines(collapsed, rewind_epoch, frame)
    return "\n".join(out)


def table_reading(tables_: Mapping[str, pd.DataFrame], collapsed: Optional[pd.DataFrame] = None,
                  rewind_epoch: Optional[int] = None, frame: Optional[pd.DataFrame] = None) -> str:
    """The part of :func:`reading` that reads the comparison tables (notebook 03, section 3): one bullet per
    table, then what the compute column counts (with ``frame``) and which runs collapsed (with ``collapsed``)."""
    return "\n".join(_table_lines(tables_) + _closing_lines(collapsed, rewind_epoch, frame))


def decomposition_reading(decomp: pd.DataFrame) -> str:
    """The part of :func:`reading` that reads the decomposition (notebook 03, section 4); empty without one."""
    return "\n".join(_decomposition_lines(decomp))


def improvement_reading(improvements: Mapping[str, pd.DataFrame],
                        tables_: Optional[Mapping[str, pd.DataFrame]] = None) -> str:
    """The part of :func:`reading` that reads the improvement-% rows (notebook 03, section 5); with ``tables_``
    (the comparison tables) a row against a baseline that trains other epochs than Ballot says so."""
    return "\n".join(_improvement_lines(improvements, _unmatched_of(tables_)))


def reading_summary(tables_: Mapping[str, pd.DataFrame], improvements: Mapping[str, pd.DataFrame],
                    decomp: pd.DataFrame, collapsed: Optional[pd.DataFrame] = None) -> str:
    """The conclusions of :func:`reading` in a few lines (notebook 03's closing section): per comparison table the
    class-fairness counts at equal training epochs and after the table's correction; which improvement rows are
    significant after the family's correction and where the paper's numbers lie; Ballot − LTH and its two parts
    (MCD, pooled); how many runs collapsed. Every number is taken from the same tables as :func:`reading`'s."""
    out = []
    for title, t, wc, unmatched in _tables_read(tables_):
        b, w, n = _fair_counts(wc[~wc["baseline"].isin(list(unmatched))] if unmatched else wc)
        line = (f"- **{title}**: " + ("at equal training epochs, " if unmatched else "")
                + f"Ballot is fairer in {b} and less fair in {w} of {n} class-fairness comparisons by each one's own "
                  f"5 % test"
                + (f" ({_verdict(b, w, n)})" if n else ""))
        if "sigadj_mcd" in t or "sigadj_cwv" in t:
            ab, aw, _ = _fair_counts(win_counts(t, ("acc", "cwv", "mcd"), adjusted=True))
            line += (f"; after {_correction_possessive()} correction over the table (every baseline), fairer in "
                     f"{ab} and less fair in {aw}")
        grp = [m for m in tested_metrics(t) if m in GROUP_METRICS]
        if grp and all(f"sigadj_{m}" in t for m in grp):
            ga = win_counts(t, grp, adjusted=True)
            if not ga.empty:
                line += (f"; on group metrics after it, better in {int(ga['Ballot better'].sum())} and worse in "
                         f"{int(ga['Ballot worse'].sum())} of {int(ga['settings'].sum())}")
        out.append(line + ".")
    if improvements and not all("padj" in t for t in improvements.values()):
        improvements = adjust_improvements(improvements)
    rows = [r for imp in improvements.values() for _, r in imp.iterrows()]
    if rows:
        def names(sign: int) -> str:
            hit = [f"{r['baseline']} ({title})" for title, imp in improvements.items() for _, r in imp.iterrows()
                   if _significant_direction(r) == sign]
            return ", ".join(hit) if hit else "none"

        inside = sum(1 for r in rows if not pd.isna(r["robust_lo"]) and not pd.isna(r["robust_hi"])
                     and r["robust_lo"] <= r["paper's number"] <= r["robust_hi"])
        fairer, less = names(1), names(-1)
        found = ("no row is significant after the correction" if fairer == less == "none" else
                 f"significantly fairer against {fairer}; significantly less fair against {less}")
        out.append(f"- **Improvement-%** (class fairness: CWV, MCD; {len(rows)} rows, one family): {found}. The "
                   f"paper's number lies inside the robust form's CI in {inside} of the {len(rows)} rows.")
    parts = _decomposition_parts(decomp)
    if parts:
        out.append(f"- **Ballot − LTH** (MCD, pooled): {_decomposition_say(parts, 'total (Ballot − LTH)')}; of it "
                   f"the vote {_decomposition_say(parts, 'vote (Ballot plain − LTH)')}, checkpoint selection "
                   f"{_decomposition_say(parts, 'checkpoint selection (Ballot − Ballot plain)')}.")
    else:
        out += _decomposition_lines(decomp)
    if collapsed is not None:
        if collapsed.empty:
            out.append("- **Collapsed runs**: none.")
        else:
            settings = collapsed.groupby(["dataset", "model", "density"], sort=False).ngroups
            n = len(collapsed)
            out.append(f"- **Collapsed runs**: {n} run{'s' if n != 1 else ''} (variant and seed) in {settings} "
                       f"setting{'s' if settings != 1 else ''}, named in section 3; the decomposition and the "
                       "improvement-% leave out the settings where their variants collapsed.")
    return "\n".join(out)


#: The range a paired difference of a metric can take (metric units): a CI beyond it is cut at the bound.
DIFF_BOUNDS = {"acc": 1.0, "mcd": 1.0, "worst_group_acc": 1.0, "group_acc_gap": 1.0, "dp_gap": 1.0, "eo_gap": 1.0}


def forest(table: pd.DataFrame, metric: str = "mcd", title: Optional[str] = None, path=None):
    """Ballot − baseline for ``metric`` per setting and baseline, with 95 % CIs (points = seeds' mean).

    Colour: significant in Ballot's favour (green), against it (red), neither (grey); a black ring: still
    significant after the table's multiple-comparison correction; a hollow marker: a row with collapsed runs
    (Ballot's or the baseline's, :func:`collapsed_runs`), whose difference measures the collapse. CIs reaching past
    what the metric can differ by (±100 points for accuracy and MCD) are cut there and end in an arrow."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .plots import legend_below, save

    t = table.dropna(subset=[f"d_{metric}"]) if f"d_{metric}" in table else table.iloc[0:0]
    scale, unit = (1, "") if metric == "cwv" else (100, " (pts)")
    labels = [f"{r.dataset}/{r.model} d={r.density:g} vs {r.method}" for r in t.itertuples()]
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * max(len(t), 3) + 2.0))  # + 0.4 in for the legend under the x label
    y = np.arange(len(t))[::-1]
    d, lo, hi = (scale * t[f"{k}_{metric}"].to_numpy(dtype=float) for k in ("d", "lo", "hi"))
    bound = scale * DIFF_BOUNDS[metric] if metric in DIFF_BOUNDS else math.inf
    lo_c, hi_c = np.maximum(lo, -bound), np.minimum(hi, bound)
    colors = ["tab:green" if s and ((x < 0) == lower_is_better(metric)) else "tab:red" if s else "grey"
              for s, x in zip(t[f"sig_{metric}"] if len(t) else [], d)]
    ballot_gone = {}
    if "collapsed" in table:
        # Ballot's own row of a setting carries no difference: its collapsed seeds mark every row of the setting.
        own = table[table[f"d_{metric}"].isna() & (table["method"] != "Dense")] if f"d_{metric}" in table else table
        ballot_gone = {(r.dataset, r.model, r.density): r.collapsed for r in own.itertuples()}
    hollow = [bool((getattr(r, "collapsed", 0) or 0) > 0 or (ballot_gone.get((r.dataset, r.model, r.density)) or 0) > 0)
              for r in t.itertuples()]
    adj = [bool(v is True) for v in t.get(f"sigadj_{metric}", pd.Series([None] * len(t)))]
    ax.errorbar(d, y, xerr=[d - lo_c, hi_c - d], fmt="none", ecolor="grey", capsize=2)
    for yi, lo_i, hi_i in zip(y, lo, hi):
        for end, cut in ((-bound, lo_i < -bound), (bound, hi_i > bound)):
            if cut:
                ax.annotate("", xy=(end, yi), xytext=(end * 0.9, yi), arrowprops={"arrowstyle": "->", "color": "grey"})
    for xi, yi, c, h, a in zip(d, y, colors, hollow, adj):
        ax.scatter([xi], [yi], s=42, zorder=3, facecolors="white" if h else c, edgecolors="black" if a else c,
                   linewidths=2 if a else 1.2)
    ax.axvline(0, color="black", lw=0.8)
    if math.isfinite(bound) and len(t):
        ax.set_xlim(-1.05 * bound if lo.min() < -bound else None, 1.05 * bound if hi.max() > bound else None)
    ax.set_yticks(y, labels, fontsize=8)
    better = "left" if lower_is_better(metric) else "right"
    ax.set_xlabel(f"Ballot − baseline, {metric}{unit}; Ballot better to the {better}")
    ax.set_title(title or f"Ballot − baseline: {metric} (paired by seed, 95 % CI)", fontsize=10)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=lab) for c, lab in
               (("tab:green", "Ballot better (per-test CI excludes 0)"),
                ("tab:red", "Ballot worse (per-test CI excludes 0)"), ("grey", "CI includes 0"))]
    handles += [Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="grey",
                       label="collapsed runs in the setting"),
                Line2D([], [], marker="o", ls="", markerfacecolor="grey", markeredgecolor="black", markeredgewidth=2,
                       label="significant after Holm")]
    legend_below(ax, handles=handles, fontsize=7, ncol=3, frameon=False)
    fig.tight_layout()
    save(fig, path)
    return fig


def decomposition_plot(decomp: pd.DataFrame, metric: str = "mcd", path=None):
    """The pooled decomposition of Ballot − LTH into vote and checkpoint selection, and its two controls, with
    95 % CIs over seeds."""
    import matplotlib.pyplot as plt

    from .plots import save

    d = decomp[(decomp["dataset"] == "pooled") & (decomp["metric"] == metric)]
    scale, unit = (1, "") if metric == "cwv" else (100, " (pts)")
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(d) + 1.2))
    y = np.arange(len(d))[::-1]
    mid = scale * d["diff"].to_numpy(dtype=float)
    ax.barh(y, mid, color=["tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:olive"][:len(d)])
    ax.errorbar(mid, y, xerr=[mid - scale * d["ci_low"].to_numpy(dtype=float),
                              scale * d["ci_high"].to_numpy(dtype=float) - mid], fmt="none", ecolor="black", capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, d["part"].tolist())
    left = int(d["left out"].iloc[0]) if "left out" in d and len(d) else 0
    ax.set_xlabel(f"paired difference in test {metric}{unit}, mean over settings"
                  + (f" ({left} with collapsed runs left out)" if left else ""))
    ax.set_title(f"Where Ballot's {metric} change vs LTH comes from (95 % CI over seeds)")
    fig.tight_layout()
    save(fig, path)
    return fig


def settings_for(datasets: Sequence[str], models: Sequence[str], params: Mapping,
                 overrides: Optional[Mapping[str, Mapping]] = None, **fixed) -> list[tuple[str, str, "object"]]:
    """(dataset, model, Experiment) for every pair that makes sense: image models are skipped on tabular data
    (:func:`ballot_lib.models.takes_input`).

    ``overrides`` maps a dataset to recipe changes (e.g. ``{"adult": {"batch_size": 512}}``). Everything is
    validated before any data is loaded or anything is written.
    """
    from .checks import ParameterError
    from .experiment import experiment_from
    from .models import takes_input

    overrides = dict(overrides or {})  # overrides of datasets not in ``datasets`` are unused
    out = []
    for ds in datasets:
        for model in models:
            exp = experiment_from({**params, **overrides.get(ds, {}), **fixed}, dataset=ds, model=model)
            out.append((ds, model, exp))
    # Tabular data cannot feed an image model: load each dataset once (no writing) to know its input shape.
    kept: list[tuple[str, str, Any]] = []
    for ds, model, exp in out:
        if not takes_input(model, image=len(exp.bundle.input_shape) == 3):
            continue
        kept.append((ds, model, exp))
    if not kept:
        raise ParameterError(f"no (dataset, model) pair of datasets {list(datasets)} x models {list(models)} is valid")
    return kept


# ------------------------------------------------------------------------------------------ paper tables
# Notebook 03 records its comparison (``paper_tables.record_comparison``) under the kinds of PAPER_TABLES; notebook
# 05 and ``python -m ballot_lib.paper_tables`` rebuild the tables of papers/ballot.md from any store that holds it.

def _baselines_in(frame: pd.DataFrame) -> list[str]:
    return [b for b in BASELINES if b in set(frame["variant"])]


def paper_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Both fair tables of one recorded comparison, stacked (column ``table``: ``last`` / ``val_rule``)."""
    base = _baselines_in(frame)
    parts = []
    for t in tables(base):
        part = comparison_table(frame, t)  # metric_list: the family notebook 03 shows and corrects over
        part.insert(0, "table", t.rule)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def paper_improvement(frame: pd.DataFrame) -> pd.DataFrame:
    """Ballot's improvement-% over each baseline, no selection and selection-matched, paper and robust forms
    (settings with collapsed runs left out: :func:`improvement_table`'s ``exclude``)."""
    base = _baselines_in(frame)
    matched = tables(base)[1].baselines
    gone = collapsed_runs(frame)
    adj = adjust_improvements({"last": improvement_table(frame, "Ballot plain", {b: b for b in base}, exclude=gone),
                               "val_rule": improvement_table(frame, "Ballot", dict(zip(base, matched)),
                                                             exclude=gone)})  # one family, as notebook 03's reading
    return pd.concat([t.assign(comparison=k) for k, t in adj.items()], ignore_index=True)


def paper_decomposition(frame: pd.DataFrame) -> pd.DataFrame:
    """The pooled decomposition rows of Ballot − LTH (vote, selection)."""
    d = decomposition(frame, exclude=collapsed_runs(frame))
    return d[d["dataset"] == "pooled"].reset_index(drop=True)


def md_comparison(table: pd.DataFrame) -> str:
    out = []
    for rule, g in table.groupby("table", sort=False):
        title = ("No checkpoint selection (Ballot plain vs baselines, last epoch)" if rule == "last" else
                 "Selection-matched (every method that can uses the val rule)")
        out += [f"**{title}**", "", markdown(g.drop(columns=["table"])), ""]
    return "\n".join(out).strip()


def md_improvement(table: pd.DataFrame) -> str:
    from .analysis import markdown_table

    t = table.copy()
    for f in ("paper", "robust"):
        t[f"{f} form (%)"] = [f"{r[f]:+.1f} [{r[f + '_lo']:+.1f}, {r[f + '_hi']:+.1f}]" for _, r in t.iterrows()]
    t["paper's number (%)"] = t["paper's number"].map("{:+.2f}".format)
    cols = ["comparison", "baseline", "paper form (%)", "robust form (%)"]
    if "padj" in t:
        t["robust: Holm p"] = ["" if pd.isna(q) else f"{q:.3g}" + (" †" if q < 0.05 else "") for q in t["padj"]]
        cols.append("robust: Holm p")
    cols.append("seeds")
    cols += [c for c in ("settings", "left out") if c in t]
    if "robust (all settings)" in t:
        t["robust, every setting (%)"] = [
            "" if pd.isna(r["robust (all settings)"]) else
            f"{r['robust (all settings)']:+.1f} [{r['robust_lo (all settings)']:+.1f}, "
            f"{r['robust_hi (all settings)']:+.1f}]" for _, r in t.iterrows()]
        cols.append("robust, every setting (%)")
    return markdown_table(t[cols + ["paper's number (%)"]])


def md_decomposition(table: pd.DataFrame) -> str:
    from .analysis import markdown_table

    t = table.copy()
    t["Δ (acc, MCD in pts; CWV raw)"] = [
        (f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if r["metric"] == "cwv" else
         f"{100 * r['diff']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]")
        + (" (CI excludes 0)" if r["significant"] else "") for _, r in t.iterrows()]  # per test: no bold
    cols = ["metric", "part", "Δ (acc, MCD in pts; CWV raw)", "n", "wins"]
    for c in ("settings", "left out"):
        if c in t:
            t[c] = t[c].astype(int)
            cols.append(c)
    return markdown_table(t[cols])


#: Notebook 03's table kinds, registered by :mod:`ballot_lib.paper_tables` (this module does not import it):
#: kind -> (builder from one recorded comparison's rows, identifying columns, markdown renderer).
PAPER_TABLES = {
    "baseline_comparison": (paper_comparison, ["table", "dataset", "model", "density", "method"], md_comparison),
    "baseline_improvement": (paper_improvement, ["comparison", "baseline"], md_improvement),
    "ballot_decomposition": (paper_decomposition, ["metric", "part"], md_decomposition),
}

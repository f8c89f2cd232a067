"""Fairness and accuracy metrics, exactly as SPEC §5 defines them.

Class metrics (Ballot's): ``acc_c`` is the recall of class c; ``acc`` the overall accuracy;

* CWV = (1/C') Σ_c (acc_c − acc)², over the C' classes present in the evaluation set, centred on the *overall*
  accuracy, population variance;
* MCD = max_c acc_c − min_c acc_c over present classes.

Group metrics (sensitive attribute g): per-group accuracy, max gap, worst-group accuracy, demographic-parity and
equal-opportunity gaps for binary targets, and the CEAG excess gap ψ_g between a dense and a sparse model.
Uncertainty: bootstrap CIs over test samples, mean/CI over seeds and paired differences between methods.

``y_true``/``y_pred`` accept 1-D integer torch tensors or numpy arrays.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import torch



def _as_long(a) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a))
    if t.dim() != 1:
        raise ValueError(f"expected a 1-D array of labels, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError("labels must be integers")
    return t.long()


def _check_pair(y_true, y_pred) -> tuple[torch.Tensor, torch.Tensor]:
    yt, yp = _as_long(y_true), _as_long(y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(yt)} vs {len(yp)}")
    if len(yt) == 0:
        raise ValueError("cannot compute metrics on an empty evaluation set")
    return yt, yp


def _check_count(name: str, value) -> int:
    """``value`` as an int if it is a real integer (numpy's too, not a bool, not ``3.0``) >= 1, else a
    :class:`~ballot_lib.checks.ParameterError` naming ``name``."""
    from .checks import check_int

    return check_int(name, value, low=1)


def confusion_matrix(y_true, y_pred, num_classes: int) -> torch.Tensor:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    num_classes = _check_count("num_classes", num_classes)
    yt, yp = _check_pair(y_true, y_pred)
    if yt.min() < 0 or yt.max() >= num_classes or yp.min() < 0 or yp.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(min(yt.min(), yp.min()))}, {int(max(yt.max(), yp.max()))}]")
    return torch.bincount(yt * num_classes + yp, minlength=num_classes * num_classes).view(num_classes, num_classes)


def accuracy(y_true, y_pred) -> float:
    """Overall accuracy: fraction of correct predictions."""
    yt, yp = _check_pair(y_true, y_pred)
    return float((yt == yp).double().mean())


def per_class_accuracy(y_true, y_pred, num_classes: int) -> torch.Tensor:
    """Recall of every class, ``[C]`` float64; classes absent from ``y_true`` are NaN.

    Example:
        >>> per_class_accuracy([0, 0, 1, 1], [0, 1, 1, 1], 3)
        tensor([0.5000, 1.0000,    nan], dtype=torch.float64)
    """
    num_classes = _check_count("num_classes", num_classes)
    cm = confusion_matrix(y_true, y_pred, num_classes).double()
    support = cm.sum(1)
    acc = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    present = support > 0
    acc[present] = cm.diag()[present] / support[present]
    return acc


def cwv(y_true, y_pred, num_classes: int) -> float:
    """Class-wise variance: population variance of per-class recall around the overall accuracy.

    Only classes present in ``y_true`` count (C' of them).
    """
    acc_c = per_class_accuracy(y_true, y_pred, num_classes)
    acc_c = acc_c[~torch.isnan(acc_c)]
    acc = accuracy(y_true, y_pred)
    return float(((acc_c - acc) ** 2).mean())


def mcd(y_true, y_pred, num_classes: int) -> float:
    """Maximum class difference: max − min per-class recall over classes present in ``y_true``."""
    acc_c = per_class_accuracy(y_true, y_pred, num_classes)
    acc_c = acc_c[~torch.isnan(acc_c)]
    return float(acc_c.max() - acc_c.min())


def per_group_accuracy(y_true, y_pred, groups, num_groups: int) -> torch.Tensor:
    """Accuracy within each group, ``[G]`` float64; absent groups are NaN."""
    num_groups = _check_count("num_groups", num_groups)
    yt, yp = _check_pair(y_true, y_pred)
    g = _as_long(groups)
    if len(g) != len(yt):
        raise ValueError(f"groups has length {len(g)}, labels {len(yt)}")
    correct = (yt == yp).double()
    out = torch.full((num_groups,), float("nan"), dtype=torch.float64)
    for gi in range(num_groups):
        sel = g == gi
        if sel.any():
            out[gi] = correct[sel].mean()
    return out


def _rate_gap(values: torch.Tensor, g: torch.Tensor, num_groups: int) -> tuple[float, float]:
    """(signed gap between groups 0 and 1 — or max − min for more groups —, absolute gap) of the mean of values."""
    rates = [values[g == gi].mean() for gi in range(num_groups) if (g == gi).any()]
    if len(rates) < 2:
        return float("nan"), float("nan")
    if num_groups == 2:
        signed = float(rates[1] - rates[0])
        return signed, abs(signed)
    r = torch.stack(rates)
    return float(r.max() - r.min()), float(r.max() - r.min())


def group_metrics(y_true, y_pred, groups, num_groups: int, positive: int = 1,
                  num_classes: Optional[int] = None) -> dict[str, float]:
    """Per-group accuracies, max gap, worst-group accuracy; DP and EO gaps for a binary target.

    Signed gaps are group 1 minus group 0 (for two groups). The EO gap is the difference in true-positive rate.
    The target is binary when ``num_classes`` is 2 (given: :func:`evaluate_predictions` passes it; an evaluation
    set of a 3-class task that happens to hold only labels 0 and 1 gets no DP/EO gap); without it, when the labels
    and predictions seen are all 0/1.
    """
    yt, yp = _check_pair(y_true, y_pred)
    g = _as_long(groups)
    acc_g = per_group_accuracy(yt, yp, g, num_groups)
    present = acc_g[~torch.isnan(acc_g)]
    out: dict[str, float] = {f"acc_group_{i}": float(a) for i, a in enumerate(acc_g)}
    out["group_acc_gap"] = float(present.max() - present.min()) if len(present) else float("nan")
    out["worst_group_acc"] = float(present.min()) if len(present) else float("nan")
    binary = num_classes == 2 if num_classes is not None else int(max(yt.max(), yp.max())) <= 1
    if binary:
        pos_pred = (yp == positive).double()
        out["dp_gap_signed"], out["dp_gap"] = _rate_gap(pos_pred, g, num_groups)
        is_pos = yt == positive
        if is_pos.any():
            out["eo_gap_signed"], out["eo_gap"] = _rate_gap(pos_pred[is_pos], g[is_pos], num_groups)
    return out


def ceag(dense_group_acc, sparse_group_acc, dense_acc: float, sparse_acc: float) -> torch.Tensor:
    """CEAG excess accuracy loss per group: ψ_g = (acc_g(dense) − acc_g(sparse)) − (acc(dense) − acc(sparse))."""
    d = torch.as_tensor(np.asarray(dense_group_acc), dtype=torch.float64)
    s = torch.as_tensor(np.asarray(sparse_group_acc), dtype=torch.float64)
    return (d - s) - (dense_acc - sparse_acc)


def ceag_max(dense_group_acc, sparse_group_acc, dense_acc: float, sparse_acc: float) -> float:
    """max_g ψ_g (:func:`ceag`): the largest excess accuracy loss of any group present in both evaluations (NaN
    when none is)."""
    psi = ceag(dense_group_acc, sparse_group_acc, dense_acc, sparse_acc)
    psi = psi[~torch.isnan(psi)]
    return float(psi.max()) if psi.numel() else float("nan")


def evaluate_predictions(
    y_true, y_pred, num_classes: int, groups=None, num_groups: int = 0
) -> dict[str, float]:
    """All scalar metrics of one evaluation: acc, CWV, MCD, per-class recalls and group metrics if available."""
    yt, yp = _check_pair(y_true, y_pred)
    out = {"acc": accuracy(yt, yp), "cwv": cwv(yt, yp, num_classes), "mcd": mcd(yt, yp, num_classes)}
    for c, a in enumerate(per_class_accuracy(yt, yp, num_classes).tolist()):
        out[f"acc_class_{c}"] = a
    if groups is not None and num_groups > 0:
        out.update(group_metrics(yt, yp, groups, num_groups, num_classes=num_classes))
    return out


def bootstrap_ci(
    y_true, y_pred, metric, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, **metric_kwargs
) -> tuple[float, float, float]:
    """(point estimate, lower, upper) percentile bootstrap CI of ``metric(y_true, y_pred, **kw)`` over samples."""
    yt, yp = _check_pair(y_true, y_pred)
    rng = np.random.default_rng(seed)
    n = len(yt)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = torch.from_numpy(rng.integers(0, n, n))
        stats[b] = metric(yt[idx], yp[idx], **metric_kwargs)
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(metric(yt, yp, **metric_kwargs)), float(lo), float(hi)


def _t_quantile(df: int, q: float = 0.975) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def mean_ci(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float, float, int]:
    """(mean, half-width of the Student-t CI, std, n) over seeds; NaNs are dropped; half-width NaN if n < 2."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    if n == 1:
        return float(v[0]), float("nan"), float("nan"), 1
    sd = float(v.std(ddof=1))
    mean = float(v.mean())
    if _zero_spread(mean, sd):  # equal differences up to float rounding (e.g. one image in every seed): no spread
        sd = 0.0
    return mean, _t_quantile(n - 1, 1 - alpha / 2) * sd / math.sqrt(n), sd, n


def _zero_spread(mean: float, sd: float) -> bool:
    """Whether a spread ``sd`` is rounding noise of equal values (``(17-s)/18 - (10+s)/18`` differs from
    ``7/18`` by an ulp across seeds: sd ~ 1e-17 gave p ~ 1e-16 with two seeds)."""
    return sd <= 1e-9 * max(1.0, abs(mean))


def paired_t_pvalue(mean: float, sd: float, n: int) -> float:
    """Two-sided p-value of the paired t-test (H0: mean difference 0) from the differences' mean, sd and count;
    the same test as ``scipy.stats.ttest_rel``. NaN with fewer than 2 differences.

    Zero spread (every seed moved by exactly the same amount, common when metrics move in steps of one test
    image) makes the t statistic infinite and its p-value 0 even with two seeds. There the exact sign-flip
    (permutation) test is used instead: all n differences share one sign, so p = 2 / 2ⁿ (1 when the mean is 0),
    which cannot fall below 0.05 with fewer than 6 seeds."""
    if n < 2 or math.isnan(mean) or math.isnan(sd):
        return float("nan")
    if _zero_spread(mean, sd):
        return min(1.0, 2.0 / 2 ** n) if abs(mean) > 1e-12 else 1.0
    from scipy import stats

    t = mean / (sd / math.sqrt(n))
    return float(2.0 * stats.t.sf(abs(t), n - 1))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], lower_is_better: bool = True,
                      alpha: float = 0.05, value_range: Optional[tuple[float, float]] = None) -> dict[str, float]:
    """Paired comparison of method A against B over the seeds both have.

    Returns the mean difference A − B, its Student-t CI, the number of paired seeds, the number of seeds where
    A wins (strictly better in the metric's direction), the two-sided p-value ``p`` of
    :func:`paired_t_pvalue` (what a multiple-comparison correction, :func:`adjust_pvalues`, takes) and
    ``significant`` = ``p < alpha``: the CI excludes 0, except with zero spread, where the CI has no width and
    the exact sign-flip test decides.

    ``value_range=(lo, hi)``, the values a metric can take (accuracy, MCD: ``(0, 1)``), bounds the difference to
    ``[lo − hi, hi − lo]``: the CI is intersected with it (a t-interval over a few seeds with one collapsed run can
    reach beyond it, e.g. an accuracy difference of −144 points). The intersection keeps the CI's coverage (the
    true difference lies inside the bounds) and never changes whether it contains 0 (a bound then reads exactly
    ``±(hi − lo)``).
    """
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds if not (math.isnan(a[s]) or math.isnan(b[s]))]
    mean, half, sd, n = mean_ci(diffs, alpha)
    wins = sum((d < 0) if lower_is_better else (d > 0) for d in diffs)
    p = paired_t_pvalue(mean, sd, n)
    low, high = _bounded(mean - half, mean + half, half, value_range)
    return {"diff": mean, "ci_low": low, "ci_high": high, "n": n, "wins": int(wins),
            "significant": bool(p < alpha), "p": p}


def seed_mean_test(diffs: Sequence[float], alpha: float = 0.05,
                   value_range: Optional[tuple[float, float]] = None) -> dict[str, float]:
    """Mean of per-seed differences (already paired, e.g. averaged over settings) with its Student-t CI,
    ``p`` (:func:`paired_t_pvalue`) and ``significant`` (``p < alpha``), as :func:`paired_difference` does;
    ``value_range`` bounds the CI as there (a mean of differences of a metric in [lo, hi] lies in
    [lo − hi, hi − lo] too)."""
    mean, half, sd, n = mean_ci(diffs, alpha)
    p = paired_t_pvalue(mean, sd, n)
    low, high = _bounded(mean - half, mean + half, half, value_range)
    return {"diff": mean, "ci_low": low, "ci_high": high, "n": n, "significant": bool(p < alpha), "p": p}


def _bounded(low: float, high: float, half: float, value_range: Optional[tuple[float, float]]
             ) -> tuple[float, float]:
    """A difference's CI ``[low, high]`` intersected with ``[lo − hi, hi − lo]`` for metric values in ``value_range``
    (unchanged without a range or a CI)."""
    if value_range is None or math.isnan(half):
        return low, high
    span = float(value_range[1]) - float(value_range[0])
    if not span > 0:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
    return max(low, -span), min(high, span)


#: Multiple-comparison corrections of :func:`adjust_pvalues`.
CORRECTIONS = ("bh", "holm", "none")


def adjust_pvalues(p: "Sequence[float] | np.ndarray", correction: str = "bh") -> np.ndarray:
    """Multiple-comparison adjusted p-values: ``"bh"`` (Benjamini–Hochberg, false discovery rate), ``"holm"``
    (Holm–Bonferroni, family-wise error) or ``"none"``. NaN p-values stay NaN and do not count as tests."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; valid: {list(CORRECTIONS)}")
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0 or correction == "none":
        out[ok] = q
        return out
    order = np.argsort(q, kind="stable")
    ranked = q[order]
    if correction == "bh":
        adj = ranked * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(adj[::-1])[::-1]
    else:
        adj = np.maximum.accumulate(ranked * (m - np.arange(m)))
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def improvement(fair_a: Mapping[str, Sequence[float]], fair_b: Mapping[str, Sequence[float]]) -> float:
    """Improvement of A over B in percent [reconstruction of the paper's headline form].

    Mean, over settings and over the metrics given (e.g. ``{"cwv": [...], "mcd": [...]}``, one value per setting,
    aligned between A and B), of ``(F_B − F_A) / F_B × 100``. Settings where ``F_B == 0`` are skipped.
    """
    terms = []
    for metric, values_b in fair_b.items():
        values_a = fair_a[metric]
        if len(values_a) != len(values_b):
            raise ValueError(f"metric {metric!r}: {len(values_a)} settings for A but {len(values_b)} for B")
        for fa, fb in zip(values_a, values_b):
            if fb != 0 and not (math.isnan(fa) or math.isnan(fb)):
                terms.append((fb - fa) / fb * 100.0)
    return float(np.mean(terms)) if terms else float("nan")

"""Metrics against hand-computed values, against the SPEC §5 formulas in plain numpy, and against fairlearn."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ballot_lib import metrics as M

# Student-t quantiles t_{0.975, df} (textbook values, to 12 digits).
T975 = {2: 4.302652729749, 3: 3.182446305284}


# ------------------------------------------------------------------------------------------ class metrics by hand


def test_per_class_accuracy_cwv_mcd_by_hand_with_an_absent_class():
    # Classes 0, 1, 2 present (4, 2, 2 samples); class 3 absent from y_true but predicted once.
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 3, 1, 0, 2, 2]
    acc_c = M.per_class_accuracy(y_true, y_pred, 4)
    assert acc_c.dtype == torch.float64 and acc_c.shape == (4,)
    assert acc_c[:3].tolist() == [0.75, 0.5, 1.0]
    assert math.isnan(acc_c[3])
    # acc = 6/8; CWV over the C' = 3 present classes: (0^2 + 0.25^2 + 0.25^2) / 3.
    assert M.accuracy(y_true, y_pred) == 0.75
    assert M.cwv(y_true, y_pred, 4) == pytest.approx(0.125 / 3, abs=1e-15)
    # MCD over present classes only (the absent class's NaN is ignored, not treated as 0).
    assert M.mcd(y_true, y_pred, 4) == 0.5


def test_cwv_is_centred_on_overall_accuracy_not_on_the_mean_of_class_recalls():
    # Imbalanced: 8 samples of class 0 (all right), 2 of class 1 (all wrong): acc_c = [1, 0], acc = 0.8.
    y_true = [0] * 8 + [1] * 2
    y_pred = [0] * 8 + [0] * 2
    overall = ((1 - 0.8) ** 2 + (0 - 0.8) ** 2) / 2  # 0.34: the SPEC formula
    mean_centred = ((1 - 0.5) ** 2 + (0 - 0.5) ** 2) / 2  # 0.25: np.var(acc_c)
    got = M.cwv(y_true, y_pred, 2)
    assert got == pytest.approx(overall, abs=1e-15)
    assert got != pytest.approx(mean_centred)
    # Population variance (divide by C'), not the sample variance (C' - 1) = 0.68.
    assert got != pytest.approx(0.68)
    assert M.mcd(y_true, y_pred, 2) == 1.0


def test_perfect_and_constant_predictions():
    y = np.array([0, 1, 2, 2, 1, 0])
    assert M.cwv(y, y, 3) == 0.0 and M.mcd(y, y, 3) == 0.0
    # Always predicting class 2: recalls [0, 0, 1], acc = 2/6.
    const = np.full_like(y, 2)
    a = 2 / 6
    assert M.cwv(y, const, 3) == pytest.approx(((0 - a) ** 2 * 2 + (1 - a) ** 2) / 3, abs=1e-15)
    assert M.mcd(y, const, 3) == 1.0


@pytest.mark.parametrize("convert", [
    lambda a: np.asarray(a, dtype=np.int64),
    lambda a: np.asarray(a, dtype=np.int32),
    lambda a: torch.tensor(a, dtype=torch.long),
    lambda a: torch.tensor(a, dtype=torch.int32),
    lambda a: list(a),
], ids=["np-int64", "np-int32", "torch-long", "torch-int32", "list"])
def test_numpy_torch_and_list_inputs_agree(convert):
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 3, 1, 0, 2, 2]
    acc_c = M.per_class_accuracy(convert(y_true), convert(y_pred), 4)
    assert isinstance(acc_c, torch.Tensor)
    assert acc_c[:3].tolist() == [0.75, 0.5, 1.0] and math.isnan(acc_c[3])
    assert M.cwv(convert(y_true), convert(y_pred), 4) == pytest.approx(0.125 / 3, abs=1e-15)
    assert M.mcd(convert(y_true), convert(y_pred), 4) == 0.5
    assert isinstance(M.cwv(convert(y_true), convert(y_pred), 4), float)
    assert isinstance(M.mcd(convert(y_true), convert(y_pred), 4), float)


def test_label_errors():
    with pytest.raises(ValueError, match="differ in length"):
        M.cwv([0, 1], [0], 2)
    with pytest.raises(ValueError, match="empty"):
        M.mcd([], [], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        M.per_class_accuracy([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="1-D"):
        M.cwv(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int), 2)


# ------------------------------------------------------------------------------------------ oracles


def _random_predictions(seed: int):
    """Random labels with class-dependent error rates; some classes may be absent from y_true."""
    rng = np.random.default_rng(seed)
    present = int(rng.integers(2, 10))
    num_classes = present + int(rng.integers(0, 3))  # up to 2 extra classes that never occur in y_true
    n = int(rng.integers(15, 300))
    y_true = rng.integers(0, present, n)
    err = rng.uniform(0, 0.8, present)[y_true]
    flip = rng.random(n) < err
    y_pred = np.where(flip, rng.integers(0, num_classes, n), y_true)
    return y_true, y_pred, num_classes


def numpy_cwv(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """SPEC §5 written out: (1/C') Σ_c (acc_c − acc)² over classes present in y_true, centred on acc."""
    acc = np.mean(y_true == y_pred)
    acc_c = np.array([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)])
    return float(np.sum((acc_c - acc) ** 2) / len(acc_c))


@pytest.mark.parametrize("seed", range(25))
def test_per_class_accuracy_and_mcd_match_fairlearn(seed):
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    y_true, y_pred, C = _random_predictions(seed)
    mf = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=y_true)
    ours = M.per_class_accuracy(y_true, y_pred, C)
    by_group = mf.by_group
    for c in range(C):
        if c in by_group.index:
            assert float(ours[c]) == pytest.approx(float(by_group[c]), abs=1e-12)
        else:
            assert math.isnan(ours[c])
    assert M.mcd(y_true, y_pred, C) == pytest.approx(mf.difference(method="between_groups"), abs=1e-12)
    assert M.accuracy(y_true, y_pred) == pytest.approx(mf.overall, abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_cwv_matches_the_spec_formula(seed):
    y_true, y_pred, C = _random_predictions(seed)
    expected = numpy_cwv(y_true, y_pred)
    assert M.cwv(y_true, y_pred, C) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert M.cwv(torch.from_numpy(y_true), torch.from_numpy(y_pred), C) == pytest.approx(expected, rel=1e-12,
                                                                                         abs=1e-15)


@pytest.mark.parametrize("seed", range(10))
def test_group_gaps_match_fairlearn(seed):
    from fairlearn.metrics import MetricFrame, demographic_parity_difference, true_positive_rate
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(30, 200))
    y_true = rng.integers(0, 2, n)
    g = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.3 + 0.3 * g, 1 - y_true, y_true)
    out = M.group_metrics(y_true, y_pred, g, 2)
    assert out["dp_gap"] == pytest.approx(demographic_parity_difference(y_true, y_pred, sensitive_features=g),
                                          abs=1e-12)
    tpr = MetricFrame(metrics=true_positive_rate, y_true=y_true, y_pred=y_pred, sensitive_features=g)
    assert out["eo_gap"] == pytest.approx(tpr.difference(), abs=1e-12)
    assert out["eo_gap_signed"] == pytest.approx(tpr.by_group[1] - tpr.by_group[0], abs=1e-12)
    acc = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=g)
    assert out["group_acc_gap"] == pytest.approx(acc.difference(), abs=1e-12)
    assert out["worst_group_acc"] == pytest.approx(acc.group_min(), abs=1e-12)


# ------------------------------------------------------------------------------------------ group metrics by hand


def test_group_metrics_by_hand():
    y_true = [1, 1, 0, 0, 1, 1, 1, 0]
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    y_pred = [1, 0, 0, 1, 1, 1, 1, 0]
    out = M.group_metrics(y_true, y_pred, groups, 2)
    # Group 0: 2 of 4 right; group 1: 4 of 4 right.
    assert out["acc_group_0"] == 0.5 and out["acc_group_1"] == 1.0
    assert out["group_acc_gap"] == 0.5 and out["worst_group_acc"] == 0.5
    # P(ŷ=1 | g=0) = 2/4, P(ŷ=1 | g=1) = 3/4: DP gap (group 1 − group 0) = 0.25.
    assert out["dp_gap_signed"] == pytest.approx(0.25) and out["dp_gap"] == pytest.approx(0.25)
    # TPR: group 0 1/2, group 1 3/3: EO gap 0.5 (differs from the DP gap, so the two are not mixed up).
    assert out["eo_gap_signed"] == pytest.approx(0.5) and out["eo_gap"] == pytest.approx(0.5)
    # Swapping the group labels flips the sign of the signed gaps and keeps the absolute ones.
    swapped = M.group_metrics(y_true, y_pred, [1 - x for x in groups], 2)
    assert swapped["dp_gap_signed"] == pytest.approx(-0.25) and swapped["dp_gap"] == pytest.approx(0.25)
    assert swapped["eo_gap_signed"] == pytest.approx(-0.5) and swapped["eo_gap"] == pytest.approx(0.5)


def test_group_metrics_multiclass_has_no_binary_gaps_and_absent_group_is_nan():
    y_true = [0, 1, 2, 2]
    y_pred = [0, 1, 1, 2]
    out = M.group_metrics(y_true, y_pred, [0, 0, 2, 2], 3)
    assert out["acc_group_0"] == 1.0 and out["acc_group_2"] == 0.5 and math.isnan(out["acc_group_1"])
    assert out["group_acc_gap"] == 0.5 and out["worst_group_acc"] == 0.5
    assert "dp_gap" not in out and "eo_gap" not in out


def test_ceag_by_hand():
    # Overall accuracy drops by 0.13; group 0 loses 0.05 (less than average), group 1 loses 0.2.
    psi = M.ceag([0.9, 0.8], [0.85, 0.6], 0.85, 0.72)
    assert psi.tolist() == pytest.approx([0.05 - 0.13, 0.2 - 0.13], abs=1e-12)
    assert float(psi.max()) == pytest.approx(0.07, abs=1e-12)


def test_evaluate_predictions_bundles_the_metrics():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 2]
    out = M.evaluate_predictions(y_true, y_pred, 4)
    assert out["acc"] == 0.75 and out["mcd"] == 0.5 and out["cwv"] == pytest.approx(0.125 / 3)
    assert [out[f"acc_class_{c}"] for c in range(3)] == [0.75, 0.5, 1.0] and math.isnan(out["acc_class_3"])


# ------------------------------------------------------------------------------------------ uncertainty


def test_mean_ci_by_hand():
    mean, half, sd, n = M.mean_ci([1.0, 2.0, 3.0])
    assert (mean, sd, n) == (2.0, 1.0, 3)
    assert half == pytest.approx(T975[2] / math.sqrt(3), rel=1e-10)
    # NaNs and Nones are dropped; one value has no CI.
    assert M.mean_ci([1.0, float("nan"), None, 3.0])[:1] == (2.0,)
    m1, h1, s1, n1 = M.mean_ci([0.4])
    assert m1 == 0.4 and math.isnan(h1) and math.isnan(s1) and n1 == 1
    assert M.mean_ci([])[3] == 0


def test_paired_difference_not_significant_by_hand():
    a = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.5}
    b = {0: 0.2, 1: 0.3, 2: 0.4, 3: 0.4, 9: 1.0}  # seed 9 has no partner and is ignored
    out = M.paired_difference(a, b)
    # Differences −0.1, −0.1, −0.1, +0.1: mean −0.05, sd 0.1, half-width t_{.975,3} · 0.1 / 2.
    half = T975[3] * 0.1 / 2
    assert out["n"] == 4 and out["wins"] == 3
    assert out["diff"] == pytest.approx(-0.05, abs=1e-12)
    assert out["ci_low"] == pytest.approx(-0.05 - half, abs=1e-9)
    assert out["ci_high"] == pytest.approx(-0.05 + half, abs=1e-9)
    assert out["significant"] is False
    # Higher-is-better metrics (e.g. accuracy): A wins only seed 3.
    assert M.paired_difference(a, b, lower_is_better=False)["wins"] == 1


def test_paired_difference_significant_by_hand():
    b = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8}
    a = {0: 0.4, 1: 0.49, 2: 0.61, 3: 0.7}  # A lower by 0.10, 0.11, 0.09, 0.10
    out = M.paired_difference(a, b)
    sd = math.sqrt((0.01 ** 2 * 2) / 3)
    assert out["diff"] == pytest.approx(-0.1, abs=1e-12)
    assert out["ci_high"] == pytest.approx(-0.1 + T975[3] * sd / 2, abs=1e-9)
    assert out["wins"] == 4 and out["n"] == 4 and out["significant"] is True
    # With a single paired seed nothing can be significant.
    assert M.paired_difference({0: 0.1}, {0: 0.9})["significant"] is False


def test_paired_difference_ci_is_bounded_by_the_metrics_range_by_hand():
    # One collapsed seed: accuracy differences 0, 0, −0.9 over three seeds. mean −0.3, sd √0.27, t_{.975,2} = 4.303:
    # the t-interval −0.3 ± 1.291 reaches below −1, the lowest possible accuracy difference.
    a, b = {0: 0.9, 1: 0.9, 2: 0.0}, {0: 0.9, 1: 0.9, 2: 0.9}
    half = T975[2] * math.sqrt(0.27) / math.sqrt(3)
    free = M.paired_difference(a, b, lower_is_better=False)
    assert free["ci_low"] == pytest.approx(-0.3 - half) and free["ci_low"] < -1
    out = M.paired_difference(a, b, lower_is_better=False, value_range=(0.0, 1.0))
    assert out["ci_low"] == -1.0 and out["ci_high"] == pytest.approx(-0.3 + half)  # only the impossible part is cut
    assert {k: out[k] for k in ("diff", "n", "wins", "significant", "p")} == \
        {k: free[k] for k in ("diff", "n", "wins", "significant", "p")}
    # A range of width 0.5 bounds the difference to ±0.5, on both sides; an interval inside it is left alone.
    wide = M.paired_difference({0: 0.0, 1: 0.5, 2: 0.25}, {0: 0.25, 1: 0.0, 2: 0.25}, value_range=(0.0, 0.5))
    assert wide["ci_low"] == -0.5 and wide["ci_high"] == 0.5
    inside = M.paired_difference({0: 0.4, 1: 0.49, 2: 0.61}, {0: 0.5, 1: 0.6, 2: 0.7}, value_range=(0.0, 1.0))
    plain = M.paired_difference({0: 0.4, 1: 0.49, 2: 0.61}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert (inside["ci_low"], inside["ci_high"]) == (plain["ci_low"], plain["ci_high"])
    with pytest.raises(ValueError, match="value_range"):
        M.paired_difference(a, b, value_range=(1.0, 1.0))
    # Means of per-seed differences pooled over settings (the decomposition's pooled rows) are bounded alike.
    pooled = M.seed_mean_test([0.0, 0.0, -0.9], value_range=(0.0, 1.0))
    assert pooled["ci_low"] == -1.0 and pooled["ci_high"] == pytest.approx(-0.3 + half)
    assert M.seed_mean_test([0.0, 0.0, -0.9])["ci_low"] == pytest.approx(-0.3 - half)


def test_improvement_by_hand():
    a = {"cwv": [0.01, 0.02], "mcd": [0.3, 0.45]}
    b = {"cwv": [0.02, 0.04], "mcd": [0.6, 0.5]}
    # Terms: 50 %, 50 % (CWV), 50 %, 10 % (MCD): mean 40 %.
    assert M.improvement(a, b) == pytest.approx(40.0, abs=1e-12)
    # A worse than B gives a negative improvement; F_B = 0 settings are skipped.
    assert M.improvement({"cwv": [0.03, 0.5]}, {"cwv": [0.02, 0.0]}) == pytest.approx(-50.0)
    with pytest.raises(ValueError, match="cwv"):
        M.improvement({"cwv": [0.1]}, {"cwv": [0.1, 0.2]})


def test_bootstrap_ci_brackets_the_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 120)
    y_pred = np.where(rng.random(120) < 0.3, (y_true + 1) % 3, y_true)
    point, lo, hi = M.bootstrap_ci(y_true, y_pred, M.mcd, n_boot=200, seed=1, num_classes=3)
    assert point == M.mcd(y_true, y_pred, 3)
    assert lo <= point <= hi and lo < hi
    assert M.bootstrap_ci(y_true, y_pred, M.mcd, n_boot=200, seed=1, num_classes=3) == (point, lo, hi)


def test_ceag_max_and_its_table_by_hand():
    """SPEC §5: ψ_g = (acc_g(dense) − acc_g(sparse)) − (acc(dense) − acc(sparse)) and max_g ψ_g."""
    import numpy as np
    import pandas as pd

    from ballot_lib.analysis import ceag_excess
    from ballot_lib.metrics import ceag_max

    # dense: overall 0.9, groups 0.95 / 0.80; sparse: overall 0.85, groups 0.93 / 0.65
    # ψ = (0.02, 0.15) − 0.05 = (−0.03, 0.10): group 1 lost 10 points beyond the overall loss
    assert ceag_max([0.95, 0.80], [0.93, 0.65], 0.9, 0.85) == pytest.approx(0.10)
    assert ceag_max([0.95, float("nan")], [0.93, 0.5], 0.9, 0.85) == pytest.approx(-0.03)  # absent group ignored
    assert math.isnan(ceag_max([float("nan")], [0.5], 0.9, 0.85))
    rows = []
    for seed, (sa, s0, s1) in enumerate([(0.85, 0.93, 0.65), (0.88, 0.94, 0.70)]):
        rows.append({"variant": "dense", "density_target": 1.0, "seed": seed, "split": "test", "acc": 0.9,
                     "acc_group_0": 0.95, "acc_group_1": 0.80})
        rows.append({"variant": "LTH", "density_target": 0.1, "seed": seed, "split": "test", "acc": sa,
                     "acc_group_0": s0, "acc_group_1": s1})
    t = ceag_excess(pd.DataFrame(rows))
    assert list(t["worst_group"]) == [1, 1]
    np.testing.assert_allclose(t["ceag_max"], [0.10, 0.08])  # seed 1: ψ_1 = (0.80 − 0.70) − (0.90 − 0.88)
    assert ceag_excess(pd.DataFrame(rows).drop(columns=["acc_group_0", "acc_group_1"])).empty
    # Several settings: each run is paired with the dense run of its own (dataset, model, seed), never another's.
    two = pd.concat([pd.DataFrame(rows).assign(dataset="adult", model="mlp"),
                     pd.DataFrame(rows).assign(dataset="celeba", model="mlp",
                                               acc_group_1=lambda f: f["acc_group_1"] - 0.05)], ignore_index=True)
    t2 = ceag_excess(two).set_index(["dataset", "seed"])
    assert len(t2) == 4
    np.testing.assert_allclose(t2.loc["adult", "ceag_max"], [0.10, 0.08])
    np.testing.assert_allclose(t2.loc["celeba", "ceag_max"], [0.10, 0.08])  # both sides moved by −0.05
    # Two dense runs for one (dataset, model, seed) are an error, not a silent first pick.
    with pytest.raises(ValueError, match="several 'dense' runs"):
        ceag_excess(pd.concat([two, two[two["variant"] == "dense"].iloc[:1]], ignore_index=True))


def test_paired_difference_p_value_is_scipys_paired_t_test_and_agrees_with_the_ci():
    from scipy import stats

    rng = np.random.default_rng(0)
    agree = 0
    for trial in range(300):
        n = int(rng.integers(2, 8))
        a = rng.normal(0.3, 0.05, n)
        b = a + rng.normal(rng.choice([0.0, 0.03]), 0.03, n)
        out = M.paired_difference(dict(enumerate(a)), dict(enumerate(b)))
        assert out["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
        # p < 0.05 exactly when the 95 % CI excludes 0 (same t distribution, same df).
        agree += (out["p"] < 0.05) == out["significant"]
    assert agree == 300
    # Fewer than two seeds: no test.
    assert math.isnan(M.paired_difference({0: 0.1}, {0: 0.2})["p"])
    assert M.paired_difference({0: 0.1, 1: 0.2}, {0: 0.1, 1: 0.2})["p"] == 1.0


def test_zero_spread_is_decided_by_the_exact_sign_flip_test_not_an_infinite_t():
    # Every seed moved by exactly 0.1 (e.g. one test image): the t statistic is infinite, its CI has no width.
    for n in range(2, 9):
        a = {s: 0.3 for s in range(n)}
        b = {s: 0.2 for s in range(n)}
        out = M.paired_difference(a, b)
        # Brute force: of the 2^n sign flips of the n equal differences, 2 are as extreme (all +, all −).
        flips = [sum(sign * 0.1 for sign in signs) for signs in itertools.product((1, -1), repeat=n)]
        p_exact = sum(abs(f) >= n * 0.1 - 1e-12 for f in flips) / len(flips)
        assert out["p"] == pytest.approx(p_exact)
        assert out["significant"] is (n >= 6) and out["ci_low"] == pytest.approx(out["ci_high"])


def test_equal_differences_up_to_float_rounding_are_zero_spread_too():
    """One image in every seed, computed from different counts: the differences agree but for an ulp, sd ~ 1e-17,
    and the t-test gave p ~ 1e-16 with two seeds (review); the sign-flip test gives 2 / 2^n."""
    for n in (2, 3, 4):
        a = {s: (17 - s) / 18 - (10 + s) / 18 for s in range(n)}
        b = {s: (17 - s) / 18 - (11 + s) / 18 for s in range(n)}
        diffs = [a[s] - b[s] for s in range(n)]
        assert len(set(diffs)) > 1 or n == 2  # not bit-identical (the case the old guard missed)
        out = M.paired_difference(a, b)
        assert out["p"] == pytest.approx(2 / 2 ** n) and out["significant"] is False
        assert out["ci_low"] == pytest.approx(out["ci_high"])
    assert M.paired_t_pvalue(1e-13, 0.0, 3) == 1.0  # a mean of rounding noise is no difference


def test_dp_and_eo_gaps_only_for_a_binary_task_even_when_a_split_holds_two_labels():
    y_true, y_pred, groups = [0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]
    three = M.evaluate_predictions(y_true, y_pred, 3, groups=groups, num_groups=2)
    assert "dp_gap" not in three and "eo_gap" not in three and "group_acc_gap" in three
    two = M.evaluate_predictions(y_true, y_pred, 2, groups=groups, num_groups=2)
    # positive rate: group 0 predicts 1 once of 2, group 1 never: DP gap 0.5; TPR 1/1 vs 0/1: EO gap 1.
    assert two["dp_gap"] == pytest.approx(0.5) and two["eo_gap"] == pytest.approx(1.0)

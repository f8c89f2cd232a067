"""Analyses over the tidy results table (paired comparisons by seed, per-class deltas, verdicts) and the figures.

Every expected number comes from the small hand-made table below: the per-seed differences are written out in
the tests, and means and Student-t half-widths are computed from them with ``scipy.stats.t`` (not with the
library's own ``mean_ci``).
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from ballot_lib import analysis, plots  # noqa: E402
from ballot_lib.analysis import (  # noqa: E402
    class_columns,
    layer_overlap,
    notebook_parameters,
    run_tag,
    sign_agreement_by_epoch,
    describe_paired,
    fairness_verdicts,
    group_columns,
    markdown_table,
    paired,
    per_class_deltas,
    select_by_rule,
    summarize,
    versus,
)

# ------------------------------------------------------------------------------------------ hand-made table

# Test-split values per (variant, density): one list entry per seed, seeds in SEED_ORDER of the variant.
# "B" has a fourth seed (3) that neither "dense" nor "A" has: it must never be paired.
SEEDS = {"dense": [0, 1, 2], "A": [0, 1, 2], "B": [0, 1, 2, 3]}
METHOD = {"dense": "dense", "A": "lth", "B": "magnitude"}
TEST = {
    ("dense", 1.0): {"acc": [0.80, 0.70, 0.90], "cwv": [0.010, 0.020, 0.030], "mcd": [0.30, 0.20, 0.40],
                     "classes": [[0.9, 0.8, 0.7], [0.8, 0.6, 0.7], [0.9, 0.9, 0.8]]},
    # acc diffs vs dense +.02 -.01 +.02 (n.s.), cwv +.002 +.003 +.004 (significant up), mcd +.05 -.03 +.01 (n.s.)
    ("A", 0.5): {"acc": [0.82, 0.69, 0.92], "cwv": [0.012, 0.023, 0.034], "mcd": [0.35, 0.17, 0.41],
                 "classes": [[1.0, 0.8, 0.6], [0.9, 0.6, 0.5], [1.0, 0.9, 0.5]]},
    # acc -.10 -.12 -.11, cwv -.004 -.005 -.006, mcd -.10 -.11 -.12: all significant down
    ("A", 0.1): {"acc": [0.70, 0.58, 0.79], "cwv": [0.006, 0.015, 0.024], "mcd": [0.20, 0.09, 0.28],
                 "classes": [[0.8, 0.7, 0.6], [0.7, 0.5, 0.6], [0.8, 0.8, 0.7]]},
    # acc +.01 0 -.01 (n.s.), cwv 0 0 0 (n.s., zero spread), mcd -.02 -.03 -.04 (significant down)
    ("B", 0.5): {"acc": [0.81, 0.70, 0.89, 0.50], "cwv": [0.010, 0.020, 0.030, 0.5], "mcd": [0.28, 0.17, 0.36, 0.9],
                 "classes": [[0.9, 0.8, 0.7], [0.8, 0.6, 0.7], [0.9, 0.9, 0.8], [0.0, 0.0, 0.0]]},
    # acc -.05 -.04 -.06 (significant down), cwv +.001 -.001 +.003 (n.s.), mcd +.02 -.02 +.03 (n.s.)
    ("B", 0.1): {"acc": [0.75, 0.66, 0.84, 0.40], "cwv": [0.011, 0.019, 0.033, 0.6], "mcd": [0.32, 0.18, 0.43, 0.95],
                 "classes": [[1.0, 0.8, 0.7], [0.8, 0.7, 0.7], [0.9, 0.9, 0.5], [0.0, 0.0, 0.0]]},
}
VAL = 0.5  # every metric on the val split: a test-split analysis that reads val rows sees differences of 0


def make_table() -> pd.DataFrame:
    rows = []
    for (variant, dens), values in TEST.items():
        for i, seed in enumerate(SEEDS[variant]):
            base = {"variant": variant, "method": METHOD[variant], "seed": seed, "density": dens,
                    "density_target": dens}
            test = {**base, "split": "test", **{m: values[m][i] for m in ("acc", "cwv", "mcd")},
                    **{f"acc_class_{c}": r for c, r in enumerate(values["classes"][i])}}
            val = {**base, "split": "val", "acc": VAL, "cwv": VAL, "mcd": VAL,
                   **{f"acc_class_{c}": VAL for c in range(3)}}
            rows += [test, val]
    # Shuffled, so nothing can rely on rows being listed by seed or by variant.
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture
def df() -> pd.DataFrame:
    return make_table()


def t_stats(values) -> tuple[float, float]:
    """(mean, 95 % Student-t half-width), by the textbook formula."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))


# ------------------------------------------------------------------------------------------ columns


def test_class_columns_are_in_numeric_class_order():
    d = pd.DataFrame(columns=["acc", "acc_class_10", "acc_class_2", "seed", "acc_class_0", "acc_class_1"])
    assert class_columns(d) == ["acc_class_0", "acc_class_1", "acc_class_2", "acc_class_10"]


def test_group_columns_keeps_only_group_metrics_with_values():
    d = pd.DataFrame({"acc": [0.5], "dp_gap": [0.1], "eo_gap": [float("nan")], "worst_group_acc": [0.4]})
    assert group_columns(d) == ["worst_group_acc", "dp_gap"]


# ------------------------------------------------------------------------------------------ summarize


def test_summarize_means_ci_and_seed_counts_per_variant_and_density(df):
    s = summarize(df)
    assert list(zip(s["variant"], s["density"])) == [("A", 0.1), ("A", 0.5), ("B", 0.1), ("B", 0.5),
                                                     ("dense", 1.0)]
    assert list(s["seeds"]) == [3, 3, 4, 4, 3]
    row = s.set_index(["variant", "density"])
    for (variant, dens), values in TEST.items():
        for m in ("acc", "cwv", "mcd"):
            mean, half = t_stats(values[m])
            assert row.loc[(variant, dens), m] == pytest.approx(mean), (variant, dens, m)
            assert row.loc[(variant, dens), f"{m}_ci"] == pytest.approx(half), (variant, dens, m)
    # Spot check by hand: A at 0.5, acc 0.82, 0.69, 0.92 -> mean 0.81.
    assert row.loc[("A", 0.5), "acc"] == pytest.approx(0.81)


def test_summarize_other_split_grouping_and_metrics(df):
    val = summarize(df, metrics=("acc",), by=("variant",), split="val")
    assert list(val["variant"]) == ["A", "B", "dense"]
    # "seeds" counts distinct seeds in the group (not rows: A and B have two densities each).
    assert list(val["seeds"]) == [3, 4, 3]
    assert list(val["acc"]) == [VAL, VAL, VAL]
    assert list(val["acc_ci"]) == [0.0, 0.0, 0.0]
    assert "cwv" not in val
    # Grouping by variant only pools the densities: A's six test values.
    pooled = summarize(df, metrics=("acc",), by=("variant",)).set_index("variant")
    mean, half = t_stats(TEST[("A", 0.5)]["acc"] + TEST[("A", 0.1)]["acc"])
    assert pooled.loc["A", "acc"] == pytest.approx(mean)
    assert pooled.loc["A", "acc_ci"] == pytest.approx(half)


def test_summarize_single_seed_has_no_ci(df):
    one = df[(df["seed"] == 0) & (df["variant"] == "dense")]
    s = summarize(one)
    assert s["seeds"].tolist() == [1] and s["acc"].tolist() == [0.80]
    assert math.isnan(s["acc_ci"].iloc[0])


def test_summarize_drops_missing_values(df):
    # Seed 1 of dense has no MCD (e.g. a run that did not record it): mean and CI of the other two, 2 seeds.
    df.loc[(df["variant"] == "dense") & (df["seed"] == 1) & (df["split"] == "test"), "mcd"] = float("nan")
    s = summarize(df, metrics=("mcd",)).set_index("variant")
    mean, half = t_stats([0.30, 0.40])
    assert s.loc["dense", "mcd"] == pytest.approx(mean)
    assert s.loc["dense", "mcd_ci"] == pytest.approx(half)
    # "seeds" counts the seeds of the group whatever the metrics, so it does not depend on metric order.
    assert s.loc["dense", "seeds"] == 3
    assert summarize(df, metrics=("acc", "mcd")).set_index("variant").loc["dense", "seeds"] == 3


# ------------------------------------------------------------------------------------------ paired / versus


def check_row(row, diffs, wins, significant):
    mean, half = t_stats(diffs)
    assert row["diff"] == pytest.approx(mean)
    assert row["ci_low"] == pytest.approx(mean - half)
    assert row["ci_high"] == pytest.approx(mean + half)
    assert row["n"] == len(diffs)
    assert row["wins"] == wins
    assert bool(row["significant"]) is significant


def test_paired_by_seed_a_minus_b_with_wins_in_each_metrics_direction(df):
    p = paired(df, "A", "dense", a_density=0.5).set_index("metric")
    assert list(p.index) == ["acc", "cwv", "mcd"]
    assert set(p["a"]) == {"A"} and set(p["b"]) == {"dense"}
    check_row(p.loc["acc"], [0.02, -0.01, 0.02], wins=2, significant=False)     # higher acc wins
    check_row(p.loc["cwv"], [0.002, 0.003, 0.004], wins=0, significant=True)    # lower cwv wins
    check_row(p.loc["mcd"], [0.05, -0.03, 0.01], wins=1, significant=False)     # lower mcd wins


def test_paired_significant_decreases_count_as_wins_for_fairness_metrics(df):
    p = paired(df, "A", "dense", a_density=0.1).set_index("metric")
    check_row(p.loc["acc"], [-0.10, -0.12, -0.11], wins=0, significant=True)
    check_row(p.loc["cwv"], [-0.004, -0.005, -0.006], wins=3, significant=True)
    check_row(p.loc["mcd"], [-0.10, -0.11, -0.12], wins=3, significant=True)


def test_paired_ci_stays_within_the_metrics_possible_differences(df):
    # A collapsed seed: A's accuracy at 0.5 drops to 0.3 in seed 2 (−0.60, with +0.02 and −0.01): the t-interval
    # reaches below −1, an impossible accuracy difference; it is cut there, the test itself is unchanged.
    d = df.copy()
    d.loc[(d["variant"] == "A") & (d["density"] == 0.5) & (d["seed"] == 2) & (d["split"] == "test"), "acc"] = 0.3
    row = paired(d, "A", "dense", ["acc"], a_density=0.5).set_index("metric").loc["acc"]
    mean, half = t_stats([0.02, -0.01, -0.60])
    assert mean - half < -1 < 1 < mean + half + 1
    assert row["ci_low"] == -1.0 and row["ci_high"] == pytest.approx(mean + half)
    assert row["diff"] == pytest.approx(mean) and not row["significant"]
    assert analysis.metric_range("acc_class_3") == (0.0, 1.0) and analysis.metric_range("unknown") is None


def test_paired_zero_differences_are_not_significant_and_not_wins(df):
    p = paired(df, "B", "dense", ["cwv"], a_density=0.5).set_index("metric")
    assert p.loc["cwv", "diff"] == pytest.approx(0.0, abs=1e-12)
    assert p.loc["cwv", "wins"] == 0
    assert not p.loc["cwv", "significant"]


def test_seeds_of_only_one_variant_are_not_paired(df):
    # B has seed 3, dense does not: only seeds 0..2 are compared.
    p = paired(df, "B", "dense", ["acc"], a_density=0.1).set_index("metric")
    check_row(p.loc["acc"], [-0.05, -0.04, -0.06], wins=0, significant=True)
    # Without seed 0 two pairs are left: A at 0.5 minus dense, −.01 and +.02.
    two = paired(df[df["seed"] != 0], "A", "dense", ["acc"], a_density=0.5).set_index("metric")
    check_row(two.loc["acc"], [-0.01, 0.02], wins=1, significant=False)


def test_paired_skips_metrics_absent_from_the_table(df):
    p = paired(df, "A", "dense", ["acc", "dp_gap"], a_density=0.5)
    assert p["metric"].tolist() == ["acc"]


def test_versus_dense_reference_at_every_density(df):
    v = versus(df, "dense", ["A", "B"])
    assert list(zip(v["a"], v["density"], v["metric"])) == [
        ("A", 0.5, "acc"), ("A", 0.5, "cwv"), ("A", 0.5, "mcd"),
        ("A", 0.1, "acc"), ("A", 0.1, "cwv"), ("A", 0.1, "mcd"),
        ("B", 0.5, "acc"), ("B", 0.5, "cwv"), ("B", 0.5, "mcd"),
        ("B", 0.1, "acc"), ("B", 0.1, "cwv"), ("B", 0.1, "mcd")]
    assert set(v["b"]) == {"dense"}
    rows = v.set_index(["a", "density", "metric"])
    check_row(rows.loc[("A", 0.5, "cwv")], [0.002, 0.003, 0.004], wins=0, significant=True)
    check_row(rows.loc[("A", 0.1, "acc")], [-0.10, -0.12, -0.11], wins=0, significant=True)
    check_row(rows.loc[("B", 0.5, "mcd")], [-0.02, -0.03, -0.04], wins=3, significant=True)
    check_row(rows.loc[("B", 0.1, "cwv")], [0.001, -0.001, 0.003], wins=1, significant=False)


def test_versus_reference_at_the_same_density(df):
    v = versus(df, "B", ["A"], ["acc", "mcd"], reference_any_density=False)
    rows = v.set_index(["density", "metric"])
    assert list(rows.index) == [(0.5, "acc"), (0.5, "mcd"), (0.1, "acc"), (0.1, "mcd")]
    # A − B at 0.5: acc .82−.81, .69−.70, .92−.89; mcd .35−.28, .17−.17, .41−.36 (B's seed 3 unpaired).
    check_row(rows.loc[(0.5, "acc")], [0.01, -0.01, 0.03], wins=2, significant=False)
    check_row(rows.loc[(0.5, "mcd")], [0.07, 0.00, 0.05], wins=0, significant=False)
    # At 0.1: acc .70−.75, .58−.66, .79−.84; mcd .20−.32, .09−.18, .28−.43.
    check_row(rows.loc[(0.1, "acc")], [-0.05, -0.08, -0.05], wins=0, significant=True)
    check_row(rows.loc[(0.1, "mcd")], [-0.12, -0.09, -0.15], wins=3, significant=True)


def test_versus_with_no_variants_is_empty(df):
    assert versus(df, "dense", []).empty


# ------------------------------------------------------------------------------------------ per-class deltas


def test_per_class_deltas_mean_over_paired_seeds(df):
    d = per_class_deltas(df)
    assert list(d.columns) == ["variant", "density", "class 0", "class 1", "class 2"]
    assert list(zip(d["variant"], d["density"])) == [("A", 0.1), ("A", 0.5), ("B", 0.1), ("B", 0.5)]
    rows = d.set_index(["variant", "density"])
    # A at 0.5: per seed (+.1, 0, −.1), (+.1, 0, −.2), (+.1, 0, −.3).
    assert rows.loc[("A", 0.5)].tolist() == pytest.approx([0.1, 0.0, -0.2])
    # A at 0.1: every class 0.1 lower under every seed.
    assert rows.loc[("A", 0.1)].tolist() == pytest.approx([-0.1, -0.1, -0.1])
    # B at 0.5 equals dense on seeds 0..2; its seed 3 (all zeros) has no dense partner and is left out.
    assert rows.loc[("B", 0.5)].tolist() == pytest.approx([0.0, 0.0, 0.0])
    # B at 0.1: (+.1, 0, 0), (0, +.1, 0), (0, 0, −.3).
    assert rows.loc[("B", 0.1)].tolist() == pytest.approx([0.1 / 3, 0.1 / 3, -0.1])


def test_per_class_deltas_against_another_reference(df):
    d = per_class_deltas(df[df["density_target"] != 0.1], reference="B").set_index(["variant", "density"])
    # A at 0.5 − B at 0.5 = A at 0.5 − dense, seed by seed; dense − B = 0.
    assert d.loc[("A", 0.5)].tolist() == pytest.approx([0.1, 0.0, -0.2])
    assert d.loc[("dense", 1.0)].tolist() == pytest.approx([0.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------------ verdicts


def verdict_table(entries) -> pd.DataFrame:
    """Rows of a versus table from (variant, density, metric, diff, significant)."""
    return pd.DataFrame([{"a": v, "b": "dense", "density": d, "metric": m, "diff": diff,
                          "ci_low": diff - 0.01, "ci_high": diff + 0.01, "n": 3, "wins": 0, "significant": sig}
                         for v, d, m, diff, sig in entries])


def test_fairness_verdicts_by_hand():
    table = verdict_table([
        # CWV significantly up (MCD down does not save it): hurt.
        ("V", 0.5, "acc", 0.01, False), ("V", 0.5, "cwv", 0.02, True), ("V", 0.5, "mcd", -0.05, True),
        # CWV significantly down, MCD not significant, accuracy unchanged: improved.
        ("V", 0.1, "acc", -0.01, False), ("V", 0.1, "cwv", -0.02, True), ("V", 0.1, "mcd", 0.03, False),
        # MCD down together with significantly lower accuracy: levelled down.
        ("W", 0.5, "acc", -0.05, True), ("W", 0.5, "cwv", -0.01, False), ("W", 0.5, "mcd", -0.04, True),
        # Nothing significant in CWV or MCD (accuracy down alone does not count): no significant change.
        ("W", 0.1, "acc", -0.05, True), ("W", 0.1, "cwv", 0.01, False), ("W", 0.1, "mcd", -0.04, False),
        # MCD down with significantly *higher* accuracy: improved.
        ("X", 0.5, "acc", 0.05, True), ("X", 0.5, "cwv", 0.0, False), ("X", 0.5, "mcd", -0.04, True),
        # Both up and accuracy down: hurt, not levelled down.
        ("X", 0.1, "acc", -0.05, True), ("X", 0.1, "cwv", 0.01, True), ("X", 0.1, "mcd", 0.04, True),
    ])
    got = fairness_verdicts(table).set_index(["variant", "density"])
    assert got.loc[("V", 0.5)].tolist() == ["hurt", "cwv", "mcd"]
    assert got.loc[("V", 0.1)].tolist() == ["improved", "", "cwv"]
    assert got.loc[("W", 0.5)].tolist() == ["levelled down", "", "mcd"]
    assert got.loc[("W", 0.1)].tolist() == ["no significant change", "", ""]
    assert got.loc[("X", 0.5)].tolist() == ["improved", "", "mcd"]
    assert got.loc[("X", 0.1)].tolist() == ["hurt", "cwv, mcd", ""]
    assert len(got) == 6


def test_fairness_verdicts_from_versus_on_the_hand_table(df):
    # per test (no correction): the verdict logic on a real versus table; Holm is tested below
    got = fairness_verdicts(versus(df, "dense", ["A", "B"]), correction="none").set_index(
        ["variant", "density"])["verdict"]
    assert got.to_dict() == {("A", 0.1): "levelled down", ("A", 0.5): "hurt",
                             ("B", 0.1): "no significant change", ("B", 0.5): "improved"}


# ------------------------------------------------------------------------------------------ selection rule


SELECT = pd.DataFrame({"variant": ["P", "Q", "R", "S"], "acc": [0.90, 0.895, 0.85, 0.70],
                       "mcd": [0.30, 0.20, 0.05, 0.01]})


@pytest.mark.parametrize("eps, chosen", [
    (0.01, "Q"),   # P and Q are within 0.01 of the best: Q has the lower MCD
    (0.0, "P"),    # only the best accuracy qualifies
    (0.06, "R"),   # R (0.85) now qualifies, S (0.70) does not
    (1.0, "S"),    # everything qualifies: lowest MCD
])
def test_select_by_rule(eps, chosen):
    assert select_by_rule(SELECT, eps)["variant"] == chosen


def test_select_by_rule_bound_is_inclusive_and_ties_prefer_accuracy_then_order():
    # Exact binary fractions: 0.5 is exactly eps = 0.25 below the best 0.75 and qualifies.
    t = pd.DataFrame({"variant": ["best", "edge"], "acc": [0.75, 0.5], "mcd": [0.5, 0.25]})
    assert select_by_rule(t, 0.25)["variant"] == "edge"
    # Equal MCD: the higher accuracy wins.
    t = pd.DataFrame({"variant": ["low", "high"], "acc": [0.89, 0.90], "mcd": [0.2, 0.2]})
    assert select_by_rule(t, 0.05)["variant"] == "high"
    # Equal MCD and accuracy: the first listed wins.
    t = pd.DataFrame({"variant": ["first", "second", "third"], "acc": [0.9, 0.9, 0.95], "mcd": [0.1, 0.1, 0.3]})
    assert select_by_rule(t, 0.1)["variant"] == "first"
    # Other column names.
    t = pd.DataFrame({"name": ["a", "b"], "val_acc": [0.9, 0.89], "cwv": [0.02, 0.01]})
    assert select_by_rule(t, 0.02, acc="val_acc", fair="cwv")["name"] == "b"


# ------------------------------------------------------------------------------------------ sentences and tables


def paired_row(metric, diff, lo, hi, wins, n, significant) -> pd.Series:
    return pd.Series({"a": "LTH", "b": "dense", "metric": metric, "diff": diff, "ci_low": lo, "ci_high": hi,
                      "n": n, "wins": wins, "significant": significant})


def test_describe_paired_points_for_acc_and_mcd_raw_for_cwv():
    assert describe_paired(paired_row("acc", -0.0123, -0.02, -0.0046, 0, 3, True)) == (
        "ACC LTH − dense: -1.23 pts [95% CI -2.00 pts, -0.46 pts], LTH higher in 0/3 seeds (significant)")
    assert describe_paired(paired_row("mcd", 0.05, -0.01, 0.11, 1, 4, False)) == (
        "MCD LTH − dense: +5.00 pts [95% CI -1.00 pts, +11.00 pts], LTH lower in 1/4 seeds "
        "(no significant difference)")
    assert describe_paired(paired_row("cwv", 0.003, 0.0005, 0.0055, 0, 3, True)) == (
        "CWV LTH − dense: +0.0030 [95% CI +0.0005, +0.0055], LTH lower in 0/3 seeds (significant)")


def test_describe_paired_unit_override_and_missing_ci():
    row = paired_row("cwv", 0.003, float("nan"), float("nan"), 1, 1, False)
    assert describe_paired(row, unit_pct=True) == (
        "CWV LTH − dense: +0.30 pts [95% CI n/a, n/a], LTH lower in 1/1 seeds (fewer than 2 seeds: no CI, "
        "nothing decided)")


def test_describe_paired_on_a_versus_row(df):
    row = versus(df, "dense", ["A"], ["acc"]).iloc[0]  # A at 0.5: diffs +.02 −.01 +.02
    text = describe_paired(row)
    assert text.startswith("ACC A − dense: +1.00 pts [95% CI ")
    assert text.endswith("A higher in 2/3 seeds (no significant difference)")


def test_markdown_table_header_separator_and_nan():
    t = pd.DataFrame({"variant": ["A", "B"], "acc": [0.81234, float("nan")], "seeds": [3, 4]})
    assert markdown_table(t) == ("| variant | acc | seeds |\n"
                                 "|---|---|---|\n"
                                 "| A | 0.8123 | 3 |\n"
                                 "| B | n/a | 4 |")
    assert markdown_table(t, floatfmt=".1%").splitlines()[2] == "| A | 81.2% | 3 |"


# ------------------------------------------------------------------------------------------ figures


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def saved(path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def test_metric_vs_density_figure(df, tmp_path, close_figures):
    path = tmp_path / "figs" / "metric.png"
    fig = plots.metric_vs_density(df, metrics=("acc", "mcd"), path=path)
    assert saved(path)
    axes = fig.get_axes()
    assert len(axes) == 2
    assert [ax.get_ylabel() for ax in axes] == ["test ACC (fraction; 0.01 = 1 pt)", "test MCD (fraction; 0.01 = 1 pt)"]
    assert [ax.get_title() for ax in axes] == ["ACC vs density (test)", "MCD vs density (test)"]
    assert "unpaired" in fig._suptitle.get_text()
    assert all(ax.get_xscale() == "log" for ax in axes)
    # The dense reference is a horizontal line at its mean test accuracy (0.80).
    dense_lines = [ln for ln in axes[0].get_lines() if ln.get_label() == "dense"]
    assert len(dense_lines) == 1 and dense_lines[0].get_ydata()[0] == pytest.approx(0.80)
    assert plots.metric_vs_density(df, metrics=("acc",)) is not None  # no path: nothing saved, no error


def test_per_class_heatmap_shows_deltas_in_points(df, tmp_path, close_figures):
    path = tmp_path / "heat.png"
    fig = plots.per_class_heatmap(per_class_deltas(df), path=path)
    assert saved(path)
    ax = fig.get_axes()[0]
    # Rows A@0.1, A@0.5, B@0.1, B@0.5; annotations in points, one decimal.
    annotations = [t.get_text() for t in ax.texts]
    assert annotations == ["-10.0", "-10.0", "-10.0", "10.0", "0.0", "-20.0", "3.3", "3.3", "-10.0",
                           "0.0", "0.0", "0.0"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A @ 0.1", "A @ 0.5", "B @ 0.1", "B @ 0.5"]


def test_per_class_bars_figure(df, tmp_path, close_figures):
    path = tmp_path / "bars.png"
    fig = plots.per_class_bars(df, path=path)
    assert saved(path)
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert ax.get_ylim() == (0, 1.05)
    assert ax.get_title() == "per-class recall on test"
    # The legend sits outside the axes (right of them), so it never covers a bar.
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1


def test_paired_forest_figure(df, tmp_path, close_figures):
    path = tmp_path / "forest.png"
    table = versus(df, "dense", ["A", "B"])
    fig = plots.paired_forest(table, "mcd", path=path, title="MCD vs dense")
    assert saved(path)
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A − dense @ 0.5", "A − dense @ 0.1",
                                                             "B − dense @ 0.5", "B − dense @ 0.1"]
    assert ax.get_title() == "MCD vs dense"
    # MCD is drawn in points, as the text states it: A − dense @ 0.1 is −0.11 → −11 pts.
    assert ax.lines[0].get_xdata()[1] == pytest.approx(-11.0) and "(pts)" in ax.get_xlabel()


def test_layer_density_bars_heights_are_mask_densities(tmp_path, close_figures):
    path = tmp_path / "layers.png"
    masks = {"magnitude": {"fc1.weight": torch.tensor([1, 0, 1, 1]), "fc2.weight": torch.tensor([[1, 0], [0, 0]])},
             "random": {"fc1.weight": torch.tensor([0, 0, 0, 1]), "fc2.weight": torch.tensor([[1, 1], [1, 1]])}}
    fig = plots.layer_density_bars(masks, path=path)
    assert saved(path)
    heights = sorted(round(p.get_height(), 6) for p in fig.get_axes()[0].patches if p.get_height() > 0)
    assert heights == [0.25, 0.25, 0.75, 1.0]


def test_paired_refuses_to_mix_densities(df):
    # A has two densities: without a_density the pairing per seed would be ambiguous.
    with pytest.raises(ValueError, match="several rows per seed"):
        paired(df, "A", "dense", ["acc"])
    # Two configurations of one method at one density (load_results labels runs by method): a_density cannot
    # tell them apart, and the error says what can.
    twice = pd.concat([df, df[(df["variant"] == "A") & (df["density"] == 0.5)]], ignore_index=True)
    with pytest.raises(ValueError, match="several runs per seed at density 0.5: several configurations .* "
                                         "distinct 'variant' labels"):
        paired(twice, "A", "dense", ["acc"], a_density=0.5)


def test_per_group_deltas_use_the_group_columns():
    rows = []
    for seed, (d0, d1, s0, s1) in enumerate([(0.8, 0.9, 0.7, 0.9), (0.6, 0.7, 0.5, 0.8)]):
        rows.append({"split": "test", "variant": "dense", "density_target": 1.0, "seed": seed,
                     "acc_group_0": d0, "acc_group_1": d1})
        rows.append({"split": "test", "variant": "S", "density_target": 0.1, "seed": seed,
                     "acc_group_0": s0, "acc_group_1": s1})
    out = per_class_deltas(pd.DataFrame(rows), unit="group")
    assert list(out.columns) == ["variant", "density", "group 0", "group 1"]
    assert out.loc[0, "group 0"] == pytest.approx(((0.7 - 0.8) + (0.5 - 0.6)) / 2)
    assert out.loc[0, "group 1"] == pytest.approx(((0.9 - 0.9) + (0.8 - 0.7)) / 2)


# ------------------------------------------------------------------------------------------ notebook helpers


def test_notebook_parameters_keep_plain_public_values_only():
    ns = {"dataset": "digits", "seeds": [0, 1], "epochs": 3, "flag": False, "none": None, "In": [""], "Out": {},
          "_i1": "x", "get_ipython": print, "pd": pd, "exit": object()}
    assert notebook_parameters(ns) == {"dataset": "digits", "seeds": [0, 1], "epochs": 3, "flag": False,
                                       "none": None}


def test_notebook_parameters_read_the_declared_names_when_the_notebook_is_given(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("# parameters\ndataset: str = \"digits\"  # d\nseeds: list = [0]  # s")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    ns = {"dataset": "adult", "seeds": [1, 2], "seed": 3, "tag": "later"}
    assert notebook_parameters(ns, path) == {"dataset": "adult", "seeds": [1, 2]}
    assert "seed" in notebook_parameters(ns, tmp_path / "missing.ipynb")


def test_run_tag_hashes_every_setting_but_the_locations():
    p = {"dataset": "digits", "model": "mlp", "seeds": [0, 1], "results_dir": "/a", "data_root": ""}
    tag = run_tag("01_x", p)
    assert tag.startswith("01_x_digits_mlp_") and len(tag.rsplit("_", 1)[1]) == 8
    assert run_tag("01_x", {**p, "results_dir": "/b", "data_root": "/d"}) == tag
    assert run_tag("01_x", {**p, "seeds": [2]}) != tag
    assert run_tag("01_x", dict(reversed(list(p.items())))) == tag
    assert run_tag("05_report", {"results_dir": "/a"}).startswith("05_report_")


def test_layer_overlap_by_hand():
    mask = {"a": torch.tensor([1, 1, 0, 0]), "b": torch.tensor([0, 0, 0, 0]), "c": torch.tensor([1, 1, 1, 1])}
    other = {"a": torch.tensor([1, 0, 1, 0]), "b": torch.tensor([1, 1, 1, 1]), "c": torch.tensor([1, 1, 1, 0])}
    t = layer_overlap(mask, {"o": other, "self": mask})
    o = t[t["vs"] == "o"].set_index("layer")
    assert o.loc["a", "overlap"] == 0.5 and math.isnan(o.loc["b", "overlap"]) and o.loc["c", "overlap"] == 0.75
    assert list(o["kept"]) == [2, 0, 4]
    assert (t[t["vs"] == "self"]["overlap"].dropna() == 1.0).all()


def test_sign_agreement_by_epoch_from_a_vote_record():
    rec = {"epochs": [1, 3], "sign_epochs": [{"w1": [3, 4], "w2": [0, 0]}, {"w1": [4, 4], "w2": [1, 2]}]}
    t = sign_agreement_by_epoch(rec)
    assert list(t["epoch"]) == [1, 1, 3, 3] and list(t["layer"]) == ["w1", "w2", "w1", "w2"]
    assert t["same sign"].iloc[0] == 0.75 and math.isnan(t["same sign"].iloc[1]) and t["same sign"].iloc[3] == 0.5


def test_ballot_figures_are_titled_labelled_and_saved(tmp_path, close_figures):
    rec = {"epochs": [1, 2], "sign_epochs": [{"w": [3, 4]}, {"w": [4, 4]}], "weight_spread": [10.0, 1.0]}
    fig = plots.vote_conflict(sign_agreement_by_epoch(rec), rec["epochs"], rec["weight_spread"],
                              path=tmp_path / "c.png")
    assert saved(tmp_path / "c.png") and all(ax.get_title() and ax.get_ylabel() for ax in fig.get_axes()[:2])
    votes = {"w": torch.tensor([[0, 1], [2, 2]]), "v": torch.tensor([3, 0])}
    mask = {"w": torch.tensor([[0, 0], [1, 1]]), "v": torch.tensor([1, 0])}
    fig = plots.vote_histogram(votes, mask, path=tmp_path / "h.png")
    ax = fig.get_axes()[0]
    assert saved(tmp_path / "h.png") and ax.get_title() and ax.get_xlabel()
    # Stacked bars: the kept bars sit on top of the dropped ones; the total count per vote value is 6 weights.
    assert sum(p.get_height() for p in ax.patches) == pytest.approx(6)
    table = layer_overlap(mask, {"other": mask})
    fig = plots.layer_overlap_bars(table, path=tmp_path / "o.png")
    assert saved(tmp_path / "o.png") and fig.get_axes()[0].get_ylabel() == "share of kept weights also kept"
    hist = pd.DataFrame({"epoch": [1, 2, 1, 2], "val_acc": [0.1, 0.2, 0.3, 0.4], "val_mcd": [0.5, 0.4, 0.3, 0.2],
                         "variant": ["a", "a", "b", "b"]})
    fig = plots.training_curves(hist, marker_epoch=2, path=tmp_path / "t.png")
    assert [ax.get_ylabel() for ax in fig.get_axes()] == ["val accuracy", "val MCD (max − min class recall)"]


def test_metric_directions_are_known_or_refused():
    from ballot_lib.analysis import lower_is_better

    assert lower_is_better("mcd") and lower_is_better("cwv") and not lower_is_better("acc")
    assert not lower_is_better("worst_class_acc") and not lower_is_better("acc_class_3")
    assert not lower_is_better("acc_group_1")
    with pytest.raises(ValueError, match="unknown direction for metric 'loss'"):
        lower_is_better("loss")


def test_per_class_deltas_refuses_a_frame_of_several_settings():
    rows = [{"variant": v, "dataset": ds, "model": "mlp", "density_target": d, "seed": 0, "split": "test",
             "acc_class_0": 0.9, "acc_class_1": 0.8} for ds in ("digits", "adult") for v, d in (("dense", 1.0),
                                                                                             ("LTH", 0.1))]
    with pytest.raises(ValueError, match="one \\(dataset, model\\) setting"):
        per_class_deltas(pd.DataFrame(rows))
    assert len(per_class_deltas(pd.DataFrame(rows[:2]))) == 1


def test_fairness_verdicts_apply_holm_over_the_table_and_say_so():
    """Notebook 01's table against dense: 12 paired tests. LTH @ 0.05 MCD at p = 0.0225 is significant alone but
    not after Holm (0.0225 is the 4th smallest of 12: × 9 = 0.2025); CWV at p = 0.0012 stays (× 12 = 0.0144)."""
    from ballot_lib import readings
    from ballot_lib.analysis import adjust_family, describe_paired

    ps = {("MP", 0.2): (0.0121, 0.0545, 0.0863), ("MP", 0.05): (0.3285, 0.6765, 0.1943),
          ("LTH", 0.2): (0.43, 0.4398, 0.3837), ("LTH", 0.05): (0.0017, 0.0012, 0.0225)}
    diffs = {"acc": -0.04, "cwv": 0.005, "mcd": 0.059}
    rows = [{"a": v, "b": "dense", "density": d, "metric": m, "diff": diffs[m], "ci_low": diffs[m] / 2,
             "ci_high": 1.5 * diffs[m], "n": 5, "wins": 0, "significant": p < 0.05, "p": p}
            for (v, d), pv in ps.items() for m, p in zip(("acc", "cwv", "mcd"), pv)]
    table = pd.DataFrame(rows)
    assert fairness_verdicts(table, correction="none").set_index(["variant", "density"]).loc[
        ("LTH", 0.05), "worse"] == "cwv, mcd"
    v = fairness_verdicts(table)
    r = v.set_index(["variant", "density"]).loc[("LTH", 0.05)]
    assert r["verdict"] == "hurt" and r["worse"] == "cwv"
    assert v.attrs["family"] == 12 and v.attrs["correction"] == "holm"
    assert v.attrs["uncorrected"] == [("LTH", 0.05, "mcd")]
    text = readings.verdict_counts(v)
    assert "(CWV or MCD up vs dense; Holm over the 12 paired tests of this table)" in text
    assert "Significant per test but not after the correction: MCD of LTH @ 0.05" in text
    adj = adjust_family(table)
    mcd = adj[(adj["a"] == "LTH") & (adj["density"] == 0.05) & (adj["metric"] == "mcd")].iloc[0]
    assert mcd["p_adj"] == pytest.approx(0.2025) and not mcd["significant_adj"]
    assert "not significant after Holm: p = 0.0225, p_adj = 0.202" in describe_paired(mcd, correction="Holm")
    said = " ".join(readings.paired(adj, ("mcd",)))
    assert "Holm correction over the 12 paired tests of this table" in said
    assert "MCD of LTH vs dense: not significantly different at 0.2, 0.05" in said


def test_skill_ratio_by_hand():
    """The collapse rule's one formula (collapsed_runs and the ablation's seed skills both use it)."""
    import numpy as np

    from ballot_lib.analysis import skill_ratio

    got = skill_ratio([0.55, 0.30, 0.9, 0.6], [0.5, 0.1, 0.5, 0.5], [0.7, 0.5, 0.5, float("nan")])
    assert got[:2].tolist() == [pytest.approx(0.25), pytest.approx(0.5)]
    assert np.isnan(got[2]) and np.isnan(got[3])  # reference at chance / missing: never flagged

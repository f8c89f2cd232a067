"""Notebook 02's ablation helpers: option sets without duplicates, the val table with seed CIs, the choice."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ballot_lib import ablation, readings
from ballot_lib.methods.ballot import BallotConfig


def test_candidates_equal_to_the_default_are_dropped_and_named():
    default = BallotConfig(density=0.05)
    cands = ablation.candidate_options(etas=[0.0, 0.5, 1.0, 2.0], gammas=[1.0, 3.0], vote_fractions=[0.05, 0.1, 0.3],
                                       vote_epoch_counts=[0, 5], rewind_epochs=[0, 1])
    kept, dropped = ablation.deduplicate(default, cands)
    # The library default is taylor/no veto, η = 1, γ = 1, 10 % vote subset, every epoch, rewind 0, lth budgets:
    # seven one-option changes restate it.
    assert dropped == {"score=taylor, conflict=none": "default", "eta=1": "default", "gamma=1": "default",
                       "vote_epochs=0": "default", "vote_fraction=0.1": "default", "rewind_epoch=0": "default",
                       "budgets=lth": "default"}
    assert list(kept)[0] == "default" and len(kept) + len(dropped) == len(cands)
    configs = [BallotConfig(density=0.05, **{**ablation.base_options(default), **o}) for o in kept.values()]
    assert len(set(configs)) == len(configs)


def test_later_duplicates_point_to_the_first_identical_set():
    default = BallotConfig(density=0.1, eta=2.0)
    kept, dropped = ablation.deduplicate(default, {"default": {}, "a": {"eta": 0.0}, "b": {"eta": 0.0},
                                                   "c": {"eta": 2.0}})
    assert list(kept) == ["default", "a"] and dropped == {"b": "a", "c": "default"}


def test_faithful_mode_takes_its_fixed_fields_over_any_default_and_refuses_explicit_changes():
    # A default whose fixed fields differ from faithful mode's (rewind θ1, veto, η = 2): the faithful option set
    # still builds, with faithful mode's values (the default's are not passed to it).
    default = BallotConfig(density=0.1, rewind_epoch=1, conflict="veto", eta=2.0)
    kept, dropped = ablation.deduplicate(default, {"default": {}, "faithful": {"mode": "faithful"}})
    assert list(kept) == ["default", "faithful"] and dropped == {}
    v = ablation.variants(default, kept, select_eps=0.01)[1]
    cfg = BallotConfig(density=0.1, **v.options)
    assert (cfg.mode, cfg.eta, cfg.rewind_epoch, cfg.conflict) == ("faithful", 1.0, 0, "none")
    # An option set that asks faithful mode for another value of a field it fixes is refused (it was replaced).
    with pytest.raises(ValueError, match="fixes eta to 1.0; got eta=2.0"):
        ablation.deduplicate(default, {"faithful, eta=2": {"mode": "faithful", "eta": 2.0}})


def test_variants_carry_the_default_options_and_lth_reference():
    default = BallotConfig(density=0.1)
    vs = ablation.variants(default, {"default": {}, "eta=0": {"eta": 0.0}}, select_eps=0.02)
    assert [v.label for v in vs] == ["default", "eta=0", "LTH"]
    assert vs[1].options["eta"] == 0.0 and vs[1].options["score"] == default.score
    assert vs[1].options["select_eps"] == 0.02 and vs[2].method == "lth"
    # the LTH reference picks its checkpoint by the default's rule (refined: the val rule), like the option sets
    assert default.refined and vs[2].options == {"select": "val_rule", "select_eps": 0.02}
    plain = ablation.variants(BallotConfig(density=0.1, refined=False), {"default": {}}, select_eps=0.02)
    assert plain[-1].options == {}  # a plain default keeps the last epoch, and so does its reference


def _rows(variant, split, acc, mcd, seeds=(0, 1, 2)):
    return [{"variant": variant, "split": split, "seed": s, "acc": a, "mcd": m, "cwv": 0.0,
             "density_target": 0.1} for s, a, m in zip(seeds, acc, mcd)]


@pytest.fixture
def abl_df():
    rows = []
    rows += _rows("default", "val", [0.90, 0.80, 0.85], [0.30, 0.20, 0.25])
    # acc −.020 −.021 −.022 (significant), mcd −.05 +.05 −.03 (n.s.)
    rows += _rows("eta=0", "val", [0.88, 0.779, 0.828], [0.25, 0.25, 0.22])
    rows += _rows("LTH", "val", [0.91, 0.81, 0.86], [0.31, 0.21, 0.26])
    for v in ("default", "eta=0", "LTH"):
        rows += _rows(v, "test", [0.5, 0.6, 0.7], [0.1, 0.2, 0.3])
    return pd.DataFrame(rows)


def test_table_has_seed_cis_and_paired_differences_to_the_default(abl_df):
    tab = ablation.table(abl_df)
    assert list(tab["variant"]) == ["default", "eta=0", "LTH"]
    r = tab.set_index("variant").loc["eta=0"]
    d = np.array([-0.020, -0.021, -0.022])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert r["d_acc"] == pytest.approx(d.mean()) and r["d_acc_low"] == pytest.approx(d.mean() - half)
    assert bool(r["d_acc_sig"]) and not bool(r["d_mcd_sig"])
    vals = np.array([0.88, 0.779, 0.828])
    assert r["acc"] == pytest.approx(vals.mean())
    assert r["acc_ci"] == pytest.approx(stats.t.ppf(0.975, 2) * vals.std(ddof=1) / np.sqrt(3))
    assert r["acc_test"] == pytest.approx(0.6) and r["seeds"] == 3
    assert tab.set_index("variant").loc["default", "d_acc"] == 0.0
    shown = ablation.display_table(tab)
    assert shown.loc[1, "Δ ACC vs default"].endswith("*") and not shown.loc[1, "Δ MCD vs default"].endswith("*")


def test_choice_excludes_the_reference_and_faithful_rows(abl_df):
    tab = ablation.table(abl_df)
    # LTH has the best val accuracy but is never a candidate; eta=0 has a lower mean MCD but its paired CI
    # includes 0: not significantly better, so the default is kept whatever eps.
    assert ablation.choose(tab, 0.03)["variant"] == "default"
    assert ablation.choose(tab, 0.001)["variant"] == "default"
    with pytest.raises(ValueError, match="no option set left"):
        ablation.choose(tab, 0.01, exclude=["default", "eta=0", "LTH"])


def test_ablation_reading_names_every_option_set_tied_on_the_lowest_val_mcd(abl_df):
    """A reader review found the reading naming one of four option sets tied on the lowest val MCD (the first
    listed), with a CI that was not the tie's only one."""
    from ballot_lib import readings

    # "spread" has the same mean MCD as eta=0 (−1 pt) but seeds that disagree more: eta=0 is the better supported.
    spread = [r | {"variant": "spread"} for r in _rows("eta=0", "val", [0.88, 0.779, 0.828], [0.15, 0.35, 0.22])]
    df = pd.concat([pd.DataFrame(spread), abl_df], ignore_index=True)
    df = pd.concat([df, pd.DataFrame(_rows("spread", "test", [0.5, 0.6, 0.7], [0.1, 0.2, 0.3]))], ignore_index=True)
    tab = ablation.table(df)
    assert tab.set_index("variant").loc["spread", "d_mcd"] == pytest.approx(
        tab.set_index("variant").loc["eta=0", "d_mcd"])
    text = readings.ablation(tab, ablation.choose(tab, 0.03), {}, 0.03)
    assert "The lowest val MCD, -1.0 pts vs the default, is shared by 2 option sets (`spread`; `eta=0`)" in text
    assert "of them `eta=0` (the smallest adjusted p, then the narrowest CI) [95 % CI" in text


def test_ablation_reading_states_significance_and_the_choice(abl_df):
    from ballot_lib import readings

    tab = ablation.table(abl_df)
    text = readings.ablation(tab, ablation.choose(tab, 0.03), {"eta=1": "default"}, 0.03)
    assert "1 option sets equal the default (or an earlier row) and were not run twice (`eta=1`)" in text
    # LTH is a reference row, not an option set.
    assert "1 of 1 option sets have significantly lower accuracy than the default (`eta=0`) and 0 higher;" in text
    assert "0 have significantly lower MCD and 0 higher MCD." in text
    assert "Kept the library default: no option set is significantly better on val" in text
    assert "The lowest val MCD, `eta=0`, is -1.0 pts [95 % CI" in text and "within seed noise" in text
    forced = readings.ablation(tab, tab.iloc[1], {}, 0.03)  # a row passed by hand, not by choose
    assert "`eta=0` is used although it is not significantly better than the default on val" in forced
    # labels that contain commas stay readable; rows shown but not eligible are named
    tab2 = ablation.table(abl_df.replace({"eta=0": "score=signed, conflict=veto"}))
    text2 = readings.ablation(tab2, ablation.choose(tab2, 0.001), {}, 0.001, not_chosen=ablation.NOT_CHOSEN)
    assert "(`score=signed, conflict=veto`)" in text2 and "not eligible" not in text2
    tab3 = ablation.table(abl_df.replace({"eta=0": "refined=False"}))
    assert ablation.choose(tab3, 0.03)["variant"] == "default"  # plain training keeps its last epoch: not eligible
    text3 = readings.ablation(tab3, ablation.choose(tab3, 0.03), {}, 0.03, not_chosen=ablation.NOT_CHOSEN)
    assert "Shown but not eligible: `refined=False`." in text3


def test_ablation_forest_marks_significant_rows(abl_df, tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ballot_lib import plots

    fig = plots.ablation_forest(ablation.table(abl_df), path=tmp_path / "f.png")
    ax_acc, ax_mcd = fig.get_axes()
    assert (tmp_path / "f.png").stat().st_size > 0
    assert [t.get_text() for t in ax_acc.get_yticklabels()] == ["eta=0", "LTH"]
    # eta=0's accuracy difference is significant (filled marker), its MCD difference is not.
    # LTH's accuracy is +1 pt in every seed: a zero-width CI, where the exact sign-flip test decides
    # (ballot_lib.metrics.paired_t_pvalue: p = 2/2³ = 0.25 with 3 seeds), so it is not significant.
    filled_acc = ax_acc.collections[1].get_offsets()
    assert [round(float(x), 6) for x in filled_acc[:, 0]] == [-2.1]
    # Neither MCD difference is significant: eta=0's CI includes 0, and LTH's is +1 pt in every seed (equal up to
    # float rounding: the sign-flip test, p = 0.25; the t-test on an sd of ~1e-17 called it significant before).
    assert len(ax_mcd.collections[2].get_offsets()) == 2
    assert "pts" in ax_acc.get_xlabel()
    plt.close(fig)


def test_reference_masks_on_a_tiny_run(tmp_path):
    import torch

    from conftest import make_experiment
    from ballot_lib.methods import Variant, prepare_grid, run_method
    from ballot_lib.pruning import magnitude_mask, overlap

    exp = make_experiment(tmp_path / "results")
    cfg = BallotConfig(density=0.2)
    prepare_grid(exp, [Variant("b", "ballot", {})], [0.2])
    run_method(exp, "dense", 0)
    mask, diag, others = ablation.reference_masks(exp, cfg, 0)
    assert set(others) == {"LTH magnitude mask", "η = 0 vote (no fairness term)"}
    net_T = exp.model_from(exp.dense_weights(0, exp.train.epochs))
    lth = magnitude_mask(net_T, 0.2)
    assert all(torch.equal(others["LTH magnitude mask"][n], lth[n]) for n in mask)
    # Budgets follow the LTH mask: every layer keeps as many weights in all three masks.
    for m in others.values():
        assert {n: int(m[n].sum()) for n in mask} == {n: int(mask[n].sum()) for n in mask}
    assert overlap(mask, others["η = 0 vote (no fairness term)"]) == pytest.approx(diag["overlap_eta0"])


def test_notebook02_comparison_gives_every_method_ballots_checkpoint_rule():
    from ballot_lib.methods.ballot import checkpoint_rule
    from ballot_lib.plans import ballot_method_comparison

    refined = {v.label: v for v in ballot_method_comparison({"eta": 2.0}, 0.02)}  # refined training by default
    assert checkpoint_rule({"eta": 2.0}) == "val_rule"
    assert refined["MP"].options == refined["LTH"].options == {"select": "val_rule", "select_eps": 0.02}
    plain = {v.label: v for v in ballot_method_comparison({"refined": False}, 0.02)}
    assert checkpoint_rule({"refined": False}) == "last"
    assert plain["MP"].options == plain["LTH"].options == {}
    assert checkpoint_rule({"refined": False, "select": "val_rule"}) == "val_rule"


def test_table_counts_seeds_near_chance_against_the_default_of_the_same_seed(abl_df):
    # abl_df has no per-class columns: no chance level, no collapse
    tab = ablation.table(abl_df)
    assert tab["collapsed"].tolist() == [0, 0, 0] and np.isnan(tab.attrs["chance"])
    assert "collapsed seeds (val)" not in ablation.display_table(tab)
    # chance 0.25 (4 classes, given): default 0.90/0.80/0.85 -> half its gain over chance: 0.575/0.525/0.55
    low = abl_df.copy()
    low.loc[(low["variant"] == "eta=0") & (low["split"] == "val"), "acc"] = [0.50, 0.53, 0.30]
    tab = ablation.table(low, chance=0.25)
    assert dict(zip(tab["variant"], tab["collapsed"])) == {"default": 0, "eta=0": 2, "LTH": 0}
    assert ablation.display_table(tab)["collapsed seeds (val)"].tolist() == ["", "2/3", ""]
    # the chance level defaults to 1 / number of classes (per-class recall columns)
    with_classes = low.assign(acc_class_0=0.5, acc_class_1=0.5, acc_class_2=0.5, acc_class_3=0.5)
    assert ablation.table(with_classes).attrs["chance"] == 0.25
    assert ablation.chance_level(with_classes) == 0.25
    # a reference at chance in a seed flags nothing there
    flat = low.copy()
    flat.loc[(flat["variant"] == "default") & (flat["split"] == "val") & (flat["seed"] == 2), "acc"] = 0.25
    assert ablation.collapsed_seeds(flat, 0.25)["eta=0"] == 1


def test_with_dense_runs_collapse_follows_the_rule_of_every_comparison():
    """Given the same seeds' dense runs, a row collapses when its balanced accuracy keeps less than half of the
    dense run's gain over chance (analysis.collapsed_runs, notebooks 03 and 04), not the default's."""
    def rows(variant, bacc):  # 2 classes, chance 0.5; per-class recalls (b, b) give balanced accuracy b
        return [{"variant": variant, "split": split, "seed": s, "dataset": "d", "model": "m", "density_target": 0.1,
                 "acc": b, "mcd": 0.0, "cwv": 0.0, "acc_class_0": b, "acc_class_1": b}
                for split in ("val", "test") for s, b in enumerate(bacc)]
    # Dense 0.90 in both seeds: half its gain is 0.70. The default is itself low in seed 1 (0.66), so against the
    # default "eta=0" (0.62 in seed 1: 0.12 of 0.16 gain, 75 %) would not collapse there; against dense it does.
    df = pd.DataFrame(rows("default", [0.88, 0.66]) + rows("eta=0", [0.86, 0.62]))
    dense = pd.DataFrame(rows("dense", [0.90, 0.90])).assign(density_target=1.0)
    tab = ablation.table(df, dense=dense)
    assert dict(zip(tab["variant"], tab["collapsed"])) == {"default": 1, "eta=0": 1}
    assert tab.attrs["collapse_reference"] == "dense" and tab.attrs["dense_acc"] == pytest.approx(0.90)
    assert dict(zip(ablation.table(df)["variant"], ablation.table(df)["collapsed"])) == {"default": 0, "eta=0": 0}
    text = " ".join(readings.collapses(tab))
    assert "less than half of the same-seed dense run's gain over chance (50.0 %)" in text
    assert "the dense runs have 90.0 % mean val accuracy" in text


def test_a_majority_class_predictor_counts_as_collapsed_on_imbalanced_data():
    """Binary, 75 % majority: always predicting the majority class scores 0.75 plain accuracy, which keeps 71 % of a
    0.85-accurate default's gain over chance 0.5 (never flagged by plain accuracy), but its balanced accuracy is
    0.5, exactly chance (skill 0): the rule of analysis.collapsed_runs flags it."""
    rows = []
    for seed in (0, 1):
        rows.append({"variant": "default", "split": "val", "seed": seed, "acc": 0.85,
                     "acc_class_0": 0.9, "acc_class_1": 0.7})
        rows.append({"variant": "majority", "split": "val", "seed": seed, "acc": 0.75,
                     "acc_class_0": 1.0, "acc_class_1": 0.0})
        rows.append({"variant": "fine", "split": "val", "seed": seed, "acc": 0.84,
                     "acc_class_0": 0.9, "acc_class_1": 0.66})
    df = pd.DataFrame(rows)
    got = ablation.collapsed_seeds(df, chance=0.5)
    assert got.to_dict() == {"default": 0, "majority": 2, "fine": 0}
    # plain accuracy alone (no per-class columns) would not have flagged it
    plain = ablation.collapsed_seeds(df.drop(columns=["acc_class_0", "acc_class_1"]), chance=0.5)
    assert plain["majority"] == 0


def _choice_df(extra):
    """Default plus hand-made option sets on val (3 seeds) and test."""
    rows = _rows("default", "val", [0.90, 0.80, 0.85], [0.30, 0.20, 0.25])
    for label, acc, mcd in extra:
        rows += _rows(label, "val", acc, mcd)
    for v in ["default"] + [e[0] for e in extra]:
        rows += _rows(v, "test", [0.5, 0.6, 0.7], [0.1, 0.2, 0.3])
    return pd.DataFrame(rows)


def test_a_noisy_better_looking_option_set_is_not_chosen():
    # "noisy": mean val MCD 10 pts lower than the default's (0.15 vs 0.25), same accuracy, but per seed −20, +10,
    # −20 pts: the paired CI includes 0. The old rule (accuracy within eps, then lowest MCD) picked it.
    tab = ablation.table(_choice_df([("noisy", [0.90, 0.80, 0.85], [0.10, 0.30, 0.05])]))
    r = tab.set_index("variant").loc["noisy"]
    assert r["d_mcd_low"] < 0 < r["d_mcd_high"]
    chosen = ablation.choose(tab, 0.01)
    assert chosen["variant"] == "default" and chosen["reason"] == "kept"
    text = readings.ablation(tab, chosen, {}, 0.01)
    assert "Kept the library default: no option set is significantly better on val" in text
    assert "The lowest val MCD, `noisy`, is -10.0 pts [95 % CI" in text
    assert "within seed noise: Holm-adjusted p = " in text and "(its CI includes 0)" in text


def test_a_clearly_better_option_set_is_chosen_and_the_reading_gives_its_ci():
    # "better": val MCD −5, −5, −4 pts in every seed (CI below 0), same accuracy; "noisy" looks better on the
    # mean but its CI includes 0.
    tab = ablation.table(_choice_df([("noisy", [0.90, 0.80, 0.85], [0.05, 0.30, 0.05]),
                                     ("better", [0.90, 0.80, 0.85], [0.25, 0.15, 0.21])]))
    chosen = ablation.choose(tab, 0.01)
    assert chosen["variant"] == "better" and chosen["reason"] == "chosen"
    text = readings.ablation(tab, chosen, {}, 0.01)
    assert "Chose `better`: val MCD lower by 4.7 pts [95 % CI" in text and "paired by seed against the default" in text
    assert "coin toss" not in text


def test_the_accuracy_guard_is_relative_to_the_default():
    # MCD lower in every seed (−10, −10, −9 pts) but val accuracy 5 pts below the default's in every seed.
    tab = ablation.table(_choice_df([("cheap", [0.85, 0.75, 0.80], [0.20, 0.10, 0.16])]))
    assert ablation.choose(tab, 0.01)["variant"] == "default"
    assert ablation.choose(tab, 0.06)["variant"] == "cheap"
    text = readings.ablation(tab, ablation.choose(tab, 0.01), {}, 0.01)
    assert "its val accuracy is -5.0 pts vs the default, more than 1 pts lower" in text
    # excluded rows are never chosen, however good
    assert ablation.choose(tab, 0.06, exclude=["cheap"])["variant"] == "default"


def test_min_skill_is_the_worst_seed_of_the_collapse_rule():
    def rows(variant, bacc):  # 2 classes, chance 0.5
        return [{"variant": variant, "split": "val", "seed": s, "dataset": "d", "model": "m", "density_target": 0.1,
                 "acc": b, "mcd": 0.0, "cwv": 0.0, "acc_class_0": b, "acc_class_1": b} for s, b in enumerate(bacc)]
    df = pd.DataFrame(rows("default", [0.88, 0.80]) + rows("eta=0", [0.71, 0.69]))
    dense = pd.DataFrame(rows("dense", [0.90, 0.90])).assign(density_target=1.0)
    tab = ablation.table(df, dense=dense, report_split="val")
    r = tab.set_index("variant")
    # skill (0.71 − 0.5)/0.4 = 0.525 and 0.475: collapsed in seed 1, min 0.475
    assert r.loc["eta=0", "min_skill"] == pytest.approx(0.475) and r.loc["eta=0", "collapsed"] == 1
    assert r.loc["default", "min_skill"] == pytest.approx(0.75)


def test_the_choice_is_corrected_over_the_eligible_option_sets():
    """Each set alone at p < 0.05 is not enough: among several sets the best-looking one is often seed noise, so
    the choice takes Holm's correction over every eligible set (a review simulated ~28 % non-default picks with
    every option null and the per-test rule)."""
    base = [("a", [0.90, 0.80, 0.85], [0.26, 0.15, 0.215]), ("b", [0.90, 0.80, 0.85], [0.25, 0.17, 0.21])]
    alone = ablation.table(_choice_df(base[:1]))
    assert float(alone.set_index("variant").loc["a", "d_mcd_p"]) < 0.05
    assert ablation.choose(alone, 0.01)["variant"] == "a"
    # The same set among 6 null-ish others: its adjusted p exceeds 0.05 and the default is kept.
    others = [(f"n{i}", [0.90, 0.80, 0.85], [0.30 - 0.01 * i, 0.20 + 0.01 * i, 0.25]) for i in range(6)]
    crowded = ablation.table(_choice_df(base[:1] + others))
    padj = ablation.choice_pvalues(crowded)
    assert padj["a"] > 0.05 and padj.notna().sum() == 7
    chosen = ablation.choose(crowded, 0.01)
    assert chosen["variant"] == "default"
    assert "Holm's correction over the 7 eligible option sets" in readings.ablation(crowded, chosen, {}, 0.01)

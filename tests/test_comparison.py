"""The comparison tables of notebook 03 on hand-made result frames whose answers are known by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ballot_lib import comparison as C


def frame(values: dict, settings=(("digits_lt", "mlp", 0.1), ("adult", "mlp", 0.1)), seeds=(0, 1, 2),
          split="test") -> pd.DataFrame:
    """values: variant -> (acc, cwv, mcd) per setting index, plus a per-seed offset 0.001*seed on every metric and
    a variant-specific per-seed jitter 0.0002·k·(seed − mean seed) (k: the variant's position) that averages to
    0 over the seeds: the means are the values given, and paired differences have a little spread (real runs
    do; identical differences on every seed are the degenerate zero-spread case, tested in test_metrics)."""
    rows = []
    centre = float(np.mean(seeds))
    for k, (variant, per_setting) in enumerate(values.items()):
        for i, s in enumerate(settings):
            acc, cwv, mcd = per_setting[i]
            for seed in seeds:
                off = 0.001 * seed + 0.0002 * k * (seed - centre)
                rows.append({"variant": variant, "dataset": s[0], "model": s[1], "density_target": s[2],
                             "seed": seed, "split": split, "acc": acc + off, "cwv": cwv + off,
                             "mcd": mcd + off, "compute_epochs": 20.0})
    return pd.DataFrame(rows)


VALUES = {
    "Ballot": [(0.90, 0.010, 0.20), (0.85, 0.020, 0.30)],
    "Ballot plain": [(0.89, 0.012, 0.25), (0.85, 0.030, 0.35)],
    "LTH": [(0.90, 0.020, 0.30), (0.84, 0.030, 0.40)],
    "LTH +val": [(0.90, 0.015, 0.25), (0.85, 0.025, 0.30)],
}


def test_comparison_table_pairs_by_seed_and_counts_wins():
    df = frame(VALUES)
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH",), "val_rule"), metrics=["acc", "cwv", "mcd"])
    row = t[(t["method"] == "LTH") & (t["dataset"] == "digits_lt")].iloc[0]
    # Ballot − LTH per seed: the value difference + 0.0004·(1 − seed) (jitter of positions 0 and 2): −0.0996,
    # −0.1, −0.1004 on MCD (every seed a win, a tight CI); on accuracy +0.0004, 0, −0.0004 (one win, mean 0).
    assert row["d_mcd"] == pytest.approx(-0.10) and row["wins_mcd"] == 3 and row["sig_mcd"]
    assert row["d_cwv"] == pytest.approx(-0.010)
    assert row["d_acc"] == pytest.approx(0.0, abs=1e-12) and row["wins_acc"] == 1 and not row["sig_acc"]
    assert row["compute_epochs"] == 20.0
    wc = C.win_counts(t)
    mcd = wc[(wc["baseline"] == "LTH") & (wc["metric"] == "mcd")].iloc[0]
    assert mcd["settings"] == 2


def test_improvement_paper_and_robust_forms_by_hand():
    df = frame(VALUES, seeds=(0, 0))  # one seed only: offsets vanish
    df = df.drop_duplicates()
    imp = C.improvement_table(df, "Ballot", {"LTH": "LTH"})
    r = imp.iloc[0]
    # paper form: mean over settings and metrics of (B − A)/B: cwv 0.5, 1/3; mcd 1/3, 0.25
    expected = 100 * np.mean([0.5, 1 / 3, 1 / 3, 0.25])
    assert r["paper (seed means)"] == pytest.approx(expected)
    assert r["paper"] == pytest.approx(expected)
    # robust: cwv (0.05 − 0.03)/0.05 = 0.4, mcd (0.7 − 0.5)/0.7; mean of the two
    assert r["robust"] == pytest.approx(100 * np.mean([0.4, 0.2 / 0.7]))
    assert r["paper's number"] == 33.91


def test_improvement_ci_ends_above_100_percent_are_cut_there():
    # One setting, three seeds: Ballot's CWV and MCD are 0 (a 100 % improvement) in seeds 0 and 1 and three times
    # LTH's in seed 2 (−200 %): per-seed improvements 100, 100, −200, mean 0, t-interval ±4.303·173.2/√3 = ±430.
    rows = []
    for seed, (fa, fb) in enumerate([(0.0, 0.1), (0.0, 0.1), (0.3, 0.1)]):
        for variant, f in (("Ballot", fa), ("LTH", fb)):
            rows.append({"variant": variant, "dataset": "digits", "model": "cnn", "density_target": 0.1,
                         "seed": seed, "split": "test", "acc": 0.9, "cwv": f, "mcd": f, "compute_epochs": 20.0})
    r = C.improvement_table(pd.DataFrame(rows), "Ballot", {"LTH": "LTH"}).iloc[0]
    half = 4.302652729749 * 100 * math.sqrt(3) / math.sqrt(3)
    for form in ("paper", "robust"):
        assert r[form] == pytest.approx(0.0, abs=1e-9)
        assert r[f"{form}_lo"] == pytest.approx(-half) and r[f"{form}_hi"] == 100.0, form


def test_decomposition_parts_add_up_per_seed():
    df = frame(VALUES)
    rng = np.random.default_rng(0)
    df["mcd"] = df["mcd"] + rng.normal(0, 0.01, len(df))
    d = C.decomposition(df, metrics=["mcd"])
    for s, g in d[d["dataset"] != "pooled"].groupby(["dataset"]):
        parts = g.set_index("part")["diff"]
        assert parts["total (Ballot − LTH)"] == pytest.approx(parts["vote (Ballot plain − LTH)"]
                                                              + parts["checkpoint selection (Ballot − Ballot plain)"])
    pooled = d[d["dataset"] == "pooled"].set_index("part")
    assert pooled.loc["total (Ballot − LTH)", "diff"] == pytest.approx(
        pooled.loc["vote (Ballot plain − LTH)", "diff"] + pooled.loc["checkpoint selection (Ballot − Ballot plain)", "diff"])
    assert pooled.loc["total (Ballot − LTH)", "n"] == 3


def test_choose_on_val_takes_lowest_mcd_within_eps_of_best_accuracy():
    df = frame({"A": [(0.90, 0.01, 0.30), (0.80, 0.01, 0.30)],   # pooled acc 0.85, mcd 0.30
                "B": [(0.89, 0.01, 0.20), (0.805, 0.01, 0.20)],  # pooled acc 0.8475 (within 0.01), mcd 0.20
                "C": [(0.70, 0.01, 0.05), (0.70, 0.01, 0.05)]},  # too inaccurate
               split="val")
    choice, table = C.choose_on_val(df, ["A", "B", "C"], eps=0.01)
    assert choice == "B" and table.loc[table["chosen"], "candidate"].tolist() == ["B"]
    assert C.choose_on_val(df, ["A", "B", "C"], eps=0.0)[0] == "A"
    with pytest.raises(ValueError, match="none of the candidates"):
        C.choose_on_val(df, ["Z"])


def test_choose_on_val_keeps_the_reference_unless_a_candidate_is_significantly_better():
    """Notebook 03 (as notebook 02) keeps the library default unless a candidate's pooled val MCD is significantly
    lower after Holm over the others; the rank rule picked whichever ranked first."""
    # B: 10 pts lower MCD than A on every seed (a small spread), same accuracy: significant after Holm over B and
    # C, so B is chosen over the reference A.
    df = frame({"A": [(0.90, 0.01, 0.30), (0.80, 0.01, 0.30)], "B": [(0.90, 0.01, 0.20), (0.80, 0.01, 0.20)],
                "C": [(0.70, 0.01, 0.05), (0.70, 0.01, 0.05)]}, split="val")
    choice, table = C.choose_on_val(df, ["A", "B", "C"], eps=0.01, reference="A")
    assert choice == "B" and table.attrs["rule"].startswith("chose B")
    assert table.set_index("candidate").loc["C", "p (Holm)"] < 0.05  # C is much fairer but 20 pts less accurate
    # Noise: B's MCD is 30 pts lower on one seed and 25 pts higher on another: no significant difference.
    noisy = frame({"A": [(0.90, 0.01, 0.30), (0.80, 0.01, 0.30)], "B": [(0.90, 0.01, 0.29), (0.80, 0.01, 0.29)]},
                  split="val")
    noisy.loc[(noisy["variant"] == "B") & (noisy["seed"] == 0), "mcd"] -= 0.30
    noisy.loc[(noisy["variant"] == "B") & (noisy["seed"] == 1), "mcd"] += 0.25
    rank_choice, _ = C.choose_on_val(noisy, ["A", "B"], eps=0.01)
    kept, t2 = C.choose_on_val(noisy, ["A", "B"], eps=0.01, reference="A")
    assert rank_choice == "B" and kept == "A" and t2.attrs["rule"].startswith("kept A")


def test_variants_and_tables_cover_both_rules():
    vs = C.comparison_variants({"score": "taylor"}, baselines=["MP", "LTH"])
    labels = [v.label for v in vs]
    assert labels == ["Dense", "MP", "MP +val", "LTH", "LTH +val", "Ballot", "Ballot plain", "Ballot plain +val",
                      "Ballot η=0"]
    assert {v.options.get("select") for v in vs if v.label.startswith("MP")} == {"last", "val_rule"}
    assert next(v for v in vs if v.label == "Ballot η=0").options["eta"] == 0.0
    t = C.tables(["MP", "LTH"])
    assert t[0].ballot == "Ballot plain" and t[0].baselines == ("MP", "LTH")
    assert t[1].ballot == "Ballot" and t[1].baselines == ("MP +val", "LTH +val")


def test_val_rule_baselines_take_ballots_select_eps():
    vs = {v.label: v.options for v in C.comparison_variants({"select_eps": 0.05}, baselines=["MP", "LTH"])}
    assert vs["MP +val"]["select_eps"] == vs["LTH +val"]["select_eps"] == vs["Ballot plain +val"]["select_eps"] == 0.05
    # The last-epoch variant carries it too (it selects nothing): the pair differs only in `select`, so one training
    # serves both (review: with the option on the +val variant only, both runs trained).
    assert vs["MP"]["select_eps"] == 0.05 and vs["MP"]["select"] == "last"
    own = {v.label: v.options for v in C.comparison_variants({"select_eps": 0.05}, baselines=["MP"],
                                                             baseline_options={"MP": {"select_eps": 0.02}})}
    assert own["MP +val"]["select_eps"] == 0.02  # a baseline's own option wins
    default = {v.label: v.options for v in C.comparison_variants({}, baselines=["MP"])}
    assert "select_eps" not in default["MP +val"]  # the library default (0.01), as Ballot's


def test_a_rewind_point_applies_to_lth_and_ballot_alike_and_nowhere_else():
    vs = {v.label: v for v in C.comparison_variants({"score": "taylor"}, C.baselines_for(True), rewind_epoch=2)}
    rewinding = {k for k, v in vs.items() if v.options.get("rewind_epoch") == 2}
    assert rewinding == {"LTH", "LTH +val", "Ballot", "Ballot plain", "Ballot plain +val", "Ballot η=0"}
    assert all("rewind_epoch" not in v.options for k, v in vs.items() if k not in rewinding)
    # θ0 (the default) leaves every option set as it was: the stored runs of earlier sessions keep their ids
    plain = C.comparison_variants({"score": "taylor"}, C.baselines_for(True))
    assert all("rewind_epoch" not in v.options for v in plain)
    assert C.rewound({"a": {}, "b": {"eta": 1.0}}, 1) == {"a": {"rewind_epoch": 1},
                                                           "b": {"eta": 1.0, "rewind_epoch": 1}}
    assert C.rewound({"a": {"rewind_epoch": 1}}, 1) == {"a": {"rewind_epoch": 1}}
    assert C.rewound({"a": {"rewind_epoch": 0}}, 0) == {"a": {"rewind_epoch": 0}}
    with pytest.raises(ValueError, match=r"ballot_candidates\['a'\] sets rewind_epoch=3 .* rewind_epoch is 1"):
        C.rewound({"a": {"rewind_epoch": 3}}, 1)
    with pytest.raises(ValueError, match="ballot_options sets rewind_epoch=3"):
        C.comparison_variants({"rewind_epoch": 3}, ["LTH"], rewind_epoch=1)
    # given the setting's T, the compute-matched "2T" runs train 2T − k epochs, as Ballot rewound to θk does
    from ballot_lib.methods.base import budget_recipe
    from ballot_lib.training import TrainConfig

    for T, k in ((20, 1), (20, 2), (4, 1), (250, 3)):
        late = {v.label: v for v in C.comparison_variants({}, C.baselines_for(True), rewind_epoch=k, epochs=T)}
        for label in ("SafeCompress 2T", "FairScratch 2T"):
            assert budget_recipe(TrainConfig(epochs=T), late[label].options["budget"]).epochs == 2 * T - k
        assert "budget" not in late["SafeCompress"].options and "budget" not in late["MP"].options
    assert vs["SafeCompress 2T"].options["budget"] == 2.0  # no T given: 2T, and the table says compute differs
    # a budget the caller sets is kept
    own = {v.label: v for v in C.comparison_variants({}, ["SafeCompress 2T"], {"SafeCompress 2T": {"budget": 3.0}},
                                                     rewind_epoch=1, epochs=20)}
    assert own["SafeCompress 2T"].options["budget"] == 3.0
    with pytest.raises(ValueError, match=r"rewind_epoch must be in \[0, 4\)"):
        C.matched_budget(2.0, 4, 4)


def test_reading_is_generated_from_the_numbers():
    df = frame(VALUES)
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH",), "val_rule"), metrics=["acc", "cwv", "mcd"])
    text = C.reading({"matched": t}, {"matched": C.improvement_table(df, "Ballot", {"LTH": "LTH"})},
                     C.decomposition(df))
    assert "by each comparison's own 5 % test (uncorrected) fairer in 4" in text and "paper reports +33.91 %" in text
    # Flip the numbers: the reading flips with them.
    worse = {k: [(a, c * 3, m * 3) for a, c, m in v] if k == "Ballot" else v for k, v in VALUES.items()}
    t2 = C.comparison_table(frame(worse), C.Table("x", "Ballot", ("LTH",), "val_rule"),
                            metrics=["acc", "cwv", "mcd"])
    assert "(uncorrected) fairer in 0, less fair in 4" in C.reading({"m": t2}, {}, C.decomposition(frame(worse)))


def _with_classes(df: pd.DataFrame, n_classes: int = 10) -> pd.DataFrame:
    out = df.copy()
    for k in range(n_classes):
        out[f"acc_class_{k}"] = out["acc"]
    return out


def test_collapsed_runs_are_found_by_skill_over_chance_against_the_same_seed_dense_run():
    values = {"Dense": [(0.90, 0.01, 0.2)], "Ballot": [(0.85, 0.01, 0.2)], "LTH": [(0.60, 0.02, 0.4)],
              "MP": [(0.88, 0.01, 0.2)]}
    st = (("digits_lt", "cnn", 0.05),)
    df = pd.concat([_with_classes(frame(values, settings=st, split=sp)) for sp in ("val", "test")],
                   ignore_index=True)
    classes = [c for c in df if c.startswith("acc")]
    val = df["split"] == "val"
    # On val, seed 2 of Ballot ends at chance (10 classes: 0.1); seed 1 of LTH at a balanced accuracy of 0.45:
    # skill (0.45-0.1)/(0.901-0.1) < 0.5.
    df.loc[val & (df["variant"] == "Ballot") & (df["seed"] == 2), classes] = 0.1
    df.loc[val & (df["variant"] == "LTH") & (df["seed"] == 1), classes] = 0.45
    gone = C.collapsed_runs(df)
    assert gone.attrs["split"] == "val"
    assert [(r.variant, r.seed) for r in gone.itertuples()] == [("Ballot", 2), ("LTH", 1)]
    assert gone.loc[0, "skill"] == pytest.approx(0.0, abs=1e-9)
    assert gone.loc[1, "skill"] == pytest.approx((0.45 - 0.1) / (0.901 - 0.1))
    # Test was not looked at: the same runs are fine there.
    assert C.collapsed_runs(df, split="test").empty
    # LTH's other seeds (0.60 = skill 0.62) are kept; a stricter threshold flags them too.
    assert set(C.collapsed_runs(df, threshold=0.7)["variant"]) == {"Ballot", "LTH"}
    assert len(C.collapsed_runs(df, threshold=0.7)) == 4
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH", "MP"), "val_rule"), metrics=["acc", "cwv", "mcd"])
    assert dict(zip(t["method"], t["collapsed"])) == {"Ballot": 1, "LTH": 1, "MP": 0, "Dense": 0}
    md = C.markdown(t)
    assert "| collapsed |" in md and "| 1/3 |" in md and "**1/3**" not in md  # bold is for significance
    text = C.collapse_reading(gone)
    assert "val balanced accuracy" in text and "digits_lt/cnn @ 0.05" in text
    assert "Ballot (seed 2: balanced acc 0.100)" in text and "LTH (seed 1: balanced acc 0.450)" in text
    assert C.collapse_reading(gone.iloc[:0]).endswith("none.")
    # LTH and Ballot collapsed after rewinding to θ0: the reading says how to re-run with late rewinding ...
    hint = "`rewind_epoch: 1` rewinds LTH and Ballot alike to θ1"
    assert hint in C.collapse_reading(gone, rewind_epoch=0) and "Ballot, LTH retrained from θ0" in \
        C.collapse_reading(gone, rewind_epoch=0)
    # ... not when they already rewound later, nor when only methods that do not rewind collapsed
    assert hint not in C.collapse_reading(gone, rewind_epoch=1) and hint not in text
    assert hint not in C.collapse_reading(gone.assign(variant="MP +val"), rewind_epoch=0)
    assert [C.method_of(x) for x in ("LTH +val", "Ballot η=0", "SafeCompress 2T", "Dense")] == [
        "lth", "ballot", "safecompress", None]
    assert "Collapsed runs" in C.reading({"m": t}, {}, C.decomposition(df), gone)


def test_a_majority_class_predictor_collapses_on_an_imbalanced_target():
    # Adult-like: 75 % of val is class 0. Dense recalls (0.93, 0.60); the sparse run predicts class 0 only:
    # plain accuracy 0.75 (looks skilled against 1/C = 0.5), balanced accuracy 0.5 = chance: skill 0.
    rows = [{"variant": v, "dataset": "adult", "model": "mlp", "density_target": d, "seed": 0, "split": "val",
             "acc": acc, "acc_class_0": r0, "acc_class_1": r1}
            for v, d, acc, r0, r1 in (("Dense", 1.0, 0.85, 0.93, 0.60), ("LTH", 0.05, 0.75, 1.0, 0.0))]
    gone = C.collapsed_runs(pd.DataFrame(rows))
    assert list(gone["variant"]) == ["LTH"] and gone.loc[0, "skill"] == pytest.approx(0.0)
    assert gone.loc[0, "acc"] == 0.75 and gone.loc[0, "balanced_acc"] == pytest.approx(0.5)


def test_no_collapse_without_a_dense_reference_or_when_dense_is_at_chance():
    df = _with_classes(frame(VALUES, split="val"))  # no Dense variant
    assert C.collapsed_runs(df).empty
    values = {"Dense": [(0.10, 0.01, 0.2)], "Ballot": [(0.10, 0.01, 0.2)]}
    df = frame(values, settings=(("digits_lt", "cnn", 0.05),), split="val")
    df["acc"] = 0.1
    assert C.collapsed_runs(_with_classes(df)).empty


def test_improvement_leaves_out_settings_with_collapsed_runs():
    """A collapsed run (near chance) has a small CWV and would pass for a fairness gain: the improvement is taken
    over the settings where neither side collapsed, and says how many it left out."""
    df = frame(VALUES, seeds=(0, 0)).drop_duplicates()
    gone = pd.DataFrame([{"dataset": "adult", "model": "mlp", "density": 0.1, "variant": "LTH", "seed": 0,
                          "acc": 0.1, "dense_acc": 0.9, "skill": 0.0}])
    r = C.improvement_table(df, "Ballot", {"LTH": "LTH"}, exclude=gone).iloc[0]
    assert r["settings"] == 1 and r["left out"] == 1
    assert r["robust"] == pytest.approx(100 * np.mean([0.5, 1 / 3]))  # digits_lt only: cwv .5, mcd 1/3
    other = C.improvement_table(df, "Ballot", {"LTH": "LTH"},
                                exclude=gone.assign(variant="SafeCompress")).iloc[0]  # another method collapsed
    assert other["settings"] == 2 and other["left out"] == 0
    # What leaving the setting out changed is reported beside it: the robust form over every setting.
    every = C.improvement_table(df, "Ballot", {"LTH": "LTH"}).iloc[0]
    assert r["robust (all settings)"] == pytest.approx(every["robust"])
    assert f"{every['robust']:+.1f} %" in C.improvement_sentence(r.to_dict() | {"seeds": 3, "robust_lo": 1.0,
                                                                                "robust_hi": 2.0}, "t")


def test_improvement_sentence_says_direction_and_nothing_without_a_ci():
    base = {"baseline": "LTH", "paper": 10.0, "paper_lo": 5.0, "paper_hi": 15.0, "seeds": 3, "settings": 4,
            "left out": 1, "paper's number": 33.91}
    up = C.improvement_sentence({**base, "robust": 10.0, "robust_lo": 4.0, "robust_hi": 16.0, "padj": 0.01}, "t")
    assert "significantly fairer than LTH" in up and "1 with collapsed runs left out" in up
    raw = C.improvement_sentence({**base, "robust": 10.0, "robust_lo": 4.0, "robust_hi": 16.0}, "t")
    assert "significantly" not in raw and "unadjusted for the other rows" in raw  # no family: not "significant"
    down = C.improvement_sentence({**base, "robust": -10.0, "robust_lo": -16.0, "robust_hi": -4.0, "padj": 0.01}, "t")
    assert "significantly less fair than LTH" in down and "outside it" in down
    none = C.improvement_sentence({**base, "robust": 1.0, "robust_lo": -4.0, "robust_hi": 6.0}, "t")
    assert "no significant difference" in none
    one = C.improvement_sentence({**base, "seeds": 1, "robust": 12.0, "robust_lo": math.nan,
                                  "robust_hi": math.nan}, "t")
    assert "no CI: nothing is decided" in one and "includes 0" not in one and "outside" not in one


def test_win_counts_count_only_settings_where_both_ran():
    vals = dict(VALUES)
    df = frame(vals)
    df = df[~((df["variant"] == "Ballot") & (df["dataset"] == "adult"))]  # Ballot not run on adult
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH",), "val_rule"), metrics=["acc", "cwv", "mcd"])
    wc = C.win_counts(t).set_index(["baseline", "metric"])
    assert wc.loc[("LTH", "mcd"), "settings"] == 1
    assert wc.loc[("LTH", "mcd"), "no significant difference"] + wc.loc[("LTH", "mcd"), "Ballot better"] \
        + wc.loc[("LTH", "mcd"), "Ballot worse"] == 1


def test_reading_names_baselines_whose_compute_differs():
    vals = {**VALUES, "SafeCompress": [(0.90, 0.030, 0.40), (0.84, 0.040, 0.50)]}
    df = frame(vals)
    df.loc[df["variant"] == "SafeCompress", "compute_epochs"] = 10.0  # trains from θ0 only: half Ballot's 20
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH", "SafeCompress"), "val_rule"),
                           metrics=["acc", "cwv", "mcd"])
    assert C.compute_unmatched(t) == {"SafeCompress": (2.0, 2.0)}
    text = C.reading({"matched": t}, {}, C.decomposition(df))
    assert ("Training epochs are not matched for every baseline: Ballot (its dense run included) trains 2× the epochs of "
            "SafeCompress; 4 of its 8 fairer results (each by its own test) are against these baselines.") in text
    # The headline counts the compute-matched baseline (LTH: 4 comparisons, all fairer) before all of them.
    assert ("over 4 (baseline, setting, class-fairness metric: CWV, MCD) comparisons **at equal training epochs**, "
            "Ballot is by each comparison's own 5 % test (uncorrected) fairer in 4, less fair in 0") in text
    assert "equal compute" not in text
    assert "(8 comparisons): fairer in 8, less fair in 0." in text
    imp = C.improvement_table(df, "Ballot", {"LTH": "LTH", "SafeCompress": "SafeCompress"})
    lines = C.reading({"matched": t}, {"sel": imp}, C.decomposition(df)).splitlines()
    sc = next(x for x in lines if x.startswith("- Class-fairness (CWV, MCD) improvement over SafeCompress"))
    assert sc.endswith("Training epochs are not matched: Ballot trains 2× the epochs of SafeCompress.")
    assert "not matched" not in next(x for x in lines if x.startswith("- Class-fairness (CWV, MCD) improvement over LTH"))
    same = C.comparison_table(frame(VALUES), C.Table("x", "Ballot", ("LTH",), "val_rule"),
                              metrics=["acc", "cwv", "mcd"])
    assert C.compute_unmatched(same) == {} and "not matched" not in C.reading({"m": same}, {},
                                                                                          C.decomposition(frame(VALUES)))


def test_compute_matched_baselines_train_twice_as_long():
    vs = {v.label: v for v in C.comparison_variants({}, C.baselines_for(True))}
    assert vs["SafeCompress 2T"].method == "safecompress" and vs["SafeCompress 2T"].options["budget"] == 2.0
    assert vs["FairScratch 2T"].options["budget"] == 2.0 and "budget" not in vs["FairScratch"].options
    # Dynamic-mask methods offer the val rule too (their +val runs keep the selected epoch's mask)
    assert vs["SafeCompress 2T +val"].options == {"budget": 2.0, "select": "val_rule"}
    assert [b for b in C.baselines_for(False) if b.endswith(C.MATCHED)] == []
    t = C.tables(C.baselines_for(True))[1]
    assert "SafeCompress 2T +val" in t.baselines and "MP +val" in t.baselines


def test_table_is_corrected_for_multiple_comparisons_with_holm_by_hand():
    # Two baselines x one setting x metrics acc/cwv/mcd. Seeds 0..2 with hand-made per-seed differences.
    rows = []
    diffs = {  # Ballot − baseline per seed
        "LTH": {"acc": (0.0, 0.01, -0.01), "cwv": (-0.010, -0.011, -0.009), "mcd": (-0.10, -0.08, -0.05)},
        "MP": {"acc": (0.01, 0.02, 0.0), "cwv": (0.001, -0.002, 0.0005), "mcd": (-0.30, -0.31, -0.29)},
    }
    for seed in range(3):
        rows.append({"variant": "Ballot", "seed": seed, "acc": 0.9, "cwv": 0.05, "mcd": 0.5})
        for b, d in diffs.items():
            rows.append({"variant": b, "seed": seed, **{m: base - d[m][seed] for m, base in
                                                         (("acc", 0.9), ("cwv", 0.05), ("mcd", 0.5))}})
    df = pd.DataFrame(rows).assign(dataset="digits", model="mlp", density_target=0.1, split="test",
                                   compute_epochs=20.0)
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH", "MP"), "last"), metrics=["acc", "cwv", "mcd"])
    assert C.family_size(t) == 6
    from scipy import stats

    raw = {(b, m): stats.ttest_rel([0.0] * 3, [-x for x in d[m]]).pvalue for b, d in diffs.items() for m in d}
    order = sorted(raw, key=raw.get)
    holm, running = {}, 0.0
    for i, k in enumerate(order):  # Holm by hand: (m − i)·p, made monotone, capped at 1
        running = max(running, min(1.0, (6 - i) * raw[k]))
        holm[k] = running
    for b in diffs:
        r = t[t["method"] == b].iloc[0]
        for m in ("acc", "cwv", "mcd"):
            assert r[f"p_{m}"] == pytest.approx(raw[(b, m)], rel=1e-9)
            assert r[f"padj_{m}"] == pytest.approx(holm[(b, m)], rel=1e-9)
            assert r[f"sigadj_{m}"] is bool(holm[(b, m)] < 0.05)
    # Ballot's own row is not a test.
    assert t[t["method"] == "Ballot"].iloc[0]["sigadj_mcd"] is None
    # LTH's mcd is significant alone (CI excludes 0) but not after Holm over 6 tests; MP's mcd survives.
    lth = t[t["method"] == "LTH"].iloc[0]
    assert 0.01 < raw[("LTH", "mcd")] < 0.05 and lth["sig_mcd"] and lth["sigadj_mcd"] is False
    raw_wc = C.win_counts(t)
    adj_wc = C.win_counts(t, adjusted=True)
    assert adj_wc["Ballot better"].sum() <= raw_wc["Ballot better"].sum()
    assert adj_wc.set_index(["baseline", "metric"]).loc[("MP", "mcd"), "Ballot better"] == 1
    text = C.reading({"x": t}, {}, pd.DataFrame(columns=["dataset", "metric", "part"]))
    assert "holds 6 of them" in text and "Holm" in text
    # One convention for every table: bold = significant after Holm. MP's MCD cell is bold, LTH's (significant
    # alone, not after the correction) is not, though its CI excludes 0.
    md = C.markdown(t)
    assert "†" not in md
    cell = {r["method"]: C._fmt_cell(r, "mcd") for _, r in t.iterrows()}
    assert cell["MP"].startswith("**") and not cell["LTH"].startswith("**")


def test_forest_cuts_impossible_cis_and_explains_its_marks(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    t = C.comparison_table(frame(VALUES), C.Table("x", "Ballot", ("LTH",), "val_rule"), metrics=["acc", "cwv", "mcd"])
    t.loc[t["method"] == "LTH", ["lo_mcd", "hi_mcd"]] = [-1.4, 1.3]  # a 3-seed CI wider than MCD can differ
    fig = C.forest(t, "mcd", path=tmp_path / "f.png")
    ax = fig.axes[0]
    assert ax.get_xlim()[0] >= -105 and ax.get_xlim()[1] <= 105
    labels = [h.get_label() for h in ax.get_legend().legend_handles]
    assert "CI includes 0" in labels and "significant after Holm" in labels
    assert "Ballot better (per-test CI excludes 0)" in labels
    assert (tmp_path / "f.png").stat().st_size > 0


def test_decomposition_with_every_setting_left_out_is_an_empty_table_the_reading_explains():
    df = frame(VALUES)
    gone = pd.DataFrame([{"dataset": ds, "model": m, "density": d, "variant": "LTH", "seed": 0}
                         for ds, m, d in (("digits_lt", "mlp", 0.1), ("adult", "mlp", 0.1))])
    d = C.decomposition(df, exclude=gone)
    assert d.empty and list(d.columns) == C.DECOMPOSITION_COLUMNS
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH",), "val_rule"), metrics=["acc", "cwv", "mcd"])
    assert "every one of the 2 settings holds collapsed runs" in C.reading({"x": t}, {}, d)
    # One setting left out: the pooled rows say so.
    part = C.decomposition(df, exclude=gone.iloc[:1])
    pooled = part[part["dataset"] == "pooled"]
    assert set(pooled["settings"]) == {1} and set(pooled["left out"]) == {1}


def test_improvement_sentence_when_every_setting_was_left_out_states_no_nan():
    """Notebook 03 printed "paper form +nan % [+nan, +nan] ... over 0 settings" when every setting held collapsed
    runs (non-default review)."""
    import math

    from ballot_lib import comparison as C

    r = {"baseline": "SafeCompress", "paper's number": 33.91, "settings": 0, "left out": 1, "paper": math.nan,
         "paper_lo": math.nan, "paper_hi": math.nan, "robust": math.nan, "robust_lo": math.nan,
         "robust_hi": math.nan, "seeds": 2, "robust (all settings)": 12.0, "robust_lo (all settings)": -3.0,
         "robust_hi (all settings)": 27.0}
    text = C.improvement_sentence(r, "no selection")
    assert "nan" not in text and "every setting holds collapsed runs" in text and "+12.0 %" in text


# ------------------------------------------------------------------ audit: group metrics, one family, Holm on improvements


def _with_groups(df: pd.DataFrame, worse_by: float = 0.05) -> pd.DataFrame:
    """Group metrics on the adult setting only (digits has no sensitive attribute): every method's DP/EO gap 0.10,
    Ballot's ``worse_by`` larger, with a little per-seed spread; group_acc_gap equal for all (no difference)."""
    df = df.copy()
    adult = df["dataset"] == "adult"
    spread = 0.001 * (df["seed"] - df["seed"].mean())
    for m in C.GROUP_METRICS:
        df[m] = np.where(adult, 0.10 + spread * (1 + (df["variant"] == "LTH")), np.nan)
    ballot = adult & (df["variant"] == "Ballot")
    df.loc[ballot, ["dp_gap", "eo_gap"]] += worse_by
    df.loc[adult, "group_acc_gap"] = 0.05 + 0.001 * df.loc[adult, "seed"] * (1 + (df.loc[adult, "variant"] == "LTH"))
    return df


def test_group_metrics_are_shown_counted_and_read():
    """The table tests DP/EO gap on adult; the markdown shows those cells, the family counts exactly the cells
    shown, and the reading says Ballot is significantly worse on group metrics (never better)."""
    df = _with_groups(frame(VALUES))
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH",), "val_rule"))
    assert set(C.GROUP_METRICS) <= set(C.tested_metrics(t))
    md = C.markdown(t)
    assert "Ballot − method: dp_gap" in md and "Ballot − method: eo_gap" in md and "**Group metrics**" in md
    # every tested cell is displayed: cells carry "[lo, hi] wins/n"
    shown = sum(cell.count("] ") for line in md.splitlines() if line.startswith("| ") for cell in line.split("|")
                if "[" in cell)
    assert shown == C.family_size(t) == 2 * 3 + 1 * 3  # 2 settings × (acc, cwv, mcd) + adult × 3 group metrics
    row = t[(t["method"] == "LTH") & (t["dataset"] == "adult")].iloc[0]
    assert row["d_dp_gap"] == pytest.approx(0.05) and row["sig_dp_gap"]
    text = C.reading({"matched": t}, {}, C.decomposition(df))
    assert "**Group metrics** (adult" in text
    assert "Ballot is significantly worse in 2 and better in 0" in text
    assert "DP gap: worse in 1, better in 0 of 1" in text and "EO gap: worse in 1, better in 0 of 1" in text
    assert "the table holds 9 of them (accuracy, CWV, MCD and the group metrics" in text
    assert "On group fairness Ballot loses more often than it wins here (worse per test against LTH in 2)" in text


def test_markdown_shows_sparsity_next_to_density():
    t = C.comparison_table(frame(VALUES), C.Table("x", "Ballot", ("LTH",), "val_rule"))
    head, _, first = C.markdown(t).splitlines()[:3]
    assert "| density | sparsity | method |" in head and "| 0.1 | 0.9 | Ballot |" in first


def test_one_family_in_notebook_03_and_the_paper_tables():
    """notebook 03's table (comparison_table with its default metrics) and paper_comparison (notebook 05,
    papers/) correct over the same family: every cell shown, group metrics included."""
    vals = {**VALUES, "Ballot plain +val": VALUES["Ballot plain"], "Ballot η=0": VALUES["Ballot"],
            "MP": VALUES["LTH"], "MP +val": VALUES["LTH +val"], "Dense": VALUES["LTH"]}
    df = _with_groups(frame(vals))
    paper = C.paper_comparison(df)
    for t in C.tables(C._baselines_in(df)):
        ours = C.comparison_table(df, t)
        theirs = paper[paper["table"] == t.rule].drop(columns="table").reset_index(drop=True)
        assert C.family_size(ours) == C.family_size(theirs) > 0
        np.testing.assert_allclose(ours["padj_mcd"].to_numpy(float), theirs["padj_mcd"].to_numpy(float),
                                   equal_nan=True)
        assert "padj_dp_gap" in theirs and C.markdown(ours) == C.markdown(theirs)


def test_improvement_rows_are_holm_corrected_as_one_family():
    """Four rows with raw p 0.01, 0.02, 0.03, 0.04: Holm gives 0.04, 0.06, 0.06, 0.06, so only the first
    stays significant; the sentence decides on the adjusted value and says so."""
    base = {"paper": 10.0, "paper_lo": 5.0, "paper_hi": 15.0, "robust": 10.0, "robust_lo": 1.0, "robust_hi": 19.0,
            "seeds": 3, "settings": 2, "left out": 0, "paper's number": 33.91}
    a = pd.DataFrame([{**base, "baseline": "MP", "p": 0.01}, {**base, "baseline": "LTH", "p": 0.02}])
    b = pd.DataFrame([{**base, "baseline": "MP", "p": 0.03}, {**base, "baseline": "LTH", "p": 0.04}])
    adj = C.adjust_improvements({"no selection": a, "selection-matched": b})
    np.testing.assert_allclose(list(adj["no selection"]["padj"]) + list(adj["selection-matched"]["padj"]),
                               [0.04, 0.06, 0.06, 0.06])
    assert C.improvement_family_size(adj) == 4
    rows = [{**r.to_dict(), "family": 4} for _, r in adj["no selection"].iterrows()]
    s0, s1 = (C.improvement_sentence(r, "t") for r in rows)
    assert "significantly fairer than MP by this pooled measure (Holm-adjusted p = 0.04 over the 4" in s0
    assert "significantly fairer" not in s1 and "but not after the correction (Holm-adjusted p = 0.06" in s1
    assert s0.startswith("- Class-fairness (CWV, MCD) improvement over MP")


def test_reading_corrects_improvements_and_states_the_family():
    df = frame(VALUES)
    imp = C.improvement_table(df, "Ballot", {"LTH": "LTH"})
    assert "p" in imp and 0 <= imp["p"].iloc[0] <= 1
    text = C.reading({}, {"a": imp, "b": C.improvement_table(df, "Ballot plain", {"LTH": "LTH"})},
                     C.decomposition(df))
    assert "2 rows (a, b) are tested as one family, Holm's correction" in text
    assert "class fairness: CWV and MCD only" in text and "Holm-adjusted p =" in text


def test_compute_statement_counts_training_epochs_and_measures_the_votes():
    df = frame(VALUES)
    df["seconds"] = 2.0
    text = C.compute_statement(df)
    assert "equal training epochs, not equal compute" in text and "vote computation is not counted" in text
    df["vote_seconds"] = np.where(df["variant"] == "Ballot", 0.5 + 0.1 * df["seed"], np.nan)
    text = C.compute_statement(df)
    # per seed 0.5/2, 0.6/2, 0.7/2: mean 0.30×, min 0.25×, max 0.35×
    assert "0.30× one LTH retraining" in text and "min 0.25×, max 0.35×" in text
    assert "SafeCompress's probing of the val split" in text
    assert "- **Compute**" in C.reading({}, {}, C.decomposition(df), frame=df)


def test_the_group_conclusion_rests_on_what_survives_the_correction(monkeypatch):
    """The reading concluded "Ballot loses more often" from per-test counts when nothing survived Holm (review)."""
    wc = pd.DataFrame({"metric": ["dp_gap", "eo_gap"], "baseline": ["FairScratch"] * 2, "settings": [1, 1],
                       "Ballot better": [0, 0], "Ballot worse": [1, 1]})
    none_after = wc.assign(**{"Ballot worse": [0, 0]})
    table = pd.DataFrame({"dataset": ["adult"], "model": ["mlp"], "density": [0.2], "method": ["FairScratch"],
                          **{f"{k}_{m}": [v] for m in ("dp_gap", "eo_gap")
                             for k, v in (("p", 0.01), ("d", 0.05), ("sig", True), ("sigadj", False))}})
    calls = iter([wc, none_after])  # win_counts per test, then after the correction
    monkeypatch.setattr(C, "win_counts", lambda *a, **k: next(calls))
    text = C._group_note(table)
    assert "no such difference survives the correction" in text and "loses more often" not in text


def test_choose_on_val_pairs_by_setting_and_needs_its_reference():
    """A candidate missing a setting was compared with the reference on another dataset (p ~ 1e-7, chosen)."""
    base = {"A": [(0.90, 0.01, 0.30), (0.80, 0.01, 0.20)], "B": [(0.90, 0.01, 0.30), (0.80, 0.01, 0.20)]}
    df = frame(base, split="val")
    df = df[~((df["variant"] == "B") & (df["dataset"] == "digits_lt"))]  # B lacks the setting where MCD is high
    choice, table = C.choose_on_val(df, ["A", "B"], eps=0.01, reference="A")
    b = table.set_index("candidate").loc["B"]
    assert choice == "A" and abs(b["Δ val mcd vs A"]) < 0.01  # same values where both ran: no difference
    assert math.isnan(table.set_index("candidate").loc["A", "p (paired)"])
    with pytest.raises(ValueError, match="reference candidate 'Z' has no val rows"):
        C.choose_on_val(df, ["A", "B"], reference="Z")


def _reading_inputs():
    vals = {**VALUES, "SafeCompress": [(0.90, 0.030, 0.40), (0.84, 0.040, 0.50)],
            "Ballot η=0": [(0.88, 0.011, 0.22), (0.85, 0.021, 0.33)]}
    df = frame(vals)
    df.loc[df["variant"] == "SafeCompress", "compute_epochs"] = 10.0
    t = C.comparison_table(df, C.Table("x", "Ballot", ("LTH", "SafeCompress"), "val_rule"),
                           metrics=["acc", "cwv", "mcd"])
    imp = C.adjust_improvements({"sel": C.improvement_table(df, "Ballot", {"LTH": "LTH", "SafeCompress": "SafeCompress"}),
                                 "plain": C.improvement_table(df, "Ballot plain", {"LTH": "LTH"})})
    gone = pd.DataFrame([{"dataset": "adult", "model": "mlp", "density": 0.1, "variant": "LTH", "seed": 2,
                          "balanced_acc": 0.5}])
    return df, {"matched": t}, imp, C.decomposition(df), gone


def test_reading_parts_are_the_whole_reading_each_under_its_own_section():
    """Notebook 03 showed the whole reading (decomposition and improvement-% included) under section 3 and again
    at the end (review): each section now reads its own table, and the parts are exactly the report's reading."""
    df, tabs, imp, decomp, gone = _reading_inputs()
    whole = C.reading(tabs, imp, decomp, gone, rewind_epoch=0, frame=df)
    section3 = C.table_reading(tabs, gone, rewind_epoch=0, frame=df)
    section4 = C.decomposition_reading(decomp)
    section5 = C.improvement_reading(imp, tabs)
    assert sorted((section3 + "\n" + section4 + "\n" + section5).splitlines()) == sorted(whole.splitlines())
    assert "Decomposition" not in section3 and "Improvement" not in section3 and "improvement" not in section3
    assert "- **matched**" in section3 and "- **Compute**" in section3 and "- **Collapsed runs**" in section3
    assert section4.startswith("- Decomposition, pooled over settings") and len(section4.splitlines()) == 1
    assert section5.startswith("- Improvement-%") and "Decomposition" not in section5
    # the improvement lines still name the baseline whose training epochs differ (from the tables)
    assert "Training epochs are not matched: Ballot trains 2× the epochs of SafeCompress" in section5
    assert C.decomposition_reading(decomp.iloc[:0]) == ""


def test_reading_summary_is_short_and_generated_from_the_numbers():
    df, tabs, imp, decomp, gone = _reading_inputs()
    whole = C.reading(tabs, imp, decomp, gone, rewind_epoch=0, frame=df)
    summary = C.reading_summary(tabs, imp, decomp, gone)
    lines = summary.splitlines()
    assert len(lines) == 4 and len(summary) < len(whole) / 2
    assert lines[0].startswith("- **matched**: at equal training epochs, Ballot is fairer in 4 and "
                               "less fair in 0 of 4 class-fairness comparisons by each one's own 5 % test")
    pooled = decomp[(decomp["dataset"] == "pooled") & (decomp["metric"] == "mcd")].set_index("part")
    total = pooled.loc["total (Ballot − LTH)", "diff"]
    assert f"{100 * total:+.1f} pts MCD" in lines[2] and lines[2].startswith("- **Ballot − LTH**")
    assert lines[1].startswith("- **Improvement-%**") and "3 rows" in lines[1]
    assert lines[3].startswith("- **Collapsed runs**: 1 run (variant and seed) in 1 setting")
    assert C.reading_summary(tabs, imp, decomp, gone.iloc[:0]).endswith("- **Collapsed runs**: none.")
    # nothing significant: the improvement line says so instead of listing "none" twice
    flat = {k: v.assign(padj=1.0) for k, v in imp.items()}
    assert "no row is significant after the correction" in C.reading_summary(tabs, flat, decomp)


def test_decomposition_view_in_points_with_a_zero_based_index():
    """Notebook 03 showed the decomposition in fractions (total -0.0107) beside a figure in points (review)."""
    df, _, _, decomp, _ = _reading_inputs()
    raw = C.decomposition_view(decomp)
    pts = C.decomposition_view(decomp, points=True)
    assert list(pts.index) == list(range(len(pts))) and list(raw.index) == list(range(len(raw)))
    col = "Δ = A − B (unit)"
    for m, scale in (("acc", 100), ("mcd", 100), ("cwv", 1)):
        a, b = raw[raw["metric"] == m], pts[pts["metric"] == m]
        assert np.allclose(b[col].to_numpy(float), scale * a[col].to_numpy(float))
        assert np.allclose(b["95 % CI low (unit)"].to_numpy(float), scale * a["95 % CI low (unit)"].to_numpy(float))
    assert set(pts.loc[pts["metric"] == "mcd", "unit"]) == {"pts of class recall"}
    assert "variance" in pts.loc[pts["metric"] == "cwv", "unit"].iloc[0]
    cap = C.decomposition_caption(decomp, points=True)
    assert "percentage points" in cap and "MCD: pts of class recall" in cap and "unscaled" not in cap


def test_choice_view_shows_points_and_leaves_the_choice_alone():
    """Notebook 03's val choice table was in fractions (val acc 0.8052) while notebook 02's ablation is in points."""
    df = frame({"A": [(0.90, 0.01, 0.30), (0.80, 0.01, 0.30)], "B": [(0.90, 0.01, 0.20), (0.80, 0.01, 0.20)]},
               split="val")
    choice, table = C.choose_on_val(df, ["A", "B"], eps=0.01, reference="A")
    view = C.choice_view(table)
    assert choice == "B" and view.loc[view["chosen"], "candidate"].tolist() == ["B"]
    a, b = table.set_index("candidate").loc["A"], table.set_index("candidate").loc["B"]
    v = view.set_index("candidate")
    assert v.loc["A", "val ACC (pts)"] == f"{100 * a['val acc']:.1f} ± {100 * a['val acc ci']:.1f}"
    assert v.loc["B", "val MCD (pts)"].startswith(f"{100 * b['val mcd']:.1f} ± ")
    d, h = b["Δ val mcd vs A"], b["Δ val mcd ci"]
    assert v.loc["B", "Δ val MCD vs A (pts)"] == f"{100 * d:+.1f} [{100 * (d - h):+.1f}, {100 * (d + h):+.1f}]"
    assert v.loc["A", "Δ val MCD vs A (pts)"] == "" and v.loc["B", "p (Holm)"] == f"{b['p (Holm)']:.3g}"
    assert view.attrs["rule"] == table.attrs["rule"]


def test_a_ci_end_that_rounds_to_zero_keeps_its_side():
    """A reader review could not tell "+0.4 [+0.0, +0.8]" (a per-test win) from a CI that touches 0."""
    assert C.ci_end(0.004, "{:+.1f}") == "+0.004" and C.ci_end(-0.00049, "{:+.1f}") == "-0.00049"
    assert C.ci_end(0.0, "{:+.1f}") == "+0.0" and C.ci_end(0.84, "{:+.1f}") == "+0.8"
    row = {"d_acc": 0.004, "lo_acc": 0.00003, "hi_acc": 0.008, "wins_acc": 3, "n_acc": 3, "sig_acc": True}
    assert C._fmt_cell(row, "acc") == "**+0.4** [+0.003, +0.8] 3/3"

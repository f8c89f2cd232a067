"""The generated "Reading" texts: each sentence follows the numbers (CI excludes 0, seed wins), never a fixed text."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ballot_lib import readings


def versus_rows(entries):
    """entries: (a, b, metric, density, diff, significant, wins, n)."""
    return pd.DataFrame([{"a": a, "b": b, "metric": m, "density": d, "diff": x, "ci_low": x - 0.01,
                          "ci_high": x + 0.01, "significant": s, "wins": w, "n": n}
                         for a, b, m, d, x, s, w, n in entries])


def test_paired_sentences_follow_significance_and_direction():
    t = versus_rows([("Ballot", "LTH", "mcd", 0.2, -0.05, True, 5, 5),
                     ("Ballot", "LTH", "mcd", 0.05, 0.02, False, 2, 5),
                     ("Ballot", "LTH", "acc", 0.2, -0.03, True, 0, 5),
                     ("Ballot", "LTH", "acc", 0.05, 0.01, True, 4, 5)])
    acc, mcd = sorted(readings.paired(t, ("acc", "mcd")))
    assert mcd.startswith("MCD of Ballot vs LTH: significantly lower (better) at density 0.2 (-5.0 pts)")
    assert "not significantly different at 0.05" in mcd and "7/10 (seed, density) pairs" in mcd
    assert "significantly higher (better) at density 0.05 (+1.0 pts)" in acc
    assert "significantly lower (worse) at density 0.2 (-3.0 pts)" in acc


def test_comparison_flags_levelling_down_and_absent_wins():
    t = versus_rows([("Ballot", "MP", "mcd", 0.05, -0.05, True, 5, 5),
                     ("Ballot", "MP", "acc", 0.05, -0.10, True, 0, 5)])
    text = readings.comparison({"MP": t})
    assert "At density 0.05 Ballot's lower disparity vs MP came with significantly lower accuracy" in text
    t2 = versus_rows([("Ballot", "LTH", "mcd", 0.05, 0.01, False, 2, 5)])
    assert "did not differ significantly from LTH in CWV or MCD" in readings.comparison({"LTH": t2})
    won, lost = readings.win_loss({"MP": t, "LTH": t2})
    assert won == ["MCD vs MP @ 0.05"] and lost == ["ACC vs MP @ 0.05"]


def test_votes_reading_finds_the_epoch_the_weights_go_flat():
    rec = {"epochs": [1, 2, 3, 4, 5], "weight_spread": [50.0, 3.0, 1.2, 1.1, 1.05],
           "sign_epochs": [{"w": [70, 100]}, {"w": [80, 100]}, {"w": [95, 100]}, {"w": [99, 100]}, {"w": [98, 100]}]}
    text = readings.votes(rec, {"overlap_eta0": 0.95, "overlap_lth": 0.6})
    assert "nearly flat (spread < 2) from epoch 3 of 5 on" in text and "2 of 5 votes had a weight spread ≥ 2" in text
    assert "75 % of the weights in the first half" in text and "97 % in the second half" in text
    assert "keeps 95.0 % of the weights the η = 0 vote" in text and "60.0 % of its kept weights" in text
    never = readings.votes({**rec, "weight_spread": [5.0] * 5, "sign_epochs": []}, {"overlap_eta0": 0.5})
    assert "never went flat" in never and "shares only 50.0 %" in never
    always = readings.votes({**rec, "weight_spread": [1.0] * 5}, {})
    assert "nearly flat (spread < 2, at most 1.00) at every voting epoch" in always


def test_selection_reading_names_a_collapse_from_the_numbers():
    summary = pd.DataFrame([{"variant": "magnitude mask", "density": 0.05, "acc": 0.87},
                            {"variant": "random mask", "density": 0.05, "acc": 0.22},
                            {"variant": "random mask", "density": 0.2, "acc": 0.80},
                            {"variant": "magnitude mask", "density": 0.2, "acc": 0.90}])
    tab = versus_rows([("random mask", "magnitude mask", "acc", 0.05, -0.65, True, 0, 5)])
    text = readings.selection(summary, tab)
    assert "At density 0.05 the random mask collapses: accuracy 22.0 % against 87.0 %" in text
    assert "density 0.2 the random mask collapses" not in text
    assert "Picking weights at random" not in text  # no canned cause: per-layer counts were never varied


def test_selection_reading_explains_only_what_the_numbers_show():
    """A non-random mask that collapses gets no random-picking story, and 'MCD large' only when it is larger."""
    summary = pd.DataFrame([{"variant": "magnitude mask", "density": 0.05, "acc": 0.80, "mcd": 0.20},
                            {"variant": "Ballot mask", "density": 0.05, "acc": 0.30, "mcd": 0.10},
                            {"variant": "random mask", "density": 0.05, "acc": 0.30, "mcd": 0.60}])
    text = readings.selection(summary, versus_rows([]))
    ballot = text[text.index("the Ballot mask collapses"):text.index("the random mask collapses")]
    assert "at random" not in ballot and "Its MCD is 10.0 pts against 20.0 pts: not larger" in ballot
    rand = text[text.index("the random mask collapses"):]
    assert "at random" not in rand and "Its MCD is 60.0 pts against 20.0 pts: large" in rand


def test_one_seed_gets_no_significance_claim():
    t = versus_rows([("MP", "dense", "mcd", 0.05, 0.04, False, 1, 1),
                     ("MP", "dense", "mcd", 0.2, 0.01, False, 1, 2)])
    (text,) = readings.paired(t, ("mcd",))
    assert "at density 0.05 (+4.0 pts) with fewer than 2 paired seeds: no CI, nothing decided" in text
    assert "not significantly different at 0.2" in text and "not significantly different at 0.05" not in text


def test_per_class_reading_handles_unpaired_rows():
    import numpy as np

    deltas = pd.DataFrame([{"variant": "LTH", "density": 0.1, "class 0": np.nan, "class 1": -0.2, "class 2": 0.01},
                           {"variant": "MP", "density": 0.1, "class 0": np.nan, "class 1": np.nan,
                            "class 2": np.nan}])
    text = readings.per_class(deltas)
    assert "LTH @ 0.1: class 1 -20.0 pts" in text and "MP @ 0.1: n/a (no paired seeds)" in text


def test_quickstart_and_refined_readings():
    table = pd.DataFrame({"acc": [0.9, 0.85, 0.92], "mcd": [0.3, 0.4, 0.25]}, index=["dense", "MP", "LTH"])
    text = readings.quickstart(table)
    assert "MP lost accuracy and became less fair (MCD up): accuracy -5.0 pts, MCD +10.0 pts" in text
    assert "LTH kept or gained accuracy and did not become less fair" in text and "One seed only" in text
    both = pd.DataFrame({"acc": [0.9, 0.85, 0.92], "cwv": [0.01, 0.02, 0.005], "mcd": [0.3, 0.25, 0.25]},
                        index=["dense", "MP", "LTH"])
    text = readings.quickstart(both)  # CWV and MCD both count: MP is mixed, LTH is not less fair on either
    assert "MP lost accuracy and was mixed on fairness (CWV up, the other not): accuracy -5.0 pts, CWV +0.0100" in text
    assert "LTH kept or gained accuracy and did not become less fair (CWV and MCD not up)" in text
    assert "kept the last epoch (30)" in readings.refined({"acc": 0.9, "mcd": 0.2}, {"acc": 0.9, "mcd": 0.2}, 30, 30)
    picked = readings.refined({"acc": 0.9, "mcd": 0.3}, {"acc": 0.88, "mcd": 0.2}, 12, 30)
    assert "epoch 12 of 30" in picked and "-2.0 pts" in picked and "-10.0 pts" in picked


def test_verdict_counts():
    v = pd.DataFrame([{"variant": "LTH", "density": 0.05, "verdict": "hurt"},
                      {"variant": "MP", "density": 0.05, "verdict": "no significant change"}])
    text = readings.verdict_counts(v)
    assert "in 1 of 2 (method, density) settings: LTH @ 0.05" in text and "1× no significant change" in text


@pytest.mark.parametrize("metric, x, out", [("acc", 0.0123, "+1.2 pts"), ("cwv", 0.0123, "+0.0123"),
                                            ("mcd", float("nan"), "n/a")])
def test_fmt_units(metric, x, out):
    assert readings.fmt(metric, x) == out


def test_ballot_report_aligns_densities_by_value():
    """The improvement in the paper's form pairs Ballot and the baseline at the same density values (a baseline
    run at other densities must not be paired by list position)."""
    summary = pd.DataFrame([{"variant": "Ballot", "density": 0.2, "cwv": 0.01, "mcd": 0.2},
                            {"variant": "Ballot", "density": 0.05, "cwv": 0.02, "mcd": 0.4},
                            {"variant": "MP", "density": 0.2, "cwv": 0.02, "mcd": 0.4},
                            {"variant": "MP", "density": 0.1, "cwv": 0.5, "mcd": 0.9}])
    tab = versus_rows([("Ballot", "MP", "mcd", 0.2, -0.2, True, 3, 3)])
    text = readings.ballot_report("t", "s", "default", {"MP": tab}, summary)
    # only density 0.2 is shared: cwv (0.02 − 0.01)/0.02 = 50 %, mcd (0.4 − 0.2)/0.4 = 50 %
    assert "mean over densities and CWV/MCD of (F_B − F_A)/F_B, +50.0 %" in text
    # robust pooled form on the shared density: the same 50 % here, and "no CI" is said
    assert "robust pooled form +50.0 %" in text and "no CI" in text
    summary.loc[len(summary)] = {"variant": "Ballot", "density": 0.1, "cwv": 0.001, "mcd": 0.5}
    # with 0.1 shared too: paper form mean(50, 99.8, 50, 44.4) = 61.05; robust: cwv (0.52 − 0.011)/0.52 and
    # mcd (1.3 − 0.7)/1.3, averaged: 72.0 %
    text = readings.ballot_report("t", "s", "default", {"MP": tab}, summary)
    assert "+61.1 %" in text and "robust pooled form +72.0 %" in text


def test_rounded_shows_cwv_with_four_decimals():
    t = pd.DataFrame({"variant": ["a"], "acc (pts)": [87.0234], "cwv": [0.011505], "cwv_ci": [0.00213],
                      "mcd (pts)": [37.351]})
    r = readings.rounded(t)
    assert r.loc[0, "cwv"] == 0.0115 and r.loc[0, "cwv_ci"] == 0.0021
    assert r.loc[0, "acc (pts)"] == 87.02 and r.loc[0, "mcd (pts)"] == 37.35 and r.loc[0, "variant"] == "a"


# ------------------------------------------------------------------ notebook 01: the training-effect rows

def _run(variant, method, seed, run_id, acc, recalls, train_epochs, density=0.05):
    row = {"variant": variant, "method": method, "seed": seed, "run_id": run_id, "split": "test",
           "density_target": density, "acc": acc, "train_epochs": train_epochs, "compute_epochs": 30 + train_epochs,
           "mcd": max(recalls) - min(recalls)}
    row.update({f"acc_class_{c}": r for c, r in enumerate(recalls)})
    return row


@pytest.fixture
def training_df():
    """Two seeds. `LR rewinding` and `fine-tune (full)` are different runs with different accuracy and a middle
    class that differs, but the same best and worst class recall in each seed: the same MCD. `fine-tune (full)`
    is the MP run of another section (same run ids). `short` retrains 3 of 30 epochs."""
    rows = []
    for s in (0, 1):
        rows.append(_run("dense", "dense", s, f"d{s}", 0.90, [1.0, 0.9, 0.8], 30, density=1.0))
        rows.append(_run("rewind θ0", "lth", s, f"l{s}", 0.85, [1.0, 0.8, 0.6 + 0.1 * s], 30))
        rows.append(_run("short", "mp", s, f"s{s}", 0.70, [0.9, 0.5, 0.3], 3))
        rows.append(_run("LR rewinding", "mp", s, f"r{s}", 0.88 + 0.01 * s, [1.0, 0.85, 0.7], 29))
        rows.append(_run("fine-tune (full)", "mp", s, f"m{s}", 0.89 + 0.01 * s, [1.0, 0.9, 0.7], 30))
    return pd.DataFrame(rows)


def test_training_runs_name_rows_that_are_the_same_runs(training_df):
    section1 = pd.DataFrame([{**r, "variant": "MP"} for r in training_df.to_dict("records")
                             if r["variant"] == "fine-tune (full)"]
                            + [{**r, "variant": "MP", "density_target": 0.2, "run_id": r["run_id"] + "x"}
                               for r in training_df.to_dict("records") if r["variant"] == "fine-tune (full)"])
    runs = readings.training_runs(training_df, {"section 1": section1}).set_index("variant")
    assert runs.loc["fine-tune (full)", "same runs as"] == "`MP @ 0.05` (section 1)"  # not MP @ 0.2
    assert runs.loc["LR rewinding", "same runs as"] == "" and runs.loc["LR rewinding", "run ids"] == "r0, r1"
    assert runs.loc["short", "retrain epochs"] == 3 and runs.loc["short", "compute epochs"] == 33


def test_metric_ties_tell_a_genuine_tie_from_one_run_counted_twice(training_df):
    ties = readings.metric_ties(training_df)
    assert len(ties) == 1
    t = ties.iloc[0]
    assert (t["a"], t["b"], t["metric"], t["seeds"]) == ("LR rewinding", "fine-tune (full)", "mcd", 2)
    assert not t["same_runs"] and t["differs"] == ["acc"] and t["same_extremes"]
    # The bug the check exists for: one set of runs under two labels ties in every metric, with the same ids.
    dup = pd.concat([training_df, training_df[training_df["variant"] == "short"].assign(variant="short again")])
    twice = readings.metric_ties(dup, ["short", "short again"])
    assert set(twice["metric"]) == {"acc", "mcd"} and twice["same_runs"].all()
    text = readings.training(dup, versus_rows([]), "rewind θ0")
    assert "`short` is the same training as `short again @ 0.05` (identical run ids in all 2 seeds)" in text


def test_training_reading_states_ties_identities_and_compute(training_df):
    section1 = training_df[training_df["variant"] == "fine-tune (full)"].assign(variant="MP")
    tab = versus_rows([("LR rewinding", "rewind θ0", "mcd", 0.05, -0.10, True, 2, 2),
                       ("fine-tune (full)", "rewind θ0", "mcd", 0.05, -0.10, True, 2, 2)])
    text = readings.training(training_df, tab, "rewind θ0", {"section 1": section1})
    assert "MCD of LR rewinding vs rewind θ0: significantly lower (better) (-10.0 pts)" in text
    assert "`fine-tune (full)` is the same training as `MP @ 0.05` (section 1)" in text
    assert ("`LR rewinding` and `fine-tune (full)` have the same MCD in all 2 seeds, so their MCD rows are "
            "identical, yet they are different runs (different run ids; their ACC differs)") in text
    assert "best- and worst-recognised classes end with the same recall" in text
    assert "Both are `mp` runs at density 0.05, with 29 and 30 retraining epochs: two nearly identical" in text
    assert "The tie is genuine, not one run counted twice." in text
    # compute: 3 of 30 retraining epochs is a confound; 29 of 30 is not
    assert "Retraining epochs after the dense run: rewind θ0 30, short 3, LR rewinding 29, fine-tune (full) 30." in text
    assert "`short` retrains 3 epochs (33 with the dense run) against 30 (60) for `rewind θ0` — 0.10×" in text
    assert "compute confound" in text and "`LR rewinding` retrains" not in text
    # no tie, no identity: nothing but the paired sentences and the compute
    plain = readings.training_notes(training_df[training_df["variant"] != "LR rewinding"], "rewind θ0")
    assert not any("same" in n for n in plain) and len(plain) == 2


# ------------------------------------------------------------------ notebook 02: collapse, curves, vote cost

def test_ablation_reading_explains_a_collapse_by_the_score():
    from ballot_lib import ablation

    rows = []
    for s, (d, sig, agr, fai) in enumerate([(0.92, 0.10, 0.30, 0.53), (0.92, 0.10, 0.67, 0.55)]):
        for v, a in (("default", d), ("score=signed, conflict=none", sig), ("score=agreement, conflict=none", agr),
                     ("faithful (authors' vote, final layer)", fai), ("eta=2", d)):
            rows.append({"variant": v, "split": "val", "seed": s, "acc": a, "mcd": 0.3, "cwv": 0.01,
                         "density_target": 0.05, **{f"acc_class_{c}": a for c in range(10)}})
    tab = ablation.table(pd.DataFrame(rows), metrics=("acc", "mcd"), report_split="val")
    assert tab.attrs["chance"] == pytest.approx(0.1)
    # skill over chance vs the default (0.92 − 0.1 = 0.82): signed 0/0.82, agreement 0.24 and 0.70, faithful
    # 0.52 and 0.55 -> collapsed in 2, 1 and 0 seeds
    assert dict(zip(tab["variant"], tab["collapsed"])) == {
        "default": 0, "score=signed, conflict=none": 2, "score=agreement, conflict=none": 1,
        "faithful (authors' vote, final layer)": 0, "eta=2": 0}
    options = {"default": {}, "score=signed, conflict=none": {"score": "signed", "conflict": "none"},
               "score=agreement, conflict=none": {"score": "agreement", "conflict": "none"},
               "faithful (authors' vote, final layer)": {"mode": "faithful"}, "eta=2": {"eta": 2.0}}
    base = {"score": "taylor", "mode": "full"}
    text = " ".join(readings.collapses(tab, options, base=base))
    assert "Collapsed on val (accuracy near chance, 10.0 %" in text and "the default has 92.0 %" in text
    assert "`score=signed, conflict=none` (2/2 seeds, mean val accuracy 10.0 %)" in text
    assert "`score=agreement, conflict=none` (1/2 seeds" in text and "`eta=2`" not in text
    assert "the authors' signed score ĝ_acc + η·ĝ_fair and the agreement score |ĝ_acc + η·ĝ_fair| ignore" in text
    assert "magnitude" in text and "the default scores |θ ⊙ (ĝ_acc + η·ĝ_fair)|" in text
    # faithful's worst seed keeps 0.52 of the default's gain: above 0.5, but within 10 % of it
    assert ("(`faithful (authors' vote, final layer)`) reaches 54.0 % mean val accuracy here, at the collapse "
            "threshold (min skill ratio 0.52)") in text
    # Without collapsed rows the reading adds nothing; without the options it names them but gives no reason.
    assert [t for t in readings.collapses(tab[tab["collapsed"] == 0].assign())
            if not t.startswith("At the collapse threshold")] == []
    assert "Why" not in " ".join(readings.collapses(tab))
    full = readings.ablation(tab, ablation.choose(tab, 0.01), {}, 0.01, options=options, base=base)
    assert "Collapsed on val" in full and full.index("Collapsed") < full.index("Kept the library default")


def test_refined_reading_says_when_the_curves_coincide():
    text = readings.refined({"acc": 0.9, "mcd": 0.3}, {"acc": 0.91, "mcd": 0.3}, 24, 30, same_curves=True)
    assert "per-epoch val curves are identical" in text and "only in the checkpoint it keeps" in text
    assert "identical" not in readings.refined({"acc": 0.9, "mcd": 0.3}, {"acc": 0.91, "mcd": 0.3}, 24, 30)


def test_vote_cost_is_one_quantity_per_seed_and_density():
    rows = []
    for s, (v1, v2, l1, l2) in enumerate([(0.2, 0.4, 1.0, 1.0), (0.3, 0.3, 0.5, 1.5)]):
        for d, v, l in ((0.2, v1, l1), (0.05, v2, l2)):
            rows.append({"variant": "Ballot", "split": "test", "seed": s, "density_target": d, "vote_seconds": v,
                         "seconds": 9.0})
            rows.append({"variant": "LTH", "split": "test", "seed": s, "density_target": d, "seconds": l})
    rows.append({"variant": "LTH", "split": "test", "seed": 0, "density_target": 0.5, "seconds": 100.0})
    cost = readings.vote_cost(pd.DataFrame(rows))
    # seed 0: mean vote 0.3 / mean LTH 1.0; seed 1: 0.3 / 1.0 (LTH at a density Ballot did not run is ignored)
    assert list(cost.index) == [0, 1] and cost["ratio"].tolist() == pytest.approx([0.3, 0.3])
    text = readings.vote_cost_text(cost, [0.2, 0.05])
    assert text.startswith("Vote collection cost: 0.30× one LTH retraining (mean over 2 seeds")
    assert "densities 0.2, 0.05" in text and "min 0.30×, max 0.30×" in text
    assert "authors' separate vote run, a full training: ≈ 1× one retraining" in text
    assert "streaming the votes cost less than that here." in text
    assert readings.vote_cost(pd.DataFrame(rows).drop(columns="vote_seconds")).empty
    assert "no vote cost to state" in readings.vote_cost_text(readings.vote_cost(pd.DataFrame(rows).iloc[:0]), [])
    over = readings.vote_cost_text(cost.assign(ratio=[1.2, 1.4]), [0.2])
    assert "1.30×" in over and "saved nothing against it" in over
    assert "budget" not in text
    report = readings.ballot_report("t", "s", "default", {}, pd.DataFrame(columns=["variant", "density"]),
                                    cost=text)
    assert report.endswith(text)
    rec = {"seconds": 2.0, "collector_seconds": 3.5}
    one = readings.vote_cost_walkthrough(rec, retrain_seconds=0.5, dense_seconds=1.5, n_tallies=22, seed=0,
                                         density=0.05)
    assert "vote streaming 2.00 s" in one and "3.50 s for all 22 tallies" in one and "4.00× one retraining" in one
    assert "One seed" in one and "section 5" in one and "slowed" not in one
    slow = readings.vote_cost_walkthrough(rec, 0.5, 18.0, 22, 0, 0.05)  # 18 s > 3 × (0.5 + 3.5)
    assert "This seed's dense run took 18.00 s, 36× an LTH retraining" in slow and "inflated" in slow


# ------------------------------------------------------------------ the figures the readings refer to

def test_figures_keep_coinciding_lines_visible(tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ballot_lib import plots

    # plain and refined: the same curve -> drawn once, labelled as identical
    hist = pd.DataFrame({"epoch": [1, 2, 1, 2], "val_acc": [0.5, 0.8, 0.5, 0.8], "val_mcd": [0.9, 0.4, 0.9, 0.4],
                         "variant": ["plain", "plain", "refined", "refined"]})
    assert plots.coinciding(hist, "variant", "epoch", ["val_acc", "val_mcd"]) == {"refined": "plain"}
    fig = plots.training_curves(hist, marker_epoch=2)
    labels = [t.get_text() for t in fig.get_axes()[0].get_legend().get_texts()]
    assert labels == ["plain = refined (identical curves)", "selected epoch"]
    plt.close(fig)
    differ = hist.assign(val_acc=[0.5, 0.8, 0.5, 0.7])
    assert plots.coinciding(differ, "variant", "epoch", ["val_acc", "val_mcd"]) == {}
    # density plot: each variant its own line style; identical means named in the legend; points set apart
    rows = []
    for s in (0, 1):
        rows.append({"variant": "dense", "method": "dense", "split": "test", "seed": s, "density_target": 1.0,
                     "acc": 0.9})
        for v in ("magnitude mask", "Ballot mask", "random mask"):
            for d in (0.2, 0.05):
                rows.append({"variant": v, "method": "m", "split": "test", "seed": s, "density_target": d,
                             "acc": 0.3 if v == "random mask" else 0.8 + 0.01 * s})
    fig = plots.metric_vs_density(pd.DataFrame(rows), metrics=("acc",))
    ax = fig.get_axes()[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Ballot mask (identical to magnitude mask)" in labels and "random mask" in labels
    data_lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2 and ln.get_label() != "dense"]
    xs = {tuple(np.round(ln.get_xdata(), 4)) for ln in data_lines}
    assert len(xs) == 3  # three variants, three sets of x positions near 0.2 and 0.05
    assert len({ln.get_linestyle() for ln in data_lines}) > 1
    plt.close(fig)


def test_forest_plot_wraps_a_long_title_and_shortens_shared_labels():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ballot_lib import plots

    t = versus_rows([("fine-tune θT (short)", "rewind θ0", "mcd", 0.05, 0.3, True, 0, 5),
                     ("LR rewinding", "rewind θ0", "mcd", 0.05, -0.09, True, 5, 5)])
    title = "MCD vs rewind-θ0 at density 0.05, paired by seed, a title much longer than the figure is wide"
    fig = plots.paired_forest(t, "mcd", title=title)
    ax = fig.get_axes()[0]
    assert "\n" in ax.get_title() and ax.get_title().replace("\n", " ") == title
    assert [x.get_text() for x in ax.get_yticklabels()] == ["fine-tune θT (short)", "LR rewinding"]
    assert "variant − rewind θ0 @ 0.05" in ax.get_xlabel()
    fig.canvas.draw()
    assert ax.title.get_window_extent().x1 <= fig.bbox.x1 + 1  # the title stays inside the figure
    plt.close(fig)


def test_one_seed_decides_nothing_instead_of_no_significant_change():
    """With one paired seed there is no test: the verdicts, their count, the comparison reading and the closing
    summary said "no significant change" / "did not differ significantly" / "nowhere" (a non-default review)."""
    from ballot_lib.analysis import UNDECIDED, fairness_verdicts

    one = pd.DataFrame([{"a": "LTH", "b": "dense", "metric": m, "density": 0.05, "diff": 0.03, "ci_low": np.nan,
                         "ci_high": np.nan, "significant": False, "wins": 1, "n": 1} for m in ("acc", "cwv", "mcd")])
    v = fairness_verdicts(one)
    assert v["verdict"].tolist() == [UNDECIDED]
    text = readings.verdict_counts(v)
    assert "no (method, density) setting could be tested" in text and "significantly hurt" not in text
    t = versus_rows([("Ballot", "LTH", "mcd", 0.05, 0.01, False, 1, 1)])
    assert "could not be tested against each other" in readings.comparison({"LTH": t})
    assert "did not differ significantly" not in readings.comparison({"LTH": t})
    summary = pd.DataFrame([{"variant": n, "density": 0.05, "cwv": 0.01, "mcd": 0.2} for n in ("Ballot", "LTH")])
    report = readings.ballot_report("t", "s", "default", {"LTH": t}, summary)
    assert "none can be decided" in report and "nowhere in this run" not in report
    # With two or more seeds the verdicts are as before.
    two = one.assign(n=3, ci_low=0.01, ci_high=0.05)
    assert fairness_verdicts(two)["verdict"].tolist() == ["no significant change"]


def test_votes_reading_does_not_call_nearly_flat_weights_equal_gradients():
    rec = {"epochs": [1, 2, 3], "weight_spread": [1.6, 1.5, 1.4],
           "sign_epochs": [{"w": [66, 100]}, {"w": [67, 100]}, {"w": [68, 100]}]}
    text = readings.votes(rec, {"overlap_eta0": 0.78, "overlap_lth": 0.6})
    assert "g_fair ≈ g_acc" not in text and "could only follow accuracy" not in text
    assert "mildly re-weighted accuracy gradient" in text and "moved a substantial part" in text


def ablation_rows(seeds: int, d_mcd: float = -0.05, half: float = float("nan"), sig: bool = False) -> pd.DataFrame:
    """A hand-made ablation table (:func:`ballot_lib.ablation.table`'s columns): the default and one option set,
    ``eta=0``, whose val MCD differs by ``d_mcd`` with a CI of half-width ``half`` (NaN: no CI)."""
    nan = float("nan")
    row = {"seeds": seeds, "acc": 0.9, "acc_ci": nan, "mcd": 0.3, "mcd_ci": nan, "collapsed": 0}
    default = {"variant": "default", **row, **{f"d_{m}{x}": 0.0 for m in ("acc", "mcd") for x in ("", "_low", "_high")},
               "d_acc_sig": False, "d_mcd_sig": False, "d_mcd_p": nan}
    option = {"variant": "eta=0", **row, "mcd": 0.3 + d_mcd, "d_acc": 0.0, "d_acc_low": -half, "d_acc_high": half,
              "d_acc_sig": False, "d_mcd": d_mcd, "d_mcd_low": d_mcd - half, "d_mcd_high": d_mcd + half,
              "d_mcd_sig": sig, "d_mcd_p": (0.01 if sig else 0.5) if half == half else nan}
    return pd.DataFrame([default, option])


def test_ablation_reading_with_one_seed_says_there_is_no_ci():
    """One seed: the paired difference has no CI (``d_mcd_low`` is NaN), so the reading may call the choice neither
    significant nor "within seed noise" (a CI that includes 0): it says nothing measures the noise."""
    one = ablation_rows(seeds=1)
    text = readings.ablation(one, one.iloc[1], {}, 0.01)
    assert ("`eta=0` is used although it is not significantly better than the default on val (val MCD -5.0 pts vs "
            "default, one seed: no CI, so nothing says this is more than seed noise)") in text
    assert "Over 1 seed on val" in text  # the count the sentence rests on
    assert "its CI includes 0" not in text and "a significant difference" not in text
    # With a CI (two or more seeds) the same difference reads by its CI, never as "one seed".
    two = ablation_rows(seeds=2, half=0.08)
    text2 = readings.ablation(two, two.iloc[1], {}, 0.01)
    assert "within seed noise: its CI includes 0" in text2 and "one seed" not in text2
    sig = ablation_rows(seeds=3, half=0.01, sig=True)
    text3 = readings.ablation(sig, sig.iloc[1], {}, 0.01)
    assert "Chose `eta=0`: val MCD lower by 5.0 pts [95 % CI -6.0 pts, -4.0 pts; Holm-adjusted p = 0.01]" in text3
    assert "one seed" not in text3


def test_decomposition_view_names_each_difference_s_unit():
    """Notebook 03's decomposition table: the values as stored (fractions for accuracy and MCD, a variance of
    recalls for CWV), with the unit per row, columns named by what they hold and a caption from the table."""
    from ballot_lib import comparison as C

    rows = [{"dataset": "digits", "model": "mlp", "density": 0.05, "metric": "mcd", "part": "vote (Ballot plain − LTH)",
             "diff": -0.02, "ci_low": -0.05, "ci_high": 0.01, "n": 3, "wins": 2, "significant": False, "p": 0.2,
             "settings": None, "left out": None}]
    for m, x in (("acc", -0.004), ("cwv", -0.0021), ("mcd", -0.0107)):
        rows.append({"dataset": "pooled", "model": "", "density": float("nan"), "metric": m,
                     "part": "total (Ballot − LTH)", "diff": x, "ci_low": x - 0.01, "ci_high": x + 0.01, "n": 3,
                     "wins": 2, "significant": False, "p": 0.5, "settings": 2, "left out": 1})
    decomp = pd.DataFrame(rows, columns=C.DECOMPOSITION_COLUMNS)
    view = C.decomposition_view(decomp)
    assert len(view) == 3 and "dataset" not in view
    units = dict(zip(view["metric"], view["unit"]))
    assert units["acc"] == "fraction (0.01 = 1 pt of accuracy)"
    assert units["mcd"] == "fraction (0.01 = 1 pt of class recall)"
    assert "pts" not in units["cwv"].replace("not pts", "") and "variance" in units["cwv"]
    # the numbers are not scaled: -0.0107 stays -0.0107 (1.07 pts of MCD)
    assert view.loc[view["metric"] == "mcd", "Δ = A − B (unit)"].item() == pytest.approx(-0.0107)
    assert {"95 % CI low (unit)", "95 % CI high (unit)", "seeds", "seeds A better"} <= set(view.columns)
    cap = C.decomposition_caption(decomp)
    assert "averaged over 2 settings per seed (1 left out: collapsed runs)" in cap and "over 3 seeds" in cap
    assert "ACC: fraction (0.01 = 1 pt of accuracy)" in cap and "CWV: variance of class recall" in cap
    assert "MCD: fraction (0.01 = 1 pt of class recall)" in cap
    empty = pd.DataFrame(columns=C.DECOMPOSITION_COLUMNS)
    empty.attrs.update(settings=0, left_out=2)
    assert C.decomposition_caption(empty).startswith("No pooled decomposition: every one of the 2 settings")


def test_excess_view_shows_points_with_their_unit_and_counts_apart():
    """Notebook 04's excess table: δ_c − δ and δ are fractions ×100 (percentage points), collapsed seeds a count."""
    from ballot_lib import population

    summary = pd.DataFrame([{"method": "l1_unstructured", "density_target": 0.1, "seeds": 5, "class 0": 0.012,
                             "class 1": -0.034, "most_hurt_class": 1, "most_hurt_tied_with": "",
                             "most_hurt_excess": -0.034, "delta": -0.02, "collapsed_seeds": 2, "collapsed": True}])
    view = population.excess_view(summary)
    assert list(view.columns) == ["class 0: δ_c − δ (pts)", "class 1: δ_c − δ (pts)", "most hurt: δ_c − δ (pts)",
                                  "δ: accuracy change (pts)", "collapsed seeds"]
    r = view.loc[("l1_unstructured", 0.1)]
    assert r["class 1: δ_c − δ (pts)"] == pytest.approx(-3.4) and r["δ: accuracy change (pts)"] == pytest.approx(-2.0)
    assert r["collapsed seeds"] == 2  # a count: not scaled
    cap = population.excess_caption(summary)
    assert cap.startswith("Mean over 5 seeds (test split)") and "percentage points" in cap


def test_votes_reading_counts_only_epochs_whose_spread_reaches_the_flat_threshold():
    """The strongly weighted votes are the epochs with spread ≥ the flat threshold, not every epoch before the
    weights stay flat: notebook 02's 101, 101, 101, 101, 12.4, 3.42, 6.61, 1.39, 1.74, 2.3, then flat, has 8."""
    spread = [101, 101, 101, 101, 12.4, 3.42, 6.61, 1.39, 1.74, 2.3] + [1.5] * 20
    rec = {"epochs": list(range(1, 31)), "weight_spread": spread, "sign_epochs": []}
    text = readings.votes(rec, {"overlap_eta0": 0.958})
    assert "from epoch 11 of 30 on" in text
    assert "8 of 30 votes had a weight spread ≥ 2" in text and "10 of 30" not in text
    assert "2 of the epochs before epoch 11 already had a spread < 2" in text
    # section 5 of notebook 02 runs no η = 0 control: the reading points to notebook 03, which does
    assert "its η = 0 control there" not in text and "notebook 03" in text


def test_collapse_reading_calls_a_row_just_above_the_threshold_at_the_threshold():
    from ballot_lib import ablation

    rows = []
    # 10 classes, chance 0.1; dense 0.966 in every seed: the threshold is 0.1 + 0.5·0.866 = 0.533. "faithful"
    # reaches 0.544 in seed 0 (skill 0.513, within 10 % of 0.5) and more elsewhere; "eta=2" 0.60 (skill 0.58).
    for s, fai in enumerate([0.544, 0.80, 0.85]):
        for v, a in (("default", 0.92), ("faithful (authors' vote, final layer)", fai), ("eta=2", 0.60),
                     ("score=signed, conflict=none", 0.10)):
            rows.append({"variant": v, "split": "val", "seed": s, "acc": a, "mcd": 0.3, "cwv": 0.01,
                         "dataset": "d", "model": "m", "density_target": 0.05,
                         **{f"acc_class_{c}": a for c in range(10)}})
    df = pd.DataFrame(rows)
    dense = df[df["variant"] == "default"].assign(variant="dense", density_target=1.0,
                                                  **{f"acc_class_{c}": 0.966 for c in range(10)}, acc=0.966)
    tab = ablation.table(df, metrics=("acc", "mcd"), report_split="val", dense=dense)
    r = tab.set_index("variant")
    assert r.loc["faithful (authors' vote, final layer)", "collapsed"] == 0
    assert r.loc["faithful (authors' vote, final layer)", "min_skill"] == pytest.approx(0.444 / 0.866)
    options = {"score=signed, conflict=none": {"score": "signed"},
               "faithful (authors' vote, final layer)": {"mode": "faithful"}}
    text = " ".join(readings.collapses(tab, options, base={"score": "taylor", "mode": "full"}))
    assert "at the collapse threshold (min skill ratio 0.51)" in text and "does not collapse" not in text
    assert "`faithful (authors' vote, final layer)` (min skill ratio 0.51)" in text
    assert "`eta=2`" not in text  # skill 0.58: more than 10 % above the threshold
    far = readings.collapses(tab.assign(min_skill=tab["min_skill"].where(tab["variant"] != "faithful (authors' vote, final layer)", 0.9)),
                             options, base={"score": "taylor", "mode": "full"})
    assert "and does not collapse (min skill ratio 0.90)" in " ".join(far)


def test_selection_reading_states_only_the_measured_accuracies_for_a_random_mask():
    """The random mask's collapse is stated by the two accuracies (same per-layer counts, same training), with no
    claim about why or about per-layer counts, which this comparison never varies."""
    summary = pd.DataFrame([{"variant": "magnitude mask", "density": 0.05, "acc": 0.872},
                            {"variant": "random mask", "density": 0.05, "acc": 0.218}])
    text = readings.selection(summary, versus_rows([]))
    assert ("At density 0.05 the random mask collapses: accuracy 21.8 % against 87.2 % for the magnitude mask, "
            "with the same per-layer densities and the same training.") in text
    assert "matters far more" not in text and "paths the dense network learned" not in text


def test_fmt_writes_gaps_in_points_and_rates_in_percent():
    """Notebook 04's summary printed MCD as '29.0 %' where every other reading says points: a gap between two
    recalls is a number of points; an accuracy (a rate) stays a percentage; a change is always in points."""
    assert readings.fmt("mcd", 0.29, False) == "29.0 pts"
    assert readings.fmt("group_acc_gap", 0.05, False) == "5.0 pts"
    assert readings.fmt("acc", 0.909, False) == "90.9 %"
    assert readings.fmt("mcd", -0.024) == "-2.4 pts"
    assert readings.fmt("cwv", 0.0096, False) == "0.0096"


def test_notebook_02_comparison_decides_with_holm_over_both_tables():
    """Notebook 02's Ballot − MP and Ballot − LTH tables were the one uncorrected family of the suite: a win at
    p = 0.02 among 18 tests was reported. Corrected as one family (analysis.adjust_tables), it is not a win."""
    from ballot_lib.analysis import adjust_tables

    def tab(b, p_mcd):
        rows = []
        for d in (0.2, 0.05, 0.02):
            for m in ("acc", "cwv", "mcd"):
                p = p_mcd if (m == "mcd" and d == 0.05) else 0.6
                rows.append({"a": "Ballot", "b": b, "density": d, "metric": m, "diff": -0.05 if m != "acc" else 0.0,
                             "ci_low": -0.09 if p < 0.05 else -0.1, "ci_high": -0.01 if p < 0.05 else 0.05,
                             "wins": 4, "n": 5, "p": p, "significant": p < 0.05})
        return pd.DataFrame(rows)

    raw = {"MP": tab("MP", 0.02), "LTH": tab("LTH", 0.6)}
    assert readings.win_loss(raw)[0] == ["MCD vs MP @ 0.05"]  # per test: a win
    adj = adjust_tables(raw)
    assert adj["MP"].attrs["family"] == 18 and not adj["MP"]["significant_adj"].any()
    assert readings.win_loss(adj) == ([], [])
    text = readings.comparison(adj)
    assert text.count("Significance here is after Holm correction over the 18 paired tests of the 2 tables") == 1
    assert "significantly lower (better)" not in text

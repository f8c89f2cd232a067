"""The generated "Reading" texts: each sentence follows the numbers (CI excludes 0, seed wins), never a fixed text."""
from __future__ import annotations

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
    assert "nearly flat (spread < 2) from epoch 3 of 5 on" in text and "only 2 of 5 votes" in text
    assert "75 % of the weights in the first half" in text and "97 % in the second half" in text
    assert "keeps 95.0 % of the weights the η = 0 vote" in text and "60.0 % of its kept weights" in text
    never = readings.votes({**rec, "weight_spread": [5.0] * 5, "sign_epochs": []}, {"overlap_eta0": 0.5})
    assert "never went flat" in never and "shares only 50.0 %" in never
    always = readings.votes({**rec, "weight_spread": [1.0] * 5}, {})
    assert "nearly flat (spread < 2) at every voting epoch" in always


def test_selection_reading_names_a_collapse_from_the_numbers():
    summary = pd.DataFrame([{"variant": "magnitude mask", "density": 0.05, "acc": 0.87},
                            {"variant": "random mask", "density": 0.05, "acc": 0.22},
                            {"variant": "random mask", "density": 0.2, "acc": 0.80},
                            {"variant": "magnitude mask", "density": 0.2, "acc": 0.90}])
    tab = versus_rows([("random mask", "magnitude mask", "acc", 0.05, -0.65, True, 0, 5)])
    text = readings.selection(summary, tab)
    assert "At density 0.05 the random mask collapses: accuracy 0.220 against 0.870" in text
    assert "density 0.2 the random mask collapses" not in text
    assert "Picking weights at random" in text


def test_selection_reading_explains_only_what_the_numbers_show():
    """A non-random mask that collapses gets no random-picking story, and 'MCD large' only when it is larger."""
    summary = pd.DataFrame([{"variant": "magnitude mask", "density": 0.05, "acc": 0.80, "mcd": 0.20},
                            {"variant": "Ballot mask", "density": 0.05, "acc": 0.30, "mcd": 0.10},
                            {"variant": "random mask", "density": 0.05, "acc": 0.30, "mcd": 0.60}])
    text = readings.selection(summary, versus_rows([]))
    ballot = text[text.index("the Ballot mask collapses"):text.index("the random mask collapses")]
    assert "at random" not in ballot and "Its MCD is 0.100 against 0.200: not larger" in ballot
    rand = text[text.index("the random mask collapses"):]
    assert "at random" in rand and "Its MCD is 0.600 against 0.200: large" in rand


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
    assert "mean over densities and CWV/MCD: +50.0 %" in text

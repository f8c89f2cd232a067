"""Prune Responsibly: the five techniques as methods, the population analyses on hand-made tables, the cards."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ballot_lib import cards, plots, population
from ballot_lib.methods import METHODS, make_config, run_method
from ballot_lib.methods.prune_responsibly import STRUCTURED, TECHNIQUES
from ballot_lib.results import load_results

from conftest import make_experiment

DENSITY = 0.25


# -- the techniques -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def population_store(tmp_path_factory):
    """Dense + the five techniques at one density under two seeds, retraining one epoch."""
    exp = make_experiment(tmp_path_factory.mktemp("pr") / "results")
    out = {(t, s): run_method(exp, t, s, density=DENSITY, retrain_epochs=1) for t in TECHNIQUES for s in (0, 1)}
    return exp, out


def test_retraining_compresses_a_multistep_schedule(tmp_path, monkeypatch):
    """retrain_epochs shorter than the recipe: the milestones scale into them (the retraining still anneals),
    rather than being cut off (which left every pruned model at the peak learning rate)."""
    from ballot_lib.methods import prune_responsibly as PR

    exp = make_experiment(tmp_path / "results", epochs=10, schedule="multistep", milestones=(4, 6, 8))
    seen = {}
    real = PR.train_masked

    def spy(*args, cfg=None, **kwargs):
        seen["recipe"] = cfg
        return real(*args, cfg=cfg, **kwargs)

    monkeypatch.setattr(PR, "train_masked", spy)
    run_method(exp, "l1_unstructured", 0, density=0.5, retrain_epochs=5)
    assert seen["recipe"].epochs == 5 and seen["recipe"].milestones == (2, 3, 4)


def test_every_technique_is_registered_under_its_torch_name():
    assert set(TECHNIQUES) == {"l1_unstructured", "global_unstructured", "random_unstructured", "ln_structured",
                               "random_structured"}
    assert set(TECHNIQUES) <= set(METHODS.names())
    with pytest.raises(ValueError, match="retrain_epochs"):
        make_config("ln_structured", density=0.5, retrain_epochs=0)
    with pytest.raises(ValueError, match="norm order"):
        make_config("ln_structured", density=0.5, n=0)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        make_config("l1_unstructured", density=1.5)


def test_masks_have_the_techniques_shape_and_the_stored_density(population_store):
    exp, out = population_store
    T = exp.train.epochs
    theta_T = exp.dense_weights(0, T)
    for (t, seed), res in out.items():
        mask = res.mask
        kept = {n: int(m.sum()) for n, m in mask.items()}
        sizes = {n: m.numel() for n, m in mask.items()}
        assert res.summary["density"] == pytest.approx(sum(kept.values()) / sum(sizes.values()))
        assert res.summary["compute_epochs"] == T + 1 and res.summary["train_epochs"] == 1
        if t in ("l1_unstructured", "random_unstructured"):
            # Per layer, exactly round(d * n_l) kept.
            assert all(kept[n] == round(DENSITY * sizes[n]) for n in mask)
        if t == "global_unstructured":
            assert sum(kept.values()) == round(DENSITY * sum(sizes.values()))
        if t in STRUCTURED:
            names = list(mask)
            for n in names[:-1]:  # whole output rows kept or removed
                rows = mask[n].reshape(mask[n].shape[0], -1)
                assert bool(((rows.all(1)) | (~rows.any(1))).all())
                assert int(rows.all(1).sum()) == max(1, round(DENSITY * rows.shape[0]))
            assert bool(mask[names[-1]].all())  # the classifier stays dense
            assert res.summary["density"] != pytest.approx(DENSITY)  # the achieved density is stored, not the target
    # l1 keeps the largest |w| of θT in each layer.
    m = out[("l1_unstructured", 0)].mask
    for n, w in theta_T.items():
        if n in m:
            kept_min = w.abs()[m[n]].min()
            dropped_max = w.abs()[~m[n]].max()
            assert kept_min >= dropped_max
    # L1 structured keeps the rows of largest L1 norm; random structured under two seeds differs.
    first = next(iter(m))
    ln = out[("ln_structured", 0)].mask[first]
    norms = theta_T[first].abs().sum(1)
    assert norms[ln.all(1)].min() >= norms[~ln.any(1)].max()
    assert not torch.equal(out[("random_structured", 0)].mask[first], out[("random_structured", 1)].mask[first])


def test_finished_runs_are_loaded_not_retrained(population_store, monkeypatch):
    exp, out = population_store
    import ballot_lib.experiment as experiment_module

    monkeypatch.setattr(experiment_module, "train", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = run_method(exp, "ln_structured", 0, density=DENSITY, retrain_epochs=1)
    assert again.id == out[("ln_structured", 0)].id
    df = load_results(exp.store.root)
    assert set(TECHNIQUES) <= set(df["method"]) and df.loc[df["method"] != "dense", "run_id"].nunique() == 10


def test_grid_reads_finished_runs_without_loading_their_masks(population_store, monkeypatch):
    """The grid's skip of finished runs reads only their (checked) rows: no training, no torch.load of masks."""
    import ballot_lib.experiment as experiment_module
    from ballot_lib.methods import Variant, run_grid

    exp, out = population_store
    monkeypatch.setattr(experiment_module, "train", lambda *a, **k: pytest.fail("a finished run was retrained"))
    monkeypatch.setattr(experiment_module, "load_mask", lambda *a, **k: pytest.fail("a mask was loaded"))
    df = run_grid(exp, [Variant(t, t, {"retrain_epochs": 1}) for t in TECHNIQUES], [DENSITY], [0, 1],
                  progress=False)
    assert len(df) == 20 and set(df["run_id"]) == {r.id for r in out.values()}


# -- analyses on hand-made tables -----------------------------------------------------------------------------

def _row(method, seed, dens, split, acc, classes, run_id=None, density=None):
    classes = list(classes)
    r = {"run_id": run_id or f"{method}-{dens}-{seed}", "method": method, "variant": method, "seed": seed,
         "density_target": dens, "density": dens if density is None else density, "split": split, "acc": acc,
         "dataset": "toy", "model": "toy", "train.epochs": 2,
         "cwv": float(np.mean((np.array(classes) - acc) ** 2)), "mcd": max(classes) - min(classes)}
    r.update({f"acc_class_{i}": a for i, a in enumerate(classes)})
    r["sparsity"] = 1 - r["density"]
    return r


@pytest.fixture
def toy_df():
    """Two classes, three seeds. 'a' loses 30 points on class 1 only; 'b' changes nothing; dense is the reference."""
    rows = []
    for split in ("val", "test"):
        for s in range(3):
            jitter = 0.01 * s
            rows.append(_row("dense", s, 1.0, split, 0.8 + jitter, [0.9 + jitter, 0.7 + jitter]))
            rows.append(_row("a", s, 0.1, split, 0.65 + jitter, [0.9 + jitter, 0.4 + jitter]))
            rows.append(_row("b", s, 0.5, split, 0.8 + jitter, [0.9 + jitter, 0.7 + jitter]))
    return pd.DataFrame(rows)


def test_excess_change_by_hand(toy_df):
    ex = population.excess_change(toy_df)
    a = ex[ex["method"] == "a"].set_index(["seed", "class"])
    # δ = −0.15; class 0: δ_0 = 0 -> excess +0.15; class 1: δ_1 = −0.30 -> excess −0.15.
    assert a.loc[(0, 0), "excess"] == pytest.approx(0.15)
    assert a.loc[(2, 1), "excess"] == pytest.approx(-0.15)
    assert ex[ex["method"] == "b"]["excess"].abs().max() == pytest.approx(0.0)
    summ = population.excess_summary(ex).set_index("method")
    assert summ.loc["a", "most_hurt_class"] == 1 and summ.loc["a", "most_hurt_excess"] == pytest.approx(-0.15)
    assert summ.loc["a", "delta"] == pytest.approx(-0.15) and summ.loc["b", "delta"] == pytest.approx(0.0)
    # 'b': both classes unchanged, a tie: the lowest class, the other named (not picked by float noise).
    assert summ.loc["a", "most_hurt_tied_with"] == "" and summ.loc["b", "most_hurt_tied_with"] == "1"
    assert summ.loc["b", "most_hurt_class"] == 0


def test_most_hurt_class_ties_are_not_decided_by_float_noise():
    # The suite's case: six classes with the same change, one of them lower by 2e-18 of rounding.
    v = -0.004456824512534841
    ex = pd.DataFrame({"method": "t", "density_target": 0.5, "seed": 0, "run_id": "r", "delta": 0.0,
                       "class": [0, 1, 2, 3], "excess": [v, v, 0.01, v - 2e-18]})
    row = population.excess_summary(ex).iloc[0]
    assert row["most_hurt_class"] == 0 and row["most_hurt_tied_with"] == "1, 3"


def test_adjusted_pvalues_by_hand():
    p = [0.01, 0.04, 0.03, 0.20, float("nan")]
    # BH: sorted .01 .03 .04 .20 -> .04, .06->.0533, .0533, .20 (monotone from the top).
    np.testing.assert_allclose(population.adjust_pvalues(p, "bh")[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.20])
    # Holm: .01*4, .03*3, max(.04*2, .09), .20*1 -> max(.2, .09) = .2
    np.testing.assert_allclose(population.adjust_pvalues(p, "holm")[:4], [0.04, 0.09, 0.09, 0.20])
    assert math.isnan(population.adjust_pvalues(p, "bh")[4])
    with pytest.raises(ValueError, match="unknown correction"):
        population.adjust_pvalues(p, "bonferroni-ish")


def test_hurt_classes_flags_the_class_that_lost(toy_df):
    # Make the dense and 'a' samples noisy enough for a t-test, but 'a'’s class 1 clearly lower.
    tests = population.hurt_classes(toy_df, correction="holm")
    a1 = tests[(tests["method"] == "a") & (tests["class"] == 1)].iloc[0]
    assert a1["change"] < 0 and a1["p"] < 0.05 and bool(a1["hurt"])
    assert not tests[tests["method"] == "b"]["hurt"].any()  # no change: not hurt
    counts = population.hurt_counts(tests).set_index("method")
    assert counts.loc["a", "hurt"] >= 1 and counts.loc["b", "hurt"] == 0 and counts.loc["a", "classes"] == 2
    # The tables say the level they were made with.
    md = population.tables(toy_df, alpha=0.1)
    assert "holm" not in md and "bh correction, α = 0.1)" in md and "p < 0.1 unadjusted" in md
    assert "α = 0.05" not in md and "p < 0.05" not in md


def test_front_selection_and_reevaluation(toy_df):
    table = population.pareto_table(toy_df, "mcd")
    on = dict(zip(table["method"], table["on_front"]))
    # b is as accurate and fair as dense and sparser: dense is dominated; a is sparser still: on the front.
    assert on == {"a": True, "b": True, "dense": False}
    row, text = population.select(table, "epsilon", max_acc_drop=0.05)
    assert row["method"] == "b" and "accuracy ≥" in text
    row, _ = population.select(table, "epsilon", objective="sparsity")
    assert row["method"] == "a"
    row, _ = population.select(table, "lexicographic", order=["disparity", "acc", "sparsity"])
    assert row["method"] == "b"
    row, _ = population.select(table, "chebyshev", weights={"acc": 0, "sparsity": 1, "disparity": 0})
    assert row["method"] == "a"
    with pytest.raises(ValueError, match="unknown selection rule"):
        population.select(table, "vibes")
    with pytest.raises(ValueError, match="unknown disparity"):
        population.pareto_table(toy_df, "fairness")
    re = population.technique_reevaluation(toy_df, "mcd").set_index("method")
    assert re["front_share"].sum() == pytest.approx(1.0)
    # Hypervolume of b alone (seed 0): acc 0.8 x sparsity 0.5 x (1 − MCD 0.2).
    assert re.loc["b", "hypervolume"] == pytest.approx(np.mean([0.8 + 0.01 * s for s in range(3)]) * 0.5 * 0.8)
    md = population.front_markdown(table)
    assert md.startswith("| technique |") and "dense" not in md
    # Two techniques compared paired by seed: the per-seed differences of their hypervolumes, worked by hand.
    ps = population.per_seed_hypervolume(toy_df, "mcd")
    hv = {t: dict(zip(g["seed"], g["hv"])) for t, g in ps.groupby("method")}
    diffs = [hv["b"][s] - hv["a"][s] for s in sorted(hv["b"])]
    pd_ = population.paired_hypervolume(toy_df, "b", "a", disparity="mcd")
    assert pd_["diff"] == pytest.approx(np.mean(diffs)) and pd_["n"] == len(diffs)
    assert pd_["wins"] == sum(d > 0 for d in diffs)  # a larger hypervolume is better
    assert re.loc["b", "hypervolume"] == pytest.approx(np.mean(list(hv["b"].values())))
    # The per-seed fronts passed in (computed once) give the same answers as computing them again.
    assert population.paired_hypervolume(toy_df, "b", "a", disparity="mcd", per_seed=ps) == pd_
    pd.testing.assert_frame_equal(population.technique_reevaluation(toy_df, "mcd", per_seed=ps).set_index("method"), re)


def test_worst_class_disparity_is_maximised(toy_df):
    table = population.pareto_table(toy_df, "worst_class")
    assert "val_worst_class_acc" in table and table.attrs["disparity"] == "worst_class"
    row, _ = population.select(table, "lexicographic", order=["disparity"])
    assert row["val_worst_class_acc"] == table.loc[table["on_front"], "val_worst_class_acc"].max()


# -- collapsed configurations, who pays, the excess heat map ---------------------------------------------------

@pytest.fixture
def collapse_df():
    """Three classes (chance 1/3), two seeds; dense at 0.9 in every class.

    'ok' (d 0.5) keeps its skill; 'half' (d 0.1) collapses under seed 0 only (acc 0.4: skill 0.12); 'dead' (d 0.05)
    predicts class 0 for everything under both seeds (acc 1/3: skill 0)."""
    rows = []
    for split in ("val", "test"):
        for s in (0, 1):
            rows.append(_row("dense", s, 1.0, split, 0.9, [0.9, 0.9, 0.9]))
            rows.append(_row("ok", s, 0.5, split, 0.8, [0.9, 0.8, 0.7]))
            rows.append(_row("half", s, 0.1, split, *((0.4, [1.0, 0.1, 0.1]) if s == 0 else (0.7, [0.9, 0.7, 0.5]))))
            rows.append(_row("dead", s, 0.05, split, 1 / 3, [1.0, 0.0, 0.0]))
    return pd.DataFrame(rows)


def test_collapsed_configurations_count_collapsed_seeds_with_notebook_03s_rule(collapse_df):
    from ballot_lib import comparison

    col = population.collapsed_configurations(collapse_df).set_index("method")
    assert col["collapsed_seeds"].to_dict() == {"dead": 2, "half": 1, "ok": 0}
    assert col["collapsed"].to_dict() == {"dead": True, "half": True, "ok": False}
    assert (col["seeds"] == 2).all() and col.attrs["threshold"] == comparison.COLLAPSE
    # The threshold is the rule's: at 0.1 'half' (skill 0.12 under seed 0) is no longer collapsed, 'dead' is.
    low = population.collapsed_configurations(collapse_df, threshold=0.1).set_index("method")
    assert low["collapsed_seeds"].to_dict() == {"dead": 2, "half": 0, "ok": 0}
    # Flags merge onto any per-configuration table; configurations missing from the flags are not collapsed.
    summ = population.excess_summary(population.excess_change(collapse_df))
    flagged = population.flag_collapsed(summ, col.reset_index().iloc[1:])  # drop 'dead' from the flags
    assert flagged.set_index("method")["collapsed"].to_dict() == {"dead": False, "half": True, "ok": False}


def test_who_pays_leaves_collapsed_configurations_out(collapse_df):
    col = population.collapsed_configurations(collapse_df)
    summ = population.flag_collapsed(population.excess_summary(population.excess_change(collapse_df)), col)
    s = summ.set_index("method")
    # By hand: ok: δ = −0.1, δ_c = (0, −0.1, −0.2) -> excess (+0.1, 0, −0.1); dead: δ = −0.567, excess
    # (+0.667, −0.333, −0.333); half: mean of (+0.6, −0.3, −0.3) and (+0.2, 0, −0.2) = (+0.4, −0.15, −0.25).
    assert s.loc["ok", "most_hurt_class"] == 2 and s.loc["ok", "most_hurt_excess"] == pytest.approx(-0.1)
    assert s.loc["dead", "most_hurt_excess"] == pytest.approx(-1 / 3)
    assert s.loc["half", "most_hurt_class"] == 2 and s.loc["half", "most_hurt_excess"] == pytest.approx(-0.25)
    best, left = population.who_pays(summ)
    assert best["method"] == "ok" and list(left["method"]) == ["dead", "half"]
    best_all, left_all = population.who_pays(population.excess_summary(population.excess_change(collapse_df)))
    assert best_all["method"] == "dead" and left_all.empty  # unflagged: the collapse would lead
    counts = pd.DataFrame({"method": ["dead", "half", "ok"], "density_target": [0.05, 0.1, 0.5],
                           "hurt": [2, 0, 1], "hurt_unadjusted": [2, 1, 1], "classes": [3, 3, 3]})
    text = population.who_pays_reading(summ, population.flag_collapsed(counts, col), correction="holm")
    assert "Among the 1 of 3 operating points" in text
    assert "class 2 under ok at density 0.5 (-10.0 points beyond the overall change of -10.0)" in text
    assert "Left out as collapsed" in text and "50 %" in text
    assert "dead at 0.05 (2 of 2 seeds); half at 0.1 (1 of 2 seeds)" in text
    assert "Their largest excess loss is -33.3 points (class 1, dead at 0.05)" in text
    assert ("3 of 9 (technique, density, class) tests find a class significantly hurt after holm correction"
            in text and "2 of them in the collapsed configurations; of the other 1, the most under ok (1)" in text)
    # Nothing collapsed: no "left out" sentence; everything collapsed: no class is named.
    none = summ.assign(collapsed=False, collapsed_seeds=0)
    text = population.who_pays_reading(none)
    assert "Over all 3 operating points" in text and "class 1 under dead" in text and "Left out" not in text
    # ok and half: class 2; dead: classes 1 and 2 tie (−0.333 each), so it names no single class
    assert "most often class 2 (2 of 2; 1 point(s) with a tie for most hurt are not counted)" in text
    text = population.who_pays_reading(none[none["method"] != "half"])
    assert "most often class 2 (1 of 1; 1 point(s) with a tie" in text
    text = population.who_pays_reading(summ.assign(collapsed=True, collapsed_seeds=1))
    assert "no class can be named" in text and "Left out as collapsed" in text


def test_robust_limit_and_excess_matrix(collapse_df):
    assert population.robust_limit([-1, 2, -3, 4, 100, np.nan], q=50) == pytest.approx(3.0)
    assert population.robust_limit([0.1, -0.2], q=100) == 1.0  # the floor
    assert population.robust_limit([], q=80) == 1.0
    col = population.collapsed_configurations(collapse_df)
    summ = population.flag_collapsed(population.excess_summary(population.excess_change(collapse_df)), col)
    mat = population.excess_matrix(summ, class_names=["a", "b", "c"])
    # Technique order, then density from mild to severe; points; collapsed rows labelled with their count.
    assert list(mat.index) == ["dead @ 0.05 · collapsed 2/2", "half @ 0.1 · collapsed 1/2", "ok @ 0.5"]
    assert list(mat.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(mat.loc["ok @ 0.5"].to_numpy(), [10.0, 0.0, -10.0], atol=1e-9)
    plain = population.excess_matrix(population.excess_summary(population.excess_change(collapse_df)))
    assert list(plain.columns) == ["0", "1", "2"] and "ok @ 0.5" in plain.index


def test_excess_heatmap_clips_the_scale_and_outlines_clipped_cells(collapse_df, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    col = population.collapsed_configurations(collapse_df)
    summ = population.flag_collapsed(population.excess_summary(population.excess_change(collapse_df)), col)
    mat = population.excess_matrix(summ)
    fig = plots.excess_heatmap(summ, q=50, path=tmp_path / "h.png")
    lim = population.robust_limit(mat.to_numpy(), 50)
    ax = fig.axes[0]
    outlined = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(outlined) == int((mat.abs() > lim).to_numpy().sum()) > 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert f"±{lim:.1f}" in ax.get_title() and (tmp_path / "h.png").is_file()
    red = [t.get_text() for t in ax.get_yticklabels() if t.get_color() == "firebrick"]
    assert red == ["dead @ 0.05 · collapsed 2/2", "half @ 0.1 · collapsed 1/2"]
    plt.close(fig)


def test_selection_labels_merge_judgements_that_chose_the_same_point(toy_df):
    table = population.pareto_table(toy_df, "mcd")
    a = table[table["method"] == "a"].iloc[0]
    b = table[table["method"] == "b"].iloc[0]
    merged = population.selection_labels({"A: efficiency": a, "B: efficiency + fairness": a.copy()})
    assert list(merged) == ["A = B"] and merged["A = B"]["method"] == "a"
    apart = population.selection_labels({"A: efficiency": a, "B: efficiency + fairness": b, "Chebyshev": b})
    assert list(apart) == ["A", "B = Chebyshev"]


# -- cards ----------------------------------------------------------------------------------------------------

def test_card_has_every_section_in_markdown_and_html(population_store, tmp_path):
    exp, _ = population_store
    df = load_results(exp.store.root)
    table = population.pareto_table(df)
    row, rule = population.select(table, "epsilon", objective="sparsity")
    assert row["method"] != "dense"
    paths = cards.write_card(df, row, table, rule, exp.store.root, name="test_card")
    assert paths["md"].parent == exp.store.root / "cards" and paths["png"].is_file()
    md, page = paths["md"].read_text(), paths["html"].read_text()
    for section in cards.SECTIONS:
        assert f"## {section}" in md and f"<h2>{section}</h2>" in page
    assert f"]({paths['png'].name})" in md and f"src='{paths['png'].name}'" in page
    assert "ε-constraint" in md and "class 9" in md and "change vs dense" in md
    # Per-layer densities come from the runs' summaries.
    assert "| layer |" in md and row["method"] in md


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on the constant column
def test_vectorised_welch_equals_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.random((5, 7)), rng.random((4, 7))
    a[0, 1] = np.nan  # a missing value is dropped
    a[:, 2] = 0.5  # zero variance on one side only: still a test
    a[:, 3], b[:, 3] = 0.5, 0.5  # zero variance on both: no test
    (ma, na), (mb, nb), t, p = population.welch(a, b)
    for j in range(7):
        x, y = a[:, j][~np.isnan(a[:, j])], b[:, j]
        if j == 3:
            assert math.isnan(t[j]) and math.isnan(p[j])
            continue
        ref = stats.ttest_ind(x, y, equal_var=False)
        assert t[j] == pytest.approx(ref.statistic) and p[j] == pytest.approx(ref.pvalue)
        assert na[j] == len(x) and ma[j] == pytest.approx(x.mean())
    (_, n1), _, t1, _ = population.welch(a[:1], b)  # one sample: no test
    assert np.isnan(t1).all()


def test_front_does_not_depend_on_row_order(toy_df):
    """Means over seeds that differ only by summation order are ties: shuffled rows give the same front."""
    # A configuration equal to 'b' in accuracy and disparity but less sparse must be dominated, in any row order.
    extra = [_row("c", s, 0.8, split, 0.8 + 0.01 * s, [0.9 + 0.01 * s, 0.7 + 0.01 * s])
             for split in ("val", "test") for s in range(3)]
    df = pd.concat([toy_df, pd.DataFrame(extra)], ignore_index=True)
    for seed in range(5):
        shuffled = df.sample(frac=1.0, random_state=seed)
        on = dict(zip(*population.pareto_table(shuffled)[["method", "on_front"]].to_numpy().T))
        assert on == {"a": True, "b": True, "c": False, "dense": False}


def test_tables_command_prints_the_notebook_tables(population_store, capsys, tmp_path):
    exp, _ = population_store
    assert population.main([str(exp.store.root), "--correction", "holm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Population: 10 pruned runs over 5 techniques, 2 seeds.")
    for title in ("Most hurt class", "collapsed seeds", "Classes significantly hurt", "holm correction",
                  "**Who pays.**", "Pareto front", "Technique re-evaluation"):
        assert title in out
    assert population.main([str(tmp_path)]) == 1  # no population: says so, exit 1
    assert "no Prune Responsibly population" in capsys.readouterr().out
    assert population.main([str(tmp_path / "no_such_store")]) == 2  # not a store: a one-line error, exit 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_store" in err and err.count("\n") == 1


def test_notebook_04_under_papermill_leaves_the_population_and_a_card(tmp_path):
    """Notebook 04 with injected parameters (a short schedule): 40 pruned runs over 4 techniques, cards, report."""
    from pathlib import Path

    import nbformat

    from ballot_lib import sweep

    repo = Path(__file__).resolve().parents[1]
    results = tmp_path / "results"
    params = {"techniques": ["l1_unstructured", "global_unstructured", "ln_structured", "random_structured"],
              "densities": [0.2, 0.1], "seeds": [0, 1, 2, 3, 4], "epochs": 6, "retrain_epochs": 2,
              "max_acc_drop": 0.5, "results_dir": str(results), "device": "cpu"}
    out = tmp_path / "04.ipynb"
    sweep.execute(repo / "notebooks" / "04_prune_responsibly.ipynb", out, params)
    df = load_results(results)
    pruned = df[df["method"] != "dense"]
    assert pruned["run_id"].nunique() == 40 and pruned["method"].nunique() == 4
    cards_dir = results / "cards"
    assert list(cards_dir.glob("*.md")) and list(cards_dir.glob("*.html")) and list(cards_dir.glob("*.png"))
    report = next((results / "reports").glob("04_prune_responsibly_*.md")).read_text()
    assert "40 pruned models (4 techniques × 2 densities × 5 seeds" in report and "**Techniques.**" in report
    nb = nbformat.read(out, as_version=4)
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_epsilon_bound_at_the_dense_value_is_met_by_a_tie(toy_df):
    """'No worse than dense' admits a configuration whose mean disparity equals dense's up to summation order."""
    extra = [_row("c", s, 0.05, split, 0.8 + 0.01 * s, [0.9 + 0.01 * s, 0.7 + 0.01 * s])
             for split in ("val", "test") for s in range(3)]
    df = pd.concat([toy_df, pd.DataFrame(extra)], ignore_index=True)
    for seed in range(5):
        table = population.pareto_table(df.sample(frac=1.0, random_state=seed))
        row, _ = population.select(table, "epsilon", max_acc_drop=0.0, max_disparity_rise=0.0)
        assert row["method"] == "c"  # as accurate and as fair as dense, and the sparsest


def test_masks_equal_torch_nn_utils_prune():
    """Oracle: torch.nn.utils.prune on a tiny network gives the same masks (no ties in random float weights)."""
    import torch.nn.utils.prune as tprune
    from torch import nn

    from ballot_lib.methods.prune_responsibly import technique_mask

    def net():
        torch.manual_seed(3)
        return nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10), nn.ReLU(),
                             nn.Linear(10, 4))

    d = 0.3  # amount 0.7: round(0.7 n) pruned = n - round(0.3 n) kept for these sizes
    ours = {t: technique_mask(t, net(), make_config(t, density=d, n=2.0 if t == "ln_structured" else 1.0), 0)
            for t in ("l1_unstructured", "global_unstructured", "ln_structured")}
    names = ["0.weight", "3.weight", "5.weight"]
    # l1_unstructured, layer by layer.
    ref = net()
    for i in (0, 3, 5):
        tprune.l1_unstructured(ref[i], "weight", amount=1 - d)
    for i, n in zip((0, 3, 5), names):
        assert torch.equal(ours["l1_unstructured"][n], ref[i].weight_mask.bool())
    # global_unstructured with L1 over all prunable weights.
    ref = net()
    tprune.global_unstructured([(ref[i], "weight") for i in (0, 3, 5)], pruning_method=tprune.L1Unstructured,
                               amount=1 - d)
    for i, n in zip((0, 3, 5), names):
        assert torch.equal(ours["global_unstructured"][n], ref[i].weight_mask.bool())
    # ln_structured over output channels (dim 0), L2 norm, on the hidden layers; our classifier stays dense.
    ref = net()
    for i in (0, 3):
        tprune.ln_structured(ref[i], "weight", amount=1 - d, n=2, dim=0)
    for i, n in zip((0, 3), names):
        assert torch.equal(ours["ln_structured"][n], ref[i].weight_mask.bool())
    assert bool(ours["ln_structured"]["5.weight"].all())


def test_front_table_shows_cwv_to_four_decimals_and_points_with_their_unit():
    """CWV was rounded to 2 decimals (every configuration read 0.03) and MCD's column had no unit."""
    from ballot_lib import population as PR

    assert PR._disparity_cells([0.0312, 0.0348], [0.0011, float("nan")], "cwv") == ["0.0312 ± 0.0011", "0.0348"]
    assert PR._disparity_cells([0.25], [0.05], "mcd") == ["25.00 ± 5.00"]
    assert PR._disparity_heading("val", "mcd", "mcd") == "val MCD (pts)"
    assert PR._disparity_heading("test", "cwv", "cwv") == "test CWV"


# -- audit of notebook 04's readings: undecidable bounds, achieved densities, units ------------------------------

def _mcd_df(per_method: dict, dense_test_acc: float = 0.8) -> pd.DataFrame:
    """Two classes; per method (name -> (requested density, achieved density, val MCDs by seed, test MCDs by
    seed)) one run per seed and split, accuracy 0.8, the classes 0.8 ± MCD/2 (so MCD is exactly what is given)."""
    rows = []
    for m, (dens, achieved, val, test) in per_method.items():
        for split, mcds in (("val", val), ("test", test)):
            for s, v in enumerate(mcds):
                rows.append(_row(m, s, dens, split, 0.8, [0.8 + v / 2, 0.8 - v / 2], density=achieved))
    return pd.DataFrame(rows)


def _chosen(df, a, b):
    table = population.pareto_table(df, "mcd")
    rows = table.set_index("method", drop=False)
    return table, {"A: efficiency": rows.loc[a], "B: efficiency + fairness": rows.loc[b]}


def test_bound_reading_says_undecidable_when_the_paired_ci_includes_the_bound():
    """The suite's case: A's val MCD ties the dense model's (17.14 vs 17.14) with a CI of several points, so
    'the bound did not change the choice' is not a finding: the reading says the effect cannot be decided."""
    dense = [3 / 14, 2 / 14, 3 / 14, 2 / 14, 2 / 14]
    tie = [3 / 14, 3 / 14, 2 / 14, 2 / 14, 2 / 14]  # same mean as dense, one image either way in two seeds
    df = _mcd_df({"dense": (1.0, 1.0, dense, dense), "p": (0.1, 0.1, tie, tie)})
    table, chosen = _chosen(df, "p", "p")
    eff = population.bound_effect(df, table, chosen["A: efficiency"])
    diffs = [t - d for t, d in zip(tie, dense)]
    assert eff["diff"] == pytest.approx(np.mean(diffs)) and eff["n"] == 5 and not eff["decided"]
    assert eff["ci_low"] < 0 < eff["ci_high"]
    text = population.judgements_reading(df, table, chosen, val_size=140)
    assert "within seed noise: the bound's effect cannot be decided at this val size (140 val images over 2 " \
           "classes). A's choice minus the dense model in val MCD" in text
    assert "did not change the choice in this run." not in text  # no flat statement
    assert f"+0.0 pts [{100 * eff['ci_low']:+.1f}, {100 * eff['ci_high']:+.1f}] over 5 seeds" in text


def test_bound_reading_is_decided_when_the_ci_excludes_the_bound():
    dense = [0.30, 0.32, 0.31, 0.30, 0.33]
    fair = [0.10, 0.11, 0.10, 0.12, 0.10]  # clearly below dense in every seed
    unfair = [0.50, 0.52, 0.49, 0.55, 0.50]  # clearly above
    df = _mcd_df({"dense": (1.0, 1.0, dense, dense), "p": (0.1, 0.1, fair, fair), "q": (0.05, 0.05, unfair, unfair)})
    table, same = _chosen(df, "p", "p")
    text = population.judgements_reading(df, table, same)
    assert population.bound_effect(df, table, same["A: efficiency"])["decided"]
    assert "Adding the fairness bound did not change the choice in this run: A's choice meets the bound beyond seed noise" \
        in text and "cannot be decided" not in text
    table, changed = _chosen(df, "q", "p")
    text = population.judgements_reading(df, table, changed)
    assert "Adding the fairness bound changed the choice from q at sparsity 0.950 to p at sparsity 0.900" in text
    assert "A's choice exceeds the bound beyond seed noise" in text and "cannot be decided" not in text
    # B − A on test, paired by seed, with its CI: the consequence of the judgement, in points.
    diffs = [100 * (f - u) for f, u in zip(fair, unfair)]
    assert f"MCD {np.mean(diffs):+.1f} pts [" in text
    # A change whose val excess over the bound is within noise is not called a decided consequence.
    near = [0.31, 0.28, 0.36, 0.29, 0.35]  # mean above dense by 0.006, spread of several points
    df2 = _mcd_df({"dense": (1.0, 1.0, dense, dense), "p": (0.1, 0.1, fair, fair), "q": (0.05, 0.05, near, near)})
    table, changed = _chosen(df2, "q", "p")
    text = population.judgements_reading(df2, table, changed)
    assert "changed the choice from q" in text and "within seed noise: the bound's effect cannot be decided" in text


def test_structured_configurations_are_labelled_with_their_achieved_density():
    assert population.density_label(0.05, 0.094) == "0.05 (achieved 0.094)"
    assert population.density_label(0.1, 0.1002) == "0.1"  # rounding of weight counts: no note
    assert population.density_label(0.1) == "0.1"
    classes = {"dense": [0.9, 0.9, 0.9], "random_structured": [0.9, 0.5, 0.8], "l1_unstructured": [0.9, 0.85, 0.9]}
    achieved = {"dense": 1.0, "random_structured": 0.094, "l1_unstructured": 0.05}
    rows = [_row(m, s, 1.0 if m == "dense" else 0.05, split, float(np.mean(c)) + 0.01 * s,
                 [x + 0.01 * s for x in c], density=achieved[m])
            for split in ("val", "test") for s in (0, 1, 2) for m, c in classes.items()]
    df = pd.DataFrame(rows)
    summ = population.excess_summary(population.excess_change(df))
    assert summ.set_index("method").loc["random_structured", "density"] == pytest.approx(0.094)
    text = population.who_pays_reading(summ.assign(collapsed=False, collapsed_seeds=0))
    assert "under random_structured at density 0.05 (achieved 0.094)" in text
    left = summ.assign(collapsed=summ["method"] == "random_structured",
                       collapsed_seeds=np.where(summ["method"] == "random_structured", 2, 0))
    text = population.who_pays_reading(left)
    assert "random_structured at 0.05 (achieved 0.094; 2 of 3 seeds)" in text
    assert "(class 1, random_structured at 0.05, achieved 0.094)" in text  # the collapsed ones' largest loss
    assert "l1_unstructured at density 0.05 (" not in text.replace("l1_unstructured at density 0.05 (-", "")
    assert "random_structured @ 0.05 (achieved 0.094)" in population.excess_matrix(summ).index
    assert "l1_unstructured @ 0.05" in population.excess_matrix(summ).index
    shown = population.with_achieved(population.hurt_counts(population.hurt_classes(df)), df)
    assert shown.set_index("method").loc["random_structured", "density_achieved"] == pytest.approx(0.094)
    table = population.pareto_table(df, "mcd")
    row = table.set_index("method", drop=False).loc["random_structured"]
    text = population.judgements_reading(df, table, {"A: efficiency": row, "B: efficiency + fairness": row})
    assert "random_structured at density 0.05 (achieved 0.094, sparsity 0.91)" in text


def test_judgement_lines_write_mcd_in_points_not_percent():
    dense = [0.30, 0.32, 0.31, 0.30, 0.33]
    fair = [0.10, 0.11, 0.10, 0.12, 0.10]
    df = _mcd_df({"dense": (1.0, 1.0, dense, dense), "p": (0.1, 0.1, fair, fair)})
    table, chosen = _chosen(df, "p", "p")
    text = population.judgements_reading(df, table, chosen)
    import re

    assert not re.search(r"MCD [+-]?[\d.]+ ?%", text), text
    assert f"test MCD {100 * np.mean(fair):.1f} pts vs dense {100 * np.mean(dense):.1f} pts" in text
    assert "test accuracy 80.0 % vs dense 80.0 %" in text  # an accuracy is a percentage; its changes are points

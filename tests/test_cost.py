"""The cost of a parameter file before it runs (ballot_lib.cost, ballot_lib.plans, ``sweep cost``).

Oracles: the split sizes against the real loaders on generated fixtures in the exact on-disk formats; the planned
runs against the runs ``run_grid`` (and notebooks 03 and 04 under papermill) actually create in a store;
GPU-hours by hand.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ballot_lib import cost, plans, sweep
from ballot_lib.data import DataConfig, get_dataset
from ballot_lib.data.sizes import NOMINAL, Nominal, carve, split_sizes
from ballot_lib.data.core import long_tail_counts, stratified_split
from ballot_lib.methods import Variant, run_grid
from ballot_lib.results import load_results
import fixtures_real as fx  # noqa: E402  (tests/ is on sys.path under pytest)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ split sizes

@pytest.mark.parametrize("counts,fraction", [([10] * 10, 0.1), ([7, 3, 1, 2, 50], 0.1), ([5, 5, 4], 0.5),
                                             ([500] * 3, 0.1), ([9, 11, 13], 0.2)])
def test_carve_counts_equal_stratified_split(counts, fraction):
    y = np.repeat(np.arange(len(counts)), counts)
    rest, carved = stratified_split(y, fraction, seed=3)
    r, c = carve(np.array(counts), fraction)
    assert (r.sum(), c.sum()) == (len(rest), len(carved))
    assert list(c) == [int((y[carved] == k).sum()) for k in range(len(counts))]


def _loaded(cfg):
    b = get_dataset(cfg)
    return len(b.train), len(b.val), len(b.test)


def test_split_sizes_equal_the_loaders_on_fixtures(tmp_path):
    fx.write_cifar10(tmp_path, per_class_train=10, per_class_test=3)
    fx.write_cifar100(tmp_path, per_class_train=3, per_class_test=1)
    fx.write_tinyimagenet(tmp_path, per_class_train=10, per_class_val=2)
    celeba = fx.write_celeba(tmp_path)
    root = str(tmp_path)
    n_tiny = len(fx.TINY_WNIDS)
    cases = [
        (DataConfig("cifar10", root=root, verify=False), Nominal((10,) * 10, test=30)),
        (DataConfig("cifar10", root=root, verify=False, val_fraction=0.2, max_train=50), Nominal((10,) * 10, test=30)),
        (DataConfig("cifar10", root=root, verify=False, long_tail="exp", lt_ratio=5.0), Nominal((10,) * 10, test=30)),
        (DataConfig("cifar10s", root=root, verify=False), Nominal((10,) * 10, test=30, eval_copies=2)),
        (DataConfig("cifar100", root=root, verify=False), Nominal((3,) * 100, test=100)),
        (DataConfig("tinyimagenet", root=root, verify=False), Nominal((10,) * n_tiny, test=2 * n_tiny, side=64)),
        (DataConfig("celeba", root=root, verify=False, image_size=16),
         Nominal(((celeba["partition"] == 0).sum(),), test=int((celeba["partition"] == 2).sum()),
                 val=int((celeba["partition"] == 1).sum()), side=128, resizable=True)),
    ]
    for cfg, nominal in cases:
        s = split_sizes(cfg, nominal)
        assert (s.train, s.val, s.test) == _loaded(cfg), cfg
        assert s.nominal
    assert split_sizes(cases[-1][0], cases[-1][1]).side == 16
    assert split_sizes(DataConfig("celeba")).side == 128 and split_sizes(DataConfig("tinyimagenet")).side == 64


def test_utkface_sizes_are_within_rounding_of_the_loader(tmp_path):
    info = fx.write_utkface(tmp_path, per_cell=4)
    cfg = DataConfig("utkface", root=str(tmp_path), verify=False)
    s = split_sizes(cfg, Nominal((len(info["labels"]),), test_fraction=0.2, side=64, resizable=True))
    train, val, test = _loaded(cfg)
    # one total instead of per-stratum counts: each split within one image per stratum (10 gender x race cells)
    assert s.train + s.val + s.test == train + val + test
    assert abs(s.test - test) <= 10 and abs(s.val - val) <= 10


def test_split_sizes_of_real_datasets_and_embedded_ones():
    c10 = split_sizes(DataConfig("cifar10"))
    assert (c10.train, c10.val, c10.test, c10.side) == (45_000, 5_000, 10_000, 32)
    assert (split_sizes(DataConfig("cifar10s")).val, split_sizes(DataConfig("cifar10s")).test) == (10_000, 20_000)
    celeba = split_sizes(DataConfig("celeba", image_size=64))
    assert (celeba.train, celeba.val, celeba.test, celeba.side) == (162_770, 19_867, 19_962, 64)
    assert split_sizes(DataConfig("tinyimagenet")).train == 90_000
    lt = split_sizes(DataConfig("cifar10", long_tail="exp", lt_ratio=100.0))
    assert lt.train == long_tail_counts(np.full(10, 4_500), "exp", 100.0).sum() and 11_000 < lt.train < 11_300
    digits = split_sizes(DataConfig("digits"))
    assert not digits.nominal and digits.side == 8
    assert split_sizes(DataConfig("adult")).side is None
    with pytest.raises(ValueError, match="long_tail.*celeba"):
        split_sizes(DataConfig("celeba", long_tail="exp"))
    assert set(NOMINAL) == {"cifar10", "cifar100", "cifar10s", "celeba", "utkface", "tinyimagenet"}


# ------------------------------------------------------------------------------------------ planned runs

GRID_PARAMS = {"dataset": "digits", "model": "mlp", "epochs": 2, "batch_size": 128, "lr": 0.1, "device": "cpu"}


def test_plan_equals_the_runs_run_grid_creates(tmp_path, capsys):
    results = tmp_path / "results"
    params = {**GRID_PARAMS, "results_dir": str(results)}
    variants = [Variant("dense", "dense"), Variant("MP", "mp", {"select": "last"}),
                Variant("MP +val", "mp", {"select": "val_rule"}), Variant("LTH k=1", "lth", {"rewind_epoch": 1}),
                Variant("SafeCompress", "safecompress"), Variant("Ballot plain", "ballot", {"refined": False}),
                Variant("Ballot plain +val", "ballot", {"refined": False, "select": "val_rule"}),
                Variant("Ballot", "ballot", {"refined": True})]
    grid = plans.Grid("g", params, variants, [0.2, 0.1], [0, 1])
    planned = pd.DataFrame([r.__dict__ for r in cost.plan_grid(grid, results_dir=str(results))])
    assert not results.exists(), "planning writes nothing"
    from ballot_lib.experiment import experiment_from

    exp = experiment_from(params)
    exp.progress = False
    run_grid(exp, variants, [0.2, 0.1], [0, 1], progress=False)
    df = load_results(results)
    test = df[df["split"] == "test"].set_index("run_id")
    assert set(planned["run_id"]) == set(test.index)
    for _, r in planned.iterrows():
        stored = test.loc[r["run_id"]]
        if r["derived_from"]:
            assert stored["derived_from"] == r["derived_from"] and r["epochs"] == 0
        else:
            assert pd.isna(stored.get("derived_from")) or not stored.get("derived_from")
            reuses = r["method"] in ("mp", "lth", "ballot")
            assert r["epochs"] == stored["compute_epochs"] - (2 if reuses else 0), r["variant"]
    # 2 seeds x (dense + 2 densities x (MP, LTH, SafeCompress, Ballot plain, Ballot) trained; 2 derived)
    assert (planned["derived_from"] == "").sum() == 2 * (1 + 2 * 5) and (planned["derived_from"] != "").sum() == 8
    again = pd.DataFrame([r.__dict__ for r in cost.plan_grid(grid, results_dir=str(results))])
    assert again["complete"].all()
    # The store's measured images/s: the trained runs' epochs x 32-px equivalents per epoch over their seconds
    # (digits: 8x8 images count 1/16; derived runs are left out).
    trained = test[[not r for r in test["derived_from"].fillna("")]]
    s = split_sizes(DataConfig("digits"))
    per_epoch = (s.train + (s.val + s.test) / 3) / 16
    rates = cost.measured_rates(results).set_index("model")
    assert rates.loc["mlp", "runs"] == len(trained) == 22
    assert rates.loc["mlp", "images_per_s"] == pytest.approx((trained["train_epochs"] * per_epoch).sum()
                                                             / trained["seconds"].sum())
    ok = _write(tmp_path / "p.yaml", "notebook: 04_prune_responsibly.ipynb\nparameters: {epochs: 2}\n")
    assert sweep.main(["cost", "--rates-from", str(tmp_path), str(ok)]) == 2
    assert "--rates-from" in capsys.readouterr().err and not (tmp_path / "outputs").exists()
    # Where the rates come from is stated, and CPU rates are not passed off as GPU-hours; a --results that is not
    # a store (a typo) is said to count every run as still to train.
    assert rates.loc["mlp", "devices"] == "cpu"
    assert sweep.main(["cost", "--rates-from", str(results), str(ok), "--results", str(tmp_path / "typo")]) == 0
    out = capsys.readouterr().out
    assert "its runs trained on cpu: the 'gpu_hours' below are hours at those rates" in out
    assert f"--results {tmp_path / 'typo'} is not a results store" in out and not (tmp_path / "typo").exists()
    # A store one kind of GPU filled (a run records the GPU's name): no warning.
    import json

    for summary in (results / "runs").glob("*/summary.json"):
        data = json.loads(summary.read_text())
        if data.get("environment"):
            data["environment"]["device"] = "NVIDIA H200"
            summary.write_text(json.dumps(data))
    assert cost.measured_rates(results).set_index("model").loc["mlp", "devices"] == "NVIDIA H200"
    assert sweep.main(["cost", "--rates-from", str(results), str(ok)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_summarize_gpu_hours_by_hand():
    plan = pd.DataFrame({"file": ["f"] * 3, "dataset": ["d"] * 3, "model": ["resnet18", "resnet18", "cnn"],
                         "run_id": ["a", "b", "c"], "epochs": [10.0, 0.0, 4.0],
                         "images_per_epoch": [36_000.0, 36_000.0, 1_000.0], "todo": [True, False, True]})
    plan["images"] = plan["epochs"] * plan["images_per_epoch"] * plan["todo"]
    t = cost.summarize(plan, {"resnet18": 100.0}, concurrency=2.0, by=("model",))
    r18 = t[t["model"] == "resnet18"].iloc[0]
    assert (r18["runs"], r18["to_train"], r18["epochs"]) == (2, 1, 10.0)
    assert r18["gpu_hours"] == pytest.approx(360_000 / (100 * 2) / 3600)
    assert np.isnan(t[t["model"] == "cnn"]["gpu_hours"].iloc[0]) and np.isnan(t.iloc[-1]["gpu_hours"])
    assert t.iloc[-1]["Mimages"] == pytest.approx(0.364)
    with pytest.raises(ValueError, match="concurrency"):
        cost.summarize(plan, {}, concurrency=0)
    assert cost.images_per_epoch(split_sizes(DataConfig("celeba"))) == pytest.approx(
        (162_770 + (19_867 + 19_962) / 3) * 16)


def test_notebook_plans_follow_the_parameters():
    g03 = plans.notebook_plan("03_baseline_comparison.ipynb", {})
    # smoke defaults: digits_lt x {mlp, cnn}, adult x mlp (no conv model on tabular data)
    assert [g.stage for g in g03] == [f"{s} {k}" for s in ("digits_lt/mlp", "digits_lt/cnn", "adult/mlp")
                                      for k in ("candidates", "comparison")]
    assert g03[-1].params["epochs"] == 4  # dataset_overrides of adult
    # notebook 03's rewind point reaches LTH and every Ballot run of the plan, as in the notebook
    late = plans.notebook_plan("03_baseline_comparison.ipynb", {"rewind_epoch": 1})
    for g in late:
        for v in g.variants:
            assert (v.options.get("rewind_epoch") == 1) == (v.method in ("lth", "ballot")), (g.stage, v)
    # ... and the compute-matched 2T runs train 2T − 1 epochs of each setting's T (adult: T = 4)
    budgets = {(g.stage, v.label): v.options["budget"] for g in late for v in g.variants if "budget" in v.options}
    assert budgets[("digits_lt/mlp comparison", "SafeCompress 2T")] == pytest.approx(2 - 1 / 20)
    assert budgets[("adult/mlp comparison", "FairScratch 2T")] == pytest.approx(2 - 1 / 4)
    g01 = plans.notebook_plan("01_lth_fairness_failure.ipynb", {"include_ballot": False, "training_density": 0.2})
    assert [v.method for v in g01[1].variants] == ["dense", "lth", "random"] and g01[2].densities == [0.2]
    g02 = plans.notebook_plan("02_ballot_method.ipynb", {}, {"ablation": "eta=0"})
    assert g02[2].variants[-1].options["eta"] == 0.0
    g04 = plans.notebook_plan("04_prune_responsibly.ipynb", {"techniques": ["l1_unstructured"], "retrain_epochs": 0})
    assert [v.method for v in g04[0].variants] == ["dense", "l1_unstructured"]
    assert g04[0].variants[1].options == {"retrain_epochs": None}
    with pytest.raises(ValueError, match="no training plan.*01_lth"):
        plans.notebook_plan("05_results_report.ipynb", {})
    with pytest.raises(ValueError, match="not a Ballot candidate"):
        plans.notebook_plan("03_baseline_comparison.ipynb", {}, {"ballot": "nope"})


def test_notebook04_store_equals_its_plan(tmp_path):
    params = {"dataset": "digits", "model": "mlp", "techniques": ["l1_unstructured", "random_structured"],
              "densities": [0.3, 0.1], "seeds": [0, 1], "epochs": 2, "retrain_epochs": 1, "batch_size": 128,
              "results_dir": str(tmp_path / "results"), "device": "cpu"}
    plan = cost.plan_jobs("04_prune_responsibly.ipynb", [params])
    sweep.execute(REPO / "notebooks" / "04_prune_responsibly.ipynb", tmp_path / "04.ipynb", params)
    stored = load_results(tmp_path / "results")
    assert set(plan["run_id"]) == set(stored["run_id"])
    assert len(plan) == 2 * (1 + 2 * 2) and plan["epochs"].sum() == 2 * (2 + 4 * 1)


# ------------------------------------------------------------------------------------------ sweep cost

def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sweep_cost_prints_the_plan_and_writes_nothing(tmp_path):
    f = _write(tmp_path / "pop.yaml", "notebook: 04_prune_responsibly.ipynb\nparameters:\n  dataset: cifar10\n"
               "  model: resnet18\n  densities: [0.5, 0.1]\n  epochs: 10\n  retrain_epochs: 2\n  device: cuda\n"
               "grid:\n  seeds: [[0], [1]]\n")
    cmd = [sys.executable, "-m", "ballot_lib.sweep", "cost", str(f), "--ips", "resnet18=1000", "--concurrency", "2"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env={**__import__("os").environ,
                                                                                 "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    # 2 jobs x (dense 10 epochs + 5 techniques x 2 densities x 2 epochs); CIFAR-10: 45,000 + (5,000 + 10,000) / 3
    images = 2 * (10 + 5 * 2 * 2) * (45_000 + 15_000 / 3)
    assert f"{images / 1e6:,.1f}" in out.stdout and f"{images / 2000 / 3600:,.1f}" in out.stdout
    assert "total" in out.stdout and sorted(p.name for p in tmp_path.iterdir()) == ["pop.yaml"]
    bad = subprocess.run(cmd[:-4] + ["--ips", "resnet19=5"], cwd=tmp_path, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert bad.returncode == 2 and "--ips" in bad.stderr and "resnet18" in bad.stderr


def test_sweep_cost_errors_before_planning(tmp_path, capsys):
    f = _write(tmp_path / "r.yaml", "notebook: 05_results_report.ipynb\nparameters: {}\n")
    assert sweep.main(["cost", str(f)]) == 2
    assert "no training plan" in capsys.readouterr().err
    g = _write(tmp_path / "bad.yaml", "notebook: 04_prune_responsibly.ipynb\nparameters:\n  epochs: -1\n")
    assert sweep.main(["cost", str(g)]) == 2
    assert "epochs" in capsys.readouterr().err
    assert sweep.main(["cost", str(g), "--by", "colour"]) == 2
    assert "--by" in capsys.readouterr().err


def test_notebook_defaults_are_read_like_papermill_without_it():
    """plans read the notebooks' defaults without papermill (a bare GPU image has none): same values as papermill."""
    import ast

    import papermill

    from ballot_lib.notebook_files import notebook_parameters, notebooks

    for nb in notebooks():
        theirs = {}
        for name, info in papermill.inspect_notebook(str(nb)).items():
            try:
                theirs[name] = ast.literal_eval(info["default"])
            except (ValueError, SyntaxError):
                theirs[name] = info["default"]
        assert notebook_parameters(nb) == theirs, nb.name


def test_every_parameter_file_has_a_plan():
    for f in sorted((REPO / "params").glob("*.yaml")):
        plan = sweep.plan_params_file(f, str(REPO / "no-such-store"))
        assert len(plan) and (plan["epochs"] > 0).any() and not plan["complete"].any(), f.name


SUITE_STORE = REPO / "outputs" / "suite" / "results"


@pytest.mark.skipif(not (SUITE_STORE / "comparisons").is_dir(), reason="no suite store: run `make run` first")
def test_plans_of_the_notebooks_defaults_are_in_the_suite_store():
    """After `make run`: every run the plans of notebooks 01-04 list (with their smoke defaults and the options the
    notebooks chose on val, from their records) is in the suite's store, complete."""
    from ballot_lib import paper_tables

    chosen = {r["notebook"]: r.get("chosen", "") for r in paper_tables.load_records(SUITE_STORE)}
    choices = {"02_ballot_method.ipynb": {"ablation": chosen.get("02_ballot_method.ipynb")},
               "03_baseline_comparison.ipynb": {"ballot": chosen.get("03_baseline_comparison.ipynb")}}
    stored = set(load_results(SUITE_STORE)["run_id"])
    for nb in plans.PLANNERS:
        plan = cost.plan_jobs(nb, [{}], str(SUITE_STORE), {k: v for k, v in choices.get(nb, {}).items() if v})
        assert set(plan["run_id"]) <= stored and plan["complete"].all(), nb


def test_sweep_grid_states_what_it_will_train(tmp_path, monkeypatch, capsys):
    f = _write(tmp_path / "pop.yaml", "notebook: 04_prune_responsibly.ipynb\nparameters:\n  dataset: digits\n"
               "  techniques: [l1_unstructured]\n  densities: [0.5, 0.1]\n  epochs: 2\n  retrain_epochs: 1\n"
               "grid:\n  seeds: [[0], [1], [2]]\n")
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: 1.0)
    assert sweep.run_grid_file(f, tmp_path / "out") == 0
    # 3 jobs x (dense 2 epochs + 2 pruned runs x 1 epoch); nothing in the store yet
    assert "[grid] plan: 9 of 9 runs still to train, 12 epochs" in capsys.readouterr().out


def test_the_aggregate_execution_is_planned_and_its_own_training_flagged(tmp_path, capsys):
    text = ("notebook: 04_prune_responsibly.ipynb\nparameters:\n  dataset: digits\n  techniques: [l1_unstructured]\n"
            "  densities: [0.5]\n  epochs: 2\n  retrain_epochs: 1\ngrid:\n  seeds: [[0], [1]]\naggregate:\n"
            "  seeds: [0, 1, 2]\n")
    f = _write(tmp_path / "agg.yaml", text)
    plan = sweep.plan_params_file(f, str(tmp_path / "store"))
    # seed 2 appears in the aggregate only: its dense and pruned runs would be trained there, serially
    assert sorted(plan.loc[plan["job"] == cost.AGGREGATE, "seed"]) == [2, 2]
    assert sweep.main(["cost", str(f), "--results", str(tmp_path / "store")]) == 0
    assert "aggregate execution would train 2 runs that no job trains (seeds [2])" in capsys.readouterr().out
    ok = _write(tmp_path / "ok.yaml", text.replace("[0, 1, 2]", "[0, 1]"))
    assert (sweep.plan_params_file(ok)["job"] != cost.AGGREGATE).all()


def test_a_grid_of_theta0_methods_plans_and_trains_no_dense_run(tmp_path):
    results = tmp_path / "results"
    params = {**GRID_PARAMS, "results_dir": str(results)}
    from ballot_lib.experiment import experiment_from

    variants = [Variant("SafeCompress", "safecompress"), Variant("FairScratch", "fairscratch")]
    planned = cost.plan_grid(plans.Grid("g", params, variants, [0.2], [0, 1]), results_dir=str(results))
    assert sorted(r.method for r in planned) == ["fairscratch"] * 2 + ["safecompress"] * 2
    assert all(r.epochs == 2 for r in planned)
    run_grid(experiment_from(params), variants, [0.2], [0, 1], progress=False)
    assert set(load_results(results)["run_id"]) == {r.run_id for r in planned}


def test_a_val_rule_run_whose_twin_is_in_the_store_costs_nothing(tmp_path):
    results = tmp_path / "results"
    params = {**GRID_PARAMS, "results_dir": str(results)}
    from ballot_lib.experiment import experiment_from

    exp = experiment_from(params)
    run_grid(exp, [Variant("MP", "mp", {"select": "last"})], [0.3], [0], progress=False)
    grid = plans.Grid("g", params, [Variant("MP +val", "mp", {"select": "val_rule"})], [0.3], [0])
    planned = {r.variant: r for r in cost.plan_grid(grid, results_dir=str(results))}
    assert planned["MP +val"].derived_from and planned["MP +val"].epochs == 0 and not planned["MP +val"].complete
    run_grid(exp, grid.variants, [0.3], [0], progress=False)
    stored = load_results(results)
    assert stored.loc[stored["run_id"] == planned["MP +val"].run_id, "derived_from"].iloc[0] == \
        planned["MP +val"].derived_from

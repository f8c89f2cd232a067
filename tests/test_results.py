"""The results store (SPEC §8): stable hashes, atomic writes, clear errors, tidy loading, skipping and resuming."""
from __future__ import annotations

import json
import math

import pytest
import torch

import ballot_lib.experiment as experiment_module
from ballot_lib.methods import run_method
from ballot_lib.results import (
    ResultsError,
    ResultsStore,
    atomic_torch_save,
    atomic_write_json,
    config_hash,
    load_history,
    load_results,
    read_json,
)

from conftest import make_experiment, tree

# ------------------------------------------------------------------------------------------ hashes

KNOWN_CONFIG = {
    "method": "lth",
    "seed": 0,
    "method_cfg": {"density": 0.2, "rewind_epoch": 1},
    "train": {"epochs": 2, "lr": 0.05, "milestones": [1]},
}


def test_config_hash_is_pinned():
    # Regression pin: run folders are named by this hash. If this value changes, every stored result becomes
    # unreachable (its folder name no longer matches its configuration) and would be recomputed. Change it only
    # deliberately, together with a note that existing results are invalidated.
    assert config_hash(KNOWN_CONFIG) == "385a4c2a447d"


def test_config_hash_ignores_key_order_at_every_level():
    reordered = {
        "train": {"milestones": [1], "lr": 0.05, "epochs": 2},
        "method_cfg": {"rewind_epoch": 1, "density": 0.2},
        "seed": 0,
        "method": "lth",
    }
    assert config_hash(reordered) == config_hash(KNOWN_CONFIG)
    # Tuples and lists are the same JSON value.
    with_tuple = {**KNOWN_CONFIG, "train": {**KNOWN_CONFIG["train"], "milestones": (1,)}}
    assert config_hash(with_tuple) == config_hash(KNOWN_CONFIG)


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"method": "mp"},
    {"method_cfg": {"density": 0.2, "rewind_epoch": 0}},
    {"train": {"epochs": 2, "lr": 0.1, "milestones": [1]}},
])
def test_config_hash_changes_with_any_value(change):
    assert config_hash({**KNOWN_CONFIG, **change}) != config_hash(KNOWN_CONFIG)


def test_run_config_identity_excludes_location_and_progress(tmp_path):
    a = make_experiment(tmp_path / "a")
    b = make_experiment(tmp_path / "b")
    b.progress = True
    assert a.run_config("dense", {}, 0) == b.run_config("dense", {}, 0)
    assert a.store.run(a.run_config("dense", {}, 0)).id == b.store.run(b.run_config("dense", {}, 0)).id
    assert a.store.run(a.run_config("dense", {}, 1)).id != a.store.run(a.run_config("dense", {}, 0)).id


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_json_round_trip_and_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    atomic_write_json({"b": 1, "a": [1.5, float("nan")], "t": torch.tensor([1, 2])}, target)
    assert tree(tmp_path) == ["sub", "sub/metrics.json"]
    assert json.loads(target.read_text()) == {"a": [1.5, None], "b": 1, "t": [1, 2]}
    atomic_write_json({"x": 2}, target)  # overwrite in place
    assert read_json(target) == {"x": 2} and tree(tmp_path) == ["sub", "sub/metrics.json"]


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "weights.pt"
    atomic_torch_save({"w": torch.ones(2)}, target)
    with pytest.raises(Exception):
        atomic_torch_save({"f": lambda: 0}, target)  # lambdas cannot be pickled: the write fails midway
    assert tree(tmp_path) == ["weights.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    with pytest.raises(Exception):
        atomic_write_json({"x": object()}, tmp_path / "new.json")
    assert tree(tmp_path) == ["weights.pt"]


def test_corrupt_or_missing_json_raises_results_error_naming_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"test": {"acc": 0.9')
    with pytest.raises(ResultsError, match=str(bad)):
        read_json(bad)
    with pytest.raises(ResultsError, match="nothing.json"):
        read_json(tmp_path / "nothing.json")


# ------------------------------------------------------------------------------------------ loading results


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A store holding a dense run and an MP run at density 0.25 (seed 0)."""
    exp = make_experiment(tmp_path_factory.mktemp("store") / "results")
    dense = exp.dense(0)
    mp = run_method(exp, "mp", 0, density=0.25, finetune="short")
    return exp, dense, mp


def test_load_results_has_one_row_per_run_and_split(two_runs):
    exp, dense, mp = two_runs
    df = load_results(exp.store.root)
    assert len(df) == 4
    assert sorted(zip(df["run_id"], df["split"])) == sorted(
        [(dense.id, "val"), (dense.id, "test"), (mp.id, "val"), (mp.id, "test")])
    for col in ("method", "seed", "density", "sparsity", "dataset", "model", "acc", "cwv", "mcd", "acc_class_0",
                "method_cfg.density", "train.epochs"):
        assert col in df.columns, col
    by_method = df.groupby("method")
    assert set(by_method.groups) == {"dense", "mp"}
    assert (df["seed"] == 0).all() and (df["dataset"] == "digits").all() and (df["model"] == "mlp").all()
    assert (df.loc[df.method == "dense", "density"] == 1.0).all()
    mp_density = df.loc[df.method == "mp", "density"]
    assert mp_density.tolist() == pytest.approx([mp.summary["density"]] * 2)
    assert mp_density.iloc[0] == pytest.approx(0.25, abs=1e-3)
    assert (df["sparsity"] == 1 - df["density"]).all()
    # Metric values are the stored ones.
    row = df[(df.run_id == mp.id) & (df.split == "test")].iloc[0]
    assert row["mcd"] == mp.metrics["test"]["mcd"] and row["acc"] == mp.metrics["test"]["acc"]


def test_load_results_of_an_empty_store_has_the_convenience_columns(tmp_path):
    (tmp_path / "nothing").mkdir()
    df = load_results(tmp_path / "nothing")
    assert len(df) == 0
    assert {"method", "seed", "density", "sparsity", "split"} <= set(df.columns)


@pytest.mark.parametrize("load", [load_results, load_history])
def test_load_of_a_path_that_is_not_a_folder_names_it(tmp_path, load):
    # A typo used to read as a store without runs: an empty table, no error.
    with pytest.raises(ResultsError, match=f"{tmp_path / 'typo'}: no such folder"):
        load(tmp_path / "typo")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="a file"):
        load(tmp_path / "file")
    with pytest.raises(ResultsError, match="got int 5"):
        load(5)


def test_incomplete_runs_are_not_loaded(two_runs, tmp_path):
    exp, dense, _ = two_runs
    store = ResultsStore(tmp_path / "r")
    run = store.run({"method": "dense", "seed": 5})
    run.start()
    run.write_json("metrics.json", {"test": {"acc": 1.0}})  # no summary.json: not complete
    assert not run.complete and len(load_results(store.root)) == 0


def test_load_history_has_one_row_per_epoch(two_runs):
    exp, dense, _ = two_runs
    h = load_history(exp.store.root, run_ids=[dense.id])
    assert h["epoch"].tolist() == [1, 2]
    assert (h["method"] == "dense").all() and "val_acc" in h.columns


def test_load_history_checks_what_it_reads(tmp_path):
    """load_history reads like load_results: the configuration must hash to its folder and per-epoch values must
    be numbers, else the error names the file (a mislabelled or garbled history never reaches a plot)."""
    exp = make_experiment(tmp_path / "results")
    dense = run_method(exp, "dense", 0)
    hist = dense.run.file("history.json")
    rows = json.loads(hist.read_text())
    rows[0]["val_acc"] = "x"
    hist.write_text(json.dumps(rows))
    with pytest.raises(ResultsError, match=r"history.json is malformed \(row 0 field 'val_acc' is 'x'"):
        load_history(exp.store.root)
    rows[0]["val_acc"] = 0.5
    hist.write_text(json.dumps(rows))
    cfg = dense.run.file("config.json")
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "seed": 7}))  # edited by hand
    with pytest.raises(ResultsError, match="not of its folder"):
        load_history(exp.store.root)


# ------------------------------------------------------------------------------------------ skipping and resuming


def test_finished_run_is_skipped(two_runs, monkeypatch):
    exp, dense, mp = two_runs
    files = {p: p.stat().st_mtime_ns for p in dense.run.path.iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiment_module, "train", no_training)
    again = exp.dense(0)
    assert again.id == dense.id and again.metrics == dense.metrics
    assert run_method(exp, "mp", 0, density=0.25, finetune="short").metrics == mp.metrics
    assert {p: p.stat().st_mtime_ns for p in dense.run.path.iterdir()} == files


class Interrupted(Exception):
    pass


def test_interrupted_dense_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    reference = make_experiment(tmp_path / "ref").dense(0)
    exp = make_experiment(tmp_path / "interrupted")
    real_train = experiment_module.train

    def train_one_epoch_then_die(*args, **kwargs):
        real_train(*args, **{**kwargs, "end_epoch": 1})
        raise Interrupted

    monkeypatch.setattr(experiment_module, "train", train_one_epoch_then_die)
    with pytest.raises(Interrupted):
        exp.dense(0)
    run = exp.store.run(exp.run_config("dense", {}, 0))
    assert not run.complete and run.file("checkpoint.pt").exists()

    calls = []

    def spy(*args, **kwargs):
        res = real_train(*args, **kwargs)
        calls.append(res.epochs_run)
        return res

    monkeypatch.setattr(experiment_module, "train", spy)
    resumed = exp.dense(0)
    assert calls == [1]  # only the second epoch was trained
    assert resumed.id == reference.id
    ref_T = reference.run.load_tensor("thetaT.pt")
    got_T = resumed.run.load_tensor("thetaT.pt")
    assert all(torch.equal(ref_T[k], got_T[k]) for k in ref_T)
    assert resumed.metrics == reference.metrics
    assert len(resumed.history()) == 2
    assert not run.file("checkpoint.pt").exists()  # removed once the run completed
    assert not any(name.endswith(".tmp") for name in tree(exp.store.root))
    assert not math.isnan(resumed.metrics["test"]["acc"])


def test_a_complete_run_missing_a_file_gets_the_fix(tmp_path):
    exp = make_experiment(tmp_path / "results")
    mp = run_method(exp, "mp", 0, density=0.5)
    mp.run.file("metrics.json").unlink()
    with pytest.raises(ResultsError, match=r"metrics.json does not exist; remove the run folder .*recomputed"):
        load_results(exp.store.root)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_store_files_follow_the_umask_not_mkstemps_owner_only_mode(tmp_path, umask):
    """A fresh-user review found every run file 0600 (tempfile.mkstemp's mode): a store shared between users
    (a GPU batch's store read by a collaborator's notebook 05) was unreadable to everyone but its writer."""
    import os
    import stat

    from ballot_lib.results import atomic_copy

    old = os.umask(umask)
    try:
        exp = make_experiment(tmp_path / "results")
        run = run_method(exp, "lth", 0, density=0.5).run
        atomic_copy(run.file("config.json"), tmp_path / "copy.json")
    finally:
        os.umask(old)
    files = [p for p in run.path.iterdir() if p.is_file() and not p.name.startswith(".")] + [tmp_path / "copy.json"]
    assert {"mask.pt", "metrics.json", "summary.json"} <= {p.name for p in files}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o666 & ~umask}, modes

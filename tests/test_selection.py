"""The shared checkpoint-selection option (``select="last" | "val_rule"``) of every sparse method."""
from __future__ import annotations

import pytest

from ballot_lib.methods import make_config, run_method
from ballot_lib.methods.base import config_dict, select_checkpoint

from conftest import make_experiment, stored_run_bytes, tree


def test_select_checkpoint_by_hand():
    history = [
        {"epoch": 1, "val_acc": 0.800, "val_mcd": 0.30},
        {"epoch": 2, "val_acc": 0.900, "val_mcd": 0.40},
        {"epoch": 3, "val_acc": 0.895, "val_mcd": 0.20},
        {"epoch": 4, "val_acc": 0.850, "val_mcd": 0.05},
    ]
    assert select_checkpoint(history, 0.01) == 2
    assert select_checkpoint(history, 0.0) == 1
    assert select_checkpoint(history, 0.1) == 3


def test_default_select_leaves_the_run_identity_unchanged():
    # "last" is the behaviour every stored run had: it is not part of the hash, "val_rule" is.
    assert "select" not in config_dict(make_config("mp", density=0.2))
    assert "select_eps" not in config_dict(make_config("lth", density=0.2))
    assert config_dict(make_config("mp", density=0.2, select="val_rule"))["select"] == "val_rule"
    # Ballot's identity always held select_eps (refined training).
    assert "select_eps" in config_dict(make_config("ballot", density=0.2))


@pytest.mark.parametrize("method", ["mp", "lth", "random"])
def test_val_rule_reports_the_selected_epoch_on_every_split(tmp_path, method):
    exp = make_experiment(tmp_path / "results", epochs=4)
    last = run_method(exp, method, 0, density=0.3)
    sel = run_method(exp, method, 0, density=0.3, select="val_rule", select_eps=0.05)
    assert sel.id != last.id
    history = sel.history()
    assert history == last.history()  # same training, same data order
    idx = select_checkpoint(history, 0.05)
    assert sel.summary["selected_epoch"] == history[idx]["epoch"] and sel.summary["select"] == "val_rule"
    assert last.summary["selected_epoch"] == history[-1]["epoch"] and last.summary["select"] == "last"
    for split in ("val", "test"):
        assert sel.metrics[split] == {k[len(split) + 1:]: v for k, v in history[idx].items()
                                      if k.startswith(split + "_")}


def test_ballot_plain_training_can_use_the_val_rule(tmp_path):
    exp = make_experiment(tmp_path / "results", epochs=3)
    plain = run_method(exp, "ballot", 0, density=0.3, refined=False)
    plain_sel = run_method(exp, "ballot", 0, density=0.3, refined=False, select="val_rule")
    assert plain.summary["select"] == "last" and plain_sel.summary["select"] == "val_rule"
    history = plain_sel.history()
    assert plain_sel.summary["selected_epoch"] == history[select_checkpoint(history, 0.01)]["epoch"]


@pytest.mark.parametrize("kw,message", [({"select": "best"}, "unknown select 'best'; valid choices: last, val_rule"),
                                        ({"select_eps": -0.1}, "select_eps must be a finite number >= 0"),
                                        ({"select_eps": float("inf")}, "select_eps must be a finite number"),
                                        ({"select_eps": float("nan")}, "select_eps must be a finite number")])
def test_bad_select_options_raise_before_anything_is_written(tmp_path, kw, message):
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ValueError, match=message):
        run_method(exp, "mp", 0, density=0.3, **kw)
    assert tree(tmp_path / "results") == []


def test_val_rule_run_is_derived_from_its_last_epoch_twin_without_training(tmp_path, monkeypatch):
    import ballot_lib.experiment as experiment_module

    fresh = run_method(make_experiment(tmp_path / "fresh", epochs=4), "lth", 0, density=0.3, select="val_rule")
    exp = make_experiment(tmp_path / "results", epochs=4)
    last = run_method(exp, "lth", 0, density=0.3)

    def fail(*args, **kwargs):
        raise AssertionError("a derived run must not train")

    monkeypatch.setattr(experiment_module, "train", fail)
    derived = run_method(exp, "lth", 0, density=0.3, select="val_rule")
    assert derived.id == fresh.id and derived.metrics == fresh.metrics
    assert derived.summary["derived_from"] == last.id
    assert derived.summary["selected_epoch"] == fresh.summary["selected_epoch"]
    assert derived.summary["compute_epochs"] == fresh.summary["compute_epochs"]
    assert all(bool((derived.mask[k] == fresh.mask[k]).all()) for k in fresh.mask)


# ------------------------------------------------------------------------------------------ dynamic-mask methods
# SafeCompress and FairScratch change their mask while they train: a val-rule run keeps the masks of the epochs the
# rule can still select (CandidateMasks) and stores the selected epoch's mask with that epoch's metrics.

#: Tiny settings (6 epochs) in which the val rule picks an epoch before the last, whose mask differs from the final one.
DYNAMIC = {"safecompress": {"density": 0.2, "stop_fraction": 1.0, "select_eps": 1.0},
           "fairscratch": {"density": 0.5, "select_eps": 0.1}}


def _last_kwargs(method):
    return {k: v for k, v in DYNAMIC[method].items() if k != "select_eps"}


def _counts(mask):
    return {n: int(m.sum()) for n, m in mask.items()}


@pytest.mark.parametrize("method", sorted(DYNAMIC))
def test_dynamic_mask_val_rule_stores_the_mask_metrics_and_density_of_the_selected_epoch(tmp_path, monkeypatch,
                                                                                         method):
    import torch

    from ballot_lib.pruning import kept_count

    eps = DYNAMIC[method]["select_eps"]
    exp = make_experiment(tmp_path / "results", epochs=6)
    last = run_method(exp, method, 0, **_last_kwargs(method))
    sel = run_method(exp, method, 0, select="val_rule", **DYNAMIC[method])
    assert sel.id != last.id and "derived_from" not in sel.summary  # it trained itself
    history = sel.history()
    assert history == last.history()  # keeping the candidate masks does not change the training
    k = history[select_checkpoint(history, eps)]["epoch"]
    assert sel.summary["selected_epoch"] == k < len(history), "setup: the rule must pick an earlier epoch"
    assert any(not torch.equal(sel.mask[n], last.mask[n]) for n in sel.mask), "setup: the mask must have moved"
    for split in ("val", "test"):  # the metrics are the selected epoch's
        assert sel.metrics[split] == {m[len(split) + 1:]: v for m, v in history[k - 1].items()
                                      if m.startswith(split + "_")}
    # Oracle: the same training stopped after epoch k (end_epoch: same schedule, data order and topology updates)
    # ends with the mask the method had at epoch k, and with epoch k's metrics.
    cut = make_experiment(tmp_path / "cut", epochs=6)
    real = cut.train_net
    monkeypatch.setattr(cut, "train_net", lambda *a, **kw: real(*a, end_epoch=k, **kw))
    stopped = run_method(cut, method, 0, **_last_kwargs(method))
    assert stopped.history() == history[:k]
    assert sel.mask.keys() == stopped.mask.keys() and all(torch.equal(sel.mask[n], stopped.mask[n]) for n in sel.mask)
    assert sel.metrics == stopped.metrics
    # The target density: the selected epoch's mask keeps what the final one keeps, per layer.
    d = DYNAMIC[method]["density"]
    assert _counts(sel.mask) == _counts(last.mask) and sel.summary["density"] == last.summary["density"]
    if method == "fairscratch":
        assert _counts(sel.mask) == {n: kept_count(d, m.numel()) for n, m in sel.mask.items()}
    else:
        assert sum(_counts(sel.mask).values()) == round(d * sum(m.numel() for m in sel.mask.values()))
    assert 1 <= sel.summary["candidate_masks_max"] <= len(history)


@pytest.mark.parametrize("method", sorted(DYNAMIC))
def test_dynamic_mask_val_rule_killed_mid_training_resumes_to_the_same_stored_run(tmp_path, monkeypatch, method):
    from ballot_lib.results import safe_torch_load

    kw = {**DYNAMIC[method], "select": "val_rule"}
    whole = run_method(make_experiment(tmp_path / "whole", epochs=6), method, 0, **kw)
    exp = make_experiment(tmp_path / "cut", epochs=6)
    real, seen = exp.train_net, []

    def train_net(*args, **kwargs):
        def watch(net, epoch, row):  # runs after the candidate store kept epoch 4's mask, before its checkpoint
            seen.append(epoch)
            if len(seen) == 4:
                raise KeyboardInterrupt  # killed: epoch 4 is lost, the checkpoint holds epochs 1-3
        return real(*args, **{**kwargs, "hooks": [*kwargs.get("hooks", ()), watch]})

    monkeypatch.setattr(exp, "train_net", train_net)
    with pytest.raises(KeyboardInterrupt):
        run_method(exp, method, 0, **kw)
    run = exp.store.run(exp.run_config(method, config_dict(make_config(method, **kw)), 0))
    ckpt = safe_torch_load(run.file("checkpoint.pt"))
    assert ckpt["epoch"] == 3 and ckpt["extras"]["val_rule_masks"]["held"]  # the candidates travel in it
    res = run_method(exp, method, 0, **kw)
    assert seen == [1, 2, 3, 4, 4, 5, 6]  # resumed after epoch 3, not retrained
    assert res.id == whole.id and stored_run_bytes(res.run.path) == stored_run_bytes(whole.run.path)


def test_dynamic_mask_val_rule_runs_train_themselves_and_sweep_cost_counts_them(tmp_path):
    """Their select="last" twin does not store the candidate masks: no derivation, and ``sweep cost`` counts the
    val-rule run's own training. The other way round, a last-epoch run planned after its val-rule twin costs
    nothing, and is stored as planned (derived, nothing trained)."""
    from ballot_lib import cost, plans
    from ballot_lib.experiment import experiment_from
    from ballot_lib.methods import Variant, run_grid
    from ballot_lib.methods.base import last_epoch_twin
    from ballot_lib.results import load_results

    results = tmp_path / "results"
    params = {"dataset": "digits", "model": "mlp", "epochs": 2, "batch_size": 128, "lr": 0.1, "device": "cpu",
              "results_dir": str(results)}
    exp = experiment_from(params)
    labels = {"SafeCompress": "safecompress", "FairScratch": "fairscratch"}
    for method in labels.values():
        assert last_epoch_twin(make_config(method, density=0.3, select="val_rule")) is None
    run_grid(exp, [Variant(k, m, {"select": "last"}) for k, m in labels.items()], [0.3], [0], progress=False)
    grid = plans.Grid("g", params, [Variant(k + " +val", m, {"select": "val_rule"}) for k, m in labels.items()],
                      [0.3], [0])
    planned = {r.variant: r for r in cost.plan_grid(grid, results_dir=str(results))}
    assert {v: (r.derived_from, r.epochs, r.complete) for v, r in planned.items()} == {
        "SafeCompress +val": ("", 2.0, False), "FairScratch +val": ("", 2.0, False)}
    run_grid(exp, grid.variants, [0.3], [0], progress=False)
    stored = load_results(results)
    for r in planned.values():
        row = stored[stored["run_id"] == r.run_id].iloc[0]
        assert row["select"] == "val_rule" and row["compute_epochs"] == 2
        assert "derived_from" not in stored or not isinstance(row["derived_from"], str)

    # Val rule first (notebook 03's order for these methods): the last-epoch runs are derived.
    fresh = tmp_path / "fresh"
    both = plans.Grid("g", {**params, "results_dir": str(fresh)}, [
        v for k, m in labels.items() for v in (Variant(k + " +val", m, {"select": "val_rule"}),
                                                Variant(k, m, {"select": "last"}))], [0.3], [0])
    planned = {r.variant: r for r in cost.plan_grid(both, results_dir=str(fresh))}
    assert {v: (bool(r.derived_from), r.epochs) for v, r in planned.items()} == {
        "SafeCompress +val": (False, 2.0), "SafeCompress": (True, 0.0),
        "FairScratch +val": (False, 2.0), "FairScratch": (True, 0.0)}
    run_grid(experiment_from(both.params), both.variants, [0.3], [0], progress=False)
    stored = load_results(fresh)
    for r in planned.values():
        row = stored[stored["run_id"] == r.run_id].iloc[0]
        assert (row["derived_from"] if isinstance(row["derived_from"], str) else "") == r.derived_from


@pytest.mark.parametrize("method,kw", [(m, DYNAMIC[m]) for m in sorted(DYNAMIC)] + [
    ("lth", {"density": 0.3, "select_eps": 0.05}),
    ("lth", {"density": 0.3, "levels": 3, "select_eps": 0.05}),  # per-level files (level<l>.json, level<l>_mask.pt)
    ("ballot", {"density": 0.3, "refined": False, "select_eps": 0.05})])
def test_a_last_epoch_run_is_derived_from_its_val_rule_twin_and_stores_what_its_own_training_stores(
        tmp_path, monkeypatch, method, kw):
    """One training serves both checkpoint rules whichever runs first: a select="last" run whose val-rule twin is
    complete takes the twin's final mask (SafeCompress and FairScratch store it as final_mask.pt; a static-mask
    method's stored mask is the final one) and the history's last epoch. Oracle: the last-epoch run trained alone
    in another store -- every stored file equal, summary equal but for where the training came from."""
    import json

    import ballot_lib.experiment as experiment_module
    from ballot_lib.methods.base import FINAL_MASK_FILE

    last_kw = dict(kw)  # the twin under the other rule has the same options (select_eps too, as notebook 03's)
    alone = run_method(make_experiment(tmp_path / "alone", epochs=6), method, 0, **last_kw)
    exp = make_experiment(tmp_path / "results", epochs=6)
    val = run_method(exp, method, 0, select="val_rule", **kw)
    assert val.run.file(FINAL_MASK_FILE).is_file() == (method in DYNAMIC)

    def fail(*args, **kwargs):
        raise AssertionError("a derived run must not train")

    monkeypatch.setattr(experiment_module, "train", fail)
    derived = run_method(exp, method, 0, **last_kw)
    assert derived.id == alone.id and derived.summary["derived_from"] == val.id
    got, want = stored_run_bytes(derived.run.path), stored_run_bytes(alone.run.path)
    for files in (got, want):  # wall-clock like `seconds`: Ballot's vote time (copied from the twin's training)
        files["summary.json"].pop("vote_seconds", None)
    assert got.pop("summary.json") == {**want.pop("summary.json"), "derived_from": val.id}
    assert got == want  # mask.pt, metrics.json, history.json, config.json (LTH's level files): byte for byte
    if kw.get("levels"):
        assert {"level1.json", "level2_mask.pt"} <= set(got)
    assert FINAL_MASK_FILE not in got
    if method in DYNAMIC:  # setup: the val rule picked an earlier epoch whose mask differs from the final one
        assert val.summary["selected_epoch"] < 6 and (val.run.file("mask.pt").read_bytes()
                                                      != derived.run.file("mask.pt").read_bytes())
    # The stored val-rule run did not change.
    assert json.loads(val.run.file("summary.json").read_text()) == val.summary


def test_a_run_derived_into_the_folder_of_its_interrupted_training_keeps_none_of_that_training(tmp_path, monkeypatch):
    """An LTH run killed in its second level left level-1 files and weights; once its val-rule twin is complete the
    re-run is derived, and its folder holds exactly what the twin's training stores (no level weights, no
    checkpoint)."""
    import ballot_lib.methods.lth as lth_module

    kw = {"density": 0.3, "levels": 3, "select_eps": 0.05}
    alone = run_method(make_experiment(tmp_path / "alone", epochs=4), "lth", 0, **kw)
    exp = make_experiment(tmp_path / "results", epochs=4)
    real, calls = lth_module.train_masked, []

    def killed_in_level_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(lth_module, "train_masked", killed_in_level_2)
    with pytest.raises(KeyboardInterrupt):
        run_method(exp, "lth", 0, **kw)
    monkeypatch.setattr(lth_module, "train_masked", real)
    run = exp.store.run(exp.run_config("lth", config_dict(make_config("lth", **kw)), 0))
    assert run.file("level1_weights.pt").is_file()  # setup: the interrupted training's files
    run_method(exp, "lth", 0, select="val_rule", **kw)
    derived = run_method(exp, "lth", 0, **kw)
    assert derived.summary["derived_from"]
    got, want = stored_run_bytes(derived.run.path), stored_run_bytes(alone.run.path)
    got["summary.json"].pop("derived_from")
    assert got == want


@pytest.mark.parametrize("method", sorted(DYNAMIC))
def test_a_val_rule_run_without_its_final_mask_cannot_serve_its_last_twin(tmp_path, method):
    """A val-rule run stored before final_mask.pt existed holds only the selected epoch's mask: the select="last"
    run trains itself, and ``sweep cost`` plans it so (the rule both use: training_twin)."""
    from ballot_lib.methods.base import FINAL_MASK_FILE, training_twin

    exp = make_experiment(tmp_path / "results", epochs=3)
    val = run_method(exp, method, 0, select="val_rule", **DYNAMIC[method])
    last_cfg = make_config(method, **DYNAMIC[method])
    assert training_twin(exp, method, last_cfg, 0).id == val.id
    val.run.file(FINAL_MASK_FILE).unlink()
    assert training_twin(exp, method, last_cfg, 0) is None
    assert training_twin(exp, method, last_cfg, 0, planned={val.id}) is None  # complete: its files decide
    last = run_method(exp, method, 0, **DYNAMIC[method])
    assert "derived_from" not in last.summary and last.history() == val.history()


#: The method part of the identity of select="last" runs, as the code before the val rule of these methods made it.
OLD_IDENTITIES = [
    ("safecompress", {"density": 0.1}, "e7e06563d7ef"),
    ("safecompress", {"density": 0.3, "budget": 2.0}, "1102c71e9d88"),
    ("fairscratch", {"density": 0.1}, "68597e1e2e10"),
    ("fairscratch", {"density": 0.5, "budget": 2.0, "fairness_weight": 0.0}, "ef31f646f926"),
]


@pytest.mark.parametrize("method,kw,expected", OLD_IDENTITIES)
def test_select_last_runs_of_dynamic_mask_methods_keep_their_ids(method, kw, expected):
    from ballot_lib.results import config_hash

    assert config_hash(config_dict(make_config(method, **kw))) == expected
    assert config_hash(config_dict(make_config(method, select="last", select_eps=0.01, **kw))) == expected


# ------------------------------------------------------------------------------------------ the candidate store


def _epoch_mask(epoch):
    """A hand-made 3×5 mask of 5 kept entries, different for every epoch."""
    import torch

    m = torch.zeros(15, dtype=torch.bool)
    m[[(epoch * 7 + 3 * i) % 15 for i in range(5)]] = True
    return {"layer.weight": m.view(3, 5)}


def test_candidate_masks_keep_only_the_epochs_the_rule_can_still_select_by_hand():
    import torch

    from ballot_lib.methods.base import CandidateMasks

    # eps = 1/8 and binary fractions: every comparison is exact.
    rows = [(0.5, 0.25), (0.75, 0.5), (0.6875, 0.125), (0.65625, 0.25), (0.6875, 0.125), (0.8125, 0.75),
            (0.875, 0.5), (0.5, 0.0)]
    expected = [[1],
                [2],        # best 0.75: epoch 1 (0.5) falls out of reach
                [2, 3],     # within 1/8 of the best, lower MCD
                [2, 3],     # epoch 4: dominated by epoch 3 (more accurate, lower MCD)
                [2, 5],     # a full tie with epoch 3: the later epoch wins, epoch 3 can no longer be selected
                [2, 5, 6],
                [7],        # best 0.875: epoch 5 out of reach; 7 dominates 2 (tie on MCD, more accurate) and 6
                [7]]        # out of reach when it arrives: never kept
    store = CandidateMasks(0.125, lambda: None, counts={"layer.weight": 5})
    history = []
    for epoch, ((acc, mcd), held) in enumerate(zip(rows, expected), start=1):
        store.add(epoch, acc, mcd, _epoch_mask(epoch))
        history.append({"epoch": epoch, "val_acc": acc, "val_mcd": mcd})
        assert store.epochs == held, epoch
    assert store.max_held == 3 and store.nbytes() == 2  # one mask of 15 entries: 2 bytes, bit-packed
    assert history[select_checkpoint(history, 0.125)]["epoch"] == 7
    assert torch.equal(store.mask(7)["layer.weight"], _epoch_mask(7)["layer.weight"])
    with pytest.raises(KeyError, match="not among the held"):
        store.mask(2)


def test_candidate_masks_hold_no_more_than_the_candidates_and_always_the_selected_epoch():
    import random

    from ballot_lib.methods.base import CandidateMasks

    rng = random.Random(0)
    for trial in range(300):
        eps = rng.choice([0.0, 1 / 16, 1 / 8, 1 / 4])
        store, history = CandidateMasks(eps, lambda: None), []
        for epoch in range(1, rng.randint(1, 25) + 1):
            acc, mcd = rng.randint(0, 16) / 16, rng.randint(0, 4) / 8  # coarse: many ties
            store.add(epoch, acc, mcd, _epoch_mask(epoch))
            history.append({"epoch": epoch, "val_acc": acc, "val_mcd": mcd})
            best = max(r["val_acc"] for r in history)
            candidates = {r["epoch"] for r in history if r["val_acc"] >= best - eps}
            assert set(store.epochs) <= candidates, (trial, epoch)
            chosen = history[select_checkpoint(history, eps)]["epoch"]  # if training stopped here
            assert chosen in store.epochs, (trial, epoch)
            assert store.mask(chosen)["layer.weight"].tolist() == _epoch_mask(chosen)["layer.weight"].tolist()


def test_candidate_masks_state_survives_a_weights_only_checkpoint_and_checks_the_density(tmp_path):
    import torch

    from ballot_lib.methods.base import CandidateMasks
    from ballot_lib.results import safe_torch_load

    rows = [(0.5, 0.25), (0.625, 0.5), (0.5625, 0.125), (0.625, 0.25)]
    a = CandidateMasks(0.125, lambda: None, counts={"layer.weight": 5})
    for epoch, (acc, mcd) in enumerate(rows[:2], start=1):
        a.add(epoch, acc, mcd, _epoch_mask(epoch))
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b = CandidateMasks(0.125, lambda: None, counts={"layer.weight": 5})
    b.load_state_dict(safe_torch_load(tmp_path / "state.pt"))
    for epoch, (acc, mcd) in enumerate(rows[2:], start=3):
        a.add(epoch, acc, mcd, _epoch_mask(epoch))
        b.add(epoch, acc, mcd, lambda: _epoch_mask(epoch))  # a callable: asked only for an epoch that is kept
    assert a.epochs == b.epochs == [3, 4] and a.max_held == b.max_held == 2
    assert all(torch.equal(a.mask(e)["layer.weight"], b.mask(e)["layer.weight"]) for e in (3, 4))
    with pytest.raises(ValueError, match="select_eps"):
        CandidateMasks(0.25, lambda: None).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="holds no candidate masks"):
        CandidateMasks(0.125, lambda: None).load_state_dict(None)
    denser = {"layer.weight": torch.ones(3, 5, dtype=torch.bool)}
    with pytest.raises(RuntimeError, match="another density cannot be selected"):
        a.add(5, 0.875, 0.0, denser)


def test_every_run_records_where_it_trained_and_a_derived_run_where_its_twin_did(tmp_path, monkeypatch):
    """summary.json's `environment` (device, torch, CPU threads, code version): a store shared between machines
    says which trained each run; a derived run keeps its twin's (its training ran there), or null for a twin stored
    before environments were recorded."""
    import json
    import shutil

    import torch

    exp = make_experiment(tmp_path / "results", epochs=2)
    last = run_method(exp, "mp", 0, density=0.3)
    env = last.summary["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    assert env["cpu_threads"] == torch.get_num_threads() and env["code"].startswith("ballot_lib ")
    assert exp.dense(0).summary["environment"] == env
    monkeypatch.setattr(torch, "get_num_threads", lambda: 99)  # the derivation runs "elsewhere"
    derived = run_method(exp, "mp", 0, density=0.3, select="val_rule")
    assert derived.summary["derived_from"] == last.id and derived.summary["environment"] == env
    # A twin without the record: the derived run says it does not know.
    shutil.rmtree(derived.run.path)
    summary = json.loads(last.run.file("summary.json").read_text())
    del summary["environment"]
    last.run.file("summary.json").write_text(json.dumps(summary))
    derived = run_method(exp, "mp", 0, density=0.3, select="val_rule")
    assert derived.summary["derived_from"] == last.id and derived.summary["environment"] is None

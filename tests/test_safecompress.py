"""SafeCompress adapted to fairness: prune/regrow by hand, exact density after every topology update, the fairness
test's visible choice, resumption, validation, and the stored run."""
from __future__ import annotations

import math

import pytest
import torch

from ballot_lib import pruning as P
from ballot_lib.methods import make_config, run_method
from ballot_lib.methods.safecompress import (SafeCompressConfig, SafeCompressHook, prune_rate_at, prune_smallest,
                                             regrow)
from ballot_lib.results import load_results
from ballot_lib.training import train

from conftest import make_experiment


def test_prune_smallest_by_hand():
    w = {"a": torch.tensor([[0.1, -0.9, 0.3, 0.0], [0.5, -0.2, 0.8, 0.05]])}
    m = {"a": torch.tensor([[True, True, True, False], [True, True, True, False]])}  # 6 active
    kept, counts = prune_smallest(w, m, 0.5)  # drop round(3.0) = 3 smallest active: 0.1, -0.2, 0.3
    assert counts == {"a": 3}
    assert kept["a"].tolist() == [[False, True, False, False], [True, False, True, False]]


def test_regrow_fills_only_inactive_entries_by_score():
    m = {"a": torch.tensor([True, False, False, True, False])}
    s = {"a": torch.tensor([9.0, 1.0, 3.0, 9.0, 2.0])}  # active entries' scores are ignored
    assert regrow(m, {"a": 2}, s)["a"].tolist() == [True, False, True, True, True]


def test_prune_rate_decays_by_cosine_from_the_initial_rate_to_zero():
    cfg = SafeCompressConfig(density=0.5)
    assert prune_rate_at(cfg, 0, 100) == 0.5
    assert math.isclose(prune_rate_at(cfg, 50, 100), 0.25)
    assert prune_rate_at(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)


def _hooked_training(exp, cfg, seed=0, checkpoint=None, end_epoch=None, probe=None):
    theta0 = exp.dense_weights(seed, 0)
    net = exp.model_from(theta0)
    mask = P.make_mask("erk_random", net, cfg.density, seed=1)
    hook = SafeCompressHook(exp, cfg, seed, net)
    hooks = [hook] + ([probe] if probe else [])
    res = train(net, exp.bundle, exp.train, seed=seed, mask=mask, device="cpu", progress=False, step_hooks=hooks,
                state={"safecompress": hook}, checkpoint=checkpoint, end_epoch=end_epoch, eval_splits=("val",))
    return net, res, hook, mask


def test_density_is_exact_after_every_prune_regrow_step(tmp_path):
    exp = make_experiment(tmp_path / "results")
    cfg = make_config("safecompress", density=0.3, update_every=2, stop_fraction=1.0)
    seen = []

    def probe(step, opt, mask):  # runs right after the SafeCompress hook of the same step
        seen.append({n: int(m.sum()) for n, m in mask.items()})

    net, res, hook, start = _hooked_training(exp, cfg, probe=probe)
    per_layer = {n: int(m.sum()) for n, m in start.items()}
    total = sum(m.numel() for m in start.values())
    assert sum(per_layer.values()) == round(0.3 * total)
    assert len(hook.updates) >= 5  # many topology updates happened ...
    assert all(u["moved"] > 0 for u in hook.updates[:3])
    assert all(counts == per_layer for counts in seen)  # ... and every layer's kept count never changed
    assert {n: int(m.sum()) for n, m in res.mask.items()} == per_layer
    assert not torch.equal(torch.cat([m.flatten() for m in res.mask.values()]),
                           torch.cat([m.flatten() for m in start.values()]))  # the topology did move
    params = dict(net.named_parameters())
    assert all(bool((params[n][~res.mask[n]] == 0).all()) for n in res.mask)  # pruned weights are exactly 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_regrown_weights_start_at_zero_with_no_optimizer_state(tmp_path, optimizer):
    """After a topology update, a regrown entry has weight 0 and no state in the optimizer (SGD's momentum,
    Adam's two moments): it does not inherit moments from when it was last active."""
    exp = make_experiment(tmp_path / "results", optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.005)
    cfg = make_config("safecompress", density=0.3, update_every=2, stop_fraction=1.0)
    before, checked = {}, {"grown": 0, "states": set()}

    def pre(step, opt, mask):  # runs before the SafeCompress hook of the same step
        before["mask"] = {n: m.clone().bool() for n, m in mask.items()}

    def post(step, opt, mask):  # runs right after it
        params = dict(net_holder["net"].named_parameters())
        for n, m in mask.items():
            grown = m.bool() & ~before["mask"][n]
            checked["grown"] += int(grown.sum())
            assert bool((params[n].detach()[grown] == 0).all())
            for key, buf in opt.state.get(params[n], {}).items():
                if torch.is_tensor(buf) and buf.shape == m.shape:
                    checked["states"].add(key)
                    assert bool((buf[grown] == 0).all()), f"{key} of regrown entries of {n} is not 0"

    theta0 = exp.dense_weights(0, 0)
    net = exp.model_from(theta0)
    net_holder = {"net": net}
    mask = P.make_mask("erk_random", net, cfg.density, seed=1)
    hook = SafeCompressHook(exp, cfg, 0, net)
    train(net, exp.bundle, exp.train, seed=0, mask=mask, device="cpu", progress=False, step_hooks=[pre, hook, post],
          state={"safecompress": hook}, eval_splits=("val",))
    assert checked["grown"] > 0
    assert checked["states"] == ({"momentum_buffer"} if optimizer == "sgd" else {"exp_avg", "exp_avg_sq"})


def test_fairness_test_keeps_the_best_scored_candidate(tmp_path):
    exp = make_experiment(tmp_path / "results", epochs=3)
    cfg = make_config("safecompress", density=0.5, update_every=5, candidates=["random", "gradient", "random"],
                      fairness_weight=2.0)
    assert cfg.candidates == ("random", "gradient", "random")
    _, _, hook, _ = _hooked_training(exp, cfg)
    assert hook.updates
    for u in hook.updates:
        scores = [c["score"] for c in u["candidates"]]
        assert [c["kind"] for c in u["candidates"]] == ["random", "gradient", "random"]
        assert u["chosen_index"] == scores.index(max(scores))  # ties: the first candidate
        for c in u["candidates"]:
            assert c["score"] == pytest.approx(c["val_acc"] - 2.0 * c["val_mcd"])


def test_interrupted_run_resumes_to_the_same_mask_weights_and_record(tmp_path):
    exp = make_experiment(tmp_path / "results")
    cfg = make_config("safecompress", density=0.3, update_every=3, stop_fraction=1.0)
    net_a, res_a, hook_a, _ = _hooked_training(exp, cfg)
    ckpt = tmp_path / "ckpt.pt"
    _hooked_training(exp, cfg, checkpoint=ckpt, end_epoch=1)
    net_b, res_b, hook_b, _ = _hooked_training(exp, cfg, checkpoint=ckpt)
    assert hook_b.updates == hook_a.updates
    assert all(torch.equal(res_a.mask[n], res_b.mask[n]) for n in res_a.mask)
    assert all(torch.equal(a, b) for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()))


def test_the_mask_kept_for_each_epoch_is_the_one_that_epoch_was_evaluated_with(tmp_path):
    """``current_mask()`` read by an epoch hook (what the val rule's candidate store keeps) is, for every epoch e,
    the mask of the same training stopped after epoch e (the mask its final evaluation used): a topology update at
    an epoch's last step is already in it."""
    exp = make_experiment(tmp_path / "results", epochs=3)
    cfg = make_config("safecompress", density=0.3, stop_fraction=1.0)  # an update at the end of every epoch
    theta0 = exp.dense_weights(0, 0)
    start = P.make_mask("erk_random", exp.model_from(theta0), cfg.density, seed=1)

    def training(end_epoch=None):
        net = exp.model_from(theta0)
        hook = SafeCompressHook(exp, cfg, 0, net)
        seen = {}
        res = train(net, exp.bundle, exp.train, seed=0, mask=start, device="cpu", progress=False, step_hooks=[hook],
                    hooks=[lambda net_, epoch, row: seen.update({epoch: hook.current_mask()})],
                    state={"safecompress": hook}, end_epoch=end_epoch, eval_splits=("val",))
        return res, seen

    _, seen = training()
    assert len(seen) == 3
    for e in (1, 2, 3):
        stopped, _ = training(end_epoch=e)
        assert all(torch.equal(seen[e][n], stopped.mask[n]) for n in start)
    assert any(not torch.equal(seen[1][n], seen[3][n]) for n in start)  # the topology moved between epochs


def test_val_rule_is_offered_and_trains_itself():
    cfg = make_config("safecompress", density=0.1, select="val_rule")
    assert cfg.select == "val_rule" and cfg.last_epoch_twin() is None
    assert make_config("safecompress", density=0.1).last_epoch_twin() is None


@pytest.mark.parametrize("kwargs, match", [
    ({"candidates": ("bogus",)}, "valid choices: random, gradient"),
    ({"candidates": ()}, "at least one"),
    ({"prune_rate": 1.0}, "prune_rate"),
    ({"update_every": -1}, "update_every"),
    ({"gap": "worst"}, "valid choices"),
    ({"fairness_weight": "1"}, "fairness_weight"),
    ({"init_scale": "he"}, "valid choices: sparse, none"),
])
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_config("safecompress", density=0.1, **kwargs)


def test_group_gap_needs_a_sensitive_attribute(tmp_path):
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ValueError, match="sensitive attribute"):
        run_method(exp, "safecompress", 0, density=0.1, gap="dp_gap")


def test_run_method_stores_exact_density_compute_and_choices_then_loads(tmp_path, monkeypatch):
    exp = make_experiment(tmp_path / "results")
    res = run_method(exp, "safecompress", 0, density=0.1)
    n = sum(m.numel() for m in res.mask.values())
    assert sum(int(m.sum()) for m in res.mask.values()) == round(0.1 * n)
    assert res.summary["compute_epochs"] == exp.train.epochs
    assert res.summary["gap_metric"] == "mcd"
    assert res.summary["topology_updates"] == len(res.summary["updates"]) > 0
    assert res.summary["chosen_random"] + res.summary["chosen_gradient"] == res.summary["topology_updates"]
    import ballot_lib.methods.base as base

    monkeypatch.setattr(base, "store_output", lambda *a, **k: pytest.fail("trained again"))
    assert run_method(exp, "safecompress", 0, density=0.1).id == res.id
    df = load_results(exp.store.root)
    assert "safecompress" in set(df["method"])


def test_safecompress_and_fairscratch_alone_train_no_dense_run(tmp_path):
    """Both need only θ0: made without training, equal to the θ0 the dense run stores later, global RNG untouched."""
    from conftest import make_experiment

    from ballot_lib.methods import run_method

    exp = make_experiment(tmp_path / "results")
    before = torch.get_rng_state()
    theta0 = exp.initial_weights(3)
    assert torch.equal(torch.get_rng_state(), before)
    for method in ("safecompress", "fairscratch"):
        run_method(exp, method, 3, density=0.2)
    dense_dir = exp.store.run(exp.run_config("dense", {}, 3)).path
    assert not dense_dir.exists(), "no dense run was trained"
    exp.dense(3)
    stored = exp.load_weights(exp.store.run(exp.run_config("dense", {}, 3)), "theta0.pt")
    assert stored.keys() == theta0.keys() and all(torch.equal(stored[k], theta0[k]) for k in stored)
    assert all(torch.equal(exp.initial_weights(3)[k], theta0[k]) for k in theta0)


@pytest.mark.parametrize("method", ["safecompress", "fairscratch"])
def test_budget_trains_a_longer_schedule_and_declares_it(tmp_path, method):
    """budget=2 trains 2 × the recipe's epochs from θ0 (compute-matched with the methods that start from a trained
    dense network) and declares it; budget=1 leaves the run's identity as it was; 2 and 2.0 are one run."""
    from ballot_lib.methods.base import budget_recipe, compute_epochs, config_dict
    from ballot_lib.training import TrainConfig

    exp = make_experiment(tmp_path / "results")  # 2 epochs
    plain = make_config(method, density=0.5)
    assert "budget" not in config_dict(plain)  # hash-neutral default: earlier runs keep their ids
    assert make_config(method, density=0.5, budget=2) == make_config(method, density=0.5, budget=2.0)
    assert compute_epochs(exp, method, density=0.5, budget=2.0) == 4.0
    res = run_method(exp, method, 0, density=0.5, budget=2.0)
    assert len(res.history()) == 4 and res.summary["compute_epochs"] == 4.0 and res.summary["train_epochs"] == 4
    one = run_method(exp, method, 0, density=0.5)
    assert len(one.history()) == 2 and one.id != res.id
    with pytest.raises(ValueError, match="budget"):
        run_method(exp, method, 0, density=0.5, budget=0)
    r = budget_recipe(TrainConfig(epochs=10, schedule="multistep", milestones=(5, 8)), 2.0)
    assert r.epochs == 20 and r.milestones == (10, 16)

"""Methods on a tiny experiment (2 epochs): exact densities, a shared θ0, matched controls, up-front validation."""
from __future__ import annotations

import math

import pytest
import torch

import ballot_lib.experiment as experiment_module
from ballot_lib import pruning as P
from ballot_lib.methods import METHODS, make_config, run_method

from conftest import make_experiment, stored_run_bytes, tree

SEED = 0
DENSITY = 0.2

#: name -> (method, options); every variant the tests below inspect.
VARIANTS = {
    "dense": ("dense", {}),
    "mp_full": ("mp", {"density": DENSITY}),
    "mp_lr_rewind": ("mp", {"density": DENSITY, "finetune": "lr_rewind", "rewind_epoch": 1}),
    "mp_short": ("mp", {"density": DENSITY, "finetune": "short"}),
    "mp_layer": ("mp", {"density": DENSITY, "scope": "layer", "finetune": "short"}),
    "lth_1": ("lth", {"density": DENSITY, "levels": 1, "rewind_epoch": 1}),
    "lth_2": ("lth", {"density": DENSITY, "levels": 2, "rewind_epoch": 1}),
    "random_lth": ("random", {"density": DENSITY, "like": "lth"}),
    "random_uniform": ("random", {"density": DENSITY, "like": "uniform"}),
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Run every variant once, recording for each call of the training loop its start weights, mask and output."""
    exp = make_experiment(tmp_path_factory.mktemp("methods") / "results")
    real_train = experiment_module.train
    calls: dict[str, list[dict]] = {}
    current = {"name": None}

    def spy(net, bundle, cfg, **kwargs):
        start = {k: v.detach().clone() for k, v in net.state_dict().items()}
        res = real_train(net, bundle, cfg, **kwargs)
        calls.setdefault(current["name"], []).append({
            "start": start, "mask": kwargs.get("mask"), "start_epoch": kwargs.get("start_epoch", 0),
            "cfg": cfg, "end": {k: v.detach().clone() for k, v in net.state_dict().items()},
        })
        return res

    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment_module, "train", spy)
        for name, (method, kw) in VARIANTS.items():
            current["name"] = name
            results[name] = run_method(exp, method, SEED, **kw)
    return exp, results, calls


def dense_file(exp, name: str) -> dict[str, torch.Tensor]:
    return exp.dense(SEED).run.load_tensor(name)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def total_prunable(exp) -> int:
    return sum(w.numel() for w in P.prunable_weights(exp.new_model()).values())


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "dense"])
def test_every_sparse_method_returns_a_mask_of_the_exact_density(ran, name):
    exp, results, _ = ran
    res = results[name]
    net = exp.new_model()
    P.check_mask_matches(net, res.mask)
    N = total_prunable(exp)
    kept = sum(int(m.sum()) for m in res.mask.values())
    if VARIANTS[name][1].get("scope") == "layer":
        for n, w in P.prunable_weights(net).items():
            assert int(res.mask[n].sum()) == round(DENSITY * w.numel()), n
    else:
        assert kept == round(DENSITY * N)
    assert res.summary["density"] == pytest.approx(kept / N, abs=1e-15)
    # The stored mask is the returned one.
    stored = P.load_mask(res.run.file("mask.pt"))
    assert same(stored, res.mask)


def test_dense_run_has_no_mask_and_density_one(ran):
    _, results, _ = ran
    assert results["dense"].mask is None and results["dense"].summary["density"] == 1.0


def test_theta0_is_fixed_by_the_seed(ran, tmp_path):
    exp, _, _ = ran
    theta0 = dense_file(exp, "theta0.pt")
    torch.manual_seed(SEED)
    assert same(theta0, exp.new_model().state_dict())
    # A second experiment in another folder draws the same θ0 for the same seed, another one for another seed.
    other = make_experiment(tmp_path / "other")
    torch.manual_seed(SEED + 1)
    assert not same(theta0, other.new_model().state_dict())


def test_every_method_starts_from_the_dense_runs_weights(ran):
    exp, _, calls = ran
    theta0, theta1, thetaT = (dense_file(exp, f) for f in ("theta0.pt", "theta_e1.pt", "thetaT.pt"))
    assert not same(theta0, theta1) and not same(theta1, thetaT)
    expected = {
        "dense": (theta0, 0),
        "mp_full": (thetaT, 0),
        "mp_lr_rewind": (thetaT, 1),
        "mp_short": (thetaT, 0),
        "mp_layer": (thetaT, 0),
        "lth_1": (theta1, 1),
        "random_lth": (theta0, 0),
        "random_uniform": (theta0, 0),
    }
    for name, (start, start_epoch) in expected.items():
        (call,) = calls[name]
        assert same(call["start"], start), name
        assert call["start_epoch"] == start_epoch, name
    # Two IMP levels: both rewind to θ1.
    assert len(calls["lth_2"]) == 2
    assert all(same(c["start"], theta1) and c["start_epoch"] == 1 for c in calls["lth_2"])
    # The dense run's θT is what its training produced.
    assert same(calls["dense"][0]["end"], thetaT)


def test_pruned_weights_are_zero_after_every_sparse_training(ran):
    _, _, calls = ran
    for name, cs in calls.items():
        for c in cs:
            if c["mask"] is None:
                continue
            for n, m in c["mask"].items():
                assert bool((c["end"][n][~m.bool()] == 0).all()), (name, n)


def test_mp_mask_is_the_magnitude_mask_of_theta_T(ran):
    exp, results, _ = ran
    expected = P.magnitude_mask(exp.model_from(dense_file(exp, "thetaT.pt")), DENSITY)
    assert same(results["mp_full"].mask, expected)
    assert same(results["mp_lr_rewind"].mask, expected) and same(results["mp_short"].mask, expected)


def test_mp_finetune_budgets(ran):
    exp, results, calls = ran
    T = exp.train.epochs
    assert results["mp_full"].summary["train_epochs"] == T
    assert results["mp_lr_rewind"].summary["train_epochs"] == T - 1
    short_cfg = calls["mp_short"][0]["cfg"]
    assert short_cfg.schedule == "constant" and short_cfg.lr == pytest.approx(exp.train.lr / 100)
    assert results["mp_short"].summary["train_epochs"] == short_cfg.epochs == 1


def test_lth_two_levels_prune_iteratively_without_reviving(ran):
    exp, results, calls = ran
    first, second = (c["mask"] for c in calls["lth_2"])
    N = total_prunable(exp)
    assert sum(int(m.sum()) for m in first.values()) == round(math.sqrt(DENSITY) * N)
    assert sum(int(m.sum()) for m in second.values()) == round(DENSITY * N)
    assert all(not bool((second[n] & ~first[n]).any()) for n in first)
    assert same(second, results["lth_2"].mask)
    levels = results["lth_2"].summary["levels"]
    assert [lv["density"] for lv in levels] == pytest.approx([math.sqrt(DENSITY), DENSITY])
    # One-shot LTH prunes θT directly, so its mask equals MP's; two levels differ from it.
    assert same(results["lth_1"].mask, results["mp_full"].mask)


def test_random_like_lth_matches_mp_layer_counts_but_not_its_entries(ran):
    _, results, _ = ran
    ref, rnd = results["mp_full"].mask, results["random_lth"].mask
    assert P.budgets_from_mask(rnd) == P.budgets_from_mask(ref)
    assert P.overlap(ref, rnd) < 0.9
    uni = results["random_uniform"].mask
    assert P.budgets_from_mask(uni) != P.budgets_from_mask(ref)


def test_finished_methods_are_loaded_not_rerun(ran, monkeypatch):
    exp, results, _ = ran

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(experiment_module, "train", no_training)
    for name, (method, kw) in VARIANTS.items():
        again = run_method(exp, method, SEED, **kw)
        assert again.id == results[name].id and again.metrics == results[name].metrics


def test_every_run_folder_is_complete_and_clean(ran):
    exp, results, _ = ran
    ids = {r.id for r in results.values()}
    assert {p.name for p in exp.store.runs_dir.iterdir()} == ids
    for r in results.values():
        names = {p.name for p in r.run.path.iterdir()}
        assert {"config.json", "metrics.json", "summary.json", "history.json"} <= names
        assert not any(n.startswith("checkpoint") or n.endswith(".tmp") for n in names), names


# ------------------------------------------------------------------------------------------ validation up front


BAD_CALLS = [
    ("nope", {}, "valid choices: .*dense, .*lth, mp, random"),
    ("mp", {"density": 0.2, "bogus": 1}, "valid options"),
    ("mp", {"density": 0}, r"\(0, 1\]"),
    ("mp", {"density": 1.5}, r"\(0, 1\]"),
    ("lth", {"density": float("nan")}, "density must be a finite number"),
    ("random", {"density": -0.1}, r"\(0, 1\]"),
    ("mp", {"finetune": "forever"}, "full, lr_rewind, short"),
    ("mp", {"finetune": "lr_rewind", "rewind_epoch": 2}, r"rewind_epoch must be in \[0, 2\)"),
    ("lth", {"rewind_epoch": 5}, r"\[0, 2\)"),
    ("lth", {"levels": 0}, "levels"),
    ("random", {"like": "magnitude"}, "lth, uniform"),
    ("random", {"scope": "local"}, "global, layer"),
    ("dense", {"density": 0.5}, r"method 'dense' keeps every weight: density must be 1.0 .*got 0.5"),
    ("dense", {"density": "1"}, r"method 'dense' keeps every weight"),
]


@pytest.mark.parametrize("method, kw, message", BAD_CALLS, ids=[f"{m}-{sorted(k)}" for m, k, _ in BAD_CALLS])
def test_bad_method_arguments_raise_before_anything_is_written(tmp_path, method, kw, message):
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ValueError, match=message):
        run_method(exp, method, SEED, **kw)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("method, kw, message", BAD_CALLS[:4], ids=["nope", "option", "zero", "big"])
def test_bad_arguments_leave_an_existing_store_untouched(ran, method, kw, message):
    exp, _, _ = ran
    before = tree(exp.store.root)
    with pytest.raises(ValueError, match=message):
        run_method(exp, method, SEED, **kw)
    assert tree(exp.store.root) == before


def test_run_method_takes_the_spec_signature(ran):
    """SPEC §9: ``run_method(exp, name, seed, density=...)`` for every name, by position or by keyword; ``dense``
    takes ``density=1.0`` (one call shape for every method) and is the same run as without it."""
    exp, results, _ = ran
    before = tree(exp.store.root)
    assert run_method(exp, name="dense", seed=SEED, density=1.0).id == results["dense"].id
    assert run_method(exp, name="dense", seed=SEED, density=None).id == results["dense"].id
    assert run_method(exp, name="mp", seed=SEED, density=DENSITY).id == results["mp_full"].id
    assert tree(exp.store.root) == before  # loaded, nothing new written


def test_registry_and_make_config():
    assert METHODS.names() == sorted(METHODS.names()) and {"dense", "mp", "lth", "random"} <= set(METHODS.names())
    cfg = make_config("lth", density=0.5, levels=3)
    assert cfg.density == 0.5 and cfg.levels == 3 and cfg.rewind_epoch == 0
    assert cfg.schedule() == pytest.approx([0.5 ** (1 / 3), 0.5 ** (2 / 3), 0.5])


@pytest.mark.parametrize("stop_at", [2, 3, 4])
def test_lth_interrupted_at_any_level_resumes_to_the_same_run_and_keeps_one_level_of_scaffolding(
        tmp_path, monkeypatch, stop_at):
    import ballot_lib.methods.lth as lth_module

    levels = 4
    whole = make_experiment(tmp_path / "whole")
    ref = run_method(whole, "lth", 0, density=0.2, levels=levels)

    exp = make_experiment(tmp_path / "cut")
    real = lth_module.train_masked
    seen = []

    def probe(exp_, run, *args, **kwargs):
        level = int(kwargs["checkpoint_name"][len("checkpoint_l"):-len(".pt")])
        names = sorted(p.name for p in run.path.iterdir())
        seen.append((level, names))
        # At most the previous level's weights, and no checkpoint of a finished level, while a level trains.
        assert [n for n in names if n.endswith("_weights.pt")] == ([f"level{level - 1}_weights.pt"] if level > 1
                                                                   else []), names
        assert [n for n in names if n.startswith("checkpoint")] in ([], [f"checkpoint_l{level}.pt"]), names
        if level == stop_at and len(seen) == level:  # the first attempt is interrupted when this level starts
            raise KeyboardInterrupt
        return real(exp_, run, *args, **kwargs)

    monkeypatch.setattr(lth_module, "train_masked", probe)
    with pytest.raises(KeyboardInterrupt):
        run_method(exp, "lth", 0, density=0.2, levels=levels)
    res = run_method(exp, "lth", 0, density=0.2, levels=levels)
    # The resumed attempt trained only the levels not finished before.
    assert [lv for lv, _ in seen] == list(range(1, stop_at + 1)) + list(range(stop_at, levels + 1))
    assert res.run.path.name == ref.run.path.name
    assert stored_run_bytes(res.run.path) == stored_run_bytes(ref.run.path)
    names = sorted(p.name for p in res.run.path.iterdir())
    assert not [n for n in names if n.endswith("_weights.pt") or n.startswith("checkpoint")], names
    assert [n for n in names if n.endswith("mask.pt")] == [f"level{lv}_mask.pt" for lv in range(1, levels)] + [
        "mask.pt"]

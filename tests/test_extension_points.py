"""The library's extension points: per-step hooks of the training loop, the mask-strategy registry, the run
lifecycle with declared compute, and the params -> Experiment helper. Tiny models, answers known by hand."""
from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import nn

from ballot_lib import pruning as P
from ballot_lib.experiment import experiment_from, experiment_params
from ballot_lib.methods import METHODS, run_method
from ballot_lib.methods.base import compute_epochs
from ballot_lib.results import load_results
from ballot_lib.training import TrainConfig, train

from conftest import make_experiment

RECIPE = TrainConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(5, 2)


def _full_mask(net: nn.Linear) -> dict[str, torch.Tensor]:
    return {"weight": torch.ones_like(net.weight, dtype=torch.bool)}


# ------------------------------------------------------------------------------------------ step hooks


def test_step_hook_sees_every_step_with_a_global_index(toy):
    # 48 training samples in batches of 16: 3 steps per epoch, steps 0..5 over 2 epochs.
    seen = []
    train(_linear(), toy, RECIPE, seed=0, device="cpu", eval_splits=(), progress=False,
          step_hooks=[lambda step, opt, mask: seen.append((step, isinstance(opt, torch.optim.SGD), dict(mask)))])
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4, 5]
    assert all(is_sgd for _, is_sgd, _ in seen)
    assert all(m == {} for _, _, m in seen)  # no mask given: the hook gets an empty one


def test_step_hook_prunes_and_regrows_and_train_returns_the_final_mask(toy):
    net = _linear()
    mask = _full_mask(net)
    mask["weight"][1, 4] = False  # pruned from the start: regrown at step 2

    def hook(step, opt, m):
        if step == 2:
            m["weight"][0, 0] = 0.0  # prune
            m["weight"][1, 4] = 1.0  # regrow

    res = train(net, toy, RECIPE, seed=0, mask=mask, device="cpu", eval_splits=(), progress=False,
                step_hooks=[hook])
    expected = _full_mask(net)
    expected["weight"][0, 0] = False
    assert torch.equal(res.mask["weight"], expected["weight"])
    assert res.mask["weight"].dtype == torch.bool
    assert net.weight[0, 0].item() == 0.0  # pruned after step 2 and kept at exactly 0
    assert net.weight[1, 4].item() != 0.0  # regrown at 0, then trained by steps 3..5


def test_train_without_mask_returns_no_mask(toy):
    assert train(_linear(), toy, RECIPE, seed=0, device="cpu", eval_splits=(), progress=False).mask is None


def test_changed_mask_is_checkpointed_and_resumed_exactly(toy, tmp_path):
    def hook(step, opt, m):
        if step == 1:
            m["weight"][0, :2] = 0.0

    # Uninterrupted: 2 epochs with the hook.
    a = _linear()
    ra = train(a, toy, RECIPE, seed=3, mask=_full_mask(a), device="cpu", eval_splits=(), progress=False,
               step_hooks=[hook])
    # Interrupted after epoch 1 (the hook pruned in epoch 1), resumed from the checkpoint with the starting mask:
    # the checkpoint's mask wins, so the resumed run equals the uninterrupted one.
    ckpt = tmp_path / "ckpt.pt"
    b = _linear()
    train(b, toy, RECIPE, seed=3, mask=_full_mask(b), end_epoch=1, checkpoint=ckpt, device="cpu", eval_splits=(),
          progress=False, step_hooks=[hook])
    assert torch.load(ckpt, weights_only=True)["mask"]["weight"][0, :2].tolist() == [False, False]
    c = _linear()
    rc = train(c, toy, RECIPE, seed=3, mask=_full_mask(c), checkpoint=ckpt, device="cpu", eval_splits=(),
               progress=False, step_hooks=[hook])
    assert torch.equal(rc.mask["weight"], ra.mask["weight"])
    assert torch.equal(c.weight, a.weight)


# ------------------------------------------------------------------------------------------ mask strategies

W = {"a": torch.tensor([[0.1, -0.9, 0.3, 0.0], [0.5, -0.2, 0.8, 0.05]]),  # 8 weights
     "b": torch.tensor([[1.0, -0.4], [0.6, 0.7]])}  # 4 weights


def test_every_strategy_is_registered():
    assert set(P.MASK_STRATEGIES.names()) == {"magnitude_global", "magnitude_layer", "random", "random_layer",
                                              "random_like", "erk_random", "ln_structured", "random_structured"}


def test_magnitude_strategies_by_hand():
    # Global at 0.5: the 6 largest |w| of all 12: 1.0, 0.9, 0.8, 0.7, 0.6, 0.5.
    g = P.make_mask("magnitude_global", W, 0.5)
    assert g["a"].tolist() == [[False, True, False, False], [True, False, True, False]]
    assert g["b"].tolist() == [[True, False], [True, True]]
    # Per layer at 0.5: 4 of a (0.9, 0.8, 0.5, 0.3), 2 of b (1.0, 0.7).
    lay = P.make_mask("magnitude_layer", W, 0.5)
    assert lay["a"].tolist() == [[False, True, True, False], [True, False, True, False]]
    assert lay["b"].tolist() == [[True, False], [False, True]]
    # current: entries already pruned stay pruned (iterative pruning).
    cur = P.make_mask("magnitude_global", W, 0.25, current=g)
    assert cur["b"].tolist() == [[True, False], [False, False]] and cur["a"][0, 1]


@pytest.mark.parametrize("name", ["random", "random_layer", "erk_random"])
def test_random_strategies_keep_exact_counts_and_depend_on_the_seed(name):
    m0 = P.make_mask(name, W, 0.5, seed=0)
    assert sum(int(t.sum()) for t in m0.values()) == 6
    if name == "random_layer":
        assert [int(t.sum()) for t in m0.values()] == [4, 2]
    assert any(not torch.equal(m0[n], P.make_mask(name, W, 0.5, seed=s)[n]) for s in range(1, 6) for n in W)


def test_random_like_copies_per_layer_counts():
    like = {"a": torch.zeros(2, 4, dtype=torch.bool), "b": torch.ones(2, 2, dtype=torch.bool)}
    m = P.make_mask("random_like", W, 0.5, like=like, seed=1)
    assert int(m["a"].sum()) == 0 and int(m["b"].sum()) == 4
    with pytest.raises(ValueError, match="needs a reference mask"):
        P.make_mask("random_like", W, 0.5)


def test_erk_random_gives_small_layers_higher_density():
    weights = {"big": torch.zeros(100, 100), "small": torch.zeros(10, 100)}
    m = P.make_mask("erk_random", weights, 0.1, seed=0)
    assert sum(int(t.sum()) for t in m.values()) == round(0.1 * 11_000)
    assert m["small"].float().mean() > m["big"].float().mean()


def test_structured_strategies_remove_rows_and_keep_the_classifier():
    m = P.make_mask("ln_structured", W, 0.5, n=1)
    assert m["a"].tolist() == [[False] * 4, [True] * 4]  # row 1 has the larger L1 norm (1.55 vs 1.3)
    assert bool(m["b"].all())
    r = P.make_mask("random_structured", W, 0.5, seed=0)
    assert int(r["a"].all(dim=1).sum()) == 1 and bool(r["b"].all())


def test_unknown_strategy_and_misuse_are_rejected():
    with pytest.raises(ValueError, match="valid choices: .*erk_random"):
        P.make_mask("lottery", W, 0.5)
    with pytest.raises(ValueError, match="does not take current"):
        P.make_mask("random", W, 0.5, current=P.make_mask("random", W, 0.5))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        P.make_mask("magnitude_global", W, 0.0)


def test_top_indices_is_lexicographic_with_ties_to_the_lower_index():
    votes = torch.tensor([2, 3, 3, 1, 3])
    total = torch.tensor([0.0, 0.5, 0.5, 9.0, 0.7])
    assert P.top_indices([votes, total], 3).tolist() == [4, 1, 2]
    assert P.top_indices([total], 2).tolist() == [3, 4]
    assert P.topk_mask_flat(torch.tensor([1.0, 1.0, 0.0]), 1).tolist() == [True, False, False]


# ------------------------------------------------------------------------------------------ run lifecycle, compute


def test_every_method_declares_its_compute(tmp_path):
    exp = make_experiment(tmp_path / "results")
    T = exp.train.epochs
    assert compute_epochs(exp, "dense") == T
    assert compute_epochs(exp, "mp", density=0.5) == 2 * T
    assert compute_epochs(exp, "mp", density=0.5, finetune="short", finetune_epochs=1) == T + 1
    assert compute_epochs(exp, "lth", density=0.5, levels=3, rewind_epoch=1) == T + 3 * (T - 1)
    assert compute_epochs(exp, "random", density=0.5) == 2 * T
    assert compute_epochs(exp, "ballot", density=0.5) == 2 * T
    for name in METHODS.names():
        kwargs = {} if name == "dense" else {"density": 0.5}
        assert compute_epochs(exp, name, **kwargs) >= T


def test_run_method_stores_compute_and_loads_a_finished_run(tmp_path, monkeypatch):
    exp = make_experiment(tmp_path / "results")
    first = run_method(exp, "random", 0, density=0.5)
    assert first.summary["compute_epochs"] == compute_epochs(exp, "random", density=0.5)
    assert first.summary["density"] == 0.5
    # A second call loads the stored run: nothing is trained or stored again.
    import ballot_lib.methods.base as base

    def boom(*args, **kwargs):
        raise AssertionError("the finished run was trained again")

    monkeypatch.setattr(base, "store_output", boom)
    again = run_method(exp, "random", 0, density=0.5)
    assert again.id == first.id
    assert all(torch.equal(again.mask[n], first.mask[n]) for n in first.mask)
    df = load_results(exp.store.root)
    assert set(df["compute_epochs"]) == {exp.train.epochs, 2 * exp.train.epochs}  # dense and random


# ------------------------------------------------------------------------------------------ params -> Experiment


def test_experiment_from_picks_the_experiment_parameters(tmp_path):
    params = {"dataset": "digits", "model": "mlp", "epochs": 3, "batch_size": 16, "seeds": [0, 1],
              "densities": [0.1], "results_dir": str(tmp_path), "device": "cpu"}
    exp = experiment_from(params, lr=0.2)
    assert (exp.data.name, exp.train.epochs, exp.train.batch_size, exp.train.lr) == ("digits", 3, 16, 0.2)
    assert "seeds" not in experiment_params() and "dataset" in experiment_params()
    with pytest.raises(ValueError, match="not experiment parameters"):
        experiment_from(params, seeds=[2])
    with pytest.raises(Exception, match="epochs"):
        experiment_from({**params, "epochs": "3"})
    # A misspelt experiment parameter in a plain dict was ignored (the default 30 epochs trained); a notebook's
    # namespace (with __name__) and its lists of a parameter ("datasets", "models") are left alone.
    plain = {k: v for k, v in params.items() if k != "epochs"}
    with pytest.raises(ValueError, match="unknown parameter 'epoch': did you mean 'epochs'"):
        experiment_from({**plain, "epoch": 3})
    with pytest.raises(ValueError, match="unknown parameter 'weight_decy': did you mean 'weight_decay'"):
        experiment_from({**params, "weight_decy": 0.1})
    assert experiment_from({**params, "epoch": 3}).train.epochs == 3  # the right name is there too
    assert experiment_from({**plain, "epoch": 3, "__name__": "__main__"}).train.epochs == 30
    assert experiment_from({**plain, "datasets": ["digits"], "models": ["mlp"]}).data.name == "digits"


# ------------------------------------------------------------------------------------------ models on tabular data


def test_a_registered_flat_input_model_is_paired_with_tabular_data(monkeypatch):
    """Notebook 03's settings and their plan share one rule (``models.takes_input``): image models are skipped on
    tabular data, and a model a user registers for feature vectors (named in ``FLAT_INPUT_MODELS``) is kept."""
    from ballot_lib import models as M
    from ballot_lib.comparison import settings_for
    from ballot_lib.plans import setting_params

    monkeypatch.setattr(M.MODELS, "_items", dict(M.MODELS._items))  # registered for this test only
    monkeypatch.setattr(M, "FLAT_INPUT_MODELS", set(M.FLAT_INPUT_MODELS))

    @M.MODELS.register("logreg")
    def build_logreg(input_shape, num_classes, cfg):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), num_classes))

    params = {"epochs": 1, "batch_size": 32, "results_dir": "unused", "progress": False}
    pairs = lambda: [(d, m) for d, m, _ in settings_for(["digits", "adult"], ["cnn", "logreg"], params)]  # noqa
    planned = lambda: [(d, m) for d, m, _ in setting_params({**params, "datasets": ["digits", "adult"],  # noqa
                                                             "models": ["cnn", "logreg"]})]
    # not declared: treated as an image model, skipped on adult (tabular) by both
    assert pairs() == planned() == [("digits", "cnn"), ("digits", "logreg")]
    M.FLAT_INPUT_MODELS.add("logreg")
    assert pairs() == planned() == [("digits", "cnn"), ("digits", "logreg"), ("adult", "logreg")]
    assert M.takes_input("mlp", image=False) and not M.takes_input("cnn", image=False) and M.takes_input("cnn", True)


# ------------------------------------------------------------------------------------------ a new method's
# mistakes are errors before anything is stored (an extension review found them stored as complete runs that
# then broke load_results for the whole store, or failing only after training)

def _register_probe(monkeypatch, name, returns, compute=lambda exp, cfg: 1.0, **kw):
    from dataclasses import dataclass

    from ballot_lib.methods import base as B

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))  # registered for this test only

    @dataclass(frozen=True)
    class ProbeConfig(B.SparseConfig):
        pass

    @B.register(name, ProbeConfig, compute=compute, **kw)
    def run_probe(exp, cfg, seed, run):
        res = exp.train_net(exp.model_from(exp.dense_weights(seed, 0)), run, seed, desc="probe")
        return returns(exp, res)

    return ProbeConfig


def _good_mask(exp, density=0.5):
    """A mask at ``density`` (the probes' runs ask for 0.5): each tensor's first round(density × n) entries."""
    out = {}
    for n, s in exp.param_shapes(prunable=True).items():
        m = torch.zeros(s, dtype=torch.bool)
        m.view(-1)[:round(density * m.numel())] = True
        out[n] = m
    return out


@pytest.mark.parametrize("returns,message", [
    (lambda exp, res: None, "must return a MethodOutput"),
    (lambda exp, res: _out(res, None), "returned no mask although it prunes"),
    (lambda exp, res: _out(res, dict(list(_good_mask(exp).items())[:1])), "does not fit the model"),
    (lambda exp, res: _out(res, {n: torch.full(m.shape, 0.25) for n, m in _good_mask(exp).items()}),
     "must hold only 0/1"),
    (lambda exp, res: _out(res, _good_mask(exp), summary={"density": 0.5}), "sets \\['density'\\], which the store"),
    # a mask at another density than the run's (an extension review stored all-ones, 0.5 and all-zeros masks as
    # density-0.2 runs, compared with the other methods at 0.2)
    (lambda exp, res: _out(res, _good_mask(exp, 1.0)), r"keeps .* \(density 1\), but the run is for density=0.5"),
    (lambda exp, res: _out(res, _good_mask(exp, 0.2)), r"but the run is for density=0.5"),
    (lambda exp, res: _out(res, _good_mask(exp, 0.0)), "keeps none of the .* prunable weights"),
])
def test_a_method_output_is_checked_before_anything_of_it_is_stored(tmp_path, monkeypatch, returns, message):
    _register_probe(monkeypatch, "probe", returns)
    exp = make_experiment(tmp_path / "results")
    with pytest.raises((TypeError, ValueError), match=message):
        run_method(exp, "probe", 0, density=0.5)
    assert len(load_results(exp.store.root)) == 2  # the dense run only (val + test rows): nothing broken stored
    # nothing of the refused training is left (its checkpoint would stop the corrected method's run)
    assert [p.name for p in (tmp_path / "results" / "runs").iterdir()] == [exp.dense(0).run.id]


def test_a_method_corrected_after_a_refused_mask_runs_afresh(tmp_path, monkeypatch):
    """A review found a refused mask's training checkpoint (the mask part of its identity) left in the run folder:
    the corrected method's run then stopped with "checkpoint ... written by a training with other settings"."""
    from ballot_lib.methods.base import MethodOutput

    fraction = {"keep": 1.0}  # the first version keeps every weight for a density-0.5 run

    def returns(exp, res):
        return MethodOutput(res, _good_mask(exp, fraction["keep"]), train_epochs=2)

    from dataclasses import dataclass

    from ballot_lib.methods import base as B

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))

    @dataclass(frozen=True)
    class MaskedProbe(B.SparseConfig):
        pass

    @B.register("masked_probe", MaskedProbe, compute=lambda exp, cfg: 1.0)
    def run_probe(exp, cfg, seed, run):
        mask = _good_mask(exp, fraction["keep"])
        res = exp.train_net(exp.model_from(exp.dense_weights(seed, 0)), run, seed, mask=mask, desc="probe")
        return returns(exp, res)

    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ValueError, match="but the run is for density=0.5"):
        run_method(exp, "masked_probe", 0, density=0.5)
    fraction["keep"] = 0.5  # the method corrected: same configuration, same run id
    res = run_method(exp, "masked_probe", 0, density=0.5)
    assert res.run.complete and res.summary["density"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("select,final_mask,message", [
    ("val_rule", False, "sets VAL_RULE_FINAL_MASK, so a select='val_rule' run must return"),
    ("last", True, "final_mask is for select='val_rule' runs only"),
])
def test_a_final_mask_is_returned_exactly_by_the_val_rule_runs_that_declare_it(tmp_path, monkeypatch, select,
                                                                               final_mask, message):
    """A config with VAL_RULE_FINAL_MASK promises its val-rule runs store their final mask (its last-epoch runs are
    derived from them): a run that breaks the promise, or a last-epoch run that returns one, stores nothing."""
    from ballot_lib.methods.base import MethodOutput

    config = _register_probe(monkeypatch, "probe", lambda exp, res: MethodOutput(
        res, _good_mask(exp), train_epochs=2, final_mask=_good_mask(exp) if final_mask else None))
    monkeypatch.setattr(config, "VAL_RULE_FINAL_MASK", True)
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ValueError, match=message):
        run_method(exp, "probe", 0, density=0.5, select=select)
    assert len(load_results(exp.store.root)) == 2  # the dense run only


def _out(res, mask, summary=None):
    from ballot_lib.methods.base import MethodOutput

    return MethodOutput(res, mask, train_epochs=2, summary=summary or {})


def test_a_compute_that_is_not_a_number_is_refused_before_storing(tmp_path, monkeypatch):
    _register_probe(monkeypatch, "probe", lambda exp, res: _out(res, _good_mask(exp)), compute=lambda e, c: "two")
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(TypeError, match="compute\\(exp, cfg\\) must return a finite number"):
        run_method(exp, "probe", 0, density=0.5)


def test_registration_mistakes_are_errors_at_registration(monkeypatch):
    from dataclasses import dataclass

    from ballot_lib.methods import base as B

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))

    @dataclass(frozen=True)
    class C(B.SparseConfig):
        pass

    with pytest.raises(TypeError, match="compute=... is required"):
        B.register("nocompute", C)
    with pytest.raises(TypeError, match="config must be a dataclass type"):
        B.register("notadataclass", dict, compute=lambda e, c: 1.0)

    @B.register("nodoc", C, compute=lambda e, c: 1.0)
    def f(exp, cfg, seed, run):  # no docstring: it crashed register with an IndexError
        pass

    assert METHODS.get("nodoc").doc == "nodoc"


def test_run_grid_refuses_options_it_would_drop_or_override_and_a_density_keeping_nothing(tmp_path):
    from ballot_lib.checks import ParameterError
    from ballot_lib.methods import Variant, run_grid

    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ParameterError, match="the dense run takes no options"):
        run_grid(exp, [Variant("dense", "dense", {"bogus": 1})], [0.5], [0], progress=False)
    with pytest.raises(ParameterError, match="sets density=0.9, which the grid sets"):
        run_grid(exp, [Variant("MP", "mp", {"density": 0.9})], [0.5], [0], progress=False)
    with pytest.raises(ParameterError, match="keeps round\\(density"):
        run_grid(exp, [Variant("LTH", "lth")], [1e-5], [0], progress=False)
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").iterdir())


def test_a_registered_mask_strategys_output_is_checked(monkeypatch):
    """make_mask passed on whatever a custom strategy returned (a float mask missing a layer)."""
    monkeypatch.setattr(P.MASK_STRATEGIES, "_items", dict(P.MASK_STRATEGIES._items))
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))

    @P.MASK_STRATEGIES.register("half_float")
    def half_float(weights, density, **kw):
        return {n: torch.ones_like(w) for n, w in list(weights.items())[:1]}

    with pytest.raises(ValueError, match="mask strategy 'half_float' returned a mask that does not fit: .*missing"):
        P.make_mask("half_float", net, 0.5)

    @P.MASK_STRATEGIES.register("all_float")
    def all_float(weights, density, **kw):
        return {n: torch.ones_like(w) for n, w in weights.items()}

    with pytest.raises(ValueError, match="dtype torch.float32, not torch.bool"):
        P.make_mask("all_float", net, 0.5)


def test_a_builders_own_prune_ignore_is_kept(monkeypatch):
    from ballot_lib import models as M

    monkeypatch.setattr(M.MODELS, "_items", dict(M.MODELS._items))

    @M.MODELS.register("two_layer_keep_last")
    def build(input_shape, num_classes, cfg):
        net = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 8), nn.ReLU(),
                            nn.Linear(8, num_classes))
        net.prune_ignore = ["3.weight"]
        return net

    net = M.build_model(M.ModelConfig("two_layer_keep_last"), (4,), 2)
    assert M.prunable_names(net) == ["1.weight"]


# ------------------------------------------------------------------------------------------ re-registering, plugins


def test_a_registration_can_be_replaced_or_removed_for_a_cell_run_again(monkeypatch):
    from dataclasses import dataclass

    from ballot_lib.methods import base as B

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))

    @dataclass(frozen=True)
    class C(B.SparseConfig):
        pass

    def first(exp, cfg, seed, run):
        """First."""

    def second(exp, cfg, seed, run):
        """Second."""

    B.register("again", C, compute=lambda e, c: 1.0)(first)
    with pytest.raises(KeyError, match="already registered.*replace=True.*unregister\\('again'\\)"):
        B.register("again", C, compute=lambda e, c: 1.0)(second)
    assert METHODS.get("again").doc == "First."
    B.register("again", C, compute=lambda e, c: 1.0, replace=True)(second)
    assert METHODS.get("again").doc == "Second."
    assert METHODS.unregister("again").doc == "Second." and "again" not in METHODS
    with pytest.raises(ValueError, match="unknown method 'again'; valid choices: .*ballot"):
        METHODS.unregister("again")


def _write_plugin(path, name="plugged"):
    path.write_text(
        "from dataclasses import dataclass\n"
        "from ballot_lib.methods.base import SparseConfig, register\n\n\n"
        "@dataclass(frozen=True)\n"
        "class PluggedConfig(SparseConfig):\n"
        "    pass\n\n\n"
        f"@register({name!r}, PluggedConfig, compute=lambda exp, cfg: 1.0)\n"
        "def plugged(exp, cfg, seed, run):\n"
        "    '''A method defined outside the library.'''\n")
    return path


def test_plugins_listed_in_the_environment_are_registered_in_a_new_process(tmp_path):
    """A method registered in one kernel did not exist in papermill's or sweep's processes: $BALLOT_PLUGINS
    (a .py path or a module name) is imported by every process that imports ballot_lib.methods."""
    import os
    import subprocess
    import sys

    _write_plugin(tmp_path / "by_path.py", "by_path")
    (tmp_path / "pkg_plugin.py").write_text(_write_plugin(tmp_path / "tmp.py", "by_module").read_text())
    env = {**os.environ, "BALLOT_PLUGINS": f"{tmp_path / 'by_path.py'},pkg_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    code = "from ballot_lib.methods import METHODS; print(METHODS.get('by_path').doc, '|', 'by_module' in METHODS)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "A method defined outside the library. | True"


@pytest.mark.parametrize("entry,message", [
    ("/nonexistent/plugin.py", "lists '/nonexistent/plugin.py', which is not a file"),
    ("no_such_plugin_module", "lists 'no_such_plugin_module', which could not be imported: ModuleNotFoundError"),
    ("{broken}", "lists '.*broken.py', which could not be imported: ZeroDivisionError"),
])
def test_a_plugin_that_cannot_be_imported_is_an_error_naming_the_variable(tmp_path, entry, message):
    from ballot_lib.checks import ParameterError
    from ballot_lib.plugins import load_plugins

    (tmp_path / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ParameterError, match=f"\\$BALLOT_PLUGINS {message}"):
        load_plugins(entry.format(broken=tmp_path / "broken.py"))


def test_sweep_validate_loads_the_plugins_as_cost_and_grid_do(tmp_path, monkeypatch, capsys):
    """`validate` passed a missing plugin file that `cost` and `grid` refused: a batch checked with it failed
    on submission."""
    from ballot_lib import sweep

    params = tmp_path / "p.yaml"
    params.write_text("notebook: 01_lth_fairness_failure.ipynb\nparameters: {epochs: 2}\n")
    monkeypatch.setenv("BALLOT_PLUGINS", str(tmp_path / "my_methd.py"))
    for cmd in ("validate", "cost"):
        assert sweep.main([cmd, str(params)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: $BALLOT_PLUGINS lists") and "which is not a file" in err, (cmd, err)


def test_plugin_entries_split_on_commas_and_the_path_separator():
    import os

    from ballot_lib.plugins import load_plugins, plugin_entries

    assert plugin_entries(f" a.b , c{os.pathsep}/x/d.py ,, ") == ["a.b", "c", "/x/d.py"]
    assert plugin_entries("") == [] and load_plugins("") == []


def test_a_method_whose_training_depends_on_select_is_not_derived_from_its_last_twin(tmp_path, monkeypatch):
    """A val_rule run reuses its select="last" twin's training; a config whose training changes with select opts
    out by overriding last_epoch_twin() (it had to be named `refined` before)."""
    from dataclasses import dataclass
    from typing import Optional

    from ballot_lib.methods import base as B

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))
    trained = []

    @dataclass(frozen=True)
    class Shared(B.SparseConfig):
        pass

    @dataclass(frozen=True)
    class OwnSelection(B.SparseConfig):
        def last_epoch_twin(self) -> Optional["OwnSelection"]:
            return None

    for name, config in (("shared", Shared), ("own", OwnSelection)):
        @B.register(name, config, compute=lambda e, c: 1.0)
        def run_probe(exp, cfg, seed, run, name=name):
            trained.append((name, cfg.select))
            res = exp.train_net(exp.model_from(exp.dense_weights(seed, 0)), run, seed, desc="probe")
            return _out(res, _good_mask(exp, cfg.density))

    exp = make_experiment(tmp_path / "results")
    for name in ("shared", "own"):
        run_method(exp, name, 0, density=1.0)
        val = run_method(exp, name, 0, density=1.0, select="val_rule")
        assert ("derived_from" in val.summary) == (name == "shared")
    assert trained == [("shared", "last"), ("own", "last"), ("own", "val_rule")]
    # The other order: a last-epoch run is derived from its val-rule twin only when the training is shared.
    trained.clear()
    for name in ("shared", "own"):
        run_method(exp, name, 0, density=0.5, select="val_rule")
        last = run_method(exp, name, 0, density=0.5)
        assert ("derived_from" in last.summary) == (name == "shared")
    assert trained == [("shared", "val_rule"), ("own", "val_rule"), ("own", "last")]


def test_a_plugin_dataset_is_known_to_the_parameter_checks_before_methods_are_imported(tmp_path):
    """load_plugins ran only with ballot_lib.methods, but a notebook's first cell and `sweep validate` check the
    dataset and model names before that: a plugin's dataset or model was refused (review). A registry miss now
    loads the plugins first."""
    import os
    import subprocess
    import sys

    (tmp_path / "mymodel.py").write_text(
        "from ballot_lib.models import MODELS, build_model\n\n\n"
        "@MODELS.register('mlp_plugged')\n"
        "def mlp_plugged(input_shape, num_classes, cfg):\n"
        "    return MODELS.get('mlp')(input_shape, num_classes, cfg)\n")
    code = ("import sys; from ballot_lib.validation import validate_notebook_params; "
            "validate_notebook_params('01_lth_fairness_failure.ipynb', {'model': 'mlp_plugged'}, only_declared=True); "
            "print('methods imported:', 'ballot_lib.methods' in sys.modules)")
    env = {**os.environ, "BALLOT_PLUGINS": str(tmp_path / "mymodel.py")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_plugin_file_imported_under_its_own_name_is_not_executed_twice(tmp_path, monkeypatch):
    import importlib
    import sys

    from ballot_lib.methods import base as B
    from ballot_lib.plugins import load_plugins

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))
    _write_plugin(tmp_path / "own_name.py", "own_name")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("own_name")  # the user imported it (or ran it) first
    try:
        assert load_plugins(str(tmp_path / "own_name.py")) == [module]  # reused: no "already registered"
    finally:
        sys.modules.pop("own_name", None)


def test_sweep_jobs_get_plugin_paths_that_work_from_the_notebooks_folder(tmp_path, monkeypatch):
    """A kernel runs in notebooks/: a plugin named relative to the runner's directory was 'not a file' there."""
    import os

    from ballot_lib.plugins import plugin_env

    monkeypatch.setenv("BALLOT_PLUGINS", "mine.py,pkg.mod")
    env = plugin_env(cwd=tmp_path)
    assert env["BALLOT_PLUGINS"] == f"{(tmp_path / 'mine.py').resolve()},pkg.mod"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    monkeypatch.setenv("BALLOT_PLUGINS", "")
    assert plugin_env(cwd=tmp_path) == {}


def test_a_failed_plugin_is_reported_the_same_way_on_every_miss(tmp_path, monkeypatch):
    """A plugin that registered a name and then failed ran again on the next registry miss, and the second error
    ('already registered') hid the first."""
    from ballot_lib.checks import ParameterError
    from ballot_lib.methods import base as B
    from ballot_lib.plugins import load_plugins

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))
    path = _write_plugin(tmp_path / "half.py", "half")
    path.write_text(path.read_text() + "\nraise RuntimeError('boom')\n")
    for _ in range(3):
        with pytest.raises(ParameterError, match="RuntimeError: boom"):
            load_plugins(str(path))


def test_membership_of_a_plugin_name_loads_the_plugins(tmp_path, monkeypatch):
    """Notebook 03's dataset/model lists are checked with `name in registry`: a plugin's model was refused."""
    from ballot_lib.models import MODELS

    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))
    (tmp_path / "member.py").write_text(
        "from ballot_lib.models import MODELS\n\n\n"
        "@MODELS.register('mlp_member')\n"
        "def mlp_member(input_shape, num_classes, cfg):\n"
        "    return MODELS.get('mlp')(input_shape, num_classes, cfg)\n")
    monkeypatch.setenv("BALLOT_PLUGINS", str(tmp_path / "member.py"))
    assert "mlp_member" in MODELS


def test_a_mask_over_more_than_the_prunable_weights_is_refused_before_training(tmp_path, monkeypatch):
    """A fresh-user review made a mask from a state dict (make_mask(strategy, exp.dense_weights(seed, T), d)): it
    covered the biases too, trained the whole schedule and was refused only when stored, leaving a checkpoint that
    then blocked the corrected run."""
    from dataclasses import dataclass

    from ballot_lib.methods import base as B
    from ballot_lib.pruning import make_mask

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))
    trained = []

    @dataclass(frozen=True)
    class FromStateDict(B.SparseConfig):
        pass

    @B.register("from_state_dict", FromStateDict, compute=lambda exp, cfg: 1.0)
    def run_probe(exp, cfg, seed, run):
        mask = make_mask("magnitude_layer", exp.dense_weights(seed, exp.train.epochs), cfg.density)
        res = exp.train_net(exp.model_from(exp.dense_weights(seed, 0)), run, seed, mask=mask,
                            hooks=[lambda net, epoch, row: trained.append(epoch)], desc="probe")
        return _out(res, mask)

    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ValueError, match=r"train_net: mask does not match the model: .*extra \[.*bias.*make_mask"):
        run_method(exp, "from_state_dict", 0, density=0.5)
    assert trained == []
    probe = [p for p in (tmp_path / "results" / "runs").iterdir() if '"from_state_dict"' in
             (p / "config.json").read_text()] if (tmp_path / "results" / "runs").is_dir() else []
    assert not any((p / "checkpoint.pt").exists() for p in probe)


# ------------------------------------------------------------------------------------------ a registered dataset's
# or model's mistakes are errors before any run folder (an extension review found them failing mid-run, or not)

def _register_loader(monkeypatch, name, make):
    from ballot_lib.data import core as D

    monkeypatch.setattr(D.DATASETS, "_items", dict(D.DATASETS._items))
    digits = D.DATASETS.get("digits")

    @D.DATASETS.register(name)
    def load(cfg):
        return make(digits(D.DataConfig("digits")))

    return name


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("make,message", [
    (lambda b: (b.train, b.val, b.test), "its loader must return a ballot_lib.data.DataBundle, got tuple"),
    (lambda b: _replace(b, train=_relabel(b.train, 10)), r"train split has labels in \[0, 10\], outside \[0, 9\]"),
    (lambda b: _replace(b, num_classes=9, class_names=b.class_names[:9]), r"labels in \[0, 9\], outside \[0, 8\]"),
    (lambda b: _replace(b, class_names=b.class_names[:1]), "gives 1 class names for num_classes=10"),
])
def test_a_registered_loaders_output_is_checked_before_anything_runs(tmp_path, monkeypatch, make, message):
    from ballot_lib.data.core import DataConfig, DatasetError
    from ballot_lib.experiment import Experiment
    from ballot_lib.models import ModelConfig
    from conftest import TINY_TRAIN

    name = _register_loader(monkeypatch, "digits_plugged", make)
    exp = Experiment(DataConfig(name), ModelConfig("mlp", width=16), TINY_TRAIN, device="cpu",
                     results_dir=str(tmp_path / "results"), progress=False)
    with pytest.raises(DatasetError, match=message):
        run_method(exp, "lth", 0, density=0.5)
    assert _tree(tmp_path / "results") == []


def _replace(bundle, **kw):
    from dataclasses import replace

    return replace(bundle, **kw)


def _relabel(split, label):
    from ballot_lib.data.core import Split

    y = split.y.clone()
    y[0] = label
    return Split(split.x, y, split.g)


def test_a_registered_model_with_the_wrong_head_or_input_is_refused_before_any_run_folder(tmp_path, monkeypatch):
    from ballot_lib import models as M
    from ballot_lib.experiment import Experiment
    from ballot_lib.data.core import DataConfig
    from conftest import TINY_TRAIN

    monkeypatch.setattr(M.MODELS, "_items", dict(M.MODELS._items))

    @M.MODELS.register("seven_logits")
    def build(input_shape, num_classes, cfg):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 7))

    @M.MODELS.register("forgot_return")
    def build_none(input_shape, num_classes, cfg):
        nn.Linear(3, 3)

    def exp_of(data, model):
        return Experiment(DataConfig(data), M.ModelConfig(model), TINY_TRAIN, device="cpu",
                          results_dir=str(tmp_path / "results"), progress=False)

    rng = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=r"model 'seven_logits' gives outputs of shape \(2, 7\) on 'digits', which "
                                         r"has 10 classes"):
        run_method(exp_of("digits", "seven_logits"), "dense", 0)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the check leaves every seed's θ0 alone
    with pytest.raises(TypeError, match="model builder 'forgot_return' must return a torch.nn.Module, got NoneType"):
        run_method(exp_of("digits", "forgot_return"), "lth", 0, density=0.5)
    # an image model on feature vectors: refused before the store gets a folder (runs/ was made by the lock)
    with pytest.raises(ValueError, match="model 'cnn' takes images and dataset 'adult' gives feature vectors"):
        run_method(exp_of("adult", "cnn"), "dense", 0)
    assert _tree(tmp_path / "results") == []


def test_a_plain_dataclass_config_is_checked_against_its_annotations(tmp_path, monkeypatch):
    """An extension review registered a method with a plain dataclass config: `n='1'` for an int was stored in
    the run's identity and `density='0.2'` failed with a raw TypeError; a Literal field took any value."""
    from dataclasses import dataclass

    from ballot_lib.checks import ParameterError
    from ballot_lib.methods import base as B

    monkeypatch.setattr(B.METHODS, "_items", dict(B.METHODS._items))

    @dataclass(frozen=True)
    class Plain:  # (Literal is imported at the module's top: typing.get_type_hints resolves names there)
        density: float = 0.2
        n: int = 1
        kind: Literal["a", "b"] = "a"

    B.register("plain_cfg", Plain, compute=lambda exp, cfg: 1.0)(lambda exp, cfg, seed, run: None)
    for options, message in (({"n": "1"}, "n must be an integer"), ({"density": "0.2"}, "density"),
                             ({"kind": "c"}, "unknown kind 'c'; valid choices: a, b"),
                             ({"density": 1.5}, "density")):
        with pytest.raises(ParameterError, match=message):
            B.make_config("plain_cfg", **options)
    assert B.make_config("plain_cfg", density=1, kind="b") == Plain(density=1.0, kind="b")
    # Checked, not converted: an int stays an int, so the run ids of a plugin's stored runs do not change.
    assert type(B.make_config("plain_cfg", density=1).density) is int
    assert B.config_dict(B.make_config("plain_cfg", density=1))["density"] == 1

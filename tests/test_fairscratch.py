"""FairScratch (Fair Scratch Tickets on edge-popup): signed constants, the straight-through top-k, the surrogates
by hand, λ = 0 as plain edge-popup, exact per-layer density, resumption and the stored run."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ballot_lib.methods import make_config, run_method
from ballot_lib.methods.fairscratch import (Subnet, build_subnetwork, class_loss_variance, fairness_loss,
                                            favoured_group, group_priors, logistic_surrogate, signed_constant,
                                            subnet_mask)
from ballot_lib.results import load_results
from ballot_lib.training import train

from conftest import make_experiment


def test_signed_constant_by_hand():
    w = torch.tensor([[0.3, -0.1, 0.0, -2.0], [1.0, 1.0, -1.0, 0.5]])
    # fan_in 4, density 0.5 with scale_fan: σ = √2 / √(4 · 0.5) = 1.
    assert signed_constant(w, 0.5, True).tolist() == [[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, 1.0]]
    assert signed_constant(w, 0.5, False)[0, 0].item() == pytest.approx(math.sqrt(2) / 2)


def test_subnet_forward_and_straight_through_gradient_by_hand():
    lin = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0, 1.0]]))
    lin.weight.requires_grad_(False)
    torch.nn.utils.parametrize.register_parametrization(lin, "weight", Subnet(torch.tensor([[0.3, -0.5, 0.1]]), 2),
                                                        unsafe=True)
    # top-2 of |scores| = entries 0 and 1: effective weight [1, -1, 0].
    assert lin.weight.tolist() == [[1.0, -1.0, 0.0]]
    out = lin(torch.tensor([[1.0, 2.0, 3.0]]))
    assert out.item() == -1.0
    out.sum().backward()
    # d out / d score_j = x_j · w_j · sign(score_j), for kept and dropped entries alike (straight-through).
    assert lin.parametrizations.weight[0].scores.grad.tolist() == [[1.0, 2.0, 3.0]]


def test_build_subnetwork_freezes_everything_but_scores_and_keeps_exact_counts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    signs = torch.sign(net[0].weight.detach().clone())
    build_subnetwork(net, 0.25, seed=0)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable == ["0.parametrizations.weight.0.scores", "3.parametrizations.weight.0.scores"]
    assert net[0].bias.abs().sum() == 0 and net[3].bias.abs().sum() == 0
    assert net[1].weight.tolist() == [1.0] * 8 and net[1].bias.tolist() == [0.0] * 8  # no affine transform
    original = net[0].parametrizations.weight.original
    assert torch.equal(torch.sign(original), torch.where(signs == 0, 1.0, signs))
    assert original.abs().unique().tolist() == [pytest.approx(math.sqrt(2) / math.sqrt(10 * 0.25))]
    mask = subnet_mask(net)
    assert {n: int(m.sum()) for n, m in mask.items()} == {"0.weight": 20, "3.weight": 6}  # round(0.25·80), (·24)


def test_a_layer_left_out_of_pruning_stays_dense_and_frozen():
    """A Conv/Linear weight the model does not prune (``prune_ignore``) keeps every entry as a frozen signed
    constant at density 1: zeroing it like a bias would make the network's output constant."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    net.prune_ignore = ("0.weight",)
    signs = torch.sign(net[0].weight.detach().clone())
    build_subnetwork(net, 0.25, seed=0)
    first = net[0].weight
    assert not first.requires_grad and not hasattr(net[0], "parametrizations")
    assert torch.equal(torch.sign(first), torch.where(signs == 0, 1.0, signs))
    assert first.abs().unique().tolist() == [pytest.approx(math.sqrt(2) / math.sqrt(9))]  # fan-in 1·3·3, d = 1
    assert net[0].bias.abs().sum() == 0
    assert list(subnet_mask(net)) == ["3.weight"]
    x = torch.randn(5, 1, 6, 6)
    assert net(x).std(0).max() > 0  # the output depends on the input


def test_logistic_surrogate_by_hand():
    f = torch.tensor([0.0, 0.0])
    g = torch.tensor([0, 1])
    # −(1/2)[log σ(0)/0.5 + log σ(−0)/0.5] = 2 ln 2
    assert logistic_surrogate(f, g, 0, torch.tensor([0.5, 0.5])).item() == pytest.approx(2 * math.log(2))
    # The pushed-up group gains from a larger f, the other from a smaller one.
    up = logistic_surrogate(torch.tensor([3.0, 0.0]), g, 0, torch.tensor([0.5, 0.5]))
    assert up.item() < 2 * math.log(2)


def test_priors_and_favoured_group_by_hand():
    g = torch.tensor([0, 0, 0, 1])
    y = torch.tensor([0, 0, 1, 1])
    assert group_priors(g, y, "dp").tolist() == [0.75, 0.25]
    assert group_priors(g, y, "eo").tolist() == [0.25, 0.25]
    assert favoured_group(g, y) == 0  # group 0 has the lower positive rate (1/3 vs 1)


def test_class_loss_variance_is_zero_for_equal_fits_and_positive_otherwise():
    y = torch.tensor([0, 1, 2])
    same = torch.eye(3) * 2.0
    assert class_loss_variance(same, y).item() == pytest.approx(0.0, abs=1e-12)
    assert class_loss_variance(torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]]), y).item() > 0


def test_lambda_zero_is_plain_cross_entropy():
    logits, y, g = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0]), torch.tensor([0, 0, 1, 1, 0, 1])
    for kind in ("dp", "eo", "class"):
        loss = fairness_loss(kind, 0.0, 1, torch.tensor([0.5, 0.5]))
        assert torch.equal(loss(logits, y, g), torch.nn.functional.cross_entropy(logits, y))
    assert fairness_loss("dp", 1.0, 1, torch.tensor([0.5, 0.5]))(logits, y, g) > \
        torch.nn.functional.cross_entropy(logits, y)


def test_lambda_zero_runs_are_plain_edge_popup_whatever_the_surrogate(tmp_path):
    exp = make_experiment(tmp_path / "results")
    a = run_method(exp, "fairscratch", 0, density=0.5, fairness_weight=0.0, fairness="class")
    b = run_method(exp, "fairscratch", 0, density=0.5, fairness_weight=0.0, fairness="auto")
    c = run_method(exp, "fairscratch", 0, density=0.5, fairness_weight=1.0, fairness="class")
    assert a.id != b.id
    assert all(torch.equal(a.mask[n], b.mask[n]) for n in a.mask)
    assert a.metrics == b.metrics
    assert any(not torch.equal(a.mask[n], c.mask[n]) for n in a.mask)  # λ > 0 changes the ticket


def test_interrupted_run_resumes_exactly(tmp_path):
    exp = make_experiment(tmp_path / "results")
    theta0 = exp.dense_weights(0, 0)

    def fresh():
        return build_subnetwork(exp.model_from(theta0), 0.3, seed=0)

    loss = fairness_loss("class", 0.5)
    a = fresh()
    train(a, exp.bundle, exp.train, seed=0, device="cpu", progress=False, loss_fn=loss, eval_splits=())
    ckpt = tmp_path / "ckpt.pt"
    train(fresh(), exp.bundle, exp.train, seed=0, device="cpu", progress=False, loss_fn=loss, eval_splits=(),
          end_epoch=1, checkpoint=ckpt)
    b = fresh()
    train(b, exp.bundle, exp.train, seed=0, device="cpu", progress=False, loss_fn=loss, eval_splits=(),
          checkpoint=ckpt)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_every_epoch_is_at_the_target_density_so_every_epoch_can_be_selected(tmp_path):
    """The val rule may pick any epoch: at every epoch's evaluation every layer keeps exactly round(d · n_l)."""
    from ballot_lib.pruning import kept_count

    exp = make_experiment(tmp_path / "results", epochs=3)
    net = build_subnetwork(exp.model_from(exp.dense_weights(0, 0)), 0.3, seed=0)
    seen = []
    train(net, exp.bundle, exp.train, seed=0, device="cpu", progress=False, loss_fn=fairness_loss("class", 0.5),
          eval_splits=("val",), hooks=[lambda net_, epoch, row: seen.append(subnet_mask(net_))])
    assert len(seen) == 3
    assert all({n: int(m.sum()) for n, m in mask.items()} == {n: kept_count(0.3, m.numel()) for n, m in mask.items()}
               for mask in seen)
    assert any(not torch.equal(seen[0][n], seen[-1][n]) for n in seen[0])  # the mask moved between epochs


def test_val_rule_is_offered_and_trains_itself():
    cfg = make_config("fairscratch", density=0.1, select="val_rule")
    assert cfg.select == "val_rule" and cfg.last_epoch_twin() is None


@pytest.mark.parametrize("kwargs, match", [
    ({"fairness": "bogus"}, "valid choices: auto, dp, eo, class"),
    ({"fairness_weight": -1.0}, "fairness_weight"),
    ({"scale_fan": 1}, "scale_fan"),
])
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_config("fairscratch", density=0.1, **kwargs)


def test_group_surrogates_need_a_binary_target_with_groups(tmp_path):
    with pytest.raises(ValueError, match="binary target and two groups"):
        run_method(make_experiment(tmp_path / "results"), "fairscratch", 0, density=0.1, fairness="eo")


def test_run_method_stores_exact_per_layer_density_and_loads_the_second_time(tmp_path, monkeypatch):
    exp = make_experiment(tmp_path / "results")
    res = run_method(exp, "fairscratch", 0, density=0.1)
    assert {n: int(m.sum()) for n, m in res.mask.items()} == {n: round(0.1 * m.numel()) for n, m in res.mask.items()}
    assert res.summary["compute_epochs"] == exp.train.epochs
    assert res.summary["surrogate"] == "class"
    import ballot_lib.methods.base as base

    monkeypatch.setattr(base, "store_output", lambda *a, **k: pytest.fail("trained again"))
    assert run_method(exp, "fairscratch", 0, density=0.1).id == res.id
    assert "fairscratch" in set(load_results(exp.store.root)["method"])


def test_adult_uses_the_dp_surrogate_with_priors(tmp_path):
    exp = make_experiment(tmp_path / "results")
    from dataclasses import replace

    from ballot_lib.data import DataConfig
    exp = type(exp)(DataConfig("adult"), exp.model, replace(exp.train, epochs=1, batch_size=512), device="cpu",
                    results_dir=str(tmp_path / "results"), progress=False)
    res = run_method(exp, "fairscratch", 0, density=0.1, fairness_weight=0.5)
    assert res.summary["surrogate"] == "dp"
    assert res.summary["group_prior_0"] + res.summary["group_prior_1"] == pytest.approx(1.0)
    assert "dp_gap" in res.metrics["test"] and "eo_gap" in res.metrics["test"]

"""Ballot: the vote (against an independent re-implementation of SPEC §6 and the authors' released procedure),
hand-made examples, argument checks, fairness weights, checkpoint selection, and the method on a tiny experiment."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ballot_lib.experiment as experiment_module
from ballot_lib.checks import ParameterError
from ballot_lib import pruning as P
from ballot_lib.methods import ballot, make_config, run_method
from ballot_lib.models import prunable_names

from conftest import make_experiment, tree

SEED = 0
DENSITY = 0.2

#: Shapes of the random gradient dicts: a conv-like 4-D weight and two linear weights (insertion order matters
#: for the global concatenation order).
SHAPES = {"conv": (4, 3, 3, 3), "fc1": (8, 12), "fc2": (3, 8)}


# ---------------------------------------------------------------------------------------------------------------
# An independent implementation of the vote, written from SPEC §6 (not from the library)
# ---------------------------------------------------------------------------------------------------------------

def unit_columns(t: torch.Tensor) -> torch.Tensor:
    """t divided by the L2 norm of its slice along dim 0 (all zero slices stay zero)."""
    t = t.double()
    norm = t.pow(2).sum(dim=0, keepdim=True).sqrt()
    return torch.where(norm > 0, t / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(t))


def ref_scores(pair, eta, score, conflict):
    """Per tensor: (score, eligible) as flat double / bool tensors."""
    out = {}
    for n in pair[0]:
        a, f = unit_columns(pair[0][n]), unit_columns(pair[1][n])
        s = a + eta * f
        if score == "agreement":
            s = s.abs()
        elif score == "taylor":
            s = (pair[2][n].double() * s).abs()
        ok = s != 0
        if conflict == "veto":
            ok &= ((a > 0) & (f > 0)) | ((a < 0) & (f < 0)) | ((a == 0) & (f == 0))
        out[n] = (s.flatten(), ok.flatten())
    return out


def ref_top(scores: list[float], eligible: list[bool], k: int) -> list[int]:
    """Indices of the k highest-scoring eligible entries (fewer if fewer are eligible)."""
    cand = [i for i in range(len(scores)) if eligible[i]]
    return sorted(cand, key=lambda i: -scores[i])[:k]


def ref_votes(pairs, density=None, eta=1.0, score="signed", conflict="none", scope="global", budgets=None):
    """Votes and summed scores per tensor (flat lists), from SPEC §6: per-epoch top-k over eligible entries."""
    names = list(pairs[0][0])
    sizes = {n: pairs[0][0][n].numel() for n in names}
    votes = {n: [0] * sizes[n] for n in names}
    total = {n: [0.0] * sizes[n] for n in names}
    for pair in pairs:
        sc = ref_scores(pair, eta, score, conflict)
        for n in names:
            for i, v in enumerate(sc[n][0].tolist()):
                total[n][i] += v
        if budgets is None and scope == "global":
            flat = [(n, i) for n in names for i in range(sizes[n])]
            s = [v for n in names for v in sc[n][0].tolist()]
            e = [v for n in names for v in sc[n][1].tolist()]
            for j in ref_top(s, e, round(density * len(flat))):
                n, i = flat[j]
                votes[n][i] += 1
        else:
            for n in names:
                k = budgets[n] if budgets is not None else round(density * sizes[n])
                for i in ref_top(sc[n][0].tolist(), sc[n][1].tolist(), k):
                    votes[n][i] += 1
    return votes, total


def random_pairs(seed: int, epochs: int, shapes=SHAPES, with_weights=False):
    gen = torch.Generator().manual_seed(seed)

    def draw():
        # Tensors on different scales: the normalisation along dim 0 must remove them.
        return {n: torch.randn(s, generator=gen) * (1 + 2 * j) for j, (n, s) in enumerate(shapes.items())}

    pairs = []
    for _ in range(epochs):
        pair = (draw(), draw()) + ((draw(),) if with_weights else ())
        pairs.append(pair)
    return pairs


def check_kept_have_most_votes(mask, votes, total, pools):
    """Within each pool (a list of tensor names), every kept entry beats every dropped one on (votes, summed
    score); both masks and votes are compared on the concatenation of the pool's tensors."""
    for pool in pools:
        keep = torch.cat([mask[n].flatten() for n in pool])
        v = torch.tensor([x for n in pool for x in votes[n]])
        t = torch.tensor([x for n in pool for x in total[n]], dtype=torch.float64)
        if keep.all() or not keep.any():
            continue
        assert v[keep].min() >= v[~keep].max(), pool
        # At the boundary vote count, the larger summed score wins.
        b = v[keep].min()
        if (v[~keep] == b).any():
            assert t[keep & (v == b)].min() >= t[~keep & (v == b)].max(), pool


# ---------------------------------------------------------------------------------------------------------------
# 1. Exact density and the most-voted entries kept, on random gradients
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("density", [0.1, 0.37, 0.5])
def test_global_vote_mask_has_exact_density_and_keeps_most_voted(seed, density):
    pairs = random_pairs(seed, epochs=3 + seed)
    mask = ballot.vote_mask(pairs, density)
    assert list(mask) == list(SHAPES)
    for n, s in SHAPES.items():
        assert mask[n].dtype == torch.bool and tuple(mask[n].shape) == s
    N = sum(math.prod(s) for s in SHAPES.values())
    assert sum(int(m.sum()) for m in mask.values()) == round(density * N)
    votes, total = ref_votes(pairs, density)
    lib_votes, _ = ballot.vote_counts(pairs, density)
    assert {n: v.flatten().tolist() for n, v in lib_votes.items()} == votes
    check_kept_have_most_votes(mask, votes, total, [list(SHAPES)])
    # Votes are really spread (the check above is not vacuous): several vote counts occur.
    assert len({x for n in votes for x in votes[n]}) >= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_scope_has_exact_density_per_tensor_and_keeps_most_voted_per_tensor(seed):
    density = 0.3
    pairs = random_pairs(seed, epochs=4)
    mask = ballot.vote_mask(pairs, density, scope="layer")
    for n, s in SHAPES.items():
        assert mask[n].dtype == torch.bool and tuple(mask[n].shape) == s
        assert int(mask[n].sum()) == round(density * math.prod(s)), n
    votes, total = ref_votes(pairs, density, scope="layer")
    lib_votes, _ = ballot.vote_counts(pairs, density, scope="layer")
    assert {n: v.flatten().tolist() for n, v in lib_votes.items()} == votes
    check_kept_have_most_votes(mask, votes, total, [[n] for n in SHAPES])


@pytest.mark.parametrize("seed", [0, 1])
def test_budgets_give_exact_counts_per_tensor_and_override_scope(seed):
    budgets = {"conv": 20, "fc1": 0, "fc2": 24}  # fc1 emptied, fc2 kept whole
    pairs = random_pairs(seed, epochs=4)
    for scope in ("global", "layer"):
        mask = ballot.vote_mask(pairs, 0.5, scope=scope, budgets=budgets)
        for n, s in SHAPES.items():
            assert mask[n].dtype == torch.bool and tuple(mask[n].shape) == s
            assert int(mask[n].sum()) == budgets[n], (scope, n)
    # density is ignored when budgets are given.
    assert all(torch.equal(mask[n], ballot.vote_mask(pairs, None, budgets=budgets)[n]) for n in SHAPES)
    votes, total = ref_votes(pairs, budgets=budgets)
    lib_votes, _ = ballot.vote_counts(pairs, None, budgets=budgets)
    assert {n: v.flatten().tolist() for n, v in lib_votes.items()} == votes
    assert sum(votes["fc1"]) == 0 and set(votes["fc2"]) == {4}
    check_kept_have_most_votes(mask, votes, total, [[n] for n in SHAPES])


# ---------------------------------------------------------------------------------------------------------------
# 2. The authors' released procedure, single [C, H] tensor
# ---------------------------------------------------------------------------------------------------------------

def authors_procedure(epochs, d: float, eta: float = 1.0):
    """The authors' released code (run in float64 here so rounding cannot reorder near-equal scores)."""
    C, H = epochs[0][0].shape
    k = round(d * C * H)
    cnt = torch.zeros(C, H)
    for grad, fair_grad in epochs:
        grad = F.normalize(grad.double(), dim=0)
        fair_grad = F.normalize(fair_grad.double(), dim=0)
        simi = grad + eta * fair_grad
        val, idx = torch.topk(simi.view(-1), k)
        idx = idx[val != 0]
        cnt.view(-1)[idx] += 1
    mask = torch.zeros(C * H, dtype=torch.bool)
    mask[torch.topk(cnt.view(-1), k).indices] = True
    return cnt, mask.view(C, H), k


def test_single_tensor_equals_the_authors_procedure():
    C, H, d, E = 10, 16, 0.25, 6
    untied = 0
    for seed in range(30):
        gen = torch.Generator().manual_seed(seed)
        # A persistent part plus epoch noise, as real gradients over epochs: votes concentrate on some entries.
        base_a, base_f = torch.randn(C, H, generator=gen), torch.randn(C, H, generator=gen)
        epochs = [(base_a + torch.randn(C, H, generator=gen), base_f + torch.randn(C, H, generator=gen))
                  for _ in range(E)]
        cnt, authors_mask, k = authors_procedure(epochs, d)
        pairs = [({"fc.weight": a}, {"fc.weight": f}) for a, f in epochs]
        votes, _ = ballot.vote_counts(pairs, d)
        assert torch.equal(votes["fc.weight"], cnt.long()), seed
        mask = ballot.vote_mask(pairs, d)["fc.weight"]
        assert int(mask.sum()) == k
        srt = cnt.flatten().sort(descending=True).values
        boundary = srt[k - 1]
        # Entries above the boundary count are kept by both; none below it by either.
        assert bool(mask[cnt > boundary].all()) and not bool(mask[cnt < boundary].any()), seed
        if srt[k - 1] > srt[k]:
            untied += 1
            assert torch.equal(mask, authors_mask), seed
    assert untied >= 3, "too few seeds without a tie at the boundary to compare the masks"


# ---------------------------------------------------------------------------------------------------------------
# 3. Score variants, veto, zero scores, eta = 0
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("score,conflict", [("agreement", "none"), ("taylor", "none"), ("signed", "veto"),
                                            ("agreement", "veto")])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_score_variants_match_the_reference(score, conflict, scope):
    pairs = random_pairs(3, epochs=4, with_weights=True)
    votes, total = ref_votes(pairs, 0.3, 0.7, score, conflict, scope)
    lib_votes, lib_total = ballot.vote_counts(pairs, 0.3, 0.7, score, conflict, scope)
    assert {n: v.flatten().tolist() for n, v in lib_votes.items()} == votes
    for n in SHAPES:
        assert torch.allclose(lib_total[n].flatten(), torch.tensor(total[n], dtype=torch.float64), atol=1e-12)
    mask = ballot.vote_mask(pairs, 0.3, 0.7, score, conflict, scope)
    check_kept_have_most_votes(mask, votes, total, [list(SHAPES)] if scope == "global" else [[n] for n in SHAPES])


def test_agreement_ranks_by_magnitude_and_signed_by_value():
    # One column; unit columns already: â = (0.6, -0.8), f̂ = (0.6, -0.8); ĝa + ĝf = (1.2, -1.6).
    g = {"w": torch.tensor([[3.0], [-4.0]])}
    pairs = [(g, {"w": 2 * g["w"]})]
    assert ballot.vote_counts(pairs, 0.5, score="signed")[0]["w"].flatten().tolist() == [1, 0]
    assert ballot.vote_counts(pairs, 0.5, score="agreement")[0]["w"].flatten().tolist() == [0, 1]


def test_taylor_needs_weights_and_scales_by_them():
    g = {"w": torch.tensor([[3.0], [-4.0]])}
    with pytest.raises(ValueError, match="taylor"):
        ballot.vote_mask([(g, g)], 0.5, score="taylor")
    # |θ ⊙ (ĝa + ĝf)| = |(10 * 1.2, 1 * -1.6)| = (12, 1.6): the first entry wins, unlike with "agreement".
    theta = {"w": torch.tensor([[10.0], [1.0]])}
    assert ballot.vote_mask([(g, g, theta)], 0.5, score="taylor")["w"].flatten().tolist() == [True, False]
    # A zero weight gives a zero score: no vote even when the budget would allow it.
    theta0 = {"w": torch.tensor([[0.0], [1.0]])}
    assert ballot.vote_counts([(g, g, theta0)], 1.0, score="taylor")[0]["w"].flatten().tolist() == [0, 1]


def test_veto_gives_no_vote_to_entries_whose_gradients_disagree():
    # Column g_acc (8, 6) -> (0.8, 0.6); g_fair (-3, 4) -> (-0.6, 0.8). With eta = 0.1 the scores are
    # (0.8 - 0.06, 0.6 + 0.08) = (0.74, 0.68): the disagreeing first entry has the largest score.
    pairs = [({"w": torch.tensor([[8.0], [6.0]])}, {"w": torch.tensor([[-3.0], [4.0]])})]
    none = ballot.vote_counts(pairs, 0.5, eta=0.1)[0]["w"].flatten().tolist()
    veto = ballot.vote_counts(pairs, 0.5, eta=0.1, conflict="veto")[0]["w"].flatten().tolist()
    assert none == [1, 0]
    assert veto == [0, 1]  # the vote goes to the best eligible entry
    assert ballot.vote_mask(pairs, 0.5, eta=0.1, conflict="veto")["w"].flatten().tolist() == [False, True]


def test_entries_with_zero_score_get_no_vote():
    # Column 0: â = (0.6, 0.8), f̂ = (-0.6, 0.8) -> scores (0, 1.6); column 1 all-zero gradients -> scores (0, 0).
    g_acc = {"w": torch.tensor([[3.0, 0.0], [4.0, 0.0]])}
    g_fair = {"w": torch.tensor([[-3.0, 0.0], [4.0, 0.0]])}
    for score in ("signed", "agreement"):
        votes = ballot.vote_counts([(g_acc, g_fair)], 1.0, score=score)[0]["w"]
        assert votes.tolist() == [[0, 0], [1, 0]], score
    # The mask still has the exact density: the zero-vote entries are filled in deterministically.
    assert int(ballot.vote_mask([(g_acc, g_fair)], 0.5)["w"].sum()) == 2


def test_eta_zero_ignores_the_fairness_gradient():
    pairs = random_pairs(5, epochs=3)
    other = random_pairs(6, epochs=3)
    swapped = [(p[0], q[1]) for p, q in zip(pairs, other)]
    for scope in ("global", "layer"):
        a = ballot.vote_mask(pairs, 0.3, eta=0.0, scope=scope)
        b = ballot.vote_mask(swapped, 0.3, eta=0.0, scope=scope)
        assert all(torch.equal(a[n], b[n]) for n in SHAPES)
        # The votes with eta = 0 are those of g_acc alone.
        votes, _ = ref_votes([(p[0], {n: torch.zeros(s) for n, s in SHAPES.items()}) for p in pairs], 0.3,
                             scope=scope)
        lib, _ = ballot.vote_counts(pairs, 0.3, eta=0.0, scope=scope)
        assert {n: v.flatten().tolist() for n, v in lib.items()} == votes
    # ... whereas with eta = 1 the fairness gradient matters.
    a1, b1 = ballot.vote_mask(pairs, 0.3), ballot.vote_mask(swapped, 0.3)
    assert not all(torch.equal(a1[n], b1[n]) for n in SHAPES)


# ---------------------------------------------------------------------------------------------------------------
# 4. A hand-made example
# ---------------------------------------------------------------------------------------------------------------

# 2x2 weight, k = round(0.5 * 4) = 2, eta = 1. g_fair scales each column of g_acc differently, so after the
# normalisation along dim 0, f̂ = â and the score is 2â.
#   epoch 1: columns (3, 4) -> (0.6, 0.8) and (12, -5) -> (12/13, -5/13):
#            scores [[1.2, 1.846], [1.6, -0.769]] -> votes to (0,1) and (1,0)
#   epoch 2: columns (24, 7) -> (0.96, 0.28) and (-5, 12) -> (-5/13, 12/13):
#            scores [[1.92, -0.769], [0.56, 1.846]] -> votes to (0,0) and (1,1)
# After two epochs every entry has one vote; summed scores [[3.12, 1.077], [2.16, 1.077]] -> keep (0,0), (1,0).
# A third epoch equal to the first gives votes [[1, 2], [2, 1]] -> keep (0,1), (1,0) despite lower sums.
HAND_E1 = ({"w": torch.tensor([[3.0, 12.0], [4.0, -5.0]])}, {"w": torch.tensor([[6.0, 36.0], [8.0, -15.0]])})
HAND_E2 = ({"w": torch.tensor([[24.0, -5.0], [7.0, 12.0]])}, {"w": torch.tensor([[12.0, -20.0], [3.5, 48.0]])})


def test_hand_made_example():
    votes, total = ballot.vote_counts([HAND_E1, HAND_E2], 0.5)
    assert votes["w"].tolist() == [[1, 1], [1, 1]]
    expected_total = torch.tensor([[1.2 + 1.92, 24 / 13 - 10 / 13], [1.6 + 0.56, -10 / 13 + 24 / 13]],
                                  dtype=torch.float64)
    assert torch.allclose(total["w"], expected_total, atol=1e-12)
    # Equal votes: the larger summed score wins.
    mask = ballot.vote_mask([HAND_E1, HAND_E2], 0.5)
    assert mask["w"].tolist() == [[True, False], [True, False]]
    # Deterministic: a second call gives the same mask.
    assert torch.equal(ballot.vote_mask([HAND_E1, HAND_E2], 0.5)["w"], mask["w"])
    # Votes come before summed scores.
    votes3, _ = ballot.vote_counts([HAND_E1, HAND_E2, HAND_E1], 0.5)
    assert votes3["w"].tolist() == [[1, 2], [2, 1]]
    assert ballot.vote_mask([HAND_E1, HAND_E2, HAND_E1], 0.5)["w"].tolist() == [[False, True], [True, False]]


def test_full_ties_go_to_the_lower_index():
    # Identical gradient in every column: equal scores per row; row 0 is the best for every column.
    g = {"w": torch.tensor([[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]])}
    mask = ballot.vote_mask([(g, g)], 2 / 6)
    assert mask["w"].tolist() == [[True, True, False], [False, False, False]]


# ---------------------------------------------------------------------------------------------------------------
# 5. Invalid arguments
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,message", [
    ({"score": "abs"}, r"unknown score 'abs'; valid choices: signed, agreement, taylor"),
    ({"conflict": "drop"}, r"unknown conflict 'drop'; valid choices: none, veto"),
    ({"scope": "net"}, r"unknown scope 'net'; valid choices: global, layer"),
    ({"density": 0}, r"density must be in \(0, 1\]"),
    ({"density": 1.5}, r"density must be in \(0, 1\]"),
    ({"budgets": {"conv": 3, "fc1": 3}}, r"budgets lack tensors \['fc2'\]"),
    ({"budgets": {"conv": 3, "fc1": 3, "fc2": 25}}, r"budgets\['fc2'\] must be in \[0, 24\] .*got 25"),
    ({"budgets": {"conv": -1, "fc1": 3, "fc2": 2}}, r"budgets\['conv'\] must be in \[0, .*got -1"),
])
def test_invalid_arguments_raise_value_error(kw, message):
    pairs = random_pairs(0, epochs=2)
    kw = {"density": 0.5, **kw}
    with pytest.raises(ValueError, match=message):
        ballot.vote_mask(pairs, **kw)


def test_empty_grad_pairs_raise():
    with pytest.raises(ValueError, match="grad_pairs must be a non-empty list"):
        ballot.vote_mask([], 0.5)


# ---------------------------------------------------------------------------------------------------------------
# 6. Fairness weights
# ---------------------------------------------------------------------------------------------------------------

def test_fairness_weights_by_hand():
    acc = torch.tensor([0.5, float("nan"), 0.0])
    # delta 0.5, gamma 1: raw (1/1.0, -, 1/0.5) = (1, -, 2); mean over present cells 1.5.
    w = ballot.fairness_weights(acc, delta=0.5, gamma=1.0)
    assert torch.allclose(w, torch.tensor([2 / 3, 0.0, 4 / 3], dtype=torch.float64))
    # gamma 2: raw (1, -, 4); mean 2.5.
    w2 = ballot.fairness_weights(acc, delta=0.5, gamma=2.0)
    assert torch.allclose(w2, torch.tensor([0.4, 0.0, 1.6], dtype=torch.float64))
    # gamma 0: flat weights on the present cells.
    assert ballot.fairness_weights(acc, delta=0.5, gamma=0.0).tolist() == [1.0, 0.0, 1.0]
    # Mean 1 over present cells for arbitrary accuracies.
    acc = torch.tensor([0.9, 0.97, float("nan"), 0.3, 1.0])
    w = ballot.fairness_weights(acc, delta=0.01, gamma=1.5)
    assert w[2] == 0 and float(w[~torch.isnan(acc)].mean()) == pytest.approx(1.0, abs=1e-12)
    assert bool((w[[0, 1, 3, 4]].diff().sign() == torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)).all())


# ---------------------------------------------------------------------------------------------------------------
# 7. Checkpoint selection
# ---------------------------------------------------------------------------------------------------------------

def test_select_checkpoint_prefers_lowest_val_mcd_within_eps_of_best_accuracy():
    history = [
        {"epoch": 1, "val_acc": 0.800, "val_mcd": 0.30},
        {"epoch": 2, "val_acc": 0.900, "val_mcd": 0.40},  # best accuracy
        {"epoch": 3, "val_acc": 0.895, "val_mcd": 0.20},  # within 0.01 of it, lower MCD
        {"epoch": 4, "val_acc": 0.850, "val_mcd": 0.05},  # lowest MCD, but too inaccurate for eps 0.01
    ]
    assert ballot._select_checkpoint(history, 0.01) == 2
    assert ballot._select_checkpoint(history, 0.0) == 1
    assert ballot._select_checkpoint(history, 0.1) == 3


# ---------------------------------------------------------------------------------------------------------------
# 8. The method on a tiny experiment
# ---------------------------------------------------------------------------------------------------------------

EPOCHS = 3


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def record_of(exp, cfg: ballot.BallotConfig, eta=None) -> dict:
    """The stored tally record of ``cfg`` (or of its η override) for SEED."""
    tally = cfg.tally_config() if eta is None else cfg.tally_config(eta=eta)
    collector = ballot.VoteCollector(cfg.vote_config())
    return exp.dense(SEED).run.load_tensor(collector.tally_file(tally))


class GradientSpy:
    """Records, at every voting epoch, the gradients the collector computed and a *copy* of the weights then:
    the inputs of the stored-gradient procedure (``vote_mask`` over a list of epochs)."""

    def __init__(self, module):
        self.pairs, self.orig = [], module.vote_gradients

    def __call__(self, net, plist, *args, **kwargs):
        ga, gf = self.orig(net, plist, *args, **kwargs)
        names = prunable_names(net)
        params = dict(net.named_parameters())
        voted = [n for n in names if any(params[n] is p for p in plist)]
        weights = {n: params[n].detach().clone() for n in names}
        self.pairs.append(({n: g.detach().clone() for n, g in zip(voted, ga)},
                           {n: g.detach().clone() for n, g in zip(voted, gf)}, weights))
        return ga, gf


@pytest.fixture(scope="module")
def during(tmp_path_factory):
    """Ballot run on a fresh experiment: the votes are streamed during its dense run (gradients spied on)."""
    exp = make_experiment(tmp_path_factory.mktemp("ballot_during") / "results", epochs=EPOCHS)
    spy = GradientSpy(ballot)
    ballot.vote_gradients = spy
    try:
        res = run_method(exp, "ballot", SEED, density=DENSITY)
    finally:
        ballot.vote_gradients = spy.orig
    exp.spy = spy
    return exp, res


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """The dense run first (no Ballot), then Ballot: the votes are produced by a replay."""
    exp = make_experiment(tmp_path_factory.mktemp("ballot_replay") / "results", epochs=EPOCHS)
    dense = exp.dense(SEED)
    before = dense.run.load_tensor("thetaT.pt")
    assert not list(dense.run.path.glob("votes_*.pt"))
    res = run_method(exp, "ballot", SEED, density=DENSITY)
    return exp, res, before


def test_ballot_mask_has_exact_density_with_lth_budgets(during):
    exp, res = during
    net_T = exp.model_from(exp.dense_weights(SEED, EPOCHS))
    weights = P.prunable_weights(net_T)
    P.check_mask_matches(net_T, res.mask)
    N = sum(w.numel() for w in weights.values())
    assert sum(int(m.sum()) for m in res.mask.values()) == round(DENSITY * N)
    lth = P.magnitude_mask(net_T, DENSITY, "global")
    for n in weights:
        assert int(res.mask[n].sum()) == int(lth[n].sum()), n
    # Diagnostics.
    s = res.summary
    for key in ("vote_seconds", "sign_agreement", "overlap_eta0", "overlap_lth", "weight_spread_mean"):
        assert key in s and isinstance(s[key], float), key
    assert s["vote_seconds"] > 0 and 0 <= s["sign_agreement"] <= 1 and 0 <= s["overlap_eta0"] <= 1
    assert s["weight_spread_mean"] >= 1
    assert s["overlap_lth"] == pytest.approx(P.overlap(res.mask, lth))
    assert s["density"] == pytest.approx(round(DENSITY * N) / N)


def test_streamed_votes_equal_the_stored_gradient_procedure(during):
    """The running tallies (nothing kept per epoch) give the votes, scores and mask of ``vote_mask`` over the list
    of every epoch's stored (g_acc, g_fair, θ_e) — with the lth budgets of each epoch's weights for its vote."""
    exp, res = during
    pairs = exp.spy.pairs
    assert len(pairs) == EPOCHS
    # The weights the taylor score saw are each epoch's own, not θT (a CPU view of the live weights would be θT).
    thetaT = exp.dense_weights(SEED, EPOCHS)
    first = next(iter(pairs[0][2]))
    assert not torch.equal(pairs[0][2][first], thetaT[first])
    assert torch.equal(pairs[-1][2][first], thetaT[first])
    cfg = make_config("ballot", density=DENSITY)
    epoch_budgets = [P.budgets_from_mask(P.magnitude_mask(p[2], DENSITY, "global")) for p in pairs]
    votes, total = ballot.vote_counts(pairs, DENSITY, cfg.eta, cfg.score, cfg.conflict,
                                      epoch_budgets=epoch_budgets)
    rec = record_of(exp, cfg)
    assert rec["epochs"] == list(range(1, EPOCHS + 1))
    for n in votes:
        assert torch.equal(rec["votes"][n].long(), votes[n]), n
        assert torch.allclose(rec["total"][n], total[n], rtol=0, atol=1e-12), n
    final = P.budgets_from_mask(P.magnitude_mask(exp.model_from(thetaT), DENSITY, "global"))
    expected = ballot.vote_mask(pairs, DENSITY, cfg.eta, cfg.score, cfg.conflict, budgets=final,
                                epoch_budgets=epoch_budgets)
    assert same(res.mask, expected)
    # The η = 0 control streams along too, and the summary's overlap is computed from it.
    rec0 = record_of(exp, cfg, eta=0.0)
    eta0 = ballot.vote_mask(pairs, DENSITY, 0.0, cfg.score, cfg.conflict, budgets=final, epoch_budgets=epoch_budgets)
    assert same(ballot.mask_from_votes(rec0["votes"], rec0["total"], DENSITY, budgets=final), eta0)
    assert res.summary["overlap_eta0"] == pytest.approx(P.overlap(res.mask, eta0))
    # The two gradients differ (the fairness weights are not flat), so the vote sees two signals.
    assert not all(same(p[0], p[1]) for p in pairs)


@pytest.mark.parametrize("scope,budgets", [("global", "none"), ("layer", "none"), ("global", "erk")])
def test_tally_equals_vote_mask_for_every_pool(scope, budgets):
    """VoteTally fed epoch by epoch equals vote_mask on the list, for global, per-layer and ERK pools."""
    gen = torch.Generator().manual_seed(3)
    pairs = [tuple({n: torch.randn(sh, generator=gen) for n, sh in SHAPES.items()} for _ in range(3))
             for _ in range(4)]
    t = ballot.TallyConfig(density=0.3, eta=0.7, score="taylor", conflict="veto", scope=scope, budgets=budgets)
    shapes = {n: torch.Size(sh) for n, sh in SHAPES.items()}
    tally = ballot.VoteTally(t, shapes, torch.device("cpu"))
    for g_a, g_f, w in pairs:
        a_hat = {n: ballot.normalize_dim0(g) for n, g in g_a.items()}
        f_hat = {n: ballot.normalize_dim0(g) for n, g in g_f.items()}
        tally.add(a_hat, f_hat, w, t.per_tensor(w, list(SHAPES)))
    per = t.per_tensor(pairs[0][2], list(SHAPES))
    expected = ballot.vote_mask(pairs, 0.3, 0.7, "taylor", "veto", scope, per)
    votes, total = tally.shaped()
    assert same(ballot.mask_from_votes(votes, total, 0.3, scope, per), expected)
    # The state survives a round trip (what the checkpoint stores), and is a copy, not a view.
    st = tally.state_dict()
    first = next(iter(SHAPES))
    tally.votes[first] += 1
    other = ballot.VoteTally(t, shapes, torch.device("cpu"))
    other.load_state_dict(st)
    assert torch.equal(other.shaped()[0][first], votes[first])


def test_vote_gradients_in_mini_batches_equal_the_one_batch_gradient():
    from ballot_lib.data import DataBundle, Split
    from ballot_lib.training import DeviceData

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    split = Split(x, y)
    bundle = DataBundle(name="t", train=split, val=split, test=split, num_classes=3, class_names=list("abc"))
    data = DeviceData(split, bundle, torch.device("cpu"))
    w_cell = torch.tensor([0.5, 1.0, 2.0])
    plist = [p for n, p in net.named_parameters() if n.endswith("weight")]
    per = F.cross_entropy(net(x), y, reduction="none")
    w = w_cell[y]
    ra = torch.autograd.grad(per.mean(), plist, retain_graph=True)
    rf = torch.autograd.grad((w * per).sum() / w.sum(), plist)
    for bs in (1, 7, 50):
        ga, gf = ballot.vote_gradients(net, plist, data, w_cell, y, batch_size=bs)
        for g, r in zip(ga + gf, list(ra) + list(rf)):
            assert torch.allclose(g, r, rtol=1e-5, atol=1e-7), bs


def test_collecting_votes_does_not_change_the_dense_run_and_replay_gives_the_same_votes(during, replayed):
    exp_a, res_a = during
    exp_b, res_b, thetaT_before = replayed
    thetaT_a = exp_a.dense(SEED).run.load_tensor("thetaT.pt")
    thetaT_b = exp_b.dense(SEED).run.load_tensor("thetaT.pt")
    assert same(thetaT_a, thetaT_b)
    assert same(thetaT_b, thetaT_before)  # the replay did not touch the stored dense run
    cfg = make_config("ballot", density=DENSITY)
    va, vb = record_of(exp_a, cfg), record_of(exp_b, cfg)
    assert va["epochs"] == vb["epochs"] == list(range(1, EPOCHS + 1))
    assert same(va["votes"], vb["votes"]) and same(va["total"], vb["total"])
    assert va["weight_spread"] == vb["weight_spread"] and va["sign_counts"] == vb["sign_counts"]
    assert same(res_a.mask, res_b.mask)


def test_second_call_loads_without_training(during, monkeypatch):
    exp, res = during

    def fail(*args, **kwargs):
        raise AssertionError("training was called for a finished run")

    monkeypatch.setattr(experiment_module, "train", fail)
    again = run_method(exp, "ballot", SEED, density=DENSITY)
    assert again.id == res.id and same(again.mask, res.mask) and again.metrics == res.metrics


def test_refined_training_reports_the_selected_epoch(during):
    exp, res = during
    history = res.history()
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))  # rewind_epoch 0: the full schedule
    eps = make_config("ballot").select_eps
    selected = res.summary["selected_epoch"]
    assert selected == history[ballot._select_checkpoint(history, eps)]["epoch"]
    row = next(r for r in history if r["epoch"] == selected)
    for split in ("val", "test"):
        assert res.metrics[split], split
        for m, v in res.metrics[split].items():
            assert v == row[f"{split}_{m}"], (split, m)


def test_test_metrics_are_those_of_the_selected_epoch_not_the_last(during, monkeypatch):
    # Force the selection rule to pick the first epoch: the stored metrics must follow it.
    exp, _ = during
    from ballot_lib.methods import base

    monkeypatch.setattr(base, "select_checkpoint", lambda history, eps: 0)
    res = run_method(exp, "ballot", SEED, density=DENSITY, select_eps=0.5)
    first, last = res.history()[0], res.history()[-1]
    assert res.summary["selected_epoch"] == 1
    assert res.metrics["test"] == {m[5:]: v for m, v in first.items() if m.startswith("test_")}
    assert res.metrics["test"] != {m[5:]: v for m, v in last.items() if m.startswith("test_")}


def test_faithful_mode_votes_on_the_final_layer_at_the_lth_density(during):
    exp, _ = during
    cfg = make_config("ballot", mode="faithful", density=0.3)
    assert (cfg.eta, cfg.score, cfg.conflict, cfg.rewind_epoch, cfg.budgets) == (1.0, "signed", "none", 0, "none")
    # The authors take the vote gradients over the whole train split each epoch (the full mode samples 10 %).
    assert cfg.vote_fraction == 1.0 and cfg.vote_config().vote_fraction == 1.0
    # An option faithful mode fixes, set to another value, is refused (it used to be replaced silently).
    # γ and the voting epochs too: the authors weight by 1/acc_c (γ = 1) and vote every epoch (they were accepted).
    for option in ({"eta": 0.5}, {"rewind_epoch": 1}, {"refined": True, "budgets": "erk"}, {"gamma": 3.0},
                   {"vote_epochs": 2}, {"vote_fraction": 0.5}):
        with pytest.raises(ParameterError, match="mode='faithful' is the authors' procedure and fixes"):
            make_config("ballot", mode="faithful", density=0.3, **option)
    assert make_config("ballot", mode="faithful", density=0.3, eta=1.0, score="signed") == cfg
    res = run_method(exp, "ballot", SEED, mode="faithful", density=0.3)
    assert res.run.config["method_cfg"]["eta"] == 1.0 and res.run.config["method_cfg"]["score"] == "signed"
    assert res.run.config["method_cfg"]["fixes"] == ["faithful_density"]
    net = exp.new_model()
    names = prunable_names(net)
    last = [n for n in names if isinstance(net.get_submodule(n.rsplit(".", 1)[0]), torch.nn.Linear)][-1]
    assert last == names[-1]
    # Every other layer carries the LTH (global magnitude) mask of θT; the whole mask is at the density, like LTH's.
    lth = P.magnitude_mask(exp.model_from(exp.dense_weights(SEED, exp.train.epochs)), 0.3, "global")
    for n in names[:-1]:
        assert torch.equal(res.mask[n], lth[n]), n
    assert int(res.mask[last].sum()) == int(lth[last].sum())
    assert P.density(res.mask) == pytest.approx(round(0.3 * sum(m.numel() for m in lth.values()))
                                                / sum(m.numel() for m in lth.values()))
    # The final layer's entries are the authors' vote (signed score, global top-k each epoch) on its streamed
    # tally, the LTH mask's count of them kept.
    cfg_f = make_config("ballot", mode="faithful", density=0.3)
    rec = record_of(exp, cfg_f)
    assert list(rec["votes"]) == [last]
    expected = ballot.mask_from_votes(rec["votes"], rec["total"], 0.3, budgets={last: int(lth[last].sum())})
    assert torch.equal(res.mask[last], expected[last])


def test_behaviour_fixes_join_the_identity_of_the_configurations_they_change():
    from ballot_lib.methods.base import config_dict

    assert "fixes" not in config_dict(make_config("ballot", density=0.2))
    assert "fixes" not in config_dict(make_config("ballot", density=0.2, schedule="warmup_cosine"))
    assert "fixes" not in config_dict(make_config("ballot", density=0.2, rewind_epoch=1))
    late_warm = make_config("ballot", density=0.2, schedule="warmup_cosine", rewind_epoch=1)
    assert config_dict(late_warm)["fixes"] == ["warmup_from_k"]
    assert config_dict(make_config("ballot", density=0.2, mode="faithful"))["fixes"] == ["faithful_density"]


def test_refined_warmup_after_late_rewinding_starts_from_a_tenth_of_the_rate(tmp_path, monkeypatch):
    from ballot_lib.training import lr_at

    exp = make_experiment(tmp_path / "results", epochs=4)
    seen = {}
    real = ballot.train_masked

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ballot, "train_masked", spy)
    run_method(exp, "ballot", SEED, density=DENSITY, schedule="warmup_cosine", warmup_epochs=1, rewind_epoch=1)
    sched, k = seen["schedule"], seen["start_epoch"]
    assert k == 1
    lr = exp.train.lr
    # lr/10 when the retraining starts (epoch 1), the peak one warm-up epoch later, then cosine down to 0 at T.
    assert [lr_at(sched, e) for e in (1, 1.5, 2, 4)] == pytest.approx([lr / 10, 0.55 * lr, lr, 0.0], abs=1e-12)


@pytest.mark.parametrize("kw,message", [
    ({"mode": "x"}, r"unknown mode 'x'; valid choices: full, faithful"),
    ({"rewind_epoch": EPOCHS}, r"rewind_epoch must be in \[0, 3\)"),
    ({"score": "abs"}, r"unknown score 'abs'"),
])
def test_invalid_ballot_options_raise_before_anything_is_written(tmp_path, kw, message):
    exp = make_experiment(tmp_path / "results", epochs=EPOCHS)
    with pytest.raises(ValueError, match=message):
        run_method(exp, "ballot", SEED, density=DENSITY, **kw)
    assert tree(tmp_path / "results") == []


def test_zero_score_entries_keep_their_rank_like_the_authors():
    # Column 1 is a dead unit (zero gradients). The authors' topk(simi, 2) picks 3.0 and a 0.0; the zero casts no
    # vote, so the negative entry must not receive one either.
    g = torch.tensor([[3.0, 0.0], [-4.0, 0.0]])
    counts = ballot.vote_counts([({"w": g}, {"w": g})], 0.5)[0]["w"]
    assert counts.tolist() == [[1, 0], [0, 0]]


def test_loss_weights_by_hand():
    w = ballot.loss_weights(torch.tensor([0.1, 0.5, float("nan")]), temperature=0.5)
    e = torch.exp(torch.tensor([0.2, 1.0], dtype=torch.float64))
    expected = e / e.sum() * 2
    assert torch.allclose(w[:2], expected) and w[2] == 0
    assert float(w[:2].mean()) == pytest.approx(1.0)
    # Equal losses give flat weights; a higher loss always gets the larger weight.
    assert torch.allclose(ballot.loss_weights(torch.tensor([0.3, 0.3]), 0.1), torch.ones(2, dtype=torch.float64))
    assert w[1] > w[0]


def test_loss_weighting_option_is_validated_and_used(tmp_path):
    with pytest.raises(ValueError, match="unknown weighting 'margin'"):
        make_config("ballot", weighting="margin")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_config("ballot", weighting="loss", temperature=0.0)
    cfg = make_config("ballot", weighting="loss", temperature=0.25)
    assert cfg.vote_config().weighting == "loss" and cfg.vote_config().temperature == 0.25
    # Faithful mode keeps the authors' accuracy weights.
    with pytest.raises(ParameterError, match="fixes weighting to 'accuracy'; got weighting='loss'"):
        make_config("ballot", mode="faithful", weighting="loss")


@pytest.mark.parametrize("score", ballot.SCORES)
@pytest.mark.parametrize("conflict", ballot.CONFLICTS)
@pytest.mark.parametrize("pool", ["global", "layer"])
def test_flat_tally_equals_per_tensor_epoch_hits_with_many_ties(score, conflict, pool):
    """Integer-valued gradients make many equal scores: the flat one-sort vote must break ties exactly as
    epoch_hits does (lower index first, inside each tensor for per-layer pools)."""
    gen = torch.Generator().manual_seed(7)
    a = {n: torch.randint(-2, 3, sh, generator=gen).double() for n, sh in SHAPES.items()}
    f = {n: torch.randint(-2, 3, sh, generator=gen).double() for n, sh in SHAPES.items()}
    w = {n: torch.randint(-1, 2, sh, generator=gen).double() for n, sh in SHAPES.items()}
    t = ballot.TallyConfig(density=0.3, eta=1.0, score=score, conflict=conflict, scope=pool, budgets="none")
    tally = ballot.VoteTally(t, {n: torch.Size(sh) for n, sh in SHAPES.items()}, torch.device("cpu"))
    per = t.per_tensor(w, list(SHAPES))
    tally.add(a, f, w, per)
    scores, eligible, agree = {}, {}, {}
    for n in SHAPES:
        scores[n], eligible[n], agree[n] = ballot.score_normalized(a[n], f[n], 1.0, score, conflict, w[n])
    expected = ballot.epoch_hits(scores, eligible, agree, 0.3, per)
    for n in SHAPES:
        assert torch.equal(tally.votes[n].bool(), expected[n]), n

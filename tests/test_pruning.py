"""Pruning primitives (SPEC §4) on tiny modules with hand-made weights, and exactness on random odd-sized models."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ballot_lib import pruning as P
from ballot_lib.results import ResultsError, ResultsFormatError, repair_advice

BAD_DENSITIES = [0, 0.0, 1.5, -0.1, float("nan")]


def linear_5_2(weight) -> nn.Linear:
    net = nn.Linear(5, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return net


# Distinct magnitudes; |w| in decreasing order: 0.9 (0,1), 0.8 (1,1), 0.7 (1,2), 0.6 (1,4), 0.5 (0,4),
# 0.4 (1,3), 0.3 (0,2), 0.2 (1,0), 0.1 (0,0), 0.0 (0,3).
HAND_W = [[0.1, -0.9, 0.3, 0.0, 0.5],
          [-0.2, 0.8, -0.7, 0.4, 0.6]]


def odd_model(seed: int) -> nn.Module:
    """A small conv + linear model with odd layer sizes, randomly initialised by ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 7, 1), nn.Flatten(), nn.Linear(7 * 3 * 3, 11), nn.ReLU(),
        nn.Linear(11, 4),
    )


def n_prunable(model: nn.Module) -> int:
    return sum(w.numel() for w in P.prunable_weights(model).values())


# ------------------------------------------------------------------------------------------ magnitude masks


def test_magnitude_mask_hand_example_on_linear_5_2():
    net = linear_5_2(HAND_W)
    m3 = P.magnitude_mask(net, 0.3)
    assert set(m3) == {"weight"}  # biases are not prunable
    assert m3["weight"].dtype == torch.bool
    assert m3["weight"].int().tolist() == [[0, 1, 0, 0, 0], [0, 1, 1, 0, 0]]
    m5 = P.magnitude_mask(net, 0.5)
    assert m5["weight"].int().tolist() == [[0, 1, 0, 0, 1], [0, 1, 1, 0, 1]]
    # Per layer is the same for a single layer; density 1 keeps everything.
    assert torch.equal(P.magnitude_mask(net, 0.5, scope="layer")["weight"], m5["weight"])
    assert bool(P.magnitude_mask(net, 1.0)["weight"].all())
    assert P.density(m3) == 0.3 and P.density(m5) == 0.5


def test_magnitude_mask_accepts_a_mapping_of_weights():
    m = P.magnitude_mask({"w": torch.tensor(HAND_W)}, 0.3)
    assert m["w"].int().tolist() == [[0, 1, 0, 0, 0], [0, 1, 1, 0, 0]]


def test_ties_go_to_the_lower_flat_index_deterministically():
    net = linear_5_2([[1.0] * 5, [-1.0] * 5])  # every |w| equal
    m = P.magnitude_mask(net, 0.5)
    assert m["weight"].int().tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]
    assert P.magnitude_mask(net, 0.3)["weight"].int().tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    # Global ties across layers: the earlier layer (in prunable order) wins.
    two = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with torch.no_grad():
        for p in two.parameters():
            p.fill_(0.5)
    g = P.magnitude_mask(two, 0.5)
    assert bool(g["0.weight"].all()) and not bool(g["1.weight"].any())
    for _ in range(3):
        again = P.magnitude_mask(two, 0.5)
        assert all(torch.equal(again[n], g[n]) for n in g)


@pytest.mark.parametrize("seed", range(6))
def test_global_magnitude_mask_is_exact_and_keeps_the_largest(seed):
    net = odd_model(seed)
    N = n_prunable(net)
    assert N % 2 == 1  # so density 0.5 lands exactly on a .5 fraction
    gen = torch.Generator().manual_seed(seed)
    for d in [0.5, 1 / N * 7.5, float(torch.rand(1, generator=gen)) * 0.98 + 0.01, 1.0]:
        mask = P.magnitude_mask(net, d)
        kept = sum(int(m.sum()) for m in mask.values())
        assert kept == round(d * N), (d, N)
        weights = P.prunable_weights(net)
        kept_abs = torch.cat([weights[n].abs().flatten()[mask[n].flatten()] for n in mask])
        dropped_abs = torch.cat([weights[n].abs().flatten()[~mask[n].flatten()] for n in mask])
        if len(dropped_abs):
            assert kept_abs.min() >= dropped_abs.max()


@pytest.mark.parametrize("seed", range(6))
def test_layer_magnitude_mask_is_exact_per_layer(seed):
    net = odd_model(seed)
    weights = P.prunable_weights(net)
    for d in [0.5, 0.25, 0.35, 0.05]:
        mask = P.magnitude_mask(net, d, scope="layer")
        for n, w in weights.items():
            assert int(mask[n].sum()) == round(d * w.numel()), (n, d)
            kept, dropped = w.abs()[mask[n]], w.abs()[~mask[n]]
            if len(kept) and len(dropped):
                assert kept.min() >= dropped.max()


def test_global_and_layer_scopes_differ_when_layers_have_different_scales():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad():
        net[0].weight.mul_(100)  # layer 0 dominates a global ranking
    g = P.magnitude_mask(net, 0.5)
    assert bool(g["0.weight"].all()) and not bool(g["1.weight"].any())
    per = P.magnitude_mask(net, 0.5, scope="layer")
    assert int(per["0.weight"].sum()) == 8 and int(per["1.weight"].sum()) == 8
    with pytest.raises(ValueError, match="global, layer"):
        P.magnitude_mask(net, 0.5, scope="local")


def test_current_mask_never_revives_pruned_weights():
    net = odd_model(3)
    first = P.magnitude_mask(net, 0.5)
    # Make every pruned weight huge: a plain magnitude ranking would now pick them first.
    with torch.no_grad():
        params = dict(net.named_parameters())
        for n, m in first.items():
            params[n][~m] = 1000.0
    second = P.magnitude_mask(net, 0.3, current=first)
    N = n_prunable(net)
    assert sum(int(m.sum()) for m in second.values()) == round(0.3 * N)
    for n in first:
        assert not bool((second[n] & ~first[n]).any()), n
    # Without ``current`` the huge (previously pruned) weights would be chosen: the check above can fail.
    plain = P.magnitude_mask(net, 0.3)
    assert any(bool((plain[n] & ~first[n]).any()) for n in first)


# ------------------------------------------------------------------------------------------ density, random, structured


def test_density_and_sparsity_by_hand():
    mask = {"a": torch.tensor([1, 0, 1, 0]), "b": torch.tensor([[True, True]])}
    assert P.density(mask) == pytest.approx(4 / 6)
    assert P.sparsity(mask) == pytest.approx(2 / 6)
    assert P.layer_densities(mask) == {"a": 0.5, "b": 1.0}
    assert P.budgets_from_mask(mask) == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="empty"):
        P.density({})


def test_random_mask_like_matches_per_layer_counts():
    net = odd_model(0)
    ref = P.magnitude_mask(net, 0.3)
    r1 = P.random_mask(net, seed=1, like=ref)
    for n in ref:
        assert int(r1[n].sum()) == int(ref[n].sum()), n
    assert P.overlap(ref, r1) < 1.0  # random entries, not the magnitude ones
    r1b = P.random_mask(net, seed=1, like=ref)
    r2 = P.random_mask(net, seed=2, like=ref)
    assert all(torch.equal(r1[n], r1b[n]) for n in ref)  # same seed, same mask
    assert any(not torch.equal(r1[n], r2[n]) for n in ref)  # different seed, different mask


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_uniform_random_mask_is_exact(scope):
    net = odd_model(1)
    N = n_prunable(net)
    m = P.random_mask(net, 0.5, seed=0, scope=scope)
    if scope == "global":
        assert sum(int(v.sum()) for v in m.values()) == round(0.5 * N)
    else:
        for n, w in P.prunable_weights(net).items():
            assert int(m[n].sum()) == round(0.5 * w.numel())


def test_structured_mask_keeps_whole_rows_with_largest_norm_and_leaves_last_layer_dense():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        # L1 row norms 3, 12, 6, 9: at density 0.5 rows 1 and 3 survive.
        net[0].weight.copy_(torch.tensor([[1.0, -1, 1], [4, 4, -4], [2, 2, 2], [-3, 3, 3]]))
    m = P.structured_mask(net, 0.5)
    assert m["0.weight"].int().tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]]
    assert bool(m["2.weight"].all())
    # L2 ranking differs from L1 here: row [0, 0, 5] has L1 5 < 6 but L2 5 > sqrt(12).
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, 0, 5], [2, 2, 2], [0, 0, 0.1], [0, 0, 0.2]]))
    assert P.structured_mask(net, 0.25, n=1)["0.weight"][:, 0].int().tolist() == [0, 1, 0, 0]
    assert P.structured_mask(net, 0.25, n=2)["0.weight"][:, 0].int().tolist() == [1, 0, 0, 0]


def test_structured_mask_on_conv_rows_and_random_variant():
    net = odd_model(2)
    for random in (False, True):
        m = P.structured_mask(net, 0.4, random=random, seed=3)
        names = list(m)
        for n in names[:-1]:
            rows = m[n].reshape(m[n].shape[0], -1)
            assert bool((rows.all(1) | ~rows.any(1)).all()), n  # every output row all-kept or all-pruned
            assert int(rows.all(1).sum()) == max(1, round(0.4 * rows.shape[0]))
        assert bool(m[names[-1]].all())


# ------------------------------------------------------------------------------------------ IMP and ERK schedules


def test_imp_densities_with_levels_prune_the_same_fraction_and_end_on_target():
    ds = P.imp_densities(0.2, levels=3)
    assert len(ds) == 3 and ds[-1] == 0.2
    ratios = [ds[0] / 1.0] + [ds[i + 1] / ds[i] for i in range(2)]
    assert ratios == pytest.approx([0.2 ** (1 / 3)] * 3, rel=1e-12)
    assert P.imp_densities(0.3, levels=1) == [0.3]
    assert P.imp_densities(1.0, levels=4) == [1.0]
    with pytest.raises(ValueError, match="levels"):
        P.imp_densities(0.5, levels=0)


def test_imp_densities_with_rate_prune_rate_per_level_then_land_on_target():
    ds = P.imp_densities(0.3, rate=0.2)
    assert ds == pytest.approx([0.8, 0.64, 0.512, 0.4096, 0.32768, 0.3], rel=1e-12)
    assert ds[-1] == 0.3
    # The final level prunes less than ``rate`` (adjusted to hit the target), never more.
    assert 1 - ds[-1] / ds[-2] <= 0.2
    assert P.imp_densities(0.64, rate=0.2) == pytest.approx([0.8, 0.64])
    with pytest.raises(ValueError, match="rate"):
        P.imp_densities(0.5, rate=1.0)


@pytest.mark.parametrize("d", [0.05, 0.3, 0.9])
def test_erk_densities_reach_the_overall_density(d):
    net = odd_model(0)
    weights = P.prunable_weights(net)
    dens = P.erk_densities(net, d)
    N = sum(w.numel() for w in weights.values())
    assert sum(dens[n] * w.numel() for n, w in weights.items()) / N == pytest.approx(d, rel=1e-12)
    assert all(0 < v <= 1.0 for v in dens.values())
    # Non-dense layers follow the ERK proportions (sum(shape) / numel).
    free = [n for n in dens if dens[n] < 1.0]
    raw = {n: sum(w.shape) / w.numel() for n, w in weights.items()}
    for a in free:
        for b in free:
            assert dens[a] / dens[b] == pytest.approx(raw[a] / raw[b], rel=1e-9)


def test_budgets_from_densities_sum_exactly():
    net = odd_model(0)
    N = n_prunable(net)
    b = P.budgets_from_densities(net, P.erk_densities(net, 0.3), 0.3)
    assert sum(b.values()) == round(0.3 * N)
    m = P.mask_from_scores({n: w.abs() for n, w in P.prunable_weights(net).items()}, budgets=b)
    assert P.budgets_from_mask(m) == b


# ------------------------------------------------------------------------------------------ save / load


def test_save_and_load_mask_round_trip(tmp_path):
    net = odd_model(0)
    mask = P.magnitude_mask(net, 0.3)
    path = P.save_mask(mask, tmp_path / "m" / "mask.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.pt"]  # no temporary file left
    # The default file is the mask itself as plain tensors (SPEC §4): weights-only torch.load returns name -> bool
    # tensor of the weight's shape.
    raw = torch.load(path, weights_only=True)
    assert list(raw) == list(mask) and all(raw[n].dtype == torch.bool and torch.equal(raw[n], mask[n]) for n in mask)
    back = P.load_mask(path)
    assert list(back) == list(mask)
    assert all(torch.equal(back[n], mask[n]) for n in mask)
    path = P.save_mask(mask, tmp_path / "p" / "mask.pt", packed=True)
    # Packed: plain objects too (a format marker, shapes as lists of ints, uint8 tensors).
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw["format"], str) and raw["version"] == 1 and list(raw["masks"]) == list(mask)
    assert all(e["bits"].dtype == torch.uint8 and e["shape"] == list(mask[n].shape) for n, e in raw["masks"].items())
    back = P.load_mask(path)
    assert list(back) == list(mask)
    assert all(torch.equal(back[n], mask[n]) for n in mask)
    assert P.load_mask(path, like=odd_model(1)).keys() == mask.keys()
    with pytest.raises(ResultsFormatError, match="does not fit the model"):
        P.load_mask(path, like={n: (2, 2) for n in mask})


# (shape, how many entries are kept): numel not a multiple of 8, one element (1-d and 0-d), no element, a 4-d conv
# weight, and ResNet-50's largest layer (2.4M entries).
EDGE_SHAPES = [((13,), "random"), ((1,), "all"), ((1,), "none"), ((), "all"), ((0,), "none"), ((0, 5), "none"),
               ((7, 3, 5, 5), "random"), ((64, 3, 7, 7), "all"), ((512, 512, 3, 3), "random"),
               ((2048, 1001), "none")]


@pytest.mark.parametrize("shape, kept", EDGE_SHAPES, ids=[f"{s}-{k}" for s, k in EDGE_SHAPES])
def test_packed_mask_round_trip_is_exact(tmp_path, shape, kept):
    gen = torch.Generator().manual_seed(len(shape) + sum(shape))
    m = {"all": torch.ones(shape, dtype=torch.bool), "none": torch.zeros(shape, dtype=torch.bool),
         "random": torch.rand(shape, generator=gen) < 0.3}[kept]
    mask = {"a.weight": m, "b.weight": ~m, "c.weight": torch.rand(5, 3, generator=gen) < 0.5}
    path = P.save_mask(mask, tmp_path / "mask.pt", packed=True)
    raw = torch.load(path, weights_only=True)["masks"]["a.weight"]
    assert raw["shape"] == list(shape) and raw["bits"].shape == ((m.numel() + 7) // 8,)  # 8 entries per byte
    back = P.load_mask(path, like={n: tuple(t.shape) for n, t in mask.items()})
    assert list(back) == list(mask)
    for n, t in mask.items():
        assert back[n].dtype == torch.bool and back[n].device.type == "cpu" and back[n].shape == t.shape
        assert torch.equal(back[n], t)


def test_a_non_contiguous_mask_is_saved_in_its_logical_order(tmp_path):
    m = torch.rand(6, 10) < 0.5
    for packed in (False, True):
        path = P.save_mask({"w": m.t()}, tmp_path / f"mask{packed}.pt", packed=packed)
        assert torch.equal(P.load_mask(path)["w"], m.t())


def test_a_mask_of_the_old_format_still_loads(tmp_path):
    """Stores written before the bit-packed format (a dict name -> bool tensor, 1 byte per weight) load unchanged."""
    net = odd_model(0)
    mask = P.magnitude_mask(net, 0.3)
    torch.save({n: m.detach().bool().cpu() for n, m in mask.items()}, tmp_path / "mask.pt")  # the old save_mask
    back = P.load_mask(tmp_path / "mask.pt", like=net)
    assert list(back) == list(mask) and all(torch.equal(back[n], mask[n]) for n in mask)
    assert all(t.dtype == torch.bool for t in back.values())
    assert torch.equal(P.load_mask(P.save_mask(back, tmp_path / "new.pt", packed=True))["0.weight"],
                       mask["0.weight"])
    with pytest.raises(ResultsFormatError, match="does not fit the model"):
        P.load_mask(tmp_path / "mask.pt", like=odd_model(0)[:3])


def test_a_packed_mask_file_takes_about_a_bit_per_weight(tmp_path):
    mask = {"w": torch.rand(1000, 1000) < 0.1, "v": torch.rand(3, 3, 3, 3) < 0.5}
    numel = sum(m.numel() for m in mask.values())
    new = P.save_mask(mask, tmp_path / "new.pt", packed=True).stat().st_size
    old = P.save_mask(mask, tmp_path / "old.pt").stat().st_size
    assert numel / 8 <= new < numel / 8 + 4096 and new < old / 6


DELETE = object()


def _corrupt(raw: dict, key: str, value) -> None:
    """Set ``key`` of a packed mask file's content ``raw`` (``version``, ``masks``) or of its first tensor's entry
    (``shape``, ``bits``) to ``value`` (a callable maps the old value; :data:`DELETE` removes the key)."""
    where = raw if key in ("version", "masks") else next(iter(raw["masks"].values()))
    if value is DELETE:
        del where[key]
    else:
        where[key] = value(where[key]) if callable(value) else value


CORRUPT_PACKED = {
    "bits-bool": ("bits", lambda b: b.bool(), "not a 1-d torch.uint8 tensor"),
    "bits-int64": ("bits", lambda b: b.long(), "not a 1-d torch.uint8 tensor"),
    "bits-2d": ("bits", lambda b: b[:2].reshape(1, 2), "not a 1-d torch.uint8 tensor"),
    "bits-a-list": ("bits", lambda b: b.tolist(), "not a 1-d torch.uint8 tensor"),
    "bits-short": ("bits", lambda b: b[:-1], "needs"),
    "bits-long": ("bits", lambda b: torch.cat([b, b[:1]]), "needs"),
    "shape-negative": ("shape", [-5, 3, 3, 3], "not a list of non-negative ints"),
    "shape-float": ("shape", [5.0, 3, 3, 3], "not a list of non-negative ints"),
    "shape-bool": ("shape", [True, 3, 3, 3], "not a list of non-negative ints"),
    "shape-an-int": ("shape", 135, "not a list of non-negative ints"),
    "shape-a-string": ("shape", "5,3,3,3", "not a list of non-negative ints"),
    "shape-missing": ("shape", DELETE, "not a list of non-negative ints"),
    "shape-wrong-numel": ("shape", [5, 3, 3, 4], "needs"),
    "version-2": ("version", 2, "unknown .* format version 2"),
    "version-a-string": ("version", "1", "unknown .* format version '1'"),
    "version-true": ("version", True, "unknown .* format version True"),
    "version-missing": ("version", DELETE, "unknown .* format version None"),
    "masks-a-list": ("masks", [1, 2], "not a mapping"),
}


@pytest.mark.parametrize("case", list(CORRUPT_PACKED))
def test_a_malformed_packed_mask_raises_format_error_naming_the_file(tmp_path, case):
    key, value, expected = CORRUPT_PACKED[case]
    run = tmp_path / "results" / "runs" / "0123456789ab"
    path = P.save_mask(P.magnitude_mask(odd_model(0), 0.3), run / "mask.pt", packed=True)
    raw = torch.load(path, weights_only=True)
    _corrupt(raw, key, value)
    torch.save(raw, path)
    with pytest.raises(ResultsFormatError, match=expected) as err:
        P.load_mask(path)
    assert str(path) in str(err.value) and repair_advice(path) in str(err.value)


def test_the_mask_format_follows_the_environment_and_a_bad_value_is_refused_before_training(tmp_path, monkeypatch):
    from ballot_lib.checks import ParameterError

    mask = P.magnitude_mask(odd_model(0), 0.3)
    monkeypatch.setenv("BALLOT_MASK_FORMAT", "packed")
    raw = torch.load(P.save_mask(mask, tmp_path / "a.pt"), weights_only=True)
    assert "masks" in raw and torch.equal(P.load_mask(tmp_path / "a.pt")["0.weight"], mask["0.weight"])
    assert "0.weight" in torch.load(P.save_mask(mask, tmp_path / "b.pt", packed=False), weights_only=True)
    monkeypatch.setenv("BALLOT_MASK_FORMAT", "bits")
    with pytest.raises(ParameterError, match="\\$BALLOT_MASK_FORMAT .*'bits'.*plain, packed"):
        P.save_mask(mask, tmp_path / "c.pt")
    from conftest import make_experiment

    with pytest.raises(ParameterError, match="BALLOT_MASK_FORMAT"):
        make_experiment(tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_a_store_of_packed_masks_passes_the_store_check_and_loads(tmp_path, monkeypatch):
    """`results check` read mask files raw and called every packed mask malformed."""
    from ballot_lib.methods import run_method
    from ballot_lib.results import check_store, load_results
    from conftest import make_experiment

    monkeypatch.setenv("BALLOT_MASK_FORMAT", "packed")
    exp = make_experiment(tmp_path / "results")
    res = run_method(exp, "mp", 0, density=0.3)
    assert "masks" in torch.load(res.run.file("mask.pt"), weights_only=True)
    assert check_store(tmp_path / "results") == []
    assert len(load_results(tmp_path / "results")) > 0
    torch.save({"format": "ballot_lib.packed_mask", "version": 9, "masks": {}}, res.run.file("mask.pt"))
    assert any("malformed" in p for p in check_store(tmp_path / "results"))


def test_a_file_with_another_format_marker_is_not_a_mask(tmp_path):
    torch.save({"format": "something else", "version": 1, "masks": {}}, tmp_path / "mask.pt")
    with pytest.raises(ResultsFormatError, match="does not hold a mask"):
        P.load_mask(tmp_path / "mask.pt")


def test_truncated_mask_file_raises_results_error_naming_it(tmp_path):
    path = P.save_mask(P.magnitude_mask(odd_model(0), 0.3), tmp_path / "mask.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultsError, match="mask.pt"):
        P.load_mask(path)
    with pytest.raises(ResultsError, match="does not exist"):
        P.load_mask(tmp_path / "missing.pt")


def test_load_mask_rejects_a_file_without_a_mask(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt"):
        P.load_mask(tmp_path / "list.pt")


def test_apply_mask_and_check_mask_matches():
    net = linear_5_2(HAND_W)
    mask = P.magnitude_mask(net, 0.3)
    P.apply_mask(net, mask)
    expected = torch.tensor([[0, -0.9, 0, 0, 0], [0, 0.8, -0.7, 0, 0]])
    assert torch.equal(net.weight.detach(), expected)
    P.check_mask_matches(net, mask)
    with pytest.raises(ValueError, match="shape"):
        P.check_mask_matches(net, {"weight": torch.ones(5, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="missing"):
        P.check_mask_matches(net, {})


# ------------------------------------------------------------------------------------------ bad densities


@pytest.mark.parametrize("d", BAD_DENSITIES, ids=repr)
def test_density_outside_0_1_raises_naming_the_range(d):
    net = linear_5_2(HAND_W)
    for call in (
        lambda: P.magnitude_mask(net, d),
        lambda: P.magnitude_mask(net, d, scope="layer"),
        lambda: P.random_mask(net, d),
        lambda: P.structured_mask(net, d),
        lambda: P.erk_densities(net, d),
        lambda: P.imp_densities(d, levels=2),
        lambda: P.kept_count(d, 10),
    ):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            call()


def test_kept_count_rounds_half_to_even():
    # round(d * N) with Python's rounding: 2.5 -> 2, 3.5 -> 4 (documented in ballot_lib.pruning).
    assert P.kept_count(0.25, 10) == 2
    assert P.kept_count(0.35, 10) == 4
    assert P.kept_count(1.0, 7) == 7
    assert math.isclose(P.check_density(0.5), 0.5)
    with pytest.raises(ValueError, match="density"):  # no silent coercion of strings (issue #8)
        P.check_density("0.5")


def test_kept_counts_refuse_a_budget_that_is_not_a_whole_count():
    # 2.5 was cut to 2 without a word; integer scalars of numpy and torch are counts too.
    import numpy as np

    sizes = {"w": 4}
    with pytest.raises(ValueError, match=r"budgets\['w'\] must be an integer, got 2.5"):
        P.kept_counts(["w"], sizes, None, "global", {"w": 2.5})
    with pytest.raises(ValueError, match=r"budgets\['w'\] must be in \[0, 4\]"):
        P.kept_counts(["w"], sizes, None, "global", {"w": 5})
    assert P.kept_counts(["w"], sizes, None, "global", {"w": np.int64(3)}) == {"w": 3}
    assert P.kept_counts(["w"], sizes, None, "global", {"w": torch.tensor(2)}) == {"w": 2}

"""ballot_lib.pareto against brute force: random point sets with ties and duplicates, 2-D and 3-D, both directions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from ballot_lib import pareto


def brute_non_dominated(points, maximize):
    p = np.where(maximize, -np.asarray(points, float), np.asarray(points, float))
    n = len(p)
    out = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and (p[j] <= p[i]).all() and (p[j] < p[i]).any():
                out[i] = False
    return out


def brute_hypervolume(points, reference, maximize):
    """Cell decomposition over the coordinate grid of all points and the reference."""
    p = np.where(maximize, -np.asarray(points, float), np.asarray(points, float))
    r = np.where(maximize, -np.asarray(reference, float), np.asarray(reference, float))
    k = len(r)
    axes = [np.unique(np.r_[p[:, j][p[:, j] < r[j]], r[j]]) for j in range(k)]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        lower = np.array([axes[j][c] for j, c in enumerate(cell)])
        upper = np.array([axes[j][c + 1] for j, c in enumerate(cell)])
        if ((p <= lower).all(axis=1)).any():
            total += float(np.prod(upper - lower))
    return total


def random_points(rng, n, k, levels=5):
    """Points on a coarse integer lattice (many ties) with some rows duplicated."""
    p = rng.integers(0, levels, size=(n, k)).astype(float)
    dup = rng.integers(0, n, size=max(1, n // 5))
    return np.vstack([p, p[dup]])


DIRECTIONS = {2: [[True, True], [False, False], [True, False]],
              3: [[True, True, False], [False, False, False], [True, False, True]]}


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("trial", range(25))
def test_non_dominated_equals_brute_force(k, trial):
    rng = np.random.default_rng(100 * k + trial)
    pts = random_points(rng, int(rng.integers(1, 30)), k, levels=int(rng.integers(2, 7)))
    for maximize in DIRECTIONS[k]:
        got = pareto.non_dominated(pts, maximize)
        assert got.dtype == bool and got.shape == (len(pts),)
        np.testing.assert_array_equal(got, brute_non_dominated(pts, maximize))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("trial", range(25))
def test_hypervolume_equals_brute_force(k, trial):
    rng = np.random.default_rng(7 + 31 * k + trial)
    pts = random_points(rng, int(rng.integers(1, 15)), k, levels=int(rng.integers(2, 6)))
    pts = pts + rng.choice([0.0, 0.5], size=pts.shape) * (trial % 2)  # non-integer coordinates half the time
    for maximize in DIRECTIONS[k]:
        # A reference inside the cloud, so some points are beyond it in one objective and must count for nothing.
        ref = np.where(maximize, 1.0, 3.0)
        assert pareto.hypervolume(pts, ref, maximize) == pytest.approx(brute_hypervolume(pts, ref, maximize),
                                                                       abs=1e-9)


def test_hand_made_cases():
    # Duplicates are both on the front; a point equal in one objective and worse in the other is dominated.
    assert pareto.non_dominated([[1, 1], [1, 1], [1, 0], [0, 2]], [True, True]).tolist() == [True, True, False, True]
    # Minimised: (1, 3) and (2, 1) with reference (3, 4): 1*1 + 1*3 = 4.
    assert pareto.hypervolume([[1, 3], [2, 1]], [3, 4], [False, False]) == 4.0
    # A point on the reference boundary contributes nothing.
    assert pareto.hypervolume([[3, 1]], [3, 4], [False, False]) == 0.0
    # 3-D unit cube corner and one objective.
    assert pareto.hypervolume([[0, 0, 0]], [1, 2, 3], [False] * 3) == 6.0
    assert pareto.hypervolume([[0.2], [0.7]], [0.0], [True]) == pytest.approx(0.7)
    assert pareto.non_dominated([[0.2], [0.7], [0.7]], [True]).tolist() == [False, True, True]
    assert pareto.non_dominated(np.zeros((0, 2)), [True, True]).shape == (0,)


def test_four_objectives_and_large_2d_front_agree():
    rng = np.random.default_rng(0)
    pts = random_points(rng, 12, 4, levels=3)
    mx = [True, False, True, False]
    np.testing.assert_array_equal(pareto.non_dominated(pts, mx), brute_non_dominated(pts, mx))
    assert pareto.hypervolume(pts, [-1, 3, -1, 3], mx) == pytest.approx(brute_hypervolume(pts, [-1, 3, -1, 3], mx))
    # The O(n log n) 2-D sweep and the general pairwise path agree on a big set.
    big = rng.random((3000, 2)).round(2)
    np.testing.assert_array_equal(pareto.non_dominated(big, [True, False]),
                                  pareto._non_dominated_blocked(np.c_[-big[:, 0], big[:, 1]]))
    # The k >= 3 sweep and the pairwise path agree on a big set with ties.
    big3 = rng.random((2000, 3)).round(1)
    np.testing.assert_array_equal(pareto._non_dominated_sweep(big3), pareto._non_dominated_blocked(big3))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="one flag per objective"):
        pareto.non_dominated([[1, 2]], [True])
    with pytest.raises(ValueError, match="finite"):
        pareto.non_dominated([[1, float("nan")]], [True, True])
    with pytest.raises(ValueError, match="n x k"):
        pareto.hypervolume([1, 2, 3], [0, 0], [True, True])
    # A scalar flag is named in the message (not a TypeError while formatting it).
    with pytest.raises(ValueError, match=r"one flag per objective \(2 columns\), got \[True\]"):
        pareto.non_dominated([[1, 2]], True)
    # A reference of the wrong length blames the reference, not the flags.
    with pytest.raises(ValueError, match=r"reference must have one value per objective \(2\), got \[0.0, 0.0, 0.0\]"):
        pareto.hypervolume([[1, 2]], [0, 0, 0], [True, True])


def test_selection_rules():
    # (accuracy up, MCD down)
    pts = np.array([[0.95, 0.40], [0.93, 0.20], [0.90, 0.10], [0.70, 0.05]])
    mx = [True, False]
    # ε-constraint: least MCD with accuracy >= 0.92 -> row 1; with MCD <= 0.15, best accuracy -> row 2.
    assert pareto.epsilon_constraint(pts, mx, objective=1, bounds={0: 0.92}) == 1
    assert pareto.epsilon_constraint(pts, mx, objective=0, bounds={1: 0.15}) == 2
    with pytest.raises(ValueError, match="no point satisfies"):
        pareto.epsilon_constraint(pts, mx, objective=0, bounds={0: 0.99})
    # Lexicographic: accuracy first (exact) -> row 0; with a 0.03 tolerance, then MCD -> row 1.
    assert pareto.lexicographic(pts, mx, order=[0, 1]) == 0
    assert pareto.lexicographic(pts, mx, order=[0, 1], tolerances=[0.03, 0.0]) == 1
    # Chebyshev with equal weights against the ideal (0.95, 0.05), scaled by the ranges (0.25, 0.35):
    # scores max(0, 1), max(.08, .43), max(.2, .14), max(1, 0) -> row 2.
    assert pareto.chebyshev(pts, mx, [1, 1]) == 2
    # Accuracy weighted 3x: max(0, 1), max(.24, .43), max(.6, .14), max(3, 0) -> row 1.
    assert pareto.chebyshev(pts, mx, [3, 1]) == 1
    # All weight on accuracy -> the most accurate row.
    assert pareto.chebyshev(pts, mx, [1, 0]) == 0
    with pytest.raises(ValueError, match="weights"):
        pareto.chebyshev(pts, mx, [0, 0])

"""Pareto fronts, hypervolume and value-based operating-point selection (Prune Responsibly, SPEC §7).

Points are rows of an ``n x k`` array, one column per objective; ``maximize`` says, per objective, whether larger
is better. A point is **dominated** when another point is at least as good in every objective and strictly better
in at least one, so duplicate points do not dominate each other: both stay on the front.

* :func:`non_dominated` — the front as a boolean mask; O(n log n) for two objectives (sort and sweep), a
  lexicographic sweep against the front found so far otherwise (O(n log n + n · front size)).
* :func:`hypervolume` — the exact volume of objective space dominated by the points and bounded by a reference
  point (any k; a sweep for k = 2 and slicing along the last objective for k >= 3, fine for fronts of a few
  thousand points). Points not strictly better than the reference in every objective contribute nothing.
* Value judgements that pick one operating point: :func:`epsilon_constraint`, :func:`lexicographic` and
  :func:`chebyshev`. Each returns the index of the chosen row.

Example:
    >>> pts = [[0.9, 0.5], [0.8, 0.9], [0.7, 0.4]]          # (accuracy, sparsity), both maximised
    >>> non_dominated(pts, [True, True]).tolist()
    [True, True, False]
    >>> round(hypervolume(pts, reference=[0.0, 0.0], maximize=[True, True]), 6)
    0.77
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["chebyshev", "epsilon_constraint", "hypervolume", "lexicographic", "non_dominated"]


def _check_maximize(maximize: Sequence[bool], k: int) -> np.ndarray:
    """``maximize`` as a bool array of one flag per objective; each flag must be a real bool (``True``/``False``,
    numpy's too): ``"no"`` or ``0`` is not read as a flag."""
    from .checks import ParameterError

    if isinstance(maximize, (bool, np.bool_)):
        flags = [maximize]  # one flag: right for one objective only (the length check says so otherwise)
    elif isinstance(maximize, (str, bytes, Mapping)) or not hasattr(maximize, "__iter__") or \
            getattr(maximize, "ndim", 1) != 1:
        raise ParameterError(f"maximize must be a list of one True/False per objective ({k} columns), got "
                             f"{maximize!r}")
    else:
        flags = list(maximize)  # type: ignore[arg-type]  # (numpy's stubs narrow it oddly after the bool case)
    for i, f in enumerate(flags):
        if not isinstance(f, (bool, np.bool_)):
            raise ParameterError(f"maximize[{i}] must be True or False (larger is better), got {f!r} "
                                 f"({type(f).__name__})")
    if len(flags) != k or not flags:
        raise ParameterError(f"maximize must have one flag per objective ({k} columns), got {flags}")
    return np.asarray(flags, dtype=bool)


def _as_minimization(points, maximize: Sequence[bool]) -> np.ndarray:
    """``points`` as a float ``n x k`` array with maximised columns negated (so every column is minimised)."""
    p = np.asarray(points, dtype=float)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, len(maximize) if hasattr(maximize, "__len__") else 1)
    if p.ndim != 2:
        raise ValueError(f"points must be an n x k array, got shape {p.shape}")
    flags = _check_maximize(maximize, p.shape[1])
    if not np.isfinite(p).all():
        bad = np.argwhere(~np.isfinite(p))[0]
        raise ValueError(f"points must be finite; row {bad[0]}, objective {bad[1]} is {p[tuple(bad)]}")
    return np.where(flags, -p, p)


def non_dominated(points, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean array: True for the points no other point dominates (the Pareto front).

    Args:
        points: ``n x k`` array-like of objective values (k >= 1), finite.
        maximize: k booleans, True where larger is better.
    Returns:
        ``numpy`` bool array of length n. Duplicates of a front point are all on the front.
    Example:
        >>> non_dominated([[1, 1], [1, 1], [0, 2], [0, 0]], [True, True]).tolist()
        [True, True, True, False]
    """
    p = _as_minimization(points, maximize)
    n, k = p.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if k == 1:
        return p[:, 0] == p[:, 0].min()
    if k == 2:
        return _non_dominated_2d(p)
    return _non_dominated_sweep(p)


def _non_dominated_2d(p: np.ndarray) -> np.ndarray:
    """Sort by (x, y) and sweep: a point is dominated by an earlier x-group reaching y <= its y, or by a point of
    its own x-group with a strictly smaller y."""
    x, y = p[:, 0], p[:, 1]
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group_min = ys[starts]  # sorted by y within an x-group, so the first entry is the group minimum
    prev_min = np.minimum.accumulate(np.r_[np.inf, group_min[:-1]])
    group_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(xs)]))
    dominated_sorted = (prev_min[group_of] <= ys) | (group_min[group_of] < ys)
    out = np.empty(len(p), dtype=bool)
    out[order] = ~dominated_sorted
    return out


def _non_dominated_sweep(p: np.ndarray) -> np.ndarray:
    """Visit the points in lexicographic order, comparing each with the front found so far.

    Any point dominating p precedes it in that order, and if a dominated point dominates p so does the point
    dominating it, so the front so far is the only thing to compare with: O(n log n + n * front size).
    """
    n, k = p.shape
    out = np.zeros(n, dtype=bool)
    front = np.empty_like(p)
    m = 0
    for i in np.lexsort(p.T[::-1]):
        q = p[i]
        if m:
            f = front[:m]
            if ((f <= q).all(axis=1) & (f < q).any(axis=1)).any():
                continue
        front[m] = q
        m += 1
        out[i] = True
    return out


def _non_dominated_blocked(p: np.ndarray, block: int = 512) -> np.ndarray:
    """Pairwise test in blocks (O(n^2 k) time, O(block * n * k) memory)."""
    n = len(p)
    out = np.ones(n, dtype=bool)
    for s in range(0, n, block):
        q = p[s:s + block, None, :]  # candidates
        le = (p[None, :, :] <= q).all(axis=2)
        lt = (p[None, :, :] < q).any(axis=2)
        out[s:s + block] = ~(le & lt).any(axis=1)  # type: ignore[call-overload]
    return out


def hypervolume(points, reference, maximize: Sequence[bool]) -> float:
    """Exact volume dominated by ``points`` and bounded by ``reference``.

    Args:
        points: ``n x k`` array-like of objective values.
        reference: k values, the worst corner of the box (e.g. accuracy 0, sparsity 0, MCD 1).
        maximize: k booleans, True where larger is better.
    Returns:
        The hypervolume (0.0 when no point is strictly better than the reference in every objective).
    Example:
        >>> hypervolume([[1.0, 3.0], [2.0, 1.0]], reference=[3.0, 4.0], maximize=[False, False])
        4.0
    """
    p = _as_minimization(points, maximize)
    ref = np.asarray(reference, dtype=float).reshape(1, -1)
    if ref.shape[1] != p.shape[1]:
        raise ValueError(f"reference must have one value per objective ({p.shape[1]}), got {ref.ravel().tolist()}")
    r = _as_minimization(ref, maximize)[0]
    p = p[(p < r).all(axis=1)]
    if len(p) == 0:
        return 0.0
    return float(_hv_min(p, r))


def _hv_min(p: np.ndarray, r: np.ndarray) -> float:
    """Hypervolume of minimised points all strictly below ``r``."""
    k = p.shape[1]
    if k == 1:
        return float(r[0] - p[:, 0].min())
    p = p[non_dominated(p, [False] * k)]
    if k == 2:
        order = np.lexsort((p[:, 1], p[:, 0]))
        x, y = p[order, 0], p[order, 1]
        # On a 2-D front sorted by x ascending, y is descending; each point owns the strip up to the next x.
        x_next = np.r_[x[1:], r[0]]
        return float(np.sum((x_next - x) * (r[1] - y)))
    # Slice along the last objective: between consecutive distinct values, the cross-section is the
    # (k-1)-dimensional hypervolume of the points at or below the slice.
    order = np.argsort(p[:, -1], kind="stable")
    p = p[order]
    z = p[:, -1]
    levels = np.r_[np.unique(z), r[-1]]
    total = 0.0
    for lo, hi in zip(levels[:-1], levels[1:]):
        total += _hv_min(p[z <= lo, :-1], r[:-1]) * (hi - lo)
    return total


def _check_index(name: str, j: int, k: int) -> int:
    if not isinstance(j, (int, np.integer)) or not 0 <= j < k:
        raise ValueError(f"{name} must be an objective index in [0, {k}), got {j!r}")
    return int(j)


def epsilon_constraint(points, maximize: Sequence[bool], objective: int, bounds: Mapping[int, float]) -> int:
    """ε-constraint: the best row in ``objective`` among rows meeting every bound.

    A bound on a maximised objective is a floor (value >= bound), on a minimised one a ceiling (value <= bound).
    Ties in ``objective`` go to the first row. Raises ``ValueError`` when no row meets the bounds.

    Example:
        >>> epsilon_constraint([[0.9, 0.3], [0.8, 0.1], [0.6, 0.0]], [True, False], objective=1, bounds={0: 0.75})
        1
    """
    p = _as_minimization(points, maximize)
    k = p.shape[1]
    j = _check_index("objective", objective, k)
    ok = np.ones(len(p), dtype=bool)
    for c, b in bounds.items():
        c = _check_index("bound objective", c, k)
        ok &= p[:, c] <= (-b if maximize[c] else b)
    if not ok.any():
        raise ValueError(f"no point satisfies the bounds {dict(bounds)}; relax them")
    idx = np.flatnonzero(ok)
    return int(idx[np.argmin(p[idx, j])])


def lexicographic(points, maximize: Sequence[bool], order: Sequence[int],
                  tolerances: Optional[Sequence[float]] = None) -> int:
    """Lexicographic choice: best in ``order[0]`` (within ``tolerances[0]`` of the best), then best in ``order[1]``
    among those, and so on; remaining ties go to the first row.

    Example:
        >>> lexicographic([[0.90, 0.3], [0.89, 0.1]], [True, False], order=[0, 1], tolerances=[0.02, 0])
        1
    """
    p = _as_minimization(points, maximize)
    k = p.shape[1]
    tol = [0.0] * len(order) if tolerances is None else list(tolerances)
    if len(tol) != len(order) or any(t < 0 for t in tol):
        raise ValueError(f"tolerances must be {len(order)} non-negative numbers, got {tolerances}")
    idx = np.arange(len(p))
    if len(idx) == 0:
        raise ValueError("no points to choose from")
    for j, t in zip(order, tol):
        j = _check_index("order entry", j, k)
        best = p[idx, j].min()
        idx = idx[p[idx, j] <= best + t]
    return int(idx[0])


def chebyshev(points, maximize: Sequence[bool], weights: Sequence[float], ideal=None, nadir=None) -> int:
    """Weighted Chebyshev choice: the row minimising ``max_j w_j |f_j − ideal_j| / (nadir_j − ideal_j)``.

    ``ideal`` and ``nadir`` default to the best and worst value of each objective over the points (so every
    objective is scaled to [0, 1]); a constant objective contributes 0. Ties go to the first row.

    Example:
        >>> chebyshev([[1.0, 1.0], [0.6, 0.2], [0.9, 0.8]], [True, False], weights=[1, 1])
        2
    """
    p = _as_minimization(points, maximize)
    k = p.shape[1]
    if len(p) == 0:
        raise ValueError("no points to choose from")
    w = np.asarray(weights, dtype=float)
    if w.shape != (k,) or (w < 0).any() or not w.any():
        raise ValueError(f"weights must be {k} non-negative numbers, not all zero, got {list(weights)}")
    flags = np.asarray(maximize, dtype=bool)
    lo = p.min(axis=0) if ideal is None else np.where(flags, -np.asarray(ideal, float), np.asarray(ideal, float))
    hi = p.max(axis=0) if nadir is None else np.where(flags, -np.asarray(nadir, float), np.asarray(nadir, float))
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    score = (w * np.abs(p - lo) / span).max(axis=1)
    return int(np.argmin(score))

"""Pruning primitives: masks over prunable weights (SPEC §4).

A *mask* maps each prunable weight's name to a 0/1 tensor of its shape (``torch.bool`` here). Masks are exact:
a mask at density d keeps exactly ``round(d * N)`` weights over all prunable weights (``scope="global"``) or
``round(d * n_l)`` in every layer (``scope="layer"``). Ties in a score are broken deterministically: the entry
with the lower flat index (in the concatenation order of :func:`ballot_lib.models.prunable_names`) wins.

The vocabulary mirrors ``torch.nn.utils.prune``: ``l1``/magnitude unstructured (global or per layer), random
unstructured, Ln structured over output channels, and random structured.

Every way of choosing a mask is a registered *mask strategy* with one signature (:data:`MASK_STRATEGIES`,
:func:`make_mask`); methods ask for a strategy by name instead of branching. Every top-k selection (these masks
and Ballot's votes) goes through one helper, :func:`top_indices`, with per-tensor counts from
:func:`kept_counts`.

Example:
    >>> net = torch.nn.Linear(5, 2)
    >>> mask = magnitude_mask(net, 0.5)
    >>> density(mask)
    0.5
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from .maskbits import is_packed_mask, pack_mask, unpack_mask

from .models import prunable_names
from .registry import Registry, check_choice

if TYPE_CHECKING:
    import pandas

Mask = dict[str, torch.Tensor]
SCOPES = ("global", "layer")


def check_density(density: Any) -> float:
    """Return ``density`` as a float if it is a number in (0, 1], else raise ``ValueError`` naming the valid range.

    Strings (``"0.2"``) and bools are rejected, not converted (see :func:`ballot_lib.checks.check_density`).
    """
    from .checks import check_density as _check

    return _check(density)


def _check_scope(scope: str) -> str:
    check_choice("scope", scope, SCOPES)
    return scope


#: The layer types whose ``weight`` is prunable (:func:`ballot_lib.models.prunable_names`), for messages.
PRUNABLE_LAYERS = "nn.Linear and nn.Conv2d"


def prunable_weights(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The prunable weight tensors of a model (detached), or the mapping itself if a dict was given.

    A model without prunable weights, an empty mapping or anything else raises :class:`ParameterError` saying so.
    """
    from .checks import ParameterError

    if isinstance(model, nn.Module):
        params = dict(model.named_parameters())
        names = prunable_names(model)
        if not names:
            raise ParameterError(f"model {type(model).__name__} has no prunable weights: only the weights of "
                                 f"{PRUNABLE_LAYERS} layers (not listed in its prune_ignore) are pruned")
        return {n: params[n].detach() for n in names}
    if not isinstance(model, Mapping):
        raise ParameterError(f"model must be an nn.Module or a mapping name -> weight tensor, got "
                             f"{type(model).__name__} {model!r:.60}")
    if not model:
        raise ParameterError("model: the mapping name -> weight tensor is empty (no weights to prune)")
    out = {}
    for n, t in model.items():
        try:
            out[n] = torch.as_tensor(t).detach()
        except (TypeError, ValueError, RuntimeError):
            raise ParameterError(f"model[{n!r}] must be a weight tensor, got {type(t).__name__}") from None
    return out


def kept_count(density: Optional[float], n: int) -> int:
    """Number of entries a mask at ``density`` keeps out of ``n``: ``round(density * n)`` (half to even).

    ``density`` is checked (:func:`check_density`): None, as any non-number, raises ``ParameterError``."""
    return int(round(check_density(density) * n))


def top_indices(keys: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """Indices of the ``k`` best entries of 1-D tensors ordered lexicographically by ``keys`` (each descending).

    ``keys[0]`` is the most significant key; remaining ties go to the lower index. With one key this is a plain
    top-k. Used by every mask of this module and by Ballot's votes (keys: not vetoed, score; or votes, summed
    score).

    Example:
        >>> top_indices([torch.tensor([1, 1, 0]), torch.tensor([0.1, 0.5, 9.0])], 2).tolist()
        [1, 0]
    """
    n = keys[0].numel()
    order = torch.arange(n, device=keys[0].device)
    for key in reversed(keys):  # stable sorts from the least to the most significant key
        order = order[torch.argsort(key[order], descending=True, stable=True)]
    return order[:k]


def kept_counts(names: Sequence[str], sizes: Mapping[str, int], density: Optional[float], scope: str,
                budgets: Optional[Mapping[str, Any]] = None) -> Optional[dict[str, int]]:
    """Kept count per tensor: ``budgets`` (checked), ``round(density * n_l)`` for ``scope="layer"``, or ``None``
    for one global count ``round(density * N)`` over all tensors (``scope="global"``)."""
    if budgets is not None:
        missing = set(names) - set(budgets)
        if missing:
            raise ValueError(f"budgets lack tensors {sorted(missing)}")
        from .checks import check_int

        # an integer count (2.5 was cut to 2 silently): numpy and torch integer scalars are integers too
        return {n: check_int(f"budgets[{n!r}]", budgets[n].item() if isinstance(budgets[n], torch.Tensor)
                             else budgets[n], 0, sizes[n], hint=f" (entries of {n})") for n in names}
    if scope == "layer":
        return {n: kept_count(density, sizes[n]) for n in names}
    return None


def topk_mask_flat(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of a 1-D tensor; ties go to the lower index."""
    out = torch.zeros(scores.numel(), dtype=torch.bool)
    out[top_indices([scores.double()], k).cpu()] = True
    return out


def mask_from_scores(
    scores: Mapping[str, torch.Tensor],
    density: Optional[float] = None,
    scope: str = "global",
    budgets: Optional[Mapping[str, int]] = None,
) -> Mask:
    """Keep the highest-scoring entries: ``round(d*N)`` globally, ``round(d*n_l)`` per layer, or ``budgets[name]``.

    ``budgets`` (kept count per tensor), when given, overrides ``scope`` and ``density``.
    Entries scored ``-inf`` are only kept when the budget exceeds the number of finite entries.
    """
    names = list(scores)
    flat = {n: scores[n].detach().flatten().cpu() for n in names}
    if budgets is None:
        density = check_density(density)
        _check_scope(scope)
    per_tensor = kept_counts(names, {n: flat[n].numel() for n in names}, density, scope, budgets)
    if per_tensor is not None:
        return {n: topk_mask_flat(flat[n], per_tensor[n]).view_as(scores[n]) for n in names}
    allv = torch.cat([flat[n] for n in names])
    return unflatten(topk_mask_flat(allv, kept_count(density, allv.numel())), scores)


def unflatten(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut a 1-D tensor laid out as the concatenation of ``like``'s flattened tensors back into their shapes."""
    out, start = {}, 0
    for n, t in like.items():
        out[n] = flat[start:start + t.numel()].view(t.shape)
        start += t.numel()
    return out


def magnitude_mask(
    model: nn.Module | Mapping[str, torch.Tensor],
    density: float,
    scope: str = "global",
    current: Optional[Mask] = None,
) -> Mask:
    """Keep the largest-|w| prunable weights at ``density`` (of *all* prunable weights).

    Args:
        model: a model (its prunable weights are used) or a mapping name -> weight tensor.
        density: fraction kept, in (0, 1].
        scope: ``"global"`` (one threshold over all prunable weights) or ``"layer"`` (each layer at ``density``).
        current: an existing mask; entries it has pruned are never revived (used by iterative pruning).
    Returns:
        dict name -> bool tensor with exactly ``round(density * N)`` True entries (per layer for ``"layer"``).
    """
    weights = prunable_weights(model)
    scores = {}
    for n, w in weights.items():
        s = w.abs().double()
        if current is not None:
            s = s.masked_fill(~current[n].to(s.device).bool(), float("-inf"))
        scores[n] = s
    return mask_from_scores(scores, density, scope)


def random_mask(
    model: nn.Module | Mapping[str, torch.Tensor],
    density: Optional[float] = None,
    seed: int = 0,
    like: Optional[Mask] = None,
    scope: str = "global",
) -> Mask:
    """A random unstructured mask: uniform at ``density``, or with the per-layer kept counts of ``like``.

    The ``like`` form is the control for "selection": same per-layer densities as a given mask, random entries.
    """
    weights = prunable_weights(model)
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(w.shape, generator=gen, dtype=torch.float64) for n, w in weights.items()}
    if like is not None:
        return mask_from_scores(scores, budgets={n: int(like[n].sum()) for n in weights})
    return mask_from_scores(scores, density, scope)


def structured_mask(
    model: nn.Module | Mapping[str, torch.Tensor],
    density: float,
    n: float = 1,
    random: bool = False,
    seed: int = 0,
) -> Mask:
    """Prune whole output channels/units per layer (``torch.nn.utils.prune.ln_structured`` with ``dim=0``).

    Every layer keeps ``round(density * out)`` of its output rows (at least one), ranked by their L_n norm, or at
    random if ``random`` is True. The last layer (the classifier) is left dense so no class loses its logit.
    """
    weights = prunable_weights(model)
    check_density(density)
    gen = torch.Generator().manual_seed(seed)
    names = list(weights)
    out = {}
    for i, (name, w) in enumerate(weights.items()):
        rows = w.shape[0]
        if i == len(names) - 1:
            out[name] = torch.ones_like(w, dtype=torch.bool)
            continue
        if random:
            score = torch.rand(rows, generator=gen, dtype=torch.float64)
        else:
            score = w.reshape(rows, -1).double().norm(p=n, dim=1)
        keep_rows = topk_mask_flat(score, max(1, kept_count(density, rows)))
        out[name] = keep_rows.view(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
    return out


def check_mask(mask: Mapping[str, torch.Tensor], name: str = "mask") -> Mapping[str, torch.Tensor]:
    """Return ``mask`` if it is a non-empty mapping name -> tensor of 0/1 (or bool) entries, else raise
    :class:`ParameterError` naming what is wrong."""
    from .checks import ParameterError

    if not isinstance(mask, Mapping):
        raise ParameterError(f"{name} must be a mapping name -> 0/1 tensor, got {type(mask).__name__} {mask!r:.60}")
    for n, m in mask.items():
        if not isinstance(m, torch.Tensor):
            raise ParameterError(f"{name}[{n!r}] must be a 0/1 tensor, got {type(m).__name__}")
    if sum(m.numel() for m in mask.values()) == 0:
        raise ParameterError(f"{name} is empty (no entries): a mask maps each prunable weight to a 0/1 tensor")
    for n, m in mask.items():
        if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
            bad = m[(m != 0) & (m != 1)].flatten()[:3].tolist()
            raise ParameterError(f"{name}[{n!r}] must hold only 0/1 (or True/False) entries, got e.g. {bad}")
    return mask


def density(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of entries kept over all tensors of the mask (a mapping name -> 0/1 or bool tensor)."""
    check_mask(mask)
    kept = sum(int(m.bool().sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return kept / total


def layer_densities(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Density of each tensor of the mask."""
    check_mask(mask)
    return {n: float(m.bool().float().mean()) for n, m in mask.items()}


def overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Share of ``a``'s kept entries that ``b`` also keeps (1.0 for identical masks)."""
    both = sum(int((a[n].bool() & b[n].bool()).sum()) for n in a)
    kept = sum(int(a[n].bool().sum()) for n in a)
    return both / kept if kept else float("nan")


def imp_densities(target: float, levels: Optional[int] = None, rate: float = 0.2) -> list[float]:
    """Densities after each level of iterative magnitude pruning, the last one exactly ``target``.

    With ``levels`` given, every level prunes the same fraction ``1 - target**(1/levels)`` of the remaining
    weights. Otherwise each level prunes ``rate`` of the remaining weights and the final level is adjusted to land
    on ``target``.
    """
    target = check_density(target)
    if target == 1.0:
        return [1.0]
    if levels is not None:
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        keep = target ** (1.0 / levels)
        out = [keep ** (i + 1) for i in range(levels)]
    else:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"rate must be in (0, 1), got {rate}")
        out, d = [], 1.0
        while d * (1 - rate) > target * (1 + 1e-9):
            d *= 1 - rate
            out.append(d)
        out.append(target)
    out[-1] = target
    return out


def erk_densities(
    model: nn.Module | Mapping[str, torch.Tensor], density: float, power: float = 1.0
) -> dict[str, float]:
    """Erdős–Rényi-Kernel per-layer densities with overall density ``density`` (RigL's ERK).

    Layer l's density is proportional to ``(sum(shape) / prod(shape))**power``; layers that would exceed 1 are
    made dense and the rest rescaled.
    """
    weights = prunable_weights(model)
    d = check_density(density)
    sizes = {n: w.numel() for n, w in weights.items()}
    raw = {n: (sum(w.shape) / w.numel()) ** power for n, w in weights.items()}
    dense: set[str] = set()
    total = sum(sizes.values())
    while True:
        budget = d * total - sum(sizes[n] for n in dense)
        free = [n for n in weights if n not in dense]
        denom = sum(raw[n] * sizes[n] for n in free)
        eps = budget / denom if denom > 0 else 0.0
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        dense.update(over)
    return {n: 1.0 if n in dense else eps * raw[n] for n in weights}


def budgets_from_mask(mask: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Kept count per tensor of a reference mask (for per-layer budgets)."""
    return {n: int(m.bool().sum()) for n, m in mask.items()}


def budgets_from_densities(
    model: nn.Module | Mapping[str, torch.Tensor], layer_density: Mapping[str, float], total_density: float
) -> dict[str, int]:
    """Integer per-tensor budgets from per-layer densities, adjusted so they add up to ``round(d * N)`` exactly."""
    weights = prunable_weights(model)
    sizes = {n: w.numel() for n, w in weights.items()}
    target = kept_count(total_density, sum(sizes.values()))
    raw = {n: min(1.0, layer_density[n]) * sizes[n] for n in weights}
    out = {n: int(math.floor(v)) for n, v in raw.items()}
    # Hand out the remaining units to the largest fractional parts (stable by order) without exceeding sizes.
    rest = target - sum(out.values())
    order = sorted(weights, key=lambda n: -(raw[n] - out[n]))
    i = 0
    while rest > 0 and any(out[n] < sizes[n] for n in weights):
        n = order[i % len(order)]
        if out[n] < sizes[n]:
            out[n] += 1
            rest -= 1
        i += 1
    return out


# ------------------------------------------------------------------------------------------ mask strategies

#: ``strategy(weights, density, *, seed, like, n, current) -> Mask``: every strategy takes the same arguments.
#: ``weights``: name -> prunable weight; ``seed``: for random strategies; ``like``: a reference mask (per-layer
#: counts); ``n``: the norm order of structured ranking; ``current``: entries already pruned stay pruned.
MaskStrategy = Callable[..., Mask]

#: name -> :data:`MaskStrategy`; call through :func:`make_mask`.
MASK_STRATEGIES: Registry[MaskStrategy] = Registry("mask strategy")


def _needs(name: str, what: str, value: object) -> None:
    if value is None:
        raise ValueError(f"mask strategy {name!r} needs {what}")


def _refuses(name: str, what: str, value: object) -> None:
    if value is not None:
        raise ValueError(f"mask strategy {name!r} does not take {what} (only magnitude strategies keep a current "
                         "mask's pruned entries pruned)")


@MASK_STRATEGIES.register("magnitude_global")
def _magnitude_global(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Largest |w| with one threshold over all prunable weights: exactly round(d·N) kept."""
    return magnitude_mask(weights, density, "global", current)


@MASK_STRATEGIES.register("magnitude_layer")
def _magnitude_layer(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Largest |w| in every layer separately: round(d·n_l) kept per layer."""
    return magnitude_mask(weights, density, "layer", current)


@MASK_STRATEGIES.register("random")
def _random_global(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Uniformly random entries over all prunable weights: exactly round(d·N) kept."""
    _refuses("random", "current", current)
    return random_mask(weights, density, seed=seed, scope="global")


@MASK_STRATEGIES.register("random_layer")
def _random_layer(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Uniformly random entries in every layer: round(d·n_l) kept per layer."""
    _refuses("random_layer", "current", current)
    return random_mask(weights, density, seed=seed, scope="layer")


@MASK_STRATEGIES.register("random_like")
def _random_like(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Random entries with the per-layer kept counts of ``like`` (the control for "selection")."""
    _needs("random_like", "a reference mask (like=...)", like)
    _refuses("random_like", "current", current)
    return random_mask(weights, seed=seed, like=like)


@MASK_STRATEGIES.register("erk_random")
def _erk_random(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Random entries with Erdős–Rényi-Kernel per-layer densities (RigL/ITOP's start), round(d·N) kept overall."""
    _refuses("erk_random", "current", current)
    weights = prunable_weights(weights)
    budgets = budgets_from_densities(weights, erk_densities(weights, density), density)
    return _random_with_budgets(weights, budgets, seed)


def _random_with_budgets(weights: Mapping[str, torch.Tensor], budgets: Mapping[str, int], seed: int) -> Mask:
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(w.shape, generator=gen, dtype=torch.float64) for n, w in weights.items()}
    return mask_from_scores(scores, budgets=budgets)


@MASK_STRATEGIES.register("ln_structured")
def _ln_structured(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Whole output channels by L_n norm, round(d·out) rows per hidden layer; the classifier stays dense."""
    _refuses("ln_structured", "current", current)
    return structured_mask(weights, density, n=n)


@MASK_STRATEGIES.register("random_structured")
def _random_structured(weights, density, *, seed=0, like=None, n=1.0, current=None) -> Mask:
    """Whole output channels at random, round(d·out) rows per hidden layer; the classifier stays dense."""
    _refuses("random_structured", "current", current)
    return structured_mask(weights, density, random=True, seed=seed)


def make_mask(
    strategy: str,
    model: nn.Module | Mapping[str, torch.Tensor],
    density: float,
    *,
    seed: int = 0,
    like: Optional[Mapping[str, torch.Tensor]] = None,
    n: float = 1.0,
    current: Optional[Mapping[str, torch.Tensor]] = None,
) -> Mask:
    """The mask that strategy ``strategy`` (a name of :data:`MASK_STRATEGIES`) puts on ``model``'s prunable weights.

    Args:
        strategy: ``magnitude_global``, ``magnitude_layer``, ``random``, ``random_layer``, ``random_like``,
            ``erk_random``, ``ln_structured`` or ``random_structured``.
        model: a model (its prunable weights) or a mapping name -> weight tensor.
        density: fraction kept, in (0, 1] (``random_like`` takes its counts from ``like`` instead).
        seed: the random strategies' seed.
        like: reference mask whose per-layer kept counts ``random_like`` copies.
        n: norm order of ``ln_structured``.
        current: magnitude strategies only: entries it prunes are never revived (iterative pruning).
    Returns:
        dict name -> bool tensor.
    Example:
        >>> make_mask("magnitude_layer", torch.nn.Linear(4, 2), 0.5)["weight"].sum().item()
        4
    """
    fn = MASK_STRATEGIES.get(strategy)
    check_density(density)
    weights = prunable_weights(model)
    mask = fn(weights, density, seed=seed, like=like, n=n, current=current)
    # What a strategy returns is checked (a registered one may be anyone's): a dict of bool tensors over exactly
    # the prunable weights, with their shapes.
    problem = (None if isinstance(mask, Mapping) else f"it returned {type(mask).__name__}, not a dict") or \
        mask_mismatch(mask, {k: tuple(w.shape) for k, w in weights.items()}) or \
        next((f"its tensor {k} has dtype {m.dtype}, not torch.bool" for k, m in mask.items()
              if not isinstance(m, torch.Tensor) or m.dtype != torch.bool), None)
    if problem:
        raise ValueError(f"mask strategy {strategy!r} returned a mask that does not fit: {problem}")
    return mask


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned weights of ``model`` in place and return it."""
    params = dict(model.named_parameters())
    unknown = set(mask) - set(params)
    if unknown:
        raise ValueError(f"mask names parameters the model does not have: {sorted(unknown)[:5]}")
    with torch.no_grad():
        for n, m in mask.items():
            params[n].mul_(m.to(params[n].device, params[n].dtype))
    return model


def check_mask_matches(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless ``mask`` covers exactly the model's prunable weights with matching shapes."""
    params = dict(model.named_parameters())
    problem = mask_mismatch(mask, {n: tuple(params[n].shape) for n in prunable_names(model)})
    if problem:
        raise ValueError(f"mask does not match the model: {problem}")


#: The environment variable choosing the format :func:`save_mask` writes: ``plain`` (default) or ``packed``.
MASK_FORMAT_ENV = "BALLOT_MASK_FORMAT"
MASK_FORMATS = ("plain", "packed")


def mask_format(packed: Optional[bool] = None) -> str:
    """The mask file format to write: ``packed`` if ``packed`` is true, ``plain`` if false, else
    ``$BALLOT_MASK_FORMAT`` (default ``plain``). Raises ``ParameterError`` naming the variable and the choices for
    any other value (:class:`ballot_lib.experiment.Experiment` checks it before anything trains)."""
    if packed is not None:
        return "packed" if packed else "plain"
    from .checks import check_str

    return check_str(f"${MASK_FORMAT_ENV}", os.environ.get(MASK_FORMAT_ENV, "plain").strip() or "plain",
                     MASK_FORMATS)


def save_mask(mask: Mapping[str, torch.Tensor], path: str | os.PathLike, packed: Optional[bool] = None) -> Path:
    """Save a mask atomically, with no pickled modules, in one of two formats (:func:`load_mask` reads both):

    * ``plain`` (default): a dict name -> bool tensor of the weight's shape, 1 byte per weight — what
      ``torch.load(path, weights_only=True)`` returns is the mask itself;
    * ``packed`` (``packed=True``, or ``$BALLOT_MASK_FORMAT=packed``): 8 entries per byte (see
      :mod:`ballot_lib.maskbits`), about ``numel / 8`` bytes — a ResNet-18 mask takes 1.4 MB instead of 11 MB, so
      notebook 04's full populations (10,000 masks each) take ~14 GB instead of ~112 GB. Read it with
      :func:`load_mask`.
    """
    from .results import atomic_torch_save

    if mask_format(packed) == "packed":
        return atomic_torch_save(pack_mask(mask), path)
    return atomic_torch_save({n: m.detach().bool().cpu() for n, m in mask.items()}, path)


def mask_mismatch(mask: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]) -> Optional[str]:
    """What is wrong with ``mask`` for prunable weights of ``shapes`` (name -> shape), or ``None`` if it fits."""
    missing, extra = sorted(set(shapes) - set(mask)), sorted(set(mask) - set(shapes))
    if missing or extra:
        return f"its tensors do not match the model's prunable weights: missing {missing[:5]}, extra {extra[:5]}"
    for n, shape in shapes.items():
        if tuple(mask[n].shape) != tuple(shape):
            return f"its tensor {n} has shape {tuple(mask[n].shape)}, the model's weight has {tuple(shape)}"
    return None


def load_mask(path: str | os.PathLike, like: nn.Module | Mapping[str, Sequence[int]] | None = None) -> Mask:
    """Load a mask saved by :func:`save_mask` with weights-only loading.

    Reads both the bit-packed format :func:`save_mask` writes and the older one (a plain dict name -> bool tensor,
    1 byte per weight), to the same result.

    Args:
        path: the ``mask.pt`` file.
        like: a model, or a mapping prunable weight name -> shape: the mask must cover exactly those weights with
            those shapes.
    Returns:
        name -> CPU bool tensor of the weight's shape.
    Raises:
        ballot_lib.results.ResultsError: naming the file, if it is missing or corrupt; its subclass
            ``ResultsFormatError`` (also a ``ValueError``) if the file is not a mask (a dict of tensors, or a
            bit-packed mask), is a malformed bit-packed mask (unknown format version, bad shapes, packed bits of
            the wrong dtype or length) or does not fit ``like``. The message says the fix.
    """
    from .results import ResultsFormatError, repair_advice, safe_torch_load

    obj = safe_torch_load(path, what="mask")
    if is_packed_mask(obj):
        try:
            mask = unpack_mask(obj)
        except ValueError as e:
            raise ResultsFormatError(f"mask file {path} is malformed ({e}); {repair_advice(path)}") from None
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        mask = {n: v.bool() for n, v in obj.items()}
    else:
        raise ResultsFormatError(f"mask file {path} does not hold a mask (a dict of tensors, or a bit-packed mask); "
                                 f"{repair_advice(path)}")
    if like is not None:
        shapes = like if not isinstance(like, nn.Module) else {
            n: tuple(p.shape) for n, p in prunable_weights(like).items()}
        problem = mask_mismatch(mask, shapes)
        if problem:
            raise ResultsFormatError(f"mask file {path} does not fit the model: {problem}; {repair_advice(path)}")
    return mask


def describe(mask: Mapping[str, torch.Tensor]) -> "pandas.DataFrame":
    """One row per tensor: size, kept, density."""
    import pandas as pd

    return pd.DataFrame(
        [{"layer": n, "size": m.numel(), "kept": int(m.bool().sum()), "density": float(m.bool().float().mean())}
         for n, m in mask.items()]
    )


def sparsity(mask: Mapping[str, torch.Tensor]) -> float:
    """1 − density."""
    return 1.0 - density(mask)


__all__: Sequence[str] = [
    "Mask", "PRUNABLE_LAYERS", "apply_mask", "budgets_from_densities", "budgets_from_mask", "check_density",
    "check_mask", "check_mask_matches",
    "density", "erk_densities", "imp_densities", "kept_count", "layer_densities", "load_mask", "magnitude_mask",
    "MASK_FORMAT_ENV", "MASK_FORMATS", "MASK_STRATEGIES", "MaskStrategy", "kept_counts", "make_mask", "mask_format",
    "top_indices",
    "mask_from_scores", "mask_mismatch", "overlap", "random_mask", "save_mask", "sparsity", "structured_mask", "topk_mask_flat", "unflatten",
]

"""Ballot: conflict-detection (gradient-voting) subnetwork selection plus refined training (ISSTA'24).

What is known, and from where (details in ``papers/ballot.md``):

* **Authors' released code** (faithful mode): while a ticket trains for E epochs on 90 % of train, after each
  epoch the gradients of plain cross-entropy (g_acc) and of class-weighted cross-entropy with w_c = 1/acc_c on
  the 10 % held-out split (g_fair) are taken for the final Linear weight; each is L2-normalised along dim 0;
  the score S_e = ĝ_acc + η·ĝ_fair (η = 1) gives one vote to each of its top-k entries (largest signed values);
  the mask keeps the k most-voted entries; the network is rewound to θ0 and retrained with the mask.
  Entries whose two gradients disagree in sign cancel and rarely collect votes: the "conflict detection".
  Bugs of that code which we fix: class weights truncated to integers (so g_fair = g_acc), g_fair taken from
  pre-epoch weights, the ticket's mask not kept during training, the mask only on the final layer (the other
  layers dense, so its density is not comparable with LTH's: ours keeps the LTH mask of θT there, and the vote
  chooses the final layer's entries at that mask's count for the layer).
* **Our reconstruction** (full mode, [reconstruction]): votes over every prunable layer, both gradients at the
  same weights, w_c ∝ (1/(acc_c + δ))^γ (per class, per group or per class×group cell), gradients estimated on
  a vote subset each epoch, scores ``signed`` / ``agreement`` |ĝa+ηĝf| / ``taylor`` |θ⊙(ĝa+ηĝf)|, conflict
  rule ``none`` / ``veto`` (an entry whose two gradients disagree in sign gets no vote), and per-layer budgets
  (top-k inside each layer with kept counts from a reference mask or ERK) to avoid layer collapse.
* **Cost**: the authors' vote run is dense training from θ0; under the same seed it *is* our dense run, so the
  votes are collected during dense training (:class:`VoteCollector` is a dense-run extra) at the cost of the
  scoring only.
* **Refined training** [reconstruction of "dynamic learning-rate schedule and rewind mechanisms"]: rewind to
  θk, either the original schedule from epoch k or a warm-up + cosine schedule over the remaining epochs, and
  checkpoint selection on the val split: among epochs whose val accuracy is within ``select_eps`` of the best,
  the one with the lowest val MCD.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Mapping, Optional, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..experiment import DenseExtra, Experiment
from ..models import prunable_names
from ..pruning import (SCOPES, budgets_from_densities, budgets_from_mask, check_density, erk_densities,
                       kept_count, kept_counts, magnitude_mask, overlap, prunable_weights, top_indices, unflatten)
from ..results import ResultsFormatError, Run, config_hash, repair_advice
from ..training import DeviceData, device_logits, epoch_generator
from ..registry import check_choice
from ..checks import ParameterError, check_int, check_number
from .base import (MethodOutput, SparseConfig, check_rewind, register, select_checkpoint, select_epoch_metrics,
                   train_masked)

SCORES = ("signed", "agreement", "taylor")
CONFLICTS = ("none", "veto")
MODES = ("full", "faithful")
BUDGETS = ("none", "lth", "erk")
FAIRNESS = ("auto", "class", "group", "class_group")
SCHEDULES = ("original", "warmup_cosine")
WEIGHTINGS = ("accuracy", "loss")

GradPair = tuple  # (g_acc, g_fair) or (g_acc, g_fair, weights): each a dict name -> tensor


# ---------------------------------------------------------------------------------------------------------------
# Voting
# ---------------------------------------------------------------------------------------------------------------

def normalize_dim0(t: torch.Tensor) -> torch.Tensor:
    """L2-normalise along dim 0 (each column over output units for a [out, in, ...] weight); zeros stay zero."""
    return F.normalize(t.double(), p=2.0, dim=0, eps=1e-30)


def score_normalized(a: torch.Tensor, f: torch.Tensor, eta: float, score: str, conflict: str,
                     weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score, eligibility and non-veto of every entry of one tensor from its dim-0-normalised gradients."""
    s = a + eta * f
    if score == "agreement":
        s = s.abs()
    elif score == "taylor":
        if weights is None:
            raise ValueError("score='taylor' needs the weights")
        s = (weights.to(s.device, torch.float64) * s).abs()
    agree = torch.sign(a) == torch.sign(f) if conflict == "veto" else torch.ones_like(s, dtype=torch.bool)
    return s, (s != 0) & agree, agree


def epoch_scores(pair: GradPair, eta: float = 1.0, score: str = "signed", conflict: str = "none"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Score of every entry for one epoch, the entries eligible for a vote, and the entries not vetoed.

    Returns ``(scores, eligible, not_vetoed)``: eligible entries have a non-zero score and are not vetoed
    (``conflict="veto"`` vetoes entries whose two gradients differ in sign). In the per-epoch top-k, vetoed entries
    are ranked after all others (their vote passes to the next agreeing entry), while zero-score entries keep
    their rank and simply cast no vote — as in the authors' code, where a zero among the top-k values gets no vote.
    """
    check_choice("score", score, SCORES)
    check_choice("conflict", conflict, CONFLICTS)
    g_acc, g_fair = pair[0], pair[1]
    weights = pair[2] if len(pair) > 2 else None
    if score == "taylor" and weights is None:
        raise ValueError("score='taylor' needs the weights: pass (g_acc, g_fair, weights) triples")
    if set(g_acc) != set(g_fair):
        raise ValueError("g_acc and g_fair must name the same tensors")
    scores, eligible, not_vetoed = {}, {}, {}
    for n in g_acc:
        if g_acc[n].shape != g_fair[n].shape:
            raise ValueError(f"{n}: g_acc shape {tuple(g_acc[n].shape)} != g_fair shape {tuple(g_fair[n].shape)}")
        scores[n], eligible[n], not_vetoed[n] = score_normalized(
            normalize_dim0(g_acc[n]), normalize_dim0(g_fair[n]), eta, score, conflict,
            None if weights is None else weights[n])
    return scores, eligible, not_vetoed


# Per-tensor counts and the lexicographic top-k are the pruning module's (one top-k for every mask).
_kept_counts = kept_counts
_top = top_indices


def epoch_hits(scores: Mapping[str, torch.Tensor], eligible: Mapping[str, torch.Tensor],
               agree: Mapping[str, torch.Tensor], density: Optional[float],
               per_tensor: Optional[Mapping[str, int]]) -> dict[str, torch.Tensor]:
    """One epoch's votes (flat bool per tensor): the top-k eligible entries of the pool, by (not vetoed, score).

    The pool is all tensors with k = round(density·N) (``per_tensor=None``) or each tensor with its own count.
    """
    names = list(scores)
    sizes = [scores[n].numel() for n in names]
    key = torch.cat([scores[n].flatten().masked_fill(~agree[n].flatten(), float("-inf")) for n in names])
    hit = flat_hits(key, torch.cat([eligible[n].flatten() for n in names]), segments(sizes, key.device), sizes,
                    kept_count(density, key.numel()) if per_tensor is None else None,
                    None if per_tensor is None else [per_tensor[n] for n in names])
    return dict(zip(names, hit.split(sizes)))


def _check_grad_pairs(grad_pairs: Sequence[GradPair]) -> None:
    """Every epoch a ``(g_acc, g_fair[, weights])`` of dicts name -> tensor, naming the tensors of the first epoch
    with the same shapes (a clear error instead of a KeyError/AttributeError deep in the scoring)."""
    if not isinstance(grad_pairs, Sequence) or isinstance(grad_pairs, (str, bytes)) or not grad_pairs:
        raise ParameterError("grad_pairs must be a non-empty list over epochs of (g_acc, g_fair) or "
                             f"(g_acc, g_fair, weights) tuples; got {type(grad_pairs).__name__}"
                             + (" of length 0" if isinstance(grad_pairs, Sequence) else ""))
    first = None
    for i, pair in enumerate(grad_pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) not in (2, 3):
            raise ParameterError(f"grad_pairs[{i}] must be a (g_acc, g_fair) or (g_acc, g_fair, weights) tuple, got "
                                 f"{type(pair).__name__}" + (f" of length {len(pair)}" if isinstance(
                                     pair, (tuple, list)) else ""))
        for j, part in enumerate(pair):
            what = f"grad_pairs[{i}][{j}] ({('g_acc', 'g_fair', 'weights')[j]})"
            if not isinstance(part, Mapping) or not all(isinstance(t, torch.Tensor) for t in part.values()):
                raise ParameterError(f"{what} must be a dict name -> tensor, got {type(part).__name__}")
            shapes = {n: tuple(t.shape) for n, t in part.items()}
            if first is None:
                first = shapes
            elif shapes != first:
                raise ParameterError(f"{what} names tensors {sorted(shapes)} with shapes different from epoch 0's "
                                     f"g_acc ({sorted(first)}): every epoch must cover the same tensors")


def vote_counts(grad_pairs: Sequence[GradPair], density: Optional[float] = None, eta: float = 1.0,
                score: str = "signed", conflict: str = "none", scope: str = "global",
                budgets: Optional[Mapping[str, int]] = None,
                epoch_budgets: Optional[Sequence[Mapping[str, int]]] = None,
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Votes per entry over epochs, and the summed scores (the tie-breaker).

    In each epoch, the top-k eligible entries by score get one vote each: k = round(density·N) over all tensors
    (``scope="global"``), round(density·n) per tensor (``"layer"``) or ``budgets[name]`` per tensor;
    ``epoch_budgets`` (one mapping per epoch) gives each epoch its own per-tensor counts.
    """
    _check_grad_pairs(grad_pairs)
    check_number("eta", eta, 0)
    check_choice("scope", scope, SCOPES)
    if budgets is None and epoch_budgets is None:
        check_density(density)
    if epoch_budgets is not None and len(epoch_budgets) != len(grad_pairs):
        raise ValueError(f"epoch_budgets has {len(epoch_budgets)} entries for {len(grad_pairs)} epochs")
    names = list(grad_pairs[0][0])
    sizes = {n: grad_pairs[0][0][n].numel() for n in names}
    votes = {n: torch.zeros(sizes[n], dtype=torch.long) for n in names}
    total = {n: torch.zeros(sizes[n], dtype=torch.float64) for n in names}
    for i, pair in enumerate(grad_pairs):
        per_tensor = _kept_counts(names, sizes, density, scope,
                                  budgets if epoch_budgets is None else epoch_budgets[i])
        scores, eligible, agree = epoch_scores(pair, eta, score, conflict)
        hits = epoch_hits(scores, eligible, agree, density, per_tensor)
        for n in names:
            total[n] += scores[n].flatten().cpu()
            votes[n] += hits[n].cpu()
    shapes = {n: grad_pairs[0][0][n].shape for n in names}
    return ({n: votes[n].view(shapes[n]) for n in names}, {n: total[n].view(shapes[n]) for n in names})


def mask_from_votes(votes: Mapping[str, torch.Tensor], total: Mapping[str, torch.Tensor],
                    density: Optional[float], scope: str = "global",
                    budgets: Optional[Mapping[str, int]] = None) -> dict[str, torch.Tensor]:
    """Keep the most-voted entries (ties: larger summed score, then lower index), globally or per tensor."""
    names = list(votes)
    sizes = {n: votes[n].numel() for n in names}
    per_tensor = _kept_counts(names, sizes, density, scope, budgets)
    if per_tensor is None:
        v = torch.cat([votes[n].flatten().long() for n in names])
        t = torch.cat([total[n].flatten() for n in names])
        keep = torch.zeros(v.numel(), dtype=torch.bool, device=v.device)
        keep[_top([v, t], kept_count(density, v.numel()))] = True
        return {n: k.cpu() for n, k in unflatten(keep, votes).items()}
    out = {}
    for n in names:
        keep = torch.zeros(sizes[n], dtype=torch.bool, device=votes[n].device)
        keep[_top([votes[n].flatten().long(), total[n].flatten()], per_tensor[n])] = True
        out[n] = keep.view(votes[n].shape).cpu()
    return out


def vote_mask(grad_pairs: Sequence[GradPair], density: Optional[float], eta: float = 1.0, score: str = "signed",
              conflict: str = "none", scope: str = "global",
              budgets: Optional[Mapping[str, int]] = None,
              epoch_budgets: Optional[Sequence[Mapping[str, int]]] = None) -> dict[str, torch.Tensor]:
    """Ballot's mask: keep the most-voted entries.

    Args:
        grad_pairs: list over epochs of ``(g_acc, g_fair)`` (or ``(g_acc, g_fair, weights)`` for
            ``score="taylor"``), each a dict name -> tensor; every gradient is L2-normalised along dim 0 per tensor.
        density: fraction kept, in (0, 1] (ignored when ``budgets`` is given).
        eta: weight of the fairness gradient in the score.
        score: ``"signed"`` ĝa+ηĝf (authors), ``"agreement"`` |ĝa+ηĝf|, ``"taylor"`` |θ⊙(ĝa+ηĝf)|.
        conflict: ``"none"`` or ``"veto"`` (entries whose gradients disagree in sign get no vote).
        scope: ``"global"`` (exactly round(density·N) ones overall) or ``"layer"`` (round(density·n) per tensor).
        budgets: dict name -> kept count; overrides ``scope`` with top-k inside each tensor.
        epoch_budgets: optional per-epoch kept counts for the votes (then ``budgets`` applies to the final
            selection only): the streamed collector's ``budgets="lth"`` uses the magnitude mask of each epoch's
            weights for that epoch's vote.
    Returns:
        dict name -> bool tensor. Every kept entry has at least as many votes as every dropped entry of the same
        selection pool; ties are broken by the summed score over epochs, then by the lower index.
    """
    votes, total = vote_counts(grad_pairs, density, eta, score, conflict, scope, budgets, epoch_budgets)
    return mask_from_votes(votes, total, density, scope, budgets)


def sign_agreement(grad_pairs: Sequence[GradPair]) -> dict[str, float]:
    """Per tensor, the fraction of entries (over epochs) whose two gradients have the same sign (zeros excluded)."""
    out = {}
    for n in grad_pairs[0][0]:
        same = tot = 0
        for pair in grad_pairs:
            a, f = pair[0][n], pair[1][n]
            nz = (a != 0) & (f != 0)
            same += int(((torch.sign(a) == torch.sign(f)) & nz).sum())
            tot += int(nz.sum())
        out[n] = same / tot if tot else float("nan")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Gradient collection during the dense run
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VoteConfig:
    """How vote gradients are collected (part of a Ballot run's identity)."""

    layers: str = "all"  # "all" prunable layers, or "last" (the final Linear weight: faithful mode)
    vote_fraction: float = 0.1  # share of the train split sampled (fresh each epoch) to estimate the gradients
    vote_epochs: int = 0  # number of evenly spaced epochs that vote (0 = every epoch)
    fairness: str = "auto"  # weights per "class", "group", "class_group" cell; auto: class_group if groups exist
    delta: float = 0.01  # δ in w ∝ (1 / (acc + δ))^γ
    gamma: float = 1.0  # sharpness γ of the fairness weights
    weighting: str = "accuracy"  # "accuracy": w ∝ (1/(acc+δ))^γ; "loss": w ∝ exp(val CE / temperature)
    temperature: float = 0.5  # τ of the loss weighting

    def validate(self) -> "VoteConfig":
        if self.layers not in ("all", "last"):
            raise ValueError(f"layers must be 'all' or 'last', got {self.layers!r}")
        check_number("vote_fraction", self.vote_fraction, 0, 1, low_open=True)
        check_int("vote_epochs", self.vote_epochs, 0)
        check_choice("fairness", self.fairness, FAIRNESS)
        check_number("delta", self.delta, 0, low_open=True)
        check_number("gamma", self.gamma, 0)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        check_number("temperature", self.temperature, 0, low_open=True)
        return self

    def key(self) -> str:
        return config_hash(asdict(self))

    def epochs(self, total: int) -> list[int]:
        """The (1-based) epochs after which votes are collected."""
        if self.vote_epochs == 0 or self.vote_epochs >= total:
            return list(range(1, total + 1))
        return sorted({int(round(total * (i + 1) / self.vote_epochs)) for i in range(self.vote_epochs)})


def fairness_weights(acc: torch.Tensor, delta: float, gamma: float) -> torch.Tensor:
    """w ∝ (1 / (acc + δ))^γ, normalised to mean 1 over the cells present (absent cells, NaN acc, get 0)."""
    acc = acc.double()
    present = ~torch.isnan(acc)
    w = torch.zeros_like(acc)
    w[present] = (1.0 / (acc[present] + delta)) ** gamma
    if present.any():
        w[present] /= w[present].mean()
    return w


def loss_weights(loss: torch.Tensor, temperature: float) -> torch.Tensor:
    """w ∝ exp(L / τ) from per-cell mean val cross-entropy, normalised to mean 1 over present cells (absent: 0).

    Unlike 1/(acc + δ), the loss keeps separating classes after val accuracy saturates. [reconstruction]
    """
    loss = loss.double()
    present = ~torch.isnan(loss)
    w = torch.zeros_like(loss)
    if present.any():
        z = loss[present] / temperature
        w[present] = torch.softmax(z, 0) * int(present.sum())
    return w


def _cell_index(y: torch.Tensor, g: Optional[torch.Tensor], mode: str, num_classes: int) -> torch.Tensor:
    """Fairness cell of every sample: its class, its group, or its (group, class) pair."""
    if mode == "class" or g is None:
        return y
    if mode == "group":
        return g
    return g * num_classes + y


@dataclass(frozen=True)
class TallyConfig:
    """How one Ballot configuration turns an epoch's scores into votes (its running tally's identity)."""

    density: float
    eta: float = 1.0
    score: str = "taylor"
    conflict: str = "none"
    scope: str = "global"
    budgets: str = "lth"  # per-epoch kept counts: "lth" (magnitude mask of the epoch's weights), "erk", "none"

    def key(self) -> str:
        return config_hash(asdict(self))

    def per_tensor(self, weights: Mapping[str, torch.Tensor], names: Sequence[str]) -> Optional[dict[str, int]]:
        """Kept counts per voted tensor for weights ``weights`` (all prunable tensors), or None (one global k)."""
        sizes = {n: weights[n].numel() for n in names}
        if self.budgets == "lth":
            budgets = budgets_from_mask(magnitude_mask(weights, self.density, "global"))
        elif self.budgets == "erk":
            budgets = budgets_from_densities(weights, erk_densities(weights, self.density), self.density)
        else:
            budgets = None
        return _kept_counts(names, sizes, self.density, self.scope,
                            None if budgets is None else {n: budgets[n] for n in names})


@dataclass
class FlatEpoch:
    """One voting epoch's inputs, laid out flat once for every tally (the concatenation order of the tensors)."""

    a: torch.Tensor  # ĝ_acc, dim-0-normalised per tensor, float64
    f: torch.Tensor  # ĝ_fair, likewise
    w: torch.Tensor  # the epoch's weights θ_e (float64)
    segment: torch.Tensor  # tensor index of every entry
    sizes: list[int]

    @staticmethod
    def build(a_hat: Mapping[str, torch.Tensor], f_hat: Mapping[str, torch.Tensor],
              weights: Mapping[str, torch.Tensor], names: Sequence[str]) -> "FlatEpoch":
        a = torch.cat([a_hat[n].flatten() for n in names])
        f = torch.cat([f_hat[n].flatten() for n in names])
        w = torch.cat([weights[n].detach().flatten() for n in names]).to(a.device, torch.float64)
        sizes = [a_hat[n].numel() for n in names]
        return FlatEpoch(a, f, w, segments(sizes, a.device), sizes)


def segments(sizes: Sequence[int], device: torch.device) -> torch.Tensor:
    """The tensor index of every entry of the flat layout of tensors of ``sizes``."""
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(list(sizes), device=device))


def flat_hits(key: torch.Tensor, eligible: torch.Tensor, segment: torch.Tensor, sizes: Sequence[int],
              k_global: Optional[int], k_per_tensor: Optional[Sequence[int]]) -> torch.Tensor:
    """One epoch's votes over the flat layout of the tensors (``segment``: each entry's tensor; ``sizes``: the
    tensors' sizes): the top-k of ``key`` (ties: lower index) globally or inside each tensor, restricted to eligible
    entries. A fixed number of tensor operations whatever the number of layers."""
    order = torch.argsort(key, descending=True, stable=True)
    hit = torch.zeros(key.numel(), dtype=torch.bool, device=key.device)
    if k_per_tensor is None:
        top = order[:k_global]
    else:
        # A stable sort by tensor keeps each tensor's entries in descending key order; the rank inside its
        # tensor is the position minus the tensor's start.
        order = order[torch.argsort(segment[order], stable=True)]
        counts = torch.tensor(list(sizes), device=key.device)
        starts = torch.cumsum(counts, 0) - counts
        seg = segment[order]
        rank = torch.arange(key.numel(), device=key.device) - starts[seg]
        top = order[rank < torch.tensor(list(k_per_tensor), device=key.device)[seg]]
    hit[top[eligible[top]]] = True
    return hit


class VoteTally:
    """Running per-entry vote counts (int16) and summed scores (float64) of one :class:`TallyConfig`.

    Its size is 2.5x the fp32 size of the voted weights, whatever the number of epochs: per epoch, the top-k
    entries of the score add one vote each (the entries :func:`epoch_hits` picks), exactly as :func:`vote_counts`
    does over stored gradients, so the final mask (:func:`mask_from_votes`) equals :func:`vote_mask` on the stored
    gradients. Counts live in one flat tensor each (``votes`` / ``total`` hold per-tensor views of it).
    """

    def __init__(self, cfg: TallyConfig, shapes: Mapping[str, torch.Size], device: torch.device) -> None:
        self.cfg = cfg
        self.shapes = dict(shapes)
        self.names = list(shapes)
        sizes = [int(torch.Size(sh).numel()) for sh in shapes.values()]
        self._votes = torch.zeros(sum(sizes), dtype=torch.int16, device=device)
        self._total = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
        self.votes = dict(zip(self.names, self._votes.split(sizes)))
        self.total = dict(zip(self.names, self._total.split(sizes)))

    def add(self, a_hat: Mapping[str, torch.Tensor], f_hat: Mapping[str, torch.Tensor],
            weights: Mapping[str, torch.Tensor], per_tensor: Optional[Mapping[str, int]]) -> None:
        """Count one epoch from per-tensor normalised gradients and weights (see :meth:`add_flat`)."""
        self.add_flat(FlatEpoch.build(a_hat, f_hat, weights, self.names), per_tensor)

    def add_flat(self, epoch: FlatEpoch, per_tensor: Optional[Mapping[str, int]]) -> None:
        c = self.cfg
        s, eligible, agree = score_normalized(epoch.a, epoch.f, c.eta, c.score, c.conflict, epoch.w)
        # Ranking by (not vetoed, score) = one sort with vetoed entries at -inf (they never vote).
        key = s.masked_fill(~agree, float("-inf"))
        k_global = kept_count(c.density, s.numel()) if per_tensor is None else None
        hits = flat_hits(key, eligible, epoch.segment, epoch.sizes, k_global,
                         None if per_tensor is None else [per_tensor[n] for n in self.names])
        self._total += s
        self._votes += hits.to(torch.int16)

    def state_dict(self) -> dict:
        # Copies on the CPU: never a view of the live tensors (they keep changing).
        return {"votes": {n: v.detach().to("cpu", copy=True) for n, v in self.votes.items()},
                "total": {n: t.detach().to("cpu", copy=True) for n, t in self.total.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for n in self.names:
            self.votes[n].copy_(state["votes"][n].view(-1))
            self.total[n].copy_(state["total"][n].view(-1))

    def shaped(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """CPU copies (never views of the running counts) in the tensors' shapes."""
        return ({n: v.to("cpu", copy=True).view(self.shapes[n]) for n, v in self.votes.items()},
                {n: t.to("cpu", copy=True).view(self.shapes[n]) for n, t in self.total.items()})


def vote_gradients(net: nn.Module, plist: Sequence[torch.Tensor], data: DeviceData, cell_weights: torch.Tensor,
                   cells: torch.Tensor, batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """g_acc = ∇ mean CE and g_fair = ∇ (Σ w_i CE_i / Σ w_i) over ``data``, accumulated over mini-batches.

    Memory is bounded by one batch of ``batch_size``; the result equals the one-batch gradient up to float
    summation order (BatchNorm is in eval mode, so samples do not interact).
    """
    n = data.n
    w_all = cell_weights.to(data.device, torch.float32)[cells]
    w_sum = w_all.sum().clamp_min(1e-12)
    g_acc = [torch.zeros_like(p) for p in plist]
    g_fair = [torch.zeros_like(p) for p in plist]
    start = 0
    for xb, yb, _ in data.epoch_batches(batch_size, 0, 0, train=False):
        wb = w_all[start:start + len(yb)]
        start += len(yb)
        per_sample = F.cross_entropy(net(xb).float(), yb, reduction="none")
        ga = torch.autograd.grad(per_sample.sum() / n, plist, retain_graph=True)
        gf = torch.autograd.grad((wb * per_sample).sum() / w_sum, plist)
        for acc, g in zip(g_acc, ga):
            acc += g
        for acc, g in zip(g_fair, gf):
            acc += g
    return g_acc, g_fair


class VoteCollector(DenseExtra):
    """Streams Ballot's votes during the dense run: one set of gradients per voting epoch feeds every tally.

    After each voting epoch, g_acc (mean cross-entropy) and g_fair (cell-weighted cross-entropy, weights from the
    current val accuracies or losses) are taken at the same weights on a fresh vote subset of train, in
    mini-batches; each registered :class:`TallyConfig` adds that epoch's votes to its running counts. Nothing is
    kept per epoch but a few scalars, so storage does not grow with epochs. The running state travels in the
    dense run's checkpoint; each tally is stored as ``votes_<collect key>_<tally key>.pt``.
    """

    def __init__(self, cfg: VoteConfig) -> None:
        self.cfg = cfg.validate()
        self.file = f"votes_{cfg.key()}"
        self.tallies: dict[str, TallyConfig] = {}
        # Set by start(): the tallies this dense run fills, those that missed epochs, and the running state.
        self._active: dict[str, VoteTally] = {}
        self._missed: set[str] = set()
        self._state: dict[str, Any] = {}

    def add(self, tally: TallyConfig) -> None:
        self.tallies.setdefault(tally.key(), tally)

    def tally_file(self, tally: TallyConfig | str) -> str:
        return f"{self.file}_{tally if isinstance(tally, str) else tally.key()}.pt"

    def done(self, run: Run) -> bool:
        return all(run.file(self.tally_file(k)).exists() for k in self.tallies)

    # -- state in the training checkpoint ------------------------------------------------------------------
    def state_dict(self) -> dict:
        st = self._state
        return {"last_epoch": st["last_epoch"], "epochs": list(st["epochs"]),
                "weight_spread": list(st["weight_spread"]), "sign": [dict(r) for r in st["sign"]],
                "seconds": st["seconds"], "tally_seconds": dict(st["tally_seconds"]),
                "tallies": {k: t.state_dict() for k, t in self._active.items()}}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state is None:
            # A checkpoint written without this collector: its earlier epochs were never voted on.
            self._missed = set(self._active)
            return
        for k in ("last_epoch", "epochs", "weight_spread", "sign", "seconds"):
            self._state[k] = state[k]
        self._state["tally_seconds"].update(state.get("tally_seconds", {}))
        for k, t in self._active.items():
            if k in state["tallies"]:
                t.load_state_dict(state["tallies"][k])
            else:
                self._missed.add(k)

    # -- the epoch hook --------------------------------------------------------------------------------------
    def start(self, exp: Experiment, run: Run, seed: int):
        bundle, cfg = exp.bundle, self.cfg
        mode = cfg.fairness
        if mode == "auto":
            mode = "class_group" if bundle.train.g is not None else "class"
        if mode in ("group", "class_group") and bundle.train.g is None:
            raise ValueError(f"fairness={mode!r} needs a dataset with groups; {bundle.name} has none")
        n_groups = max(bundle.num_groups, 1)
        n_cells = {"class": bundle.num_classes, "group": n_groups, "class_group": bundle.num_classes * n_groups}[mode]
        vote_at = set(cfg.epochs(exp.train.epochs))
        dev = exp.device_
        val_data = DeviceData(bundle.val, bundle, dev)
        net0 = exp.new_model()
        names = prunable_names(net0)
        if cfg.layers == "last":
            names = [n for n in names if isinstance(net0.get_submodule(n.rsplit(".", 1)[0]), nn.Linear)][-1:]
        shapes = {n: p.shape for n, p in net0.named_parameters() if n in names}
        all_names = prunable_names(net0)
        todo = {k: t for k, t in self.tallies.items() if not run.file(self.tally_file(k)).exists()}
        self._active = {k: VoteTally(t, shapes, dev) for k, t in todo.items()}
        self._missed = set()
        # seconds: the whole collection (shared gradients + every tally); tally_seconds: each tally's own scoring.
        self._state = {"last_epoch": 0, "epochs": [], "weight_spread": [], "sign": [], "seconds": 0.0,
                       "tally_seconds": {k: 0.0 for k in self._active}}
        state = self._state
        batch_size = exp.train.batch_size

        def hook(net: nn.Module, epoch: int, row: dict) -> None:
            # Epochs already counted before a resume are skipped (their votes are in the restored state).
            if epoch not in vote_at or epoch <= state["last_epoch"]:
                return
            t0 = time.perf_counter()
            params = dict(net.named_parameters())
            plist = [params[n] for n in names]
            was_training = net.training
            # Both gradients are taken in eval mode (as the authors do): BatchNorm running statistics and hence
            # the dense run itself are left untouched by the vote.
            net.eval()
            # Cell accuracies on the held-out val split, at the current weights.
            vy, vg = val_data.y, val_data.g
            logits_v = device_logits(net, val_data)
            correct_v = (logits_v.argmax(1) == vy).double()
            loss_v = F.cross_entropy(logits_v, vy, reduction="none").double()
            cells_v = _cell_index(vy, vg, mode, bundle.num_classes)
            counts = torch.bincount(cells_v, minlength=n_cells).double()
            present = counts > 0
            acc = torch.full((n_cells,), float("nan"), dtype=torch.float64, device=dev)
            cell_loss = acc.clone()
            acc[present] = (torch.bincount(cells_v, correct_v, n_cells) / counts.clamp_min(1))[present]
            cell_loss[present] = (torch.bincount(cells_v, loss_v, n_cells) / counts.clamp_min(1))[present]
            acc, cell_loss = acc.cpu(), cell_loss.cpu()
            if cfg.weighting == "accuracy":
                w_cell = fairness_weights(acc, cfg.delta, cfg.gamma)
            else:
                w_cell = loss_weights(cell_loss, cfg.temperature)
            # Gradients of both losses at the same weights, on a fresh vote subset of train, in mini-batches.
            gen = epoch_generator(seed, epoch, stream=3)
            n_vote = max(1, int(round(cfg.vote_fraction * len(bundle.train))))
            sub = DeviceData(bundle.train.subset(torch.randperm(len(bundle.train), generator=gen)[:n_vote]),
                             bundle, dev)
            ga, gf = vote_gradients(net, plist, sub, w_cell, _cell_index(sub.y, sub.g, mode, bundle.num_classes),
                                    batch_size)
            net.train(was_training)
            with torch.no_grad():
                a_hat = {n: normalize_dim0(g) for n, g in zip(names, ga)}
                f_hat = {n: normalize_dim0(g) for n, g in zip(names, gf)}
                live = {n: params[n].detach() for n in all_names}  # θ_e itself: read now, never stored
                # Per-epoch kept counts depend only on (density, scope, budget rule): one magnitude mask per
                # density and epoch, however many tallies share it.
                kept: dict[tuple, Optional[dict[str, int]]] = {}
                flat = FlatEpoch.build(a_hat, f_hat, live, names) if self._active else None
                for key, tally in self._active.items():
                    t1 = time.perf_counter()
                    c = tally.cfg
                    pool = (c.density, c.scope, c.budgets)
                    if pool not in kept:
                        kept[pool] = c.per_tensor(live, names)
                    assert flat is not None  # built whenever a tally is active
                    tally.add_flat(flat, kept[pool])
                    if dev.type == "cuda":  # per-tally seconds of the device's work, not of the kernel launches
                        torch.cuda.synchronize(dev)
                    state["tally_seconds"][key] += time.perf_counter() - t1
                # (agreeing, both non-zero) per tensor, counted on the device and read in one transfer.
                pairs = []
                for g1, g2 in zip(ga, gf):
                    nz = (g1 != 0) & (g2 != 0)
                    pairs.append(torch.stack([((torch.sign(g1) == torch.sign(g2)) & nz).sum(), nz.sum()]))
                sign = {n: tuple(p) for n, p in zip(names, torch.stack(pairs).tolist())}
            state["sign"].append(sign)
            state["epochs"].append(epoch)
            seen = w_cell[~torch.isnan(acc)]
            state["weight_spread"].append(float(seen.max() / seen.min()) if len(seen) else float("nan"))
            state["last_epoch"] = epoch
            state["seconds"] += time.perf_counter() - t0

        return hook

    def finish(self, run: Run) -> bool:
        st = self._state
        totals = {n: [sum(r[n][0] for r in st["sign"]), sum(r[n][1] for r in st["sign"])] for n in
                  (st["sign"][0] if st["sign"] else {})}
        for key, tally in self._active.items():
            if key in self._missed:
                continue
            votes, total = tally.shaped()
            run.save_tensor(self.tally_file(key), {
                "collect": asdict(self.cfg), "tally": asdict(tally.cfg), "votes": votes, "total": total,
                "epochs": list(st["epochs"]), "weight_spread": list(st["weight_spread"]),
                "sign_counts": totals, "sign_epochs": [{n: list(v) for n, v in r.items()} for r in st["sign"]],
                # What one Ballot configuration pays: the shared gradients plus its own scoring (not the scoring
                # of every other tally the same dense run carried, e.g. a whole ablation).
                "seconds": float(st["seconds"] - sum(st["tally_seconds"].values()) + st["tally_seconds"][key]),
                "collector_seconds": float(st["seconds"])})
        complete = not self._missed
        # The tallies are stored: their running counts (two tensors of the model's prunable size per tally, on
        # the training device) are released instead of living as long as the experiment (notebook 02's ablation
        # registers ~30 tallies: ~7 GB on the GPU at ResNet-50).
        self._active = {}
        return complete


def register_votes(exp: Experiment, cfg: VoteConfig, tallies: Sequence[TallyConfig] = ()) -> VoteCollector:
    """Ask the experiment's dense runs to stream votes with collection ``cfg`` into ``tallies`` while they train."""
    new = VoteCollector(cfg)
    exp.add_dense_extra(new.file, new)
    collector = cast(VoteCollector, exp.dense_extras[new.file])
    for t in tallies:
        collector.add(t)
    return collector


def load_votes(exp: Experiment, seed: int, cfg: VoteConfig, tally: TallyConfig) -> dict[str, Any]:
    """The streamed votes of ``seed`` for ``tally`` (collected during the dense run if registered in time, else by
    an exact replay of it): ``votes`` and ``total`` per tensor, ``epochs``, ``weight_spread``, ``sign_counts``
    (per tensor: entries with equal sign, non-zero entries), ``sign_epochs`` and ``seconds``."""
    collector = register_votes(exp, cfg, [tally])
    run = exp.dense(seed).run
    path = run.file(collector.tally_file(tally))
    record = run.load_tensor(path.name, what="Ballot votes")
    problem = _votes_problem(record, exp.param_shapes(prunable=True))
    if problem:
        raise ResultsFormatError(f"Ballot votes file {path} is malformed ({problem}); {repair_advice(path)}")
    return record


def _votes_problem(record: Any, shapes: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """What is wrong with a votes record read back (``None``: nothing): its keys, and per tensor the shapes of
    its votes and summed scores against the model's prunable weights."""
    if not isinstance(record, Mapping):
        return f"holds a {type(record).__name__}, expected a mapping"
    missing = [k for k in ("votes", "total", "epochs") if k not in record]
    if missing:
        return f"has no {', '.join(missing)}"
    for key in ("votes", "total"):
        if not isinstance(record[key], Mapping):
            return f"{key!r} is a {type(record[key]).__name__}, expected a mapping tensor name -> tensor"
        for name, t in record[key].items():
            if name not in shapes:
                return f"{key}[{name!r}] is not a prunable weight of the model"
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shapes[name]):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                return f"{key}[{name!r}] has shape {got}, the model's weight {tuple(shapes[name])}"
    return None


def sign_agreement_from(record: Mapping[str, Any]) -> dict[str, float]:
    """Per tensor, the share of entries (over voting epochs) whose two gradients have the same sign."""
    return {n: (same / tot if tot else float("nan")) for n, (same, tot) in record["sign_counts"].items()}


# ---------------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BallotConfig(SparseConfig):
    mode: str = "full"  # "full" (all prunable layers) or "faithful" (authors' vote on the final layer, LTH mask elsewhere)
    eta: float = 1.0  # weight of the fairness gradient in the score
    score: str = "taylor"  # "signed" (authors), "agreement", "taylor" (default chosen on the pooled val split)
    conflict: str = "none"  # "none" or "veto" (default chosen on the pooled val split: papers/ballot.md)
    scope: str = "global"  # vote scope when budgets="none": "global" or "layer"
    budgets: str = "lth"  # per-layer kept counts: "lth" (magnitude mask of θT), "erk", or "none"
    vote_fraction: float = 0.1  # share of train sampled each voting epoch
    vote_epochs: int = 0  # evenly spaced voting epochs (0 = all)
    fairness: str = "auto"  # fairness weights per class / group / class_group cell
    delta: float = 0.01  # δ of the fairness weights
    gamma: float = 1.0  # sharpness γ of the fairness weights
    weighting: str = "accuracy"  # fairness weights from val "accuracy" (1/(acc+δ))^γ or val "loss" exp(CE/τ)
    temperature: float = 0.5  # τ of the loss weighting
    refined: bool = True  # refined training (schedule + checkpoint selection); False = plain LTH-style training
    rewind_epoch: int = 0  # θk to rewind the kept weights to
    schedule: str = "original"  # refined: "original" (from epoch k) or "warmup_cosine" over the remaining epochs
    warmup_epochs: int = 1  # refined, warmup_cosine: warm-up epochs
    select_eps: float = 0.01  # refined: epochs within this val accuracy of the best qualify; lowest val MCD wins

    #: select_eps has always been part of Ballot's identity (refined training); only ``select`` is new.
    HASH_NEUTRAL: ClassVar[dict] = {"select": "last"}

    #: Faithful mode is the authors' procedure: these fields are fixed to their values.
    FAITHFUL = {"eta": 1.0, "score": "signed", "conflict": "none", "scope": "global", "budgets": "none",
                "rewind_epoch": 0, "refined": False, "fairness": "class", "weighting": "accuracy", "gamma": 1.0,
                "vote_epochs": 0, "vote_fraction": 1.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode == "faithful":
            defaults = {f.name: f.default for f in fields(self)}
            for name, value in self.FAITHFUL.items():
                given = getattr(self, name)
                # An option set to something else than its default would be silently replaced: refuse it.
                if given != defaults[name] and given != value:
                    raise ParameterError(
                        f"mode='faithful' is the authors' procedure and fixes {name} to {value!r}; got "
                        f"{name}={given!r}: leave {name} unset, or use mode='full' to choose it")
                object.__setattr__(self, name, value)

    def last_epoch_twin(self) -> "Optional[SparseConfig]":
        """Refined training selects its checkpoint whatever ``select`` says (and its schedule differs from plain
        training's), so no ``select="last"`` twin shares it: None. Plain training behaves as every method's."""
        return None if self.refined else super().last_epoch_twin()

    def validate(self) -> "BallotConfig":
        super().validate()
        for field_, value, valid in (("mode", self.mode, MODES), ("score", self.score, SCORES),
                                     ("conflict", self.conflict, CONFLICTS), ("scope", self.scope, SCOPES),
                                     ("budgets", self.budgets, BUDGETS), ("schedule", self.schedule, SCHEDULES)):
            check_choice(field_, value, valid)
        check_number("eta", self.eta, 0)  # 0: the vote without its fairness term (the η = 0 control)
        check_int("warmup_epochs", self.warmup_epochs, 0)
        self.vote_config().validate()
        return self

    def validate_recipe(self, exp: Experiment) -> None:
        """The rules against the experiment's training recipe alone (no data loaded): rewind point, warm-up."""
        check_rewind(exp, self.rewind_epoch)
        if self.refined and self.schedule == "warmup_cosine" and \
                self.warmup_epochs >= exp.train.epochs - self.rewind_epoch:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below the retraining length "
                             f"({exp.train.epochs - self.rewind_epoch} epochs)")

    def validate_for(self, exp: Experiment) -> None:
        self.validate_recipe(exp)
        if self.fairness in ("group", "class_group") and exp.bundle.num_groups == 0:
            raise ParameterError(f"fairness={self.fairness!r} needs a dataset with a sensitive attribute; "
                                 f"{exp.data.name!r} has none (use 'class' or 'auto')")

    def behaviour_fixes(self) -> tuple[str, ...]:
        """Corrections that changed what this configuration trains (part of its identity: :func:`config_dict`).

        * ``faithful_density``: faithful mode's mask is at ``density`` overall (the LTH mask of θT on the other
          layers, the final layer's LTH count chosen by the vote); before, the other layers stayed dense.
        * ``warmup_from_k``: refined ``warmup_cosine`` with ``rewind_epoch`` k > 0 warms up from lr/10 at epoch k;
          before, the ramp started at epoch 0, so retraining began at most of the peak rate.
        """
        fixes = []
        if self.mode == "faithful":
            fixes.append("faithful_density")
        if self.refined and self.schedule == "warmup_cosine" and self.rewind_epoch > 0:
            fixes.append("warmup_from_k")
        return tuple(fixes)

    def tally_config(self, **override: Any) -> TallyConfig:
        """How this configuration's votes are counted each epoch (``override`` e.g. ``eta=0.0``)."""
        faithful = self.mode == "faithful"
        t = TallyConfig(density=self.density, eta=self.eta, score=self.score, conflict=self.conflict,
                        scope="global" if faithful else self.scope, budgets="none" if faithful else self.budgets)
        return replace(t, **override)

    def vote_config(self) -> VoteConfig:
        return VoteConfig(layers="last" if self.mode == "faithful" else "all", vote_fraction=self.vote_fraction,
                          vote_epochs=self.vote_epochs, fairness=self.fairness, delta=self.delta, gamma=self.gamma,
                          weighting=self.weighting, temperature=self.temperature)


def final_budgets(cfg: BallotConfig, net_T: nn.Module, names: Sequence[str]) -> tuple[Optional[dict], str]:
    """Per-tensor kept counts (and scope) of the final selection, from θT (``lth``), shapes (``erk``) or none."""
    if cfg.mode == "faithful" or cfg.budgets == "none":
        return None, ("global" if cfg.mode == "faithful" else cfg.scope)
    weights = prunable_weights(net_T)
    if cfg.budgets == "lth":
        b = budgets_from_mask(magnitude_mask(weights, cfg.density, "global"))
    else:
        b = budgets_from_densities(weights, erk_densities(weights, cfg.density), cfg.density)
    return {n: b[n] for n in names}, cfg.scope


def select_mask(exp: Experiment, cfg: BallotConfig, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Ballot's mask over all prunable weights for ``seed``, and diagnostics of the vote."""
    rec = load_votes(exp, seed, cfg.vote_config(), cfg.tally_config())
    rec0 = load_votes(exp, seed, cfg.vote_config(), cfg.tally_config(eta=0.0))
    net_T = exp.model_from(exp.dense_weights(seed, exp.train.epochs))
    names = prunable_names(net_T)
    voted = list(rec["votes"])
    lth_mask = magnitude_mask(net_T, cfg.density, "global")
    budgets, scope = final_budgets(cfg, net_T, voted)
    if cfg.mode == "faithful":
        # The authors' vote picks the final layer's entries; how many, and every other layer's mask, come from
        # the LTH (global magnitude) mask of θT, so the whole mask is at `density` like every other method's
        # (the authors' code left the other layers dense: not comparable, SPEC §6).
        budgets = {n: int(lth_mask[n].sum()) for n in voted}
    voted_mask = mask_from_votes(rec["votes"], rec["total"], cfg.density, scope, budgets)
    eta0 = mask_from_votes(rec0["votes"], rec0["total"], cfg.density, scope, budgets)
    mask = {n: voted_mask[n] if n in voted_mask else lth_mask[n].clone() for n in names}
    agreement = sign_agreement_from(rec)
    diag = {
        "vote_epochs": len(rec["epochs"]),
        "vote_seconds": float(rec["seconds"]),
        "weight_spread_mean": float(torch.tensor(rec["weight_spread"]).nanmean()),
        "sign_agreement": sum(agreement.values()) / len(voted),
        "overlap_eta0": overlap(voted_mask, eta0),
        "overlap_lth": overlap(mask, lth_mask),
        "voted_layers": voted,
    }
    return mask, diag


def checkpoint_rule(options: Mapping[str, Any]) -> str:
    """The checkpoint rule of a Ballot run with these options (:class:`BallotConfig` fields; absent ones take the
    defaults): ``"val_rule"`` with refined training or ``select="val_rule"``, else ``"last"``. A comparison gives
    every method the rule of the Ballot it compares with."""
    defaults = BallotConfig(density=0.5)
    refined = options.get("refined", defaults.refined)
    return "val_rule" if refined or options.get("select", defaults.select) == "val_rule" else "last"


def same_selection(options: Mapping[str, Any], select_eps: float) -> dict[str, Any]:
    """The options that give another sparse method the checkpoint rule of a Ballot run with ``options``
    (:func:`checkpoint_rule`): the val rule with ``select_eps``, or none (its last epoch)."""
    return {"select": "val_rule", "select_eps": select_eps} if checkpoint_rule(options) == "val_rule" else {}


_select_checkpoint = select_checkpoint  # the shared rule (methods.base); kept name for readers of notebook 02


def _prepare(exp: Experiment, cfg: BallotConfig) -> None:
    # The configuration's tally and its η = 0 control (a diagnostic) stream along with the dense training.
    register_votes(exp, cfg.vote_config(), [cfg.tally_config(), cfg.tally_config(eta=0.0)])


def _compute(exp: Experiment, cfg: BallotConfig) -> float:
    # The votes ride along with the dense training (scoring only), then the retraining from θk.
    return exp.train.epochs + (exp.train.epochs - cfg.rewind_epoch)


@register("ballot", BallotConfig, prepare=_prepare, compute=_compute, reuses_dense=True)
def run_ballot(exp: Experiment, cfg: BallotConfig, seed: int, run: Run) -> MethodOutput:
    """Conflict-vote subnetwork selection, then (refined) training from θk."""
    mask, diag = select_mask(exp, cfg, seed)
    T, k = exp.train.epochs, cfg.rewind_epoch
    theta_k = exp.dense_weights(seed, k)
    schedule = None
    if cfg.refined and cfg.schedule == "warmup_cosine":
        # Warm-up (from lr/10 at epoch k) + cosine over the remaining epochs, on the original epoch axis (k .. T).
        schedule = replace(exp.train, schedule="cosine", milestones=(), warmup_epochs=k + cfg.warmup_epochs,
                           warmup_start=k)
    res = train_masked(exp, run, seed, theta_k, mask, start_epoch=k, schedule=schedule,
                       desc=f"ballot d={cfg.density} s{seed}")
    selected_epoch = T
    if (cfg.refined or cfg.select == "val_rule") and res.history:
        # Refined training includes the checkpoint selection (the shared val rule); plain training has it only
        # with select="val_rule". The run reports the selected epoch's metrics on every split.
        selected_epoch = select_epoch_metrics(res, cfg.select_eps)
    select = "val_rule" if (cfg.refined or cfg.select == "val_rule") else "last"
    return MethodOutput(res, mask, train_epochs=T - k,
                        summary={"selected_epoch": selected_epoch, "select": select, **diag})

"""FairScratch: Fair Scratch Tickets (Tang et al., CVPR'23), on top of edge-popup (Ramanujan et al., CVPR'20).

A fair scratch ticket is a subnetwork of a randomly initialised network found without training any weight:

* **Weights frozen** at a *signed constant*: ``w = sign(θ0) · gain / √(fan_in · d)`` per layer (edge-popup's
  ``signed_constant`` initialisation with its ``scale_fan`` option; the signs are the seed's θ0, so the ticket
  is paired with every other method of the seed). Biases are frozen at 0 and normalisation layers have no affine
  parameters (weight 1, bias 0, frozen): edge-popup's networks have neither.
* **One learned score per prunable weight** (Kaiming-uniform initialised); the forward pass uses the top-d
  fraction of |score| of every layer, exactly ``round(d · n_l)`` entries, and the gradient passes straight
  through the top-k to the scores. Only the scores are trained, with the experiment's recipe and data order.
* **Loss** = CE + λ · fairness surrogate (``fairness``):

  - ``"dp"`` / ``"eo"`` (binary target with a sensitive attribute, e.g. ``adult``; FST's own surrogates): with
    f = logit₁ − logit₀, the *logistic* surrogate ``−(1/B)[Σ_{i∈a} log σ(f_i)/P_a + Σ_{i∈b} log σ(−f_i)/P_b]``
    pushes group a's scores up and group b's down, each weighted by its inverse prior ``P`` (the group's share of
    the training split for DP; its share of (group, y = 1) for EO, where the sums and B run over the positive
    samples of the batch only). FST fixes per dataset which group is pushed up; here it is the group with the
    lower rate of positive labels in the training split (**ours**: the rule that gives FST's choice on CelebA).
  - ``"class"`` (multi-class class fairness, e.g. ``digits``) **[reconstruction]**: the variance over the
    classes present in the batch of their mean CE loss. FST has no class-fairness surrogate; this one is the
    differentiable analogue of CWV (the variance of per-class recalls), zero when every class is fit equally
    well, and needs no group labels. It is SPEC §6's "per-class-loss-variance" option.
  - ``"auto"``: ``"dp"`` on binary data with a sensitive attribute, ``"class"`` otherwise.

  λ = 0 (``fairness_weight=0``) trains with plain CE: plain edge-popup.

The mask stored with the run is the final top-d of |score| per layer (exact per tensor, so the total is
``Σ round(d · n_l)``, round(d·N) up to per-tensor rounding). With ``select="val_rule"`` it is the top-d of the
selected epoch instead, stored with that epoch's metrics: the mask changes at every step, so the run keeps, while it
trains, the masks of the epochs the rule can still select (:class:`~ballot_lib.methods.base.CandidateMasks`:
bit-packed on the CPU, saved in the training checkpoint); every epoch's mask keeps exactly ``round(d · n_l)`` per
layer, so every epoch may be selected. Such a run trains itself (its ``select="last"`` twin keeps no candidate
masks) and also stores its final mask (``final_mask.pt``): its ``select="last"`` twin is derived from it without
training (:func:`~ballot_lib.methods.base.val_rule_twin`). Compute: one schedule of the recipe, ``compute_epochs = train.epochs`` (backward passes reach the scores
only; no trained dense network is needed).

Example:
    >>> run_method(exp, "fairscratch", seed=0, density=0.1, fairness_weight=0.05)  # doctest: +SKIP
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..experiment import Experiment
from ..models import prunable_names
from ..pruning import Mask, kept_count, top_indices
from ..registry import check_choice
from ..results import Run
from ..checks import ParameterError, check_number
from .base import BudgetConfig, CandidateMasks, MethodOutput, register, val_rule_mask

FAIRNESS = ("auto", "dp", "eo", "class")


@dataclass(frozen=True)
class FairScratchConfig(BudgetConfig):
    """FairScratch options. Defaults and why:

    * ``fairness_weight=0.05``: chosen on the pooled val split by the project's rule (λ ∈ {0, 0.02, 0.05, 0.1,
      0.2} on five embedded settings at two densities, seeds 0-4: within 1 point of the best pooled val accuracy,
      the lowest pooled val MCD; ``tools/choose_defaults.py fairscratch``, table in ``papers/ballot.md``). The
      logistic surrogate is unbounded below (it keeps falling as the favoured group's scores rise and the
      other's fall), so a large λ overshoots (λ = 0.5 flips adult's signed DP gap to −0.90). ``0`` is plain
      edge-popup (the control).
    * ``fairness="auto"``: FST's DP surrogate where it applies (binary target with groups), the class surrogate
      elsewhere.
    * ``scale_fan=True``: edge-popup's signed constant scaled for the kept fan-in (σ = gain/√(fan_in·d)), so a
      layer's output variance does not shrink with the density.
    """

    fairness_weight: float = 0.05  # λ: loss = CE + λ · surrogate (0: plain edge-popup)
    fairness: str = "auto"  # "auto", "dp", "eo" (binary target with groups) or "class" (class fairness)
    scale_fan: bool = True  # signed constant σ = gain/√(fan_in · density) (False: gain/√fan_in)

    #: A val-rule run stores its final mask too: the ``select="last"`` twin is derived from it.
    VAL_RULE_FINAL_MASK: ClassVar[bool] = True

    def last_epoch_twin(self) -> None:
        """None: a ``select="val_rule"`` run keeps the masks of its candidate epochs while it trains (the mask, the
        top scores, changes at every step), which its ``select="last"`` twin does not store; it trains itself (and
        the ``last`` twin is derived from it instead: ``VAL_RULE_FINAL_MASK``)."""
        return None

    def validate(self) -> "FairScratchConfig":
        super().validate()
        check_number("fairness_weight", self.fairness_weight, 0)
        check_choice("fairness", self.fairness, FAIRNESS)
        return self

    def validate_for(self, exp: Experiment) -> None:
        super().validate_for(exp)
        if self.fairness in ("dp", "eo"):
            b = exp.bundle
            if b.num_classes != 2 or b.num_groups != 2:
                raise ParameterError(
                    f"fairness {self.fairness!r} needs a binary target and two groups; {exp.data.name!r} has "
                    f"{b.num_classes} classes and {b.num_groups} groups (use 'class' or 'auto')")

    def surrogate_kind(self, exp: Experiment) -> str:
        if self.fairness != "auto":
            return self.fairness
        b = exp.bundle
        return "dp" if b.num_classes == 2 and b.num_groups == 2 else "class"


# ------------------------------------------------------------------------------------------ the subnetwork


class _TopK(torch.autograd.Function):
    """0/1 mask of the k largest entries (ties: lower index); backward is the identity (straight-through)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        out = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
        out[top_indices([scores.detach().flatten()], k)] = 1.0
        return out.view_as(scores)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class Subnet(nn.Module):
    """Parametrisation ``weight = frozen signed constant ⊙ top-k(|scores|)``: only ``scores`` is trained."""

    def __init__(self, scores: torch.Tensor, k: int) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores)
        self.k = k

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _TopK.apply(self.scores.abs(), self.k)

    def mask(self) -> torch.Tensor:
        with torch.no_grad():
            return _TopK.apply(self.scores.abs(), self.k).bool().cpu()


def signed_constant(weight: torch.Tensor, density: float, scale_fan: bool) -> torch.Tensor:
    """``sign(weight) · √2 / √(fan_in · (density if scale_fan else 1))`` (edge-popup's signed constant, ReLU gain).

    A zero entry of ``weight`` gets the positive sign.
    """
    fan_in = weight[0].numel()
    std = math.sqrt(2.0) / math.sqrt(fan_in * (density if scale_fan else 1.0))
    return torch.where(weight >= 0, std, -std).to(weight.dtype)


def build_subnetwork(net: nn.Module, density: float, seed: int, scale_fan: bool = True) -> nn.Module:
    """Turn ``net`` (θ0 loaded) into an edge-popup network in place and return it.

    Prunable weights become frozen signed constants with a trained score each (the forward pass keeps the top
    ``round(density · n_l)`` |scores| of every layer); every other parameter is frozen: biases at 0, normalisation
    layers at weight 1, bias 0 (no affine transform). The weight of a Conv/Linear layer the model leaves out of
    pruning (``prune_ignore``, e.g. the first conv) stays dense: a frozen signed constant at density 1 (zeroing it,
    like a bias, would cut every path through the layer).
    """
    names = prunable_names(net)
    gen = torch.Generator().manual_seed(10_007 * seed + 53)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.requires_grad_(False)
            if name not in names:
                owner = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
                is_weight = name.endswith("weight")
                if is_weight and isinstance(owner, (nn.Linear, nn.modules.conv._ConvNd)):
                    p.copy_(signed_constant(p, 1.0, scale_fan))
                else:
                    is_norm_weight = isinstance(owner, nn.modules.batchnorm._NormBase) and is_weight
                    p.fill_(1.0 if is_norm_weight else 0.0)
    for name in names:
        module_name, attr = name.rsplit(".", 1) if "." in name else ("", name)
        module = net.get_submodule(module_name)
        w = getattr(module, attr)
        with torch.no_grad():
            w.copy_(signed_constant(w, density, scale_fan))
        scores = torch.empty(w.shape)
        bound = math.sqrt(6.0 / ((1 + 5.0) * w[0].numel()))  # kaiming_uniform_(a=√5), as edge-popup's scores
        scores.uniform_(-bound, bound, generator=gen)
        parametrize.register_parametrization(module, attr, Subnet(scores, kept_count(density, w.numel())),
                                             unsafe=True)
        module.parametrizations[attr].original.requires_grad_(False)  # type: ignore[union-attr,index]
    return net


def subnet_mask(net: nn.Module) -> Mask:
    """The current mask of an edge-popup network: name of the prunable weight -> top-k of its |scores|."""
    out = {}
    for module_name, module in net.named_modules():
        if parametrize.is_parametrized(module):
            for attr, plist in module.parametrizations.items():
                out[f"{module_name}.{attr}" if module_name else attr] = plist[0].mask()
    return out


# ------------------------------------------------------------------------------------------ the loss


def group_priors(g: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """FST's priors: P(g) for DP, P(g, y = 1) for EO (shares of the whole training split)."""
    n = len(g)
    if kind == "eo":
        return torch.stack([((g == k) & (y == 1)).sum() for k in (0, 1)]).double() / n
    return torch.stack([(g == k).sum() for k in (0, 1)]).double() / n


def favoured_group(g: torch.Tensor, y: torch.Tensor) -> int:
    """The group pushed up by the DP/EO surrogate: the one with the lower rate of positive labels (ours)."""
    rates = [float(y[g == k].float().mean()) if bool((g == k).any()) else 1.0 for k in (0, 1)]
    return 0 if rates[0] < rates[1] else 1


def logistic_surrogate(f: torch.Tensor, g: torch.Tensor, up: int, priors: torch.Tensor) -> torch.Tensor:
    """FST's logistic surrogate: ``−(1/B)[Σ_{g=up} log σ(f)/P_up + Σ_{g≠up} log σ(−f)/P_other]``."""
    if f.numel() == 0:
        return f.sum()
    a, b = g == up, g != up
    pa, pb = float(priors[up]), float(priors[1 - up])
    return -(F.logsigmoid(f[a]).sum() / pa + F.logsigmoid(-f[b]).sum() / pb) / f.numel()


def class_loss_variance(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Variance over the classes present in the batch of their mean CE loss (population variance)."""
    losses = F.cross_entropy(logits, y, reduction="none")
    classes = torch.unique(y)
    means = torch.stack([losses[y == c].mean() for c in classes])
    return ((means - means.mean()) ** 2).mean()


def fairness_loss(kind: str, lam: float, up: int = 1, priors: Optional[torch.Tensor] = None
                  ) -> Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]:
    """``loss_fn(logits, y, g)`` of :func:`ballot_lib.training.train`: CE + λ · surrogate (plain CE for λ = 0)."""

    def loss(logits: torch.Tensor, y: torch.Tensor, g: Optional[torch.Tensor]) -> torch.Tensor:
        ce = F.cross_entropy(logits, y)
        if lam == 0:
            return ce
        if kind == "class":
            return ce + lam * class_loss_variance(logits, y)
        if g is None or priors is None:
            raise ValueError(f"the {kind!r} surrogate needs the groups of the data and their priors")
        f = logits[:, 1] - logits[:, 0]
        if kind == "eo":
            pos = y == 1
            f, g = f[pos], g[pos]
        return ce + lam * logistic_surrogate(f, g, up, priors.to(logits.device))

    return loss


# ------------------------------------------------------------------------------------------ the method


def _compute(exp: Experiment, cfg: FairScratchConfig) -> float:
    # One schedule (budget × the recipe) that trains the scores; θ0 only gives the signs (no dense training).
    return cfg.recipe(exp).epochs


@register("fairscratch", FairScratchConfig, compute=_compute)
def run_fairscratch(exp: Experiment, cfg: FairScratchConfig, seed: int, run: Run) -> MethodOutput:
    """Fair Scratch Tickets: edge-popup scores on a frozen signed-constant network, CE + λ · fairness surrogate."""
    net = build_subnetwork(exp.model_from(exp.initial_weights(seed)), cfg.density, seed, cfg.scale_fan)
    kind = cfg.surrogate_kind(exp)
    train_split = exp.bundle.train
    up, priors = 1, None
    if kind in ("dp", "eo"):
        assert train_split.g is not None  # surrogate_kind gives "dp"/"eo" only for data with groups
        up = favoured_group(train_split.g, train_split.y)
        priors = group_priors(train_split.g, train_split.y, kind)
    recipe = cfg.recipe(exp)
    hooks, state, candidates = [], None, None
    if cfg.select == "val_rule":
        # The mask (top-k of |scores|) changes at every step: keep the masks of the epochs the val rule can still
        # select (each the top-k the epoch was evaluated with), so the stored mask is the selected epoch's. Every
        # epoch's mask keeps exactly round(d · n_l) entries per layer: every epoch is at the target density.
        counts = {n: int(m.sum()) for n, m in subnet_mask(net).items()}
        candidates = CandidateMasks(cfg.select_eps, lambda: subnet_mask(net), counts)
        hooks, state = [candidates], {"val_rule_masks": candidates}
    res = exp.train_net(net, run, seed, loss_fn=fairness_loss(kind, cfg.fairness_weight, up, priors), cfg=recipe,
                        hooks=hooks, state=state, desc=f"fairscratch d={cfg.density} λ={cfg.fairness_weight} s{seed}")
    mask, selected, final_mask = val_rule_mask(cfg, res, candidates, subnet_mask(net))
    summary = {"surrogate": kind, "layer_kept": {n: int(m.sum()) for n, m in mask.items()}, **selected}
    if priors is not None:
        summary.update(favoured_group=up, group_prior_0=float(priors[0]), group_prior_1=float(priors[1]))
    return MethodOutput(res, mask, train_epochs=recipe.epochs, summary=summary, final_mask=final_mask)

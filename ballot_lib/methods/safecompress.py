"""SafeCompress adapted to fairness [reconstruction] (SPEC §6): dynamic sparse training with a fairness test.

SafeCompress (Zhu et al., ASE'22 / TSE'24) compresses a network by dynamic sparse training (its code builds on
ITOP's ``sparselearning.core.Masking``) and, at every topology update, lets a *safety test* choose among several
candidate sparse models. The original test is a membership-inference attack; here it is a fairness test. What
this module does:

1. **Start**: a random mask with Erdős–Rényi-Kernel per-layer densities at density ``d``
   (:func:`ballot_lib.pruning.make_mask` ``"erk_random"``), on the seed's dense θ0 (kept weights scaled by
   1/√(layer density), ``init_scale``); round(d·N) weights kept.
2. **Train** with the experiment's recipe and data order (the shared loop: paired with every other method).
3. **Every ΔT steps** (``update_every``; until ``stop_fraction`` of training), in every layer: prune the
   fraction ``r_t`` of its active weights with the smallest |w|, ``r_t = prune_rate · ½(1 + cos(π t / t_stop))``
   (ITOP's cosine-decayed death rate, from 0.5), and regrow the same number among the inactive entries, so
   every layer's kept count, and the density, stays exact after every update.
4. **Fairness test**: each of the K ``candidates`` regrows differently — ``"random"`` (uniform among inactive
   entries, SET/ITOP) or ``"gradient"`` (largest |∂L/∂w| of the dense gradient on a training batch, RigL). A
   regrown weight starts at 0, so candidates are indistinguishable until trained: each is probed by
   ``probe_steps`` plain SGD steps on fixed probe batches (on a copy; the probe's updates are thrown away),
   then scored on the **val** split by ``acc − λ·gap`` (``gap``: MCD, or the group accuracy gap on datasets with
   a sensitive attribute). The best candidate's mask is kept (ties: the first candidate). Every update's
   candidates, scores and choice are recorded (summary ``updates``; ``chosen_<kind>`` counts how often each
   kind won, a column of :func:`ballot_lib.results.load_results`).

Checkpoint selection: the mask changes at topology updates, so a ``select="val_rule"`` run keeps, while it trains,
the masks of the epochs the rule can still select (:class:`~ballot_lib.methods.base.CandidateMasks`: bit-packed, on
the CPU, only epochs within ``select_eps`` of the best val accuracy so far that no other kept epoch dominates, saved
in the training checkpoint) and stores the mask of the selected epoch -- the mask that epoch's evaluation used, a
topology update at its last step included -- with that epoch's metrics (summary ``selected_epoch``; ``updates`` still
records the whole training). Prune and regrow keep every layer's count, so every epoch is at the target density and
may be selected. Such a run trains itself (its ``select="last"`` twin keeps no candidate masks) and also stores
its final mask (``final_mask.pt``), so that its ``select="last"`` twin is derived from it without training
(:func:`~ballot_lib.methods.base.val_rule_twin`): one training serves both rules when the val-rule run comes first,
as notebook 03 orders them.

Compute: one schedule of the dense recipe from θ0, ``compute_epochs = train.epochs``. It needs only θ0, no
trained dense network (the suite's dense run of the seed stores θ0; that training is shared and not counted).
The fairness test's probes and val evaluations are extra passes, reported as ``probe_examples`` (training
examples processed by probes) and ``val_evaluations``.

Example:
    >>> run_method(exp, "safecompress", seed=0, density=0.1)  # doctest: +SKIP
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..experiment import Experiment
from ..pruning import Mask, make_mask, mask_from_scores
from ..registry import check_choice
from ..results import Run
from ..training import DeviceData, epoch_generator, evaluate, lr_at
from ..checks import ParameterError, check_int, check_number
from .base import BudgetConfig, CandidateMasks, MethodOutput, register, val_rule_mask

CANDIDATES = ("random", "gradient")
GAPS = ("auto", "mcd", "cwv", "group_acc_gap", "dp_gap", "eo_gap")
INIT_SCALES = ("sparse", "none")


def scale_for_density(net: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Multiply each masked weight tensor by 1/√(its density): the dense initialisation's input variance."""
    params = dict(net.named_parameters())
    with torch.no_grad():
        for n, m in mask.items():
            d = float(m.float().mean())
            if d > 0:
                params[n].mul_(m.to(params[n].device, params[n].dtype) / math.sqrt(d))


@dataclass(frozen=True)
class SafeCompressConfig(BudgetConfig):
    """SafeCompress options. Defaults and why:

    * ``update_every=0``: one topology update per epoch. Each update costs K probes and K val evaluations, so
      one per epoch keeps the fairness test at the cost of the per-epoch evaluation the loop already does; a
      positive value is ΔT in optimiser steps (ITOP uses 100-1000 steps on CIFAR).
    * ``prune_rate=0.5``: ITOP's and SafeCompress's initial death rate, cosine-decayed to 0 at ``stop_fraction``.
    * ``stop_fraction=0.75``: no updates in the last quarter of training (RigL's end of updates), so the final
      topology is trained before evaluation.
    * ``candidates=("random", "gradient")``: K = 2 regrowths that differ in kind (SET-style random and RigL-style
      gradient), so the fairness test chooses between two real alternatives.
    * ``fairness_weight=1.0``: λ in ``acc − λ·gap``: one point of accuracy is worth one point of gap.
    * ``probe_steps=2``: two SGD steps are enough to move regrown weights off 0 and make candidates differ, at
      a cost of K·2 mini-batches per update.
    * ``init_scale="sparse"``: the kept weights of θ0 are scaled by 1/√(layer density) so every unit's input
      variance is that of the dense initialisation (Evci et al. 2022, "Gradient flow in sparse neural networks").
      Without it, sparse training from the dense θ0 at d ≤ 0.1 stays at chance on the MLP (measured on
      ``digits``, 10 epochs: val accuracy 0.10 for ERK and uniform random masks at d = 0.1, 0.82 with scaling).
    """

    update_every: int = 0  # ΔT in optimiser steps between topology updates (0: one update per epoch)
    prune_rate: float = 0.5  # initial fraction of each layer's active weights pruned and regrown (cosine decay)
    stop_fraction: float = 0.75  # no topology updates after this fraction of the training steps
    candidates: tuple[str, ...] = ("random", "gradient")  # the K regrowth candidates ("random", "gradient")
    fairness_weight: float = 1.0  # λ: candidates are scored by val acc − λ·gap
    gap: str = "auto"  # the gap: "auto" (group_acc_gap with a sensitive attribute, else mcd) or a metric name
    probe_steps: int = 2  # SGD steps each candidate is probed with before its val score (on a copy)
    init_scale: str = "sparse"  # "sparse": kept θ0 weights × 1/√(layer density); "none": θ0 as is

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.candidates, list):  # from JSON / YAML parameter files
            object.__setattr__(self, "candidates", tuple(self.candidates))

    #: A val-rule run stores its final mask too: the ``select="last"`` twin is derived from it.
    VAL_RULE_FINAL_MASK: ClassVar[bool] = True

    def last_epoch_twin(self) -> None:
        """None: a ``select="val_rule"`` run keeps the masks of its candidate epochs while it trains (the mask
        changes during training), which its ``select="last"`` twin does not store; it trains itself (and the
        ``last`` twin is derived from it instead: ``VAL_RULE_FINAL_MASK``)."""
        return None

    def validate(self) -> "SafeCompressConfig":
        super().validate()
        check_int("update_every", self.update_every, 0)
        check_number("prune_rate", self.prune_rate, 0, 1, low_open=True, high_open=True)
        check_number("stop_fraction", self.stop_fraction, 0, 1, low_open=True)
        if not self.candidates:
            raise ParameterError("candidates must name at least one regrowth, e.g. ('random', 'gradient')")
        for c in self.candidates:
            check_choice("candidate", c, CANDIDATES)
        check_number("fairness_weight", self.fairness_weight, 0)
        check_choice("gap", self.gap, GAPS)
        check_int("probe_steps", self.probe_steps, 0)
        check_choice("init_scale", self.init_scale, INIT_SCALES)
        return self

    def validate_for(self, exp: Experiment) -> None:
        super().validate_for(exp)
        if self.gap in ("group_acc_gap", "dp_gap", "eo_gap") and exp.bundle.num_groups == 0:
            raise ParameterError(f"gap {self.gap!r} needs a dataset with a sensitive attribute; "
                                 f"{exp.data.name!r} has none (use 'mcd' or 'auto')")

    def gap_metric(self, exp: Experiment) -> str:
        if self.gap != "auto":
            return self.gap
        return "group_acc_gap" if exp.bundle.num_groups > 0 else "mcd"


def prune_rate_at(cfg: SafeCompressConfig, step: int, stop_step: int) -> float:
    """Fraction of active weights pruned (and regrown) at ``step``: cosine decay from ``prune_rate`` to 0."""
    if stop_step <= 0:
        return 0.0
    return cfg.prune_rate * 0.5 * (1.0 + math.cos(math.pi * min(step / stop_step, 1.0)))


def prune_smallest(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], rate: float
                   ) -> tuple[Mask, dict[str, int]]:
    """Drop ``round(rate · active_l)`` smallest-|w| active entries in every layer; return the mask and counts.

    Ties go to the lower index (kept), as in every mask of :mod:`ballot_lib.pruning`.
    """
    counts, budgets, scores = {}, {}, {}
    for n, m in mask.items():
        active = int(m.bool().sum())
        counts[n] = int(round(rate * active))
        budgets[n] = active - counts[n]
        scores[n] = weights[n].detach().abs().double().cpu().masked_fill(~m.bool().cpu(), float("-inf"))
    return mask_from_scores(scores, budgets=budgets), counts


def regrow(mask: Mapping[str, torch.Tensor], counts: Mapping[str, int], scores: Mapping[str, torch.Tensor]
           ) -> Mask:
    """Activate ``counts[l]`` inactive entries of every layer, the highest-scoring ones (ties: lower index)."""
    out = {}
    for n, m in mask.items():
        m = m.bool().cpu()
        s = scores[n].detach().double().cpu().masked_fill(m, float("-inf"))
        grow = mask_from_scores({n: s}, budgets={n: counts[n]})[n]
        out[n] = m | grow
    return out


class SafeCompressHook:
    """The step hook of :func:`ballot_lib.training.train`: topology updates with the fairness test.

    Stateful (``state_dict``/``load_state_dict``): the record of updates travels in the training checkpoint, so a
    resumed run records the same updates as an uninterrupted one.
    """

    def __init__(self, exp: Experiment, cfg: SafeCompressConfig, seed: int, net: nn.Module) -> None:
        self.exp, self.cfg, self.seed, self.net = exp, cfg, seed, net
        self.recipe = cfg.recipe(exp)  # the schedule this run trains (budget × the recipe)
        bundle = exp.bundle
        self.steps_per_epoch = math.ceil(len(bundle.train) / exp.train.batch_size)
        self.every = cfg.update_every or self.steps_per_epoch
        self.stop_step = int(cfg.stop_fraction * self.recipe.epochs * self.steps_per_epoch)
        self.gap = cfg.gap_metric(exp)
        self.updates: list[dict[str, Any]] = []
        self._data: Optional[tuple[DeviceData, DeviceData]] = None
        #: the mask the loop enforces (its own tensors, as of the latest step): the epoch's evaluation uses it
        self.mask: Optional[dict[str, torch.Tensor]] = None

    # -- state for the checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: Optional[dict]) -> None:
        self.updates = list(state["updates"]) if state else []

    # -- data ------------------------------------------------------------------------------------------------
    def data(self) -> tuple[DeviceData, DeviceData]:
        if self._data is None:
            dev = next(self.net.parameters()).device
            b = self.exp.bundle
            train_d, val_d = DeviceData(b.train, b, dev), DeviceData(b.val, b, dev)
            val_d.augment = False
            self._data = (train_d, val_d)
        return self._data

    def batch(self, step: int, stream: int, k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A training mini-batch fixed by (seed, step, stream, k), drawn apart from the training order."""
        train_d, _ = self.data()
        gen = epoch_generator(self.seed, step * 31 + k, stream)
        idx = torch.randperm(train_d.n, generator=gen)[: self.exp.train.batch_size].to(train_d.device)
        return train_d.prepare(train_d.x[idx]), train_d.y[idx]

    def dense_gradient(self, step: int, names: list[str]) -> dict[str, torch.Tensor]:
        """|∂CE/∂w| on one training batch, for every entry (pruned ones included: RigL's growth signal)."""
        params = dict(self.net.named_parameters())
        x, y = self.batch(step, stream=5)
        was = self.net.training
        self.net.eval()  # no side effect on normalisation statistics of the trained network
        loss = F.cross_entropy(self.net(x).float(), y)
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        self.net.train(was)
        return {n: g.detach().abs() for n, g in zip(names, grads)}

    # -- the fairness test -----------------------------------------------------------------------------------
    def score(self, mask: Mapping[str, torch.Tensor], step: int, lr: float) -> dict[str, float]:
        """Probe a candidate on a copy (``probe_steps`` SGD steps on fixed batches), then evaluate it on val."""
        import copy

        probe = copy.deepcopy(self.net)
        params = dict(probe.named_parameters())
        with torch.no_grad():
            for n, m in mask.items():
                params[n].mul_(m.to(params[n].device, params[n].dtype))
        opt = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=lr)
        probe.train()
        for k in range(self.cfg.probe_steps):
            x, y = self.batch(step, stream=6, k=k)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(probe(x).float(), y).backward()
            with torch.no_grad():
                for n, m in mask.items():
                    grad = params[n].grad
                    if grad is not None:
                        grad.mul_(m.to(params[n].device, params[n].dtype))
            opt.step()
        _, val_d = self.data()
        metrics = evaluate(probe, val_d, self.exp.bundle, self.exp.train.eval_batch_size)
        gap = metrics.get(self.gap, float("nan"))
        gap = 0.0 if gap is None or math.isnan(gap) else float(gap)
        return {"val_acc": metrics["acc"], f"val_{self.gap}": gap,
                "score": metrics["acc"] - self.cfg.fairness_weight * gap}

    def current_mask(self) -> dict[str, torch.Tensor]:
        """The mask the loop enforces now (after the latest step and its update), as CPU bool tensors."""
        if self.mask is None:
            raise RuntimeError("no training step has run yet: the mask the loop enforces is unknown")
        return {n: m.detach().bool().cpu() for n, m in self.mask.items()}

    def __call__(self, step: int, opt: torch.optim.Optimizer, mask: dict[str, torch.Tensor]) -> None:
        self.mask = mask
        if (step + 1) % self.every != 0 or step + 1 > self.stop_step:
            return
        rate = prune_rate_at(self.cfg, step + 1, self.stop_step)
        names = list(mask)
        params = dict(self.net.named_parameters())
        current = {n: mask[n].detach().bool().cpu() for n in names}
        kept, counts = prune_smallest({n: params[n] for n in names}, current, rate)
        if sum(counts.values()) == 0:
            return
        lr = lr_at(self.recipe, (step + 1) / self.steps_per_epoch)
        candidates: list[tuple[str, Mask]] = []
        for i, kind in enumerate(self.cfg.candidates):
            if kind == "random":
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + (step + 1) * 101 + i)
                scores = {n: torch.rand(current[n].shape, generator=gen, dtype=torch.float64) for n in names}
            else:
                scores = self.dense_gradient(step + 1, names)
            candidates.append((kind, regrow(kept, counts, scores)))
        results = [self.score(m, step + 1, lr) for _, m in candidates]
        best = max(range(len(candidates)), key=lambda j: (results[j]["score"], -j))
        chosen = candidates[best][1]
        # The mask changes in place (the loop re-masks the weights); regrown weights start at 0 with no optimizer
        # state: every per-weight state tensor (SGD's momentum buffer, Adam's first and second moments, AMSGrad's
        # maximum) is zeroed outside the new mask, so a regrown entry does not inherit moments from before.
        with torch.no_grad():
            for n in names:
                new = chosen[n].to(mask[n].device)
                grown = new & ~current[n].to(new.device)
                mask[n].copy_(new.to(mask[n].dtype))
                params[n].masked_fill_(grown, 0.0)
                for buf in opt.state.get(params[n], {}).values():
                    if torch.is_tensor(buf) and buf.shape == new.shape:
                        buf.mul_(new.to(buf.dtype))
        self.updates.append({
            "step": step + 1, "prune_rate": rate, "moved": int(sum(counts.values())),
            "candidates": [{"kind": kind, **r} for (kind, _), r in zip(candidates, results)],
            "chosen": candidates[best][0], "chosen_index": best,
            "kept": int(sum(int(m.sum()) for m in chosen.values())),
        })


def _compute(exp: Experiment, cfg: SafeCompressConfig) -> float:
    # One sparse schedule from θ0 (budget × the recipe); no trained dense network is needed (θ0 only initialises).
    return cfg.recipe(exp).epochs


@register("safecompress", SafeCompressConfig, compute=_compute)
def run_safecompress(exp: Experiment, cfg: SafeCompressConfig, seed: int, run: Run) -> MethodOutput:
    """Dynamic sparse training from an ERK random mask; each topology update chosen by a val fairness test."""
    theta0 = exp.initial_weights(seed)
    net0 = exp.model_from(theta0)
    start = make_mask("erk_random", net0, cfg.density, seed=10_007 * seed + 41)
    net = exp.model_from(theta0)
    if cfg.init_scale == "sparse":
        scale_for_density(net, start)
    hook = SafeCompressHook(exp, cfg, seed, net)
    hooks: list = []
    state: dict[str, Any] = {"safecompress": hook}
    candidates: Optional[CandidateMasks] = None
    if cfg.select == "val_rule":
        # The mask changes at topology updates: keep the masks of the epochs the val rule can still select (each
        # epoch's evaluation sees the mask after that epoch's last step), so the stored mask is the selected
        # epoch's. Prune and regrow keep every layer's count, so every epoch is at the target density.
        candidates = CandidateMasks(cfg.select_eps, hook.current_mask, {n: int(m.sum()) for n, m in start.items()})
        hooks, state = [candidates], {**state, "val_rule_masks": candidates}
    res = exp.train_net(net, run, seed, mask=start, step_hooks=[hook], hooks=hooks, state=state,
                        cfg=hook.recipe, desc=f"safecompress d={cfg.density} s{seed}")
    mask, selected, final_mask = val_rule_mask(cfg, res, candidates, res.mask)  # type: ignore[arg-type]
    # The fairness test's choices: a count per candidate kind (columns of load_results) and every update's
    # candidates with their val scores (summary "updates").
    chosen = {f"chosen_{k}": sum(u["chosen"] == k for u in hook.updates) for k in dict.fromkeys(cfg.candidates)}
    return MethodOutput(res, mask, train_epochs=hook.recipe.epochs, summary={
        "gap_metric": hook.gap, "topology_updates": len(hook.updates), **chosen,
        "probe_examples": len(hook.updates) * len(cfg.candidates) * cfg.probe_steps * exp.train.batch_size,
        "val_evaluations": len(hook.updates) * len(cfg.candidates),
        "updates": hook.updates, **selected,
    }, final_mask=final_mask)


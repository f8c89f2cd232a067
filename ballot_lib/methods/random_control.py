"""Random control: a random mask trained exactly like an LTH ticket (the control for "selection").

``like="lth"`` (default) keeps the per-layer kept counts of the one-shot magnitude mask of θT at the same
density, so only *which* weights are kept differs from LTH; ``like="uniform"`` draws a uniform random mask
(global or per layer) instead. The mask's random seed is derived from the run seed.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..experiment import Experiment
from ..pruning import SCOPES, make_mask
from ..registry import check_choice
from ..results import Run
from .base import MethodOutput, SparseConfig, check_rewind, register, train_masked

LIKE = ("lth", "uniform")


@dataclass(frozen=True)
class RandomConfig(SparseConfig):
    like: str = "lth"  # "lth": per-layer counts of the magnitude mask; "uniform": uniform random
    rewind_epoch: int = 0  # train from θk like LTH
    scope: str = "global"  # magnitude mask scope (like="lth") or uniform scope (like="uniform")

    def validate(self) -> "RandomConfig":
        super().validate()
        check_choice("like", self.like, LIKE)
        check_choice("scope", self.scope, SCOPES)
        return self

    def validate_for(self, exp: Experiment) -> None:
        check_rewind(exp, self.rewind_epoch)


def _compute(exp: Experiment, cfg: RandomConfig) -> float:
    # The dense training (θT gives the matched per-layer counts, θk the start), then training from θk.
    return exp.train.epochs + (exp.train.epochs - cfg.rewind_epoch)


@register("random", RandomConfig, compute=_compute, reuses_dense=True)
def run_random(exp: Experiment, cfg: RandomConfig, seed: int, run: Run) -> MethodOutput:
    """A random mask (per-layer matched to LTH's by default), trained from θk like LTH."""
    T, k = exp.train.epochs, cfg.rewind_epoch
    theta_T = exp.dense_weights(seed, T)
    theta_k = exp.dense_weights(seed, k)
    net = exp.model_from(theta_T)
    mask_seed = 10_007 * seed + 17
    if cfg.like == "lth":
        mask = make_mask("random_like", net, cfg.density, seed=mask_seed,
                         like=make_mask(f"magnitude_{cfg.scope}", net, cfg.density))
    else:
        mask = make_mask("random" if cfg.scope == "global" else "random_layer", net, cfg.density, seed=mask_seed)
    res = train_masked(exp, run, seed, theta_k, mask, start_epoch=k, desc=f"random d={cfg.density} s{seed}")
    return MethodOutput(res, mask, train_epochs=T - k)

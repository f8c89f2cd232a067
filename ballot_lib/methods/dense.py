"""Dense: train θ0 → θT. The reference for every delta."""
from __future__ import annotations

from dataclasses import dataclass

from ..experiment import Experiment, RunResult
from .base import register


@dataclass(frozen=True)
class DenseConfig:
    """The dense run has no options: its recipe is the experiment's."""

    def validate(self) -> "DenseConfig":
        return self


@register("dense", DenseConfig, compute=lambda exp, cfg: exp.train.epochs, managed=False)
def run_dense(exp: Experiment, cfg: DenseConfig, seed: int) -> RunResult:
    """Dense training from θ0 with the experiment's recipe."""
    return exp.dense(seed)

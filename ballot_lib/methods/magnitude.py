"""Magnitude Pruning (MP): one-shot magnitude mask of the trained dense θT, then fine-tuning from θT.

Fine-tuning modes (``finetune``):

* ``"full"`` (default): the whole training recipe again from θT with the mask — the same training budget as
  one LTH retraining (compute-matched comparison, SPEC §6);
* ``"lr_rewind"``: learning-rate rewinding (Renda et al. 2020): from θT, replay the schedule from epoch
  ``rewind_epoch`` to the end;
* ``"short"``: ``finetune_epochs`` epochs at constant ``finetune_lr`` (a cheap fine-tune; it underfits at high
  sparsity and can make MP look unfair for the wrong reason — every table states each method's compute).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ..experiment import Experiment
from ..pruning import SCOPES, make_mask
from ..registry import check_choice
from ..checks import ParameterError, check_number
from ..results import Run
from .base import MethodOutput, SparseConfig, check_rewind, register, train_masked

FINETUNE_MODES = ("full", "lr_rewind", "short")


@dataclass(frozen=True)
class MagnitudeConfig(SparseConfig):
    scope: str = "global"  # "global" (one threshold) or "layer" (each layer at density)
    finetune: str = "full"  # "full", "lr_rewind" or "short"
    rewind_epoch: int = 0  # lr_rewind: schedule position to rewind the learning rate to
    finetune_epochs: Optional[int] = None  # short: epochs (default: a tenth of train.epochs, at least 1)
    finetune_lr: Optional[float] = None  # short: constant learning rate (default: train.lr / 100)

    def validate(self) -> "MagnitudeConfig":
        super().validate()
        check_choice("scope", self.scope, SCOPES)
        check_choice("finetune", self.finetune, FINETUNE_MODES)
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be >= 1, got {self.finetune_epochs}")
        if self.finetune_lr is not None:
            check_number("finetune_lr", self.finetune_lr, 0, low_open=True)
        # An option of another fine-tuning would be ignored, yet change the run id: refuse it.
        for name, value, default, applies in (("rewind_epoch", self.rewind_epoch, 0, "lr_rewind"),
                                              ("finetune_epochs", self.finetune_epochs, None, "short"),
                                              ("finetune_lr", self.finetune_lr, None, "short")):
            if value != default and self.finetune != applies:
                raise ParameterError(f"{name}={value!r} applies to finetune={applies!r} only, not "
                                     f"finetune={self.finetune!r}: leave it unset or use finetune={applies!r}")
        return self

    def validate_for(self, exp: Experiment) -> None:
        if self.finetune == "lr_rewind":
            check_rewind(exp, self.rewind_epoch)

    def finetune_epochs_for(self, exp: Experiment) -> int:
        """Epochs of the fine-tuning from θT."""
        T = exp.train.epochs
        if self.finetune == "full":
            return T
        if self.finetune == "lr_rewind":
            return T - self.rewind_epoch
        return self.finetune_epochs or max(1, T // 10)


def _compute(exp: Experiment, cfg: MagnitudeConfig) -> float:
    # The dense training, then the fine-tuning (short fine-tunes count as whole epochs of the same data).
    return exp.train.epochs + cfg.finetune_epochs_for(exp)


@register("mp", MagnitudeConfig, compute=_compute, reuses_dense=True)
def run_magnitude(exp: Experiment, cfg: MagnitudeConfig, seed: int, run: Run) -> MethodOutput:
    """Magnitude pruning of θT at ``density``, then fine-tuning from θT."""
    theta_T = exp.dense_weights(seed, exp.train.epochs)
    mask = make_mask(f"magnitude_{cfg.scope}", exp.model_from(theta_T), cfg.density)
    T = exp.train.epochs
    if cfg.finetune == "full":
        res = train_masked(exp, run, seed, theta_T, mask, desc=f"mp d={cfg.density} s{seed}")
        epochs = T
    elif cfg.finetune == "lr_rewind":
        res = train_masked(exp, run, seed, theta_T, mask, start_epoch=cfg.rewind_epoch,
                           desc=f"mp-lrr d={cfg.density} s{seed}")
        epochs = T - cfg.rewind_epoch
    else:
        epochs = cfg.finetune_epochs or max(1, T // 10)
        recipe = replace(exp.train, epochs=epochs, lr=cfg.finetune_lr or exp.train.lr / 100, schedule="constant",
                         milestones=(), warmup_epochs=0)
        res = train_masked(exp, run, seed, theta_T, mask, cfg=recipe, desc=f"mp-ft d={cfg.density} s{seed}")
    return MethodOutput(res, mask, train_epochs=epochs)

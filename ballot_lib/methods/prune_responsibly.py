"""The population of pruned models of Prune Responsibly (Paganini 2020): the techniques of ``torch.nn.utils.prune``.

Each technique is a registered method named after the ``torch.nn.utils.prune`` function it mirrors:

==========================  =====================================================================================
``l1_unstructured``         smallest-|w| weights removed in every layer separately (each layer at ``density``)
``global_unstructured``     smallest-|w| weights removed with one threshold over all prunable weights (L1, global)
``random_unstructured``     uniformly random weights removed in every layer (each layer at ``density``)
``ln_structured``           whole output channels/units with the smallest L_n norm removed (``n``, ``dim=0``)
``random_structured``       whole output channels/units removed at random
==========================  =====================================================================================

Masks come from the mask-strategy registry (:func:`ballot_lib.pruning.make_mask`; :data:`MASKS` names each
technique's strategy). Every technique prunes the trained dense θT of the seed once and then retrains from θT with the mask enforced
(the "pruning and fine-tuning" pipeline). Retraining budget: ``retrain_epochs`` epochs of the experiment's
recipe (same optimiser and peak LR, the schedule compressed into those epochs); the default (``None``) is the
full recipe, ``train.epochs`` epochs — the same budget as MP's full fine-tune. Each run records
``compute_epochs = train.epochs + retrain epochs``.

Structured masks cannot hit an arbitrary density: each hidden layer keeps ``round(density * out)`` output rows
(at least one) and the classifier layer stays dense so every class keeps its logit. The density the mask
actually has is stored (summary ``density``, the ``density`` column of :func:`ballot_lib.results.load_results`)
next to the requested one (``density_target``); analyses use the achieved density. The stored density counts
kept weights; weights of the next layer that read a removed unit are kept but see a constant input.

Example:
    >>> run_method(exp, "ln_structured", seed=0, density=0.5, n=2)  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Optional

from ..checks import check_applies
from ..experiment import Experiment
from ..pruning import Mask, layer_densities, make_mask
from ..results import Run
from .base import MethodOutput, SparseConfig, budget_recipe, register, train_masked

#: The techniques, in the order ``torch.nn.utils.prune`` documents them.
TECHNIQUES = ("l1_unstructured", "global_unstructured", "random_unstructured", "ln_structured",
              "random_structured")
STRUCTURED = ("ln_structured", "random_structured")


@dataclass(frozen=True)
class PopulationConfig(SparseConfig):
    """Options shared by the five techniques (``n`` only matters for ``ln_structured``)."""

    retrain_epochs: Optional[int] = None  # retraining epochs from θT (None: train.epochs, the full recipe)
    retrain_lr: Optional[float] = None  # peak LR of the retraining (None: train.lr)
    n: float = 1.0  # ln_structured: order of the norm ranking output channels (1: L1, 2: L2)

    #: The technique a configuration is for: each technique registers its own subclass that sets it
    #: (:func:`technique_config`), so that ``n`` is refused where it does not apply. None: not known, not checked.
    TECHNIQUE: ClassVar[Optional[str]] = None

    def validate(self) -> "PopulationConfig":
        super().validate()
        if self.retrain_epochs is not None and (not isinstance(self.retrain_epochs, int) or self.retrain_epochs < 1):
            raise ValueError(f"retrain_epochs must be a positive integer or None, got {self.retrain_epochs!r}")
        if self.retrain_lr is not None and not self.retrain_lr > 0:
            raise ValueError(f"retrain_lr must be > 0, got {self.retrain_lr!r}")
        if not self.n > 0:
            raise ValueError(f"n (the norm order of ln_structured) must be > 0, got {self.n!r}")
        if self.TECHNIQUE is not None:  # ignored by the other techniques' masks, yet part of the run id
            check_applies("n", self.n, 1.0, self.TECHNIQUE == "ln_structured", "technique 'ln_structured'",
                          f"technique {self.TECHNIQUE!r}", "use method 'ln_structured'")
        return self


def technique_config(technique: str) -> type:
    """The config class of ``technique``: :class:`PopulationConfig` (same fields, so the same run ids) knowing its
    technique. Kept in this module under its name so that it pickles."""
    name = f"PopulationConfig_{technique}"
    cls = type(name, (PopulationConfig,), {"TECHNIQUE": technique, "__module__": __name__, "__qualname__": name,
                                           "__doc__": f"{PopulationConfig.__doc__} Technique: ``{technique}``.",
                                           # structured masks remove whole rows: they land near the density
                                           **({"DENSITY_TOLERANCE": None} if technique in STRUCTURED else {})})
    globals()[name] = cls
    return cls


def _mask_seed(seed: int) -> int:
    """The random techniques' mask seed, derived from the run seed (differs from the random control's)."""
    return 10_007 * seed + 29


#: technique -> its mask strategy in :data:`ballot_lib.pruning.MASK_STRATEGIES`
MASKS: dict[str, str] = {
    "l1_unstructured": "magnitude_layer",
    "global_unstructured": "magnitude_global",
    "random_unstructured": "random_layer",
    "ln_structured": "ln_structured",
    "random_structured": "random_structured",
}


def technique_mask(technique: str, net, cfg: PopulationConfig, seed: int) -> Mask:
    """The mask ``technique`` puts on ``net`` (θT loaded) under ``seed``."""
    if technique not in MASKS:
        raise ValueError(f"unknown pruning technique {technique!r}; valid: {list(MASKS)}")
    return make_mask(MASKS[technique], net, cfg.density, seed=_mask_seed(seed), n=cfg.n)


def _compute(exp: Experiment, cfg: PopulationConfig) -> float:
    # The dense training, then the retraining from θT.
    return exp.train.epochs + (cfg.retrain_epochs or exp.train.epochs)


def _prune_and_retrain(technique: str, exp: Experiment, cfg: PopulationConfig, seed: int, run: Run
                       ) -> MethodOutput:
    T = exp.train.epochs
    theta_T = exp.dense_weights(seed, T)
    mask = technique_mask(technique, exp.model_from(theta_T), cfg, seed)
    epochs = cfg.retrain_epochs or T
    # The recipe compressed into the retraining epochs: multistep milestones scale with them (budget_recipe), so a
    # short retraining still anneals; cosine keeps its shape over the shorter span.
    recipe = replace(budget_recipe(exp.train, epochs / T), lr=cfg.retrain_lr or exp.train.lr,
                     warmup_epochs=min(exp.train.warmup_epochs, epochs - 1))
    res = train_masked(exp, run, seed, theta_T, mask, cfg=recipe, desc=f"{technique} d={cfg.density} s{seed}")
    return MethodOutput(res, mask, train_epochs=epochs,
                        summary={"density_target": cfg.density, "layer_density": layer_densities(mask)})


def _register(technique: str) -> None:
    def run(exp: Experiment, cfg: PopulationConfig, seed: int, run: Run) -> MethodOutput:
        return _prune_and_retrain(technique, exp, cfg, seed, run)

    run.__doc__ = f"Prune θT with torch.nn.utils.prune's {technique} at ``density``, then retrain from θT."
    register(technique, technique_config(technique), compute=_compute, reuses_dense=True)(run)


for _t in TECHNIQUES:
    _register(_t)

"""Standard Lottery Ticket Hypothesis: iterative magnitude pruning (IMP) with rewinding to θk.

Level l prunes the trained weights of level l-1 (level 0 = the dense θT) by magnitude down to density d_l
(:func:`ballot_lib.pruning.imp_densities`; pruned weights are never revived), rewinds the kept weights to θk
(k = 0 is the original LTH, a small k is "late rewinding") and retrains the schedule from epoch k to the end.
``levels=1`` is one-shot LTH.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..experiment import Experiment
from ..pruning import SCOPES, imp_densities, load_mask, make_mask, save_mask
from ..results import Run
from ..training import state_dict_cpu
from ..registry import check_choice
from ..checks import ParameterError
from .base import MethodOutput, SparseConfig, check_rewind, register, train_masked


@dataclass(frozen=True)
class LTHConfig(SparseConfig):
    rewind_epoch: int = 0  # k: rewind the kept weights to θk (0 = original LTH)
    levels: int = 1  # IMP levels (1 = one-shot); each prunes the same fraction of the remaining weights
    rate: Optional[float] = None  # if set (e.g. 0.2), prune this fraction per level instead (leave levels at 1)
    scope: str = "global"  # "global" or "layer" magnitude ranking

    def validate(self) -> "LTHConfig":
        super().validate()
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        if self.rate is not None and not 0 < self.rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")
        if self.rate is not None and self.levels != 1:  # one would be ignored (and still change the run id)
            raise ParameterError(f"give levels ({self.levels}) or rate ({self.rate}), not both: with rate the "
                                 "number of levels follows from density and rate")
        check_choice("scope", self.scope, SCOPES)
        return self

    def validate_for(self, exp: Experiment) -> None:
        check_rewind(exp, self.rewind_epoch)

    def schedule(self) -> list[float]:
        return imp_densities(self.density, None if self.rate else self.levels, self.rate or 0.2)


def _compute(exp: Experiment, cfg: LTHConfig) -> float:
    # The dense training, then every IMP level retrains the schedule from epoch k.
    return exp.train.epochs + len(cfg.schedule()) * (exp.train.epochs - cfg.rewind_epoch)


def _last_finished_level(run: Run, levels: int) -> int:
    """The last level (< ``levels``) whose weights and mask are stored, 0 if none."""
    return max((level for level in range(1, levels) if run.file(f"level{level}_weights.pt").exists()
                and run.file(f"level{level}_mask.pt").exists()), default=0)


def _drop_level_scaffolding(run: Run, level: int) -> None:
    """Once ``level`` is stored: the weights of earlier levels and every checkpoint up to ``level`` are no longer
    needed to resume."""
    for older in range(1, level):
        run.file(f"level{older}_weights.pt").unlink(missing_ok=True)
    for done in range(1, level + 1):
        run.file(f"checkpoint_l{done}.pt").unlink(missing_ok=True)


@register("lth", LTHConfig, compute=_compute, reuses_dense=True)
def run_lth(exp: Experiment, cfg: LTHConfig, seed: int, run: Run) -> MethodOutput:
    """IMP with rewinding to θk, retraining the schedule from epoch k at every level."""
    k, T = cfg.rewind_epoch, exp.train.epochs
    trained = exp.dense_weights(seed, T)
    theta_k = exp.dense_weights(seed, k)
    schedule = cfg.schedule()
    # A finished level (not the last) is stored in the run folder (level{l}.json, level{l}_mask.pt, then
    # level{l}_weights.pt last), so an interrupted IMP run resumes after its last finished level. Only that level's
    # weights are needed to go on: older weights and a finished level's checkpoint are deleted as soon as it is
    # stored, so the folder holds at most one level's weights and one checkpoint (not one per level; ~0.3 GB
    # instead of ~4.5 GB at ResNet-50, 14 levels). The per-level masks and metrics stay with the run.
    done = _last_finished_level(run, len(schedule))
    mask, levels = None, [run.read_json(f"level{level}.json") for level in range(1, done + 1)]
    if done:
        trained = exp.load_weights(run, f"level{done}_weights.pt")
        mask = load_mask(run.file(f"level{done}_mask.pt"), exp.param_shapes(prunable=True))
        _drop_level_scaffolding(run, done)
    for level, d in enumerate(schedule[done:], start=done + 1):
        mask = make_mask(f"magnitude_{cfg.scope}", exp.model_from(trained), d, current=mask)
        res = None  # the previous level's model is not kept alive (on its device) while this level trains
        res = train_masked(exp, run, seed, theta_k, mask, start_epoch=k, checkpoint_name=f"checkpoint_l{level}.pt",
                           desc=f"lth L{level}/{len(schedule)} d={d:.3g} s{seed}")
        trained = state_dict_cpu(res.net)
        info = {"level": level, "density": d, **{f"{s}_{m}": v for s, vals in res.final.items()
                                                  for m, v in vals.items() if m in ("acc", "cwv", "mcd")}}
        levels.append(info)
        if level < len(schedule):
            run.write_json(f"level{level}.json", info)
            save_mask(mask, run.file(f"level{level}_mask.pt"))
            run.save_tensor(f"level{level}_weights.pt", trained)
            _drop_level_scaffolding(run, level)
    # Intermediate weights only served resumption (run_method stores the result next); the last level's checkpoint
    # goes when the run finishes.
    for level in range(1, len(schedule)):
        run.file(f"level{level}_weights.pt").unlink(missing_ok=True)
    assert res is not None and mask is not None  # the last level always trains here (it is never stored as a level)
    return MethodOutput(res, mask, train_epochs=T - k, summary={"levels": levels})

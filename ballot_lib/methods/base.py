"""The method registry and what every method shares: typed configs validated up front, and mask training."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional

import torch

from ..experiment import Experiment, RunResult, finish_run, load_run
from ..pruning import check_density, check_mask_matches, density as mask_density, save_mask
from ..registry import Registry
from ..results import Run
from ..training import TrainConfig
from ..validation import check_fields, check_seed


@dataclass(frozen=True)
class MethodSpec:
    """A method: its config dataclass and the function ``run(exp, cfg, seed) -> RunResult``."""

    name: str
    config: type
    run: Callable[[Experiment, Any, int], RunResult]
    doc: str = ""
    #: optional ``prepare(exp, cfg)`` called for every job of a grid before anything trains (e.g. to have the
    #: dense runs collect Ballot's vote gradients while they train)
    prepare: Optional[Callable[[Experiment, Any], None]] = None


#: name -> MethodSpec
METHODS: Registry[MethodSpec] = Registry("method")


def register(name: str, config: type, doc: str = "", prepare: Optional[Callable[[Experiment, Any], None]] = None):
    """Decorator registering ``run(exp, cfg, seed)`` as method ``name`` with config class ``config``."""

    def wrap(fn):
        METHODS.register(name)(MethodSpec(name, config, fn, doc or (fn.__doc__ or "").strip().splitlines()[0],
                                          prepare))
        return fn

    return wrap


def make_config(method: str, **kwargs: Any) -> Any:
    """Build and validate a method's config from keyword arguments; unknown fields raise ``ValueError``."""
    spec = METHODS.get(method)
    fields = {f.name for f in dataclasses.fields(spec.config)}
    unknown = set(kwargs) - fields
    if unknown:
        raise ValueError(f"method {method!r} has no option(s) {sorted(unknown)}; valid options: {sorted(fields)}")
    cfg = spec.config(**kwargs)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def check_method_args(exp: Experiment, method: str, cfg: Any) -> None:
    """Validate a config against the experiment (e.g. rewind epoch within the schedule) before any training."""
    if hasattr(cfg, "validate_for"):
        cfg.validate_for(exp)


def run_method(exp: Experiment, method: str, seed: int, **kwargs: Any) -> RunResult:
    """Run (or load, if already complete) ``method`` under ``seed``.

    Example:
        >>> run_method(exp, "lth", seed=0, density=0.2, rewind_epoch=1)  # doctest: +SKIP
    """
    check_seed(seed)
    cfg = make_config(method, **kwargs)
    check_method_args(exp, method, cfg)
    prepare_method(exp, method, cfg)
    return locked_run(exp, method, cfg, seed)


def locked_run(exp: Experiment, method: str, cfg: Any, seed: int) -> RunResult:
    """Run ``method`` holding its run folder's lock: a second process on the same run waits, then loads it."""
    spec = METHODS.get(method)
    run = exp.store.run(exp.run_config(method, config_dict(cfg), seed))
    if run.complete:
        return load_run(run, exp)
    with run.lock():
        # The method re-checks completeness under the lock: a run finished meanwhile is loaded, not retrained.
        return spec.run(exp, cfg, seed)


def prepare_method(exp: Experiment, method: str, cfg: Any) -> None:
    """Let the method set up what the dense runs compute while they train (its ``prepare`` hook, if any)."""
    prepare = METHODS.get(method).prepare
    if prepare is not None:
        prepare(exp, cfg)


def config_dict(cfg: Any) -> dict:
    """A config dataclass as a JSON-able dict (tuples become lists)."""
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class SparseConfig:
    """Fields shared by every sparse method."""

    density: float = 0.2  # fraction of prunable weights kept, in (0, 1]

    def __post_init__(self) -> None:
        # density=1 and density=1.0 are the same run: store it as a float so both hash alike.
        if isinstance(self.density, int) and not isinstance(self.density, bool):
            object.__setattr__(self, "density", float(self.density))

    def validate(self) -> "SparseConfig":
        """Check every field against its annotation (no coercion; subclasses' fields too), then the density."""
        check_fields(self)
        check_density(self.density)
        return self


def check_rewind(exp: Experiment, epoch: int, what: str = "rewind_epoch") -> None:
    if not 0 <= epoch < exp.train.epochs:
        raise ValueError(f"{what} must be in [0, {exp.train.epochs}) (train.epochs = {exp.train.epochs}), got {epoch}")


def method_run(exp: Experiment, method: str, cfg: Any, seed: int) -> tuple[Run, Optional[RunResult]]:
    """The store's run for (method, cfg, seed), and its result if it is already complete (then nothing trains)."""
    run = exp.store.run(exp.run_config(method, config_dict(cfg), seed))
    return run, (load_run(run, exp) if run.complete else None)


def train_masked(
    exp: Experiment,
    run: Run,
    seed: int,
    init: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    *,
    start_epoch: int = 0,
    cfg: Optional[TrainConfig] = None,
    schedule: Optional[TrainConfig] = None,
    checkpoint_name: str = "checkpoint.pt",
    desc: str = "",
    **kwargs: Any,
):
    """Load ``init`` into a fresh model and train it with ``mask`` enforced; returns the TrainResult."""
    net = exp.model_from(init)
    check_mask_matches(net, mask)
    return exp.train_net(net, run, seed, mask=mask, start_epoch=start_epoch, cfg=cfg or exp.train,
                         schedule=schedule, checkpoint_name=checkpoint_name, desc=desc, **kwargs)


def finish_masked(run: Run, res, mask: Mapping[str, torch.Tensor], train_epochs: int, compute_epochs: float,
                  **extra: Any) -> RunResult:
    """Store the mask, history and metrics of a sparse run and mark it complete."""
    save_mask(mask, run.file("mask.pt"))
    finish_run(run, res, density=mask_density(mask), train_epochs=train_epochs, compute_epochs=compute_epochs,
               **extra)
    return load_run(run)

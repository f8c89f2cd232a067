"""The method registry and what every method shares: typed configs validated up front, the run lifecycle, the
training compute of each method, and mask training.

A method is registered with :func:`register` as ``train(exp, cfg, seed, run) -> MethodOutput``: it trains and
returns what it produced. :func:`run_method` owns everything around it, once for every method: load a complete
run instead of training, lock the run folder, start it, store the mask, history and metrics, write the summary
(with the density the mask has and the method's declared compute), mark it complete.

Compute: each method declares ``compute(exp, cfg)``, its total training cost in *epochs of the dense recipe*
(the dense training it starts from included), in one place next to its registration; every run's summary (and so
:func:`ballot_lib.results.load_results`) carries it as ``compute_epochs`` so every table can state it.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional

import torch

from ..experiment import Experiment, RunResult, finish_run, load_run
from ..maskbits import pack_bits, unpack_bits
from ..pruning import check_density, check_mask_matches, density as mask_density, load_mask, save_mask
from ..registry import Registry
from ..results import Run, atomic_copy, discard_if_unstarted
from ..training import TrainConfig, TrainResult
from ..checks import ParameterError, check_fields, check_seed, is_number


@dataclass
class MethodOutput:
    """What a method's ``train`` returns; :func:`run_method` stores it."""

    result: TrainResult  # the final training (its history and final metrics are stored)
    mask: Optional[Mapping[str, torch.Tensor]]  # the final mask (stored as mask.pt; its density is recorded)
    train_epochs: int  # epochs of the final training
    summary: dict = field(default_factory=dict)  # method-specific summary fields (diagnostics, choices)
    #: A ``select="val_rule"`` run of a method whose mask changes during training (its config sets
    #: ``VAL_RULE_FINAL_MASK``): the mask its final weights obey, stored as ``final_mask.pt`` beside the selected
    #: epoch's ``mask.pt``, so that its ``select="last"`` twin is derived from the run without training. None else.
    final_mask: Optional[Mapping[str, torch.Tensor]] = None


@dataclass(frozen=True)
class MethodSpec:
    """A method: its config dataclass, its training function and its declared compute.

    ``run`` is ``train(exp, cfg, seed, run) -> MethodOutput`` (the lifecycle is :func:`run_method`'s), or, for a
    method with ``managed=False`` (the dense run, whose lifecycle is :meth:`Experiment.dense`'s),
    ``run(exp, cfg, seed) -> RunResult``.
    """

    name: str
    config: type
    run: Callable[..., Any]
    doc: str = ""
    #: optional ``prepare(exp, cfg)`` called for every job of a grid before anything trains (e.g. to have the
    #: dense runs collect Ballot's vote gradients while they train)
    prepare: Optional[Callable[[Experiment, Any], None]] = None
    #: ``compute(exp, cfg)``: total training compute in epochs of the dense recipe (dense training included)
    compute: Optional[Callable[[Experiment, Any], float]] = None
    managed: bool = True
    #: whether the method needs the seed's trained dense run (it starts from θT/θk or votes during it), so that
    #: ``compute`` counts that dense training: a plan that trains the dense run once counts only the rest
    #: (:mod:`ballot_lib.cost`); methods that need only θ0 use ``Experiment.initial_weights`` and train none
    reuses_dense: bool = False

    def compute_epochs(self, exp: Experiment, cfg: Any) -> float:
        """Training compute of this method with ``cfg`` on ``exp``, in epochs of the dense recipe."""
        if self.compute is None:
            raise NotImplementedError(f"method {self.name!r} declares no compute")
        return self.compute(exp, cfg)


#: name -> MethodSpec
METHODS: Registry[MethodSpec] = Registry("method")


def register(name: str, config: type, doc: str = "", prepare: Optional[Callable[[Experiment, Any], None]] = None,
             compute: Optional[Callable[[Experiment, Any], float]] = None, managed: bool = True,
             reuses_dense: bool = False, replace: bool = False):
    """Decorator registering ``train(exp, cfg, seed, run) -> MethodOutput`` as method ``name``.

    Args:
        config: the method's options dataclass (validated before anything trains).
        prepare: see :attr:`MethodSpec.prepare`.
        compute: ``compute(exp, cfg)``, the method's training compute in epochs of the dense recipe.
        managed: ``False`` for a method that manages its own run (the dense run): ``run(exp, cfg, seed)``.
        reuses_dense: ``compute`` includes the seed's dense training (see :attr:`MethodSpec.reuses_dense`).
        replace: replace a method already registered as ``name`` (a notebook cell run again) instead of raising.

    A method defined outside the library reaches notebooks run by papermill and ``sweep`` jobs (other processes)
    when its module is listed in ``$BALLOT_PLUGINS`` (:mod:`ballot_lib.plugins`).
    """

    # Mistakes of a registration are errors here, not after a run has trained (found by an extension review).
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise TypeError(f"register({name!r}, ...): config must be a dataclass type (the method's options), got "
                        f"{config!r}")
    if managed and compute is None:
        raise TypeError(f"register({name!r}, ...): compute=... is required: compute(exp, cfg) -> the method's "
                        f"training compute in epochs of the dense recipe (stored with every run, used by the tables "
                        f"and `sweep cost`)")

    def wrap(fn):
        lines = (fn.__doc__ or "").strip().splitlines()
        METHODS.register(name, replace=replace)(MethodSpec(name, config, fn, doc or (lines[0] if lines else name),
                                          prepare, compute, managed, reuses_dense))
        return fn

    return wrap


def compute_epochs(exp: Experiment, method: str, **kwargs: Any) -> float:
    """The declared training compute of ``method`` with options ``kwargs`` on ``exp`` (epochs of the dense recipe).

    Example:
        >>> compute_epochs(exp, "lth", density=0.2, levels=3)  # doctest: +SKIP  (T + 3 retrainings)
    """
    cfg = make_config(method, **kwargs)
    check_method_args(exp, method, cfg)
    return METHODS.get(method).compute_epochs(exp, cfg)


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
    else:  # a plain dataclass of a registered method: its fields against their annotations, as SparseConfig does
        check_fields(cfg, coerce=False)  # an int stays an int: the run ids of its stored runs do not change
        if getattr(cfg, "density", None) is not None:
            check_density(cfg.density)
    return cfg


def check_method_args(exp: Experiment, method: str, cfg: Any) -> None:
    """Validate a config against the experiment (e.g. rewind epoch within the schedule) before any training."""
    if hasattr(cfg, "validate_for"):
        cfg.validate_for(exp)


def run_method(exp: Experiment, name: str, seed: int, **kwargs: Any) -> RunResult:
    """Run (or load, if already complete) method ``name`` under ``seed`` with options ``kwargs``.

    Args:
        exp: the experiment (data, model, training recipe, results store) shared by every method.
        name: a registered method (``ballot_lib.methods.METHODS``): ``dense``, ``mp``, ``lth``, ``random``,
            ``ballot``, ``safecompress``, ``fairscratch`` and the Prune Responsibly techniques.
        seed: the seed; every method under one seed starts from the same θ0 and sees the same data order.
        **kwargs: the method's options (its config's fields), e.g. ``density``. ``dense`` keeps every weight:
            it accepts ``density=1.0`` (so one call shape serves every method) and refuses any other density.

    Returns:
        The run's :class:`~ballot_lib.results.RunResult` (trained now, or loaded from the store).

    Example:
        >>> run_method(exp, "lth", seed=0, density=0.2, rewind_epoch=1)  # doctest: +SKIP
    """
    check_seed(seed)
    if name == "dense" and "density" in kwargs:
        kwargs = dict(kwargs)
        density = kwargs.pop("density")
        if density is not None and not (is_number(density) and float(density) == 1.0):
            raise ValueError(f"method 'dense' keeps every weight: density must be 1.0 (or left out), got "
                             f"{density!r}; for a sparse model use one of {sorted(set(METHODS.names()) - {'dense'})}")
    cfg = make_config(name, **kwargs)
    check_method_args(exp, name, cfg)
    check_kept_weights(exp, cfg)
    prepare_method(exp, name, cfg)
    return locked_run(exp, name, cfg, seed)


def check_kept_weights(exp: Experiment, cfg: Any) -> None:
    """A sparse configuration must keep at least one of the model's prunable weights (a density below 1/N kept
    none: the run trained a constant network and was stored as complete)."""
    density = getattr(cfg, "density", None)
    if density is None or density >= 1:
        return
    n = sum(math.prod(shape) for shape in exp.param_shapes(prunable=True).values())
    if round(density * n) < 1:
        raise ParameterError(f"density={density!r} keeps round(density × {n:,}) = 0 of the {exp.model.name!r} "
                             f"model's {n:,} prunable weights; use a density of at least {1 / n:.3g}")


def locked_run(exp: Experiment, method: str, cfg: Any, seed: int) -> RunResult:
    """The run lifecycle of every method: load a complete run, else lock, start, train, store, finish.

    A second process on the same run waits for the lock, then finds the run complete and loads it.
    """
    spec = METHODS.get(method)
    run = exp.store.run(exp.run_config(method, config_dict(cfg), seed))
    if run.complete:
        return load_run(run, exp)
    exp.check_model_fits()  # data and model agree, before the store gets a folder (a stored run loads as is)
    with run.lock():
        if not spec.managed:
            return spec.run(exp, cfg, seed)
        # Completeness is re-checked under the lock: a run finished meanwhile is loaded, not retrained.
        if run.complete:
            return load_run(run, exp)
        exp.bundle  # noqa: B018  (data first: a missing dataset must leave no run folder behind)
        derived = _derive_selected(exp, method, cfg, seed, run)
        if derived is not None:
            return derived
        run.start()
        with discard_if_unstarted(run):  # a failure before the method wrote anything leaves nothing behind
            out = spec.run(exp, cfg, seed, run)
        try:
            compute = check_output(exp, method, cfg, out, spec.compute_epochs(exp, cfg))
        except (TypeError, ValueError):
            _discard_refused(run)
            raise
        apply_selection(cfg, out)
        return store_output(exp, run, out, compute)


def _discard_refused(run: Run) -> None:
    """Remove what a training whose output :func:`check_output` refused left in its run folder (checkpoints, level
    files): the method has to change, and its next run must start afresh -- a checkpoint of the refused training
    (its mask part of the checkpoint's identity) would stop the corrected run with "delete it"."""
    _clear_run_files(run)


def _clear_run_files(run: Run, keep: tuple[str, ...] = ()) -> None:
    """Remove the files of ``run``'s folder but its housekeeping (hidden: the lock) and ``keep``."""
    for p in run.path.iterdir():
        if p.is_file() and not p.name.startswith(".") and p.name not in keep:
            p.unlink()


def last_epoch_twin(cfg: Any) -> Optional[Any]:
    """The ``select="last"`` config whose training a ``select="val_rule"`` run of ``cfg`` reuses when it is
    complete, or None (other rules; a config whose training depends on ``select``, e.g. Ballot's refined training).

    A config decides by its ``last_epoch_twin()`` method (:meth:`SparseConfig.last_epoch_twin`; a new method whose
    training changes with ``select`` overrides it to return None); a config without one is its own ``select="last"``
    copy, unless it has a true ``refined`` field."""
    if hasattr(cfg, "last_epoch_twin"):
        return cfg.last_epoch_twin()
    if getattr(cfg, "select", "last") != "val_rule" or getattr(cfg, "refined", False):
        return None
    return dataclasses.replace(cfg, select="last")


#: The file in which a val-rule run of a method whose mask changes during training stores its final mask
#: (:attr:`MethodOutput.final_mask`).
FINAL_MASK_FILE = "final_mask.pt"
#: Summary fields that belong to a run's checkpoint selection, not to its training: a run derived from its twin
#: (:func:`training_twin`) leaves them out and records its own.
SELECTION_SUMMARY = ("select", "selected_epoch", "candidate_masks_max", "derived_from")


def val_rule_twin(cfg: Any) -> Optional[Any]:
    """The ``select="val_rule"`` config whose stored run holds everything the ``select="last"`` run of ``cfg``
    stores (same training; the final mask; the last epoch's metrics in its history), or None.

    Either the two runs store the same mask (the val-rule run is derived from the last-epoch run:
    :func:`last_epoch_twin` of it gives ``cfg`` back), or the method stores the final mask of its val-rule runs
    itself (its config sets ``VAL_RULE_FINAL_MASK``: SafeCompress and FairScratch, whose masks change during
    training). A method whose training depends on ``select`` (Ballot's refined training) has no such twin."""
    if getattr(cfg, "select", None) != "last" or getattr(cfg, "NO_VAL_RULE", None):
        return None
    twin = dataclasses.replace(cfg, select="val_rule")
    if getattr(cfg, "VAL_RULE_FINAL_MASK", False) or last_epoch_twin(twin) == cfg:
        return twin
    return None


def training_twin(exp: Experiment, method: str, cfg: Any, seed: int, planned: Any = ()) -> Optional[Run]:
    """The run whose training a run of ``cfg`` reuses instead of training, or None (it trains itself).

    The two runs differ only in their checkpoint rule (``select``) and train alike (same seed, θ0 and data order;
    deterministic): a ``select="val_rule"`` run reuses its :func:`last_epoch_twin`, a ``select="last"`` run its
    :func:`val_rule_twin` -- whichever is complete in the store (a val-rule run of SafeCompress or FairScratch only
    with its ``final_mask.pt``: one stored before that file existed cannot serve), or whose id is in ``planned``
    (:func:`ballot_lib.cost.plan_grid`: planned to run before it, so that it will be complete). :func:`run_method`
    and ``sweep cost`` decide with this one rule, so the plan trains exactly what the runs do."""
    twin_cfg = last_epoch_twin(cfg)
    if twin_cfg is None:
        twin_cfg = val_rule_twin(cfg)
    if twin_cfg is None:
        return None
    twin = exp.store.run(exp.run_config(method, config_dict(twin_cfg), seed))
    if twin.complete:
        if cfg.select == "last" and last_epoch_twin(twin_cfg) != cfg and not twin.file(FINAL_MASK_FILE).is_file():
            return None
        return twin
    return twin if twin.id in planned else None


def _derive_selected(exp: Experiment, method: str, cfg: Any, seed: int, run: Run) -> Optional[RunResult]:
    """A run whose :func:`training_twin` is complete: same training (same seed, same data order, deterministic),
    so the twin's mask and history are reused and only this run's selection is applied -- no retraining.

    A val-rule run takes the last-epoch run's mask and selects its epoch from the history; a last-epoch run takes
    the val-rule run's mask (or its ``final_mask.pt``, where the stored mask is the selected epoch's) and the
    metrics of the history's last epoch."""
    twin = training_twin(exp, method, cfg, seed)
    if twin is None:
        return None
    # The twin's files are checked before they are used (config hash, schemas, every file a complete run holds,
    # mask shapes): a damaged twin raises with the fix instead of spreading into a new "complete" run.
    loaded = load_run(twin, exp)
    history = twin.read_json("history.json")
    if not history or "val_acc" not in history[0]:
        return None
    summary = {k: v for k, v in loaded.summary.items() if k not in SELECTION_SUMMARY}
    summary.setdefault("environment", None)  # where the twin trained; unknown for a twin stored before it was recorded
    res = TrainResult(net=None, history=history, final={k: {} for k in loaded.metrics},  # type: ignore[arg-type]
                      seconds=float(summary.pop("seconds", 0.0)))
    mask = loaded.mask
    if cfg.select == "last":
        _row_metrics(res, history[-1])
        if twin.file(FINAL_MASK_FILE).is_file():
            mask = load_mask(twin.file(FINAL_MASK_FILE), exp.param_shapes(prunable=True))
    summary["derived_from"] = twin.id
    out = MethodOutput(res, mask, train_epochs=int(summary.pop("train_epochs", 0)), summary=summary)
    compute = summary.pop("compute_epochs", None)
    summary.pop("density", None)
    apply_selection(cfg, out)
    run.start()
    _copy_training_files(twin, run)
    return store_output(exp, run, out, compute if compute is not None else METHODS.get(method).compute_epochs(exp, cfg))


#: Files of a run folder that its selection or its lifecycle writes (:func:`store_output`, ``Run.start``): a derived
#: run writes its own; every other file of a complete run (LTH's per-level ``level<l>.json``/``level<l>_mask.pt``)
#: belongs to the training and is copied from the twin.
RUN_OWN_FILES = ("config.json", "summary.json", "metrics.json", "history.json", "mask.pt", FINAL_MASK_FILE)


def _copy_training_files(twin: Run, run: Run) -> None:
    """Give a derived run the twin's training files (same training, so the same files: LTH's per-level masks and
    metrics) after removing what an interrupted training of this run left (checkpoints, level weights)."""
    _clear_run_files(run, keep=("config.json",))
    for p in sorted(twin.path.iterdir()):
        if p.is_file() and not p.name.startswith((".", "checkpoint")) and p.name not in RUN_OWN_FILES:
            atomic_copy(p, run.file(p.name))


#: Checkpoint-selection rules every sparse method offers (the fair-comparison rule: one rule for a whole table).
SELECT_RULES = ("last", "val_rule")


def select_checkpoint(history: list[dict], eps: float) -> int:
    """Index of the epoch chosen on val: within ``eps`` of the best val accuracy, the lowest val MCD.

    Ties: higher val accuracy, then the later epoch. Reads val metrics only.
    """
    best = max(r["val_acc"] for r in history)
    ok = [i for i, r in enumerate(history) if r["val_acc"] >= best - eps]
    return min(ok, key=lambda i: (history[i]["val_mcd"], -history[i]["val_acc"], -i))


def select_epoch_metrics(res: TrainResult, eps: float) -> int:
    """Replace ``res.final`` (every split) by the metrics of the epoch :func:`select_checkpoint` picks; returns
    that epoch. Sparse runs store metrics and masks, not weights, so nothing else changes."""
    row = res.history[select_checkpoint(res.history, eps)]
    _row_metrics(res, row)
    return int(row["epoch"])


def _row_metrics(res: TrainResult, row: Mapping[str, Any]) -> None:
    """Replace ``res.final`` (every split it has) by the metrics of one history row (``<split>_<metric>``)."""
    for split in res.final:
        res.final[split] = {m[len(split) + 1:]: v for m, v in row.items() if m.startswith(split + "_")}


#: Summary fields :func:`store_output` writes itself: a method's own ``summary`` must not set them.
RESERVED_SUMMARY = ("density", "train_epochs", "compute_epochs", "seconds", "run", "res")


def check_output(exp: Experiment, method: str, cfg: Any, out: Any, compute: Any) -> float:
    """What a method's ``train`` returned, checked before anything of it is stored: a :class:`MethodOutput`
    holding a training result, a mask over exactly the model's prunable weights with 0/1 entries (a sparse
    method), an integer ``train_epochs``, summary fields that do not shadow the stored ones, and a finite
    compute >= 0. Returns the compute. A mistake in a new method would otherwise be stored as a
    complete run that fails every later load (``load_results`` of the whole store)."""
    from ..checks import is_int
    from ..pruning import check_mask, mask_mismatch

    where = f"method {method!r}"
    if not isinstance(out, MethodOutput):
        raise TypeError(f"{where}: its train function must return a MethodOutput(result, mask, train_epochs, "
                        f"summary), got {type(out).__name__}")
    if not isinstance(out.result, TrainResult):
        raise TypeError(f"{where}: MethodOutput.result must be the TrainResult of its final training, got "
                        f"{type(out.result).__name__}")
    sparse = getattr(cfg, "density", None) is not None
    if out.mask is None and sparse:
        raise ValueError(f"{where} returned no mask although it prunes (density={cfg.density}): return the final "
                         f"mask (name -> 0/1 tensor over the model's prunable weights)")
    for what, m in (("mask", out.mask), ("final_mask", out.final_mask)):
        if m is not None:
            check_mask(m, f"{where}'s {what}")
            problem = mask_mismatch(m, exp.param_shapes(prunable=True))
            if problem:
                raise ValueError(f"{where}'s {what} does not fit the model: {problem}")
            if sparse:
                check_mask_density(m, cfg, f"{where}'s {what}")
    val_rule = getattr(cfg, "select", "last") == "val_rule"
    if val_rule and getattr(cfg, "VAL_RULE_FINAL_MASK", False) and out.final_mask is None:
        raise ValueError(f"{where}: its config sets VAL_RULE_FINAL_MASK, so a select='val_rule' run must return "
                         f"MethodOutput(..., final_mask=<the mask of its final weights>)")
    if out.final_mask is not None and not val_rule:
        raise ValueError(f"{where}: MethodOutput.final_mask is for select='val_rule' runs only (a select="
                         f"{getattr(cfg, 'select', 'last')!r} run stores its final mask as its mask)")
    if not is_int(out.train_epochs) or out.train_epochs < 0:
        raise TypeError(f"{where}: MethodOutput.train_epochs must be an integer >= 0, got {out.train_epochs!r}")
    if not isinstance(out.summary, dict):
        raise TypeError(f"{where}: MethodOutput.summary must be a dict, got {type(out.summary).__name__}")
    clash = sorted(set(out.summary) & set(RESERVED_SUMMARY))
    if clash:
        raise ValueError(f"{where}: its summary sets {clash}, which the store writes itself "
                         f"({', '.join(RESERVED_SUMMARY)}); rename them")
    if not is_number(compute) or not math.isfinite(float(compute)) or compute < 0:
        raise TypeError(f"{where}: its compute(exp, cfg) must return a finite number of epochs >= 0, got "
                        f"{compute!r}")
    return compute


#: Relative tolerance on a sparse run's kept weights (:func:`check_mask_density`) for configs that do not set their
#: own ``DENSITY_TOLERANCE``.
DENSITY_TOLERANCE = 0.01


def check_mask_density(mask: Mapping[str, torch.Tensor], cfg: Any, where: str = "mask") -> None:
    """A sparse run's mask keeps what its config asks for, before it is stored as a run at that density.

    It must keep at least one weight (a mask of zeros trains a constant network), and -- unless the config's class
    sets ``DENSITY_TOLERANCE = None`` (masks that only land near the density: structured pruning) -- its kept count
    may differ from ``round(density × N)`` by at most ``DENSITY_TOLERANCE`` (default 1 %) of it, or by the number
    of tensors (per-layer rounding), whichever is larger. Every built-in method is exact up to that rounding; a
    new method's wrong mask (all ones, another density) would otherwise be compared as a run at ``density``."""
    kept = sum(int(m.bool().sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    if kept == 0:
        raise ValueError(f"{where} keeps none of the {total:,} prunable weights (density={cfg.density}): a run "
                         f"with it trains a constant network")
    tol = getattr(cfg, "DENSITY_TOLERANCE", DENSITY_TOLERANCE)
    if tol is None:
        return
    target = round(float(cfg.density) * total)
    if abs(kept - target) > max(tol * target, len(mask)):
        raise ValueError(f"{where} keeps {kept:,} of {total:,} prunable weights (density {kept / total:.4g}), but "
                         f"the run is for density={cfg.density} ({target:,} weights; tolerance {tol:g} of it, or "
                         f"one weight per tensor): return a mask at the config's density, or set "
                         f"DENSITY_TOLERANCE = None on {type(cfg).__name__} if the method only lands near it")


class CandidateMasks:
    """The masks of the epochs that ``select="val_rule"`` can still select, kept while a method whose mask changes
    during training (SafeCompress, FairScratch) trains: a val-rule run then stores the mask of the epoch whose
    metrics it stores (:func:`val_rule_mask`).

    An epoch hook of :func:`ballot_lib.training.train` (``hook(net, epoch, row)``, called after the epoch's
    evaluation): it keeps ``current()`` -- the mask that epoch was evaluated with -- while the epoch can still be
    selected, and drops every epoch that no longer can: one whose val accuracy is more than ``eps`` below the best
    so far (the best only rises), and one that another kept epoch dominates (at least as accurate, and preferred by
    :func:`select_checkpoint`'s order: whenever the dominated epoch qualifies, so does the other). After the last
    epoch it holds the epoch :func:`select_checkpoint` picks from the whole history. Masks are kept bit-packed on
    the CPU (8 weights per byte). Also a ``state`` object of ``train`` (``state_dict``/``load_state_dict``): the
    kept masks travel in the training checkpoint, so a resumed run keeps what an uninterrupted one keeps.

    ``counts`` (name -> kept entries, optional): every recorded mask must keep exactly these (the target density);
    an epoch whose mask does not is an error, never a candidate.
    """

    def __init__(self, eps: float, current: Callable[[], Mapping[str, torch.Tensor]],
                 counts: Optional[Mapping[str, int]] = None) -> None:
        self.eps = float(eps)
        self.current = current
        self.counts = None if counts is None else {n: int(c) for n, c in counts.items()}
        self.best = -math.inf
        self.held: list[dict] = []  # {"epoch", "acc", "mcd", "bits": name -> packed uint8 tensor}, by epoch
        self.shapes: dict[str, list[int]] = {}
        self.max_held = 0  # most masks held at once (a diagnostic: the store's peak size is max_held × nbytes/mask)

    # -- the epoch hook ----------------------------------------------------------------------------------------
    def __call__(self, net: Any, epoch: int, row: Mapping[str, Any]) -> None:
        if "val_acc" not in row or "val_mcd" not in row:
            raise ValueError("select='val_rule' needs the val split evaluated every epoch (val_acc, val_mcd)")
        self.add(epoch, row["val_acc"], row["val_mcd"], self.current)

    def add(self, epoch: int, acc: float, mcd: float,
            mask: "Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]] | None" = None) -> None:
        """Record epoch ``epoch`` (val accuracy ``acc``, val MCD ``mcd``); its ``mask`` (or a callable giving it,
        called only if the epoch is kept) is packed and kept while the epoch can still be selected."""
        acc, mcd = float(acc), float(mcd)
        self.best = max(self.best, acc)
        floor = self.best - self.eps  # as select_checkpoint: qualifies iff acc >= best - eps
        self.held = [c for c in self.held if c["acc"] >= floor]
        # A kept epoch c dominates the new one if c.acc >= acc and c comes first in (mcd, -acc, -epoch) order
        # (the new epoch is the latest, so it wins full ties); the new one dominates c if acc >= c.acc, mcd <= c.mcd.
        if not acc >= floor or any(c["acc"] >= acc and (c["mcd"] < mcd or (c["mcd"] == mcd and c["acc"] > acc))
                                   for c in self.held):
            return
        self.held = [c for c in self.held if not (acc >= c["acc"] and mcd <= c["mcd"])]
        if mask is None:
            raise ValueError(f"epoch {epoch} can be selected: its mask is needed")
        self.held.append({"epoch": int(epoch), "acc": acc, "mcd": mcd, "bits": self._pack(mask() if callable(mask)
                                                                                           else mask, epoch)})
        self.max_held = max(self.max_held, len(self.held))

    def _pack(self, mask: Mapping[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        shapes = {n: [int(s) for s in m.shape] for n, m in mask.items()}
        if self.shapes and shapes != self.shapes:
            raise ValueError(f"the mask of epoch {epoch} covers other weights or shapes than earlier epochs'")
        self.shapes = shapes
        if self.counts is not None:
            counts = {n: int(m.detach().bool().sum()) for n, m in mask.items()}
            if counts != self.counts:
                raise RuntimeError(f"the mask of epoch {epoch} keeps {sum(counts.values())} weights (per layer "
                                   f"{counts}), not the target {sum(self.counts.values())} ({self.counts}): an epoch "
                                   "of another density cannot be selected")
        return {n: pack_bits(m) for n, m in mask.items()}

    # -- reading -----------------------------------------------------------------------------------------------
    @property
    def epochs(self) -> list[int]:
        """The epochs held now (increasing)."""
        return [c["epoch"] for c in self.held]

    def nbytes(self) -> int:
        """Bytes of the masks held now."""
        return sum(b.numel() for c in self.held for b in c["bits"].values())

    def mask(self, epoch: int) -> dict[str, torch.Tensor]:
        """The mask of held epoch ``epoch`` (name -> CPU bool tensor)."""
        for c in self.held:
            if c["epoch"] == epoch:
                return {n: unpack_bits(b, self.shapes[n]) for n, b in c["bits"].items()}
        raise KeyError(f"epoch {epoch} is not among the held candidate epochs {self.epochs}")

    # -- checkpoint state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"eps": self.eps, "best": self.best, "held": self.held, "shapes": self.shapes,
                "max_held": self.max_held}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state is None:  # a val-rule run's checkpoint always holds it: this one is another run's
            raise ValueError("the checkpoint holds no candidate masks of the val rule")
        if float(state["eps"]) != self.eps:
            raise ValueError(f"the checkpoint's candidate masks are for select_eps={state['eps']}, not {self.eps}")
        self.best, self.max_held = float(state["best"]), int(state["max_held"])
        self.held = [dict(c) for c in state["held"]]
        self.shapes = {n: list(s) for n, s in state["shapes"].items()}


def val_rule_mask(cfg: Any, res: TrainResult, candidates: Optional[CandidateMasks], final: Mapping[str, torch.Tensor]
                  ) -> tuple[Mapping[str, torch.Tensor], dict, Optional[Mapping[str, torch.Tensor]]]:
    """The mask a run of a method whose mask changes during training stores, the summary fields that go with it,
    and its :attr:`MethodOutput.final_mask`: with ``select="val_rule"``, the mask of the epoch
    :func:`select_checkpoint` picks (whose metrics :func:`apply_selection` then stores; it checks the two agree)
    from ``candidates``, and the ``final`` mask as the final mask; else the ``final`` mask, and None."""
    if getattr(cfg, "select", "last") != "val_rule" or not res.history:
        return final, {}, None
    if candidates is None:
        raise ValueError("a select='val_rule' run of a method whose mask changes needs its candidate masks")
    epoch = int(res.history[select_checkpoint(res.history, cfg.select_eps)]["epoch"])
    return candidates.mask(epoch), {"selected_epoch": epoch, "candidate_masks_max": candidates.max_held}, final


def apply_selection(cfg: Any, out: MethodOutput) -> None:
    """Apply the config's checkpoint selection (``select="val_rule"``) and record the selected epoch.

    A method that stored the mask of the selected epoch itself (:func:`val_rule_mask`) has set ``selected_epoch``:
    it must be the epoch whose metrics are stored here."""
    if getattr(cfg, "select", "last") == "val_rule" and out.result.history:
        epoch = select_epoch_metrics(out.result, cfg.select_eps)
        if out.summary.get("selected_epoch", epoch) != epoch:
            raise RuntimeError(f"the run's mask is that of epoch {out.summary['selected_epoch']}, but the val rule "
                               f"selects epoch {epoch}: mask and metrics would not belong together")
        out.summary["selected_epoch"] = epoch
    elif out.result.history:
        out.summary.setdefault("selected_epoch", int(out.result.history[-1]["epoch"]))
    out.summary.setdefault("select", getattr(cfg, "select", "last"))


def store_output(exp: Experiment, run: Run, out: MethodOutput, compute: float) -> RunResult:
    """Store a method's mask, history and metrics, write its summary and mark the run complete."""
    summary: dict[str, Any] = {"density": 1.0}
    if out.mask is not None:
        save_mask(out.mask, run.file("mask.pt"))
        summary["density"] = mask_density(out.mask)
    if out.final_mask is not None:
        save_mask(out.final_mask, run.file(FINAL_MASK_FILE))
    finish_run(run, out.result, **summary, train_epochs=out.train_epochs, compute_epochs=compute, **out.summary)
    return load_run(run, exp)


def prepare_method(exp: Experiment, method: str, cfg: Any) -> None:
    """Let the method set up what the dense runs compute while they train (its ``prepare`` hook, if any)."""
    prepare = METHODS.get(method).prepare
    if prepare is not None:
        prepare(exp, cfg)


def config_dict(cfg: Any) -> dict:
    """A config dataclass as a JSON-able dict (tuples become lists).

    Options added after results existed are left out of the identity while they hold their default (listed in
    the config's ``HASH_NEUTRAL``), so the hashes of earlier runs stay valid (as open_lth does).

    A correction of the library that changes what a configuration trains is named by the config's
    ``behaviour_fixes()`` (a tuple of fix names, for the configurations the correction affects): the names join the
    identity as ``"fixes"``, so runs stored before the correction are never loaded as its results, while every
    configuration the correction does not touch keeps its hash.
    """
    d = asdict(cfg)
    neutral = getattr(cfg, "HASH_NEUTRAL", {})
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()
           if not (k in neutral and v == neutral[k] and type(v) is type(neutral[k]))}
    fixes = cfg.behaviour_fixes() if hasattr(cfg, "behaviour_fixes") else ()
    if fixes:
        out["fixes"] = sorted(fixes)
    return out


@dataclass(frozen=True)
class SparseConfig:
    """Fields shared by every sparse method."""

    density: float = 0.2  # fraction of prunable weights kept, in (0, 1]
    select: str = "last"  # checkpoint: "last" epoch, or "val_rule" (within select_eps of the best val acc, lowest val MCD)
    select_eps: float = 0.01  # val_rule: epochs within this val accuracy of the best qualify

    #: Fields left out of the run's identity while they hold these defaults (added after results existed).
    HASH_NEUTRAL: ClassVar[dict] = {"select": "last", "select_eps": 0.01}
    #: Why ``select="val_rule"`` is refused, or None (every built-in method offers it; a new method whose stored
    #: mask could not belong to an earlier epoch's metrics sets it, or keeps its candidate masks: CandidateMasks).
    NO_VAL_RULE: ClassVar[Optional[str]] = None
    #: Relative tolerance of :func:`check_mask_density` on the kept weights (None: only "keeps at least one";
    #: structured pruning, whose masks land near the density).
    DENSITY_TOLERANCE: ClassVar[Optional[float]] = DENSITY_TOLERANCE
    #: True for a method whose mask changes during training but whose training does not depend on ``select``
    #: (SafeCompress, FairScratch): its val-rule runs store their final mask too (``MethodOutput.final_mask``),
    #: and its ``select="last"`` runs are derived from them (:func:`val_rule_twin`) -- one training for both.
    VAL_RULE_FINAL_MASK: ClassVar[bool] = False

    def __post_init__(self) -> None:
        # density=1 and density=1.0 are the same run: store it as a float so both hash alike.
        if isinstance(self.density, int) and not isinstance(self.density, bool):
            object.__setattr__(self, "density", float(self.density))

    def last_epoch_twin(self) -> "Optional[SparseConfig]":
        """With ``select="val_rule"``: the ``select="last"`` config whose stored run has the same training, so that
        the val-rule run reuses its mask and history and only applies the selection (no retraining); else None.

        A method whose *training* depends on ``select`` (or that applies a selection of its own whatever ``select``
        says) must override this to return None, or its val-rule runs would be derived from a twin that trained
        differently."""
        return dataclasses.replace(self, select="last") if self.select == "val_rule" else None

    def validate(self) -> "SparseConfig":
        """Check every field against its annotation (no coercion; subclasses' fields too), then the density."""
        check_fields(self)
        check_density(self.density)
        if self.select not in SELECT_RULES:
            raise ValueError(f"unknown select {self.select!r}; valid choices: {', '.join(SELECT_RULES)}")
        if not 0 <= self.select_eps < math.inf:
            raise ValueError(f"select_eps must be a finite number >= 0, got {self.select_eps}")
        if self.select == "val_rule" and self.NO_VAL_RULE:
            raise ParameterError(self.NO_VAL_RULE)
        return self


def budget_recipe(train: TrainConfig, budget: float) -> TrainConfig:
    """The training recipe stretched to ``budget`` × its length (``budget=2``: a method trained from θ0 gets the
    compute of one that starts from a trained dense network — dense training plus retraining). Epochs are
    ``round(budget × epochs)`` (at least 1); multistep milestones scale with them; the schedule's shape is kept.
    A warm-up keeps its length in epochs (``warmup_epochs``); :meth:`BudgetConfig.validate_for` refuses a budget
    whose recipe is too short for it, before anything trains."""
    if budget == 1.0:
        return train
    epochs = max(1, int(round(budget * train.epochs)))
    milestones = tuple(sorted({m2 for m in train.milestones if 0 < (m2 := int(round(budget * m))) < epochs}))
    return dataclasses.replace(train, epochs=epochs, milestones=milestones)


@dataclass(frozen=True)
class BudgetConfig(SparseConfig):
    """A sparse method that trains from θ0 only (no trained dense network: SafeCompress, FairScratch), with the
    length of its schedule as an option: ``budget`` × the recipe (:func:`budget_recipe`)."""

    budget: float = 1.0  # training length in units of the dense recipe (2: compute-matched with MP/LTH/Ballot)

    HASH_NEUTRAL: ClassVar[dict] = {**SparseConfig.HASH_NEUTRAL, "budget": 1.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.budget) is int:  # budget=2 and budget=2.0 are one run
            object.__setattr__(self, "budget", float(self.budget))

    def validate(self) -> "BudgetConfig":
        from ..checks import check_number

        super().validate()
        check_number("budget", self.budget, 0, low_open=True)  # finite and > 0
        return self

    def recipe(self, exp: Experiment) -> TrainConfig:
        """The schedule this configuration trains on ``exp``: ``budget`` × its recipe."""
        return budget_recipe(exp.train, self.budget)

    def validate_for(self, exp: Experiment) -> None:
        recipe = self.recipe(exp)
        if recipe.warmup_epochs >= recipe.epochs:
            raise ParameterError(
                f"budget={self.budget!r} trains {recipe.epochs} epoch(s) (budget × train.epochs = {exp.train.epochs}), "
                f"which does not fit the recipe's warm-up (train.warmup_epochs = {exp.train.warmup_epochs}): use a "
                f"budget of at least {(exp.train.warmup_epochs + 1) / exp.train.epochs:.3g} or a shorter warm-up")


def check_rewind(exp: Experiment, epoch: int, what: str = "rewind_epoch") -> None:
    if not 0 <= epoch < exp.train.epochs:
        raise ValueError(f"{what} must be in [0, {exp.train.epochs}) (train.epochs = {exp.train.epochs}), got {epoch}")


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

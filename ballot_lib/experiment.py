"""Experiments: one dataset, one model, one training recipe, run under several seeds by several methods.

An :class:`Experiment` owns what every method shares (SPEC §6): the data, the model architecture, the training
loop and, per seed, the dense run. The dense run of a seed stores θ0, the early θk (rewind points) and θT once;
every method under that seed starts from that θ0 and sees the same data order, so comparisons are paired.

Example:
    >>> exp = Experiment(DataConfig("digits_lt"), ModelConfig("mlp"), TrainConfig(epochs=5), results_dir="results")
    >>> dense = exp.dense(seed=0)            # trains once, then loads from the results store
    >>> dense.metrics["test"]["mcd"]         # doctest: +SKIP
"""
from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from .data import DataBundle, DataConfig, get_dataset
from .models import ModelConfig, build_model, check_takes_input
from .pruning import load_mask, mask_format, prunable_weights
from .paths import results_root
from .results import ResultsFormatError, ResultsStore, Run, check_complete, check_config_file, repair_advice
from .checks import (ParameterError, check_arguments, check_device_name, check_env_number, check_fields, check_int,
                     check_seed)
from .compiled import resolve_step_mode
from .progress import style as progress_style
from .training import TrainConfig, TrainResult, checkpoint_interval, resolve_device, state_dict_cpu, train

#: Epochs after which the dense run keeps its weights as rewind points θk (other k are replayed on demand).
DENSE_KEEP_EPOCHS = (1, 2, 3, 5)
CONFIG_VERSION = 1


#: Host memory the loaded datasets may hold together (``$BALLOT_DATA_CACHE_GB``, default 4): the least recently
#: used are dropped beyond it (the last one used is always kept) and loaded again when asked for.
DATA_CACHE_ENV = "BALLOT_DATA_CACHE_GB"


def _bundle_bytes(b: DataBundle) -> int:
    return sum(t.nbytes for s in (b.train, b.val, b.test) for t in (s.x, s.y, s.g) if t is not None)


class _DatasetCache:
    """Loaded datasets by data configuration, bounded by bytes rather than by count (8 CelebA bundles at 128 px
    were ~80 GB of host memory under the old count bound). It bounds what the cache alone keeps alive: an
    :class:`Experiment` holds its own bundle once loaded."""

    def __init__(self) -> None:
        self._items: "collections.OrderedDict[DataConfig, DataBundle]" = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def limit_bytes() -> float:
        return check_env_number(DATA_CACHE_ENV, os.environ.get(DATA_CACHE_ENV, "4"), "GB") * 1e9

    def __call__(self, cfg: DataConfig) -> DataBundle:
        with self._lock:
            if cfg in self._items:
                self._items.move_to_end(cfg)
                return self._items[cfg]
        limit = self.limit_bytes()
        bundle = get_dataset(cfg)
        with self._lock:
            self._items[cfg] = bundle
            self._items.move_to_end(cfg)
            while len(self._items) > 1 and sum(_bundle_bytes(b) for b in self._items.values()) > limit:
                self._items.popitem(last=False)
        return bundle

    def cache_clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


_cached_dataset = _DatasetCache()


@dataclass
class RunResult:
    """What a method returns: the stored run, its final metrics per split, the mask and the history."""

    run: Run
    metrics: dict[str, dict[str, float]]
    summary: dict[str, Any]
    mask: Optional[dict[str, torch.Tensor]] = None

    @property
    def id(self) -> str:
        return self.run.id

    def history(self) -> list[dict]:
        f = self.run.file("history.json")
        return self.run.read_json("history.json") if f.exists() else []


@dataclass
class Experiment:
    """Shared set-up of a comparison. ``device``, ``results_dir``, ``progress`` and ``amp`` do not affect run
    identity (``amp``: bf16 autocast of every training; None = on for CUDA, as :func:`~ballot_lib.training.train`)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    results_dir: Optional[str] = None
    progress: bool = True
    amp: Optional[bool] = None

    def __post_init__(self) -> None:
        # Validate everything up front, before any data is loaded or any training starts.
        check_fields(self, paths=("results_dir",))
        check_device_name(self.device)
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self.device_ = resolve_device(self.device)
        checkpoint_interval(self.device_)  # a bad $BALLOT_CHECKPOINT_EVERY_S is an error before anything runs
        mask_format()  # so is a bad $BALLOT_MASK_FORMAT
        resolve_step_mode(None, self.device_)  # ... a bad $BALLOT_STEP_MODE (or 'graph' without CUDA)
        progress_style()  # ... and a bad $BALLOT_PROGRESS
        root = results_root(self.results_dir)
        if root.exists() and not root.is_dir():
            raise ParameterError(f"results_dir {str(root)!r} exists and is not a folder: give the results store's "
                                 "folder (it is created if missing)")
        self.store = ResultsStore(self.results_dir)
        self.dense_extras: dict[str, DenseExtra] = {}

    def add_dense_extra(self, key: str, extra: "DenseExtra") -> None:
        """Ask every dense run of this experiment to also compute ``extra`` (e.g. Ballot's vote gradients).

        Extras registered before a seed's dense run is trained ride along with that training (they cost only
        their own computation); for a dense run already complete, the training is replayed from θ0 with the
        same seed — identical weights on CPU — to compute them.
        """
        self.dense_extras.setdefault(key, extra)

    # -- shared pieces ---------------------------------------------------------------------------------------
    @property
    def bundle(self) -> DataBundle:
        """The loaded dataset: loaded once per experiment, shared through a byte-bounded cache with experiments of
        the same data config (an experiment keeps its own even after the cache drops it, so it never reloads)."""
        b = getattr(self, "_bundle", None)
        if b is None:
            b = self._bundle = _cached_dataset(self.data)
        return b

    def check_model_fits(self) -> None:
        """The model takes the dataset's inputs and gives one output per class, checked once per experiment before
        any run folder is made: an image model on feature vectors is refused, and a fresh model (built with the
        global RNG left as it was, so no seed's θ0 changes) is run in eval mode on two training inputs, whose
        output must be ``[2, num_classes]`` (a registered model with the wrong head trained, or failed mid-run)."""
        if getattr(self, "_model_fits", False):
            return
        b = self.bundle
        check_takes_input(self.model.name, self.data.name, len(b.input_shape) == 3)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            net = self.new_model().eval()
            x = b.train.x[:2]
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            out = net(x)
        want = (len(x), b.num_classes)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model {self.model.name!r} gives outputs of shape {got} on {self.data.name!r}, which "
                             f"has {b.num_classes} classes: a model must give one logit per class, {list(want)}")
        self._model_fits = True

    def new_model(self) -> nn.Module:
        """A model of this experiment's architecture (initialisation not yet fixed: load θ0 into it)."""
        b = self.bundle
        return build_model(self.model, b.input_shape, b.num_classes)

    def run_config(self, method: str, method_cfg: Mapping[str, Any], seed: int) -> dict:
        """The full configuration of a run: what its hash (and so its folder name) is computed from."""
        return {
            "version": CONFIG_VERSION,
            "method": method,
            "method_cfg": dict(method_cfg),
            "data": self.data.identity(),
            "model": self.model.identity(),
            "train": self.train.identity(),
            "seed": check_seed(seed),
        }

    def train_net(self, net: nn.Module, run: Run, seed: int, **kwargs) -> TrainResult:
        """Train with this experiment's data, device and progress settings (see :func:`ballot_lib.training.train`).

        A ``mask`` must cover exactly ``net``'s prunable weights (:func:`ballot_lib.models.prunable_names`), checked
        before anything trains: a stored run's mask is checked against them anyway, and a mask over more tensors
        (a state dict's biases) trained the whole schedule only to be refused afterwards."""
        if kwargs.get("mask") is not None:
            from .pruning import check_mask, check_mask_matches

            check_mask(kwargs["mask"], "the mask given to train_net")
            try:
                check_mask_matches(net, kwargs["mask"])
            except ValueError as e:
                raise ValueError(f"train_net: {e} (a mask covers the prunable weights only: make it from a model, "
                                 f"e.g. make_mask(strategy, exp.model_from(weights), density), not from a state "
                                 f"dict, whose every tensor it would mask)") from None
        kwargs.setdefault("checkpoint", run.file(kwargs.pop("checkpoint_name", "checkpoint.pt")))
        kwargs.setdefault("amp", self.amp)
        return train(net, self.bundle, kwargs.pop("cfg", self.train), seed=seed, device=self.device_,
                     progress=self.progress, **kwargs)

    # -- the dense run ---------------------------------------------------------------------------------------
    def dense(self, seed: int) -> RunResult:
        """Train (or load) the dense network of ``seed``; stores θ0, early θk and θT.

        The run folder is locked while it is written (a second process waits, then loads it). Registered extras
        (Ballot's vote tallies) ride along; their running state is saved in the training checkpoint, so a run
        killed and resumed computes them exactly as an uninterrupted one.
        """
        run = self.store.run(self.run_config("dense", {}, seed))
        if run.complete and all(e.done(run) for e in self.dense_extras.values()):
            return load_run(run)
        # load the data first (a missing dataset must leave no run folder behind); a model that cannot take the
        # dataset's inputs, or gives the wrong number of outputs, is refused before the run folder is made
        self.check_model_fits()
        with run.lock():
            run.remove_partial_writes()  # a replay killed while writing leaves temporary files
            extras = [e for e in self.dense_extras.values() if not e.done(run)]
            if run.complete and extras:
                self._replay_dense(run, seed, extras)
            if not run.complete:
                self._train_dense(run, seed, extras)
        return load_run(run)

    def _train_dense(self, run: Run, seed: int, extras: list["DenseExtra"]) -> None:
        run.start()
        net = self._initial_net(seed)
        if not run.file("theta0.pt").exists():
            run.save_tensor("theta0.pt", state_dict_cpu(net))
        net.load_state_dict(self.load_weights(run, "theta0.pt"))

        def keep(net_: nn.Module, epoch: int, row: dict) -> None:
            if epoch in DENSE_KEEP_EPOCHS and epoch < self.train.epochs:
                run.save_tensor(f"theta_e{epoch}.pt", state_dict_cpu(net_))

        hooks = [keep] + [e.start(self, run, seed) for e in extras]
        state = {e.file: e for e in extras}
        res = self.train_net(net, run, seed, hooks=hooks, desc=f"dense s{seed}", state=state)
        # An extra registered only after the run was interrupted missed the first epochs: it is not stored
        # (finish returns False) and is computed by an exact replay once the dense run is complete.
        missed = [e for e in extras if not e.finish(run)]
        run.save_tensor("thetaT.pt", state_dict_cpu(net))
        finish_run(run, res, density=1.0, train_epochs=self.train.epochs, compute_epochs=self.train.epochs)
        if missed:
            self._replay_dense(run, seed, missed)

    def _replay_dense(self, run: Run, seed: int, extras: list["DenseExtra"]) -> None:
        net = self.new_model()
        net.load_state_dict(self.load_weights(run, "theta0.pt"))
        self.train_net(net, run, seed, hooks=[e.start(self, run, seed) for e in extras], checkpoint=None,
                       eval_splits=("val",), desc=f"dense replay s{seed}")
        for e in extras:
            if not e.finish(run):
                raise RuntimeError(f"dense extra {e.file} incomplete after a full replay of {run.path}")

    def initial_weights(self, seed: int) -> dict[str, torch.Tensor]:
        """θ0 of ``seed`` without training anything: the dense run's stored θ0 when it has one, else the same
        initialisation made the same way (``torch.manual_seed(seed)``, then the model), leaving the global RNG as
        it was. Methods that need only θ0 (SafeCompress, FairScratch) use this, so a job of those methods alone
        trains no dense run (their declared compute does not include one)."""
        run = self.store.run(self.run_config("dense", {}, seed))
        if run.file("theta0.pt").exists():
            return self.load_weights(run, "theta0.pt")
        with torch.random.fork_rng(devices=[]):
            net = self._initial_net(seed)
        return state_dict_cpu(net)

    def _initial_net(self, seed: int) -> nn.Module:
        """The model initialised for ``seed`` (θ0): the global torch RNG seeded with ``seed``, then the model built."""
        torch.manual_seed(seed)
        return self.new_model()

    def dense_weights(self, seed: int, epoch: int) -> dict[str, torch.Tensor]:
        """Dense weights of ``seed`` after ``epoch`` epochs (0 = θ0, ``train.epochs`` = θT).

        Rewind points not kept by the dense run are replayed from θ0 with the same seed (same data order), and
        then kept, so asking for them again is free.
        """
        T = self.train.epochs
        check_int("epoch", epoch, 0, T, hint=f" (0 = θ0, train.epochs = {T} = θT)")
        run = self.dense(seed).run
        name = "theta0.pt" if epoch == 0 else "thetaT.pt" if epoch == T else f"theta_e{epoch}.pt"
        if not run.file(name).exists():
            # Written under the dense run's lock, as every other write to its folder: a second process replaying
            # the same point waits and then loads it, and no process's clean-up deletes another's partial write.
            with run.lock():
                run.remove_partial_writes()  # e.g. the temporary file of a replay killed while saving
                if not run.file(name).exists():
                    net = self.new_model()
                    net.load_state_dict(self.load_weights(run, "theta0.pt"))
                    self.train_net(net, run, seed, end_epoch=epoch, eval_splits=(), checkpoint=None,
                                   desc=f"replay θ{epoch}")
                    run.save_tensor(name, state_dict_cpu(net))
        return self.load_weights(run, name)

    def param_shapes(self, prunable: bool = False) -> dict[str, tuple[int, ...]]:
        """Name -> shape of this experiment's model state (``prunable``: of the prunable weights only)."""
        if getattr(self, "_shapes", None) is None:
            net = self.new_model()
            self._shapes = ({k: tuple(v.shape) for k, v in net.state_dict().items()},
                            {n: tuple(p.shape) for n, p in prunable_weights(net).items()})
        return dict(self._shapes[1 if prunable else 0])

    def check_weights(self, state: Any, source: Optional[Path] = None) -> None:
        """Check a state dict against this experiment's model: same names, same shapes.

        Raises :class:`~ballot_lib.results.ResultsError` naming ``source`` (and the fix) when it came from a file,
        else ``ValueError``.
        """
        expected = self.param_shapes()
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            problem = f"it holds a {type(state).__name__}, not a state dict of tensors"
        else:
            missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            bad = [f"{k} {tuple(state[k].shape)} (model: {expected[k]})" for k in expected
                   if k in state and tuple(state[k].shape) != expected[k]]
            problem = "; ".join(p for p in (missing and f"missing {missing[:5]}", extra and f"unexpected {extra[:5]}",
                                            bad and f"wrong shapes {bad[:5]}") if p)
        if problem:
            what = f"model {self.model.name!r} on {self.data.name!r}"
            if source is None:
                raise ValueError(f"weights do not fit {what}: {problem}")
            raise ResultsFormatError(f"weights file {source} does not fit {what}: {problem}; {repair_advice(source)}")

    def load_weights(self, run: Run, name: str) -> dict[str, torch.Tensor]:
        """Load stored weights ``name`` of ``run``, checked against this experiment's model (names, shapes)."""
        state = run.load_tensor(name)
        self.check_weights(state, run.file(name))
        return state

    def model_from(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A model of this experiment holding ``state`` (checked: a mismatch names the tensors, not a raw error)."""
        self.check_weights(state)
        net = self.new_model()
        net.load_state_dict(state)
        return net


class DenseExtra:
    """Something computed alongside a dense training run (interface; see :meth:`Experiment.add_dense_extra`).

    It is also a :class:`~ballot_lib.training.Stateful`: its running state travels in the dense run's training
    checkpoint (``state_dict`` / ``load_state_dict``), keyed by ``file``.
    """

    file: str = ""

    def done(self, run: Run) -> bool:
        """True when the dense run folder already holds this extra's output."""
        raise NotImplementedError

    def start(self, exp: "Experiment", run: Run, seed: int):
        """Return an epoch hook ``hook(net, epoch, row)`` for the dense training of ``seed``."""
        raise NotImplementedError

    def finish(self, run: Run) -> bool:
        """Store the output in the dense run folder; False if it saw only part of the training (nothing stored)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Optional[dict]) -> None:
        pass


def finish_run(run: Run, res: TrainResult, **summary: Any) -> None:
    """Store history and final metrics, then mark the run complete.

    The summary records where the training ran (``environment``: :func:`run_environment`) unless it carries one
    already (a run derived from its twin keeps the twin's: that is where its training ran)."""
    run.write_json("history.json", res.history)
    run.write_json("metrics.json", res.final)
    summary.setdefault("seconds", res.seconds)
    summary.setdefault("environment", run_environment(res.net))
    run.finish(summary)


_CODE_VERSION: Optional[str] = None


def code_version() -> str:
    """``ballot_lib <version>``, with the git commit of the checkout it was imported from when there is one
    (``+dirty`` with uncommitted changes); computed once per process."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        import subprocess

        from . import __version__

        version = f"ballot_lib {__version__}"
        root = Path(__file__).resolve().parents[1]
        try:
            if (root / ".git").exists():
                commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip()
                dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                       capture_output=True, text=True, timeout=10).stdout.strip()
                if commit:
                    version += f" {commit}" + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = version
    return _CODE_VERSION


def run_environment(net: Optional[nn.Module] = None) -> dict:
    """Where a training ran, as a run's summary records it (``environment``): the device (``cpu`` or the GPU's
    name), torch's version, the CPU threads torch used, and :func:`code_version`. Results are reproducible bit for
    bit only within one environment: another thread count or device changes the order of floating-point
    reductions, and with it the last digits of every weight (README, "Results store")."""
    device = "cpu"
    param = next(iter(net.parameters()), None) if net is not None else None
    if param is not None and param.device.type == "cuda":
        device = torch.cuda.get_device_name(param.device)
    elif param is not None:
        device = param.device.type
    return {"device": device, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "code": code_version()}


def load_run(run: Run, exp: Optional["Experiment"] = None) -> RunResult:
    """Load a complete run's metrics, summary and (if present) mask, checking what is read.

    ``config.json`` must hash to the folder's name, the JSON files must have their schema and, given ``exp``, the
    mask must cover exactly the model's prunable weights with their shapes; else :class:`ResultsError` names the
    file and the fix.
    """
    config = check_config_file(run.path)
    metrics = check_complete(run.path, config)  # every file a complete run must hold (a sparse run's mask too)
    like = None if exp is None else exp.param_shapes(prunable=True)
    mask = load_mask(run.file("mask.pt"), like) if run.file("mask.pt").exists() else None
    return RunResult(run, metrics, run.read_json("summary.json"), mask)


def experiment_from_params(
    dataset: str = "digits_lt",
    model: str = "mlp",
    epochs: int = 30,
    batch_size: int = 32,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    milestones: tuple = (),
    warmup_epochs: int = 0,
    long_tail: str = "none",
    lt_ratio: float = 10.0,
    max_train: int = 0,
    skew: float = 0.95,
    target: str = "",
    sensitive: str = "",
    image_size: int = 0,
    data_root: str = "",
    results_dir: str = "",
    device: str = "auto",
    progress: bool = True,
    check_device: bool = True,
    **unknown: Any,
) -> Experiment:
    """Build an :class:`Experiment` from flat notebook parameters ("" / 0 mean "default"; see the notebooks).

    Everything is validated (types without coercion, names, ranges, cross-field rules) before any data is loaded
    or anything is written; errors are :class:`~ballot_lib.checks.ParameterError` naming the parameter.
    ``check_device=False`` skips checking that the device exists (its name is still checked), so a GPU parameter
    file can be validated on a CPU machine.
    """
    if unknown:  # a misspelt name is an error naming the valid ones (Python's TypeError listed none)
        import difflib

        valid = experiment_params()
        hints = "".join(f"; did you mean {close[0]!r} for {k!r}?" for k in sorted(unknown)
                        if (close := difflib.get_close_matches(k, valid, n=1)))
        raise ParameterError(f"experiment_from_params() has no parameter(s) {sorted(unknown)}{hints}; valid: "
                             f"{', '.join(map(repr, valid))}")
    check_arguments(experiment_from_params, {k: v for k, v in locals().items() if k != "unknown"},
                    paths=("data_root", "results_dir"))
    if not check_device:
        check_device_name(device)
    data = DataConfig(name=dataset, root=data_root or None, long_tail=long_tail, lt_ratio=lt_ratio,
                      max_train=max_train or None, skew=skew, target=target or None,
                      sensitive=sensitive or None, image_size=image_size or None)
    train = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, schedule=schedule, milestones=tuple(milestones),
                        warmup_epochs=warmup_epochs)
    return Experiment(data=data, model=ModelConfig(name=model), train=train,
                      device=device if check_device else "cpu", results_dir=results_dir or None,
                      progress=progress)


def experiment_params() -> tuple[str, ...]:
    """The names of the flat parameters that describe an experiment (those :func:`experiment_from_params` takes)."""
    import inspect

    return tuple(name for name, p in inspect.signature(experiment_from_params).parameters.items()
                 if name != "check_device" and p.kind is not p.VAR_KEYWORD)


def experiment_from(params: Mapping[str, Any], check_device: bool = True, **overrides: Any) -> Experiment:
    """The :class:`Experiment` a notebook's (or a sweep job's) parameters describe: one call instead of retyping them.

    Picks the experiment parameters (:func:`experiment_params`) out of ``params`` and ignores everything else
    (seeds, densities, notebook options), so a notebook passes its namespace and a sweep runner its merged job
    parameters. ``overrides`` replace single values. Validation is :func:`experiment_from_params`'s; a name of a
    plain mapping that is close to an experiment parameter absent from it (``"epoch"``) is an error, not ignored.

    Example:
        >>> exp = experiment_from(globals())                      # doctest: +SKIP  (in a notebook)
        >>> exp = experiment_from({"dataset": "adult", "epochs": 5, "seeds": [0, 1]}, results_dir="r")
        >>> exp.train.epochs
        5
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of parameter name -> value, got {type(params).__name__}")
    names = set(experiment_params())
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"overrides {sorted(unknown)} are not experiment parameters; valid: {sorted(names)}")
    if "__name__" not in params:  # a dict, not a notebook's namespace (whose names the notebook checks itself)
        import difflib

        for k in sorted(set(params) - names):
            near = difflib.get_close_matches(str(k), names, n=1, cutoff=0.8)
            # a misspelt experiment parameter ("epoch") was ignored and the default trained; a notebook's list of
            # a parameter ("datasets", "models") is its own
            if near and near[0] not in params and near[0] not in overrides and k != near[0] + "s":
                raise ValueError(f"unknown parameter {k!r}: did you mean {near[0]!r}? (experiment_from ignores "
                                 f"names that are not experiment parameters; valid: {', '.join(sorted(names))})")
    merged = {k: v for k, v in params.items() if k in names}
    merged.update(overrides)
    return experiment_from_params(**merged, check_device=check_device)

"""The one training loop every method uses (SPEC §3).

* Optimisers: SGD (momentum, weight decay, optional Nesterov) or Adam(W); schedules: constant, multistep,
  cosine, each with optional linear warm-up. The learning rate is a pure function of the step, so a run that
  starts at epoch k (rewinding) or resumes from a checkpoint sits at the same point of the schedule.
* Masks are enforced at every step: gradients of pruned weights are zeroed before the optimiser step (so
  momentum and Adam moments of pruned weights stay 0) and the weights are multiplied by the mask after it
  (so weight decay cannot revive them). Pruned weights stay exactly 0.
* Extension points: epoch hooks ``hook(net, epoch, row)`` after every epoch's evaluation, and step hooks
  ``hook(step, optimizer, mask)`` after every optimiser step that may change the mask in place (dynamic sparse
  training prunes and regrows there). The mask is part of the checkpoint and :class:`TrainResult` returns the
  final one; objects passed as ``state`` are checkpointed with it.
* Determinism: epoch e of seed s visits the data in an order fixed by (s, e) alone, and draws its augmentation
  from the same seed. Every method under one seed therefore sees the same data order (paired comparisons), and
  an interrupted run resumes to the same weights as an uninterrupted one.
* GPU path: whole splits live on the device as tensors, augmentation (random crop with padding, flip) is done on
  whole batches there, bf16 autocast and channels_last are used for conv nets on CUDA. The same code runs on CPU
  (fp32, no channels_last). Nothing in a step reads device data on the host: each epoch's train loss/accuracy and
  every evaluated split's predictions leave the device in one transfer, metrics are computed from them on the host.
* Step modes (``step_mode``, :mod:`ballot_lib.compiled`): ``eager`` (default; the CPU path), ``compiled``
  (``torch.compile``) or ``graph`` (the whole step as one CUDA graph); not part of a run's identity.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import metrics as M
from .data import DataBundle, Split
from .registry import check_choice
from .results import ResultsError, atomic_torch_save, safe_torch_load
from .checks import ParameterError, check_applies, check_env_number, check_fields, check_int, check_number

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "multistep", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. The authors' full recipe: ``TrainConfig.authors()``."""

    epochs: int = 10  # training epochs of the full schedule
    batch_size: int = 64  # mini-batch size
    optimizer: str = "sgd"  # "sgd", "adam" or "adamw"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 (SGD/Adam) or decoupled (AdamW) weight decay
    nesterov: bool = False  # Nesterov momentum (SGD)
    schedule: str = "cosine"  # "constant", "multistep" or "cosine"
    milestones: tuple[int, ...] = ()  # multistep: epochs at which the LR is multiplied by gamma
    gamma: float = 0.1  # multistep decay factor
    warmup_epochs: int = 0  # linear warm-up from lr/10 until this epoch (of the schedule's epoch axis)
    warmup_start: int = 0  # epoch at which the warm-up starts (a retraining from θk warms up from epoch k)
    eval_batch_size: int = 1024  # batch size for evaluation (does not change results)

    @staticmethod
    def authors(epochs: int = 250) -> "TrainConfig":
        """The Ballot authors' recipe: SGD lr 0.1, momentum 0.9, wd 2e-4, MultiStepLR [100,150,200], batch 32."""
        return TrainConfig(epochs=epochs, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4,
                           schedule="multistep", milestones=(100, 150, 200), gamma=0.1)

    def identity(self) -> dict:
        d = asdict(self)
        d.pop("eval_batch_size")
        if d["warmup_start"] == 0:  # added after results existed: out of the identity at its default
            d.pop("warmup_start")
        d["milestones"] = list(self.milestones)
        return d

    def validate(self, options_apply: bool = True) -> "TrainConfig":
        """Check every field's type (no coercion), range and the cross-field rules; raise ``ParameterError``.

        ``options_apply``: also refuse options the recipe ignores (:meth:`check_options_apply`). :func:`train`
        turns it off: a method's derived recipe (MP's constant-rate fine-tune, a budget that drops every milestone)
        may carry options of the experiment's recipe that it no longer uses, and that recipe was checked in full.
        """
        check_fields(self)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_number("lr", self.lr, 0, low_open=True)
        check_number("momentum", self.momentum, 0, 1, high_open=True)
        check_number("weight_decay", self.weight_decay, 0)
        check_number("gamma", self.gamma, 0, low_open=True)
        if self.warmup_epochs != 0:
            check_int("warmup_epochs", self.warmup_epochs, 0, self.epochs, high_open=True,
                      hint=f" (epochs = {self.epochs})")
        if self.warmup_start != 0:
            check_int("warmup_start", self.warmup_start, 0, self.warmup_epochs, high_open=True,
                      hint=f" (the warm-up ends at epoch warmup_epochs = {self.warmup_epochs})")
        # Milestones are epochs inside the schedule at which the learning rate decays, in increasing order.
        for i, m in enumerate(self.milestones):
            check_int(f"milestones[{i}]", m, 1, self.epochs, high_open=True,
                      hint=f" (an epoch inside the schedule of {self.epochs} epochs)")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ParameterError(f"milestones must be strictly increasing, got {list(self.milestones)}")
        if self.milestones and self.schedule != "multistep":  # ignored by other schedules, yet part of the hash
            raise ParameterError(f"milestones {list(self.milestones)} only apply to schedule 'multistep', "
                                 f"not {self.schedule!r}; leave them empty or set schedule='multistep'")
        if options_apply:
            self.check_options_apply()
        return self

    def check_options_apply(self) -> None:
        """Refuse a non-default option that this recipe ignores, which would still change the run id (the same
        training stored again under another id): ``momentum`` and ``nesterov`` outside SGD (Adam and AdamW take
        neither), ``nesterov`` without momentum (:func:`make_optimizer` drops it), ``gamma`` outside a multistep
        schedule with milestones. Defaults always pass."""
        default = TrainConfig()
        sgd = self.optimizer == "sgd"
        check_applies("momentum", self.momentum, default.momentum, sgd, "optimizer 'sgd'",
                      f"optimizer {self.optimizer!r}", "use optimizer='sgd'")
        check_applies("nesterov", self.nesterov, default.nesterov, sgd and self.momentum > 0,
                      "optimizer 'sgd' with momentum > 0",
                      f"optimizer {self.optimizer!r}" if not sgd else f"momentum={self.momentum!r}")
        multistep = self.schedule == "multistep"
        check_applies("gamma", self.gamma, default.gamma, multistep and bool(self.milestones),
                      "schedule 'multistep' with milestones",
                      f"schedule {self.schedule!r}" + (" without milestones" if multistep else ""),
                      "give its milestones" if multistep else "set schedule='multistep' and its milestones")


def lr_at(cfg: TrainConfig, epoch_float: float) -> float:
    """Learning rate at a (fractional) epoch of the schedule."""
    e = epoch_float
    if cfg.warmup_epochs > 0 and e < cfg.warmup_epochs:
        start = cfg.warmup_start
        return cfg.lr * (0.1 + 0.9 * max(e - start, 0.0) / (cfg.warmup_epochs - start))
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(e >= m for m in cfg.milestones)
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-12)
    t = min(max((e - cfg.warmup_epochs) / span, 0.0), 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t))


def sync_device(dev: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA): what a timer must do before it reads the clock."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; an unavailable device raises ``ValueError``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .checks import check_device_name

    dev = torch.device(check_device_name(str(device)))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): use 'cuda' or 'cuda:0'..'cuda:{torch.cuda.device_count() - 1}'")
    return dev


#: Least seconds between two training checkpoints, by device type (``$BALLOT_CHECKPOINT_EVERY_S`` overrides; 0 =
#: after every epoch). On CUDA an epoch of a small model takes seconds while a checkpoint (weights, optimiser
#: state, mask, Ballot's running tallies) is hundreds of MB written with fsync: writing one per epoch would be a
#: large share of the run's time (issue #13's "non-training time <= 10 %"). A killed run resumes from its last
#: checkpoint to the same result either way; it only redoes more epochs.
CHECKPOINT_EVERY_S: dict[str, float] = {"cpu": 0.0, "cuda": 60.0}
CHECKPOINT_ENV = "BALLOT_CHECKPOINT_EVERY_S"


def checkpoint_interval(dev: torch.device, every: Optional[float] = None) -> float:
    """Seconds between training checkpoints on ``dev``: ``every``, else ``$BALLOT_CHECKPOINT_EVERY_S``, else
    :data:`CHECKPOINT_EVERY_S` of the device type (0: after every epoch; a finite number of seconds — a value
    longer than the run writes none)."""
    if every is None:
        text = os.environ.get(CHECKPOINT_ENV, "")
        if text.strip():
            return check_env_number(CHECKPOINT_ENV, text, "seconds")
        return CHECKPOINT_EVERY_S.get(dev.type, 0.0)
    return check_number("checkpoint_every", every, 0)


def checkpoint_identity(cfg: TrainConfig, sched: TrainConfig, seed: int, start_epoch: int,
                        mask: Optional[Mapping[str, torch.Tensor]], bundle: DataBundle) -> str:
    """What a training checkpoint must have been written by to be resumed: the recipe, the schedule, the seed, the
    start epoch, the mask's entries and the data's sizes, as a hash. The end epoch (a run may stop early and
    resume to the end), the step mode, device and precision (a run may resume under another) are left out."""
    import hashlib

    from .results import config_hash

    digest = hashlib.sha1()
    for name in sorted(mask or {}):
        digest.update(name.encode())
        digest.update(mask[name].detach().to("cpu", torch.bool).contiguous().numpy().tobytes())  # type: ignore[index]
    sizes = {s: len(getattr(bundle, s)) for s in ("train", "val", "test") if getattr(bundle, s, None) is not None}
    return config_hash({"train": cfg.identity(), "schedule": sched.identity(), "seed": seed, "start": start_epoch,
                        "mask": digest.hexdigest() if mask else None, "data": sizes})


def training_seed(seed: int, start_epoch: int = 0) -> int:
    """The seed of a training call's own random draws (dropout): from the run's seed and where the call starts."""
    return (seed * 1_000_003 + start_epoch * 7919 + 31) % (2**63)


@contextlib.contextmanager
def seeded_rng(seed: int, dev: torch.device):
    """Inside: python, numpy and torch (CPU, and ``dev`` on CUDA) seeded with ``seed``; on exit, every one of them
    back in the state it had before (torch's by ``torch.random.fork_rng``), so a training call neither depends on
    nor changes the caller's random state."""
    import random

    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            seed_everything(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """CPU generator fixed by (seed, epoch, stream): the data order and augmentation of one epoch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63))


class DeviceData:
    """A split resident on the training device, with batched normalisation and augmentation."""

    def __init__(self, split: Split, bundle: DataBundle, device: torch.device, channels_last: bool = False):
        self.device = device
        self.n = len(split)
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.g = None if split.g is None else split.g.to(device)
        # Host copies of labels and groups: metrics are computed on the host from predictions copied once.
        self.y_host, self.g_host = split.y, split.g
        self.mean: Optional[torch.Tensor]
        self.std: Optional[torch.Tensor]
        self.image = split.x.dim() == 4
        self.uint8 = split.x.dtype == torch.uint8
        self.channels_last = channels_last and self.image
        if bundle.mean is not None:
            c = split.x.shape[1]
            self.mean = torch.tensor(bundle.mean, device=device).view(1, c, 1, 1)
            self.std = torch.tensor(bundle.std, device=device).view(1, c, 1, 1)
        else:
            self.mean = self.std = None
        self.augment = bundle.augment and self.image
        self.pad = bundle.crop_padding
        self.flip = bundle.flip

    def prepare(self, xb: torch.Tensor, crop: Optional[torch.Tensor] = None,
                flip: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Convert a raw batch to normalised float inputs, applying crop offsets/flips if given."""
        x = xb.float()
        if self.uint8:
            x = x / 255.0
        if crop is not None:
            x = random_crop(x, crop, self.pad)
        if flip is not None:
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def epoch_plan(self, seed: int, epoch: int
                   ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(order [n], crop offsets [n, 2] or None, flips [n] or None) of a training epoch, on the device.

        Drawn on the CPU generator of (seed, epoch) (reproducible on any device) and copied to the device in one
        transfer per epoch.
        """
        gen = epoch_generator(seed, epoch)
        order = torch.randperm(self.n, generator=gen)
        if not self.augment:
            return order.to(self.device), None, None
        crops = torch.randint(0, 2 * self.pad + 1, (self.n, 2), generator=gen)
        flips = (torch.rand(self.n, generator=gen) < 0.5) if self.flip else None
        parts = [order, crops.view(-1)] + ([] if flips is None else [flips.long()])
        packed = torch.cat(parts)
        if self.device.type == "cuda":
            packed = packed.pin_memory().to(self.device, non_blocking=True)
        n = self.n
        return (packed[:n], packed[n:3 * n].view(n, 2),
                None if flips is None else packed[3 * n:].bool())

    def index_batches(self, batch_size: int, seed: int, epoch: int):
        """Yield (indices, crop offsets, flips) of the training batches of (seed, epoch), all on the device."""
        order, crops, flips = self.epoch_plan(seed, epoch)
        for start in range(0, self.n, batch_size):
            pos = slice(start, start + batch_size)
            yield order[pos], None if crops is None else crops[pos], None if flips is None else flips[pos]

    def epoch_batches(self, batch_size: int, seed: int, epoch: int, train: bool = True):
        """Yield (x, y, g) batches; in training mode shuffled and augmented as fixed by (seed, epoch)."""
        if train:
            for idx, crop, flip in self.index_batches(batch_size, seed, epoch):
                yield self.prepare(self.x[idx], crop, flip), self.y[idx], None if self.g is None else self.g[idx]
            return
        for start in range(0, self.n, batch_size):
            pos = slice(start, start + batch_size)
            yield self.prepare(self.x[pos]), self.y[pos], None if self.g is None else self.g[pos]


def random_crop(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Batched random crop: zero-pad by ``pad`` and cut an HxW window at per-sample ``offsets`` [B, 2]."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[bi, ci, rows, cols]


class MaskEnforcer:
    """Keeps pruned weights at exactly zero: zero their gradients before, and the weights after, every step."""

    def __init__(self, net: nn.Module, mask: Optional[Mapping[str, torch.Tensor]]):
        self.names: list[str] = []
        self.params: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        if mask:
            named = dict(net.named_parameters())
            unknown = set(mask) - set(named)
            if unknown:
                raise ValueError(f"mask names parameters the model does not have: {sorted(unknown)[:5]}")
            for n, m in mask.items():
                p = named[n]
                if tuple(m.shape) != tuple(p.shape):
                    raise ValueError(f"mask for {n} has shape {tuple(m.shape)}, weight has {tuple(p.shape)}")
                self.names.append(n)
                self.params.append(p)
                # Same memory format as the weight (e.g. channels_last), so the fused foreach kernels apply.
                self.masks.append(torch.empty_like(p).copy_(m.to(device=p.device, dtype=p.dtype)))
            self.apply_weights()

    def __bool__(self) -> bool:
        return bool(self.params)

    def by_name(self) -> dict[str, torch.Tensor]:
        """Name -> the enforced 0/1 tensor (the enforcer's own storage: changing it in place changes the mask)."""
        return dict(zip(self.names, self.masks))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The current mask as CPU bool tensors (saved in the training checkpoint)."""
        return {n: m.detach().to("cpu").bool().contiguous() for n, m in zip(self.names, self.masks)}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.names):
            raise ValueError(f"checkpoint mask covers {sorted(state)[:5]}, this run masks {self.names[:5]}")
        for n, m in zip(self.names, self.masks):
            m.copy_(state[n].to(device=m.device, dtype=m.dtype))

    @torch.no_grad()
    def apply_grads(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads and len(grads) == len(self.params):
            torch._foreach_mul_(grads, self.masks)
        else:
            for p, m in zip(self.params, self.masks):
                if p.grad is not None:
                    p.grad.mul_(m)

    @torch.no_grad()
    def apply_weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)


def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def device_logits(net: nn.Module, data: DeviceData, batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """Logits (float32) for a whole device-resident split, in eval mode, left on the data's device."""
    was_training = net.training
    net.eval()
    out = []
    for xb, _, _ in data.epoch_batches(batch_size, 0, 0, train=False):
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(net(xb).float())
    net.train(was_training)
    return torch.cat(out)


def predict_logits(net: nn.Module, data: DeviceData, batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """Logits (float32, CPU) for a whole device-resident split, in eval mode."""
    return device_logits(net, data, batch_size, amp).cpu()


def predict(net: nn.Module, data: DeviceData, batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """Predicted labels for a whole device-resident split (CPU tensor; only the labels leave the device)."""
    return device_logits(net, data, batch_size, amp).argmax(1).cpu()


def evaluate(net: nn.Module, data: DeviceData, bundle: DataBundle, batch_size: int = 1024,
             amp: bool = False) -> dict[str, float]:
    """All metrics of :func:`ballot_lib.metrics.evaluate_predictions` on one split."""
    pred = predict(net, data, batch_size, amp)
    y = data.y.cpu()
    g = None if data.g is None else data.g.cpu()
    return M.evaluate_predictions(y, pred, bundle.num_classes, g, bundle.num_groups)


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained net and one metrics row per epoch."""

    net: nn.Module
    history: list[dict] = field(default_factory=list)
    final: dict[str, dict[str, float]] = field(default_factory=dict)
    #: wall time of the training loop (per-epoch evaluation and checkpoints included) over all the run's epochs,
    #: the part before an interruption included (saved in the checkpoint)
    seconds: float = 0.0
    epochs_run: int = 0  # epochs trained by this call (fewer than the run's after a resume)
    #: the mask at the end of training (CPU bool tensors; ``None`` when trained without a mask). A step hook may
    #: have changed it during training (dynamic sparse training), so this is the mask the final weights obey.
    mask: Optional[dict[str, torch.Tensor]] = None


EpochHook = Callable[[nn.Module, int, dict], None]
#: ``hook(step, optimizer, mask)`` after every optimiser step (``step`` counts from 0 at epoch 0 of the schedule,
#: so it is the same for a resumed run). ``mask`` maps name -> the enforced 0/1 tensor (float, on the device):
#: the hook may change it in place (prune/regrow); the weights are re-masked right after the hook returns. The
#: hook also sees the optimiser (learning rate, state of regrown entries) and can update scores.
StepHook = Callable[[int, torch.optim.Optimizer, dict], None]


class Stateful:
    """Interface of the ``state`` objects of :func:`train`: state saved and restored with the checkpoint."""

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: Optional[dict]) -> None:
        raise NotImplementedError


def train(
    net: nn.Module,
    bundle: DataBundle,
    cfg: TrainConfig,
    *,
    seed: int,
    mask: Optional[Mapping[str, torch.Tensor]] = None,
    start_epoch: int = 0,
    end_epoch: Optional[int] = None,
    schedule: Optional[TrainConfig] = None,
    device: str | torch.device | None = "auto",
    eval_splits: Sequence[str] = ("val", "test"),
    checkpoint: Optional[str | Path] = None,
    hooks: Sequence[EpochHook] = (),
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]] = None,
    progress: bool = True,
    desc: str = "train",
    amp: Optional[bool] = None,
    state: Optional[Mapping[str, "Stateful"]] = None,
    step_hooks: Sequence[StepHook] = (),
    step_mode: Optional[str] = None,
    checkpoint_every: Optional[float] = None,
) -> TrainResult:
    """Train ``net`` in place from epoch ``start_epoch`` to ``end_epoch`` (default ``cfg.epochs``).

    Args:
        net: the model (moved to ``device``).
        bundle: the dataset; the train split is used for training, ``eval_splits`` evaluated after every epoch.
        cfg: the recipe (optimiser, batch size, schedule).
        seed: fixes the data order and augmentation of every epoch (shared by every method under this seed).
        mask: name -> 0/1 tensor; pruned weights are zeroed now and stay exactly 0.
        start_epoch: first epoch to run; the schedule is positioned there (rewinding to θk uses k).
        schedule: a different recipe for the learning-rate schedule only (e.g. learning-rate rewinding).
        checkpoint: file for resumable training state, written atomically after an epoch (every epoch, or at most
            every ``checkpoint_every`` seconds); if it exists the run resumes from it. The caller removes it once
            the result is stored.
        hooks: called as ``hook(net, epoch, row)`` after every epoch's evaluation (e.g. Ballot's vote collection).
        loss_fn: ``loss_fn(logits, y, g)``; default cross-entropy.
        amp: bf16 autocast; default on for CUDA.
        state: name -> object with ``state_dict()`` / ``load_state_dict(d)`` (e.g. Ballot's running vote tallies)
            saved in the checkpoint with the weights, so that what hooks accumulate resumes exactly with them.
            On resume each gets ``load_state_dict(d)``, with ``d = None`` when the checkpoint does not hold it.
        step_hooks: called as ``hook(step, optimizer, mask)`` after every optimiser step (see :data:`StepHook`),
            e.g. dynamic sparse training's prune/regrow. The (possibly changed) mask is saved in the checkpoint
            and restored on resume; what a hook itself accumulates travels through ``state``.
        step_mode: ``"eager"``, ``"compiled"`` (``torch.compile``), ``"graph"`` (the whole step as one CUDA graph,
            CUDA only) or ``"auto"``; default ``$BALLOT_STEP_MODE``, else ``"auto"`` (= ``"eager"``). Not part of
            a run's identity; non-eager modes agree with eager within rounding (see :mod:`ballot_lib.compiled`).
        checkpoint_every: least seconds between two checkpoints (0: after every epoch); default
            :func:`checkpoint_interval` (``$BALLOT_CHECKPOINT_EVERY_S``, else 0 on CPU and 60 on CUDA). Results do
            not depend on it: a resumed run is exact from whichever epoch its checkpoint holds.
    Returns:
        :class:`TrainResult` with the per-epoch history, the final metrics per evaluated split and the final
        mask.
    """
    cfg.validate(options_apply=False)  # derived recipes keep unused options of the experiment's (checked in full)
    end = cfg.epochs if end_epoch is None else end_epoch
    if not 0 <= start_epoch <= end:
        raise ValueError(f"start_epoch must be in [0, {end}], got {start_epoch}")
    dev = resolve_device(device)
    every = checkpoint_interval(dev, checkpoint_every)
    from .compiled import make_graph_safe_optimizer, make_stepper, resolve_step_mode

    step_mode = resolve_step_mode(step_mode, dev)
    amp = (dev.type == "cuda") if amp is None else amp
    sched = schedule or cfg
    conv = any(isinstance(m, nn.Conv2d) for m in net.modules())
    channels_last = dev.type == "cuda" and conv
    net.to(dev)
    if channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stubs lack it)
    train_data = DeviceData(bundle.train, bundle, dev, channels_last)
    evals = {s: DeviceData(getattr(bundle, s), bundle, dev, channels_last) for s in eval_splits}
    for s, d in evals.items():
        d.augment = False
    enforcer = MaskEnforcer(net, mask)
    stepper = None
    if step_mode == "eager":
        opt = make_optimizer(net, cfg)
    else:  # the learning rate as a device tensor, set per step without re-capture or recompilation
        lr_t = torch.full((), float(cfg.lr), device=dev)
        opt = make_graph_safe_optimizer([p for p in net.parameters() if p.requires_grad], cfg, lr_t)
    loss_fn = loss_fn or (lambda logits, y, g: F.cross_entropy(logits, y))
    result = TrainResult(net)
    if step_mode != "eager":
        stepper = make_stepper(step_mode, net, opt, enforcer, train_data, loss_fn, amp, lr_t, cfg.batch_size)

    # Every random draw of the loop (dropout, on CPU and CUDA) comes from torch's generators, seeded here from
    # (seed, start_epoch) -- or restored from the checkpoint -- and forked, so the caller's random state is
    # untouched and a run does not depend on what the process did before it. Data order and augmentation use
    # their own per-epoch generators (epoch_generator).
    with seeded_rng(training_seed(seed, start_epoch), dev):
        # Resume from a checkpoint if one exists: weights, optimiser state, RNG, history, extra state, epoch reached.
        extra_state = dict(state or {})
        epoch0 = start_epoch
        elapsed = 0.0
        # Only a run that keeps checkpoints needs the identity (it hashes the mask once per call).
        identity = None if checkpoint is None else checkpoint_identity(cfg, sched, seed, start_epoch, mask, bundle)
        if checkpoint is not None and Path(checkpoint).exists():
            saved = safe_torch_load(checkpoint, what="training checkpoint")
            if "identity" in saved and saved["identity"] != identity:  # checkpoints before 2026-12-02 carry none
                raise ResultsError(f"training checkpoint {checkpoint} was written by a training with other settings "
                                   "(recipe, schedule, seed, start epoch, mask or data); delete it to start this run "
                                   "afresh")
            try:
                net.load_state_dict(saved["net"])
                opt.load_state_dict(saved["opt"])
                if stepper is not None:  # keep the shared lr tensor (a checkpoint of an eager run holds floats)
                    for group in opt.param_groups:
                        group["lr"] = lr_t
                torch.set_rng_state(saved["rng"])
                if dev.type == "cuda" and "cuda_rng" in saved:
                    torch.cuda.set_rng_state(saved["cuda_rng"], dev)
                epoch0 = int(saved["epoch"])
                elapsed = float(saved.get("seconds", 0.0))  # the loop time of the epochs before the interruption
                result.history = list(saved["history"])
                if enforcer and "mask" in saved:
                    enforcer.load_state_dict(saved["mask"])
                extras = saved.get("extras", {})
                for name, obj in extra_state.items():
                    obj.load_state_dict(extras.get(name))
            except (KeyError, RuntimeError, ValueError, TypeError) as e:
                raise ResultsError(f"training checkpoint {checkpoint} does not match this run ({e}); delete it") from None
            if not start_epoch <= epoch0 <= end:  # a checkpoint past the schedule would mark the run done untrained
                raise ResultsError(f"training checkpoint {checkpoint} is at epoch {epoch0}, outside this run's schedule "
                                   f"[{start_epoch}, {end}] (from another run?); delete it to start the run afresh")
            enforcer.apply_weights()

        steps_per_epoch = math.ceil(train_data.n / cfg.batch_size)
        bar = _progress(range(epoch0, end), progress, desc, initial=epoch0 - start_epoch, total=end - start_epoch)
        # result.seconds counts the loop over every epoch of the run, across interruptions (the checkpoint carries it)
        t0 = time.perf_counter() - elapsed
        last_checkpoint = time.perf_counter()
        net.train()
        for epoch in bar:
            if stepper is None:
                loss_sum, correct = _eager_epoch(net, opt, enforcer, train_data, cfg, sched, seed, epoch, steps_per_epoch,
                                                 amp, loss_fn, step_hooks)
            else:
                stepper.start_epoch()
                for i, (idx, crop, flip) in enumerate(train_data.index_batches(cfg.batch_size, seed, epoch)):
                    stepper.set_lr(lr_at(sched, epoch + i / steps_per_epoch))
                    stepper.step(idx, crop, flip)
                    if step_hooks:
                        _run_step_hooks(step_hooks, epoch * steps_per_epoch + i, opt, enforcer)
                loss_sum, correct = stepper.loss_sum, stepper.correct
            # Everything the epoch's row needs leaves the device in one transfer (one host sync per epoch).
            train_loss, train_acc, preds = _epoch_readout(net, loss_sum, correct, evals, cfg.eval_batch_size, amp)
            row = {"epoch": epoch + 1, "lr": lr_at(sched, epoch), "train_loss": train_loss / train_data.n,
                   "train_acc": train_acc / train_data.n}
            for s, d in evals.items():
                result.final[s] = M.evaluate_predictions(d.y_host, preds[s], bundle.num_classes, d.g_host,
                                                         bundle.num_groups)
                row.update({f"{s}_{k}": v for k, v in result.final[s].items()})
            result.history.append(row)
            for hook in hooks:
                hook(net, epoch + 1, row)
            if checkpoint is not None and (every <= 0 or time.perf_counter() - last_checkpoint >= every):
                last_checkpoint = time.perf_counter()
                ckpt = {"net": net.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state(),
                        "epoch": epoch + 1, "history": result.history, "seconds": time.perf_counter() - t0,
                        "identity": identity}
                if dev.type == "cuda":
                    ckpt["cuda_rng"] = torch.cuda.get_rng_state(dev)
                if enforcer:
                    ckpt["mask"] = enforcer.state_dict()
                if extra_state:
                    ckpt["extras"] = {name: obj.state_dict() for name, obj in extra_state.items()}
                atomic_torch_save(ckpt, checkpoint)
            if hasattr(bar, "set_postfix"):
                shown = {"loss": f"{row['train_loss']:.3f}"}
                if "val_acc" in row:
                    shown["val_acc"] = f"{row['val_acc']:.3f}"
                bar.set_postfix(shown)
    result.seconds = time.perf_counter() - t0
    result.epochs_run = end - epoch0
    result.mask = enforcer.state_dict() if enforcer else None
    # A run resumed at its last epoch has trained nothing here: evaluate the restored weights once.
    for s, d in evals.items():
        if s not in result.final:
            result.final[s] = evaluate(net, d, bundle, cfg.eval_batch_size, amp)
    return result


def _run_step_hooks(step_hooks: Sequence[StepHook], step: int, opt: torch.optim.Optimizer,
                    enforcer: MaskEnforcer) -> None:
    masks = enforcer.by_name()
    for step_hook in step_hooks:
        step_hook(step, opt, masks)
    if enforcer:
        enforcer.apply_weights()


def _eager_epoch(net, opt, enforcer, train_data: DeviceData, cfg: TrainConfig, sched: TrainConfig, seed: int,
                 epoch: int, steps_per_epoch: int, amp: bool, loss_fn, step_hooks) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of the eager step; returns the (summed loss, correct count) device accumulators (no host sync)."""
    dev = train_data.device
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    for i, (xb, yb, gb) in enumerate(train_data.epoch_batches(cfg.batch_size, seed, epoch, train=True)):
        for group in opt.param_groups:
            group["lr"] = lr_at(sched, epoch + i / steps_per_epoch)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(xb)
            loss = loss_fn(logits.float(), yb, gb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if enforcer:
            enforcer.apply_grads()
        opt.step()
        if enforcer:
            enforcer.apply_weights()
        if step_hooks:
            _run_step_hooks(step_hooks, epoch * steps_per_epoch + i, opt, enforcer)
        loss_sum += loss.detach() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum, correct


def _epoch_readout(net: nn.Module, loss_sum: torch.Tensor, correct: torch.Tensor, evals: Mapping[str, DeviceData],
                   batch_size: int, amp: bool) -> tuple[float, float, dict[str, torch.Tensor]]:
    """(summed train loss, train correct count, predicted labels per split) with one device-to-host transfer.

    Labels, the loss (float32) and the count travel as float64, which holds each of them exactly, so the values
    are those of ``float(loss_sum)``, ``float(correct)`` and ``predict(...)``.
    """
    preds = {s: device_logits(net, d, batch_size, amp).argmax(1) for s, d in evals.items()}
    parts = [loss_sum.detach().double().view(1), correct.double().view(1)] + [p.double() for p in preds.values()]
    host = torch.cat(parts).cpu()
    out, at = {}, 2
    for s, p in preds.items():
        out[s] = host[at:at + p.numel()].long()
        at += p.numel()
    return float(host[0]), float(host[1]), out


def _progress(it, enabled: bool, desc: str, initial: int = 0, total: Optional[int] = None):
    if not enabled:
        return it
    from .progress import bar

    return bar(it, desc=desc, initial=initial, total=total, leave=False)


def state_dict_cpu(net: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``net.state_dict()`` in contiguous layout."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}

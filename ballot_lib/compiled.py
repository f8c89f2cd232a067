"""Captured and compiled training steps for :func:`ballot_lib.training.train` (``step_mode``).

The eager loop of :mod:`ballot_lib.training` launches every kernel of a step from Python. On a GPU at batch 128 a
CIFAR resnet18 step is then bound by per-kernel launch overhead, not by the GPU (issue #13: 13.2k images/s eager,
35.9k images/s for the same step replayed as one CUDA graph on an H100). Two alternatives to the eager step:

* ``"graph"`` (CUDA only): the whole step -- gather of the batch from the device-resident split, on-device crop
  and flip, normalisation, bf16-autocast forward, loss, backward, gradient masking, optimiser step, weight masking
  and the epoch's loss/accuracy accumulators -- is captured once as one ``torch.cuda.CUDAGraph`` and replayed.
  Per step the host only copies the batch's indices, crop offsets and flips into static buffers, sets the learning
  rate (a one-element device tensor: no re-capture when the schedule moves) and replays. The first
  :data:`WARMUP_STEPS` steps of the run are ordinary (eager) steps on a side stream, as CUDA graphs require;
  a batch of another size (the last partial batch of an epoch) is an eager step too. Masks are read from their
  tensors at replay, so a step hook that changes a mask in place is honoured.
* ``"compiled"``: ``torch.compile`` (``dynamic=False``) of the forward+loss and of the masked optimiser update;
  the backward pass between them is compiled by AOTAutograd. Works on CPU (inductor needs a C++ compiler) and
  CUDA. ``BALLOT_COMPILE_MODE`` picks the ``torch.compile`` mode (default ``"default"``; ``"reduce-overhead"``
  adds CUDA graphs through inductor). The last partial batch gets its own specialisation (one recompilation).
  Each ``train()`` call compiles again (a new stepper fails Dynamo's guards; see :data:`RECOMPILE_LIMIT`), so the
  mode pays off for long runs, not for many short ``train()`` calls.

Both keep the eager loop's semantics: every batch of the epoch's fixed order is used exactly once, gradients of
pruned weights are zeroed before the optimiser step and the weights re-masked after it (pruned weights are exactly
0 after every step), the learning rate follows ``lr_at`` per step, step hooks run after every step and epoch hooks
after every epoch. What changes is floating-point rounding: fused/compiled kernels sum in another order, and the
optimisers run with a tensor learning rate (SGD: ``fused=True`` on CUDA; Adam(W): ``capturable=True``). Tolerance
(tested in ``tests/test_step_modes.py`` on CPU, fp32): after 6 steps of a small masked conv net, weights within
``atol=1e-5, rtol=1e-4`` of the eager loop's, pruned weights exactly 0 (measured 2026-12-01, largest absolute
difference: SGD 0 for the graph logic, 1.5e-8 compiled; Adam 7e-6 for the graph logic, 2.7e-5 compiled -- Adam
divides by the root of the second moment, so rounding differences of tiny gradients grow to a fraction of the lr;
the compiled Adam case is not in the tests). In bf16 autocast on CUDA, rounding
differences grow over training like those of any two GPU runs; results are not bitwise those of eager mode.

**Run identity.** The step mode changes how a run is computed, not what is computed; like ``device`` it is not
part of a run's configuration hash. On CPU the default is eager, so CPU results (and the tests' pinned hashes) are
those of the eager loop unless a mode is asked for.

Choosing the mode: ``train(..., step_mode=...)``, else the environment variable ``BALLOT_STEP_MODE``
(``eager``/``compiled``/``graph``/``auto``; so a notebook or ``sweep grid`` job can be switched without changing
its parameters), else ``"auto"``: ``"eager"`` on CPU, and on CUDA
:data:`ballot_lib.gpu_defaults.CUDA_AUTO_STEP_MODE`, which ``benchmarks/decide.py --apply`` sets from the GPU
benchmark (``"eager"`` until the graph mode's speed and agreement have been confirmed on a GPU).

Limits of ``"graph"``: a step hook must change masks and optimiser state in place (not rebind tensors), it sees
``param_groups[i]["lr"]`` as a one-element tensor, and models whose forward does host syncs or data-dependent
control flow cannot be captured (FairScratch's EO surrogate indexes with a boolean mask, for one): the capture
then fails, a ``RuntimeWarning`` says why and the run goes on with eager steps (a capture runs no kernel, so no
state changed). Each ``train()`` call captures its own graph (one per run; :data:`WARMUP_STEPS` eager steps first).
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional

import torch
from torch import nn

from . import gpu_defaults

STEP_MODES = ("auto", "eager", "compiled", "graph")
ENV = "BALLOT_STEP_MODE"
COMPILE_MODE_ENV = "BALLOT_COMPILE_MODE"
#: Eager steps (on a side stream) before the CUDA graph is captured: lazily created state (SGD momentum buffers,
#: cuDNN/cuBLAS workspaces and autotuning) must exist before capture.
WARMUP_STEPS = 3


def resolve_step_mode(mode: Optional[str], device: torch.device) -> str:
    """``mode``, else ``$BALLOT_STEP_MODE``, else ``"auto"``; ``"auto"`` is ``"eager"`` except on a CUDA device,
    where it is :data:`ballot_lib.gpu_defaults.CUDA_AUTO_STEP_MODE` (set from the GPU benchmark; see the module
    doc)."""
    chosen = mode if mode is not None else (os.environ.get(ENV) or "auto")
    if chosen not in STEP_MODES:
        src = "step_mode" if mode is not None else f"${ENV}"
        raise ValueError(f"{src} must be one of {', '.join(STEP_MODES)}, got {chosen!r}")
    if chosen == "auto":
        if torch.device(device).type != "cuda":
            return "eager"
        auto = gpu_defaults.CUDA_AUTO_STEP_MODE
        if auto not in STEP_MODES or auto == "auto":
            raise ValueError(f"ballot_lib.gpu_defaults.CUDA_AUTO_STEP_MODE must be one of eager, compiled, graph, "
                             f"got {auto!r}")
        return auto
    if chosen == "graph" and torch.device(device).type != "cuda":
        raise ValueError(f"step_mode 'graph' needs a CUDA device, got {str(device)!r}; use 'eager' or 'compiled'")
    return chosen


def make_graph_safe_optimizer(params, cfg, lr: torch.Tensor) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` with the learning rate as the one-element device tensor ``lr`` (set per step with
    ``lr.fill_``), in a form that can be captured in a CUDA graph and compiled without recompiling per lr."""
    cuda = lr.device.type == "cuda"
    if cfg.optimizer == "sgd":
        extra = {"fused": True} if cuda else {}  # foreach SGD reads a tensor lr with .item(): not capturable
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **extra)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    # On CUDA capturable (step counts on the device, no host reads); on CPU the single-tensor loop (foreach refuses
    # a tensor lr unless capturable).
    return cls(params, lr=lr, weight_decay=cfg.weight_decay, capturable=cuda, foreach=cuda)


#: Each ``train()`` call builds a new stepper, whose compiled functions miss Dynamo's guards (another ``self``) and
#: compile again (the FX graph cache makes repeats faster). Dynamo's default limit of 8 compilations per function
#: would turn a process's later runs (a notebook training many runs) silently eager; it is raised to this.
RECOMPILE_LIMIT = 256


def _raise_recompile_limit(limit: int) -> None:
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the second is the older name
        if isinstance(getattr(dynamo_config, name, None), int) and getattr(dynamo_config, name) < limit:
            setattr(dynamo_config, name, limit)


def cuda_capture(fn: Callable[[], None]) -> Callable[[], None]:
    """Capture ``fn`` (its kernels are recorded, not run) in a CUDA graph; return the graph's ``replay``."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


class Stepper:
    """One training step of a non-eager mode, on indices into the device-resident train split.

    ``step(idx, crop, flip)`` trains on the batch ``data.x[idx]`` (crop offsets ``[B, 2]`` and flips ``[B]`` or
    ``None``) and adds its summed loss and correct count into the device accumulators ``loss_sum``/``correct``
    (zeroed by :meth:`start_epoch`; nothing is read back to the host).
    """

    def __init__(self, net: nn.Module, opt: torch.optim.Optimizer, enforcer, data, loss_fn, amp: bool,
                 lr: torch.Tensor):
        self.net, self.opt, self.enforcer, self.data, self.loss_fn, self.amp = net, opt, enforcer, data, loss_fn, amp
        self.lr = lr
        self.device = data.device
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.steps = 0
        #: the gradient tensors a captured graph writes (``None`` before capture / without a graph)
        self.static_grads: Optional[list] = None

    def start_epoch(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def set_lr(self, value: float) -> None:
        self.lr.fill_(value)  # a device kernel, no host sync, no re-capture/recompilation

    # The pieces of a step, shared by every mode; each touches only device tensors.
    def forward_loss(self, idx, crop, flip):
        d = self.data
        xb = d.prepare(d.x[idx], crop, flip)
        yb = d.y[idx]
        gb = None if d.g is None else d.g[idx]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            logits = self.net(xb)
            loss = self.loss_fn(logits.float(), yb, gb)
        return loss, (loss.detach() * yb.shape[0], (logits.detach().argmax(1) == yb).sum())

    def update(self) -> None:
        if self.enforcer:
            self.enforcer.apply_grads()
        self.opt.step()
        if self.enforcer:
            self.enforcer.apply_weights()

    def body(self, idx, crop, flip) -> None:
        """A whole step (what ``"graph"`` captures).

        Before capture, gradients are set to ``None`` so that the captured backward allocates them from the graph's
        memory pool; after capture they are zeroed in place, so an eager step accumulates into the captured tensors.
        """
        self.opt.zero_grad(set_to_none=self.static_grads is None)
        loss, (loss_b, correct_b) = self.forward_loss(idx, crop, flip)
        loss.backward()
        self.update()
        self.loss_sum.add_(loss_b)
        self.correct.add_(correct_b)

    def step(self, idx, crop, flip) -> None:
        self.body(idx, crop, flip)
        self.steps += 1


class CompiledStepper(Stepper):
    """``"compiled"``: ``torch.compile`` of :meth:`forward_loss` and :meth:`update` (the backward in between is
    compiled by AOTAutograd); ``dynamic=False``, so the last partial batch is one more specialisation."""

    def __init__(self, *args, compile_mode: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        mode = compile_mode or os.environ.get(COMPILE_MODE_ENV) or "default"
        _raise_recompile_limit(RECOMPILE_LIMIT)
        self._fwd = torch.compile(self.forward_loss, mode=mode, dynamic=False)
        self._update = torch.compile(self.update, mode=mode, dynamic=False)

    def body(self, idx, crop, flip) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss, (loss_b, correct_b) = self._fwd(idx, crop, flip)
        loss.backward()
        self._update()
        self.loss_sum.add_(loss_b)
        self.correct.add_(correct_b)


class GraphStepper(Stepper):
    """``"graph"``: the whole step as one captured graph, replayed on static index/crop/flip buffers.

    ``capture(fn) -> replay`` records ``fn`` without running it (default :func:`cuda_capture`); tests pass a fake
    to check the buffer, learning-rate and partial-batch logic on CPU. Steps before capture
    (:data:`WARMUP_STEPS`) and steps on a batch of another size than ``batch_size`` are eager steps of the same
    body; after such a step the gradients are copied back into the captured gradient tensors, so that
    ``p.grad`` stays the tensor the graph writes (what step hooks read).
    """

    def __init__(self, *args, batch_size: int, capture: Optional[Callable] = None, warmup: int = WARMUP_STEPS,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_size = batch_size
        self.capture = capture or cuda_capture
        self.warmup = warmup
        dev = self.device
        self.s_idx = torch.zeros(batch_size, dtype=torch.long, device=dev)
        self.s_crop = torch.zeros(batch_size, 2, dtype=torch.long, device=dev) if self.data.augment else None
        self.s_flip = torch.zeros(batch_size, dtype=torch.bool, device=dev) \
            if self.data.augment and self.data.flip else None
        self.replay: Optional[Callable[[], None]] = None
        self.eager_steps = 0
        self.replays = 0
        #: why the capture failed (then every step is eager), or "" while capture works / has not been tried
        self.failed = ""

    def _params(self) -> list:
        return [p for g in self.opt.param_groups for p in g["params"]]

    def _eager(self, idx, crop, flip) -> None:
        cuda = self.device.type == "cuda"
        if cuda and self.replay is None:  # warm-up steps run on a side stream (required before capture)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.body(idx, crop, flip)
            torch.cuda.current_stream(self.device).wait_stream(side)
        else:
            self.body(idx, crop, flip)
        self.eager_steps += 1
        if self.static_grads is not None:  # keep p.grad the captured tensors
            with torch.no_grad():
                for p, s in zip(self._params(), self.static_grads):
                    if s is None or p.grad is s:
                        continue
                    if p.grad is None:
                        s.zero_()
                    else:
                        s.copy_(p.grad)
                    p.grad = s

    def _load(self, idx, crop, flip) -> None:
        self.s_idx.copy_(idx)
        if self.s_crop is not None:
            self.s_crop.copy_(crop)
        if self.s_flip is not None:
            self.s_flip.copy_(flip)

    def step(self, idx, crop, flip) -> None:
        full = idx.shape[0] == self.batch_size
        if self.failed or not full or (self.replay is None and self.eager_steps < self.warmup):
            self._eager(idx, crop, flip)
        else:
            if self.replay is None:
                try:
                    self.replay = self.capture(lambda: self.body(self.s_idx, self.s_crop, self.s_flip))
                except Exception as e:  # noqa: BLE001  (a capture runs no kernel: state is as before the step)
                    self.failed = f"{type(e).__name__}: {e}"
                    warnings.warn(f"step_mode 'graph': the training step could not be captured as a CUDA graph "
                                  f"({self.failed.splitlines()[0][:300]}); this run continues with eager steps. A "
                                  f"loss or model that syncs with the host (e.g. boolean indexing, .item()) cannot "
                                  f"be captured.", RuntimeWarning, stacklevel=2)
                    self._eager(idx, crop, flip)
                    self.steps += 1
                    return
                self.static_grads = [p.grad for p in self._params()]
            self._load(idx, crop, flip)
            self.replay()
            self.replays += 1
        self.steps += 1


def make_stepper(mode: str, net: nn.Module, opt, enforcer, data, loss_fn, amp: bool, lr: torch.Tensor,
                 batch_size: int, capture: Optional[Callable] = None) -> Stepper:
    """The stepper of a non-eager ``mode`` (``"compiled"`` or ``"graph"``)."""
    if mode == "compiled":
        return CompiledStepper(net, opt, enforcer, data, loss_fn, amp, lr)
    if mode == "graph":
        return GraphStepper(net, opt, enforcer, data, loss_fn, amp, lr, batch_size=batch_size, capture=capture)
    raise ValueError(f"no stepper for step mode {mode!r}")

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
control flow cannot be captured (FairScratch's loss reads values to the host per step, for one). Such a step is
detected *before* any capture is tried (with at least one warm-up step, the default :data:`WARMUP_STEPS`): on
CUDA the last warm-up step runs under
``torch.cuda.set_sync_debug_mode("error")`` (the previous mode is restored afterwards), so a host sync in it
(``.item()``, ``float(t)``, ``torch.unique``, boolean indexing, ``nonzero``, ...) raises there. The weights,
buffers, optimiser state, accumulators and random state are then restored to what they were before that step, the
step is redone as an ordinary eager step, a ``RuntimeWarning`` says why, and the whole run goes on with eager steps
without attempting a capture. This matters because a capture that fails part-way is not harmless: it records
kernels without running them, so the weights are untouched, but it can leave torch's CUDA caching allocator (the
graph's private memory pool) in a broken state for the rest of the process. A capture that still fails (a sync the
check cannot see) is caught as before: warning, eager steps. :attr:`GraphStepper.stats` (and
:func:`graph_stats`, which collects the stats of every graph stepper made inside it, e.g. by ``train()``) says
whether steps were actually replayed from a graph (``replays``) or the run fell back (``fell_back``, ``failed``).
Each ``train()`` call captures its own graph (one per run; :data:`WARMUP_STEPS` eager steps first).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

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


def cuda_sync_check(fn: Callable[[], None]) -> None:
    """Run ``fn`` (an eager step) with torch's CUDA sync debug mode at ``"error"``: a host-device synchronisation
    inside it (what a CUDA graph cannot capture) raises a ``RuntimeError``. The previous mode is restored after."""
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    finally:
        torch.cuda.set_sync_debug_mode(prev)


@dataclass
class GraphStats:
    """What a :class:`GraphStepper` did: ``replays`` steps replayed from the captured graph, ``eager_steps`` run
    eagerly (warm-up, partial batches, or all of them after a fall-back), ``captures`` graphs captured, and
    ``failed``: why the run fell back to eager steps ("" when it did not)."""

    replays: int = 0
    eager_steps: int = 0
    captures: int = 0
    failed: str = ""

    @property
    def fell_back(self) -> bool:
        return bool(self.failed)

    def as_dict(self) -> dict:
        return {"replays": self.replays, "eager_steps": self.eager_steps, "captures": self.captures,
                "fell_back": self.fell_back, "failed": self.failed}


_RECORDERS: list[list] = []


@contextlib.contextmanager
def graph_stats() -> Iterator[list]:
    """``with graph_stats() as stats: train(..., step_mode="graph")``: ``stats`` lists the :class:`GraphStats` of
    every graph stepper made inside the block (live objects: read them after the block). A benchmark uses it to tell
    a graph measurement that replayed from one that fell back to eager steps."""
    rec: list = []
    _RECORDERS.append(rec)
    try:
        yield rec
    finally:
        _RECORDERS.remove(rec)


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

    ``sync_check(fn)`` runs the last warm-up step and raises if it synchronises with the host (default on CUDA:
    :func:`cuda_sync_check`; ``None`` elsewhere: no check). When it raises, the state before that step is restored,
    the step is redone eagerly and the run stays eager without a capture (see the module doc). :attr:`stats`
    (:class:`GraphStats`) counts replays and eager steps and says whether the run fell back.
    """

    def __init__(self, *args, batch_size: int, capture: Optional[Callable] = None, warmup: int = WARMUP_STEPS,
                 sync_check: Optional[Callable] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_size = batch_size
        self.capture = capture or cuda_capture
        self.warmup = warmup
        dev = self.device
        self.sync_check = sync_check if sync_check is not None else (cuda_sync_check if dev.type == "cuda" else None)
        self.s_idx = torch.zeros(batch_size, dtype=torch.long, device=dev)
        self.s_crop = torch.zeros(batch_size, 2, dtype=torch.long, device=dev) if self.data.augment else None
        self.s_flip = torch.zeros(batch_size, dtype=torch.bool, device=dev) \
            if self.data.augment and self.data.flip else None
        self.replay: Optional[Callable[[], None]] = None
        self.stats = GraphStats()
        for rec in _RECORDERS:
            rec.append(self.stats)

    # counters kept in self.stats (a small object a benchmark can hold without holding the graph or the model)
    @property
    def eager_steps(self) -> int:
        return self.stats.eager_steps

    @property
    def replays(self) -> int:
        return self.stats.replays

    @property
    def failed(self) -> str:
        """Why the run fell back to eager steps (host sync found before capture, or capture failed), else ""."""
        return self.stats.failed

    @property
    def fell_back(self) -> bool:
        return self.stats.fell_back

    def _params(self) -> list:
        return [p for g in self.opt.param_groups for p in g["params"]]

    def _snapshot(self) -> dict:
        """Copies of everything a step changes (weights, buffers, optimiser state, accumulators, random state)."""
        dev = self.device
        opt_state = {id(p): {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
                     for p, st in self.opt.state.items()}
        return {"params": [t.detach().clone() for t in self.net.parameters()],
                "buffers": [t.detach().clone() for t in self.net.buffers()],
                "opt": opt_state, "opt_keys": set(self.opt.state.keys()),
                "acc": (self.loss_sum.clone(), self.correct.clone()),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}

    def _restore(self, snap: dict) -> None:
        with torch.no_grad():
            for t, v in zip(self.net.parameters(), snap["params"]):
                t.copy_(v)
            for b, v in zip(self.net.buffers(), snap["buffers"]):
                b.copy_(v)
            for p in list(self.opt.state.keys()):
                if p not in snap["opt_keys"]:  # state created by the failed step (lazily, e.g. momentum buffers)
                    del self.opt.state[p]
                    continue
                saved = snap["opt"][id(p)]
                st = self.opt.state[p]
                for k in list(st.keys()):
                    if k not in saved:
                        del st[k]
                for k, v in saved.items():
                    if isinstance(v, torch.Tensor) and isinstance(st.get(k), torch.Tensor) \
                            and st[k].shape == v.shape:
                        st[k].copy_(v)
                    else:
                        st[k] = v
            self.loss_sum.copy_(snap["acc"][0])
            self.correct.copy_(snap["acc"][1])
        self.opt.zero_grad(set_to_none=self.static_grads is None)
        torch.set_rng_state(snap["rng"])
        if snap["cuda_rng"] is not None:
            torch.cuda.set_rng_state(snap["cuda_rng"], self.device)

    def _run_body(self, idx, crop, flip, check: bool = False) -> None:
        """One eager step of the body (on a side stream on CUDA before capture); under ``sync_check`` when
        ``check``: a host sync in it sets :attr:`failed` and the step is redone, after restoring the state before
        it, without the check."""
        cuda = self.device.type == "cuda"
        if check:
            snap = self._snapshot()
            try:
                check_fn = self.sync_check
                assert check_fn is not None  # check=True only where a check is set
                self._on_side_stream(lambda: check_fn(lambda: self.body(idx, crop, flip)), cuda)
                return
            except Exception as e:  # noqa: BLE001  (anything: the eager redo below re-raises a genuine error)
                self.stats.failed = f"host sync in the step (found before capture): {type(e).__name__}: {e}"
                warnings.warn(f"step_mode 'graph': the training step synchronises with the host, so it cannot be "
                              f"captured as a CUDA graph ({self.stats.failed.splitlines()[0][:300]}); no capture "
                              f"is attempted and this run continues with eager steps. A loss or model that syncs "
                              f"with the host (e.g. boolean indexing, .item(), float(t), torch.unique) could not "
                              f"be captured.", RuntimeWarning, stacklevel=4)
                self._restore(snap)
        self._on_side_stream(lambda: self.body(idx, crop, flip), cuda and self.replay is None and not self.failed)

    def _on_side_stream(self, fn: Callable[[], None], side_stream: bool) -> None:
        if not side_stream:  # warm-up steps run on a side stream (required before capture)
            fn()
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):
                fn()
        finally:
            torch.cuda.current_stream(self.device).wait_stream(side)

    def _eager(self, idx, crop, flip) -> None:
        # The last warm-up step is checked for host syncs (before anything is captured); not after a fall-back.
        check = (self.sync_check is not None and self.replay is None and not self.failed
                 and self.eager_steps == self.warmup - 1)
        self._run_body(idx, crop, flip, check=check)
        self.stats.eager_steps += 1
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
                except Exception as e:  # noqa: BLE001
                    # The capture recorded kernels without running them, so the weights are as before the step
                    # (torch's allocator may not be: hence the host-sync check before capture).
                    self.stats.failed = f"{type(e).__name__}: {e}"
                    warnings.warn(f"step_mode 'graph': the training step could not be captured as a CUDA graph "
                                  f"({self.failed.splitlines()[0][:300]}); this run continues with eager steps. A "
                                  f"loss or model that syncs with the host (e.g. boolean indexing, .item()) cannot "
                                  f"be captured.", RuntimeWarning, stacklevel=2)
                    self._eager(idx, crop, flip)
                    self.steps += 1
                    return
                self.stats.captures += 1
                self.static_grads = [p.grad for p in self._params()]
            self._load(idx, crop, flip)
            self.replay()
            self.stats.replays += 1
        self.steps += 1


def make_stepper(mode: str, net: nn.Module, opt, enforcer, data, loss_fn, amp: bool, lr: torch.Tensor,
                 batch_size: int, capture: Optional[Callable] = None) -> Stepper:
    """The stepper of a non-eager ``mode`` (``"compiled"`` or ``"graph"``)."""
    if mode == "compiled":
        return CompiledStepper(net, opt, enforcer, data, loss_fn, amp, lr)
    if mode == "graph":
        return GraphStepper(net, opt, enforcer, data, loss_fn, amp, lr, batch_size=batch_size, capture=capture)
    raise ValueError(f"no stepper for step mode {mode!r}")

"""Step modes of the training loop (issue #13): eager, compiled (torch.compile), graph (whole step as a CUDA graph).

Tolerance (module doc of :mod:`ballot_lib.compiled`): in fp32 on CPU, after a few masked SGD steps the weights of
a non-eager mode are within ``atol=1e-5, rtol=1e-4`` of eager's (fused/compiled kernels and a tensor learning rate
round differently); pruned weights are exactly 0 in every mode. The graph mode's Python logic (warm-up, static
buffers, lr tensor, last partial batch, step hooks) is tested on CPU with a fake capture that records the step
instead of a CUDA graph; capture itself is tested only where CUDA exists.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from ballot_lib import compiled as C
from ballot_lib import pruning as P
from ballot_lib.data import DataBundle, Split
from ballot_lib.training import DeviceData, MaskEnforcer, TrainConfig, train

ATOL, RTOL = 1e-5, 1e-4


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3))


def image_bundle(n: int = 40, seed: int = 0) -> DataBundle:
    """Tiny uint8 8x8 images with crop+flip augmentation; 40 train images at batch 16 = 2 full + 1 partial batch."""
    gen = torch.Generator().manual_seed(seed)

    def split(m):
        return Split(torch.randint(0, 256, (m, 3, 8, 8), generator=gen, dtype=torch.uint8),
                     torch.randint(0, 3, (m,), generator=gen))

    return DataBundle(name="tiny_images", train=split(n), val=split(12), test=split(12), num_classes=3,
                      class_names=["a", "b", "c"], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=True,
                      crop_padding=1, flip=True)


def half_mask(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: (torch.arange(w.numel()) % 2 == 0).view_as(w) for n, w in P.prunable_weights(net).items()}


CFG = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                  schedule="cosine")
ADAM = TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=0.01, weight_decay=5e-4, schedule="cosine")


def run(mode, cfg=CFG, step_hooks=(), **kw):
    net = conv_net()
    mask = half_mask(net)
    res = train(net, image_bundle(), cfg, seed=3, mask=mask, device="cpu", progress=False, step_mode=mode,
                step_hooks=step_hooks, **kw)
    return net, mask, res


def assert_close_to_eager(net, ref, mask):
    params = dict(net.named_parameters())
    for n, p in ref.named_parameters():
        torch.testing.assert_close(params[n].detach(), p.detach(), atol=ATOL, rtol=RTOL, msg=n)
    for n, m in mask.items():
        assert bool((params[n].detach()[~m] == 0).all()), n


# ------------------------------------------------------------------------------------------ mode selection


def test_mode_resolution(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(C.ENV, raising=False)
    assert C.resolve_step_mode(None, cpu) == "eager"
    # what decide.py --apply wrote (eager until measured on a GPU; graph once the benchmark and these tests say so)
    from ballot_lib import gpu_defaults

    assert C.resolve_step_mode("auto", torch.device("cuda")) == gpu_defaults.CUDA_AUTO_STEP_MODE
    monkeypatch.setenv(C.ENV, "compiled")
    assert C.resolve_step_mode(None, cpu) == "compiled"
    assert C.resolve_step_mode("eager", cpu) == "eager"  # the argument wins
    with pytest.raises(ValueError, match="needs a CUDA device"):
        C.resolve_step_mode("graph", cpu)
    with pytest.raises(ValueError, match="step_mode must be one of"):
        C.resolve_step_mode("fast", cpu)
    monkeypatch.setenv(C.ENV, "bogus")
    with pytest.raises(ValueError, match=r"\$BALLOT_STEP_MODE"):
        C.resolve_step_mode(None, cpu)


def test_eager_by_name_is_the_default_and_bitwise_equal(monkeypatch):
    monkeypatch.delenv(C.ENV, raising=False)
    a, _, ra = run(None)
    b, _, rb = run("eager")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ra.history == rb.history


# ------------------------------------------------------------------------------------------ graph logic (fake capture)


class FakeCapture:
    """Stands in for a CUDA graph: capture records the step without running it, replay runs it again on the
    static buffers (what a CUDA graph replay computes)."""

    def __init__(self):
        self.captures = 0

    def __call__(self, fn):
        self.captures += 1
        return fn


def graph_run(cfg, capture, step_hooks=(), epochs_bundle=None, warmup=C.WARMUP_STEPS, net=None, sync_check=None,
              **kw):
    """``train`` in graph mode on CPU with a fake capture (patched into make_stepper); ``sync_check`` stands in for
    the CUDA host-sync check of the last warm-up step (none by default, as on CPU)."""
    made = {}
    real = C.make_stepper

    def fake_make(mode, *args, **kw):
        s = C.GraphStepper(*args[:7], batch_size=args[7], capture=capture, warmup=warmup, sync_check=sync_check)
        made["stepper"] = s
        return s

    C.make_stepper = fake_make
    real_resolve = C.resolve_step_mode
    C.resolve_step_mode = lambda mode, dev: "graph"
    try:
        net = net or conv_net()
        mask = half_mask(conv_net())
        res = train(net, epochs_bundle or image_bundle(), cfg, seed=3, mask=mask, device="cpu", progress=False,
                    step_mode="graph", step_hooks=step_hooks, **kw)
    finally:
        C.make_stepper = real
        C.resolve_step_mode = real_resolve
    return net, mask, res, made["stepper"]


@pytest.mark.parametrize("cfg", [CFG, ADAM], ids=["sgd", "adam"])
def test_graph_logic_matches_eager_with_partial_batches_and_lr_schedule(cfg):
    ref, _, rref = run("eager", cfg)
    lrs = []
    hook = lambda step, opt, masks: lrs.append((step, float(opt.param_groups[0]["lr"])))  # noqa: E731
    capture = FakeCapture()
    net, mask, res, st = graph_run(cfg, capture, step_hooks=[hook])
    # 2 epochs x (2 full + 1 partial) steps: 3 warm-up eager steps (2 full of epoch 0, its partial one), capture
    # at the first full batch of epoch 1, its partial batch eager again.
    assert capture.captures == 1
    assert st.steps == 6 and st.replays == 2 and st.eager_steps == 4
    assert [s for s, _ in lrs] == list(range(6))
    ref_lrs = []
    run("eager", cfg, step_hooks=[lambda step, opt, masks: ref_lrs.append(opt.param_groups[0]["lr"])])
    assert [lr for _, lr in lrs] == pytest.approx(ref_lrs, rel=1e-6)  # the lr tensor follows the schedule
    assert_close_to_eager(net, ref, mask)
    for a, b in zip(res.history, rref.history):
        assert a.keys() == b.keys()
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["train_acc"] == b["train_acc"]


def test_graph_keeps_captured_gradients_and_masks_changed_in_place():
    capture = FakeCapture()
    seen = []

    def hook(step, opt, masks):
        # What a dynamic-sparse hook does: change the mask in place; the graph reads it at the next replay.
        if step == 4:
            name = next(iter(masks))
            masks[name].zero_()
        seen.append([p.grad for p in opt.param_groups[0]["params"]])

    net, mask, _, st = graph_run(CFG, capture, step_hooks=[hook])
    # After capture (step 3) every step hook sees the same (captured) gradient tensors, eager partial step included.
    for later in seen[4:]:
        assert all(a is b for a, b in zip(later, seen[3]))
    first = next(iter(mask))
    assert bool((dict(net.named_parameters())[first].detach() == 0).all())


def test_graph_falls_back_to_eager_when_the_step_cannot_be_captured():
    def refuse(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    ref, _, rref = run("eager")
    with pytest.warns(RuntimeWarning, match="could not be captured.*continues with eager steps"):
        with C.graph_stats() as stats:
            net, mask, res, st = graph_run(CFG, refuse)
    assert st.replays == 0 and st.eager_steps == 6 and "not permitted" in st.failed
    # what a benchmark reads (without holding the stepper): no replay, fell back, why
    (rec,) = stats
    assert rec is st.stats and rec.fell_back and rec.as_dict()["replays"] == 0 and rec.captures == 0
    assert_close_to_eager(net, ref, mask)
    assert [r["train_acc"] for r in res.history] == [r["train_acc"] for r in rref.history]


def test_graph_stats_count_replays_of_a_working_capture():
    with C.graph_stats() as stats:
        *_, st = graph_run(CFG, FakeCapture())
    assert [s.as_dict() for s in stats] == [{"replays": 2, "eager_steps": 4, "captures": 1, "fell_back": False,
                                             "failed": ""}]
    assert not C._RECORDERS  # the recorder is gone after the block


class SyncCheck:
    """Stands in for torch's CUDA sync debug mode: runs the step, then raises if ``syncs`` (the worst case: the
    step changed weights, optimiser state, BN statistics and accumulators before the sync was found)."""

    def __init__(self, syncs: bool):
        self.syncs, self.calls = syncs, 0

    def __call__(self, fn):
        self.calls += 1
        fn()
        if self.syncs:
            raise RuntimeError("called a synchronizing CUDA operation")


def test_host_sync_found_before_capture_restores_the_step_and_never_captures():
    """A step that syncs with the host is found on the last warm-up step (before any capture, which could leave
    torch's allocator broken): the state before that step is restored, the step redone eagerly, the run stays eager
    and its result is that of the eager loop (the step is not applied twice)."""
    ref, _, rref = run("eager")
    capture, check = FakeCapture(), SyncCheck(syncs=True)
    with pytest.warns(RuntimeWarning, match="synchronises with the host.*no capture is attempted"):
        with C.graph_stats() as stats:
            net, mask, res, st = graph_run(CFG, capture, sync_check=check)
    assert check.calls == 1 and capture.captures == 0  # no capture was attempted
    assert st.replays == 0 and st.eager_steps == 6 and st.fell_back and "host sync" in st.failed
    assert stats[0].fell_back and stats[0].replays == 0
    assert_close_to_eager(net, ref, mask)
    for a, b in zip(res.history, rref.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["train_acc"] == b["train_acc"]


@pytest.mark.parametrize("cfg", [CFG, ADAM], ids=["sgd", "adam"])
def test_sync_check_runs_once_on_the_last_warm_up_step_then_captures(cfg):
    ref, _, _ = run("eager", cfg)
    capture, check = FakeCapture(), SyncCheck(syncs=False)
    net, mask, _, st = graph_run(cfg, capture, sync_check=check)
    assert check.calls == 1 and capture.captures == 1 and st.replays == 2 and not st.fell_back
    assert_close_to_eager(net, ref, mask)


def test_sync_check_restores_the_previous_debug_mode(monkeypatch):
    modes = [1]  # "warn", say, set by the user
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda m: modes.append(m))
    seen = []
    C.cuda_sync_check(lambda: seen.append(modes[-1]))
    assert seen == ["error"] and modes[-1] == 1

    def syncs():
        raise RuntimeError("called a synchronizing CUDA operation")

    with pytest.raises(RuntimeError, match="synchronizing"):
        C.cuda_sync_check(syncs)
    assert modes[-1] == 1


def test_the_sync_check_is_only_used_on_a_gpu():
    b = image_bundle()
    data = DeviceData(b.train, b, torch.device("cpu"))
    net = conv_net()
    opt = C.make_graph_safe_optimizer(list(net.parameters()), CFG, torch.tensor(0.1))
    st = C.GraphStepper(net, opt, MaskEnforcer(net, None), data,
                        lambda lg, y, g: nn.functional.cross_entropy(lg, y), False, torch.tensor(0.1), batch_size=16)
    assert st.sync_check is None


def test_graph_mode_resumes_from_a_checkpoint_of_an_eager_run(tmp_path):
    """A run interrupted in eager mode resumes in graph mode: the lr stays the shared tensor, the schedule goes on."""
    ckpt = tmp_path / "ckpt.pt"
    net = conv_net()
    train(net, image_bundle(), CFG, seed=3, mask=half_mask(net), device="cpu", progress=False, end_epoch=1,
          checkpoint=ckpt, step_mode="eager")
    lrs = []
    hook = lambda step, opt, masks: lrs.append((step, opt.param_groups[0]["lr"]))  # noqa: E731
    resumed, mask, res, st = graph_run(CFG, FakeCapture(), step_hooks=[hook], net=conv_net(), checkpoint=ckpt)
    assert [s for s, _ in lrs] == [3, 4, 5] and all(isinstance(lr, torch.Tensor) for _, lr in lrs)
    assert len(res.history) == 2 and st.steps == 3
    ref, _, _ = run("eager")
    assert_close_to_eager(resumed, ref, mask)


def test_graph_static_buffers_without_augmentation():
    b = image_bundle()
    b.augment = False
    data = DeviceData(b.train, b, torch.device("cpu"))
    net = conv_net()
    opt = C.make_graph_safe_optimizer(list(net.parameters()), CFG, torch.tensor(0.1))
    st = C.GraphStepper(net, opt, MaskEnforcer(net, None), data,
                        lambda lg, y, g: nn.functional.cross_entropy(lg, y), False, torch.tensor(0.1),
                        batch_size=16, capture=FakeCapture(), warmup=0)
    assert st.s_crop is None and st.s_flip is None
    for idx, crop, flip in data.index_batches(16, 0, 0):
        assert crop is None and flip is None
        st.step(idx, crop, flip)
    assert st.replays == 2 and st.eager_steps == 1
    assert torch.equal(st.s_idx, data.epoch_plan(0, 0)[0][16:32])  # the last full batch's indices


# ------------------------------------------------------------------------------------------ compiled (inductor on CPU)


def _compile_available() -> str:
    """Why torch.compile cannot build CPU kernels here ("" when it can): inductor compiles C++ against Python's
    headers, so it needs a C++ compiler *and* Python.h (absent on images without the python3-dev package)."""
    import sysconfig

    if shutil.which("g++") is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        return "torch.compile on CPU (inductor) needs a C++ compiler; none found"
    include = sysconfig.get_paths().get("include") or ""
    if not (Path(include) / "Python.h").is_file():
        return (f"torch.compile on CPU (inductor) needs Python's C headers; no Python.h in {include!r} "
                f"(install the python3-dev package of this Python)")
    return ""


def test_compiled_test_skips_without_python_headers(monkeypatch, tmp_path):
    """The compiled CPU test must be skipped (not fail) where Python.h is missing, as where no compiler is."""
    import sysconfig

    real = sysconfig.get_paths
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {**real(*a, **k), "include": str(tmp_path)})
    if shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"):
        assert "Python.h" in _compile_available()
    (tmp_path / "Python.h").write_text("")
    assert "Python.h" not in _compile_available()


@pytest.mark.skipif(bool(_compile_available()), reason=_compile_available() or "n/a")
def test_compiled_matches_eager_within_tolerance_and_sees_masks_changed_in_place():
    def prune_more(step, opt, masks):  # a step hook that prunes in place (dynamic sparse training)
        if step == 2:
            name = next(iter(masks))
            masks[name][..., 0] = 0

    torch._dynamo.reset()
    ref, _, rref = run("eager", step_hooks=[prune_more])
    net, mask, res = run("compiled", step_hooks=[prune_more])
    first = next(iter(mask))
    mask[first] = mask[first].clone()
    mask[first][..., 0] = False
    assert_close_to_eager(net, ref, mask)  # includes: the newly pruned weights stayed exactly 0
    for a, b in zip(res.history, rref.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == b["val_acc"]


# ------------------------------------------------------------------------------------------ CUDA only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the graph mode captures a CUDA graph)")
@pytest.mark.parametrize("cfg", [CFG, ADAM], ids=["sgd", "adam"])
def test_cuda_graph_mode_matches_eager_on_cuda(cfg):
    def go(mode):
        net = conv_net()
        mask = half_mask(net)
        train(net, image_bundle(200), cfg, seed=3, mask=mask, device="cuda", progress=False, step_mode=mode,
              amp=False)
        return net.cpu(), mask

    ref, _ = go("eager")
    net, mask = go("graph")
    params = dict(net.named_parameters())
    for n, p in ref.named_parameters():  # cuDNN/TF32 rounding on top of the CPU tolerance
        torch.testing.assert_close(params[n].detach(), p.detach(), atol=1e-3, rtol=1e-2, msg=n)
    for n, m in mask.items():
        assert bool((params[n].detach()[~m] == 0).all()), n


# ------------------------------------------------------------------------------------------ host syncs


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_one_device_to_host_read_per_epoch(mode, monkeypatch):
    """Audit of the loop (training.py / compiled.py): per epoch exactly one read of device data by the host
    (``.cpu()`` of the packed loss/count/predictions); no ``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()`` of
    anything else, so nothing per step or per evaluation batch. Counted on CPU by the calling file."""
    import sys

    watched = ("ballot_lib/training.py", "ballot_lib/compiled.py")
    reads, host = [], []

    def from_loop() -> bool:
        return sys._getframe(2).f_code.co_filename.endswith(watched)

    def wrap(name):
        orig = getattr(torch.Tensor, name)

        def f(self, *a, **k):
            out = orig(self, *a, **k)
            if from_loop():
                if name == "cpu":
                    host.append(out)
                    reads.append(name)
                elif not any(self is h or self._base is h for h in host):
                    reads.append(name)
            return out

        monkeypatch.setattr(torch.Tensor, name, f)

    for name in ("cpu", "item", "tolist", "__float__", "__int__", "__bool__"):
        wrap(name)
    if mode == "eager":
        run("eager")
    else:
        graph_run(CFG, FakeCapture())
    monkeypatch.undo()
    assert reads == ["cpu", "cpu"]  # 2 epochs (each with val and test evaluated), 6 steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the graph mode captures a CUDA graph)")
def test_cuda_graph_mode_bf16_keeps_masks_and_follows_eager():
    """bf16 autocast + channels_last + a step hook that prunes in place: masks exact, training close to eager."""
    def prune_more(step, opt, masks):
        if step == 5:
            masks[next(iter(masks))][..., 0] = 0

    def go(mode):
        net = conv_net()
        mask = half_mask(net)
        res = train(net, image_bundle(200), CFG, seed=3, mask=mask, device="cuda", progress=False, step_mode=mode,
                    step_hooks=[prune_more])
        return net.cpu(), mask, res

    ref, _, rref = go("eager")
    net, mask, res = go("graph")
    first = next(iter(mask))
    mask[first] = mask[first].clone()
    mask[first][..., 0] = False
    params = dict(net.named_parameters())
    for n, m in mask.items():
        assert bool((params[n].detach()[~m] == 0).all()), n
    for a, b in zip(res.history, rref.history):  # bf16 rounding differs between the modes; the run does not
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05, abs=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the graph mode captures a CUDA graph)")
def test_cuda_graph_mode_falls_back_when_the_loss_syncs():
    def syncing_loss(logits, y, g):  # boolean indexing: a host sync, not capturable
        keep = y >= 0
        return nn.functional.cross_entropy(logits[keep], y[keep])

    def unique_loss(logits, y, g):  # FairScratch-like: torch.unique and float() per step
        n = float(torch.unique(y).numel())
        return nn.functional.cross_entropy(logits, y) * (n / n)

    for loss_fn in (syncing_loss, unique_loss):
        net = conv_net()
        with pytest.warns(RuntimeWarning, match="synchronises with the host.*no capture is attempted"):
            with C.graph_stats() as stats:
                res = train(net, image_bundle(200), CFG, seed=3, device="cuda", progress=False, step_mode="graph",
                            loss_fn=loss_fn)
        assert len(res.history) == 2 and all(r["train_loss"] == r["train_loss"] for r in res.history)
        (rec,) = stats
        assert rec.fell_back and rec.captures == 0 and rec.replays == 0, rec
    assert torch.cuda.get_sync_debug_mode() == 0  # restored
    # nothing was captured, so torch's allocator is intact: a capturable run in the same process captures and replays
    with C.graph_stats() as stats:
        train(conv_net(), image_bundle(200), CFG, seed=3, device="cuda", progress=False, step_mode="graph")
    (rec,) = stats
    assert not rec.fell_back and rec.captures == 1 and rec.replays > 0, rec

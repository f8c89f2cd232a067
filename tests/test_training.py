"""The training loop (SPEC §3): masks enforced, exact resume, seeded data order, schedules and augmentation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import make_experiment

from ballot_lib import pruning as P
from ballot_lib.training import DeviceData, TrainConfig, lr_at, random_crop, train


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))


def fixed_mask(net: nn.Module) -> dict[str, torch.Tensor]:
    """A hand-made mask: every other entry of each weight pruned (by flat index)."""
    out = {}
    for n, w in P.prunable_weights(net).items():
        out[n] = (torch.arange(w.numel()) % 2 == 0).view_as(w)
    return out


def state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SGD = TrainConfig(epochs=3, batch_size=8, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.05,
                  schedule="constant")
ADAM = TrainConfig(epochs=3, batch_size=8, optimizer="adam", lr=0.05, weight_decay=0.05, schedule="constant")
ADAMW = TrainConfig(epochs=3, batch_size=8, optimizer="adamw", lr=0.05, weight_decay=0.05, schedule="constant")


# ------------------------------------------------------------------------------------------ masks


@pytest.mark.parametrize("cfg, buffers", [(SGD, ("momentum_buffer",)), (ADAM, ("exp_avg", "exp_avg_sq")),
                                          (ADAMW, ("exp_avg", "exp_avg_sq"))], ids=["sgd", "adam", "adamw"])
def test_pruned_weights_and_their_optimizer_state_stay_exactly_zero(cfg, buffers, toy, tmp_path):
    net = small_net()
    before = state(net)
    mask = fixed_mask(net)
    ckpt = tmp_path / "ckpt.pt"
    train(net, toy, cfg, seed=0, mask=mask, device="cpu", progress=False, checkpoint=ckpt, eval_splits=())
    params = dict(net.named_parameters())
    for n, m in mask.items():
        w = params[n].detach()
        assert bool((w[~m] == 0.0).all()), n  # exactly zero, despite momentum and weight decay
        assert bool((w[m] != before[n][m]).all()), n  # the kept weights did train
    # The optimiser state in the checkpoint: moments of pruned entries are 0, of kept entries mostly not.
    opt_state = torch.load(ckpt, weights_only=True)["opt"]["state"]
    index = {name: i for i, (name, _) in enumerate(net.named_parameters())}
    for n, m in mask.items():
        for buf in buffers:
            b = opt_state[index[n]][buf]
            assert bool((b[~m] == 0).all()), (n, buf)
            assert bool((b[m] != 0).any()), (n, buf)


def test_mask_is_applied_to_the_initial_weights_and_biases_are_untouched(toy):
    net = small_net()
    mask = fixed_mask(net)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, schedule="constant")
    train(net, toy, cfg, seed=0, mask=mask, device="cpu", progress=False, eval_splits=())
    assert bool((net[0].bias != 0).all())  # biases are not masked
    with pytest.raises(ValueError, match="shape"):
        train(small_net(), toy, cfg, seed=0, mask={"0.weight": torch.ones(2, 2, dtype=torch.bool)}, device="cpu",
              progress=False, eval_splits=())
    with pytest.raises(ValueError, match="nope"):
        train(small_net(), toy, cfg, seed=0, mask={"nope": torch.ones(1)}, device="cpu", progress=False,
              eval_splits=())


def test_without_a_mask_the_same_weights_become_nonzero(toy):
    # Control for the mask test: the entries it pruned do move when no mask is given.
    net = small_net()
    mask = fixed_mask(net)
    train(net, toy, SGD, seed=0, device="cpu", progress=False, eval_splits=())
    params = dict(net.named_parameters())
    assert all(bool((params[n].detach()[~m] != 0).any()) for n, m in mask.items())


# ------------------------------------------------------------------------------------------ resume and determinism


@pytest.mark.parametrize("cfg", [SGD, ADAM], ids=["sgd", "adam"])
def test_interrupted_training_resumes_to_identical_weights(cfg, toy, tmp_path):
    cfg = TrainConfig(**{**cfg.__dict__, "epochs": 4, "schedule": "cosine", "warmup_epochs": 1})
    mask = fixed_mask(small_net())
    full_net = small_net()
    full = train(full_net, toy, cfg, seed=3, mask=mask, device="cpu", progress=False)

    ckpt = tmp_path / "run" / "checkpoint.pt"
    part_net = small_net()
    part = train(part_net, toy, cfg, seed=3, mask=mask, device="cpu", progress=False, checkpoint=ckpt, end_epoch=2)
    assert part.epochs_run == 2 and ckpt.exists()
    # Resume into a differently initialised net: everything must come from the checkpoint.
    resumed_net = small_net(seed=99)
    resumed = train(resumed_net, toy, cfg, seed=3, mask=mask, device="cpu", progress=False, checkpoint=ckpt)
    assert resumed.epochs_run == 2
    assert states_equal(state(resumed_net), state(full_net))
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.final == full.final
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint.pt"]  # no temp files


def dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))


def test_random_draws_in_training_depend_on_the_seed_only_and_leave_the_callers_state(toy, tmp_path):
    """Dropout draws from torch's generator: a run seeds it from its seed, so what the process did before does
    not change the result, the caller's random state (torch, python, numpy) is left as it was, and a run
    interrupted and resumed draws the same numbers as one that was not."""
    import random

    import numpy as np

    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.1)
    outs = []
    for before in (1, 2):
        torch.manual_seed(before)  # whatever the process did before the run
        net = dropout_net()
        torch.manual_seed(before)
        random.seed(before)
        np.random.seed(before)
        expected = (torch.rand(3), random.random(), np.random.rand())
        torch.manual_seed(before)
        random.seed(before)
        np.random.seed(before)
        train(net, toy, cfg, seed=3, device="cpu", progress=False, eval_splits=())
        assert (torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
                and np.random.rand() == expected[2])  # the caller's streams continue as if nothing ran
        outs.append(state(net))
    assert states_equal(*outs)
    assert not states_equal(outs[0], state(dropout_net()))  # it trained
    other = dropout_net()
    train(other, toy, cfg, seed=4, device="cpu", progress=False, eval_splits=())
    assert not states_equal(outs[0], state(other))  # another seed draws other dropout masks
    ckpt = tmp_path / "checkpoint.pt"
    part = dropout_net()
    train(part, toy, cfg, seed=3, device="cpu", progress=False, eval_splits=(), checkpoint=ckpt, end_epoch=2)
    torch.manual_seed(123)  # a new process
    resumed = dropout_net()
    train(resumed, toy, cfg, seed=3, device="cpu", progress=False, eval_splits=(), checkpoint=ckpt)
    assert states_equal(state(resumed), outs[0])


@pytest.mark.parametrize("change", ["lr", "batch_size", "schedule", "seed", "mask", "no mask", "start_epoch"])
def test_a_checkpoint_of_another_training_is_refused(toy, tmp_path, change):
    """A checkpoint written with other settings is not resumed silently (its mask would replace the run's)."""
    from ballot_lib.results import ResultsError

    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.1, schedule="cosine")
    mask = fixed_mask(small_net())
    ckpt = tmp_path / "checkpoint.pt"
    train(small_net(), toy, cfg, seed=3, mask=mask, device="cpu", progress=False, checkpoint=ckpt, end_epoch=2)
    kw = {"cfg": cfg, "seed": 3, "mask": mask, "start_epoch": 0}
    if change in ("lr", "batch_size"):
        kw["cfg"] = TrainConfig(**{**cfg.__dict__, change: {"lr": 0.5, "batch_size": 4}[change]})
    elif change == "schedule":
        kw["cfg"] = TrainConfig(**{**cfg.__dict__, "schedule": "constant"})
    elif change == "seed":
        kw["seed"] = 4
    elif change == "mask":
        kw["mask"] = {n: ~m for n, m in mask.items()}
    elif change == "no mask":
        kw["mask"] = None
    else:
        kw["start_epoch"] = 1
    before = ckpt.read_bytes()
    with pytest.raises(ResultsError, match=r"written by a training with other settings .*delete it"):
        train(small_net(), toy, kw.pop("cfg"), device="cpu", progress=False, checkpoint=ckpt, **kw)
    assert ckpt.read_bytes() == before


def test_resume_at_the_last_epoch_trains_nothing_and_still_evaluates(toy, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, schedule="constant")
    ckpt = tmp_path / "ckpt.pt"
    net = small_net()
    first = train(net, toy, cfg, seed=0, device="cpu", progress=False, checkpoint=ckpt)
    again_net = small_net(seed=5)
    again = train(again_net, toy, cfg, seed=0, device="cpu", progress=False, checkpoint=ckpt)
    assert again.epochs_run == 0
    assert states_equal(state(again_net), state(net))
    assert again.final == first.final
    # The run's loop time spans its interruptions: the checkpoint carries the time of the epochs before it.
    saved = torch.load(ckpt, weights_only=False)["seconds"]
    assert 0 < saved <= first.seconds and again.seconds >= saved


def test_same_seed_same_result_different_seed_different_result(toy):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, schedule="constant")
    runs = {}
    for key, seed in (("a", 0), ("b", 0), ("c", 1)):
        net = small_net()
        train(net, toy, cfg, seed=seed, device="cpu", progress=False, eval_splits=())
        runs[key] = state(net)
    assert states_equal(runs["a"], runs["b"])
    assert not states_equal(runs["a"], runs["c"])


def test_data_order_is_fixed_by_seed_and_epoch(toy):
    data = DeviceData(toy.train, toy, torch.device("cpu"))

    def order(seed, epoch):
        return torch.cat([x[:, 0] for x, _, _ in data.epoch_batches(8, seed, epoch)])

    assert torch.equal(order(0, 0), order(0, 0))
    assert not torch.equal(order(0, 0), order(1, 0))
    assert not torch.equal(order(0, 0), order(0, 1))
    # An epoch is a permutation of the split; evaluation order is the stored order.
    assert torch.equal(order(0, 0).sort().values, toy.train.x[:, 0].sort().values)
    ev = torch.cat([x[:, 0] for x, _, _ in data.epoch_batches(8, 0, 0, train=False)])
    assert torch.equal(ev, toy.train.x[:, 0])


# ------------------------------------------------------------------------------------------ schedules


def test_lr_multistep_by_hand():
    cfg = TrainConfig(epochs=10, lr=0.1, schedule="multistep", milestones=(3, 6), gamma=0.1)
    got = [lr_at(cfg, e) for e in (0, 2.99, 3, 5.5, 6, 9.9)]
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)


def test_lr_cosine_by_hand():
    cfg = TrainConfig(epochs=10, lr=0.2, schedule="cosine")
    assert lr_at(cfg, 0) == pytest.approx(0.2)
    assert lr_at(cfg, 2.5) == pytest.approx(0.1 * (1 + math.sqrt(0.5)))
    assert lr_at(cfg, 5) == pytest.approx(0.1)
    assert lr_at(cfg, 10) == pytest.approx(0.0, abs=1e-15)


def test_lr_warmup_then_cosine_by_hand():
    cfg = TrainConfig(epochs=10, lr=1.0, schedule="cosine", warmup_epochs=2)
    # Linear warm-up from lr/10 to lr over 2 epochs, then cosine over the remaining 8.
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 1) == pytest.approx(0.55)
    assert lr_at(cfg, 2) == pytest.approx(1.0)
    assert lr_at(cfg, 6) == pytest.approx(0.5)
    assert lr_at(cfg, 10) == pytest.approx(0.0, abs=1e-15)


def test_lr_warmup_from_a_later_epoch_by_hand():
    # A retraining from θ2 with one warm-up epoch: lr/10 at epoch 2, lr at 3, then cosine over the last 7.
    cfg = TrainConfig(epochs=10, lr=1.0, schedule="cosine", warmup_epochs=3, warmup_start=2)
    assert [lr_at(cfg, e) for e in (2, 2.5, 3)] == pytest.approx([0.1, 0.55, 1.0])
    assert lr_at(cfg, 6.5) == pytest.approx(0.5)
    # Not part of a run's identity at its default (hashes of earlier runs stay valid), part of it otherwise.
    assert "warmup_start" not in TrainConfig(epochs=10).identity()
    assert cfg.identity()["warmup_start"] == 2
    with pytest.raises(ValueError, match=r"warmup_start must be .*\[0, 3\)"):
        TrainConfig(epochs=10, warmup_epochs=3, warmup_start=3).validate()


def test_lr_warmup_then_multistep_and_constant():
    cfg = TrainConfig(epochs=10, lr=1.0, schedule="multistep", milestones=(5,), warmup_epochs=1)
    assert [lr_at(cfg, e) for e in (0, 0.5, 1, 4.9, 5)] == pytest.approx([0.1, 0.55, 1.0, 1.0, 0.1])
    const = TrainConfig(epochs=4, lr=0.3, schedule="constant")
    assert {lr_at(const, e) for e in (0, 1.5, 4)} == {0.3}


def test_training_uses_the_schedule(toy):
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.1, schedule="multistep", milestones=(1, 2), gamma=0.5)
    res = train(small_net(), toy, cfg, seed=0, device="cpu", progress=False, eval_splits=())
    # Each row's lr is the rate its epoch started with (the decays at epochs 1 and 2 show in those epochs' rows).
    assert [r["lr"] for r in res.history] == pytest.approx([0.1, 0.05, 0.025])


def test_bad_train_configs_raise_naming_the_valid_choices():
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        TrainConfig(optimizer="rmsprop").validate()
    with pytest.raises(ValueError, match="constant, multistep, cosine"):
        TrainConfig(schedule="linear").validate()
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=2).validate()
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0).validate()


# ------------------------------------------------------------------------------------------ augmentation


def test_random_crop_by_hand():
    x = (torch.arange(9, dtype=torch.float32) + 1).view(1, 1, 3, 3).repeat(3, 1, 1, 1)  # [[1,2,3],[4,5,6],[7,8,9]]
    offsets = torch.tensor([[0, 0], [1, 1], [2, 2]])
    out = random_crop(x, offsets, pad=1)
    assert out.shape == (3, 1, 3, 3)
    assert out[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
    assert out[1, 0].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]  # centre offset = identity
    assert out[2, 0].tolist() == [[5, 6, 0], [8, 9, 0], [0, 0, 0]]
    # Rows and columns are independent: offset (0, 2) shifts down and left.
    assert random_crop(x[:1], torch.tensor([[0, 2]]), 1)[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]


def test_random_crop_handles_channels_independently():
    x = torch.stack([torch.ones(2, 2), 2 * torch.ones(2, 2)]).unsqueeze(0)  # [1, 2, 2, 2]
    out = random_crop(x, torch.tensor([[2, 2]]), pad=1)
    assert out[0, 0].tolist() == [[1, 0], [0, 0]] and out[0, 1].tolist() == [[2, 0], [0, 0]]


def test_gpu_path_pieces_run_on_cpu_bf16_autocast_augmentation_and_channels_last_masks():
    """The GPU path's code (bf16 autocast, batched crop/flip of uint8 images, masks in the weight's memory
    format) also runs on CPU; pruned weights stay exactly zero under autocast."""
    from ballot_lib.data import DataBundle, Split
    from ballot_lib.models import build_model
    from ballot_lib.pruning import magnitude_mask
    from ballot_lib.training import MaskEnforcer, TrainConfig, train

    gen = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
                     torch.randint(0, 10, (n,), generator=gen))

    bundle = DataBundle("synthetic", split(128), split(32), split(32), 10, [str(i) for i in range(10)],
                        mean=(0.5,) * 3, std=(0.25,) * 3, augment=True)
    net = build_model("cnn", bundle.input_shape, 10)
    mask = magnitude_mask(net, 0.1)
    res = train(net, bundle, TrainConfig(epochs=1, batch_size=32), seed=0, mask=mask, device="cpu", amp=True,
                progress=False)
    named = dict(net.named_parameters())
    assert all(bool((named[n][~m] == 0).all()) for n, m in mask.items())
    assert 0.0 <= res.final["val"]["acc"] <= 1.0
    cl = build_model("cnn", bundle.input_shape, 10).to(memory_format=torch.channels_last)
    enforcer = MaskEnforcer(cl, magnitude_mask(cl, 0.1))
    assert all(p.stride() == m.stride() for p, m in zip(enforcer.params, enforcer.masks))


def test_experiment_amp_reaches_every_training_and_is_checked(tmp_path, monkeypatch):
    """``Experiment.amp`` (e.g. fp32 on CUDA) is passed to train() by train_net, which every method trains through;
    None keeps train()'s default; it is not part of a run's identity; a non-bool is a ParameterError."""
    from ballot_lib import experiment as E
    from ballot_lib.checks import ParameterError

    seen = []
    monkeypatch.setattr(E, "train", lambda *a, **k: seen.append(k["amp"]))
    exp = make_experiment(tmp_path)
    run = exp.store.run(exp.run_config("dense", {}, 0))
    exp.train_net(exp.new_model(), run, 0)
    exp.amp = False
    exp.train_net(exp.new_model(), run, 0)
    assert seen == [None, False]
    assert exp.run_config("dense", {}, 0) == make_experiment(tmp_path).run_config("dense", {}, 0)
    with pytest.raises(ParameterError, match="amp"):
        E.Experiment(exp.data, exp.model, exp.train, device="cpu", amp="yes")


def test_checkpoints_at_most_every_n_seconds_and_the_result_does_not_depend_on_it(toy, tmp_path, monkeypatch):
    """On CUDA a checkpoint per epoch can cost a large share of a run: checkpoint_every spaces them out in time.
    Interrupted and resumed from whichever epoch its checkpoint holds, the run ends with the same weights."""
    import ballot_lib.training as T

    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.1)
    ref_net = small_net()
    train(ref_net, toy, cfg, seed=0, device="cpu", progress=False)
    writes = []
    real_save = T.atomic_torch_save
    monkeypatch.setattr(T, "atomic_torch_save", lambda obj, path: (writes.append(obj["epoch"]), real_save(obj, path)))
    ckpt = tmp_path / "c.pt"
    # Never due within the run: no checkpoint at all (a killed run would start again from the beginning).
    train(small_net(), toy, cfg, seed=0, device="cpu", progress=False, checkpoint=ckpt, end_epoch=3,
          checkpoint_every=1e9)
    assert writes == [] and not ckpt.exists()
    # Every 10 s of a clock that advances 4 s per reading: some epochs only.
    clock = iter(range(0, 10_000, 4))
    with monkeypatch.context() as m:
        m.setattr(T.time, "perf_counter", lambda: float(next(clock)))
        train(small_net(), toy, cfg, seed=0, device="cpu", progress=False, checkpoint=ckpt, end_epoch=3,
              checkpoint_every=10)
    assert 0 < len(writes) < 3, writes
    last = writes[-1]
    resumed_net = small_net(seed=99)
    resumed = train(resumed_net, toy, cfg, seed=0, device="cpu", progress=False, checkpoint=ckpt)
    assert resumed.epochs_run == 4 - last
    assert all(torch.equal(a, b) for a, b in zip(ref_net.state_dict().values(), resumed_net.state_dict().values()))


def test_checkpoint_interval_defaults_by_device_and_its_variable_is_checked(monkeypatch):
    from ballot_lib.training import CHECKPOINT_ENV, checkpoint_interval

    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    assert checkpoint_interval(torch.device("cpu")) == 0.0
    assert checkpoint_interval(torch.device("cuda")) == 60.0
    monkeypatch.setenv(CHECKPOINT_ENV, "300")
    assert checkpoint_interval(torch.device("cpu")) == 300.0
    assert checkpoint_interval(torch.device("cpu"), 5) == 5.0
    monkeypatch.setenv(CHECKPOINT_ENV, "often")
    with pytest.raises(ValueError, match=r"\$BALLOT_CHECKPOINT_EVERY_S must be a number of seconds >= 0, got 'often'"):
        checkpoint_interval(torch.device("cpu"))
    monkeypatch.setenv(CHECKPOINT_ENV, "-1")
    with pytest.raises(ValueError, match=r"BALLOT_CHECKPOINT_EVERY_S must be >= 0"):
        checkpoint_interval(torch.device("cpu"))

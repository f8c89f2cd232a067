#!/usr/bin/env python
"""Training-loop benchmark for ballot_lib (a benchmark script, not a test).

Two measurements, both on synthetic CIFAR-sized data (uint8 images 3x32x32, 10 classes; nothing is downloaded):

1. **Masked / dense training-step time.** N optimiser steps of the library's own training loop
   (:func:`ballot_lib.training.train`: on-device batching and augmentation, forward, backward,
   ``MaskEnforcer.apply_grads``, optimiser step, ``MaskEnforcer.apply_weights``) with a global magnitude mask at
   density 0.1, against the same loop without a mask, from the same initial weights. Dense and masked runs are
   interleaved (order alternating per repeat) after a warm-up; the figure is the median over repeats of the
   loop's wall time (``TrainResult.seconds``: the epoch loop only, which ends in a host-device sync).
   Target: ratio <= 1.05.

2. **Epoch throughput, library path vs a plain torchvision-style loop.**
   (a) library: ``train()`` with the split resident on the device, batched on-device crop+flip, bf16 autocast and
   channels_last on CUDA (fp32 on CPU), batch 128 by default;
   (b) baseline, the authors' style: a torchvision-CIFAR10-like Dataset of uint8 HWC images turned into PIL images
   and transformed per sample (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), a
   ``DataLoader(batch_size=32, shuffle=True, num_workers=2)``, fp32, default memory format, ``.to(device)`` per
   batch and ``loss.item()`` per step. Images/s of each and the speed-up. Target: >= 5x on a GPU.

Run ``python benchmarks/bench_training.py --help`` for the options; ``--device cpu --quick`` finishes in a few
minutes on two CPU cores, ``--device cuda`` runs the full measurement on a GPU.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

try:
    import ballot_lib  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ballot_lib.data import DataBundle, Split
from ballot_lib.models import build_model
from ballot_lib.pruning import magnitude_mask
from ballot_lib.training import MaskEnforcer, TrainConfig, resolve_device, train

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # as ballot_lib.data.real
RATIO_TARGET = 1.05
SPEEDUP_TARGET = 5.0

# Default optimiser steps per timed run of measurement 1, per device kind and model (--steps overrides).
# On CPU a CIFAR resnet18 step at batch 128 takes ~3 s on two cores, so it gets very few steps there.
RATIO_STEPS = {
    "cuda": {"default": 100},
    "cuda-quick": {"default": 50},
    "cpu": {"default": 20, "resnet18": 3, "resnet50": 2, "vgg16_bn": 3},
    "cpu-quick": {"default": 10, "resnet18": 2, "resnet50": 1, "vgg16_bn": 2},
}


# ------------------------------------------------------------------------------------------ helpers


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def synthetic_images(n: int, num_classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random uint8 images [n, 3, 32, 32] and labels in [0, num_classes)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return x, y


def make_bundle(x: torch.Tensor, y: torch.Tensor, num_classes: int = 10) -> DataBundle:
    """A CIFAR-like DataBundle (augmentation on: crop padding 4 + flip) around the given train tensors."""
    tiny = Split(x[:8].clone(), y[:8].clone())
    return DataBundle(name="synthetic_cifar", train=Split(x, y), val=tiny, test=tiny, num_classes=num_classes,
                      class_names=[str(c) for c in range(num_classes)], mean=CIFAR10_MEAN, std=CIFAR10_STD,
                      augment=True, crop_padding=4, flip=True)


def train_cfg(batch_size: int) -> TrainConfig:
    # The optimiser's work per step does not depend on lr; a modest constant lr keeps random-label training finite.
    return TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                       schedule="constant")


def library_seconds(net, bundle: DataBundle, batch_size: int, dev: torch.device, mask=None, seed: int = 0) -> float:
    """Wall time of one epoch of ``ballot_lib.training.train`` over ``bundle.train`` (the loop only)."""
    sync(dev)
    res = train(net, bundle, train_cfg(batch_size), seed=seed, mask=mask, device=dev, eval_splits=(),
                progress=False)
    sync(dev)
    return res.seconds


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def warn_if_loaded(when: str) -> None:
    load = load_average()
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"    warning: 1-min load average {load:.1f} on {os.cpu_count()} CPUs at {when} of the run; other "
              f"processes compete for the CPU, so timings (CPU ones above all) are noisy", flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------ measurement 1


def enforcer_cost(base, mask, dev: torch.device, iters: int) -> tuple[float, bool]:
    """Seconds per step of ``apply_grads`` + ``apply_weights`` alone, with the net laid out as ``train()`` does.

    Also returns whether every mask has the strides of its parameter: ``torch._foreach_mul_`` only takes its fused
    CUDA fast path when corresponding tensors share sizes *and* strides (ATen ForeachUtils.h).
    """
    net = copy.deepcopy(base).to(dev)
    if dev.type == "cuda":  # train() puts conv nets in channels_last on CUDA before building its MaskEnforcer
        net.to(memory_format=torch.channels_last)
    enf = MaskEnforcer(net, mask)
    same_strides = all(p.stride() == m.stride() for p, m in zip(enf.params, enf.masks))
    for p in net.parameters():
        p.grad = torch.ones_like(p)  # same layout as autograd's gradients (they follow the parameter's strides)
    for _ in range(3):
        enf.apply_grads()
        enf.apply_weights()
    best = float("inf")
    for _ in range(5):  # the best of 5 blocks: robust to other load on the machine
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(iters):
            enf.apply_grads()
            enf.apply_weights()
        sync(dev)
        best = min(best, (time.perf_counter() - t0) / iters)
    return best, same_strides


def bench_mask_ratio(model: str, dev: torch.device, batch_size: int, steps: int, warmup: int, repeats: int,
                     density: float) -> dict:
    torch.manual_seed(0)
    base = build_model(model, (3, 32, 32), 10)
    mask = magnitude_mask(base, density)
    x, y = synthetic_images(steps * batch_size, seed=1)
    bundle = make_bundle(x, y)
    warm = make_bundle(x[:warmup * batch_size], y[:warmup * batch_size])

    def run(masked: bool, data: DataBundle, seed: int) -> float:
        net = copy.deepcopy(base)
        return library_seconds(net, data, batch_size, dev, mask if masked else None, seed=seed)

    run(False, warm, 0)
    run(True, warm, 0)
    times = {"dense": [], "masked": []}
    for r in range(repeats):
        order = ("dense", "masked") if r % 2 == 0 else ("masked", "dense")
        for kind in order:
            times[kind].append(run(kind == "masked", bundle, r))
    d, ms = median(times["dense"]), median(times["masked"])
    enf_s, same_strides = enforcer_cost(base, mask, dev, iters=100 if dev.type == "cuda" else 5)
    ratio_min = min(times["masked"]) / min(times["dense"])
    return {
        "model": model, "batch_size": batch_size, "steps": steps, "repeats": repeats, "warmup_steps": warmup,
        "density": sum(int(t.sum()) for t in mask.values()) / sum(t.numel() for t in mask.values()),
        "mask_tensors": len(mask),
        "dense_s_per_step": d / steps, "masked_s_per_step": ms / steps, "ratio": ms / d,
        "ratio_of_minima": ratio_min,
        "enforcer_s_per_step": enf_s, "ratio_from_enforcer_cost": 1 + enf_s / (d / steps),
        "mask_strides_match_params": same_strides,
        "dense_seconds": times["dense"], "masked_seconds": times["masked"],
        "target": RATIO_TARGET, "meets_target": ms / d <= RATIO_TARGET,
    }


# ------------------------------------------------------------------------------------------ measurement 2


class PILImageDataset(torch.utils.data.Dataset):
    """Like ``torchvision.datasets.CIFAR10``: uint8 HWC images, each turned into a PIL image and transformed."""

    def __init__(self, data_hwc: np.ndarray, targets: list[int], transform):
        self.data, self.targets, self.transform = data_hwc, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def baseline_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    ds = PILImageDataset(x.permute(0, 2, 3, 1).contiguous().numpy(), y.tolist(), tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)


def baseline_epoch(net, opt, loader, dev: torch.device, max_images: int | None) -> tuple[float, int]:
    """One (possibly truncated) epoch of a plain fp32 loop; returns (seconds, images). Worker start-up included."""
    net.train()
    seen, running_loss = 0, 0.0
    sync(dev)
    t0 = time.perf_counter()
    it = iter(loader)
    for xb, yb in it:
        xb, yb = xb.to(dev), yb.to(dev)
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running_loss += loss.item()  # the usual per-step host-device sync of this style of loop
        seen += len(yb)
        if max_images is not None and seen >= max_images:
            break
    sync(dev)
    seconds = time.perf_counter() - t0
    del it  # shut the workers down outside the timed region
    return seconds, seen


def bench_throughput(model: str, dev: torch.device, n_images: int, batch_size: int, base_batch: int, workers: int,
                     max_images: int | None, warmup_steps: int, repeats: int) -> dict:
    x, y = synthetic_images(n_images, seed=2)
    lib_images = n_images if max_images is None else min(max_images, n_images)
    lib_bundle = make_bundle(x[:lib_images], y[:lib_images])
    warm = min(warmup_steps * batch_size, n_images)
    warm_bundle = make_bundle(x[:warm], y[:warm])

    # (a) library path
    torch.manual_seed(0)
    net = build_model(model, (3, 32, 32), 10)
    library_seconds(net, warm_bundle, batch_size, dev, seed=0)  # warm-up (also moves the net to the device)
    lib_times = [library_seconds(net, lib_bundle, batch_size, dev, seed=r + 1) for r in range(repeats)]
    lib_s = median(lib_times)
    del net
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    # (b) plain baseline
    torch.manual_seed(0)
    net = build_model(model, (3, 32, 32), 10).to(dev)
    cfg = train_cfg(base_batch)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = baseline_loader(x, y, base_batch, workers)
    baseline_epoch(net, opt, loader, dev, max_images=warmup_steps * base_batch)  # warm-up
    base_runs = [baseline_epoch(net, opt, loader, dev, max_images) for _ in range(repeats)]
    base_s = median([s for s, _ in base_runs])
    base_images = base_runs[0][1]

    lib_ips, base_ips = lib_images / lib_s, base_images / base_s
    speedup = lib_ips / base_ips
    return {
        "model": model, "images_per_pass": {"library": lib_images, "baseline": base_images},
        "full_epoch": max_images is None, "dataset_images": n_images,
        "library": {"batch_size": batch_size, "amp_bf16": dev.type == "cuda", "channels_last": dev.type == "cuda",
                    "seconds": lib_times, "images_per_s": lib_ips},
        "baseline": {"batch_size": base_batch, "num_workers": workers, "seconds": [s for s, _ in base_runs],
                     "images_per_s": base_ips},
        "speedup": speedup, "target": SPEEDUP_TARGET,
        "meets_target": speedup >= SPEEDUP_TARGET if dev.type == "cuda" else None,
    }


# ------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    p.add_argument("--models", default="cnn,resnet18",
                   help="comma-separated models for measurement 1 (default: cnn,resnet18)")
    p.add_argument("--throughput-models", default=None,
                   help="comma-separated models for measurement 2 (default: cnn,resnet18 on CUDA, cnn on CPU)")
    p.add_argument("--batch-size", type=int, default=128, help="library batch size (default: 128)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps per timed run of measurement 1 (default: per device/model, see RATIO_STEPS)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 10 on CUDA, 1 on CPU)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per measurement, median taken (default: 5 on CUDA, 3 on CPU)")
    p.add_argument("--density", type=float, default=0.1, help="mask density of measurement 1 (default: 0.1)")
    p.add_argument("--n-images", type=int, default=10_000, help="synthetic train images (default: 10000)")
    p.add_argument("--throughput-steps", type=int, default=None,
                   help="measurement 2 over steps x batch-size images (both paths) instead of a full epoch "
                        "(default: full epoch on CUDA, 50 on CPU)")
    p.add_argument("--baseline-batch-size", type=int, default=32, help="baseline DataLoader batch (default: 32)")
    p.add_argument("--workers", type=int, default=2, help="baseline DataLoader num_workers (default: 2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--only", choices=("ratio", "throughput"), default=None, help="run one measurement only")
    p.add_argument("--quick", action="store_true", help="short settings (CPU: a few minutes on two cores)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when a target is missed (the speed-up target only counts on CUDA)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    steps_table = RATIO_STEPS[("cuda" if cuda else "cpu") + ("-quick" if args.quick else "")]
    warmup = max(1, args.warmup if args.warmup is not None else (10 if cuda else 1))
    repeats = args.repeats if args.repeats is not None else (5 if cuda and not args.quick else 3)
    tp_repeats = args.repeats if args.repeats is not None else (3 if cuda and not args.quick else 1)
    tp_steps = args.throughput_steps if args.throughput_steps is not None else (None if cuda else 50)
    models = [m for m in args.models.split(",") if m]
    tp_models = [m for m in (args.throughput_models or ("cnn,resnet18" if cuda else "cnn")).split(",") if m]

    dev_name = torch.cuda.get_device_name(dev) if cuda else f"cpu ({platform.processor() or platform.machine()})"
    env = {"device": str(dev), "device_name": dev_name, "torch": torch.__version__,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
           "quick": args.quick, "load_average_1min": load_average()}
    print(f"ballot_lib training benchmark | device {dev} ({dev_name}) | torch {torch.__version__} | "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs | quick={args.quick}")
    warn_if_loaded("start")
    out = {"env": env, "mask_ratio": [], "throughput": []}

    if args.only in (None, "ratio"):
        print(f"\n[1] masked (magnitude, density {args.density}) / dense time of N steps of ballot_lib.training.train"
              f" | batch {args.batch_size} | median of {repeats} | target <= {RATIO_TARGET}")
        print(f"    {'model':<10}{'steps':>6}{'dense s/step':>14}{'masked s/step':>15}{'ratio':>8}  target"
              f"{'ratio(min)':>12}{'enforcer ms/step':>18}{'1+enf/dense':>13}{'mask strides=param':>20}")
        for model in models:
            steps = args.steps or steps_table.get(model, steps_table["default"])
            r = bench_mask_ratio(model, dev, args.batch_size, steps, warmup, repeats, args.density)
            out["mask_ratio"].append(r)
            print(f"    {model:<10}{steps:>6}{r['dense_s_per_step']:>14.4f}{r['masked_s_per_step']:>15.4f}"
                  f"{r['ratio']:>8.3f}  {'met   ' if r['meets_target'] else 'MISSED'}{r['ratio_of_minima']:>12.3f}"
                  f"{1e3 * r['enforcer_s_per_step']:>18.3f}{r['ratio_from_enforcer_cost']:>13.3f}"
                  f"{'yes' if r['mask_strides_match_params'] else 'NO':>20}", flush=True)
        print("    ratio = median masked / median dense loop time; ratio(min) = the same with minima (robust to other"
              " load);\n    enforcer ms/step = apply_grads + apply_weights timed alone; 1+enf/dense = the ratio it"
              " implies; mask strides=param: NO means torch._foreach_mul_ leaves its fused CUDA fast path.")

    if args.only in (None, "throughput"):
        span = "full epoch" if tp_steps is None else f"{tp_steps} x {args.batch_size} images (part of an epoch)"
        print(f"\n[2] training throughput, library GPU path vs plain torchvision DataLoader loop | "
              f"{args.n_images} synthetic 3x32x32 images, {span} | median of {tp_repeats}")
        print(f"    library : train(), data on {dev.type}, batched crop+flip on device, batch {args.batch_size}, "
              + ("bf16 autocast + channels_last" if cuda else "fp32 (no autocast/channels_last on CPU)"))
        print(f"    baseline: PIL + torchvision.transforms, DataLoader(batch_size={args.baseline_batch_size}, "
              f"shuffle=True, num_workers={args.workers}), fp32, loss.item() per step")
        print(f"    {'model':<10}{'library img/s':>15}{'baseline img/s':>16}{'speed-up':>10}  target >= {SPEEDUP_TARGET:g}x"
              + ("" if cuda else " (applies to GPUs only; not judged on CPU)"))
        max_images = None if tp_steps is None else tp_steps * args.batch_size
        for model in tp_models:
            r = bench_throughput(model, dev, args.n_images, args.batch_size, args.baseline_batch_size, args.workers,
                                 max_images, warmup_steps=max(3, warmup), repeats=tp_repeats)
            out["throughput"].append(r)
            verdict = ("met" if r["meets_target"] else "MISSED") if cuda else "n/a on CPU"
            print(f"    {model:<10}{r['library']['images_per_s']:>15.1f}{r['baseline']['images_per_s']:>16.1f}"
                  f"{r['speedup']:>9.2f}x  {verdict}", flush=True)
        if not cuda:
            print("    note: the >= 5x target is for a GPU (device-resident data, bf16, channels_last); on CPU both "
                  "paths are compute-bound and the figure is informative only.")

    env["load_average_1min_end"] = load_average()
    warn_if_loaded("end")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")
    if args.check:
        missed = [r["model"] for r in out["mask_ratio"] if not r["meets_target"]]
        missed += [r["model"] for r in out["throughput"] if r["meets_target"] is False]
        return 1 if missed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the results store at the scale of Prune Responsibly: a synthetic store of 10,000 complete pruned runs.

Paganini studied over 100K pruned models; notebook 04's full parameter files ask for 10,000 per dataset. This
benchmark builds a store of ``--runs`` complete pruned runs (plus one dense run per seed) with realistic files —
the exact configuration of each run (so folder names are real hashes), ``metrics.json`` for val and test with
per-class recalls, a 10-epoch ``history.json``, ``summary.json`` with per-layer densities, and a real ``mask.pt``
of the technique for the model — and times what a notebook or the batch runner does with it:

1. ``load_results`` — the tidy DataFrame of every run (one row per run and split);
2. ``Run.complete`` for every configuration of the grid (hash the configuration, look for ``summary.json``);
3. the grid's skip of finished runs: ``run_grid`` over the whole population when every run is complete (each run
   is loaded and checked instead of retrained);
4. the analyses: the configuration front (``population.pareto_table``), the 3-objective front and hypervolume of
   all runs, the technique re-evaluation and the Welch tests;
5. the mask file format: one ResNet-18 and one ResNet-50 mask (this repo's CIFAR-shaped builders, prunable weights
   only) saved and loaded in ``save_mask``'s two formats, plain (a dict of bool tensors, 1 byte per weight: the
   default) and bit-packed (``BALLOT_MASK_FORMAT=packed``): file size, and the median save and load time
   over ``--mask-repeats`` repeats (each write atomic with fsync, as a run writes it; loads check the shapes).

Usage:
    python benchmarks/bench_store.py --runs 10000 --root /tmp/bench_store   # builds once, then times
    python benchmarks/bench_store.py --runs 10000 --classes 100             # CIFAR-100-like metrics files
    python benchmarks/bench_store.py --masks-only --root /tmp/bench_store   # only the mask file format (5.)

The model is the embedded digits MLP (so masks can be checked against a real model without any download); the
metric values are random but well-formed. Timings are wall-clock and CPU seconds on the machine it runs on.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ballot_lib import pareto, population  # noqa: E402
from ballot_lib.experiment import experiment_from_params  # noqa: E402
from ballot_lib.methods import Variant, make_config, run_grid  # noqa: E402
from ballot_lib.methods.base import config_dict  # noqa: E402
from ballot_lib.methods.prune_responsibly import TECHNIQUES, technique_mask  # noqa: E402
from ballot_lib.models import build_model  # noqa: E402
from ballot_lib.pruning import (density as mask_density, layer_densities, load_mask, magnitude_mask,  # noqa: E402
                                save_mask)
from ballot_lib.results import atomic_torch_save, load_results  # noqa: E402

RETRAIN = 10


def grid_shape(runs: int) -> tuple[list[float], list[int]]:
    """Densities (20) and seeds so that 5 techniques x densities x seeds = ``runs``."""
    densities = [round(float(d), 4) for d in np.geomspace(0.9, 0.01, 20)]
    seeds = list(range(max(1, runs // (len(TECHNIQUES) * len(densities)))))
    return densities, seeds


def _metrics(rng: np.random.Generator, classes: int, quality: float) -> dict:
    out = {}
    for split in ("val", "test"):
        acc_c = np.clip(rng.normal(quality, 0.08, classes), 0, 1)
        acc = float(acc_c.mean())
        out[split] = {"acc": acc, "cwv": float(((acc_c - acc) ** 2).mean()), "mcd": float(acc_c.max() - acc_c.min()),
                      **{f"acc_class_{c}": float(a) for c, a in enumerate(acc_c)}}
    return out


def _history(rng: np.random.Generator, classes: int, epochs: int) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "lr": 0.05, "train_loss": float(rng.random()), "train_acc": float(rng.random())}
        for split in ("val", "test"):
            acc_c = rng.random(classes)
            row.update({f"{split}_acc": float(acc_c.mean()), f"{split}_cwv": float(acc_c.var()),
                        f"{split}_mcd": float(acc_c.max() - acc_c.min()),
                        **{f"{split}_acc_class_{c}": float(a) for c, a in enumerate(acc_c)}})
        rows.append(row)
    return rows


def _write(folder: Path, config: dict, metrics: dict, history: list, summary: dict,
           mask_file: Path | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    (folder / "history.json").write_text(json.dumps(history, indent=1, sort_keys=True))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    if mask_file is not None:
        shutil.copyfile(mask_file, folder / "mask.pt")
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


def experiment(root: Path):
    return experiment_from_params(dataset="digits_lt", model="mlp", epochs=30, results_dir=str(root),
                                  device="cpu", progress=False)


def build(root: Path, runs: int, classes: int) -> int:
    """Write the synthetic store; returns the number of run folders."""
    exp = experiment(root)
    densities, seeds = grid_shape(runs)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = exp.new_model()
    masks = {(t, d): technique_mask(t, net, make_config(t, density=d, retrain_epochs=RETRAIN), 0)
             for t in TECHNIQUES for d in densities}
    # Each distinct mask is written once by save_mask (the file a run writes), then copied into the
    # run folders that use it (no fsync per run: the build stays about as fast as with plain torch.save).
    mask_files = {key: save_mask(m, root / "mask_files" / f"{key[0]}_{key[1]}.pt") for key, m in masks.items()}
    n = 0
    for seed in seeds:
        cfg = exp.run_config("dense", {}, seed)
        run = exp.store.run(cfg)
        _write(run.path, run.config, _metrics(rng, classes, 0.9), _history(rng, classes, exp.train.epochs),
               {"density": 1.0, "train_epochs": 30, "compute_epochs": 30, "seconds": 1.0})
        torch.save({k: v.clone() for k, v in net.state_dict().items()}, run.path / "thetaT.pt")
        n += 1
        for t in TECHNIQUES:
            for d in densities:
                cfg = make_config(t, density=d, retrain_epochs=RETRAIN)
                run = exp.store.run(exp.run_config(t, config_dict(cfg), seed))
                mask = masks[(t, d)]
                _write(run.path, run.config, _metrics(rng, classes, 0.5 + 0.4 * d ** 0.3),
                       _history(rng, classes, RETRAIN),
                       {"density": mask_density(mask), "density_target": d, "train_epochs": RETRAIN,
                        "compute_epochs": 30 + RETRAIN, "seconds": 1.0, "layer_density": layer_densities(mask)},
                       mask_files[(t, d)])
                n += 1
    return n


def timed(label: str, fn, results: dict):
    """Run ``fn``; record and print its wall-clock and CPU seconds (CPU time is less sensitive to other load)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    results[label] = time.perf_counter() - start
    results[label + " (cpu)"] = time.process_time() - cpu
    print(f"{label:62s} {results[label]:7.2f} s wall {results[label + ' (cpu)']:7.2f} s cpu", flush=True)
    return out


def _median_s(fn, repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mask_formats(folder: Path, repeats: int, results: dict) -> None:
    """Size, save and load time of a ResNet-18 and a ResNet-50 mask (density 0.2), bit-packed vs 1 byte/weight."""
    folder.mkdir(parents=True, exist_ok=True)
    print(f"mask files, plain (1 byte per weight) -> bit-packed; times: median of {repeats}")
    print(f"{'model':24s} {'weights':>10s} {'file MB':>17s} {'save ms':>17s} {'load ms':>17s}")
    for arch in ("resnet18", "resnet50"):
        torch.manual_seed(0)
        mask = magnitude_mask(build_model(arch, (3, 32, 32), 10), 0.2)
        shapes = {n: tuple(m.shape) for n, m in mask.items()}
        old, new = folder / f"{arch}_old_mask.pt", folder / f"{arch}_mask.pt"
        row = {
            # "old": the plain format (default, 1 byte per weight); "new": the bit-packed one
            "old save": _median_s(lambda: save_mask(mask, old, packed=False), repeats),
            "new save": _median_s(lambda: save_mask(mask, new, packed=True), repeats),
            "old load": _median_s(lambda: load_mask(old, shapes), repeats),
            "new load": _median_s(lambda: load_mask(new, shapes), repeats),
            "old bytes": old.stat().st_size, "new bytes": new.stat().st_size,
        }
        for path in (old, new):
            back = load_mask(path, shapes)
            assert all(torch.equal(back[n], mask[n]) for n in mask), path
        numel = sum(m.numel() for m in mask.values())
        results.update({f"mask {arch} {k}": v for k, v in row.items()})
        results[f"mask {arch} weights"] = numel
        print(f"{arch:24s} {numel / 1e6:9.1f}M {row['old bytes'] / 1e6:7.2f} -> {row['new bytes'] / 1e6:6.2f} "
              f"{1e3 * row['old save']:7.1f} -> {1e3 * row['new save']:6.1f} "
              f"{1e3 * row['old load']:7.1f} -> {1e3 * row['new load']:6.1f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000, help="pruned runs in the store (default 10,000)")
    ap.add_argument("--classes", type=int, default=10, help="classes in the metrics files (10 or 100)")
    ap.add_argument("--root", type=Path, default=Path("/tmp/ballot_bench_store"), help="store folder")
    ap.add_argument("--rebuild", action="store_true", help="delete and rebuild the store")
    ap.add_argument("--json", type=Path, default=None, help="also write the timings here")
    ap.add_argument("--mask-repeats", type=int, default=5, help="repeats of each mask save/load timing (default 5)")
    ap.add_argument("--masks-only", action="store_true", help="only the mask file format measurement (no store)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if args.masks_only:
        sizes_and_times: dict[str, float] = {}
        mask_formats(root / "mask_formats", args.mask_repeats, sizes_and_times)
        if args.json:
            args.json.write_text(json.dumps(sizes_and_times, indent=1))
        return 0
    marker = root / f"built_{args.runs}_{args.classes}"
    if args.rebuild and root.exists():
        shutil.rmtree(root)
    results: dict[str, float] = {}
    if not marker.exists():
        if root.exists():
            shutil.rmtree(root)
        n = timed("build the synthetic store (not part of the timings)", lambda: build(root, args.runs, args.classes),
                  {})
        marker.write_text(str(n))
    n = int(marker.read_text())
    print(f"store {root}: {n} run folders ({args.runs} pruned), {args.classes} classes")
    exp = experiment(root)
    densities, seeds = grid_shape(args.runs)
    df = timed("load_results (every run, val + test rows)", lambda: load_results(root), results)
    print(f"  -> {len(df)} rows x {df.shape[1]} columns")
    configs = [exp.run_config("dense", {}, s) for s in seeds] + [
        exp.run_config(t, config_dict(make_config(t, density=d, retrain_epochs=RETRAIN)), s)
        for s in seeds for t in TECHNIQUES for d in densities]
    done = timed("Run.complete for every configuration of the grid",
                 lambda: sum(exp.store.run(c).complete for c in configs), results)
    assert done == len(configs), (done, len(configs))
    variants = [Variant("dense", "dense")] + [Variant(t, t, {"retrain_epochs": RETRAIN}) for t in TECHNIQUES]
    grid = timed("run_grid over the finished population (skip + load + check)",
                 lambda: run_grid(exp, variants, densities, seeds, progress=False), results)
    assert grid["run_id"].nunique() == n
    table = timed("population.pareto_table (configuration front, val -> test)",
                  lambda: population.pareto_table(df), results)
    test = population.with_derived(df[(df["split"] == "test") & (df["method"] != "dense")])
    pts = test[["acc", "sparsity", "mcd"]].to_numpy(float)
    front = timed(f"pareto.non_dominated over all {len(pts)} runs (3 objectives)",
                  lambda: pareto.non_dominated(pts, [True, True, False]), results)
    timed(f"pareto.hypervolume of all runs ({int(front.sum())} on the front)",
          lambda: pareto.hypervolume(pts, [0, 0, 1], [True, True, False]), results)
    timed("pareto.non_dominated over all runs (2 objectives: acc, mcd)",
          lambda: pareto.non_dominated(pts[:, [0, 2]], [True, False]), results)
    timed("population.technique_reevaluation (per-seed fronts + HV)",
          lambda: population.technique_reevaluation(df), results)
    timed("population.hurt_classes (Welch t-tests + BH)", lambda: population.hurt_classes(df), results)
    print(f"  -> {int(table['on_front'].sum())} of {len(table)} configurations on the val front")
    mask_formats(root / "mask_formats", args.mask_repeats, results)
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "classes": args.classes, "folders": n, **results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

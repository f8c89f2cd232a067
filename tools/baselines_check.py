"""Issue #9's checks of the two baselines, and FairScratch's λ sweep on adult (CPU, a few minutes).

    python tools/baselines_check.py RESULTS_DIR [--sweep-only]

1. ``safecompress`` and ``fairscratch`` on ``digits`` and ``adult`` with the mlp at densities 0.1 and 0.03
   (seed 0, 5 epochs): kept weights against round(d·N) and per tensor, the second call loads the stored run,
   ``load_results`` lists both names, and the declared compute of every registered method.
2. FairScratch λ ∈ {0, 0.02, 0.05, 0.1, 0.5} on adult (density 0.1, seeds 0-4, 5 epochs, batch 512): accuracy,
   DP and EO gaps on test with paired differences against λ = 0 (Student-t 95 % CI over seeds).
"""
from __future__ import annotations

import sys
import time

import pandas as pd

from ballot_lib.analysis import paired
from ballot_lib.experiment import experiment_from
from ballot_lib.methods import METHODS, run_method
from ballot_lib.methods.base import compute_epochs
from ballot_lib.results import load_results


def experiment(results: str, dataset: str):
    return experiment_from({"dataset": dataset, "model": "mlp", "epochs": 5,
                            "batch_size": 512 if dataset == "adult" else 64, "lr": 0.05, "device": "cpu",
                            "results_dir": results, "progress": False})


def checks(results: str) -> None:
    for dataset in ("digits", "adult"):
        exp = experiment(results, dataset)
        for method in ("safecompress", "fairscratch"):
            for d in (0.1, 0.03):
                t0 = time.perf_counter()
                res = run_method(exp, method, 0, density=d)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                again = run_method(exp, method, 0, density=d)
                second = time.perf_counter() - t0
                n = sum(m.numel() for m in res.mask.values())
                kept = sum(int(m.sum()) for m in res.mask.values())
                per_tensor = sum(round(d * m.numel()) for m in res.mask.values())
                extra = ""
                if method == "safecompress":
                    extra = (f" updates={res.summary['topology_updates']} chosen random/gradient="
                             f"{res.summary['chosen_random']}/{res.summary['chosen_gradient']}")
                print(f"{dataset:6s} {method:12s} d={d:<5} kept={kept} round(dN)={round(d * n)} "
                      f"Σround(d·n_l)={per_tensor} N={n} test acc={res.metrics['test']['acc']:.4f} "
                      f"compute={res.summary['compute_epochs']} first={first:.1f}s second={second:.2f}s "
                      f"same run={again.id == res.id}{extra}")
    df = load_results(results)
    print("load_results methods:", sorted(df["method"].unique()))
    exp = experiment(results, "digits")
    for name in METHODS.names():
        print(f"compute_epochs {name:20s} {compute_epochs(exp, name, **({} if name == 'dense' else {'density': 0.1}))}"
              f"  (train.epochs = {exp.train.epochs})")


def sweep(results: str, lambdas=(0.0, 0.02, 0.05, 0.1, 0.5), seeds=range(5)) -> pd.DataFrame:
    exp = experiment(results, "adult")
    for lam in lambdas:
        for s in seeds:
            run_method(exp, "fairscratch", s, density=0.1, fairness_weight=lam)
    df = load_results(results)
    df = df[(df["method"] == "fairscratch") & (df["dataset"] == "adult") & (df["density_target"] == 0.1)
            & (df["train.epochs"] == 5)].copy()
    df["variant"] = [f"λ={w:g}" for w in df["method_cfg.fairness_weight"]]
    metrics = ["acc", "dp_gap", "eo_gap", "group_acc_gap"]
    test = df[df["split"] == "test"]
    print("\nFairScratch on adult, mlp, density 0.1, 5 epochs, batch 512, seeds", list(seeds))
    print(test.groupby("variant")[metrics].agg(["mean", "std"]).round(4).to_string())
    rows = [paired(df, f"λ={lam:g}", "λ=0", metrics) for lam in lambdas if lam != 0]
    table = pd.concat(rows, ignore_index=True)
    print("\npaired differences vs λ=0 (test):")
    print(table.round(4).to_string(index=False))
    return table


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "results"
    if "--sweep-only" not in sys.argv:
        checks(root)
    sweep(root)

"""Why digits_lt/cnn collapses at density 0.05 in notebook 03's smoke recipe: LTH rewound to θ0 vs θ1.

Trains the dense cnn and LTH (one level, density 0.05) rewound to θ0 and to θ1 (late rewinding) for seeds 0-4,
with notebook 03's recipe (SGD lr 0.1, momentum 0.9, wd 5e-4, cosine, batch 32) at 20 and 40 epochs, and prints
the test accuracies (about 2 min on one CPU thread):

    OMP_NUM_THREADS=1 python tools/collapse_probe.py [--epochs 20 40] [--seeds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from ballot_lib.experiment import experiment_from_params
from ballot_lib.methods import run_method


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, nargs="+", default=[20, 40])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--density", type=float, default=0.05)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("epochs | rewind | seed | dense acc | LTH acc")
    for epochs in a.epochs:
        with tempfile.TemporaryDirectory() as tmp:
            exp = experiment_from_params(dataset="digits_lt", model="cnn", epochs=epochs, batch_size=32, lr=0.1,
                                         weight_decay=5e-4, schedule="cosine", device="cpu", results_dir=tmp,
                                         progress=False)
            for seed in a.seeds:
                dense = run_method(exp, "dense", seed).metrics["test"]["acc"]
                for k in (0, 1):
                    acc = run_method(exp, "lth", seed, density=a.density, rewind_epoch=k).metrics["test"]["acc"]
                    print(f"{epochs} | θ{k} | {seed} | {dense:.3f} | {acc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Measure how the Ballot engine fixes (issue "Ballot engine") changed notebook 02's comparison numbers.

Runs the same Ballot configurations (the val-chosen option per dataset that papers/ballot.md reported, at the
notebook-02 smoke recipes) with the code on ``PYTHONPATH`` and writes the test rows to a CSV; run it once with
the current library and once with the old one (a ``git worktree`` of the commit before the fix), then
``compare`` pairs them by (dataset, density, seed):

    python tools/ballot_engine_change.py run  --out outputs/engine/new.csv [--baselines]
    BALLOT_SRC=/tmp/old python tools/ballot_engine_change.py run --out outputs/engine/old.csv
    python tools/ballot_engine_change.py compare outputs/engine/old.csv outputs/engine/new.csv [outputs/engine/new.csv]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# BALLOT_SRC=<checkout> runs another checkout's library (the editable install's import hook would win over
# PYTHONPATH, so it is removed first).
if os.environ.get("BALLOT_SRC"):
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["BALLOT_SRC"])

import numpy as np
import pandas as pd

#: dataset -> (epochs, batch size, the option notebook 02 chose on val for it)
SETTINGS = {
    "digits_lt": (30, 32, {"budgets": "none"}),
    "digits_s": (30, 32, {"eta": 0.0}),
    "adult": (10, 256, {"vote_fraction": 0.3}),
}
DENSITIES = [0.2, 0.05, 0.02]
SEEDS = [0, 1, 2, 3, 4]


def run(out: Path, store: Path, baselines: bool, datasets: list[str]) -> None:
    import torch

    from ballot_lib.experiment import experiment_from_params
    from ballot_lib.methods import Variant, run_grid

    torch.set_num_threads(1)
    frames = []
    for ds in datasets:
        epochs, batch, opts = SETTINGS[ds]
        exp = experiment_from_params(dataset=ds, model="mlp", epochs=epochs, batch_size=batch, lr=0.05,
                                     schedule="cosine", device="cpu", results_dir=str(store), progress=False)
        variants = [Variant("Ballot", "ballot", dict(opts))]
        if baselines:
            variants += [Variant("MP", "mp", {}), Variant("LTH", "lth", {})]
        df = run_grid(exp, variants, DENSITIES, SEEDS, progress=False)
        df = df[df["split"] == "test"].copy()
        df["dataset"] = ds
        frames.append(df[["dataset", "variant", "density_target", "seed", "acc", "cwv", "mcd"]])
        print(f"[engine] {ds} done", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames).to_csv(out, index=False)


def t_ci(d: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    m = float(d.mean())
    if len(d) < 2 or d.std(ddof=1) == 0:
        return m, m, m
    h = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return m, m - h, m + h


def compare(old: Path, new: Path) -> str:
    a, b = pd.read_csv(old), pd.read_csv(new)
    a, b = a[a["variant"] == "Ballot"], b[b["variant"] == "Ballot"]
    key = ["dataset", "density_target", "seed"]
    m = a.merge(b, on=key, suffixes=("_old", "_new"))
    lines = ["| dataset | density | Ballot before (acc / CWV / MCD) | after | Δ acc (pts) | Δ CWV | Δ MCD (pts) |",
             "|---|---|---|---|---|---|---|"]
    for (ds, d), g in m.groupby(["dataset", "density_target"], sort=False):
        cells = []
        for met, scale, fmt in (("acc", 100, "{:+.1f}"), ("cwv", 1, "{:+.4f}"), ("mcd", 100, "{:+.1f}")):
            diff = (g[f"{met}_new"] - g[f"{met}_old"]).to_numpy() * scale
            mean, lo, hi = t_ci(diff)
            bold = "**" if (lo > 0 or hi < 0) else ""
            cells.append(f"{bold}{fmt.format(mean)}{bold} [{fmt.format(lo)}, {fmt.format(hi)}]")
        before = f"{g['acc_old'].mean():.3f} / {g['cwv_old'].mean():.4f} / {g['mcd_old'].mean():.3f}"
        after = f"{g['acc_new'].mean():.3f} / {g['cwv_new'].mean():.4f} / {g['mcd_new'].mean():.3f}"
        lines.append(f"| {ds} | {d:g} | {before} | {after} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versus(new: Path) -> str:
    df = pd.read_csv(new)
    lines = ["| dataset | density | vs | Ballot (acc / CWV / MCD) | Δ acc (pts) | Δ CWV | Δ MCD (pts) |",
             "|---|---|---|---|---|---|---|"]
    for (ds, d), g in df.groupby(["dataset", "density_target"], sort=False):
        bal = g[g["variant"] == "Ballot"].set_index("seed")
        for base in ("MP", "LTH"):
            other = g[g["variant"] == base].set_index("seed")
            if other.empty:
                continue
            cells = []
            for met, scale, fmt, better in (("acc", 100, "{:+.1f}", 1), ("cwv", 1, "{:+.4f}", -1),
                                            ("mcd", 100, "{:+.1f}", -1)):
                diff = ((bal[met] - other[met]) * scale).dropna().to_numpy()
                mean, lo, hi = t_ci(diff)
                wins = int((np.sign(diff) == better).sum())
                bold = "**" if (lo > 0 or hi < 0) else ""
                cells.append(f"{bold}{fmt.format(mean)}{bold} [{fmt.format(lo)}, {fmt.format(hi)}] {wins}/{len(diff)}")
            lines.append(f"| {ds} | {d:g} | {base} | {bal['acc'].mean():.3f} / {bal['cwv'].mean():.4f} / "
                         f"{bal['mcd'].mean():.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--store", type=Path, default=None)
    r.add_argument("--baselines", action="store_true")
    r.add_argument("--datasets", nargs="*", default=list(SETTINGS))
    c = sub.add_parser("compare")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "run":
        run(a.out, a.store or a.out.with_suffix(".store"), a.baselines, a.datasets)
    else:
        print(compare(a.old, a.new))
        print()
        print(versus(a.new))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Choose Ballot's default options on the pooled val split of every embedded setting (issue: notebook 03).

Runs each candidate option set on every (dataset, model) pair of the embedded data (conv models on image data
only), at two densities and five seeds, then applies :func:`ballot_lib.comparison.choose_on_val` (per seed, the
mean over settings of val accuracy and val MCD; among candidates within 1 point of the best pooled val accuracy,
the lowest pooled val MCD). Prints the val table, the choice, and how every candidate does on test per setting.

    python tools/choose_ballot_defaults.py --store outputs/defaults/results --out outputs/defaults
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

CANDIDATES = {
    "default (taylor, veto, lth)": {},
    "conflict=none": {"conflict": "none"},
    "score=agreement": {"score": "agreement"},
    "budgets=erk": {"budgets": "erk"},
    "gamma=3": {"gamma": 3.0},
}
RECIPES = {"digits_lt": dict(epochs=20, batch_size=32, lr=0.1), "digits_s": dict(epochs=20, batch_size=32, lr=0.1),
           "adult": dict(epochs=5, batch_size=512, lr=0.05)}
MODELS = ["mlp", "cnn"]
DENSITIES = [0.2, 0.05]
SEEDS = [0, 1, 2, 3, 4]


def main(argv=None) -> int:
    import torch

    from ballot_lib import comparison as C
    from ballot_lib.analysis import markdown_table
    from ballot_lib.methods import Variant, prepare_grid, run_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="*", default=SEEDS)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    variants = [Variant(name, "ballot", opts) for name, opts in CANDIDATES.items()]
    params = {"optimizer": "sgd", "schedule": "cosine", "results_dir": str(a.store), "device": "cpu",
              "progress": False}
    settings = C.settings_for(list(RECIPES), MODELS, params, RECIPES)
    frames = []
    for ds, model, exp in settings:
        prepare_grid(exp, variants, DENSITIES)
        frames.append(run_grid(exp, variants, DENSITIES, a.seeds, progress=False))
        print(f"[defaults] {ds}/{model} done", flush=True)
    df = pd.concat(frames, ignore_index=True)
    choice, table = C.choose_on_val(df, list(CANDIDATES), eps=0.01)
    test = (df[df["split"] == "test"].groupby(["dataset", "model", "density_target", "variant"])[["acc", "mcd"]]
            .mean().reset_index())
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / "rows.csv", index=False)
    text = ["## Pooled val choice", "", markdown_table(table.round(4)), "", f"chosen: **{choice}** = "
            f"{json.dumps(CANDIDATES[choice])}", "", "## Test, per setting", "", markdown_table(test.round(4))]
    (a.out / "choice.md").write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

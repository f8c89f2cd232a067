"""Choose a method's default options on the pooled val split of embedded settings (Ballot: notebook 03's issue;
FairScratch: its fairness weight λ).

Runs each candidate option set of ``--method`` on every (dataset, model) pair of ``--datasets`` x ``--models``
(conv models on image data only), at ``--densities`` and ``--seeds``, then applies
:func:`ballot_lib.comparison.choose_on_val` (per seed, the mean over settings of val accuracy and val MCD; among
candidates within 1 point of the best pooled val accuracy, the lowest pooled val MCD). Prints and writes
(``<out>/choice.md``, ``<out>/rows.csv``) the val table, the choice, and how every candidate does on test per
setting — test is reported, never used to choose.

    python tools/choose_defaults.py ballot --store outputs/defaults/results --out outputs/defaults
    python tools/choose_defaults.py fairscratch --store outputs/defaults/results --out outputs/defaults_fairscratch
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

def ballot_candidates() -> dict[str, dict]:
    """The library's Ballot default (labelled from ``BallotConfig``'s own defaults, so the label cannot go stale
    when a default changes) and one alternative per option: the other conflict rule, agreement score, ERK
    budgets, γ = 3."""
    from ballot_lib.methods.ballot import BallotConfig, CONFLICTS

    d = BallotConfig(density=0.5)
    other_conflict = next(c for c in CONFLICTS if c != d.conflict)
    return {
        f"default ({d.score}, conflict={d.conflict}, budgets={d.budgets})": {},
        f"conflict={other_conflict}": {"conflict": other_conflict},
        "score=agreement": {"score": "agreement"},
        "budgets=erk": {"budgets": "erk"},
        "gamma=3": {"gamma": 3.0},
    }


CANDIDATES = {
    "ballot": ballot_candidates(),
    "fairscratch": {f"lambda={w:g}": {"fairness_weight": w} for w in (0.0, 0.02, 0.05, 0.1, 0.2)},
}
RECIPES = {"digits_lt": dict(epochs=20, batch_size=32, lr=0.1), "digits_s": dict(epochs=20, batch_size=32, lr=0.1),
           "adult": dict(epochs=5, batch_size=512, lr=0.05)}


def main(argv=None) -> int:
    import torch

    from ballot_lib import comparison as C
    from ballot_lib.analysis import markdown_table
    from ballot_lib.methods import Variant, prepare_grid, run_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=sorted(CANDIDATES))
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--datasets", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.2, 0.05])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    candidates = CANDIDATES[a.method]
    variants = [Variant(name, a.method, opts) for name, opts in candidates.items()]
    params = {"optimizer": "sgd", "schedule": "cosine", "results_dir": str(a.store), "device": "cpu",
              "progress": False}
    settings = C.settings_for(a.datasets, a.models, params, RECIPES)
    frames = []
    for ds, model, exp in settings:
        prepare_grid(exp, variants, a.densities)
        frames.append(run_grid(exp, variants, a.densities, a.seeds, progress=False))
        print(f"[defaults] {a.method} {ds}/{model} done", flush=True)
    df = pd.concat(frames, ignore_index=True)
    choice, table = C.choose_on_val(df, list(candidates), eps=0.01)
    metrics = [m for m in ("acc", "mcd", "cwv", "dp_gap", "eo_gap") if m in df]
    test = (df[df["split"] == "test"].groupby(["dataset", "model", "density_target", "variant"])[metrics]
            .mean().reset_index())
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / "rows.csv", index=False)
    text = [f"## {a.method}: pooled val choice ({len(settings)} settings, densities {a.densities}, seeds {a.seeds})",
            "", markdown_table(table.round(4)), "", f"chosen: **{choice}** = {json.dumps(candidates[choice])}", "",
            "## Test, per setting (reported, not used to choose)", "", markdown_table(test.round(4))]
    (a.out / "choice.md").write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

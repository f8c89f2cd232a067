"""Ballot on an accelerator against Ballot on the CPU (issue #7's device check; part of benchmarks/gpu_check.sh).

Three measurements, printed as tables and written as JSON with ``--json``:

1. **Engine on identical inputs.** The same voting epochs (random gradient pairs and weights in the shapes of
   ``--engine-model``'s prunable tensors) go through :class:`ballot_lib.methods.ballot.VoteTally` on the CPU and
   on ``--device``, for the default tally and the ablation's variants (veto, per-layer pool, ERK budgets). Votes
   must be equal entry for entry, summed scores equal to float64 rounding, and the masks identical (overlap 1.0).
   Random continuous inputs have no ties, so any difference is the device's arithmetic or ranking.
2. **End to end, one seed.** dense, LTH and Ballot (library defaults) trained on the CPU and on ``--device``
   from the same seed, each device in its own store: the overlap of the two Ballot masks, beside the overlap of the
   two LTH masks (how far the device's training numerics alone move a magnitude mask of the same density). Run
   twice on the accelerator: the default path (bf16 autocast on CUDA) and fp32 (autocast and TF32 off). Target
   (issue #7): Ballot's overlap >= 0.99; when it misses, LTH's overlap says whether training numerics or the
   engine moved the mask.
3. **Ballot's non-training time on the device**: (wall - train) / train of its ``run_method`` call, and its votes
   taken during the dense run as a share of its training time.

On a machine without an accelerator ``--device cpu`` compares the CPU with itself (every overlap 1.0): a check
that the script runs, e.g. ``python benchmarks/ballot_devices.py --device cpu --epochs 2``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    import ballot_lib  # noqa: F401
except ImportError:  # run from a checkout without the editable install (e.g. the GPU machine's python3)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ballot_lib.experiment import experiment_from_params
from ballot_lib.methods.base import make_config, prepare_method, run_method
from ballot_lib.methods.ballot import TallyConfig, VoteTally, mask_from_votes, normalize_dim0
from ballot_lib.models import ModelConfig, build_model
from ballot_lib.pruning import overlap, prunable_names
from ballot_lib.training import sync_device as sync

#: The tallies of measurement 1: Ballot's defaults and the options notebook 02's ablation varies.
#: issue #7: Ballot's CPU and GPU masks of one seed must overlap at least this much
OVERLAP_TARGET = 0.99
ENGINE_TALLIES = {
    "default": TallyConfig(density=0.1),
    "veto": TallyConfig(density=0.1, conflict="veto"),
    "layer": TallyConfig(density=0.1, scope="layer", budgets="none"),
    "erk": TallyConfig(density=0.1, budgets="erk"),
    "signed": TallyConfig(density=0.1, score="signed", eta=0.5),
}


def engine_check(model: str, num_classes: int, in_shape: tuple, dev: torch.device, epochs: int, seed: int
                 ) -> list[dict]:
    net = build_model(ModelConfig(name=model), in_shape, num_classes)
    names = prunable_names(net)
    shapes = {n: p.shape for n, p in net.named_parameters() if n in names}
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(epochs):
        ga = {n: torch.randn(sh, generator=gen) for n, sh in shapes.items()}
        gf = {n: torch.randn(sh, generator=gen) for n, sh in shapes.items()}
        w = {n: torch.randn(sh, generator=gen) * 0.05 for n, sh in shapes.items()}
        inputs.append((ga, gf, w))

    def count(tcfg: TallyConfig, d: torch.device) -> tuple[dict, dict, float]:
        """The tally's votes and summed scores over ``inputs`` on ``d``, and the seconds it took."""
        tally = VoteTally(tcfg, shapes, d)
        sync(d)
        t0 = time.perf_counter()
        for ga, gf, w in inputs:
            a = {n: normalize_dim0(g.to(d)) for n, g in ga.items()}
            f = {n: normalize_dim0(g.to(d)) for n, g in gf.items()}
            wd = {n: t.to(d) for n, t in w.items()}
            tally.add(a, f, wd, tcfg.per_tensor(wd, names))
        sync(d)
        return (*tally.shaped(), time.perf_counter() - t0)

    rows = []
    for label, tcfg in ENGINE_TALLIES.items():
        (v_c, t_c, s_c), (v_d, t_d, s_d) = count(tcfg, torch.device("cpu")), count(tcfg, dev)
        m_c = mask_from_votes(v_c, t_c, tcfg.density, scope=tcfg.scope)
        m_d = mask_from_votes(v_d, t_d, tcfg.density, scope=tcfg.scope)
        rows.append({
            "tally": label, "entries": sum(sh.numel() for sh in shapes.values()), "epochs": epochs,
            "votes_differ": int(sum(int((v_c[n] != v_d[n]).sum()) for n in names)),
            "total_max_rel": float(max(float(((t_c[n] - t_d[n]).abs() / t_c[n].abs().clamp_min(1e-300)).max())
                                       for n in names)),
            "mask_overlap": overlap(m_c, m_d), "cpu_s": s_c, "device_s": s_d,
        })
    return rows


def train_three(args, device: str, store: Path, amp: bool = True) -> dict:
    """dense, LTH and Ballot (library defaults) for one seed on ``device`` into ``store``; fp32 on CUDA when ``amp``
    is False (the library's default there is bf16 autocast)."""
    exp = experiment_from_params(dataset=args.dataset, model=args.model, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, schedule="cosine", device=device,
                                 results_dir=str(store), progress=False)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if not amp:
        exp.amp = False
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        prepare_method(exp, "ballot", make_config("ballot", density=args.density))  # votes ride the dense run
        dev = torch.device(device)
        sync(dev)
        t0 = time.perf_counter()
        run_method(exp, "dense", args.seed)
        sync(dev)
        t_dense = time.perf_counter() - t0
        lth = run_method(exp, "lth", args.seed, density=args.density)
        sync(dev)
        t0 = time.perf_counter()
        ballot = run_method(exp, "ballot", args.seed, density=args.density)
        sync(dev)
        wall = time.perf_counter() - t0
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {"lth": lth, "ballot": ballot, "ballot_wall": wall, "dense_wall": t_dense}


def compare(ref: dict, g: dict, path: str) -> dict:
    """Masks and metrics of the device's run ``g`` against the CPU reference ``ref``; the device's cost split."""
    train_s = float(g["ballot"].summary.get("seconds", float("nan")))
    votes_s = float(g["ballot"].summary.get("vote_seconds", float("nan")))
    return {
        "path": path,
        "ballot_overlap": overlap(ref["ballot"].mask, g["ballot"].mask),
        "lth_overlap": overlap(ref["lth"].mask, g["lth"].mask),
        "ballot_test_acc": (ref["ballot"].metrics["test"]["acc"], g["ballot"].metrics["test"]["acc"]),
        "ballot_test_mcd": (ref["ballot"].metrics["test"]["mcd"], g["ballot"].metrics["test"]["mcd"]),
        "device_ballot_wall_s": g["ballot_wall"], "device_ballot_train_s": train_s,
        "device_ballot_other_share": (g["ballot_wall"] - train_s) / train_s if train_s > 0 else float("nan"),
        "device_votes_s": votes_s, "device_votes_share": votes_s / train_s if train_s > 0 else float("nan"),
        "device_dense_wall_s": g["dense_wall"],
    }


def end_to_end(args, dev: torch.device, root: Path, on_row=None) -> list[dict]:
    """The CPU reference, then each device path; ``on_row(rows)`` after each path (the JSON is saved there)."""
    ref = train_three(args, "cpu", root / "cpu")
    rows = [compare(ref, train_three(args, str(dev), root / "device_default"),
                    "default (bf16 autocast on CUDA)" if dev.type == "cuda" else f"default ({dev})")]
    if on_row:
        on_row(rows)
    if dev.type == "cuda":
        rows.append(compare(ref, train_three(args, str(dev), root / "device_fp32", amp=False),
                            "fp32 (autocast and TF32 off)"))
        if on_row:
            on_row(rows)
    return rows


def save(out: dict, path: "str | None") -> None:
    """Write the results so far to ``path`` atomically (after each part: a time-out keeps what finished)."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str) + "\n")
    tmp.replace(path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="the accelerator compared with the CPU (default: cuda)")
    p.add_argument("--engine-model", default="resnet18", help="shapes of measurement 1 (default: resnet18)")
    p.add_argument("--engine-epochs", type=int, default=3, help="voting epochs of measurement 1 (default: 3)")
    p.add_argument("--dataset", default="digits_lt", help="measurement 2's embedded dataset (default: digits_lt)")
    p.add_argument("--model", default="mlp", help="measurement 2's model (default: mlp)")
    p.add_argument("--epochs", type=int, default=20, help="measurement 2's dense epochs (default: 20)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated: engine, e2e")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("ballot_devices: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"Ballot CPU vs {dev} ({name}) | torch {torch.__version__} | seed {args.seed}", flush=True)
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"device": name, "torch": torch.__version__, "args": vars(args)}
    save(out, args.json)
    if "engine" not in skip:
        rows = engine_check(args.engine_model, 10, (3, 32, 32), dev, args.engine_epochs, args.seed)
        out["engine"] = rows
        save(out, args.json)
        print(f"\n[1] engine on identical inputs ({args.engine_model} shapes, {args.engine_epochs} voting epochs)"
              " | target: votes equal, overlap 1.0")
        print(f"    {'tally':8s} {'entries':>10s} {'votes differ':>12s} {'total rel err':>13s} {'overlap':>8s}"
              f" {'cpu s':>7s} {'dev s':>7s}")
        for r in rows:
            print(f"    {r['tally']:8s} {r['entries']:10d} {r['votes_differ']:12d} {r['total_max_rel']:13.2e} "
                  f"{r['mask_overlap']:8.5f} {r['cpu_s']:7.2f} {r['device_s']:7.2f}")
    if "e2e" not in skip:
        def partial(rows):
            out["end_to_end"] = list(rows)
            save(out, args.json)

        with tempfile.TemporaryDirectory(prefix="ballot-devices-") as tmp:
            rows = end_to_end(args, dev, Path(tmp), on_row=partial)
        out["end_to_end"] = rows
        print(f"\n[2] end to end: {args.dataset}/{args.model}, {args.epochs} epochs, density {args.density}, "
              f"seed {args.seed} | target: Ballot overlap >= {OVERLAP_TARGET}")
        print(f"    {'path':34s} {'Ballot ovl':>10s} {'LTH ovl':>8s} {'acc cpu/dev':>13s} {'MCD cpu/dev':>13s}")
        for r in rows:
            verdict = "met" if r["ballot_overlap"] >= OVERLAP_TARGET else "MISSED"
            print(f"    {r['path']:34s} {r['ballot_overlap']:10.4f} {r['lth_overlap']:8.4f} "
                  f"{r['ballot_test_acc'][0]:.3f}/{r['ballot_test_acc'][1]:.3f} "
                  f"{r['ballot_test_mcd'][0]:.3f}/{r['ballot_test_mcd'][1]:.3f}  {verdict}")
        print(f"\n[3] Ballot's run on {dev}: non-training time / training time | target <= 0.10")
        for r in rows:
            print(f"    {r['path']:34s} wall {r['device_ballot_wall_s']:.2f} s, train {r['device_ballot_train_s']:.2f}"
                  f" s, other/train {r['device_ballot_other_share']:.3f}; votes in the dense run "
                  f"{r['device_votes_s']:.2f} s = {r['device_votes_share']:.2f}x its training")
    if args.json:
        save(out, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("BALLOT_PROGRESS", "none")
    sys.exit(main())

"""Pruning cards: one page per selected pruned model, in Markdown and HTML (Prune Responsibly; SPEC §7).

In the spirit of model cards (Mitchell et al. 2019), a pruning card reports what an engineer needs to accept an
operating point: the dense reference, the technique and its schedule, the global and per-layer density, the
seeds and runs behind the numbers, overall, per-class (and per-group) metrics with their changes against the
dense model of the same seed and 95 % CIs over seeds, the front the model was chosen from (a PNG saved next to
the card) and the selection rule.

Cards are written to ``<results_dir>/cards/<name>.md`` and ``.html``; both are rendered from the same blocks, so
they say the same thing.

Example:
    >>> table = population.pareto_table(df)                         # doctest: +SKIP
    >>> row, rule = population.select(table, "epsilon", max_acc_drop=0.02)
    >>> write_card(df, row, table, rule, results_dir="results")     # {'md': ..., 'html': ..., 'png': ...}
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from .analysis import class_columns, metric_range
from .metrics import mean_ci, paired_difference
from .paths import results_root
from .population import disparity_column, front_markdown, with_derived

#: Section titles every card has, in order (checked by the tests).
SECTIONS = ("Dense reference", "Technique and schedule", "Density", "Seeds and runs", "Overall metrics",
            "Per-class metrics", "The front it was chosen from", "Selection rule")
OVERALL = (("acc", "accuracy", False), ("cwv", "CWV", True), ("mcd", "MCD", True),
           ("worst_class_acc", "worst-class recall", False), ("group_acc_gap", "max group accuracy gap", True),
           ("worst_group_acc", "worst-group accuracy", False), ("dp_gap", "DP gap", True), ("eo_gap", "EO gap", True))


def _num(x: float, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.2f}" if pct else f"{x:.4f}"


def _mean_pm(values: Sequence[float], pct: bool = True) -> str:
    mean, half, _, n = mean_ci(list(values))
    if n == 0:
        return "n/a"
    return _num(mean, pct) + ("" if math.isnan(half) else f" ± {_num(half, pct)}")


def _delta(res: dict, pct: bool = True) -> str:
    if res["n"] == 0:
        return "n/a"
    s = ("+" if res["diff"] >= 0 else "") + _num(res["diff"], pct)
    if res["n"] >= 2 and not math.isnan(res["ci_low"]):
        s += f" [{_num(res['ci_low'], pct)}, {_num(res['ci_high'], pct)}]"
    return s + (" *" if res["significant"] else "")


def _table(rows: list[dict]) -> tuple[str, list[dict]]:
    return ("table", rows)


def _runs(df: pd.DataFrame, key: str, technique: str, density_target: float) -> pd.DataFrame:
    sel = df[df[key] == technique]
    if technique != "dense":
        sel = sel[np.isclose(sel["density_target"].astype(float), float(density_target))]
    return sel


def _paired_rows(pruned: pd.DataFrame, dense: pd.DataFrame, columns: Sequence[tuple[str, str, bool]],
                 overall_delta_by_seed: Optional[pd.Series] = None) -> list[dict]:
    rows = []
    for col, label, lower in columns:
        if col not in pruned or pruned[col].isna().all():
            continue
        pct = col != "cwv"
        a = dict(zip(pruned["seed"], pruned[col]))
        b = dict(zip(dense["seed"], dense[col]))
        res = paired_difference(a, b, lower_is_better=lower, value_range=metric_range(col))
        row = {"metric": label, "dense": _mean_pm(dense[col], pct), "pruned": _mean_pm(pruned[col], pct),
               "change vs dense (paired, 95% CI)": _delta(res, pct),
               "seeds better": f"{res['wins']}/{len(set(a) & set(b))}"}
        if overall_delta_by_seed is not None:
            delta = {s: a[s] - b[s] for s in set(a) & set(b)}
            exc = {s: delta[s] - overall_delta_by_seed[s] for s in delta}
            row["excess δ_c − δ"] = _mean_pm(list(exc.values()), pct)
        rows.append(row)
    return rows


def card_blocks(df: pd.DataFrame, choice: pd.Series, table: pd.DataFrame, rule: str,
                results_dir: Optional[str | Path] = None, front_png: Optional[str] = None,
                class_names: Optional[Sequence[str]] = None, group_names: Optional[Sequence[str]] = None,
                split: Optional[str] = None) -> list[tuple]:
    """The card's content as blocks (``("h1"|"h2"|"p", text)``, ``("table", rows)``, ``("img", src, alt)``)."""
    key = table.attrs.get("key", "method")
    split = split or table.attrs.get("report_split", "test")
    disp = table.attrs.get("disparity", "mcd")
    df = with_derived(df)
    d = df[df["split"] == split]
    technique, dens_t = choice[key], float(choice["density_target"])
    pruned = _runs(d, key, technique, dens_t)
    dense = _runs(d, key, "dense", 1.0)
    if pruned.empty or dense.empty:
        raise ValueError(f"no {split} runs for {technique} at density {dens_t} or for dense")
    root = results_root(results_dir)
    first = pruned.iloc[0]
    blocks: list[tuple] = [("h1", f"Pruning card — {technique} at density {dens_t:g}")]
    blocks.append(("p", f"{first.get('dataset')} / {first.get('model')}; metrics on the {split} split, mean ± 95 % "
                        f"CI (Student t) over {pruned['seed'].nunique()} seeds; changes are paired with the dense "
                        "model of the same seed; * = the CI excludes 0. Accuracies and gaps in percent, CWV raw."))
    # Dense reference.
    blocks.append(("h2", "Dense reference"))
    train_cols = sorted(c for c in d.columns if c.startswith("train."))
    recipe = ", ".join(f"{c[6:]} {first[c]}" for c in train_cols if c in first and first[c] is not None)
    blocks.append(("p", f"Dense {first.get('model')} trained from θ0 under each seed with: {recipe}. "
                        f"{split.capitalize()} accuracy {_mean_pm(dense['acc'])} %, {disp.upper()} "
                        f"{_mean_pm(dense[disparity_column(disp)[0]], disp != 'cwv')}; "
                        f"runs {', '.join(sorted(dense['run_id']))}."))
    # Technique and schedule.
    blocks.append(("h2", "Technique and schedule"))
    from .methods import METHODS

    doc = METHODS.get(technique).doc if technique in METHODS else ""
    opts = {c[len("method_cfg."):]: first[c] for c in d.columns if c.startswith("method_cfg.") and c in first
            and not (isinstance(first[c], float) and math.isnan(first[c]))}
    opts = {k: int(v) if isinstance(v, float) and v.is_integer() and k != "density" else v for k, v in opts.items()}
    retrain = opts.get("retrain_epochs")
    how = (f"retrain_epochs = {retrain}" if retrain is not None else
           "the full recipe: retrain_epochs unset, notebook 04's parameter retrain_epochs = 0")
    blocks.append(("p", f"{technique}: {doc} Options: {json.dumps(opts, default=str)}. Retraining: "
                        f"{first.get('train_epochs')} epochs from θT ({how}); compute = {first.get('compute_epochs')} "
                        "epochs in total including the dense training."))
    # Density.
    blocks.append(("h2", "Density"))
    blocks.append(("p", f"Requested density {dens_t:g}; achieved {pruned['density'].mean():.4f} (sparsity "
                        f"{1 - pruned['density'].mean():.4f}) over all prunable weights."))
    layer_rows = []
    per_layer: dict[str, list[float]] = {}
    for rid in pruned["run_id"]:
        f = root / "runs" / rid / "summary.json"
        if f.is_file():
            for name, v in (json.loads(f.read_text()).get("layer_density") or {}).items():
                per_layer.setdefault(name, []).append(float(v))
    for name, vals in per_layer.items():
        layer_rows.append({"layer": name, "density (mean over seeds)": f"{np.mean(vals):.4f}"})
    blocks.append(_table(layer_rows) if layer_rows else ("p", "Per-layer densities were not recorded."))
    # Seeds and runs.
    blocks.append(("h2", "Seeds and runs"))
    blocks.append(("p", f"Seeds {sorted(int(s) for s in pruned['seed'])}; pruned runs "
                        f"{', '.join(sorted(pruned['run_id']))} (folders under {root / 'runs'})."))
    # Overall metrics.
    blocks.append(("h2", "Overall metrics"))
    blocks.append(_table(_paired_rows(pruned, dense, OVERALL)))
    # Per class.
    blocks.append(("h2", "Per-class metrics"))
    overall_delta = {s: a - b for s, a, b in zip(pruned["seed"], pruned["acc"],
                                                 dense.set_index("seed").loc[pruned["seed"], "acc"])}
    cols = class_columns(d)
    names = list(class_names) if class_names else [c.rsplit("_", 1)[1] for c in cols]
    blocks.append(("p", "Recall per class; the excess change δ_c − δ is the class's change minus the overall "
                        "accuracy change (negative: the class pays more than the model as a whole)."))
    blocks.append(_table(_paired_rows(pruned, dense, [(c, f"class {n}", False) for c, n in zip(cols, names)],
                                      overall_delta_by_seed=pd.Series(overall_delta))))
    gcols = class_columns(d, "acc_group_")
    if gcols and d[gcols].notna().any().any():
        blocks.append(("h2", "Per-group metrics"))
        gnames = list(group_names) if group_names else [c.rsplit("_", 1)[1] for c in gcols]
        blocks.append(_table(_paired_rows(pruned, dense, [(c, f"group {n}", False) for c, n in zip(gcols, gnames)],
                                          overall_delta_by_seed=pd.Series(overall_delta))))
    # Front.
    blocks.append(("h2", "The front it was chosen from"))
    if front_png:
        blocks.append(("img", front_png, "Pareto front of the population"))
    blocks.append(("p", f"Configurations on the front over (accuracy ↑, sparsity ↑, {disp.upper()}) computed on "
                        f"the {table.attrs.get('select_split', 'val')} split ({int(table['on_front'].sum())} of "
                        f"{len(table)} configurations), reported on {split}:"))
    blocks.append(("md", front_markdown(table)))
    # Rule.
    blocks.append(("h2", "Selection rule"))
    blocks.append(("p", rule))
    blocks.append(("p", "The operationalisation of Prune Responsibly used here is a reconstruction from the paper's "
                        "abstract (see papers/prune_responsibly.md)."))
    return blocks


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}")
        elif kind == "h2":
            out.append(f"## {b[1]}")
        elif kind == "p":
            out.append(b[1])
        elif kind == "table":
            out.append(_md_table(b[1]))
        elif kind == "md":
            out.append(b[1])
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


def _html_md_table(text: str) -> str:
    """A GitHub Markdown table (as written by :func:`ballot_lib.analysis.markdown_table`) as HTML."""
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if not re.match(r"^\|(-+\|)+$", ln)]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(blocks: list[tuple], title: str = "Pruning card") -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
             "img{max-width:100%}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "table":
            parts.append(_html_md_table(_md_table(b[1])) if b[1] else "<p>(none)</p>")
        elif kind == "md":
            parts.append(_html_md_table(b[1]))
        elif kind == "img":
            parts.append(f"<img src='{html.escape(b[1])}' alt='{html.escape(b[2])}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_card(df: pd.DataFrame, choice: pd.Series, table: pd.DataFrame, rule: str,
               results_dir: Optional[str | Path] = None, name: Optional[str] = None,
               selected: Optional[dict] = None, **kwargs: Any) -> dict[str, Path]:
    """Write the card of ``choice`` (a row of ``table``, chosen by ``rule``) as Markdown and HTML.

    The front figure (:func:`ballot_lib.plots.pareto_front`, with ``selected`` starred, default: this choice) is
    saved as ``<name>_front.png`` next to the card. Returns the paths ``{"md", "html", "png"}``.
    """
    from . import plots
    from .results import _atomic_write

    key = table.attrs.get("key", "method")
    name = name or f"{choice[key]}_d{float(choice['density_target']):g}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    folder = results_root(results_dir) / "cards"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}_front.png"
    import matplotlib.pyplot as plt

    fig = plots.pareto_front(table, selected=selected or {name: choice}, path=png)
    plt.close(fig)
    blocks = card_blocks(df, choice, table, rule, results_dir, front_png=png.name, **kwargs)
    md = _atomic_write(folder / f"{name}.md", lambda f: f.write(to_markdown(blocks).encode()))
    page = _atomic_write(folder / f"{name}.html", lambda f: f.write(to_html(blocks, blocks[0][1]).encode()))
    return {"md": md, "html": page, "png": png}

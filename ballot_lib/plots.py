"""Figures used by the notebooks (seaborn/matplotlib). Each returns the figure and can save it beside the results."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .analysis import class_columns

sns.set_theme(style="whitegrid", context="notebook")


def save(fig: plt.Figure, path: Optional[str | Path]) -> Optional[Path]:
    """Save ``fig`` as PNG (creating folders); no-op when ``path`` is None."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def legend_below(ax: plt.Axes, gap: float = 6.0, **kwargs):
    """Put ``ax``'s legend centred under its x-axis label, ``gap`` points below the lowest of the x tick labels
    and the label; returns the legend.

    The drop is measured on the figure as it stands and kept in points from the axes' bottom edge, so the legend
    stays clear of the label whatever the number of rows, the figure's height or the resolution it is drawn at
    (a legend anchored at a fraction of the axes height sank into the label of a short figure). Set the x label
    and ticks first; a later ``tight_layout`` makes room for the legend. ``kwargs`` go to ``Axes.legend``.
    """
    from matplotlib.transforms import offset_copy

    fig = ax.figure
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # (Agg and inline canvases have it)
    below = ax.xaxis.get_tightbbox(renderer)
    drop = gap + (ax.get_window_extent(renderer).y0 - below.y0) * 72.0 / fig.dpi if below is not None else gap
    kwargs.setdefault("loc", "upper center")
    shifted = offset_copy(ax.transAxes, fig=fig, y=-drop, units="points")  # type: ignore[arg-type]
    return ax.legend(bbox_to_anchor=(0.5, 0.0), bbox_transform=shifted, **kwargs)


def _horizontal_row_labels(ax: plt.Axes) -> None:
    """Heat-map row labels read horizontally. Seaborn sets them vertical and turns them horizontal only if they
    overlap when it draws, before the layout shrinks the axes: with two short labels (``MP @ 0.05``) they stayed
    vertical and then ran into each other."""
    ax.tick_params(axis="y", labelrotation=0)


def coinciding(data: pd.DataFrame, by: str, x: str, metrics: Sequence[str], tol: float = 1e-9) -> dict[str, str]:
    """Groups of ``by`` whose mean curves (mean of each metric per ``x``) are identical to an earlier group's:
    ``{later: earlier}``. Such curves are drawn on top of each other, and a legend must say so."""
    means = {k: g.groupby(x)[list(metrics)].mean().sort_index() for k, g in data.groupby(by, sort=False)}
    same: dict[str, str] = {}
    keys = list(means)
    for i, a in enumerate(keys):
        if a in same:
            continue
        for b in keys[i + 1:]:
            if b in same:
                continue
            A, B = means[a], means[b]
            if A.index.equals(B.index) and np.allclose(A.to_numpy(float), B.to_numpy(float), rtol=0, atol=tol,
                                                       equal_nan=True):
                same[b] = a
    return same


def _dodge(values: pd.Series, position: int, count: int, step: float = 0.035) -> pd.Series:
    """Shift x values on a log axis by a small factor per line, so that lines with equal means stay visible."""
    return values * np.exp(step * (position - (count - 1) / 2))


def metric_vs_density(df: pd.DataFrame, metrics: Sequence[str] = ("acc", "cwv", "mcd"), split: str = "test",
                      hue: str = "variant", path: Optional[str | Path] = None) -> plt.Figure:
    """One panel per metric: mean over seeds (95 % CI band) against density (log axis), one line per variant.

    Each variant has its own marker and line style, and its points sit slightly apart along the density axis (a
    few per cent), so lines with nearly equal means stay distinguishable; a variant whose mean curve is identical
    to another's in every panel is named so in the legend. The dense reference (density 1) is drawn as a
    horizontal line with its CI band.
    """
    d = df[df["split"] == split]
    dense = d[d["method"] == "dense"]
    sparse = d[d["method"] != "dense"].copy()
    order = list(dict.fromkeys(sparse[hue]))
    same = coinciding(sparse, hue, "density_target", [m for m in metrics if m in sparse])
    names = {v: (f"{v} (identical to {same[v]})" if v in same else v) for v in order}
    sparse["_x"] = sparse["density_target"]
    for i, v in enumerate(order):
        sel = sparse[hue] == v
        sparse.loc[sel, "_x"] = _dodge(sparse.loc[sel, "density_target"], i, len(order))
    sparse[hue] = sparse[hue].map(names)
    labels = [names[v] for v in order]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(data=sparse, x="_x", y=m, hue=hue, hue_order=labels, style=hue, style_order=labels,
                     markers=True, dashes=True, errorbar=("ci", 95), ax=ax)
        if len(dense):
            mu, sd = dense[m].mean(), dense[m].std(ddof=1) if len(dense) > 1 else 0.0
            ax.axhline(mu, color="k", ls="--", lw=1, label="dense")
            ax.axhspan(mu - 1.96 * sd / np.sqrt(max(len(dense), 1)), mu + 1.96 * sd / np.sqrt(max(len(dense), 1)),
                       color="k", alpha=0.08)
        ax.set_xscale("log")
        # Tick exactly the densities that were run, as plain numbers (log-axis minor labels overlap).
        ticks = sorted(sparse["density_target"].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        if ticks:
            ax.set_xlim(max(ticks) * 1.25, min(ticks) / 1.25)  # inverted: density falls to the right
        else:
            ax.invert_xaxis()
        ax.set_xlabel("density (kept fraction)")
        ax.set_ylabel(f"{split} {m.upper()}" + (" (fraction; 0.01 = 1 pt)" if m in ("acc", "mcd") else ""))
        ax.set_title(f"{m.upper()} vs density ({split})")
        if ax is not axes[0][-1]:
            leg = ax.get_legend()
            if leg:
                leg.remove()
    axes[0][-1].legend(loc="best", fontsize="small")
    fig.suptitle("mean over seeds (lines set slightly apart along density to stay visible); bands: unpaired 95 % "
                 "CI — bootstrap for the methods, normal approximation for dense (descriptive: the paired CIs decide)",
                 fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return fig


def per_class_heatmap(deltas: pd.DataFrame, title: str = "per-class recall change vs dense (pts)",
                      path: Optional[str | Path] = None) -> plt.Figure:
    """Heat map of per-class recall deltas (rows: variant @ density, columns: classes), in percentage points."""
    cols = [c for c in deltas.columns if c.startswith("class ")]
    mat = deltas.set_index(deltas["variant"] + " @ " + deltas["density"].map(lambda x: f"{x:g}"))[cols] * 100
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(cols) + 3), 0.45 * len(mat) + 1.5))
    lim = max(1.0, float(np.nanmax(np.abs(mat.to_numpy()))) if mat.size else 1.0)
    sns.heatmap(mat, cmap="RdBu", center=0, vmin=-lim, vmax=lim, annot=len(cols) <= 12, fmt=".1f", ax=ax,
                cbar_kws={"label": "Δ recall (pts)"})
    _horizontal_row_labels(ax)
    ax.set_title(title)
    ax.set_ylabel("")
    fig.tight_layout()
    save(fig, path)
    return fig


def per_class_bars(df: pd.DataFrame, split: str = "test", hue: str = "variant", title: Optional[str] = None,
                   path: Optional[str | Path] = None) -> plt.Figure:
    """Per-class recall per variant (mean over seeds with 95 % CI); the legend sits outside the bars."""
    d = df[df["split"] == split]
    cols = class_columns(d)
    long = d.melt(id_vars=[hue, "seed"], value_vars=cols, var_name="class", value_name="recall")
    long["class"] = long["class"].str.replace("acc_class_", "", regex=False)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(cols) + 2), 3.6))
    sns.barplot(data=long, x="class", y="recall", hue=hue, errorbar=("ci", 95), ax=ax)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{split} recall (per-class accuracy)")
    ax.set_xlabel("class")
    ax.set_title(title or f"per-class recall on {split}")
    ax.legend(fontsize="small", title=None, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    save(fig, path)
    return fig


def paired_forest(table: pd.DataFrame, metric: str, path: Optional[str | Path] = None,
                  title: Optional[str] = None) -> plt.Figure:
    """Forest plot of paired differences (with 95 % CI) for one metric; one row per comparison.

    Accuracy-like metrics (accuracy, MCD, group gaps) are drawn in percentage points, as the text states them.
    When every row has the same reference and density, the rows are labelled by their variant alone and the
    reference goes into the axis label; a long title is wrapped to the figure's width.
    """
    import textwrap

    from .readings import POINTS

    t = table[table["metric"] == metric].reset_index(drop=True)
    scale, unit = (100.0, " (pts)") if metric in POINTS else (1.0, "")
    t = t.assign(diff=t["diff"] * scale, ci_low=t["ci_low"] * scale, ci_high=t["ci_high"] * scale)
    one_ref = len(t) > 1 and t["b"].nunique() == 1 and ("density" not in t or t["density"].nunique() == 1)
    if one_ref:
        labels = list(t["a"].astype(str))
        where = f" @ {t['density'].iloc[0]:g}" if "density" in t else ""
        versus_text = f"variant − {t['b'].iloc[0]}{where}"
    else:
        labels = [f"{r.a} − {r.b} @ {r.density:g}" if "density" in t else f"{r.a} − {r.b}" for r in t.itertuples()]
        versus_text = "paired difference"
    longest = max((len(x) for x in labels), default=0)
    width = min(11.0, max(6.0, 3.4 + 0.085 * longest))
    fig, ax = plt.subplots(figsize=(width, 0.4 * len(t) + 1.6))
    y = np.arange(len(t))
    ax.errorbar(t["diff"], y, xerr=[t["diff"] - t["ci_low"], t["ci_high"] - t["diff"]], fmt="o", capsize=3)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(y, labels, fontsize="small" if longest > 28 else None)
    ax.invert_yaxis()
    ax.set_xlabel(f"{versus_text} in {metric.upper()}{unit}, 95% CI over seeds")
    text = title or f"paired difference in {metric.upper()}"
    ax.set_title("\n".join(textwrap.wrap(text, width=max(30, int(7.5 * width)))), fontsize="medium")
    fig.tight_layout()
    save(fig, path)
    return fig


def layer_density_bars(masks: dict[str, dict], path: Optional[str | Path] = None) -> plt.Figure:
    """Per-layer density of several masks side by side (``masks``: label -> mask)."""
    rows = []
    for label, mask in masks.items():
        for name, m in mask.items():
            rows.append({"mask": label, "layer": name, "density": float(m.float().mean())})
    d = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * d["layer"].nunique() + 2), 3.4))
    sns.barplot(data=d, x="layer", y="density", hue="mask", ax=ax)
    ax.tick_params(axis="x", rotation=45)
    for lbl in ax.get_xticklabels():
        lbl.set_horizontalalignment("right")
    fig.tight_layout()
    save(fig, path)
    return fig


#: Disparities named in words on the front figure (the others by their upper-case name: MCD, CWV).
DISPARITY_NAMES = {"worst_class": "worst-class recall", "group_gap": "group accuracy gap"}


def pareto_front(table: pd.DataFrame, split: Optional[str] = None, selected: Optional[dict] = None,
                 path: Optional[str | Path] = None) -> plt.Figure:
    """A population's configurations on ``split`` (default: the table's report split): accuracy and disparity
    against sparsity, one colour per technique; the front computed on the select split is outlined and joined,
    chosen operating points (``selected``: label -> row of the table) are starred and labelled.

    ``table`` is a :func:`ballot_lib.population.pareto_table`.
    """
    from .analysis import metric_range
    from .population import disparity_column

    disp, key = table.attrs["disparity"], table.attrs.get("key", "method")
    split = split or table.attrs["report_split"]
    col, dmax = disparity_column(disp)
    disp_name = DISPARITY_NAMES.get(disp, disp.upper())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    techniques = sorted(table[key].unique())
    palette = dict(zip(techniques, sns.color_palette("tab10", len(techniques))))
    front = table[table["on_front"]].sort_values("sparsity")
    # Labels of chosen points in the right third of the sparsities lean left, so they stay inside the axes.
    lo, hi = float(table["sparsity"].min()), float(table["sparsity"].max())
    right_of = lo + 2 / 3 * (hi - lo)
    for ax, metric, label in ((axes[0], "acc", "accuracy ↑"),
                              (axes[1], col, f"{disp_name} {'↑' if dmax else '↓'}")):
        bounds = metric_range(metric)
        for t in techniques:
            g = table[table[key] == t]
            mean, half = g[f"{split}_{metric}"], g[f"{split}_{metric}_ci"].fillna(0)
            # A bar ends where the metric does: a few seeds' t-interval can reach past 0 or 1 (an MCD of 1.15).
            low, high = (half, half) if bounds is None else \
                ((mean - (mean - half).clip(lower=bounds[0])), ((mean + half).clip(upper=bounds[1]) - mean))
            ax.errorbar(g["sparsity"], mean, yerr=[low.clip(lower=0), high.clip(lower=0)], fmt="o",
                        color=palette[t], label=t, alpha=0.8, capsize=2, ms=5)
        ax.plot(front["sparsity"], front[f"{split}_{metric}"], "-", color="k", lw=0.8, alpha=0.6)
        ax.scatter(front["sparsity"], front[f"{split}_{metric}"], s=110, facecolors="none", edgecolors="k",
                   label=f"front (on {table.attrs['select_split']})")
        for i, (name, row) in enumerate((selected or {}).items()):
            ax.scatter([row["sparsity"]], [row[f"{split}_{metric}"]], marker="*", s=260, color="gold",
                       edgecolors="k", zorder=5)
            # a white box keeps the label legible over error bars
            right = float(row["sparsity"]) > right_of
            ax.annotate(name, (row["sparsity"], row[f"{split}_{metric}"]), textcoords="offset points",
                        # stacked one line apart: chosen points often lie close together
                        xytext=(-9 if right else 9, 9 + 11 * i), ha="right" if right else "left", fontsize=8,
                        zorder=6, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        ax.margins(y=0.1)  # room above the highest point for its label
        ax.set_xlabel("sparsity (1 − achieved density) →")
        # Two lines: in one, a long disparity name ran past the axes' top into the title.
        ax.set_ylabel(f"{split} {label}\n(mean ± 95% CI over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    # One legend for both panels, below them: inside an axes it covered the high-sparsity points.
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    fig.suptitle(f"configurations on {split}; front over (accuracy ↑, sparsity ↑, "
                 f"{disp_name} {'↑' if dmax else '↓'}) "
                 f"computed on {table.attrs['select_split']}", fontsize=10)
    rows = -(-len(labels) // min(len(labels), 4)) if labels else 0
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    save(fig, path)
    return fig


def vote_conflict(agreement: pd.DataFrame, epochs: Sequence[int], spread: Sequence[float],
                  path: Optional[str | Path] = None) -> plt.Figure:
    """Ballot's vote diagnostics per voting epoch: the share of weights whose two gradients agree in sign, per
    layer (``agreement`` from :func:`ballot_lib.analysis.sign_agreement_by_epoch`), and the fairness-weight spread
    (max / min, log axis; 1 means the fairness loss equals the plain loss)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.lineplot(data=agreement, x="epoch", y="same sign", hue="layer", marker="o", ax=axes[0])
    axes[0].set_title("where accuracy and fairness gradients agree")
    axes[0].set_xlabel("voting epoch")
    axes[0].set_ylabel("share with sign(g_acc) = sign(g_fair)")
    axes[0].legend(fontsize="x-small", title="layer", title_fontsize="x-small")
    axes[1].plot(list(epochs), list(spread), marker="o")
    axes[1].axhline(1.0, color="k", ls=":", lw=1)
    axes[1].set_yscale("log")
    axes[1].set_title("fairness-weight spread (1 = no fairness signal)")
    axes[1].set_xlabel("voting epoch")
    axes[1].set_ylabel("max / min fairness weight")
    fig.tight_layout()
    save(fig, path)
    return fig


def vote_histogram(votes: dict, mask: dict, path: Optional[str | Path] = None) -> plt.Figure:
    """Votes per weight, for the weights the mask keeps and for those it drops (log count axis)."""
    import torch

    names = [n for n in votes if n in mask]
    v = torch.cat([votes[n].flatten().long() for n in names]).numpy()
    k = torch.cat([mask[n].flatten().bool() for n in names]).numpy()
    bins: Any = np.arange(0, int(v.max()) + 2) - 0.5 if v.size else 10
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.hist([v[~k], v[k]], bins=bins, log=True, stacked=True, label=["dropped", "kept"])
    ax.set_xlabel("votes received (voting epochs where the weight was in the top-k)")
    ax.set_ylabel("number of weights (log)")
    ax.set_title("Ballot's votes per weight")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    save(fig, path)
    return fig


def layer_overlap_bars(table: pd.DataFrame, title: str = "kept weights shared with other masks, per layer",
                       path: Optional[str | Path] = None) -> plt.Figure:
    """Per layer, the share of one mask's kept weights that other masks also keep (``table`` from
    :func:`ballot_lib.analysis.layer_overlap`); 1 = identical selection in that layer."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * table["layer"].nunique() + 3), 3.6))
    sns.barplot(data=table, x="layer", y="overlap", hue="vs", ax=ax)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of kept weights also kept")
    ax.set_xlabel("layer")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    for lbl in ax.get_xticklabels():
        lbl.set_horizontalalignment("right")
    fig.tight_layout()  # ticks placed first: the legend goes under their labels, not over the bars
    legend_below(ax, fontsize="small", title=None, ncol=max(1, min(3, table["vs"].nunique())), frameon=False)
    fig.tight_layout()
    save(fig, path)
    return fig


_LABELS = {"val_acc": "val accuracy", "val_mcd": "val MCD (max − min class recall)", "val_cwv": "val CWV",
           "test_acc": "test accuracy", "test_mcd": "test MCD", "train_loss": "train loss"}


def training_curves(history: pd.DataFrame, metrics: Sequence[str] = ("val_acc", "val_mcd"), hue: str = "variant",
                    marker_epoch: Optional[int] = None, marker_label: str = "selected epoch",
                    path: Optional[str | Path] = None) -> plt.Figure:
    """Per-epoch curves (one panel per metric, one line per ``hue``), with an optional vertical marker.

    Curves that are identical in every panel (e.g. two runs of the same training that differ only in the
    checkpoint they keep) are drawn once, labelled ``a = b (identical curves)``; the others get distinct line
    styles."""
    h = history.copy()
    same = coinciding(h, hue, "epoch", [m for m in metrics if m in h])
    groups: dict[str, list[str]] = {}
    for v in dict.fromkeys(h[hue]):
        groups.setdefault(same.get(v, v), []).append(v)
    names = {v: (" = ".join(g) + " (identical curves)" if len(g) > 1 else v) for v0, g in groups.items() for v in g}
    h = h[h[hue].isin(list(groups))]
    h[hue] = h[hue].map(names)
    labels = [names[v] for v in groups]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(data=h, x="epoch", y=m, hue=hue, hue_order=labels, style=hue, style_order=labels, ax=ax)
        if marker_epoch is not None:
            ax.axvline(marker_epoch, color="k", ls=":", lw=1, label=marker_label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_LABELS.get(m, m))
        ax.set_title(_LABELS.get(m, m) + " per epoch")
        ax.legend(fontsize="small")
    fig.tight_layout()
    save(fig, path)
    return fig


def ablation_forest(table: pd.DataFrame, metrics: Sequence[str] = ("acc", "mcd"), reference: str = "default",
                    path: Optional[str | Path] = None) -> plt.Figure:
    """Each option set's difference to the default, paired by seed, with its 95 % CI, in points (``table`` from
    :func:`ballot_lib.ablation.table`); filled markers: the CI excludes 0."""
    t = table[table["variant"] != reference].reset_index(drop=True)
    # + 0.4 in: the legend sits under the x label (inside the axes it hid the points of a one- or two-row plot).
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 0.32 * len(t) + 2.0), squeeze=False,
                             sharey=True)
    y = np.arange(len(t))
    for ax, m in zip(axes[0], metrics):
        d, lo, hi = 100 * t[f"d_{m}"], 100 * t[f"d_{m}_low"], 100 * t[f"d_{m}_high"]
        err = [(d - lo).fillna(0).clip(lower=0), (hi - d).fillna(0).clip(lower=0)]
        ax.errorbar(d, y, xerr=err, fmt="none", ecolor="0.4", capsize=2)
        sig = t[f"d_{m}_sig"].astype(bool).to_numpy()
        ax.scatter(d[sig], y[sig], color="C3", zorder=3, label="CI excludes 0")
        ax.scatter(d[~sig], y[~sig], facecolors="white", edgecolors="C0", zorder=3, label="CI includes 0")
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(y, t["variant"])
        ax.invert_yaxis()
        better = "higher" if m == "acc" else "lower"
        ax.set_xlabel(f"Δ val {m.upper()} vs {reference} (pts; {better} is better)")
        ax.set_title(f"val {m.upper()}: option set − {reference}")
    legend_below(axes[0][-1], fontsize="x-small", ncol=2, frameon=False)
    fig.tight_layout()
    save(fig, path)
    return fig


def excess_heatmap(summary: pd.DataFrame, key: str = "method", class_names: Optional[Sequence[str]] = None,
                   q: float = 80.0, path=None):
    """Heat map of :func:`ballot_lib.population.excess_matrix` (notebook 04): colour clipped symmetrically at
    :func:`~ballot_lib.population.robust_limit` (``q``-th
    percentile of |excess|), every cell annotated with its true value (up to 12 classes), cells beyond the scale
    outlined, collapsed rows labelled. Returns the figure (saved to ``path`` when given)."""
    from matplotlib.patches import Rectangle

    from .population import excess_matrix, robust_limit

    mat = excess_matrix(summary, key, class_names)
    lim = robust_limit(mat.to_numpy(), q)
    clipped = mat.abs() > lim
    annot = mat.shape[1] <= 12
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * mat.shape[1] + 4.5), 0.42 * len(mat) + 1.9))
    sns.heatmap(mat.clip(-lim, lim), cmap="RdBu", center=0, vmin=-lim, vmax=lim, annot=mat if annot else False,
                fmt=".1f", annot_kws={"fontsize": 8}, ax=ax,
                cbar_kws={"label": "excess change\nδ_c − δ (pts)", "extend": "both"})  # 2 lines: fits 2 rows
    _horizontal_row_labels(ax)
    for i, j in zip(*np.nonzero(clipped.to_numpy())):
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", lw=1.0))
    step = max(1, int(np.ceil(mat.shape[1] / 25)))  # at most ~25 class ticks
    ax.set_xticks(np.arange(0, mat.shape[1], step) + 0.5, [str(c) for c in mat.columns[::step]], rotation=0)
    ax.set_xlabel("class")
    ax.set_ylabel("")
    for lbl in ax.get_yticklabels():
        if "collapsed" in lbl.get_text():
            lbl.set_color("firebrick")
    ax.set_title(f"excess change δ_c − δ vs the same-seed dense model (test, mean over seeds, points)\n"
                 f"colour clipped at ±{lim:.1f} (the {q:g}th percentile of |δ_c − δ|); outlined: {int(clipped.sum().sum())}"
                 f" cells beyond it" + (" (true value printed)" if annot else ""), fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return fig

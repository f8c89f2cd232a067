"""Figure layout on hand-made tables: nothing a reader must see is drawn over something else, for one, two or
many rows. Each check draws the figure and compares the drawn bounding boxes (display pixels)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ballot_lib import comparison as C  # noqa: E402
from ballot_lib import plots, population  # noqa: E402

ROWS = (1, 2, 12)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def boxes(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def overlapping(bbs) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(bbs)) for j in range(i + 1, len(bbs)) if bbs[i].overlaps(bbs[j])]


def comparison_rows(n: int) -> pd.DataFrame:
    """n rows of a notebook 03 comparison table (Ballot − baseline in MCD), one setting."""
    base = ["MP", "LTH", "SafeCompress", "FairScratch"]
    return pd.DataFrame([{"dataset": "digits_lt", "model": "mlp", "density": 0.05,
                          "method": base[i % 4] + ("" if i < 4 else f" {i}"), "d_mcd": -0.05 + 0.02 * i,
                          "lo_mcd": -0.10 + 0.02 * i, "hi_mcd": 0.02 * i, "sig_mcd": i % 2 == 0, "sigadj_mcd": False,
                          "collapsed": 0} for i in range(n)])


def ablation_rows(n: int) -> pd.DataFrame:
    """The default plus n option sets of an ablation table (differences to the default with CIs)."""
    t = pd.DataFrame({"variant": ["default"] + [f"option set {i}" for i in range(n)]})
    for m in ("acc", "mcd"):
        t[f"d_{m}"] = [0.0] + [0.01 * (i + 1) for i in range(n)]
        t[f"d_{m}_low"], t[f"d_{m}_high"] = t[f"d_{m}"] - 0.02, t[f"d_{m}"] + 0.02
        t[f"d_{m}_sig"] = [False] + [i % 2 == 0 for i in range(n)]
    return t


FORESTS = {"comparison": lambda n: C.forest(comparison_rows(n), "mcd",
                                             title="Ballot − baseline, MCD — no checkpoint selection"),
           "ablation": lambda n: plots.ablation_forest(ablation_rows(n))}


@pytest.mark.parametrize("n", ROWS)
@pytest.mark.parametrize("dpi", (72, 200))
@pytest.mark.parametrize("kind", sorted(FORESTS))
def test_forest_legends_sit_under_the_x_label_for_any_number_of_rows(kind, n, dpi):
    """A short forest plot (one or two rows) drew its legend over the x label (notebook 03's comparison forest,
    anchored at a fraction of the axes height) or over the points (the ablation's, inside the axes)."""
    fig = FORESTS[kind](n)
    fig.set_dpi(dpi)  # the legend's place must not depend on the resolution it is drawn at
    r = boxes(fig)
    with_legend = [a for a in fig.axes if a.get_legend() is not None]
    assert len(with_legend) == 1
    ax = with_legend[0]
    leg = ax.get_legend().get_window_extent(r)
    xaxis = ax.xaxis.get_tightbbox(r)  # tick labels and the label
    assert not leg.overlaps(xaxis) and leg.y1 <= xaxis.y0, (leg, xaxis)
    for a in fig.axes:
        assert not leg.overlaps(a.get_window_extent(r))  # nor any point or error bar
    assert fig.bbox.contains(leg.x0, leg.y0) and fig.bbox.contains(leg.x1, leg.y1)  # laid out inside the figure


def heatmap_figures(n: int):
    names = ["MP", "LTH"] + [f"Ballot[{i}]" for i in range(n - 2)]
    deltas = pd.DataFrame({"variant": names[:n], "density": 0.05,
                           **{f"class {c}": np.linspace(-0.1, 0.1, n) + 0.01 * c for c in range(10)}})
    yield plots.per_class_heatmap(deltas)
    summary = pd.DataFrame([{"method": v, "density_target": 0.05, **{f"class {c}": 0.01 * (c - 5) * (i + 1)
                                                                      for c in range(10)}}
                            for i, v in enumerate(names[:n])])
    yield plots.excess_heatmap(summary)


@pytest.mark.parametrize("n", ROWS)
def test_heatmap_row_labels_read_horizontally_and_never_overlap(n):
    """With two short row labels ("MP @ 0.05", "LTH @ 0.05") seaborn left them vertical, and they ran into each
    other once the layout had shrunk the rows."""
    for fig in heatmap_figures(n):
        r = boxes(fig)
        ax = fig.axes[0]
        labels = [t for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) == n
        assert all(t.get_rotation() == 0 for t in labels)
        assert overlapping([t.get_window_extent(r) for t in labels]) == []
        plt.close(fig)


def front_table(disparity: str) -> pd.DataFrame:
    rows = []
    for split in ("val", "test"):
        for s in range(3):
            j = 0.01 * s
            for method, dens, acc, classes in (("dense", 1.0, 0.8, [0.9, 0.7]), ("a", 0.1, 0.65, [0.9, 0.4]),
                                               ("b", 0.5, 0.8, [0.9, 0.7])):
                cls = [c + j for c in classes]
                rows.append({"run_id": f"{method}-{s}", "method": method, "variant": method, "seed": s,
                             "density_target": dens, "density": dens, "split": split, "acc": acc + j,
                             "dataset": "toy", "model": "toy", "cwv": float(np.var(cls)), "mcd": cls[0] - cls[1],
                             "group_acc_gap": 0.1 + j, "acc_class_0": cls[0], "acc_class_1": cls[1]})
    return population.pareto_table(population.with_derived(pd.DataFrame(rows)), disparity)


@pytest.mark.parametrize("disparity", sorted(population.DISPARITIES))
def test_front_y_labels_stay_under_the_title(disparity):
    """The worst-class front's right-hand y label ("test WORST_CLASS ↑ (mean ± 95% CI over seeds)") was longer
    than the axes and ran into the figure's title."""
    table = front_table(disparity)
    fig = plots.pareto_front(table, selected={"A = B": table[table["method"] == "a"].iloc[0]})
    r = boxes(fig)
    title = fig._suptitle.get_window_extent(r)
    for ax in fig.axes:
        label = ax.yaxis.label.get_window_extent(r)
        assert not label.overlaps(title), (ax.get_ylabel(), label, title)
        assert fig.bbox.contains(label.x0, label.y0) and fig.bbox.contains(label.x1, label.y1)
    assert "WORST_CLASS" not in fig._suptitle.get_text() + "".join(ax.get_ylabel() for ax in fig.axes)


def test_front_bars_end_where_the_metric_does_and_labels_stay_inside_the_axes():
    """A few seeds' t-interval reached an MCD of 1.15 on notebook 04's front; the chosen points' labels, at the
    highest sparsities, ran past the axes' right edge."""
    table = front_table("mcd")
    table["test_mcd_ci"] = 5.0  # wider than the metric's range, both ways
    table["test_acc_ci"] = 5.0
    top = table.loc[table["sparsity"].idxmax()]
    fig = plots.pareto_front(table, selected={"A = B = Chebyshev": top})
    r = boxes(fig)
    for ax in fig.axes:
        ends = [y for c in ax.containers for seg in c.lines[2][0].get_segments() for _, y in seg]
        assert ends and min(ends) >= 0.0 and max(ends) <= 1.0, (min(ends), max(ends))
        for t in ax.texts:
            box, frame = t.get_window_extent(r), ax.get_window_extent(r)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (t.get_text(), box, frame)
    legend = fig.legends[0].get_window_extent(r)
    assert all(not legend.overlaps(ax.get_window_extent(r)) for ax in fig.axes)
    assert all(ax.get_legend() is None for ax in fig.axes)


def test_legend_below_keeps_its_distance_in_points():
    """The legend's drop under the axes is fixed in points: a taller figure (more rows) or a later layout change
    keeps it under the label."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_xlabel("a label")
    plots.legend_below(ax)
    fig.tight_layout()
    r = boxes(fig)
    gap = ax.xaxis.get_tightbbox(r).y0 - ax.get_legend().get_window_extent(r).y1
    fig.set_size_inches(6, 5)
    fig.tight_layout()
    r = boxes(fig)
    assert ax.xaxis.get_tightbbox(r).y0 - ax.get_legend().get_window_extent(r).y1 == pytest.approx(gap, abs=1.0)
    assert gap > 0


def test_layer_overlap_legend_sits_below_the_bars():
    """A reader review found the legend over the lower part of every bar (notebook 02, section 2)."""
    t = pd.DataFrame([{"layer": f"net.{i}.weight", "vs": v, "overlap": o} for i in range(3)
                      for v, o in (("LTH", 0.9), ("η = 0 vote", 0.4))])
    fig = plots.layer_overlap_bars(t)
    r = boxes(fig)
    legend, ax = fig.axes[0].get_legend().get_window_extent(r), fig.axes[0].get_window_extent(r)
    assert not legend.overlaps(ax) and fig.bbox.contains(legend.x0, legend.y0)
    plt.close(fig)

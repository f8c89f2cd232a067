"""The tables of ``papers/*.md``, rebuilt from any results store (notebook 05, ``python -m ballot_lib.paper_tables``).

Notebooks 01 and 02 record, next to their report, which stored runs each of their comparisons rests on
(:func:`record_comparison`: a small JSON file under ``<results>/comparisons/`` listing run ids and the labels the
notebook gave them). Everything else is read back from the runs themselves: the metrics, the configurations,
the seeds and the compute. So a table can be rebuilt from the suite's own store or from a GPU batch alike, and
every table comes with the runs it rests on (:func:`provenance`).

Tables (each a DataFrame with one row per cell group, numbers unrounded; :func:`to_markdown` formats them as
papers/ballot.md shows them):

* ``ballot_vs_baselines`` (notebook 02, section 5): Ballot against MP and LTH at equal density, paired by seed.
* ``lth_vs_dense`` (notebook 01, section 1): MP and LTH against dense, paired by seed.
* ``prune_responsibly`` (notebook 04): the population tables of :func:`ballot_lib.population.tables`, when the
  store holds a population (markdown only).

A table rests on one experiment: records of one table, dataset and model whose parameters differ beyond the
seeds (notebook 03 at two rewind points, say) make :func:`pick_records` warn, naming what differs and the record
it used; :func:`build`'s ``records`` (notebook 05's ``record_names``, ``--record``) chooses.

Markdown blocks in ``papers/*.md`` between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` are written by
:func:`update_papers` from the same tables, so the papers carry only tables this module produces.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .analysis import (LOCATION_PARAMETERS, VERDICT_CORRECTION, adjust_family, adjust_tables, group_columns,
                       summarize, versus, with_sparsity)
from .comparison import PAPER_TABLES as COMPARISON_TABLES, ci_end
from .paths import results_root
from .results import ResultsError, ResultsFormatError, _atomic_write, load_results

KINDS = ["ballot_vs_baselines", "lth_vs_dense"]
#: Metrics of the paper tables and whether they are written in points.
METRICS = (("acc", True), ("cwv", False), ("mcd", True))
#: Columns of each table that identify a row (the rest are numbers).
KEYS = {"ballot_vs_baselines": ["dataset", "model", "density", "vs", "selection"],
        "lth_vs_dense": ["dataset", "model", "density", "method", "selection"]}
COMPARISONS = "comparisons"


# ------------------------------------------------------------------------------------------ recording


def record_comparison(name: str, kind: str, df: pd.DataFrame, params: Mapping[str, Any],
                      results_dir: Optional[str | Path] = None, **extra: Any) -> Path:
    """Record which runs (``df``'s ``run_id`` and ``variant`` columns) a notebook's comparison rests on.

    Args:
        name: the notebook run's tag (:func:`ballot_lib.analysis.run_tag`); one record per tag.
        kind: one of :data:`KINDS`.
        df: the comparison's tidy rows (:func:`ballot_lib.methods.run_grid`).
        params: the notebook's parameters (locations are left out of the record).
        extra: more JSON-able facts to keep (e.g. ``chosen="eta=0"``).
    Returns:
        The path of ``<results>/comparisons/<name>.json``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown comparison kind {kind!r}; valid: {', '.join(KINDS)}")
    runs = df[["run_id", "variant"]].drop_duplicates().sort_values(["variant", "run_id"])
    rec = {"name": name, "kind": kind,
           "parameters": {k: v for k, v in params.items() if k not in LOCATION_PARAMETERS},
           "runs": runs.to_dict("records"), **extra}
    path = results_root(results_dir) / COMPARISONS / f"{name}.json"
    return _atomic_write(path, lambda f: f.write(json.dumps(rec, indent=1, sort_keys=True, default=str).encode()))


class MissingRunsError(ResultsError, FileNotFoundError):
    """A comparison record lists runs that the store does not hold; the message names the record and the runs."""


#: The keys every comparison record holds (:func:`record_comparison`), and each run entry's.
RECORD_KEYS = ("name", "kind", "runs")
RUN_KEYS = ("run_id", "variant")


def _record_fix(path: Path, rec: Any = None) -> str:
    """The fix of a broken record: re-run the notebook that wrote it (its ``notebook``, else the notebook whose name
    starts the file's), or delete the file."""
    nb = rec.get("notebook") if isinstance(rec, dict) and isinstance(rec.get("notebook"), str) else None
    if not nb:
        from .notebook_files import notebooks

        try:
            suite = notebooks()
        except FileNotFoundError:  # an installed package without its notebooks: name none
            suite = []
        found = [q.name for q in suite if path.stem.startswith(q.stem)]
        nb = found[-1] if found else None
    return f"re-run {'the notebook that wrote it' if not nb else nb} to record it again, or delete the file"


def _record_problem(rec: Any) -> Optional[str]:
    """What is wrong with a record's content (None when it holds what :func:`record_comparison` writes)."""
    if not isinstance(rec, dict):
        return f"a record is a JSON object, got {type(rec).__name__} {json.dumps(rec, default=str)[:60]}"
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        return f"missing key(s) {missing}; a record holds {', '.join(RECORD_KEYS)}"
    for k in ("name", "kind"):
        if not isinstance(rec[k], str) or not rec[k]:
            return f"{k!r} must be a non-empty string, got {rec[k]!r}"
    if not isinstance(rec["runs"], list) or not rec["runs"]:
        return (f"'runs' must be a non-empty list of {{run_id, variant}}, got "
                f"{json.dumps(rec['runs'], default=str)[:60]}")
    for i, r in enumerate(rec["runs"]):
        if not isinstance(r, dict) or any(not isinstance(r.get(k), str) for k in RUN_KEYS):
            return f"runs[{i}] must be an object with string run_id and variant, got {r!r}"
    if "parameters" in rec and not isinstance(rec["parameters"], dict):
        return f"'parameters' must be an object, got {type(rec['parameters']).__name__}"
    return None


def read_record(path: str | Path) -> dict:
    """One comparison record; a corrupt or malformed file raises :class:`~ballot_lib.results.ResultsFormatError`
    naming it and the fix (re-run the notebook that wrote it, or delete the file)."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsFormatError(f"comparison record {path} is corrupt ({e}); {_record_fix(path)}") from None
    except OSError as e:
        raise ResultsError(f"comparison record {path} cannot be read ({type(e).__name__}: "
                           f"{getattr(e, 'strerror', None) or e}); {_record_fix(path)}") from None
    problem = _record_problem(rec)
    if problem:
        raise ResultsFormatError(f"comparison record {path} is malformed ({problem}); {_record_fix(path, rec)}")
    return rec


def record_files(results_dir: Optional[str | Path] = None) -> list[tuple[Path, dict]]:
    """(file, record) of every comparison record of a store, sorted by file name; each checked (:func:`read_record`)."""
    folder = results_root(results_dir) / COMPARISONS
    return [(p, read_record(p)) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def load_records(results_dir: Optional[str | Path] = None) -> list[dict]:
    """Every comparison record of a store, sorted by name; a corrupt or malformed record raises naming its file."""
    return [rec for _, rec in record_files(results_dir)]


def _frame(rec: Mapping[str, Any], rows: pd.DataFrame, path: Optional[Path] = None) -> pd.DataFrame:
    labels = pd.DataFrame(rec["runs"])
    missing = set(labels["run_id"]) - set(rows["run_id"])
    if missing:
        where = f" ({path})" if path is not None else ""
        fix = _record_fix(path, rec) if path is not None else "re-run the notebook that wrote it, or delete the record"
        raise MissingRunsError(f"comparison record {rec['name']!r}{where} rests on run(s) missing from the store "
                               f"(no complete run folder runs/<id>): {sorted(missing)[:5]}"
                               f"{' ...' if len(missing) > 5 else ''}; {fix}")
    return rows.drop(columns=["variant"], errors="ignore").merge(labels, on="run_id")


#: Parameters in which the one-seed jobs of a grid and its aggregate execution differ: records that differ in
#: nothing else are one experiment (the one over the most seeds is kept, silently).
SEED_PARAMETERS = ("seed", "seeds", "ablation_seeds", "device")


def select_records(records: Sequence[Mapping[str, Any]], names: Optional[Sequence[str]] = None) -> list[dict]:
    """The records named by ``names`` (a record's whole name, or any part of it such as its tag), or all of them
    when ``names`` is empty. A name that matches no record is an error listing the records of the store."""
    if not names:
        return [dict(r) for r in records]
    if isinstance(names, (str, bytes)) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"record names must be a list of non-empty strings, got {names!r}")
    unknown = [n for n in names if not any(n in r["name"] for r in records)]
    if unknown:
        have = ", ".join(r["name"] for r in records) or "none"
        raise ValueError(f"no recorded comparison matches {unknown}; the store's records: {have}")
    return [dict(r) for r in records if any(n in r["name"] for n in names)]


def _experiment(rec: Mapping[str, Any]) -> dict:
    """A record's parameters without its seeds, a missing one read as the recording notebook's default (a record
    written before a parameter existed is the same experiment as one written with its default)."""
    params = {**_notebook_defaults(str(rec.get("notebook") or "")), **(rec.get("parameters") or {})}
    return {k: v for k, v in params.items() if k not in SEED_PARAMETERS and k not in LOCATION_PARAMETERS}


@functools.lru_cache(maxsize=None)
def _notebook_defaults(notebook: str) -> dict:
    """The declared defaults of a recording notebook, read once per process (every record of a store asks)."""
    from .notebook_files import notebook_parameters, notebook_path

    if not notebook:
        return {}
    try:
        return notebook_parameters(notebook_path(notebook))
    except (OSError, ValueError, KeyError):  # a notebook since renamed or removed: compare what was recorded
        return {}


def _differences(recs: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """parameter -> each record's value, for the parameters in which ``recs`` differ (seeds left out)."""
    exps = [_experiment(r) for r in recs]
    keys = sorted({k for e in exps for k in e})
    return {k: [e.get(k) for e in exps] for k in keys
            if len({json.dumps(e.get(k), sort_keys=True, default=str) for e in exps}) > 1}


def pick_records(records: Sequence[Mapping[str, Any]], rows: pd.DataFrame,
                 names: Optional[Sequence[str]] = None,
                 paths: Optional[Mapping[str, Path]] = None) -> list[tuple[dict, pd.DataFrame]]:
    """One record per (kind, dataset, model): the one over the most seeds (ties: the last by name), with its rows.

    A grid of one-seed jobs and its aggregate run share a store; the aggregate (all seeds) is the one a table
    should rest on. Records of one (kind, dataset, model) whose parameters differ beyond the seeds are different
    experiments (e.g. notebook 03 at two rewind points): a table can rest on one only, so a warning names them,
    what differs, and which one is used; ``names`` (:func:`select_records`) chooses. ``paths``: record name -> its
    file, to name it when the record rests on runs missing from the store (:class:`MissingRunsError`).
    """
    best: dict[tuple, tuple[int, str, dict, pd.DataFrame]] = {}
    seen: dict[tuple, list[tuple[dict, pd.DataFrame]]] = {}
    for rec in select_records(records, names):
        if rec.get("kind") not in KINDS:
            continue
        frame = _frame(rec, rows, (paths or {}).get(rec["name"]))
        if frame.empty:
            continue
        key = (rec["kind"], frame["dataset"].iloc[0], frame["model"].iloc[0])
        seen.setdefault(key, []).append((rec, frame))
        cand = (frame["seed"].nunique(), rec["name"], dict(rec), frame)
        if key not in best or cand[:2] >= best[key][:2]:
            best[key] = cand
    conflicts = {key: _differences([r for r, _ in pairs]) for key, pairs in sorted(seen.items())}
    conflicts = {key: d for key, d in conflicts.items() if d}
    if conflicts:
        params = sorted({k for d in conflicts.values() for k in d})
        values = {k: sorted({json.dumps(v, default=str) for d in conflicts.values() for v in d.get(k, [])})
                  for k in params}
        used = sorted({best[key][1] for key in conflicts})
        chosen = sorted({f"{k}={json.dumps(_experiment(best[key][2]).get(k), default=str)}"
                         for key in conflicts for k in params})
        kinds = ", ".join(dict.fromkeys(kind for kind, _, _ in conflicts))
        settings = ", ".join(sorted({f"{d}/{m}" for key in conflicts for _, f in seen[key]
                                     for d, m in f[["dataset", "model"]].drop_duplicates().itertuples(index=False)}))
        cells = f"{kinds} on {settings}"
        warnings.warn(f"the store holds different experiments for the same tables (they differ in "
                      f"{'; '.join(f'{k}: ' + ', '.join(values[k]) for k in params)}) for {cells}; a table rests on "
                      f"one experiment: these use {', '.join(chosen)} (records {', '.join(used)}). Choose with "
                      "record names or tags (notebook 05: record_names; the command line: --record NAME).",
                      stacklevel=2)
    return [(rec, frame) for _, _, rec, frame in (best[k] for k in sorted(best))]


# ------------------------------------------------------------------------------------------ tables


def _paired_columns(row: dict, tab: pd.DataFrame) -> None:
    for m, _ in METRICS:
        r = tab[tab["metric"] == m]
        if r.empty:
            continue
        r = r.iloc[0]
        row.update({f"d_{m}": r["diff"], f"d_{m}_low": r["ci_low"], f"d_{m}_high": r["ci_high"],
                    f"d_{m}_wins": int(r["wins"]), f"d_{m}_n": int(r["n"]), f"d_{m}_sig": bool(r["significant"])})
        if "p_adj" in r:  # a table corrected as one family (analysis.adjust_family): notebook 01's rule
            row.update({f"d_{m}_padj": float(r["p_adj"]), f"d_{m}_sigadj": bool(r["significant_adj"])})


def _rule(frame: pd.DataFrame, variant: str, density: float) -> str:
    """The checkpoint rule(s) of a variant's runs at a density (``"last"``, ``"val_rule"``; ``"—"`` for dense)."""
    rows = frame[(frame["variant"] == variant) & np.isclose(frame["density_target"], density)]
    rules = sorted({str(x) for x in rows["select"].dropna()}) if "select" in rows else []
    return ", ".join(rules) or "—"


def _compute(frame: pd.DataFrame, variant: str, density: float) -> float:
    """Mean training compute (epochs of the dense recipe, run summaries' ``compute_epochs``) of a variant."""
    rows = frame[(frame["variant"] == variant) & np.isclose(frame["density_target"], density)]
    return float(rows["compute_epochs"].mean()) if "compute_epochs" in rows and len(rows) else float("nan")


def _selection(frame: pd.DataFrame, a: str, b: str, density: float) -> str:
    """One rule when both sides share it, else both named: a table says when its methods were not selected alike."""
    ra, rb = _rule(frame, a, density), _rule(frame, b, density)
    return ra if ra == rb else f"{a} {ra}; {b} {rb}"


def ballot_vs_baselines(frame: pd.DataFrame, baselines: Sequence[str] = ("MP", "LTH")) -> pd.DataFrame:
    """Ballot against each baseline at each density (test split, paired by seed): Ballot's means and the paired
    differences with CI, seed wins and significance per metric, with each side's checkpoint rule (``selection``)
    and training compute (``compute_ballot``, ``compute_vs``: epochs of the dense recipe)."""
    metrics = [m for m, _ in METRICS]
    means = summarize(frame, metrics).set_index(["variant", "density"])
    rows = []
    # One family over both baselines' paired tests, as notebook 02 decides (analysis.adjust_tables).
    tabs = adjust_tables({b: versus(frame, b, ["Ballot"], metrics + group_columns(frame), reference_any_density=False)
                          for b in baselines}, VERDICT_CORRECTION)
    for b in baselines:
        tab = tabs[b]
        for d in sorted(tab["density"].unique(), reverse=True):
            row = {"dataset": frame["dataset"].iloc[0], "model": frame["model"].iloc[0], "density": float(d),
                   "vs": b, "selection": _selection(frame, "Ballot", b, d),
                   "compute_ballot": _compute(frame, "Ballot", d), "compute_vs": _compute(frame, b, d)}
            row.update({m: means.loc[("Ballot", d), m] for m in metrics})
            _paired_columns(row, tab[np.isclose(tab["density"], d)])
            row["family"] = int(tab.attrs.get("family", 0))
            rows.append(row)
    return pd.DataFrame(rows)


def lth_vs_dense(frame: pd.DataFrame, methods: Sequence[str] = ("MP", "LTH")) -> pd.DataFrame:
    """Dense and each pruning method at each density (test split): means, and paired differences to dense, with
    Holm-adjusted p-values over the table's paired tests as one family (``d_<m>_padj``/``d_<m>_sigadj``: notebook
    01 decides on the same family, :func:`ballot_lib.analysis.adjust_family`)."""
    metrics = [m for m, _ in METRICS]
    means = summarize(frame, metrics).set_index(["variant", "density"])
    base = {"dataset": frame["dataset"].iloc[0], "model": frame["model"].iloc[0]}
    dense_density = float(frame.loc[frame["variant"] == "dense", "density_target"].iloc[0])
    rows = [{**base, "density": dense_density, "method": "dense", "selection": "—",
             "compute": _compute(frame, "dense", dense_density),
             **{m: means.loc[("dense", dense_density), m] for m in metrics}}]
    # The family is notebook 01's: every paired test of its table against dense, group metrics included where
    # the data has them (only acc/CWV/MCD are shown here).
    tab = adjust_family(versus(frame, "dense", list(methods), metrics + group_columns(frame)), VERDICT_CORRECTION)
    for meth in methods:
        for d in sorted(tab.loc[tab["a"] == meth, "density"].unique(), reverse=True):
            row = {**base, "density": float(d), "method": meth, "selection": _rule(frame, meth, d),
                   "compute": _compute(frame, meth, d), **{m: means.loc[(meth, d), m] for m in metrics}}
            _paired_columns(row, tab[(tab["a"] == meth) & np.isclose(tab["density"], d)])
            row["family"] = int(tab.attrs.get("family", 0))
            rows.append(row)
    return pd.DataFrame(rows)


BUILDERS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {"ballot_vs_baselines": ballot_vs_baselines,
                                                               "lth_vs_dense": lth_vs_dense}
#: Markdown renderers of registered tables (the built-in kinds are rendered by :func:`to_markdown` itself).
RENDERERS: dict[str, Callable[[pd.DataFrame], str]] = {}


def register_table(kind: str, builder: Callable[[pd.DataFrame], pd.DataFrame], keys: Sequence[str],
                   markdown: Callable[[pd.DataFrame], str]) -> None:
    """Add a table kind (e.g. notebook 03's comparison): ``builder`` turns one recorded comparison's labelled
    rows into the table, ``keys`` are its identifying columns, ``markdown`` renders it for papers/*.md. Notebooks
    then record comparisons of that kind with :func:`record_comparison`; the module that registers the kind must
    be imported before :func:`build` runs (e.g. by notebook 05)."""
    if kind not in KINDS:
        KINDS.append(kind)
    BUILDERS[kind] = builder
    KEYS[kind] = list(keys)
    RENDERERS[kind] = markdown


# Notebook 03's kinds (ballot_lib.comparison defines them and imports nothing of this module).
for _kind, (_builder, _keys, _markdown) in COMPARISON_TABLES.items():
    register_table(_kind, _builder, _keys, _markdown)


PROVENANCE_COLUMNS = ["table", "dataset", "model", "record", "notebook", "variants", "seeds", "densities", "epochs",
                      "batch_size", "rewind", "chosen", "runs", "compute_epochs", "compute_seconds"]


def provenance(picked: Sequence[tuple[Mapping[str, Any], pd.DataFrame]]) -> pd.DataFrame:
    """Which runs each table rests on: per record and (dataset, model) setting, the configuration, seeds,
    densities and compute (a record of notebook 03 spans several settings, each with its own recipe).

    ``compute_epochs`` and ``compute_seconds`` count each training once: a run listed under two variants once, and
    a run derived from its twin under the other checkpoint rule (``derived_from``: it copies the twin's compute and
    seconds) together with that twin -- once, whether the twin is in the table or not."""
    rows = []
    for rec, frame in picked:
        test = frame[frame["split"] == "test"]
        p = rec.get("parameters", {})
        for (dataset, model), part in test.groupby(["dataset", "model"], sort=True):
            training = part["run_id"]
            if "derived_from" in part:
                training = part["derived_from"].where(part["derived_from"].apply(lambda v: isinstance(v, str) and
                                                                                  bool(v)), part["run_id"])
            trained = part[~training.duplicated()]
            rows.append({
                "table": rec["kind"], "dataset": dataset, "model": model,
                "record": rec["name"], "notebook": rec.get("notebook", ""),
                "variants": ", ".join(sorted(part["variant"].unique())),
                "seeds": ", ".join(str(s) for s in sorted(part["seed"].unique())),
                "densities": ", ".join(f"{d:g}" for d in sorted(part.loc[part["method"] != "dense",
                                                                         "density_target"].unique(), reverse=True)),
                "epochs": _one(part, "train.epochs", p.get("epochs")),
                "batch_size": _one(part, "train.batch_size", p.get("batch_size")),
                "rewind": _rewind_points(part),
                "chosen": rec.get("chosen", ""),
                "runs": int(part["run_id"].nunique()),
                "compute_epochs": float(trained["compute_epochs"].fillna(0).sum()) if "compute_epochs" in part
                else float("nan"),
                "compute_seconds": float(trained["seconds"].fillna(0).sum()) if "seconds" in part else float("nan"),
            })
    return pd.DataFrame(rows, columns=PROVENANCE_COLUMNS)


def _rewind_points(part: pd.DataFrame) -> str:
    """The rewind points θk of the setting's LTH and Ballot runs (late rewinding changes what "LTH" means: a table
    built at θ1 must say so next to the paper's θ0 numbers), "" when none of its runs rewinds."""
    col = "method_cfg.rewind_epoch"
    rewinding = part[part["method"].isin(("lth", "ballot"))] if "method" in part else part.iloc[0:0]
    if col not in rewinding or rewinding.empty:
        return ""
    return ", ".join(f"θ{int(k)}" for k in sorted(rewinding[col].fillna(0).unique()))


def _one(part: pd.DataFrame, column: str, default: Any) -> Any:
    """The setting's value of a recipe column (its runs share it; several values are listed)."""
    if column not in part:
        return default
    values = sorted({int(v) for v in part[column].dropna()})
    return values[0] if len(values) == 1 else ", ".join(map(str, values)) if values else default


def build(results_dir: Optional[str | Path] = None,
          records: Optional[Sequence[str]] = None) -> dict[str, pd.DataFrame]:
    """Every paper table that the store's recorded comparisons support, plus ``provenance``.

    Keys: the :data:`KINDS` present, and ``provenance``. Tables concatenate the datasets/models of the store.
    ``records``: build only from the records these names (or tags) match (:func:`select_records`); a store
    holding several experiments of one table warns and says which one it used (:func:`pick_records`).
    """
    files = record_files(results_dir)  # a corrupt or malformed record raises, naming its file
    stored = [rec for _, rec in files]
    if records:
        select_records(stored, records)  # an unknown name is an error before the store's runs are read
    rows = load_results(results_dir)
    paths: dict = {}
    for path, rec in files:
        paths.setdefault(rec["name"], path)
    picked = pick_records(stored, rows, records, paths) if stored else []
    out: dict[str, pd.DataFrame] = {}
    for kind in KINDS:
        parts = [BUILDERS[kind](frame) for rec, frame in picked if rec["kind"] == kind]
        if parts:
            out[kind] = pd.concat(parts, ignore_index=True)
    out["provenance"] = provenance(picked)
    return out


#: The marked block of papers/prune_responsibly.md (and its markdown export) holding notebook 04's tables.
PRUNE_RESPONSIBLY = "prune_responsibly"


def prune_responsibly(results_dir: Optional[str | Path] = None, **kwargs: Any) -> Optional[str]:
    """Notebook 04's population tables (markdown) when the store holds a population, else None
    (:func:`ballot_lib.population.store_tables`: one population per experiment of the store)."""
    from .population import store_tables

    return store_tables(results_dir, **kwargs)


def long_form(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """A paper table as paired rows (``a``, ``b``, ``metric``, ``density``, ``diff``, ``ci_low``, ``ci_high``,
    ``wins``, ``n``, ``significant``) for :func:`ballot_lib.plots.paired_forest` and
    :func:`ballot_lib.readings.paired`; ``a`` names the dataset."""
    rows = []
    for _, r in table.iterrows():
        if f"d_{METRICS[0][0]}" not in r or pd.isna(r.get(f"d_{METRICS[0][0]}")):
            continue
        where = f"{r['dataset']}/{r['model']}"  # digits/mlp and digits/cnn are two comparisons, never merged
        a, b = ((f"Ballot ({where})", r["vs"]) if name == "ballot_vs_baselines"
                else (f"{r['method']} ({where})", "dense"))
        for m, _ in METRICS:
            rows.append({"a": a, "b": b, "metric": m, "density": r["density"], "diff": r[f"d_{m}"],
                         "ci_low": r[f"d_{m}_low"], "ci_high": r[f"d_{m}_high"], "wins": r[f"d_{m}_wins"],
                         "n": r[f"d_{m}_n"], "significant": bool(r[f"d_{m}_sig"])})
            if _has_adjusted(r, m):
                rows[-1].update(p_adj=float(r[f"d_{m}_padj"]), significant_adj=bool(r[f"d_{m}_sigadj"]),
                                family=int(r["family"]) if pd.notna(r.get("family")) else None,
                                table=(r["dataset"], r["model"]))
    out = pd.DataFrame(rows)
    if "significant_adj" in out:  # readings.paired then decides on it and states the correction
        out["significant_adj"] = out["significant_adj"].fillna(False).astype(bool)
        tables = out["table"].dropna().unique()
        sizes = sorted({int(k) for k in out["family"].dropna()})
        if len(tables) > 1:  # each (dataset, model) table was corrected on its own
            out.attrs.update(correction=VERDICT_CORRECTION, family=sizes[0] if len(sizes) == 1 else sizes,
                             family_scope="dataset/model table")
        else:
            out.attrs.update(correction=VERDICT_CORRECTION,
                             family=sizes[0] if len(sizes) == 1 else int(out["p_adj"].notna().sum()))
        out = out.drop(columns=["table"])
    return out


def _has_adjusted(row: Mapping[str, Any], m: str) -> bool:
    """Whether a table row carries metric ``m``'s family-adjusted significance (and it is not missing)."""
    v = row.get(f"d_{m}_sigadj") if hasattr(row, "get") else None
    return v is not None and not (isinstance(v, float) and math.isnan(v))


# ------------------------------------------------------------------------------------------ output


def _cell(row: Mapping[str, Any], m: str, pts: bool) -> str:
    if f"d_{m}" not in row or row[f"d_{m}"] is None or (isinstance(row[f"d_{m}"], float) and
                                                          math.isnan(row[f"d_{m}"])):
        return ""
    s = 100.0 if pts else 1.0
    f = "{:+.1f}" if pts else "{:+.4f}"
    d = f.format(s * row[f"d_{m}"])
    lo, hi = (ci_end(s * row[f"d_{m}_low"], f), ci_end(s * row[f"d_{m}_high"], f)) \
        if not math.isnan(row[f"d_{m}_low"]) else ("n/a", "n/a")
    sig = bool(row[f"d_{m}_sigadj"]) if _has_adjusted(row, m) else bool(row[f"d_{m}_sig"])
    return (f"**{d}**" if sig else d) + f" [{lo}, {hi}] {int(row[f'd_{m}_wins'])}/{int(row[f'd_{m}_n'])}"


def _g(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):g}"


def to_markdown(name: str, table: pd.DataFrame) -> str:
    """A paper table as markdown: means, and per metric ``Δ [95 % CI] wins/n`` (**bold**: significant — after Holm
    over the table's paired tests where the table carries adjusted p-values (``lth_vs_dense``,
    ``ballot_vs_baselines``), else the CI excludes 0)."""
    from .analysis import markdown_table

    if name in RENDERERS:
        return RENDERERS[name](table)
    if name == "provenance":
        return markdown_table(table.assign(compute_seconds=table["compute_seconds"].round(0).astype("Int64"),
                                           compute_epochs=table["compute_epochs"].round(0).astype("Int64")))
    means = [f"{r['acc']:.3f} / {r['cwv']:.4f} / {r['mcd']:.3f}" for _, r in table.iterrows()]
    head = [k for k in KEYS[name] if k in table]
    out = with_sparsity(table[head].astype({"density": float}))  # reports show both (SPEC §0)
    out["sparsity"] = out["sparsity"].map("{:.6g}".format)
    out["density"] = out["density"].map("{:g}".format)
    if name == "ballot_vs_baselines" and "compute_ballot" in table:
        out["compute (epochs) Ballot / vs"] = [f"{_g(r['compute_ballot'])} / {_g(r['compute_vs'])}"
                                              for _, r in table.iterrows()]
    elif "compute" in table:
        out["compute (epochs)"] = table["compute"].map(_g)
    out["mean acc / CWV / MCD" if name == "lth_vs_dense" else "Ballot acc / CWV / MCD (mean)"] = means
    ref = "dense" if name == "lth_vs_dense" else "baseline"
    for m, pts in METRICS:
        out[f"Δ {m.upper()} vs {ref}" + (" (pts)" if pts else "")] = [_cell(r, m, pts) for _, r in table.iterrows()]
    return markdown_table(out)


def export(tables: Mapping[str, pd.DataFrame], out_dir: str | Path, markdown: Mapping[str, str] = {}) -> list[Path]:
    """Write every table as ``<name>.csv`` and ``<name>.json`` (records) and ``<name>.md`` into ``out_dir``, and each
    ready-made ``markdown`` text (name -> text: notebook 04's population tables) as ``<name>.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, t in tables.items():
        for suffix, write in ((".csv", lambda p, t=t: t.to_csv(p, index=False)),
                              (".json", lambda p, t=t: p.write_text(t.to_json(orient="records", indent=1))),
                              (".md", lambda p, t=t, n=name: p.write_text(to_markdown(n, t) + "\n"))):
            p = out_dir / f"{name}{suffix}"
            write(p)
            paths.append(p)
    for name, text in dict(markdown).items():
        p = out_dir / f"{name}.md"
        p.write_text(text + "\n")
        paths.append(p)
    return paths


def read_export(path: str | Path) -> pd.DataFrame:
    """A table written by :func:`export` (its JSON file)."""
    return pd.DataFrame(json.loads(Path(path).read_text()))


BLOCK = re.compile(r"<!-- table:(?P<name>[\w-]+) -->\n(?P<body>.*?)\n?<!-- /table:(?P=name) -->", re.S)


def blocks(text: str) -> dict[str, str]:
    """The marked table blocks of a paper page: name -> markdown between the markers."""
    return {m.group("name"): m.group("body").strip("\n") for m in BLOCK.finditer(text)}


def fill_blocks(text: str, texts: Mapping[str, str]) -> str:
    """``text`` with every marked block whose name is in ``texts`` replaced by that markdown."""
    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in texts:
            return m.group(0)
        return f"<!-- table:{name} -->\n{texts[name]}\n<!-- /table:{name} -->"

    return BLOCK.sub(sub, text)


def update_papers(tables: Mapping[str, pd.DataFrame], papers: str | Path, extra: Mapping[str, str] = {}) -> list[Path]:
    """Rewrite the marked blocks of every ``papers/*.md`` from ``tables`` (and ``extra`` name -> markdown);
    blocks whose table is absent are left as they are. Returns the files changed."""
    texts = {n: to_markdown(n, t) for n, t in tables.items()}
    texts.update(dict(extra))
    changed = []
    for p in sorted(Path(papers).glob("*.md")):
        old = p.read_text()
        new = fill_blocks(old, texts)
        if new != old:
            p.write_text(new)
            changed.append(p)
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ballot_lib.paper_tables RESULTS [--out DIR] [--papers papers/] [--record NAME ...]``."""
    ap = argparse.ArgumentParser(prog="python -m ballot_lib.paper_tables", description=main.__doc__)
    ap.add_argument("results", type=Path, help="results store (e.g. outputs/suite/results)")
    ap.add_argument("--out", type=Path, default=None, help="write CSV/JSON/markdown of every table here")
    ap.add_argument("--papers", type=Path, default=None, help="rewrite the marked table blocks of these pages")
    ap.add_argument("--record", action="append", default=[], metavar="NAME",
                    help="build only from the recorded comparisons whose name contains NAME (e.g. a tag); "
                         "repeatable; default: every record (one per table, dataset and model)")
    a = ap.parse_args(argv)
    # Check everything before a line is written: a wrong path must not empty papers/ (its blocks and exports).
    if not (a.results / "runs").is_dir():
        print(f"error: {a.results} is not a results store (no runs/ folder in it); give the store a notebook or "
              "`sweep grid` wrote, e.g. outputs/suite/results", file=sys.stderr)
        return 2
    for flag, folder in (("--out", a.out), ("--papers", a.papers)):
        if folder is not None and folder.exists() and not folder.is_dir():
            print(f"error: {flag} {folder} is a file, not a folder", file=sys.stderr)
            return 2
    if a.papers is not None and not any(BLOCK.search(p.read_text()) for p in sorted(a.papers.glob("*.md"))):
        # a mistyped folder used to "update nothing", exit 0 and get a tables/ folder of exports
        print(f"error: --papers {a.papers} holds no page with table blocks (<!-- table:NAME --> ... "
              f"<!-- /table:NAME --> in a *.md file): give the repository's papers/ folder", file=sys.stderr)
        return 2
    try:
        if a.record:  # a name no record matches is about --record; anything else names its own file
            try:
                select_records(load_records(a.results), a.record)
            except ResultsError:
                raise
            except ValueError as e:
                print(f"error: --record: {e}", file=sys.stderr)
                return 2
        tables = build(a.results, a.record)
    except (ValueError, ResultsError, FileNotFoundError) as e:
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)
        return 2
    pr = prune_responsibly(a.results) if (a.papers or a.out) else None
    if (a.out or a.papers) and set(tables) == {"provenance"} and not pr:
        print(f"error: {a.results} holds no recorded comparison (notebooks 01-03 record theirs under "
              f"{a.results / COMPARISONS}); nothing written", file=sys.stderr)
        return 2
    for name, t in tables.items():
        print(f"### {name}\n\n{to_markdown(name, t)}\n")
    # Notebook 04's population tables: markdown only (several tables and their readings).
    extra = {PRUNE_RESPONSIBLY: pr} if pr else {}
    if a.out:
        export(tables, a.out, extra)
        print(f"exported to {a.out}")
    if a.papers:
        # The exports next to the pages are what the test of papers/ compares the marked blocks with.
        export(tables, Path(a.papers) / "tables", extra)
        changed = update_papers(tables, a.papers, extra)
        print("updated:", ", ".join(map(str, changed)) or "nothing")
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: table kinds that other code registers with
    # register_table live in ballot_lib.paper_tables.
    from ballot_lib.paper_tables import main as _main

    sys.exit(_main())

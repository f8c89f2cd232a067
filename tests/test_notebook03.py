"""Notebook 03 under papermill with injected parameters: every method lands in its results store."""
from __future__ import annotations

from pathlib import Path

import nbformat

from ballot_lib import sweep
from ballot_lib.results import load_results

REPO = Path(__file__).resolve().parents[1]


def test_notebook03_papermill_with_injected_parameters(tmp_path):
    out = tmp_path / "03.ipynb"
    results = tmp_path / "results"
    params = {"datasets": ["digits"], "models": ["mlp"], "densities": [0.1], "seeds": [0, 1], "epochs": 6,
              "batch_size": 128, "ballot_candidates": {"default": {}, "veto": {"conflict": "veto"}},
              "dataset_overrides": {}, "rewind_epoch": 1, "results_dir": str(results), "device": "cpu"}
    sweep.execute(REPO / "notebooks" / "03_baseline_comparison.ipynb", out, params)
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'datasets = ["digits"]' in injected[0].source
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "figures must be inline"
    # The reading is shown in parts, each once and under the section whose table it reads; the last section
    # closes with a short summary, not the whole reading again (review).
    def shown(c) -> str:
        return "\n".join(o.get("data", {}).get(k, "") for o in c.get("outputs", [])
                         for k in ("text/markdown", "text/html", "text/plain")) + "\n".join(
            o.get("text", "") for o in c.get("outputs", []))

    def cell_of(s: str) -> int:
        hits = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and s in shown(c)]
        assert len(hits) == 1, (s, hits)
        return hits[0]

    def section(n: int) -> int:
        return next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith(f"## {n} "))

    assert (section(3) < cell_of("- **Compute**") < section(4) < cell_of("- Decomposition") < section(5)
            < cell_of("- Improvement-% (class fairness") < section(6) < cell_of("Densities [0.1]"))
    assert "Class-fairness (CWV, MCD) improvement over" not in shown(nb.cells[cell_of("Densities [0.1]")])
    # tables in points: the decomposition (as its figure and notebook 05) and the val choice (as notebook 02)
    assert "pts of class recall" in shown(nb.cells[section(5) - 1])
    assert "val MCD (pts)" in shown(nb.cells[cell_of("chosen on pooled val: '")])
    df = load_results(results)
    assert {"dense", "mp", "lth", "ballot", "safecompress", "fairscratch"} <= set(df["method"])
    assert set(df["dataset"]) == {"digits"} and set(df.loc[df["method"] != "dense", "density_target"]) == {0.1}
    # the injected rewind point reached LTH and every Ballot run (late rewinding for both alike)
    assert set(df.loc[df["method"].isin(["lth", "ballot"]), "method_cfg.rewind_epoch"]) == {1}
    # ... and the compute-matched runs train as long as Ballot: 2T − k = 11 epochs (dense run included for Ballot)
    t = df[df["split"] == "test"]
    # (a budget of 1, the default, is not stored in the config)
    matched = t[t["method"].isin(["safecompress", "fairscratch"]) & t["method_cfg.budget"].notna()]
    assert set(matched["compute_epochs"]) == set(t.loc[t["method"] == "ballot", "compute_epochs"]) == {11.0}
    # Every selection-matched MP/LTH run reuses its last-epoch twin's training; SafeCompress and FairScratch
    # (masks that change during training) train their val-rule runs, store the selected epoch's mask and the final
    # one, and their last-epoch runs reuse that training: one training per pair.
    val = df[(df["split"] == "test") & (df.get("select") == "val_rule") & (df["method"] != "ballot")]
    static = val["method"].isin(["mp", "lth"])
    assert static.any() and val.loc[static, "derived_from"].notna().all()
    assert (~static).any() and val.loc[~static, "derived_from"].isna().all()
    last = t[t["method"].isin(["safecompress", "fairscratch"]) & (t["select"] != "val_rule")]
    assert len(last) == (~static).sum() and set(last["derived_from"]) == set(val.loc[~static, "run_id"])
    reports = list((results / "reports").glob("03_*.md"))
    assert reports and "Improvement" in reports[0].read_text() and "rewind to θ1" in reports[0].read_text()
    # ... and the report holds the whole reading: every section's part
    assert all(x in reports[0].read_text() for x in ("- **Compute**", "- Decomposition", "- Improvement-% (class"))
    # Notebook 05's builder rebuilds notebook 03's tables from the store alone.
    from ballot_lib import comparison, paper_tables

    tables = paper_tables.build(results)
    for kind in ("baseline_comparison", "baseline_improvement", "ballot_decomposition"):
        assert kind in tables and len(tables[kind]), kind
    rows = load_results(results)
    rebuilt = tables["baseline_comparison"]
    record = next(r for r in paper_tables.load_records(results) if r["kind"] == "baseline_comparison")
    ballot_ids = {r["run_id"] for r in record["runs"] if r["variant"] == "Ballot"}
    stored = rows[rows["run_id"].isin(ballot_ids) & (rows["split"] == "test")]
    assert len(stored) == 2  # two seeds
    got = rebuilt[(rebuilt["table"] == "val_rule") & (rebuilt["method"] == "Ballot")]["acc"].iloc[0]
    assert got == stored["acc"].mean()
    assert "Selection-matched" in paper_tables.to_markdown("baseline_comparison", rebuilt)
    # `sweep cost`'s plan of this job (with the candidate the notebook chose) lists exactly the runs it stored.
    from ballot_lib.cost import plan_jobs

    plan = plan_jobs("03_baseline_comparison.ipynb", [params], choices={"ballot": record["chosen"]})
    assert set(plan["run_id"]) == set(rows["run_id"])

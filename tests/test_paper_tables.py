"""The tables of papers/ rebuilt from a results store: recorded comparisons, numbers equal to the paired analysis,
provenance, CSV/JSON export, the marked blocks of papers/*.md, and notebook 05 reproducing the library's tables."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ballot_lib import paper_tables as pt
from ballot_lib.analysis import summarize, versus
from ballot_lib.methods import Variant, run_grid
from conftest import make_experiment

REPO = Path(__file__).resolve().parents[1]
SEEDS = [0, 1]


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    """Missing values as None (JSON has no NaN), numbers as floats, so a table and its export compare equal."""
    return df.astype(object).where(df.notna(), None).reset_index(drop=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny store with one recorded comparison of each kind (digits, MLP of width 16, 2 epochs, 2 seeds)."""
    root = tmp_path_factory.mktemp("paper_tables") / "results"
    exp = make_experiment(root)
    base = [Variant("dense", "dense"), Variant("MP", "mp"), Variant("LTH", "lth")]
    df01 = run_grid(exp, base, [0.2, 0.05], SEEDS, progress=False)
    pt.record_comparison("01_tiny", "lth_vs_dense", df01, {"dataset": "digits", "results_dir": str(root)}, root,
                         notebook="01_lth_fairness_failure.ipynb")
    df02 = run_grid(exp, base + [Variant("Ballot", "ballot", {"vote_fraction": 0.3})], [0.2], SEEDS,
                    progress=False)
    pt.record_comparison("02_tiny", "ballot_vs_baselines", df02, {"dataset": "digits"}, root,
                         notebook="02_ballot_method.ipynb", chosen="vote_fraction=0.3")
    # A one-seed record of the same kind and setting: never chosen over the two-seed one.
    pt.record_comparison("02_tiny_one_seed", "ballot_vs_baselines", df02[df02["seed"] == 0],
                         {"dataset": "digits", "seeds": [0]}, root, notebook="02_ballot_method.ipynb")
    return root, df01, df02


def test_records_keep_run_ids_and_labels_without_locations(store):
    root, df01, _ = store
    recs = {r["name"]: r for r in pt.load_records(root)}
    assert set(recs) == {"01_tiny", "02_tiny", "02_tiny_one_seed"}
    r = recs["01_tiny"]
    assert r["parameters"] == {"dataset": "digits"} and r["kind"] == "lth_vs_dense"
    assert {(x["run_id"], x["variant"]) for x in r["runs"]} == set(zip(df01["run_id"], df01["variant"]))
    with pytest.raises(ValueError, match="unknown comparison kind"):
        pt.record_comparison("x", "nope", df01, {}, root)


def test_ballot_table_equals_the_paired_analysis(store):
    root, _, df02 = store
    tabs = pt.build(root)
    t = tabs["ballot_vs_baselines"]
    assert list(t["vs"]) == ["MP", "LTH"] and set(t["density"]) == {0.2}
    for b in ("MP", "LTH"):
        v = versus(df02, b, ["Ballot"], ["acc", "cwv", "mcd"], reference_any_density=False).set_index("metric")
        row = t[t["vs"] == b].iloc[0]
        for m in ("acc", "cwv", "mcd"):
            assert row[f"d_{m}"] == pytest.approx(v.loc[m, "diff"])
            assert row[f"d_{m}_low"] == pytest.approx(v.loc[m, "ci_low"])
            assert row[f"d_{m}_wins"] == v.loc[m, "wins"] and row[f"d_{m}_n"] == 2
    s = summarize(df02, ["acc", "cwv", "mcd"])
    assert t.iloc[0]["mcd"] == pytest.approx(float(s.loc[s["variant"] == "Ballot", "mcd"].iloc[0]))
    # The table says how each side picked its checkpoint and what it trained: this store's Ballot (refined) picks
    # on val while MP and LTH keep their last epoch, and it says so; 2 epochs of dense + 2 of retraining each.
    assert list(t["selection"]) == ["Ballot val_rule; MP last", "Ballot val_rule; LTH last"]
    assert list(t["compute_ballot"]) == [4.0, 4.0] and list(t["compute_vs"]) == [4.0, 4.0]


def test_lth_table_has_dense_first_then_methods_by_density(store):
    root, df01, _ = store
    t = pt.build(root)["lth_vs_dense"]
    assert list(zip(t["method"], t["density"])) == [("dense", 1.0), ("MP", 0.2), ("MP", 0.05), ("LTH", 0.2),
                                                     ("LTH", 0.05)]
    v = versus(df01, "dense", ["LTH"], ["mcd"])
    assert t.iloc[4]["d_mcd"] == pytest.approx(float(v[np.isclose(v["density"], 0.05)]["diff"].iloc[0]))
    assert list(t["selection"]) == ["—", "last", "last", "last", "last"]
    assert list(t["compute"]) == [2.0, 4.0, 4.0, 4.0, 4.0]
    assert np.isnan(t.iloc[0].get("d_mcd", np.nan))


def test_provenance_names_the_runs_seeds_and_compute(store):
    root, _, _ = store
    prov = pt.build(root)["provenance"].set_index("table")
    b = prov.loc["ballot_vs_baselines"]
    # The two-seed record is the one the table rests on.
    assert b["record"] == "02_tiny" and b["seeds"] == "0, 1" and b["chosen"] == "vote_fraction=0.3"
    assert b["runs"] == 8 and b["epochs"] == 2 and b["compute_seconds"] > 0
    assert prov.loc["lth_vs_dense", "densities"] == "0.2, 0.05"


def test_export_and_markdown(store, tmp_path):
    root, _, _ = store
    tabs = pt.build(root)
    paths = pt.export(tabs, tmp_path)
    assert {p.name for p in paths} >= {"ballot_vs_baselines.csv", "ballot_vs_baselines.json", "lth_vs_dense.md"}
    back = pt.read_export(tmp_path / "ballot_vs_baselines.json")
    pd.testing.assert_frame_equal(back, tabs["ballot_vs_baselines"], check_dtype=False)
    md = pt.to_markdown("ballot_vs_baselines", tabs["ballot_vs_baselines"])
    assert md.splitlines()[0].startswith("| dataset | model | density | sparsity | vs | selection | compute (epochs) Ballot / vs "
                                         "| Ballot acc / CWV / MCD (mean) |")
    assert " 0/2" in md or " 1/2" in md or " 2/2" in md


def test_an_empty_store_gives_an_empty_provenance_and_exports(tmp_path):
    (tmp_path / "empty").mkdir()  # a store folder without runs (a path that is no folder is an error)
    tabs = pt.build(tmp_path / "empty")
    assert list(tabs) == ["provenance"] and tabs["provenance"].empty
    assert list(tabs["provenance"].columns) == pt.PROVENANCE_COLUMNS
    pt.export(tabs, tmp_path / "out")
    assert (tmp_path / "out" / "provenance.md").read_text().startswith("| table | dataset |")


def test_missing_runs_are_named(tmp_path):
    root = tmp_path / "results"
    (root / "comparisons").mkdir(parents=True)
    (root / "comparisons" / "x.json").write_text(json.dumps(
        {"name": "x", "kind": "lth_vs_dense", "runs": [{"run_id": "gone", "variant": "dense"}]}))
    with pytest.raises(FileNotFoundError, match="missing from the store"):
        pt.pick_records(pt.load_records(root), pd.DataFrame({"run_id": ["other"], "variant": ["dense"]}))


def test_update_papers_rewrites_only_marked_blocks(store, tmp_path):
    root, _, _ = store
    page = tmp_path / "p.md"
    page.write_text("intro\n<!-- table:lth_vs_dense -->\nold\n<!-- /table:lth_vs_dense -->\n"
                    "<!-- table:unknown -->\nkeep\n<!-- /table:unknown -->\nend\n")
    tabs = pt.build(root)
    assert pt.update_papers(tabs, tmp_path) == [page]
    b = pt.blocks(page.read_text())
    assert b["lth_vs_dense"] == pt.to_markdown("lth_vs_dense", tabs["lth_vs_dense"]) and b["unknown"] == "keep"
    assert pt.update_papers(tabs, tmp_path) == []  # idempotent


def test_papers_carry_only_tables_exported_by_notebook_05():
    """Each marked table of papers/*.md equals the markdown of the table exported next to it (papers/tables/)."""
    found = 0
    for page in sorted((REPO / "papers").glob("*.md")):
        for name, body in pt.blocks(page.read_text()).items():
            exported = REPO / "papers" / "tables" / f"{name}.json"
            if name == pt.PRUNE_RESPONSIBLY:  # notebook 04's tables: exported as markdown only
                md = REPO / "papers" / "tables" / f"{name}.md"
                assert md.is_file() and body == md.read_text().strip(), f"{page.name}: {name} differs from {md}"
                found += 1
                continue
            assert exported.is_file(), f"{page.name}: table {name} has no export in papers/tables/"
            assert body == pt.to_markdown(name, pt.read_export(exported)), f"{page.name}: table {name} differs"
            found += 1
    assert found >= 1


def test_notebook_05_reproduces_the_library_tables(store, tmp_path):
    from ballot_lib import sweep

    root, _, _ = store
    out = tmp_path / "tables"
    nb_out = tmp_path / "05.ipynb"
    sweep.execute(REPO / "notebooks" / "05_results_report.ipynb", nb_out,
                  {"results_dir": str(root), "out_dir": str(out)})
    for name, t in pt.build(root).items():
        got = pt.read_export(out / f"{name}.json")
        pd.testing.assert_frame_equal(_norm(got), _norm(t), check_dtype=False)
        assert (out / f"{name}.csv").is_file()
    import nbformat

    nb = nbformat.read(nb_out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not any(o.get("output_type") == "error" for o in outputs)


SUITE_STORE = REPO / "outputs" / "suite" / "results"


@pytest.mark.skipif(not (SUITE_STORE / "comparisons").is_dir(), reason="no suite store: run `make run` first")
def test_papers_tables_are_what_notebook_05_builds_from_the_suite_store():
    """After `make run`, the tables in papers/ (their exports) equal what notebook 05 builds from the suite's
    store; regenerate them with `python -m ballot_lib.paper_tables outputs/suite/results --papers papers/`."""
    built = pt.build(SUITE_STORE)
    for name in ("ballot_vs_baselines", "lth_vs_dense"):
        exported = REPO / "papers" / "tables" / f"{name}.json"
        assert name in built and exported.is_file(), name
        got, want = _norm(pt.read_export(exported)), _norm(built[name])
        assert list(got.columns) == list(want.columns), name
        keys = pt.KEYS[name]
        pd.testing.assert_frame_equal(got[keys], want[keys], check_dtype=False)
        num = [c for c in want.columns if c not in keys]
        np.testing.assert_allclose(got[num].astype(float).to_numpy(), want[num].astype(float).to_numpy(),
                                   rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=name)


def test_papers_point_only_to_what_a_fresh_clone_has():
    import re

    for page in sorted((REPO / "papers").glob("*.md")):
        text = page.read_text()
        for dead in ("../shared/", "SPEC §", "outputs/issue_runs"):
            assert dead not in text, f"{page.name} refers to {dead!r}"
        for target in re.findall(r"\]\((\.\./[^)#]+)", text):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
    assert "05_results_report.ipynb" in (REPO / "papers" / "ballot.md").read_text()


def test_a_registered_table_kind_is_built_rendered_and_recorded(store, monkeypatch):
    root, _, df02 = store
    monkeypatch.setattr(pt, "KINDS", list(pt.KINDS))
    monkeypatch.setattr(pt, "BUILDERS", dict(pt.BUILDERS))
    monkeypatch.setattr(pt, "KEYS", dict(pt.KEYS))
    monkeypatch.setattr(pt, "RENDERERS", dict(pt.RENDERERS))
    pt.register_table("counts", lambda f: f.groupby("variant", as_index=False)["seed"].nunique(), ["variant"],
                      lambda t: "counted " + ",".join(t["variant"]))
    pt.record_comparison("03_tiny", "counts", df02, {}, root)
    try:
        tabs = pt.build(root)
        assert list(tabs["counts"]["seed"]) == [2, 2, 2, 2]
        assert pt.to_markdown("counts", tabs["counts"]) == "counted Ballot,LTH,MP,dense"
    finally:
        (root / "comparisons" / "03_tiny.json").unlink()


def test_provenance_has_one_row_per_setting_of_a_record():
    rows = []
    for ds, model, epochs, bs in (("digits_lt", "cnn", 20, 32), ("adult", "mlp", 4, 512)):
        for seed in (0, 1):
            for method, dens in (("dense", 1.0), ("lth", 0.1)):
                rows.append({"split": "test", "dataset": ds, "model": model, "variant": method, "method": method,
                             "seed": seed, "density_target": dens, "train.epochs": epochs, "train.batch_size": bs,
                             "run_id": f"{ds}{model}{method}{seed}", "compute_epochs": float(epochs),
                             "seconds": 1.0})
    prov = pt.provenance([({"kind": "baseline_comparison", "name": "03_x"}, pd.DataFrame(rows))])
    assert list(prov["dataset"]) == ["adult", "digits_lt"] and list(prov["model"]) == ["mlp", "cnn"]
    assert list(prov["epochs"]) == [4, 20] and list(prov["batch_size"]) == [512, 32]
    assert list(prov["runs"]) == [4, 4] and list(prov["compute_epochs"]) == [16.0, 80.0]


def test_provenance_counts_the_compute_of_each_trained_run_once():
    """A run derived from its twin under the other checkpoint rule copies the twin's compute and seconds, and a run
    can stand under two variants (Ballot[default] and Ballot): neither is counted twice (review)."""
    base = {"split": "test", "dataset": "digits", "model": "mlp", "seed": 0, "density_target": 0.1,
            "train.epochs": 4, "train.batch_size": 32, "compute_epochs": 4.0, "seconds": 10.0}
    rows = [{**base, "variant": "SafeCompress +val", "method": "safecompress", "run_id": "a", "derived_from": None},
            {**base, "variant": "SafeCompress", "method": "safecompress", "run_id": "b", "derived_from": "a"},
            {**base, "variant": "Ballot[default]", "method": "ballot", "run_id": "c", "derived_from": None},
            {**base, "variant": "Ballot", "method": "ballot", "run_id": "c", "derived_from": None},
            # derived from a run of another table: its training counts here
            {**base, "variant": "MP +val", "method": "mp", "run_id": "d", "derived_from": "elsewhere"}]
    prov = pt.provenance([({"kind": "baseline_comparison", "name": "03_x"}, pd.DataFrame(rows))])
    assert prov["runs"].tolist() == [4]
    assert prov["compute_epochs"].tolist() == [12.0] and prov["compute_seconds"].tolist() == [30.0]


def test_the_command_refuses_a_path_that_is_not_a_store_and_writes_nothing(tmp_path, capsys):
    papers = tmp_path / "papers"
    papers.mkdir()
    page = papers / "ballot.md"
    page.write_text("<!-- table:provenance -->\nkept\n<!-- /table:provenance -->\n")
    assert pt.main([str(tmp_path / "no_such_store"), "--papers", str(papers), "--out", str(tmp_path / "o")]) == 2
    assert "is not a results store" in capsys.readouterr().err
    # A store with nothing recorded: nothing to export, nothing written either.
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    assert pt.main([str(tmp_path / "empty"), "--papers", str(papers)]) == 2
    assert "holds no recorded comparison" in capsys.readouterr().err
    assert page.read_text().splitlines()[1] == "kept" and not (papers / "tables").exists()
    assert not (tmp_path / "o").exists()
    # A mistyped --papers folder (no page with table blocks) used to "update nothing", exit 0 and get tables/.
    for wrong in (tmp_path / "nonexist_papers", tmp_path / "empty"):
        assert pt.main([str(tmp_path / "empty"), "--papers", str(wrong)]) == 2
        assert "holds no page with table blocks" in capsys.readouterr().err
    assert not (tmp_path / "nonexist_papers").exists()


def test_records_of_different_experiments_warn_and_can_be_chosen(store, tmp_path, capsys):
    """A grid's one-seed record beside its aggregate is one experiment (no warning); two records of one table that
    differ in another parameter (notebook 03 at two rewind points, say) are two: the build warns, names what
    differs and which record it used, and record names or tags choose."""
    import shutil
    import warnings

    root, _, df02 = store
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pt.build(root)  # 02_tiny and 02_tiny_one_seed differ only in their seeds
    copy = tmp_path / "results"
    shutil.copytree(root, copy)
    # a record written before a parameter existed is read with the notebook's default for it: same experiment
    from ballot_lib.notebook_files import notebook_parameters, notebook_path

    epochs = notebook_parameters(notebook_path("02_ballot_method.ipynb"))["epochs"]
    pt.record_comparison("02_tiny_with_default", "ballot_vs_baselines", df02, {"dataset": "digits", "epochs": epochs},
                         copy, notebook="02_ballot_method.ipynb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pt.build(copy)
    (copy / "comparisons" / "02_tiny_with_default.json").unlink()
    pt.record_comparison("02_tiny_eta2", "ballot_vs_baselines", df02, {"dataset": "digits", "eta": 2.0}, copy,
                         notebook="02_ballot_method.ipynb")
    with pytest.warns(UserWarning, match=r"differ in eta: 2\.0, null\) for ballot_vs_baselines on digits/mlp.*"
                                         r"these use eta=2\.0 \(records 02_tiny_eta2\)"):
        tabs = pt.build(copy)
    assert set(tabs["provenance"].loc[tabs["provenance"]["table"] == "ballot_vs_baselines", "record"]) == {
        "02_tiny_eta2"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        only = pt.build(copy, ["_one_seed"])  # any part of a name (a tag) selects
        both = pt.build(copy, ["01_tiny", "eta2"])
    assert set(only["provenance"]["record"]) == {"02_tiny_one_seed"} and "lth_vs_dense" not in only
    assert set(both["provenance"]["record"]) == {"01_tiny", "02_tiny_eta2"}
    # a part that matches records of both experiments keeps both, and the warning with them
    with pytest.warns(UserWarning, match="different experiments"):
        pt.build(copy, ["02_tiny"])
    with pytest.raises(ValueError, match=r"no recorded comparison matches \['nope'\]; the store's records: 01_tiny"):
        pt.build(copy, ["nope"])
    out = tmp_path / "o"
    assert pt.main([str(copy), "--record", "nope", "--out", str(out)]) == 2
    assert "--record: no recorded comparison matches" in capsys.readouterr().err and not out.exists()


GOOD_RECORD = {"name": "01_lth_fairness_failure_digits_mlp_0000", "kind": "lth_vs_dense",
               "notebook": "01_lth_fairness_failure.ipynb", "parameters": {"dataset": "digits"},
               "runs": [{"run_id": "deadbeef0000", "variant": "dense"}]}


@pytest.mark.parametrize("text, message", [
    (json.dumps(GOOD_RECORD, indent=1)[:80], r"is corrupt \(.*\); re-run 01_lth_fairness_failure\.ipynb to record "
                                             r"it again, or delete the file"),
    ("[]", r"is malformed \(a record is a JSON object, got list \[\]\); re-run 01_lth_fairness_failure\.ipynb"),
    ('{"name": "x"}', r"is malformed \(missing key\(s\) \['kind', 'runs'\]"),
    (json.dumps({**GOOD_RECORD, "runs": [{"run_id": 3}]}), r"is malformed \(runs\[0\] must be an object"),
    (json.dumps(GOOD_RECORD), r"comparison record '01_lth_fairness_failure_digits_mlp_0000' \(.*\.json\) rests on "
                              r"run\(s\) missing from the store .*\['deadbeef0000'\]; re-run 01_lth"),
], ids=["truncated", "a-list", "no-keys", "bad-run-entry", "missing-run"])
def test_a_broken_comparison_record_is_a_one_line_error_naming_it(tmp_path, capsys, text, message):
    """A truncated record gave a raw traceback advising to delete a run folder; a record of a missing run a raw
    FileNotFoundError; `[]` or a record without its keys was silently dropped; and each was printed as an error
    about --record though none was given."""
    root = tmp_path / "results"
    (root / "runs").mkdir(parents=True)
    path = root / "comparisons" / "01_lth_fairness_failure_digits_mlp_0000.json"
    path.parent.mkdir()
    path.write_text(text)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for argv in ([str(root)], [str(root), "--out", str(tmp_path / "o")], [str(root), "--record", "01_lth"]):
        assert pt.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: comparison record ") and err.count("\n") == 1, err
        assert "--record" not in err and "Traceback" not in err and str(path) in err, err
        assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        pt.build(root)


def test_provenance_names_the_rewind_point_of_lth_and_ballot():
    """A table built from late-rewound runs (θ1) said nothing of it next to the paper's θ0 LTH numbers."""
    import pandas as pd

    from ballot_lib import paper_tables as PT

    frame = pd.DataFrame([
        {"split": "test", "dataset": "d", "model": "m", "variant": v, "method": meth, "seed": 0,
         "density_target": dens, "run_id": f"r{i}", "method_cfg.rewind_epoch": k, "compute_epochs": 1.0,
         "seconds": 1.0}
        for i, (v, meth, dens, k) in enumerate([("dense", "dense", 1.0, None), ("LTH", "lth", 0.1, 1),
                                                ("Ballot", "ballot", 0.1, 1), ("MP", "mp", 0.1, 0)])])
    rec = {"kind": "ballot_vs_baselines", "name": "r", "parameters": {}}
    assert PT.provenance([(rec, frame)])["rewind"].tolist() == ["θ1"]
    assert PT.provenance([(rec, frame.drop(columns="method_cfg.rewind_epoch"))])["rewind"].tolist() == [""]


def test_markdown_shows_sparsity_next_to_density():
    """SPEC §0: reports show density and sparsity (1 − density) both."""
    row = {"dataset": "digits_lt", "model": "mlp", "density": 0.05, "vs": "LTH", "selection": "val_rule",
           "compute_ballot": 40.0, "compute_vs": 40.0, "acc": 0.9, "cwv": 0.01, "mcd": 0.3}
    for m in ("acc", "cwv", "mcd"):
        row.update({f"d_{m}": 0.01, f"d_{m}_low": -0.01, f"d_{m}_high": 0.03, f"d_{m}_wins": 2, f"d_{m}_n": 3,
                    f"d_{m}_sig": False})
    md = pt.to_markdown("ballot_vs_baselines", pd.DataFrame([row])).splitlines()
    assert "| density | sparsity |" in md[0] and "| 0.05 | 0.95 |" in md[2]


def test_paper_comparison_tables_correct_over_the_cells_they_show():
    """The baseline_comparison kind (notebook 05, papers/) builds notebook 03's table with its default metrics:
    group metrics tested, shown and counted in the same Holm family; improvement rows carry a Holm p."""
    from ballot_lib import comparison as C

    kind = pt.BUILDERS["baseline_comparison"]
    assert kind is C.paper_comparison
    rows = []
    for variant, shift in (("Ballot", 0.05), ("Ballot plain", 0.0), ("LTH", 0.0), ("LTH +val", 0.0), ("Dense", 0.0)):
        for seed in range(3):
            j = 0.001 * seed * (1 + (variant == "LTH"))
            rows.append({"variant": variant, "dataset": "adult", "model": "mlp", "density_target": 0.1,
                         "seed": seed, "split": "test", "acc": 0.85 + j, "cwv": 0.02 + j, "mcd": 0.3 + j,
                         "dp_gap": 0.1 + shift + j, "eo_gap": 0.1 + j, "group_acc_gap": 0.05 + j,
                         "compute_epochs": 8.0})
    df = pd.DataFrame(rows)
    t = C.paper_comparison(df)
    last = t[t["table"] == "last"].drop(columns="table")
    assert "padj_dp_gap" in last and C.family_size(last) == 6  # LTH × (acc, cwv, mcd, dp, eo, group acc)
    md = pt.to_markdown("baseline_comparison", t)
    assert "Ballot − method: dp_gap" in md and "| sparsity |" in md


def test_lth_vs_dense_decides_with_holm_over_its_paired_tests_as_notebook_01():
    """Notebook 01 applies Holm over its table's paired tests; its paper table and notebook 05's reading bolded and
    read the same cells by the per-test CI (an MCD change at p = 0.02 among 12 tests stayed 'significant')."""
    import numpy as np

    from ballot_lib import readings
    from ballot_lib.analysis import adjust_family, versus

    rng = np.random.default_rng(0)
    # MCD − dense per seed: MP no change, LTH @ 0.2 a clear rise, LTH @ 0.05 a small one (p ≈ 0.01 per test, not
    # significant after Holm over 12 tests).
    mcd_shift = {("dense", 1.0): [0, 0, 0, 0], ("MP", 0.2): [0.01, -0.01, 0.005, -0.005],
                 ("MP", 0.05): [-0.01, 0.01, -0.005, 0.005], ("LTH", 0.2): [0.031, 0.032, 0.03, 0.031],
                 ("LTH", 0.05): [0.008, 0.012, 0.006, 0.014]}
    rows = []
    for seed in range(4):
        for (variant, density), shifts in mcd_shift.items():
            rows.append({"dataset": "digits", "model": "mlp", "variant": variant, "method": variant.lower(),
                         "density_target": density, "seed": seed, "split": "test", "select": "last",
                         "compute_epochs": 1.0, "acc": 0.9 + rng.normal(0, 0.02), "cwv": 0.01 + rng.normal(0, 0.001),
                         "mcd": 0.2 + shifts[seed]})
    frame = pd.DataFrame(rows)
    table = pt.lth_vs_dense(frame)
    expected = adjust_family(versus(frame, "dense", ["MP", "LTH"], [m for m, _ in pt.METRICS]), "holm")
    lth = table[(table["method"] == "LTH") & np.isclose(table["density"], 0.2)].iloc[0]
    e = expected[(expected["a"] == "LTH") & np.isclose(expected["density"], 0.2) & (expected["metric"] == "mcd")]
    assert lth["d_mcd_padj"] == pytest.approx(float(e["p_adj"].iloc[0]))
    assert bool(lth["d_mcd_sigadj"]) == bool(e["significant_adj"].iloc[0])
    long = pt.long_form("lth_vs_dense", table)
    assert long.attrs["family"] == 12 and "significant_adj" in long
    text = " ".join(readings.paired(long))
    assert "Holm" in text and "12 paired tests" in text
    # A cell significant per test but not after the correction is not bold.
    weak = long[long["significant"] & ~long["significant_adj"]]
    assert list(zip(weak["a"], weak["metric"], weak["density"])) == [("LTH (digits/mlp)", "mcd", 0.05)]
    for r in weak.itertuples():
        row = table[(table["method"] + " (" + table["dataset"] + "/" + table["model"] + ")" == r.a)
                    & np.isclose(table["density"], r.density)]
        assert not pt._cell(row.iloc[0], r.metric, True).startswith("**")

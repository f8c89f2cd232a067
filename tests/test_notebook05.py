"""Notebook 05's validation cell: a results_dir that is not a store is a clear error before anything is written."""
from __future__ import annotations

from pathlib import Path

import pytest

from ballot_lib import sweep

REPO = Path(__file__).resolve().parents[1]


def test_notebook05_rejects_a_results_dir_that_is_not_a_store(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RuntimeError, match="05_results_report.ipynb failed"):
        sweep.execute(REPO / "notebooks" / "05_results_report.ipynb", tmp_path / "o.ipynb",
                      {"results_dir": str(missing)})
    log = (tmp_path / "o.log").read_text()
    assert "ParameterError" in log and "is not a results store" in log and str(missing) in log
    assert not missing.exists()


def test_notebook05_rejects_record_names_that_match_no_record(tmp_path):
    store = tmp_path / "results"
    (store / "runs").mkdir(parents=True)
    (store / "comparisons").mkdir()
    (store / "comparisons" / "03_x_1a2b3c4d_baseline_comparison.json").write_text(
        '{"name": "03_x_1a2b3c4d_baseline_comparison", "kind": "baseline_comparison", "parameters": {}, '
        '"runs": [{"run_id": "0123456789ab", "variant": "LTH"}]}')
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with pytest.raises(RuntimeError, match="05_results_report.ipynb failed"):
        sweep.execute(REPO / "notebooks" / "05_results_report.ipynb", tmp_path / "o.ipynb",
                      {"results_dir": str(store), "record_names": ["9z9z9z9z"]})
    log = (tmp_path / "o.log").read_text()
    assert "ParameterError" in log and "record_names: no recorded comparison matches ['9z9z9z9z']" in log
    assert "03_x_1a2b3c4d_baseline_comparison" in log  # the store's records, to choose from
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # nothing written


def test_notebook05_takes_notebook_04s_disparity_and_correction():
    """Notebook 05 rebuilt notebook 04's population tables with MCD and BH whatever notebook 04 had used (a
    non-default review: CWV in 04, MCD in 05, different numbers and nothing said why); both are parameters now,
    checked like notebook 04's."""
    from ballot_lib.notebook_files import notebook_parameters
    from ballot_lib.validation import validate_notebook_params

    declared = notebook_parameters(REPO / "notebooks" / "05_results_report.ipynb")
    assert declared["disparity"] == "mcd" and declared["correction"] == "bh"
    with pytest.raises(ValueError, match="disparity"):
        validate_notebook_params(REPO / "notebooks" / "05_results_report.ipynb", {"disparity": "gini"})
    with pytest.raises(ValueError, match="correction"):
        validate_notebook_params(REPO / "notebooks" / "05_results_report.ipynb", {"correction": "fdr"})

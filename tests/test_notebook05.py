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

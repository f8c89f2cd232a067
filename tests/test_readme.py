"""Figures the README quotes from the code stay equal to what the code computes (a docs review found the
``params/`` totals and notebook 03's run counts out of date after the compute-matched runs were added)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def plan03(tmp_path_factory):
    import pandas as pd

    from ballot_lib.sweep import plan_params_file

    empty = tmp_path_factory.mktemp("empty_store")  # nothing complete: every run the files train counts
    files = sorted((ROOT / "params").glob("03_*.yaml"))
    assert len(files) == 6
    return pd.concat([plan_params_file(f, str(empty), folder=ROOT / "notebooks", validate=False) for f in files])


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def test_notebook_03_grid_figures_in_the_readme_are_what_sweep_cost_plans(plan03):
    runs, todo = len(plan03), int(plan03["todo"].sum())
    images = plan03.loc[plan03["todo"], "images"].sum() / 1e6
    compute_matched = int(plan03["variant"].str.contains("2T").sum())
    flat = " ".join(README.split())  # the README wraps lines anywhere
    assert f"Notebook 03's six files plan {_fmt(runs)} runs, of which {_fmt(todo)} train, for {_fmt(images)} M" in flat
    assert f"{_fmt(runs)} runs of which {_fmt(todo)} train, the {compute_matched} compute-matched 2T runs" in flat


def test_the_readme_names_python_versions_the_pins_allow():
    text = (ROOT / "pyproject.toml").read_text()
    low = re.search(r'requires-python = ">=3\.(\d+)"', text).group(1)
    assert f"Python 3.{low} or" in README

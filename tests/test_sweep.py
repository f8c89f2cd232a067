"""The papermill runner: parameter files, job expansion, the notebook suite and grids of jobs.

The notebooks executed here are tiny ones written into a temporary folder (no training): one declares three
parameters and writes a report, another raises. Each real execution costs a few seconds (a kernel start), so
each is done once per module and shared by the tests that look at its outputs.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ballot_lib import sweep

TINY_PARAMETERS = ('n: int = 3  # how many\n'
                   'name: str = "x"  # a label\n'
                   'results_dir: str = ""  # where results go')


def write_notebook(path: Path, *cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def write_tiny(folder: Path) -> Path:
    """``00_tiny.ipynb``: a parameters cell and a cell that writes the report ``n=<n>``."""
    return write_notebook(
        folder / "00_tiny.ipynb",
        new_markdown_cell("# Tiny\nA notebook for the runner's tests."),
        new_code_cell(TINY_PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell('from ballot_lib.analysis import write_report; write_report("tiny", f"n={n}", results_dir)'),
    )


def write_light(folder: Path) -> Path:
    """The tiny notebook with the same parameters, whose last cell writes ``n<n>.txt`` (holding ``name``) into
    ``results_dir`` without importing ballot_lib: importing torch in the kernel would cost seconds per job."""
    return write_notebook(
        folder / "00_tiny.ipynb",
        new_markdown_cell("# Tiny"),
        new_code_cell(TINY_PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell("from pathlib import Path\n"
                      "Path(results_dir).mkdir(parents=True, exist_ok=True)\n"
                      'Path(results_dir, f"n{n}.txt").write_text(name)'),
    )


def write_failing(folder: Path) -> Path:
    return write_notebook(folder / "01_fail.ipynb", new_markdown_cell("# Fails"),
                          new_code_cell('raise RuntimeError("this notebook fails on purpose")'))


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ parameter files


def test_load_params_file_valid_and_defaults(tmp_path):
    spec = sweep.load_params_file(write_yaml(tmp_path / "p.yaml", (
        "description: two sizes\n"
        "notebook: 00_tiny.ipynb\n"
        "parameters: {name: big}\n"
        "grid:\n"
        "  n: [1, 2]\n")))
    assert spec == {"description": "two sizes", "notebook": "00_tiny.ipynb", "parameters": {"name": "big"},
                    "grid": {"n": [1, 2]}, "aggregate": {}}
    # Only the notebook is required; parameters and grid default to empty.
    spec = sweep.load_params_file(write_yaml(tmp_path / "q.yaml", "notebook: 00_tiny.ipynb\n"))
    assert spec == {"notebook": "00_tiny.ipynb", "parameters": {}, "grid": {}, "aggregate": {}}


def test_load_params_file_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match="nope.yaml does not exist"):
        sweep.load_params_file(missing)


@pytest.mark.parametrize("text, message", [
    ("notebook: [unclosed\n", "is not valid YAML"),
    ("notebook: 00_tiny.ipynb\nparameters: {epochs: 2, epochs: 200}\n", "key 'epochs' is given twice"),
    ("notebook: 00_tiny.ipynb\ngrid:\n  n: [1]\n  n: [2]\n", "key 'n' is given twice"),
    ("parameters: {n: 1}\n", "must be a mapping with a 'notebook' key"),
    ("- notebook: 00_tiny.ipynb\n", "must be a mapping with a 'notebook' key"),
    ("", "must be a mapping with a 'notebook' key"),
    ("notebook: 00_tiny.ipynb\ngrids: {n: [1]}\n", r"unknown keys \['grids'\]; valid: aggregate, description, notebook"),
    ("notebook: 00_tiny.ipynb\ngrid: {n: 3}\n", "grid entry 'n' must be a non-empty list"),
    ("notebook: 00_tiny.ipynb\ngrid: {n: []}\n", "grid entry 'n' must be a non-empty list"),
    ("notebook: 00_tiny.ipynb\ngrid: {n: [1], name: x}\n", "grid entry 'name' must be a non-empty list"),
    ("notebook: 00_tiny.ipynb\ngrid: {lr: [1, 0.5, 1.0]}\n", r"grid entry 'lr' lists the same value more than once "
                                                           r"\(1, 1.0; 1 and 1.0 are one value\)"),
    ("notebook: 00_tiny.ipynb\ngrid: {d: [[0.2, 1], [0.2, 1.0]]}\n", "grid entry 'd' lists the same value"),
    ("notebook: 00_tiny.ipynb\nparameters: {results_dir: /elsewhere}\n",
     "'parameters' sets 'results_dir', which `sweep grid` sets itself .*--out"),
    ("notebook: 00_tiny.ipynb\ngrid: {results_dir: [a, b]}\n", "'grid' sets 'results_dir'"),
    ("notebook: 00_tiny.ipynb\naggregate: {results_dir: a}\n", "'aggregate' sets 'results_dir'"),
], ids=["bad-yaml", "duplicate-parameter", "duplicate-grid-key", "no-notebook", "list", "empty", "unknown-key",
        "scalar-grid", "empty-grid", "second-entry", "same-number-twice", "same-list-twice", "results-dir",
        "results-dir-grid", "results-dir-aggregate"])
def test_load_params_file_errors(tmp_path, text, message):
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ValueError, match=message) as info:
        sweep.load_params_file(path)
    assert str(path) in str(info.value)


def test_expand_jobs_product_over_fixed_parameters():
    spec = {"parameters": {"name": "x", "n": 0}, "grid": {"n": [1, 2], "seed": [7, 8, 9]}}
    jobs = sweep.expand_jobs(spec)
    assert jobs == [{"name": "x", "n": n, "seed": s} for n in (1, 2) for s in (7, 8, 9)]


def test_expand_jobs_empty_grid_is_one_job_of_the_parameters():
    assert sweep.expand_jobs({"parameters": {"n": 5, "name": "y"}, "grid": {}}) == [{"n": 5, "name": "y"}]
    assert sweep.expand_jobs({"parameters": {}, "grid": {}}) == [{}]


# ------------------------------------------------------------------------------------------ notebooks


def test_notebook_parameters_are_python_values(tmp_path):
    assert sweep.notebook_parameters(write_tiny(tmp_path)) == {"n": 3, "name": "x", "results_dir": ""}


def test_notebooks_lists_numbered_notebooks_in_order(tmp_path):
    write_failing(tmp_path)
    write_tiny(tmp_path)
    write_notebook(tmp_path / "scratch.ipynb")
    assert [p.name for p in sweep.notebooks(tmp_path)] == ["00_tiny.ipynb", "01_fail.ipynb"]
    with pytest.raises(FileNotFoundError, match="no notebooks named NN_"):
        sweep.notebooks(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """One run of the suite over the tiny notebook and the failing one: (folder, out, failures)."""
    folder = tmp_path_factory.mktemp("suite_notebooks")
    write_tiny(folder)
    write_failing(folder)
    out = tmp_path_factory.mktemp("suite_out")
    return folder, out, sweep.run_suite(out, folder=folder)


def test_run_suite_counts_the_failure(suite):
    _, _, failures = suite
    assert failures == 1


def test_run_suite_writes_executed_notebooks_and_the_report(suite):
    _, out, _ = suite
    executed = nbformat.read(out / "00_tiny.ipynb", as_version=4)
    # papermill injected the results folder (the suite's only parameter) after the parameters cell.
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and f'results_dir = "{out / "results"}"' in injected[0].source
    assert (out / "results" / "reports" / "tiny.md").read_text() == "n=3"
    assert (out / "01_fail.ipynb").is_file()  # kept, to see where it failed


def test_run_suite_summary(suite):
    _, out, _ = suite
    summary = (out / "summary.md").read_text()
    lines = summary.splitlines()
    assert lines[0] == "# Notebook suite summary"
    assert any(ln.startswith("- `00_tiny.ipynb`: ok in ") for ln in lines)
    failed = [ln for ln in lines if ln.startswith("- `01_fail.ipynb`")]
    assert len(failed) == 1 and "**FAILED**" in failed[0] and "01_fail.ipynb failed" in failed[0]
    assert "n=3" in lines  # the tiny notebook's closing report


def test_run_suite_summary_holds_only_this_runs_reports(tmp_path, monkeypatch):
    """A reused store keeps reports of earlier runs (other parameters, older code): the summary leaves them out
    and says how many it left out."""
    write_tiny(tmp_path)
    out = tmp_path / "out"
    old = out / "results" / "reports" / "old_run.md"
    old.parent.mkdir(parents=True)
    old.write_text("an earlier run's finding")
    os.utime(old, (time.time() - 3600, time.time() - 3600))

    def fake_execute(notebook, output, parameters, env=None, log=None):
        (Path(parameters["results_dir"]) / "reports" / "tiny.md").write_text("this run's finding")
        return 1.0

    monkeypatch.setattr(sweep, "execute", fake_execute)
    assert sweep.run_suite(out, folder=tmp_path) == 0
    summary = (out / "summary.md").read_text()
    assert "this run's finding" in summary and "an earlier run's finding" not in summary
    assert "1 older report(s)" in summary


def test_run_suite_passes_only_the_parameters_each_notebook_declares(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    write_failing(tmp_path)  # declares no parameters
    calls, envs = {}, []

    def fake_execute(notebook, output, parameters, env=None, log=None):
        calls[Path(notebook).name] = (Path(output), dict(parameters))
        envs.append(dict(env or {}))
        Path(output).parent.mkdir(parents=True, exist_ok=True)  # as the real one does
        return 2.0

    monkeypatch.setattr(sweep, "execute", fake_execute)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "out"
    assert sweep.run_suite(out, folder=tmp_path, extra={"n": 7, "epochs": 1}) == 0
    assert calls == {"00_tiny.ipynb": (out / "00_tiny.ipynb", {"results_dir": str(out / "results"), "n": 7}),
                     "01_fail.ipynb": (out / "01_fail.ipynb", {})}
    summary = (out / "summary.md").read_text()
    assert "- `00_tiny.ipynb`: ok in 2 s" in summary and "- `01_fail.ipynb`: ok in 2 s" in summary
    assert "FAILED" not in summary
    # A fixed CPU thread count (conv nets' CPU numbers depend on it), unless the user set one.
    assert envs == [{"OMP_NUM_THREADS": "2"}] * 2 and "CPU threads per notebook: 2" in summary
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    envs.clear()
    assert sweep.run_suite(tmp_path / "out2", folder=tmp_path) == 0
    assert envs == [{}, {}] and "CPU threads per notebook: 3" in (tmp_path / "out2" / "summary.md").read_text()


# ------------------------------------------------------------------------------------------ grid


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """One run of a two-job grid (n = 1, 2) over the light tiny notebook: (folder, params file, out, failures)."""
    folder = tmp_path_factory.mktemp("grid_notebooks")
    write_light(folder)
    params = write_yaml(folder / "tiny.yaml", "notebook: 00_tiny.ipynb\nparameters: {name: g}\ngrid: {n: [1, 2]}\n")
    out = tmp_path_factory.mktemp("grid_out")
    return folder, params, out, sweep.run_grid_file(params, out, folder=folder)


def test_run_grid_file_executes_every_job(grid):
    _, _, out, failures = grid
    assert failures == 0
    nbs = out / "notebooks"
    executed = sorted(nbs.glob("00_tiny-*.ipynb"))
    done = sorted(nbs.glob("00_tiny-*.done"))
    assert len(executed) == 2
    assert [p.with_suffix(".done") for p in executed] == done
    # Each job got its own parameters, plus the shared results folder.
    seen = []
    for path in done:
        record = json.loads(path.read_text())
        assert record["seconds"] > 0
        params = record["parameters"]
        assert params["name"] == "g" and params["results_dir"] == str(out / "results")
        seen.append(params["n"])
        nb = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert f"n = {params['n']}\n" in injected[0].source
    assert sorted(seen) == [1, 2]
    # Both jobs ran with their own n, the fixed name and the shared results folder.
    assert sorted(p.name for p in (out / "results").iterdir()) == ["n1.txt", "n2.txt"]
    assert (out / "results" / "n1.txt").read_text() == "g"


def test_run_grid_file_skips_finished_jobs(grid, capsys):
    folder, params, out, _ = grid
    before = {p: p.stat().st_mtime_ns for p in (out / "notebooks").iterdir()}

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"finished job executed again: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "execute", must_not_run)
        assert sweep.run_grid_file(params, out, folder=folder) == 0
    assert "2 jobs, 2 already done, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "notebooks").iterdir()} == before


def two_job_grid(tmp_path, monkeypatch):
    """A parameter file of two jobs (n = 1, 2) of the tiny notebook, and the list of the n each fake execution ran."""
    write_tiny(tmp_path)
    params = write_yaml(tmp_path / "p.yaml", "notebook: 00_tiny.ipynb\ngrid: {n: [1, 2]}\n")
    calls = []

    def fake_execute(notebook, output, parameters, env=None, log=None):
        calls.append(parameters["n"])
        return 0.5

    monkeypatch.setattr(sweep, "execute", fake_execute)
    return params, calls


def test_run_grid_file_reruns_only_the_job_without_its_done_marker(tmp_path, monkeypatch):
    params, calls = two_job_grid(tmp_path, monkeypatch)
    out = tmp_path / "out"
    assert sweep.run_grid_file(params, out, folder=tmp_path) == 0
    assert sorted(calls) == [1, 2]
    # Remove the marker of job n=2, as if it had been interrupted: only that job runs again.
    (marker,) = [p for p in (out / "notebooks").glob("*.done") if json.loads(p.read_text())["parameters"]["n"] == 2]
    marker.unlink()
    calls.clear()
    assert sweep.run_grid_file(params, out, folder=tmp_path) == 0
    assert calls == [2] and marker.is_file()


def test_run_grid_file_counts_failed_jobs_and_marks_only_successes(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    params = write_yaml(tmp_path / "p.yaml", "notebook: 00_tiny.ipynb\ngrid: {n: [1, 2, 3]}\n")

    def fake_execute(notebook, output, parameters, env=None, log=None):
        if parameters["n"] == 2:
            raise RuntimeError("00_tiny.ipynb failed (exit 1)")
        return 0.5

    monkeypatch.setattr(sweep, "execute", fake_execute)
    out = tmp_path / "out"
    assert sweep.run_grid_file(params, out, folder=tmp_path) == 1
    marked = sorted(json.loads(p.read_text())["parameters"]["n"] for p in (out / "notebooks").glob("*.done"))
    assert marked == [1, 3]


def test_run_grid_file_checks_every_job_before_running_any(tmp_path, monkeypatch):
    # The first job (density 0.5) is valid, the second (density 2) is not: nothing may run.
    write_notebook(tmp_path / "00_density.ipynb", new_markdown_cell("# Density"),
                   new_code_cell("density: float = 0.5  # kept fraction", metadata={"tags": ["parameters"]}))
    params = write_yaml(tmp_path / "p.yaml", "notebook: 00_density.ipynb\ngrid: {density: [0.5, 2.0]}\n")
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: pytest.fail("executed despite an invalid job"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\].*got 2.0"):
        sweep.run_grid_file(params, out, folder=tmp_path)
    assert not (out / "notebooks").exists()


def test_run_grid_file_rejects_parameters_unknown_to_the_notebook(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    params = write_yaml(tmp_path / "bad.yaml", "notebook: 00_tiny.ipynb\nparameters: {epochs: 2}\ngrid: {n: [1, 2]}\n")
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: pytest.fail("executed despite an invalid job"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"00_tiny.ipynb has no parameter\(s\) \['epochs'\]; "
                                         r"valid: \['n', 'name', 'results_dir'\]"):
        sweep.run_grid_file(params, out, folder=tmp_path)
    assert not (out / "notebooks").exists()


def test_run_grid_file_missing_notebook_lists_the_available_ones(tmp_path):
    write_tiny(tmp_path)
    params = write_yaml(tmp_path / "p.yaml", "notebook: 09_missing.ipynb\n")
    with pytest.raises(FileNotFoundError, match=r"09_missing.ipynb .*available: \['00_tiny.ipynb'\]"):
        sweep.run_grid_file(params, tmp_path / "out", folder=tmp_path)


@pytest.mark.parametrize("body", ["grid:\n", "grid: [1, 2]\n", "parameters: [1]\n"])
def test_load_params_file_rejects_non_mapping_sections(tmp_path, body):
    f = tmp_path / "p.yaml"
    f.write_text("notebook: a.ipynb\n" + body)
    if body == "grid:\n":
        assert sweep.load_params_file(f)["grid"] == {}
    else:
        with pytest.raises(ValueError, match="must be a mapping"):
            sweep.load_params_file(f)


def test_aggregate_runs_after_the_jobs_over_all_grid_values(tmp_path, monkeypatch):
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell('seeds: list = [0]  # seeds\nresults_dir: str = ""  # store')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, folder / "01_x.ipynb")
    params = tmp_path / "p.yaml"
    params.write_text("notebook: 01_x.ipynb\ngrid:\n  seeds: [[0], [1]]\naggregate:\n  seeds: [0, 1]\n")
    calls = []

    def fake_execute(notebook, output, parameters, env=None, log=None):
        calls.append((output.name, parameters["seeds"]))
        output.parent.mkdir(parents=True, exist_ok=True)
        return 0.0

    monkeypatch.setattr(sweep, "execute", fake_execute)
    assert sweep.run_grid_file(params, tmp_path / "out", folder=folder) == 0
    assert [c[1] for c in calls] == [[0], [1], [0, 1]]
    assert calls[-1][0].startswith("01_x-aggregate-") and calls[-1][0].endswith(".ipynb")
    # A second file over the same --out with another aggregate gets its own (they used to share one name and
    # claim: the second file's aggregate was skipped as "another process is running this job").
    other = tmp_path / "q.yaml"
    other.write_text("notebook: 01_x.ipynb\ngrid:\n  seeds: [[2]]\naggregate:\n  seeds: [1, 2]\n")
    assert sweep.run_grid_file(other, tmp_path / "out", folder=folder) == 0
    assert calls[-1][1] == [1, 2] and calls[-1][0].startswith("01_x-aggregate-") and calls[-1][0] != calls[2][0]


def test_a_done_job_whose_runs_left_the_store_runs_again(tmp_path, monkeypatch, capsys):
    """A marker outlives runs removed since (e.g. by `results remove-derived`): a job counts as done only when
    every run its plan lists is complete in the store."""
    import pandas as pd

    write_tiny(tmp_path)
    params = write_yaml(tmp_path / "p.yaml", "notebook: 00_tiny.ipynb\ngrid: {n: [1, 2]}\n")
    calls = []
    monkeypatch.setattr(sweep, "execute", lambda nb, output, p, env=None, log=None: calls.append(p["n"]) or 0.5)
    complete = {0: True, 1: True}

    def plan(nb, jobs, aggregate=None):  # job i trains one run; complete[i] says whether the store has it
        return pd.DataFrame({"job": [0, 1], "complete": [complete[0], complete[1]], "todo": [not complete[0],
                             not complete[1]], "epochs": [1, 1], "images": [0, 0]})

    monkeypatch.setattr(sweep, "job_plan", plan)
    out = tmp_path / "out"
    assert sweep.run_grid_file(params, out, folder=tmp_path) == 0 and sorted(calls) == [1, 2]
    calls.clear()
    assert sweep.run_grid_file(params, out, folder=tmp_path) == 0 and calls == []  # all done, all stored
    complete[1] = False  # job n=2's run was removed from the store
    capsys.readouterr()
    assert sweep.run_grid_file(params, out, folder=tmp_path) == 0 and calls == [2]
    assert "1 marked done whose runs are missing from the store: run again" in capsys.readouterr().out


def test_a_yaml_number_read_as_text_gets_a_hint(tmp_path):
    """PyYAML reads 1e-3 as the string '1e-3': the error says how to write the number."""
    from ballot_lib.checks import ParameterError, check_type

    spec = sweep.load_params_file(write_yaml(tmp_path / "p.yaml", "notebook: 00_tiny.ipynb\nparameters: {lr: 1e-3}\n"))
    assert spec["parameters"]["lr"] == "1e-3"
    with pytest.raises(ParameterError, match=r"lr must be a number, got '1e-3' \(str\) \(a parameter file's YAML "
                                             r"reads 1e-3 as text: write it .* 1.0e-3\)"):
        check_type("lr", spec["parameters"]["lr"], float)
    with pytest.raises(ParameterError, match=r"must be a number, got 'fast' \(str\)$"):
        check_type("lr", "fast", float)
    # A number written in quotes is text too, but YAML read it right: the hint says to remove the quotes.
    spec = sweep.load_params_file(write_yaml(tmp_path / "q.yaml", 'notebook: 00_tiny.ipynb\nparameters: {lr: "0.2"}\n'))
    with pytest.raises(ParameterError, match=r"got '0.2' \(str\) \(a number in quotes is text: remove the quotes\)$"):
        check_type("lr", spec["parameters"]["lr"], float)
    with pytest.raises(ParameterError, match=r"reads 2E-4 as text"):  # no dot: YAML 1.1 reads it as text as well
        check_type("lr", "2E-4", float)


def test_report_sections_sit_at_one_level_in_the_summary():
    from ballot_lib.sweep import report_section

    # A report whose top heading is "#" with "##" sub-sections is shifted one level down.
    text = "# 03 · Comparison\n\nreading\n\n## table A\n\n```\n# not a heading\n```\n"
    assert report_section(text, "03_x").splitlines() == ["## 03 · Comparison", "", "reading", "", "### table A", "",
                                                         "```", "# not a heading", "```"]
    # A report at "##" stays; one without a heading gets its file name as heading.
    assert report_section("## 01 · LTH\nx", "01_y") == "## 01 · LTH\nx"
    assert report_section("Quickstart on digits:\n- MP", "00_quickstart_abc").splitlines()[:3] == [
        "## 00_quickstart_abc", "", "Quickstart on digits:"]


def test_a_job_another_process_is_running_is_left_to_it(tmp_path, monkeypatch):
    """Two `grid` processes on one file and --out share the jobs: a job whose claim is held is not run again."""
    from ballot_lib.results import RunLock

    params, calls = two_job_grid(tmp_path, monkeypatch)
    out = tmp_path / "out"
    spec, nb, jobs = sweep.validate_params_file(params, tmp_path)
    held = {**jobs[0], "results_dir": str((out / "results").resolve())}
    job_id = sweep.config_hash({"notebook": nb.name, **held})
    output = out.resolve() / "notebooks" / f"{nb.stem}-{job_id}.ipynb"
    claim = RunLock(output.parent / ".claims" / output.stem).acquire()  # "another process" holds job n=1
    try:
        assert sweep.run_grid_file(params, out, folder=tmp_path, workers=2) == 0
    finally:
        claim.release()
    assert calls == [2] and not output.with_suffix(".done").exists()
    # Once released, the next grid runs it; no claim folder is left behind.
    assert sweep.run_grid_file(params, out, folder=tmp_path) == 0
    assert sorted(calls) == [1, 2] and output.with_suffix(".done").exists()
    assert not any((out / "notebooks" / ".claims").iterdir())

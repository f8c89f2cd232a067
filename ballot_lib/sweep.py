"""Run the notebooks with papermill: the whole suite on embedded data, or a grid of parameters in batch.

Commands (``python -m ballot_lib.sweep --help``):

* ``suite --out DIR``: execute every notebook in ``notebooks/`` in order with its (smoke) defaults, results in
  ``DIR/results``, executed notebooks in ``DIR``, and ``DIR/summary.md`` collecting each notebook's closing
  summary. This is the main job (``make run``).
* ``grid PARAMS.yaml --out DIR``: expand a parameter file (fixed ``parameters`` plus a ``grid`` of lists whose
  Cartesian product gives the jobs) and execute one notebook per job; jobs whose executed notebook is marked
  done are skipped; results of all jobs share ``DIR/results``; each executed notebook is kept next to them.
  An optional ``aggregate`` mapping (e.g. ``seeds: [0, 1, 2, 3, 4]``) runs the notebook once more after all
  jobs succeeded, over every job's runs (loaded from the store, nothing retrained): the paired analysis.
  Local runs use a pool of ``--workers`` processes, each pinned to one GPU of ``--gpus`` via
  ``CUDA_VISIBLE_DEVICES``; ``--slurm`` submits the jobs through submitit instead.
* ``validate PARAMS.yaml``: check a parameter file against the notebook's parameters and build every job's
  experiment configuration, without training.

Always executed with the kernel ``python3`` of the current environment.
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .results import atomic_write_json, config_hash

KERNEL = "python3"
REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks of the suite, in reading order."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {folder}")
    return found


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The parameters declared in a notebook's ``parameters`` cell, with their defaults."""
    import papermill

    params = papermill.inspect_notebook(str(path))
    out = {}
    for name, info in params.items():
        try:
            import ast

            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = info["default"]
    return out


def execute(notebook: Path, output: Path, parameters: Mapping[str, Any], env: Optional[dict] = None,
            log: Optional[Path] = None) -> float:
    """Execute one notebook with papermill in a subprocess (so it can get its own GPU); returns seconds.

    Raises ``RuntimeError`` naming the executed notebook if a cell fails.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    params_file = output.with_suffix(".params.json")
    atomic_write_json(dict(parameters), params_file)
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(output), "-k", KERNEL, "-f", str(params_file),
           "--cwd", str(notebook.parent), "--no-progress-bar"]
    t0 = time.perf_counter()
    with open(log or output.with_suffix(".log"), "w") as fh:
        proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{notebook.name} failed (exit {proc.returncode}); see {output} and "
                           f"{log or output.with_suffix('.log')}")
    return seconds


def run_suite(out: Path, folder: Path = NOTEBOOKS, extra: Optional[Mapping[str, Any]] = None) -> int:
    """Execute every notebook with its defaults; write ``summary.md``; return the number of failures."""
    out = Path(out).resolve()
    results = out / "results"
    failures, lines = 0, []
    for nb in notebooks(folder):
        params = {"results_dir": str(results), **(extra or {})}
        known = notebook_parameters(nb)
        params = {k: v for k, v in params.items() if k in known}
        print(f"[suite] {nb.name} ...", flush=True)
        try:
            secs = execute(nb, out / nb.name, params)
            lines.append(f"- `{nb.name}`: ok in {secs:.0f} s")
            print(f"[suite] {nb.name} ok ({secs:.0f} s)", flush=True)
        except RuntimeError as e:
            failures += 1
            lines.append(f"- `{nb.name}`: **FAILED** — {e}")
            print(f"[suite] {e}", file=sys.stderr, flush=True)
    reports = sorted((results / "reports").glob("*.md")) if (results / "reports").is_dir() else []
    text = ["# Notebook suite summary", "", f"Executed notebooks and results: `{out}`", "", *lines, ""]
    for r in reports:
        text += [r.read_text().strip(), ""]
    (out / "summary.md").write_text("\n".join(text))
    print(f"[suite] summary: {out / 'summary.md'} ({failures} failed)")
    return failures


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a YAML/JSON parameter file: ``notebook``, ``parameters`` (fixed) and ``grid`` (lists to combine)."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"parameter file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ValueError(f"parameter file {path} is not valid YAML: {e}") from None
    if not isinstance(spec, dict) or "notebook" not in spec:
        raise ValueError(f"parameter file {path} must be a mapping with a 'notebook' key")
    unknown = set(spec) - {"notebook", "parameters", "grid", "aggregate", "description"}
    if unknown:
        raise ValueError(f"parameter file {path}: unknown keys {sorted(unknown)}; valid: aggregate, description, "
                         "notebook, parameters, grid")
    for key in ("parameters", "grid", "aggregate"):
        spec[key] = {} if spec.get(key) is None else spec[key]
        if not isinstance(spec[key], dict):
            raise ValueError(f"parameter file {path}: '{key}' must be a mapping of names to values, "
                             f"got {type(spec[key]).__name__}")
    for k, v in spec["grid"].items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"parameter file {path}: grid entry {k!r} must be a non-empty list")
    return spec


def expand_jobs(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Cartesian product of the grid, each merged over the fixed parameters."""
    keys = list(spec["grid"])
    combos = itertools.product(*(spec["grid"][k] for k in keys)) if keys else [()]
    return [{**spec["parameters"], **dict(zip(keys, c))} for c in combos]


def validate_job(notebook: Path, params: Mapping[str, Any]) -> None:
    """Check a job's parameters against the notebook and build its experiment, without loading data or training."""
    from .experiment import experiment_from_params
    from .methods import make_config

    known = notebook_parameters(notebook)
    unknown = set(params) - set(known)
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter(s) {sorted(unknown)}; valid: {sorted(known)}")
    merged = {**known, **params}
    accepted = set(inspect.signature(experiment_from_params).parameters)
    exp = experiment_from_params(**{k: v for k, v in merged.items() if k in accepted}, check_device=False)
    for key in ("densities", "density", "training_density"):
        values = merged.get(key)
        for d in values if isinstance(values, list) else [] if values is None else [values]:
            make_config("lth", density=d)
    seeds = merged.get("seeds", [merged.get("seed", 0)])
    if not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be integers, got {seeds}")
    rewind = merged.get("rewind_epoch", 0)
    if not 0 <= rewind < exp.train.epochs:
        raise ValueError(f"rewind_epoch must be in [0, {exp.train.epochs}), got {rewind}")


def validate_params_file(params_file: Path, folder: Path = NOTEBOOKS
                         ) -> tuple[dict[str, Any], Path, list[dict[str, Any]]]:
    """Load a parameter file and check every job (and the aggregate analysis) against its notebook.

    Returns ``(spec, notebook path, jobs)``; nothing is loaded or trained.
    """
    spec = load_params_file(params_file)
    nb = folder / spec["notebook"]
    if not nb.is_file():
        raise FileNotFoundError(f"notebook {nb} named by {params_file} does not exist; "
                                f"available: {[p.name for p in notebooks(folder)]}")
    jobs = expand_jobs(spec)
    for params in jobs:
        validate_job(nb, params)
    if spec["aggregate"]:
        validate_job(nb, {**spec["parameters"], **spec["aggregate"]})
    return spec, nb, jobs


def run_grid_file(params_file: Path, out: Path, workers: int = 1, gpus: Sequence[str] = (),
                  slurm: bool = False, slurm_args: Optional[Mapping[str, Any]] = None,
                  folder: Path = NOTEBOOKS) -> int:
    """Execute every job of a parameter file (skipping finished ones); return the number of failures."""
    spec, nb, expanded = validate_params_file(params_file, folder)
    out = Path(out).resolve()
    jobs = []
    for params in expanded:
        params = {**params, "results_dir": str(out / "results")}
        job_id = config_hash({"notebook": nb.name, **params})
        jobs.append((job_id, params))
    todo = [(j, p) for j, p in jobs if not (out / "notebooks" / f"{nb.stem}-{j}.done").exists()]
    print(f"[grid] {nb.name}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run")
    if slurm:
        return _submit_slurm(nb, todo, out, slurm_args or {}, bool(spec["aggregate"]))
    gpu_pool: "queue.Queue[str]" = queue.Queue()
    # One token per GPU (jobs pinned to it); without GPUs, one token per worker (CPU jobs in parallel).
    for g in gpus or [""] * max(1, workers):
        gpu_pool.put(g)

    def one(job):
        job_id, params = job
        gpu = gpu_pool.get()
        try:
            env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu != "" else {}
            output = out / "notebooks" / f"{nb.stem}-{job_id}.ipynb"
            secs = execute(nb, output, params, env=env)
            atomic_write_json({"seconds": secs, "parameters": params}, output.with_suffix(".done"))
            print(f"[grid] {job_id} done in {secs:.0f} s (gpu {gpu or '-'})", flush=True)
            return 0
        except RuntimeError as e:
            print(f"[grid] {e}", file=sys.stderr, flush=True)
            return 1
        finally:
            gpu_pool.put(gpu)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        failures = sum(pool.map(one, todo))
    print(f"[grid] finished: {len(todo) - failures} ok, {failures} failed")
    if spec["aggregate"] and not failures:
        failures += _aggregate(nb, spec, out)
    return failures


def _aggregate(nb: Path, spec: Mapping[str, Any], out: Path) -> int:
    """Run the notebook once more over all jobs' runs (e.g. every seed), loading them from the shared store.

    Jobs that each train one seed cannot pair seeds; this last execution sees all of them and writes the report.
    """
    params = {**spec["parameters"], **spec["aggregate"], "results_dir": str(out / "results")}
    output = out / "notebooks" / f"{nb.stem}-aggregate.ipynb"
    try:
        secs = execute(nb, output, params)
    except RuntimeError as e:
        print(f"[grid] aggregate: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"[grid] aggregate analysis over {spec['aggregate']} done in {secs:.0f} s: {output}")
    return 0


def _submit_slurm(nb: Path, todo, out: Path, slurm_args: Mapping[str, Any], spec_aggregate: bool = False) -> int:
    try:
        import submitit
    except ImportError:
        raise ImportError("--slurm needs submitit: pip install submitit==1.5.4") from None
    executor = submitit.AutoExecutor(folder=str(out / "slurm"))
    executor.update_parameters(**{"gpus_per_node": 1, "timeout_min": 24 * 60, **slurm_args})
    futures = []
    with executor.batch():
        for job_id, params in todo:
            output = out / "notebooks" / f"{nb.stem}-{job_id}.ipynb"
            futures.append(executor.submit(_slurm_job, str(nb), str(output), params))
    print(f"[grid] submitted {len(futures)} Slurm jobs; logs in {out / 'slurm'}")
    if spec_aggregate:
        print("[grid] when they have finished, run the same grid command again (without --slurm): finished jobs "
              "are skipped and the aggregate analysis runs")
    return 0


def _slurm_job(nb: str, output: str, params: dict) -> float:
    secs = execute(Path(nb), Path(output), params)
    atomic_write_json({"seconds": secs, "parameters": params}, Path(output).with_suffix(".done"))
    return secs


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ballot_lib.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite", help="execute every notebook with its defaults")
    s.add_argument("--out", type=Path, default=Path("outputs/suite"))
    g = sub.add_parser("grid", help="execute a parameter file's jobs")
    g.add_argument("params", type=Path)
    g.add_argument("--out", type=Path, default=None, help="default: outputs/<params file stem>")
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--gpus", default="", help="comma-separated GPU ids, one worker per GPU, e.g. 0,1,2,3")
    g.add_argument("--slurm", action="store_true", help="submit through submitit instead of running locally")
    g.add_argument("--slurm-args", default="{}", help='JSON of submitit parameters, e.g. {"slurm_partition": "gpu"}')
    v = sub.add_parser("validate", help="check parameter files without training")
    v.add_argument("params", type=Path, nargs="+")
    a = p.parse_args(argv)
    if a.cmd == "suite":
        return 1 if run_suite(a.out) else 0
    if a.cmd == "grid":
        gpus = [x for x in a.gpus.split(",") if x != ""]
        workers = max(a.workers, len(gpus)) if gpus else a.workers
        out = a.out or Path("outputs") / a.params.stem
        return 1 if run_grid_file(a.params, out, workers, gpus, a.slurm, json.loads(a.slurm_args)) else 0
    for f in a.params:
        spec, _, jobs = validate_params_file(f)
        print(f"{f}: {len(jobs)} jobs valid" + (", plus the aggregate analysis" if spec["aggregate"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

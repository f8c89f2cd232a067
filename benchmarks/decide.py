#!/usr/bin/env python
"""Turn the GPU check's output into the library's GPU defaults (issue #13), by the rules written down here.

    python benchmarks/decide.py DIR            # report: targets met or missed, and the defaults the rules give
    python benchmarks/decide.py DIR --apply    # ... and rewrite ballot_lib/gpu_defaults.py with them

DIR holds what ``benchmarks/gpu_check.sh`` writes: ``issue13_cuda.json`` (required: the training benchmark),
``cuda_tests.txt`` (the step-mode tests' pytest output) and ``cuda_tests.xml`` (the same run as JUnit XML: which
tests ran and which were skipped), ``ballot_devices.json`` (Ballot CPU vs GPU) and ``gpu.txt`` (GPU name, torch
version). The rules:

* **step mode.** ``auto`` on CUDA becomes ``graph`` only if, in measurement 3, the library's graph step ran at least
  as many images/s as its eager step for *every* model measured (and no model's graph step failed, fell back to
  eager steps or replayed no step from a CUDA graph -- the benchmark records the graph stepper's replays; cnn and
  resnet18 at least were measured), and the step-mode tests passed with none failing *and the CUDA ones ran*:
  ``cuda_tests.xml`` must hold at least one CUDA test (a test named ``test_cuda...`` or skipped for want of CUDA)
  and none of them skipped; otherwise it stays ``eager``.
* **runs per GPU.** For each model of measurement 4, the smallest process count N whose aggregate images/s is within
  ``ballot_lib.sweep.RUNS_PER_GPU_TOLERANCE`` (5 %) of the best N measured
  (:func:`ballot_lib.sweep.runs_per_gpu_from_curve`); models it did not measure keep their current value.

``--apply`` refuses output that was not measured on a CUDA device (a ``DEVICE=cpu`` dry run decides nothing) and
records the GPU, torch version, date and which models were measured in ``gpu_defaults.MEASURED_ON``.

The paper-grid projection (measurement 6) needs PyYAML (it plans ``params/03_*.yaml``), which a bare GPU image may
lack; the benchmark then records why it skipped it, and this script computes it from the measured images/s and
concurrency factors (``bench_training.project_grid``), saying so in its report.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import ballot_lib  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

if str(Path(__file__).resolve().parent) not in sys.path:  # the benchmark scripts beside this one (loaded by path)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from ballot_devices import OVERLAP_TARGET as BALLOT_OVERLAP_TARGET
# issue #13's targets, as the benchmark prints them
import bench_training
from bench_training import (GRAPH_RATIO_TARGET, GRID_HOURS_TARGET, OTHER_TIME_TARGET, SPEEDUP_TARGET,
                            SPEEDUP_TARGET_DEFAULT)

from ballot_lib import gpu_defaults
from ballot_lib.sweep import RUNS_PER_GPU_TOLERANCE, runs_per_gpu_from_curve

DEFAULTS_FILE = ROOT / "ballot_lib" / "gpu_defaults.py"
FILES = {"bench": "issue13_cuda.json", "tests": "cuda_tests.txt", "tests_xml": "cuda_tests.xml",
         "ballot": "ballot_devices.json", "gpu": "gpu.txt"}
#: what gpu_check.sh writes into cuda_tests.txt when the GPU machine's python has no pytest
PYTEST_MISSING = "PYTEST MISSING"
#: models measurement 3 must include before ``graph`` can become the default (issue #13's two target models)
STEP_MODE_MODELS = ("cnn", "resnet18")


class DecideError(ValueError):
    """The check's output is missing, unreadable or not fit to decide from."""


def read_outputs(folder: Path) -> dict:
    """The GPU check's files in ``folder``: the benchmark JSON (required), the others when present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DecideError(f"{folder}: no such folder (give the folder benchmarks/gpu_check.sh wrote)")
    bench = folder / FILES["bench"]
    if not bench.is_file():
        raise DecideError(f"{bench}: missing; benchmarks/gpu_check.sh writes it in its 'bench' stage "
                          f"(STAGES=bench reruns only that stage)")
    out = {"bench": _json(bench)}
    for key in ("env", "ceilings", "concurrent"):
        if key not in out["bench"]:
            raise DecideError(f"{bench}: not the training benchmark's output (no {key!r} entry)")
    ballot = folder / FILES["ballot"]
    out["ballot"] = _json(ballot) if ballot.is_file() else None
    for key in ("tests", "tests_xml", "gpu"):
        f = folder / FILES[key]
        out[key] = f.read_text(errors="replace") if f.is_file() else None
    return out


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecideError(f"{path}: unreadable JSON ({e})") from None


def concurrent_rows(bench: dict) -> list[dict]:
    """Measurement 4's rows, one per model (older outputs held a single model's dict)."""
    conc = bench.get("concurrent")
    if conc is None:
        return []
    return [conc] if isinstance(conc, dict) else list(conc)


def junit_cases(xml_text: str) -> list[dict]:
    """The test cases of a pytest JUnit XML report: name, status (passed, skipped, failed, error) and message."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise DecideError(f"{FILES['tests_xml']}: unreadable XML ({e})") from None
    cases = []
    for tc in root.iter("testcase"):
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                status = {"failure": "failed"}.get(tag, tag)
                message = el.get("message") or (el.text or "")
                break
        cases.append({"name": f"{tc.get('classname', '')}::{tc.get('name', '')}", "status": status,
                      "message": message})
    return cases


def is_cuda_test(case: dict) -> bool:
    """A CUDA test: its function's name starts with ``test_cuda`` (the convention of tests/test_step_modes.py), or
    it was skipped for want of CUDA (whatever its name)."""
    func = case["name"].rsplit("::", 1)[-1].lower()
    return func.startswith("test_cuda") or (case["status"] == "skipped" and "cuda" in case["message"].lower())


def tests_verdict(text: str | None, xml_text: str | None = None) -> tuple[bool, str]:
    """(passed, why) from the step-mode tests' pytest output (``cuda_tests.txt``) and JUnit XML
    (``cuda_tests.xml``): no test failed, some passed, and the CUDA tests ran (at least one, none skipped)."""
    if not text:
        return False, f"no {FILES['tests']} (the 'tests' stage did not run)"
    if PYTEST_MISSING in text or "No module named pytest" in text:
        return False, (f"pytest was missing on the GPU machine, so no CUDA test ran ({FILES['tests']}); run `make "
                       f"gpu-deps` and carry .gpu_pydeps (benchmarks/README.md)")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", text)}
    if not counts:
        return False, f"{FILES['tests']} holds no pytest summary line (did pytest run? see the file)"
    bad = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    if bad or not counts.get("passed"):
        return False, f"CUDA tests: {summary}"
    if not xml_text:
        return False, (f"CUDA tests: {summary}, but no {FILES['tests_xml']}: cannot tell whether the CUDA tests ran "
                       f"or were skipped")
    try:
        cases = junit_cases(xml_text)
    except DecideError as e:
        return False, f"CUDA tests: {summary}, but {e}"
    cuda = [c for c in cases if is_cuda_test(c)]
    if not cuda:
        return False, f"CUDA tests: {summary}, but {FILES['tests_xml']} holds no CUDA test"
    skipped = [c for c in cuda if c["status"] == "skipped"]
    if skipped:
        reason = skipped[0]["message"].splitlines()[0][:120] if skipped[0]["message"] else "no reason given"
        return False, (f"CUDA tests: {summary}, but {len(skipped)} of the {len(cuda)} CUDA tests were skipped "
                       f"({reason})")
    failed = [c for c in cases if c["status"] in ("failed", "error")]
    if failed:
        return False, f"CUDA tests: {summary}, but {FILES['tests_xml']} lists {len(failed)} failed: {failed[0]['name']}"
    return True, f"CUDA tests: {summary}; {len(cuda)} CUDA tests ran, none skipped"


def graph_fallback(row: dict) -> str:
    """Why a row's graph measurement is not one ("" when the graph stepper replayed and did not fall back)."""
    g = (row.get("graph_steps") or {}).get("graph")
    if g is None:
        return "the graph stepper's replays were not recorded (benchmark output without them: rerun the benchmark)"
    if g.get("fell_back"):
        return f"graph fell back to eager steps ({g.get('failed') or 'no reason recorded'})"
    if not g.get("replays"):
        return "no step was replayed from a CUDA graph"
    return ""


def decide_step_mode(bench: dict, tests_text: str | None, tests_xml: str | None = None) -> tuple[str, list[str]]:
    """``"graph"`` or ``"eager"`` for ``auto`` on CUDA, and the reasons."""
    why = []
    rows = bench.get("ceilings") or []
    if not rows:
        return "eager", ["measurement 3 did not run: no step mode was compared"]
    ok = True
    for r in rows:
        lib = r.get("library") or {}
        if "graph" not in lib or "eager" not in lib:
            ok = False
            err = (r.get("errors") or {}).get("graph")
            why.append(f"{r['model']}: graph not measured" + (f" ({err})" if err else ""))
            continue
        ratio = lib["graph"] / lib["eager"]
        fallback = graph_fallback(r)
        why.append(f"{r['model']}: graph {lib['graph']:.0f} vs eager {lib['eager']:.0f} images/s (x{ratio:.2f})"
                   + (f"; NOT a graph measurement: {fallback}" if fallback else ""))
        ok &= ratio >= 1.0 and not fallback
    missing = [m for m in STEP_MODE_MODELS if m not in {r["model"] for r in rows}]
    if missing:
        ok = False
        why.append(f"measurement 3 lacks {', '.join(missing)} (a partial run decides nothing)")
    passed, tests_why = tests_verdict(tests_text, tests_xml)
    why.append(tests_why)
    return ("graph" if ok and passed else "eager"), why


def decide_runs_per_gpu(bench: dict, current: dict) -> tuple[dict, list[str], list[str]]:
    """(new RUNS_PER_GPU, models measured, reasons): measured models by the curve rule, the rest unchanged."""
    new, measured, why = dict(current), [], []
    for r in concurrent_rows(bench):
        curve = {int(n): row["images_per_s"] for n, row in (r.get("runs") or {}).items() if "images_per_s" in row}
        if not curve:
            why.append(f"{r.get('model')}: no process count ran ({r.get('runs')})")
            continue
        n = runs_per_gpu_from_curve(curve)
        new[r["model"]] = n
        measured.append(r["model"])
        shape = ", ".join(f"N={k} {v:.0f}" for k, v in sorted(curve.items()))
        why.append(f"{r['model']}: {shape} images/s -> {n} (was {current.get(r['model'], 1)})")
    return new, measured, why


def projection(bench: dict) -> tuple[dict | None, str]:
    """Measurement 6 (the paper grid's GPU-hours) and where it comes from: the benchmark's, or computed here from
    its measured images/s and concurrency factors when the benchmark skipped it (no PyYAML on the GPU machine)."""
    proj = bench.get("projection")
    if proj and "skipped" not in proj:
        return proj, ""
    rows = bench.get("ceilings") or []
    if not rows:
        return None, "measurement 6: no projection (measurement 3 did not run)"
    skipped = (proj or {}).get("skipped")
    why = f"the benchmark skipped it: {skipped}" if skipped else "the benchmark did not write it"
    if (proj or {}).get("assumed"):
        return None, f"measurement 6: no projection ({why}; it used --assume-ips rates)"
    ips = (proj or {}).get("images_per_s")
    if not ips:
        ips = {r["model"]: r.get("library_best") or max((r.get("library") or {}).values(), default=None)
               for r in rows}
        ips = {m: v for m, v in ips.items() if v and v == v}
    conc = (proj or {}).get("concurrency")
    sources = (proj or {}).get("concurrency_sources")
    if conc is None:
        mode = next((r.get("step_mode") for r in concurrent_rows(bench) if r.get("step_mode")), "eager")
        conc, sources = bench_training.concurrency_factors(rows, concurrent_rows(bench), mode)
    try:
        made = bench_training.project_grid(ips, conc)
    except Exception as e:  # noqa: BLE001 -- e.g. no PyYAML here either
        return None, (f"measurement 6: no projection ({why}); computing it here failed too ({type(e).__name__}: "
                      f"{e}); run decide.py where PyYAML is installed")
    made["concurrency_sources"] = sources or {}
    made["computed_by"] = "benchmarks/decide.py"
    return made, (f"measurement 6 computed by decide.py from the measured images/s {ips} ({why}): "
                  f"{made['gpu_hours']:.1f} device-hours, {made['gpu_hours_concurrent']:.1f} with concurrent runs"
                  + ("" if made["complete"] else " (incomplete: not every paper model was measured)"))


def targets(out: dict) -> list[tuple[str, str, str, str]]:
    """(what, measured, target, verdict) for each of issue #13's targets found in the output (and #7's Ballot
    check)."""
    bench, rows = out["bench"], []
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    for r in bench.get("ceilings") or []:
        t = GRAPH_RATIO_TARGET.get(r["model"])
        ratio = r.get("ratio_to_graph_ceiling")
        if t and ratio:
            rows.append((f"{r['model']} library / whole-step graph ceiling", f"{ratio:.2f} ({r.get('best_mode')})",
                         f">= {t}", verdict(ratio >= t)))
    for r in bench.get("throughput") or []:
        t = SPEEDUP_TARGET.get(r["model"], SPEEDUP_TARGET_DEFAULT)
        rows.append((f"{r['model']} library / DataLoader batch-32 loop", f"{r['speedup']:.2f}x", f">= {t:g}x",
                     verdict(r["speedup"] >= t)))
    methods = (bench.get("methods") or {}).get("methods") or []
    for r in methods:
        if "other_over_train" in r:
            rows.append((f"{r['method']} non-training / training time", f"{r['other_over_train']:.3f}",
                         f"<= {OTHER_TIME_TARGET}", verdict(r["other_over_train"] <= OTHER_TIME_TARGET)))
    proj = out.get("projection") if "projection" in out else projection(bench)[0]
    if proj and proj.get("complete"):
        h = proj["gpu_hours_concurrent"]
        src = " (computed by decide.py)" if proj.get("computed_by") else ""
        rows.append((f"paper grid (3 models), GPU-hours with concurrent runs{src}", f"{h:,.1f}",
                     f"<= {GRID_HOURS_TARGET:g}", verdict(h <= GRID_HOURS_TARGET)))
    for e in (out.get("ballot") or {}).get("engine") or []:
        rows.append((f"Ballot engine, votes differing CPU vs GPU ({e.get('tally')})", f"{e.get('votes_differ')} of "
                     f"{e.get('entries')}", "0", verdict(e.get("votes_differ") == 0)))
    for path in (out.get("ballot") or {}).get("end_to_end") or []:
        share = path.get("device_ballot_other_share")
        if share is not None:
            rows.append((f"Ballot non-training / training time on the GPU ({path.get('path')})", f"{share:.3f}",
                         f"<= {OTHER_TIME_TARGET}", verdict(share <= OTHER_TIME_TARGET)))
        ovl = path.get("ballot_overlap")
        if ovl is not None:
            rows.append((f"Ballot CPU vs GPU mask overlap ({path.get('path')})", f"{ovl:.4f} (LTH "
                         f"{path.get('lth_overlap', float('nan')):.4f})", f">= {BALLOT_OVERLAP_TARGET}",
                         verdict(ovl >= BALLOT_OVERLAP_TARGET)))
    return rows


def measured_on(out: dict, models: list[str]) -> dict:
    env = out["bench"]["env"]
    return {"device_name": env.get("device_name"), "torch": env.get("torch"), "date": env.get("date"),
            "runs_per_gpu_measured": sorted(models), "source": "benchmarks/gpu_check.sh -> benchmarks/decide.py"}


def _literal(measured: dict | None) -> str:
    """A Python literal of MEASURED_ON in the project's style (double quotes; one entry per line)."""
    if measured is None:
        return "None"
    clean = {k: ("unknown" if v is None else v) for k, v in sorted(measured.items())}
    return "{\n" + "".join(f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n" for k, v in clean.items()) + "}"


def render_defaults(measured: dict | None, step_mode: str, runs_per_gpu: dict) -> str:
    """The text of ``ballot_lib/gpu_defaults.py`` for these values (the committed file is this function's output
    for the values it holds)."""
    if step_mode not in ("eager", "compiled", "graph"):
        raise DecideError(f"step mode must be eager, compiled or graph, got {step_mode!r}")
    bad = {m: n for m, n in runs_per_gpu.items() if not isinstance(n, int) or isinstance(n, bool) or n < 1}
    if bad:
        raise DecideError(f"runs per GPU must be integers >= 1, got {bad}")
    if measured is None:
        src = ("#: The measurement the values come from (GPU name, torch version, date, models measured); ``None``: not\n"
               "#: yet measured on a GPU, and the values are the rules of thumb described beside each.\n")
        step_note = "until then ``\"eager\"``."
        runs_note = ("#: measured: issue #13's one H100 figure for resnet18 (eager, batch 128: 4 processes 2.8x one, "
                     "8 less than 4) and a\n#: rule by size for the rest (up to resnet18's 11M parameters 4, the larger "
                     "resnet50/vgg16_bn 2).\n")
        runs_head = "Until\n"
    else:
        src = "#: The measurement the values come from.\n"
        step_note = "otherwise ``\"eager\"``."
        runs_note = "#: measured: their values are from before (see ``MEASURED_ON['runs_per_gpu_measured']``).\n"
        runs_head = "Models not\n"
    runs = "{" + ", ".join(f"{json.dumps(m)}: {n}" for m, n in sorted(runs_per_gpu.items())) + "}"
    return (
        '"""GPU defaults chosen by measurement (issue #13).\n\n'
        "Written by ``benchmarks/decide.py --apply`` from the GPU benchmark's output (``benchmarks/gpu_check.sh``); "
        "re-run\nthat script rather than editing the values by hand, so that :data:`MEASURED_ON` stays true.\n"
        '"""\n'
        "from __future__ import annotations\n\n"
        + src
        + f"MEASURED_ON: dict | None = {_literal(measured)}\n\n"
        "#: What ``step_mode=\"auto\"`` means on a CUDA device (:func:`ballot_lib.compiled.resolve_step_mode`; on "
        "every other\n#: device it is ``\"eager\"``). ``\"graph\"`` once the benchmark shows the graph step at least "
        "as fast as the eager one\n#: for every model it measures and the CUDA tests of the step modes pass; "
        + step_note + "\n"
        f"CUDA_AUTO_STEP_MODE: str = {json.dumps(step_mode)}\n\n"
        "#: Concurrent jobs per GPU by model (``sweep grid --gpus``' default, "
        ":func:`ballot_lib.sweep.default_runs_per_gpu`):\n#: the smallest N whose aggregate images/s is within "
        "``RUNS_PER_GPU_TOLERANCE`` of the best N measured. " + runs_head
        + runs_note
        + f"RUNS_PER_GPU: dict[str, int] = {runs}\n"
    )


def decide(out: dict) -> dict:
    step_mode, step_why = decide_step_mode(out["bench"], out["tests"], out.get("tests_xml"))
    runs, models, runs_why = decide_runs_per_gpu(out["bench"], gpu_defaults.RUNS_PER_GPU)
    proj, proj_note = projection(out["bench"])
    return {"step_mode": step_mode, "step_why": step_why, "runs_per_gpu": runs, "measured_models": models,
            "runs_why": runs_why, "targets": targets({**out, "projection": proj}), "projection": proj,
            "projection_note": proj_note}


def report(out: dict, d: dict) -> str:
    env = out["bench"]["env"]
    lines = [f"GPU check of {env.get('date', '(no date)')} on {env.get('device_name')} ({env.get('device')}), torch "
             f"{env.get('torch')}, Python {env.get('python')}"]
    if not str(env.get("device", "")).startswith("cuda"):
        lines += ["NOT A CUDA DEVICE: a dry run; nothing below is a GPU measurement, and --apply refuses it"]
    if out["gpu"]:
        lines += ["gpu.txt: " + " | ".join(x.strip() for x in out["gpu"].splitlines()[:3] if x.strip())]
    lines += ["", "| target | measured | wanted | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {v} |" for a, b, c, v in d["targets"]] or ["| (none measured) | | | |"]
    if d.get("projection_note"):
        lines += ["", d["projection_note"]]
    lines += ["", f"step mode for auto on CUDA: {d['step_mode']} (now {gpu_defaults.CUDA_AUTO_STEP_MODE})"]
    lines += [f"  {w}" for w in d["step_why"]]
    lines += [f"runs per GPU (smallest N within {RUNS_PER_GPU_TOLERANCE:.0%} of the best): {d['runs_per_gpu']} "
              f"(now {gpu_defaults.RUNS_PER_GPU})"]
    lines += [f"  {w}" for w in d["runs_why"]] or ["  measurement 4 did not run"]
    return "\n".join(lines)


def apply(out: dict, d: dict, path: Path = DEFAULTS_FILE) -> str:
    """Rewrite ``path`` with the decided defaults; refuses output not measured on CUDA."""
    env = out["bench"]["env"]
    if not str(env.get("device", "")).startswith("cuda"):
        raise DecideError(f"--apply: the benchmark ran on {env.get('device')!r}, not a CUDA device; a dry run "
                          f"decides no GPU default (nothing written)")
    text = render_defaults(measured_on(out, d["measured_models"]), d["step_mode"], d["runs_per_gpu"])
    tmp = Path(path).with_suffix(".py.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("folder", type=Path, help="the folder benchmarks/gpu_check.sh wrote")
    ap.add_argument("--apply", action="store_true", help="rewrite ballot_lib/gpu_defaults.py with the decisions")
    ap.add_argument("--defaults", type=Path, default=DEFAULTS_FILE, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        out = read_outputs(a.folder)
        d = decide(out)
        print(report(out, d))
        if a.apply:
            apply(out, d, a.defaults)
            print(f"\nwrote {a.defaults}: auto on CUDA = {d['step_mode']}, RUNS_PER_GPU = {d['runs_per_gpu']}")
    except DecideError as e:
        print(f"decide: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

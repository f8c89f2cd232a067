"""An interrupted ``sweep grid`` leaves no process behind: SIGTERM ends papermill and its kernel, then the runner;
after a SIGKILL of the runner (Linux) the jobs end by themselves.

The grid runs notebook 00 for many epochs in a subprocess; once its kernel is up, the runner gets SIGTERM. Every
process of the job (papermill, the kernel in its own session, anything they started) must be gone, and the
runner must exit with 128 + SIGTERM.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]


def _alive(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT,
                                 pytest.param(signal.SIGKILL, marks=pytest.mark.skipif(
                                     not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"))],
                         ids=["sigterm", "sigint", "sigkill"])
def test_signal_to_sweep_grid_leaves_no_papermill_or_kernel_running(tmp_path, sig):
    params = tmp_path / "long.yaml"
    results = tmp_path / "out" / "results"
    # Long enough that the job is still training when the signal comes.
    params.write_text("notebook: 00_quickstart.ipynb\nparameters: {dataset: digits, epochs: 5000, device: cpu}\n"
                      "grid: {seed: [0, 1]}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BALLOT_PROGRESS": "none"}
    runner = subprocess.Popen([sys.executable, "-m", "ballot_lib.sweep", "grid", str(params), "--out",
                               str(tmp_path / "out")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    me = psutil.Process(runner.pid)
    # pid -> (process, every command line read for it). A child polled between fork and exec still shows its
    # parent's command line, so each look adds what it reads now instead of keeping only the first reading.
    seen: dict[int, tuple] = {}

    def look() -> None:
        for c in me.children(recursive=True):
            seen.setdefault(c.pid, (c, set()))[1].add(_cmdline(c))

    try:
        deadline = time.monotonic() + 120
        kernel_up = False
        while time.monotonic() < deadline and runner.poll() is None:
            look()
            kernels = [p for p, cmds in seen.values() if any("ipykernel" in c for c in cmds) and _alive(p)]
            # Wait until the kernel has started training (a run folder exists): the state a user interrupts.
            if kernels and (results / "runs").is_dir():
                kernel_up = True
                break
            time.sleep(0.2)
        assert kernel_up, f"the job's kernel did not start: {runner.communicate(timeout=30)[0][-2000:]}"
        look()  # everything started until now, with the command lines they run now
        runner.send_signal(sig)
        out, _ = runner.communicate(timeout=60)
        if sig == signal.SIGKILL:
            # The runner cannot clean up: its jobs end because they were told to die with it (papermill gets
            # SIGTERM, the kernel exits when papermill is gone). Before, papermill and its kernel kept running.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(_alive(p) for p, _ in seen.values()):
                time.sleep(0.2)
        # Read before the clean-up below (which kills whatever is left, so that a failing test leaves nothing).
        survivors = [(p.pid, sorted(cmds)) for p, cmds in seen.values() if _alive(p)]
    finally:
        if runner.poll() is None:
            runner.kill()
        for p, _ in seen.values():  # never leave anything behind, even when the test fails
            if _alive(p):
                p.kill()
    if sig == signal.SIGKILL:
        assert runner.returncode == -sig, out[-2000:]
    else:
        assert runner.returncode == 128 + sig, out[-2000:]
        assert "Traceback" not in out, out[-2000:]
    assert survivors == [], survivors
    commands = [c for _, cmds in seen.values() for c in cmds]
    assert any("papermill" in c for c in commands) and any("ipykernel" in c for c in commands), commands
    # The second job never started; the first left no finished run behind.
    assert not list((tmp_path / "out" / "notebooks").glob("*.done"))

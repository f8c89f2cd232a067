"""The test session's temporary results store is removed at the end (it was left in /tmp by every run)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(drop=()):
    """This process's environment without what makes a pytest process think it is an xdist worker of this
    session (under `make test` the inner session would otherwise split its store like a worker)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("BALLOT_TEST_OWN_STORE", *drop) and not k.startswith("PYTEST_XDIST")}


def _session(tmp_path, keep):
    probe = tmp_path / "test_probe.py"
    record = tmp_path / "store.txt"
    probe.write_text(
        "import os, pathlib\n"
        "def test_writes_into_store():\n"
        "    store = pathlib.Path(os.environ['BALLOT_RESULTS'])\n"
        f"    pathlib.Path({str(record)!r}).write_text(str(store))\n"
        "    (store / 'run.json').write_text('{}')\n")
    env = _clean_env(drop=("BALLOT_RESULTS",))
    env["BALLOT_KEEP_TEST_STORE"] = keep
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                           "-p", "conftest", "--rootdir", str(tmp_path), str(probe)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return Path(record.read_text()), done.stdout


def test_session_store_removed_at_end(tmp_path):
    store, _ = _session(tmp_path, keep="")
    assert store.name.startswith("ballot-test-results-")
    assert not store.exists()


def test_session_store_kept_on_request(tmp_path):
    store, out = _session(tmp_path, keep="1")
    try:
        assert (store / "run.json").exists()
        assert str(store) in out
    finally:
        import shutil
        shutil.rmtree(store, ignore_errors=True)


def test_given_store_is_never_removed(tmp_path):
    given = tmp_path / "mine"
    given.mkdir()
    probe = tmp_path / "test_probe2.py"
    probe.write_text("def test_nothing():\n    pass\n")
    env = _clean_env()
    env["BALLOT_RESULTS"] = str(given)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                           "-p", "conftest", "--rootdir", str(tmp_path), str(probe)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert given.is_dir()

"""Repository-level pytest set-up shared by the unit tests and the nbval notebook runs.

Notebook kernels started by nbval inherit this environment: results go to a fresh temporary store (never into
the working tree) and matplotlib renders off-screen.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadscope``: each notebook and each test module stays on one
worker, cells in order) every worker gets its own store, a sub-folder of the session's, and every process is
single-threaded unless ``OMP_NUM_THREADS`` is already set: two workers whose torch kernels each spin two OpenMP
threads on a two-core machine slow down many times over.

The temporary store (~120 MB after ``make test``) is removed when the session ends, unless
``BALLOT_KEEP_TEST_STORE=1`` asks to keep it for inspection (its path is then printed). A store given through
``BALLOT_RESULTS`` is never removed.
"""
import os
import shutil
import tempfile

#: Set when this conftest made the store, so that workers know they may split it.
_OWN_STORE = "BALLOT_TEST_OWN_STORE"
#: The store this process made (the xdist controller, or the only process): it removes it at the end.
_made_store = None


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
    workers = getattr(config.option, "numprocesses", None)
    if workers:  # the xdist controller, before it starts the workers (they and their kernels inherit this)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    global _made_store
    if "BALLOT_RESULTS" not in os.environ:
        _made_store = tempfile.mkdtemp(prefix="ballot-test-results-")
        os.environ["BALLOT_RESULTS"] = os.environ[_OWN_STORE] = _made_store
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and os.environ.get(_OWN_STORE) == os.environ["BALLOT_RESULTS"]:
        store = os.path.join(os.environ[_OWN_STORE], worker)
        os.makedirs(store, exist_ok=True)
        os.environ["BALLOT_RESULTS"] = store


def pytest_unconfigure(config):
    global _made_store
    if _made_store is None:
        return
    if os.environ.get("BALLOT_KEEP_TEST_STORE", "") not in ("", "0"):
        print(f"\nballot test store kept: {_made_store}")
    else:
        shutil.rmtree(_made_store, ignore_errors=True)
    _made_store = None

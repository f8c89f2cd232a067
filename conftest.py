"""Repository-level pytest set-up shared by the unit tests and the nbval notebook runs.

Notebook kernels started by nbval inherit this environment: results go to a fresh temporary store (never into
the working tree) and matplotlib renders off-screen.
"""
import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
    if "BALLOT_RESULTS" not in os.environ:
        os.environ["BALLOT_RESULTS"] = tempfile.mkdtemp(prefix="ballot-test-results-")

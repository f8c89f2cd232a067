"""The library's annotations hold: mypy (configured in pyproject.toml) finds no error in ballot_lib/."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error_in_the_library(tmp_path):
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    assert mypy, "mypy is a test requirement (requirements/test.txt): run `make env`"
    out = subprocess.run([mypy, "--cache-dir", str(tmp_path / "cache"), "--python-executable", sys.executable],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "Success" in out.stdout

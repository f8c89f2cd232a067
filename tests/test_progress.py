"""Progress bars by $BALLOT_PROGRESS: text on stdout for executed notebooks, nothing, or tqdm.auto."""
from __future__ import annotations

import pytest

from ballot_lib import progress


def test_text_bars_print_their_final_state_as_plain_text(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "text")
    assert list(progress.bar(range(3), desc="runs", leave=True)) == [0, 1, 2]
    out = capsys.readouterr().out
    assert "runs: 100%" in out and "3/3" in out


def test_text_style_draws_no_transient_bars(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "text")
    it = range(3)
    assert progress.bar(it, desc="epochs", leave=False) is it
    assert capsys.readouterr().out == ""


def test_none_returns_the_iterable_itself(monkeypatch):
    monkeypatch.setenv(progress.ENV, "none")
    it = [1, 2]
    assert progress.bar(it, desc="x") is it


def test_auto_is_the_default_and_bad_values_are_named(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.style() == "auto"
    monkeypatch.setenv(progress.ENV, "widget")
    with pytest.raises(ValueError, match="BALLOT_PROGRESS='widget' is not a progress style; valid: auto, text"):
        progress.bar([1])


"""The shared checkpoint-selection option (``select="last" | "val_rule"``) of every sparse method."""
from __future__ import annotations

import pytest

from ballot_lib.methods import make_config, run_method
from ballot_lib.methods.base import config_dict, select_checkpoint

from conftest import make_experiment, tree


def test_select_checkpoint_by_hand():
    history = [
        {"epoch": 1, "val_acc": 0.800, "val_mcd": 0.30},
        {"epoch": 2, "val_acc": 0.900, "val_mcd": 0.40},
        {"epoch": 3, "val_acc": 0.895, "val_mcd": 0.20},
        {"epoch": 4, "val_acc": 0.850, "val_mcd": 0.05},
    ]
    assert select_checkpoint(history, 0.01) == 2
    assert select_checkpoint(history, 0.0) == 1
    assert select_checkpoint(history, 0.1) == 3


def test_default_select_leaves_the_run_identity_unchanged():
    # "last" is the behaviour every stored run had: it is not part of the hash, "val_rule" is.
    assert "select" not in config_dict(make_config("mp", density=0.2))
    assert "select_eps" not in config_dict(make_config("lth", density=0.2))
    assert config_dict(make_config("mp", density=0.2, select="val_rule"))["select"] == "val_rule"
    # Ballot's identity always held select_eps (refined training).
    assert "select_eps" in config_dict(make_config("ballot", density=0.2))


@pytest.mark.parametrize("method", ["mp", "lth", "random"])
def test_val_rule_reports_the_selected_epoch_on_every_split(tmp_path, method):
    exp = make_experiment(tmp_path / "results", epochs=4)
    last = run_method(exp, method, 0, density=0.3)
    sel = run_method(exp, method, 0, density=0.3, select="val_rule", select_eps=0.05)
    assert sel.id != last.id
    history = sel.history()
    assert history == last.history()  # same training, same data order
    idx = select_checkpoint(history, 0.05)
    assert sel.summary["selected_epoch"] == history[idx]["epoch"] and sel.summary["select"] == "val_rule"
    assert last.summary["selected_epoch"] == history[-1]["epoch"] and last.summary["select"] == "last"
    for split in ("val", "test"):
        assert sel.metrics[split] == {k[len(split) + 1:]: v for k, v in history[idx].items()
                                      if k.startswith(split + "_")}


def test_ballot_plain_training_can_use_the_val_rule(tmp_path):
    exp = make_experiment(tmp_path / "results", epochs=3)
    plain = run_method(exp, "ballot", 0, density=0.3, refined=False)
    plain_sel = run_method(exp, "ballot", 0, density=0.3, refined=False, select="val_rule")
    assert plain.summary["select"] == "last" and plain_sel.summary["select"] == "val_rule"
    history = plain_sel.history()
    assert plain_sel.summary["selected_epoch"] == history[select_checkpoint(history, 0.01)]["epoch"]


@pytest.mark.parametrize("kw,message", [({"select": "best"}, "unknown select 'best'; valid choices: last, val_rule"),
                                        ({"select_eps": -0.1}, "select_eps must be a finite number >= 0"),
                                        ({"select_eps": float("inf")}, "select_eps must be a finite number"),
                                        ({"select_eps": float("nan")}, "select_eps must be a finite number")])
def test_bad_select_options_raise_before_anything_is_written(tmp_path, kw, message):
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ValueError, match=message):
        run_method(exp, "mp", 0, density=0.3, **kw)
    assert tree(tmp_path / "results") == []


def test_val_rule_run_is_derived_from_its_last_epoch_twin_without_training(tmp_path, monkeypatch):
    import ballot_lib.experiment as experiment_module

    fresh = run_method(make_experiment(tmp_path / "fresh", epochs=4), "lth", 0, density=0.3, select="val_rule")
    exp = make_experiment(tmp_path / "results", epochs=4)
    last = run_method(exp, "lth", 0, density=0.3)

    def fail(*args, **kwargs):
        raise AssertionError("a derived run must not train")

    monkeypatch.setattr(experiment_module, "train", fail)
    derived = run_method(exp, "lth", 0, density=0.3, select="val_rule")
    assert derived.id == fresh.id and derived.metrics == fresh.metrics
    assert derived.summary["derived_from"] == last.id
    assert derived.summary["selected_epoch"] == fresh.summary["selected_epoch"]
    assert derived.summary["compute_epochs"] == fresh.summary["compute_epochs"]
    assert all(bool((derived.mask[k] == fresh.mask[k]).all()) for k in fresh.mask)

"""Bad inputs fail early with messages that name the offending value and what is valid, and leave nothing behind."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from ballot_lib import pruning as P
from ballot_lib.data import DataConfig, DatasetError, get_dataset
from ballot_lib.experiment import Experiment
from ballot_lib.methods import run_method
from ballot_lib.models import ModelConfig, build_model
from ballot_lib.results import ResultsError, load_results
from ballot_lib.training import TrainConfig, train

from conftest import TINY_TRAIN, make_experiment, toy_bundle, tree

# ------------------------------------------------------------------------------------------ unknown names


def test_unknown_dataset_lists_the_valid_names(tmp_path):
    for call in (lambda: get_dataset("mnist"), lambda: DataConfig("mnist").validate(),
                 lambda: Experiment(DataConfig("mnist"), results_dir=str(tmp_path / "r"), progress=False)):
        with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; valid choices: .*digits.*digits_lt"):
            call()
    assert tree(tmp_path) == []


def test_unknown_model_lists_the_valid_names(tmp_path):
    for call in (lambda: build_model("lenet", (1, 8, 8), 10), lambda: ModelConfig("lenet").validate(),
                 lambda: Experiment(DataConfig("digits"), ModelConfig("lenet"), results_dir=str(tmp_path / "r"),
                                    progress=False)):
        with pytest.raises(ValueError, match=r"unknown model 'lenet'; valid choices: cnn, mlp, resnet18"):
            call()
    assert tree(tmp_path) == []


def test_image_model_on_tabular_data_says_what_to_use():
    with pytest.raises(ValueError, match="use model 'mlp'"):
        build_model("cnn", (104,), 2)


def test_unknown_method_lists_the_valid_names(tiny_exp, tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'ballot2'; valid choices: .*dense.*lth.*mp.*random"):
        run_method(tiny_exp, "ballot2", 0, density=0.5)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("d", [0, 1.5], ids=["zero", "above-one"])
def test_density_0_and_1_5_are_rejected_everywhere(tiny_exp, tmp_path, d):
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\].*got " + str(d)):
        run_method(tiny_exp, "lth", 0, density=d)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        P.magnitude_mask(nn.Linear(5, 2), d)
    assert tree(tmp_path) == []


def test_bad_data_options_are_rejected_up_front(tmp_path):
    for kw, msg in (({"long_tail": "zipf"}, "long_tail"), ({"lt_ratio": 0.5}, "lt_ratio"),
                    ({"val_fraction": 1.0}, "val_fraction"), ({"skew": 0.3}, "skew"), ({"max_train": 0}, "max_train")):
        with pytest.raises(ValueError, match=msg):
            Experiment(DataConfig("digits", **kw), results_dir=str(tmp_path / "r"), progress=False)
    assert tree(tmp_path) == []


def test_unavailable_device_is_rejected(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        Experiment(DataConfig("digits"), device="cuda", results_dir=str(tmp_path / "r"), progress=False)


# ------------------------------------------------------------------------------------------ missing data


def test_missing_data_root_names_the_expected_folder(tmp_path):
    root = tmp_path / "nope"
    with pytest.raises(DatasetError) as err:
        get_dataset(DataConfig(name="cifar10", root=str(root)))
    msg = str(err.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "test_batch" in msg  # which files were expected
    assert not root.exists()  # nothing created, nothing downloaded


def test_missing_data_leaves_no_run_folder(tmp_path):
    exp = Experiment(DataConfig(name="cifar10", root=str(tmp_path / "nope")), ModelConfig("mlp", width=4),
                     TINY_TRAIN, device="cpu", results_dir=str(tmp_path / "results"), progress=False)
    for call in (lambda: exp.dense(0), lambda: run_method(exp, "mp", 0, density=0.5)):
        with pytest.raises(DatasetError, match="cifar-10-batches-py"):
            call()
        assert not (tmp_path / "results" / "runs").exists() or tree(tmp_path / "results" / "runs") == []


# ------------------------------------------------------------------------------------------ corrupt files


def _truncated_checkpoint(path):
    """Write a real training checkpoint, then cut it in half."""
    bundle = toy_bundle()
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1)
    train(nn.Linear(5, 2), bundle, cfg, seed=0, device="cpu", progress=False, checkpoint=path, eval_splits=())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return bundle, TrainConfig(epochs=2, batch_size=8, lr=0.1)


def test_truncated_checkpoint_raises_results_error_naming_it(tmp_path):
    ckpt = tmp_path / "ckpt" / "checkpoint.pt"
    bundle, cfg = _truncated_checkpoint(ckpt)
    size = ckpt.stat().st_size
    with pytest.raises(ResultsError, match=str(ckpt)):
        train(nn.Linear(5, 2), bundle, cfg, seed=0, device="cpu", progress=False, checkpoint=ckpt)
    assert tree(tmp_path) == ["ckpt", "ckpt/checkpoint.pt"]  # no partial or temporary file added
    assert ckpt.stat().st_size == size  # and the evidence is not overwritten


def test_checkpoint_of_another_run_raises_results_error_naming_it(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"net": {"weight": torch.zeros(3, 3)}, "opt": {}, "rng": torch.get_rng_state(), "epoch": 1,
                "history": []}, ckpt)
    with pytest.raises(ResultsError, match="checkpoint.pt.*does not match"):
        train(nn.Linear(5, 2), toy_bundle(), TrainConfig(epochs=2, batch_size=8), seed=0, device="cpu",
              progress=False, checkpoint=ckpt)
    assert tree(tmp_path) == ["checkpoint.pt"]


def test_truncated_checkpoint_in_an_interrupted_run_raises_naming_it(tmp_path):
    exp = make_experiment(tmp_path / "results")
    run = exp.store.run(exp.run_config("dense", {}, 0))
    run.start()
    _truncated_checkpoint(run.file("checkpoint.pt"))
    before = tree(exp.store.root)
    with pytest.raises(ResultsError, match=str(run.file("checkpoint.pt"))):
        exp.dense(0)
    # theta0.pt is the only file the attempt may add (it is complete and needed by any retry).
    assert set(tree(exp.store.root)) - set(before) <= {f"runs/{run.id}/theta0.pt"}
    assert not any(n.endswith(".tmp") for n in tree(exp.store.root))


@pytest.fixture
def store_with_corrupt_metrics(tmp_path):
    exp = make_experiment(tmp_path / "results")
    good = exp.dense(0)
    bad = exp.dense(1)
    bad_file = bad.run.file("metrics.json")
    bad_file.write_text('{"test": {"acc": 0.')
    return exp, good, bad, bad_file


def test_corrupt_metrics_make_load_results_raise_naming_the_file(store_with_corrupt_metrics):
    exp, _, _, bad_file = store_with_corrupt_metrics
    before = tree(exp.store.root)
    with pytest.raises(ResultsError, match=str(bad_file)):
        load_results(exp.store.root)
    assert tree(exp.store.root) == before


def test_corrupt_metrics_are_skipped_with_a_warning_on_request(store_with_corrupt_metrics):
    exp, good, bad, bad_file = store_with_corrupt_metrics
    before = tree(exp.store.root)
    with pytest.warns(UserWarning, match=bad.id):
        df = load_results(exp.store.root, on_error="skip")
    assert set(df["run_id"]) == {good.id} and len(df) == 2
    assert tree(exp.store.root) == before
    with pytest.raises(ValueError, match="on_error"):
        load_results(exp.store.root, on_error="ignore")


def test_loading_a_corrupt_complete_run_raises_naming_the_file(store_with_corrupt_metrics):
    exp, _, _, bad_file = store_with_corrupt_metrics
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ResultsError, match=str(bad_file)):
            exp.dense(1)

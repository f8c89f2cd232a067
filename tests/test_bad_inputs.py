"""Bad inputs fail early with messages that name the offending value and what is valid, and leave nothing behind."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from ballot_lib import pruning as P
from ballot_lib.data import DataConfig, DatasetError, get_dataset
from ballot_lib.experiment import Experiment
from ballot_lib.checks import ParameterError
from ballot_lib.methods import run_method
from ballot_lib.methods.base import compute_epochs
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


# ================================================================================== the corpus of bad inputs
#
# Every case below is one bad input a hostile but fair user might give, in five categories: the public API, data
# roots, a corrupted results store, parameter files for the sweep, and papermill runs. Each asserts that the
# error names the parameter or the file, that no training started (``train`` is replaced by a function that
# fails the test) and that nothing was written to the results store.

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import ballot_lib.experiment as experiment_module  # noqa: E402
from ballot_lib import results as R  # noqa: E402
from ballot_lib import sweep  # noqa: E402
from ballot_lib.experiment import experiment_from_params  # noqa: E402
from ballot_lib.methods import METHODS  # noqa: E402
from ballot_lib.validation import ParameterError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_folders(results: Path) -> list[str]:
    """The run folders of a results store (empty if it has none)."""
    runs = Path(results) / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


@pytest.fixture
def no_training(monkeypatch):
    """Training (and, with ``no_data``, data loading) fails the test if it starts."""

    def fail(*a, **k):
        raise AssertionError("training started despite a bad input")

    monkeypatch.setattr(experiment_module, "train", fail)
    return fail


@pytest.fixture
def no_data(monkeypatch, no_training):
    def fail(*a, **k):
        raise AssertionError("data loaded despite a bad input")

    monkeypatch.setattr(experiment_module, "get_dataset", fail)
    experiment_module._cached_dataset.cache_clear()
    yield
    experiment_module._cached_dataset.cache_clear()


def _exp(results, **kw):
    """The tiny experiment through the notebooks' entry point."""
    base = dict(dataset="digits", model="mlp", epochs=2, batch_size=64, lr=0.1, device="cpu", results_dir=str(results),
                progress=False)
    return experiment_from_params(**{**base, **kw})


# ------------------------------------------------------------------------------------------ API
# (id, call(results_dir), text the message must contain)
API_CASES = [
    ("epochs-float", lambda r: _exp(r, epochs=2.5), "epochs"),
    ("epochs-string", lambda r: _exp(r, epochs="3"), "epochs"),
    ("epochs-zero", lambda r: _exp(r, epochs=0), "epochs"),
    ("batch_size-float", lambda r: _exp(r, batch_size=2.5), "batch_size"),
    ("batch_size-bool", lambda r: _exp(r, batch_size=True), "batch_size"),
    ("lr-bool", lambda r: _exp(r, lr=True), "lr"),
    ("lr-zero", lambda r: _exp(r, lr=0.0), "lr"),
    ("lr-string", lambda r: _exp(r, lr="0.1"), "lr"),
    ("momentum-negative", lambda r: _exp(r, momentum=-1), "momentum"),
    ("weight_decay-negative", lambda r: _exp(r, weight_decay=-1), "weight_decay"),
    ("milestones-string", lambda r: _exp(r, schedule="multistep", milestones="ab"), "milestones"),
    ("milestones-beyond-schedule", lambda r: _exp(r, schedule="multistep", milestones=[1, 5]), "milestones[1]"),
    ("milestones-float", lambda r: _exp(r, schedule="multistep", milestones=[1.5]), "milestones[0]"),
    ("milestones-without-multistep", lambda r: _exp(r, schedule="cosine", milestones=[1]), "milestones"),
    ("warmup-beyond-schedule", lambda r: _exp(r, warmup_epochs=2), "warmup_epochs"),
    ("rewind-point-float", lambda r: _exp(r).dense_weights(0, 1.5), "epoch"),
    ("optimizer-unknown", lambda r: _exp(r, optimizer="rmsprop"), "optimizer"),
    ("schedule-int", lambda r: _exp(r, schedule=1), "schedule"),
    ("device-unknown", lambda r: _exp(r, device="gpu"), "device"),
    ("progress-string", lambda r: _exp(r, progress="yes"), "progress"),
    ("target-unsupported", lambda r: _exp(r, target="Male"), "target"),
    ("sensitive-unsupported", lambda r: _exp(r, sensitive="race"), "sensitive"),
    ("sensitive-unknown-adult", lambda r: _exp(r, dataset="adult", sensitive="age"), "sensitive"),
    ("image_size-negative", lambda r: _exp(r, dataset="celeba", image_size=-5), "image_size"),
    ("image_size-bool", lambda r: _exp(r, dataset="celeba", image_size=False), "image_size"),
    ("image_size-unsupported", lambda r: _exp(r, image_size=32), "image_size"),
    ("max_train-negative", lambda r: _exp(r, max_train=-3), "max_train"),
    ("lt_ratio-string", lambda r: _exp(r, lt_ratio="10"), "lt_ratio"),
    ("dataset-int", lambda r: _exp(r, dataset=3), "dataset"),
    ("data-not-a-config", lambda r: Experiment("digits", results_dir=str(r), progress=False), "data"),
    ("width-zero", lambda r: Experiment(DataConfig("digits"), ModelConfig("mlp", width=0), TINY_TRAIN,
                                        device="cpu", results_dir=str(r), progress=False), "width"),
    ("split_seed-negative", lambda r: Experiment(DataConfig("digits", split_seed=-1), results_dir=str(r),
                                                 progress=False), "split_seed"),
    ("seed-float", lambda r: run_method(_exp(r), "dense", 1.5), "seed"),
    ("seed-negative", lambda r: run_method(_exp(r), "mp", -1, density=0.5), "seed"),
    ("seed-string", lambda r: _exp(r).dense("a"), "seed"),
    ("seed-bool", lambda r: run_method(_exp(r), "lth", True, density=0.5), "seed"),
    ("density-string", lambda r: run_method(_exp(r), "lth", 0, density="0.2"), "density"),
    ("density-bool", lambda r: run_method(_exp(r), "mp", 0, density=True), "density"),
    ("density-zero", lambda r: run_method(_exp(r), "random", 0, density=0.0), "density"),
    ("density-nan", lambda r: run_method(_exp(r), "lth", 0, density=float("nan")), "density"),
    ("rewind-beyond-schedule", lambda r: run_method(_exp(r), "lth", 0, density=0.5, rewind_epoch=5), "rewind_epoch"),
    ("rewind-float", lambda r: run_method(_exp(r), "lth", 0, density=0.5, rewind_epoch=1.5), "rewind_epoch"),
    ("levels-string", lambda r: run_method(_exp(r), "lth", 0, density=0.5, levels="2"), "levels"),
    ("option-misspelt", lambda r: run_method(_exp(r), "lth", 0, density=0.5, rewnd_epoch=1), "rewnd_epoch"),
    ("ballot-eta-string", lambda r: run_method(_exp(r), "ballot", 0, density=0.5, eta="1"), "eta"),
    ("ballot-refined-int", lambda r: run_method(_exp(r), "ballot", 0, density=0.5, refined=1), "refined"),
]


@pytest.mark.parametrize("call,names", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_corpus_api(tmp_path, no_data, call, names):
    results = tmp_path / "results"
    if "ballot" in names and "ballot" not in METHODS:
        pytest.skip("the ballot method is not registered")
    with pytest.raises(ValueError) as err:
        call(results)
    assert names in str(err.value)
    assert run_folders(results) == [] and tree(tmp_path) in ([], ["results"])


def test_corpus_api_errors_are_parameter_errors_that_are_also_type_errors(tmp_path, no_data):
    # Callers catching either ValueError or TypeError keep working.
    with pytest.raises(TypeError, match="epochs"):
        _exp(tmp_path / "r", epochs="3")
    with pytest.raises(ParameterError, match="seed"):
        run_method(_exp(tmp_path / "r"), "dense", -1)


def test_valid_values_keep_their_run_hashes(tmp_path):
    # density given as int 1 is the same run as 1.0; ints are accepted for float fields without a new hash.
    exp = _exp(tmp_path / "r")
    from ballot_lib.methods import make_config
    from ballot_lib.methods.base import config_dict

    a = exp.run_config("lth", config_dict(make_config("lth", density=1)), 0)
    b = exp.run_config("lth", config_dict(make_config("lth", density=1.0)), 0)
    assert R.config_hash(a) == R.config_hash(b)
    assert _exp(tmp_path / "r", lr=1).train.lr == 1


# ------------------------------------------------------------------------------------------ data roots


def _garbage_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for n in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
              "batches.meta"):
        (folder / n).write_bytes(b"not a pickle")
    return folder


DATA_CASES = [
    ("cifar10-missing", "cifar10", lambda t: t / "nope", "cifar-10-batches-py"),
    ("cifar100-missing", "cifar100", lambda t: t / "nope", "cifar-100-python"),
    ("cifar10s-missing", "cifar10s", lambda t: t / "nope", "cifar-10-batches-py"),
    ("celeba-missing", "celeba", lambda t: t / "nope", "list_attr_celeba.txt"),
    ("utkface-missing", "utkface", lambda t: t / "nope", "UTKFace"),
    ("tinyimagenet-missing", "tinyimagenet", lambda t: t / "nope", "tiny-imagenet-200"),
    ("cifar10-empty-folder", "cifar10", lambda t: (t / "empty" / "cifar-10-batches-py").mkdir(parents=True) or
     t / "empty", "data_batch_1"),
    ("cifar10-garbage-files", "cifar10", lambda t: _garbage_cifar(t / "garbage").parent, "cifar-10-batches-py"),
    ("root-is-a-file", "cifar10", lambda t: (t / "file.txt").write_text("x") and t / "file.txt", "file.txt"),
]


@pytest.mark.parametrize("name,make_root,expected", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_corpus_data_roots(tmp_path, no_training, name, make_root, expected):
    data = tmp_path / "data"
    data.mkdir()
    root = make_root(data)
    results = tmp_path / "results"
    with pytest.raises((DatasetError, ValueError)) as err:
        exp = Experiment(DataConfig(name, root=str(root), verify=False), ModelConfig("mlp", width=4), TINY_TRAIN,
                         device="cpu", results_dir=str(results), progress=False)
        run_method(exp, "mp", 0, density=0.5)
    assert expected in str(err.value)
    assert run_folders(results) == []


# ------------------------------------------------------------------------------------------ corrupted store


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory):
    """A store with seed 0's dense run and an MP run at density 0.5 (copied for each case)."""
    exp = make_experiment(tmp_path_factory.mktemp("pristine") / "results")
    dense = exp.dense(0)
    mp = run_method(exp, "mp", 0, density=0.5, finetune="short")
    return exp.store.root, dense.id, mp.id


def _file(root: Path, run: str, name: str) -> Path:
    return root / "runs" / run / name


def _put(obj):
    return lambda p: p.write_text(json.dumps(obj))


def _swap_config(root: Path, dense: str, mp: str) -> Path:
    shutil.copy(_file(root, mp, "config.json"), _file(root, dense, "config.json"))
    return _file(root, dense, "config.json")


def _load_results(exp):
    return load_results(exp.store.root)


def _load_history(exp):
    return R.load_history(exp.store.root)


def _mp_again(exp):  # the complete MP run is loaded (its mask read back)
    return run_method(exp, "mp", 0, density=0.5, finetune="short")


def _new_mp(exp):  # a new MP run needs the dense run's θT
    return run_method(exp, "mp", 0, density=0.25, finetune="short")


def _new_lth(exp):  # a new LTH run needs the dense run's θ0
    return run_method(exp, "lth", 0, density=0.25)


def _wrong_shapes(p: Path) -> None:
    torch.save({k: torch.ones(3, 3, dtype=torch.bool) for k in torch.load(p, weights_only=True)}, p)


def _wrong_keys(p: Path) -> None:
    state = torch.load(p, weights_only=True)
    torch.save({"renamed." + k: v for k, v in state.items()}, p)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


# (id, run "dense"/"mp", file, corrupt(path), action(exp), text the message must contain besides the file)
STORE_CASES = [
    ("summary-is-a-list", "mp", "summary.json", _put([]), _load_results, "expected a mapping"),
    ("metrics-split-is-a-number", "mp", "metrics.json", _put({"test": 5}), _load_results, "split 'test'"),
    ("metrics-value-is-a-string", "mp", "metrics.json", _put({"test": {"acc": "high"}}), _load_results, "test.acc"),
    ("metrics-truncated", "dense", "metrics.json", lambda p: p.write_text('{"test": {"acc": 0.'), _load_results,
     "remove-derived"),
    ("config-is-a-list", "mp", "config.json", _put([]), _load_results, "mapping"),
    ("config-without-seed", "mp", "config.json", None, _load_results, "seed"),
    ("config-copied-from-another-run", "dense", "config.json", "swap", _load_results, "not of its folder"),
    ("history-is-a-mapping", "dense", "history.json", _put({"epoch": 1}), _load_history, "list of per-epoch"),
    ("mask-wrong-shapes", "mp", "mask.pt", _wrong_shapes, _mp_again, "shape"),
    ("mask-not-a-dict", "mp", "mask.pt", lambda p: torch.save(torch.ones(3), p), _mp_again, "does not hold a mask"),
    ("mask-truncated", "mp", "mask.pt", _truncate, _mp_again, "rm -r"),
    ("thetaT-wrong-keys", "dense", "thetaT.pt", _wrong_keys, _new_mp, "remove-derived"),
    ("thetaT-wrong-shapes", "dense", "thetaT.pt", _wrong_shapes, _new_mp, "wrong shapes"),
    ("theta0-truncated", "dense", "theta0.pt", _truncate, _new_lth, "remove-derived"),
    ("summary-of-dense-is-a-list", "dense", "summary.json", _put([]), lambda e: e.dense(0), "remove-derived"),
]


@pytest.mark.parametrize("which,name,corrupt,action,expected", [c[1:] for c in STORE_CASES],
                         ids=[c[0] for c in STORE_CASES])
def test_corpus_store(tmp_path, pristine_store, no_training, which, name, corrupt, action, expected):
    src, dense, mp = pristine_store
    root = tmp_path / "results"
    shutil.copytree(src, root)
    run = dense if which == "dense" else mp
    path = _file(root, run, name)
    if corrupt == "swap":
        path = _swap_config(root, dense, mp)
    elif corrupt is None:  # drop the seed
        cfg = json.loads(path.read_text())
        cfg.pop("seed")
        path.write_text(json.dumps(cfg))
    else:
        corrupt(path)
    before = tree(root)
    exp = make_experiment(root)
    with pytest.raises(R.ResultsError) as err:
        action(exp)
    msg = str(err.value)
    assert str(path) in msg and expected in msg, msg
    assert tree(root) == before  # nothing written, nothing removed
    # Skipping instead of raising: every other run is still loaded.
    if action is _load_results:
        with pytest.warns(UserWarning, match=run):
            df = load_results(root, on_error="skip")
        assert run not in set(df["run_id"]) and len(df) == 2


def test_corpus_store_checkpoint_past_the_schedule_is_an_error_not_a_finished_run(tmp_path, no_training):
    exp = make_experiment(tmp_path / "results")
    run = exp.store.run(exp.run_config("dense", {}, 0))
    run.start()
    ckpt = run.file("checkpoint.pt")
    torch.save({"net": {}, "opt": {}, "rng": torch.get_rng_state(), "epoch": 99, "history": []}, ckpt)
    bundle = toy_bundle()
    net = nn.Linear(5, 2)
    torch.save({"net": net.state_dict(), "opt": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9,
                                                                  weight_decay=5e-4).state_dict(),
                "rng": torch.get_rng_state(), "epoch": 99, "history": []}, ckpt)
    before = tree(tmp_path)
    with pytest.raises(ResultsError, match=r"checkpoint.pt is at epoch 99, outside this run's schedule"):
        train(net, bundle, TrainConfig(epochs=2, batch_size=8, lr=0.1), seed=0, device="cpu", progress=False,
              checkpoint=ckpt)
    assert tree(tmp_path) == before and not run.complete


def test_remove_derived_is_the_fix_that_works_for_a_dense_run(tmp_path, pristine_store):
    src, dense, mp = pristine_store
    root = tmp_path / "results"
    shutil.copytree(src, root)
    _truncate(_file(root, dense, "theta0.pt"))
    exp = make_experiment(root)
    with pytest.raises(ResultsError, match="remove-derived"):
        _new_lth(exp)
    assert R.main(["remove-derived", str(root / "runs" / dense), "--dry-run"]) == 0
    assert run_folders(root) == sorted([dense, mp])
    assert R.main(["remove-derived", str(root / "runs" / dense)]) == 0
    assert run_folders(root) == []  # the dense run and the MP run trained from its θT
    assert _new_lth(exp).summary["density"] == pytest.approx(0.25, abs=0.01)  # and the store works again
    assert R.main(["check", str(root)]) == 0


# ------------------------------------------------------------------------------------------ sweep parameter files
# (id, parameter file text, text the one-line error must contain)
SWEEP_CASES = [
    ("include_ballot-no", "notebook: 01_lth_fairness_failure.ipynb\nparameters: {include_ballot: 'no'}\n",
     "include_ballot"),
    ("seeds-int", "notebook: 01_lth_fairness_failure.ipynb\nparameters: {seeds: 3}\n", "seeds"),
    ("seeds-float", "notebook: 01_lth_fairness_failure.ipynb\nparameters: {seeds: [0, 1.5]}\n", "seeds[1]"),
    ("seeds-duplicate", "notebook: 01_lth_fairness_failure.ipynb\ngrid: {seeds: [[0, 0]]}\n", "seeds"),
    ("densities-string", "notebook: 01_lth_fairness_failure.ipynb\nparameters: {densities: [0.2, '0.1']}\n",
     "densities[1]"),
    ("training_density-zero", "notebook: 01_lth_fairness_failure.ipynb\nparameters: {training_density: 0}\n",
     "training_density"),
    ("rewind_epoch-beyond", "notebook: 01_lth_fairness_failure.ipynb\nparameters: {epochs: 4, rewind_epoch: 4}\n",
     "rewind_epoch"),
    ("rewind_epochs-beyond", "notebook: 02_ballot_method.ipynb\nparameters: {epochs: 4, rewind_epochs: [0, 9]}\n",
     "rewind_epochs[1]"),
    ("etas-string", "notebook: 02_ballot_method.ipynb\nparameters: {etas: [1.0, a]}\n", "etas[1]"),
    ("etas-negative", "notebook: 02_ballot_method.ipynb\nparameters: {etas: [-1.0]}\n", "etas[0]"),
    ("ablation_seeds-negative", "notebook: 02_ballot_method.ipynb\nparameters: {ablation_seeds: [-1]}\n",
     "ablation_seeds[0]"),
    ("vote_fractions-zero", "notebook: 02_ballot_method.ipynb\nparameters: {vote_fractions: [0.0]}\n",
     "vote_fractions[0]"),
    ("choice_eps-negative", "notebook: 02_ballot_method.ipynb\nparameters: {choice_eps: -0.5}\n", "choice_eps"),
    ("epochs-string", "notebook: 00_quickstart.ipynb\nparameters: {epochs: '3'}\n", "epochs"),
    ("density-above-one", "notebook: 00_quickstart.ipynb\ngrid: {density: [0.5, 1.5]}\n", "density"),
    ("milestones-beyond", "notebook: 01_lth_fairness_failure.ipynb\n"
                          "parameters: {schedule: multistep, epochs: 10, milestones: [5, 20]}\n", "milestones[1]"),
    ("target-unsupported", "notebook: 01_lth_fairness_failure.ipynb\nparameters: {target: Male}\n", "target"),
    ("unknown-parameter", "notebook: 00_quickstart.ipynb\nparameters: {epoch: 3}\n", "epoch"),
    ("notebook-outside", "notebook: ../tests/x.ipynb\n", "notebook"),
    ("notebook-absolute", "notebook: /tmp/x.ipynb\n", "notebook"),
    ("notebook-missing", "notebook: 09_missing.ipynb\n", "09_missing.ipynb"),
    ("grid-not-a-list", "notebook: 00_quickstart.ipynb\ngrid: {seed: 3}\n", "seed"),
    ("yaml-broken", "notebook: 00_quickstart.ipynb\nparameters: {epochs: [\n", "YAML"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in SWEEP_CASES], ids=[c[0] for c in SWEEP_CASES])
def test_corpus_sweep_params_files(tmp_path, capsys, monkeypatch, no_data, text, expected):
    params = tmp_path / "p.yaml"
    params.write_text(text)
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: pytest.fail("a job ran despite a bad parameter file"))
    out = tmp_path / "out"
    for argv in (["validate", str(params)], ["grid", str(params), "--out", str(out)]):
        assert sweep.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not out.exists()


def test_corpus_sweep_bad_slurm_args_is_one_clean_line(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("notebook: 00_quickstart.ipynb\nparameters: {epochs: 2}\n")
    for bad in ("notjson", "[1, 2]"):
        proc = subprocess.run([sys.executable, "-m", "ballot_lib.sweep", "grid", str(params), "--out",
                               str(tmp_path / "out"), "--slurm", "--slurm-args", bad], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: --slurm-args")
    assert not (tmp_path / "out").exists()


def test_corpus_sweep_missing_params_file_and_bad_workers(tmp_path, capsys):
    assert sweep.main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err
    (tmp_path / "p.yaml").write_text("notebook: 00_quickstart.ipynb\n")
    assert sweep.main(["grid", str(tmp_path / "p.yaml"), "--workers", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--workers" in capsys.readouterr().err
    (tmp_path / "q.yaml").write_text("notebook: 00_quickstart.ipynb\nparameters: {training_density: 2}\n")
    assert sweep.main(["grid", str(tmp_path / "q.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'q.yaml'}: ") and "training_density" in err  # names the file
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ papermill
PAPERMILL_CASES = [
    ("density-above-one", {"density": 1.5}, "density"),
    ("epochs-string", {"epochs": "3"}, "epochs"),
    ("unknown-parameter", {"epoch": 3}, "epoch"),  # papermill itself only warns: it would be ignored
]


@pytest.mark.parametrize("params,expected", [c[1:] for c in PAPERMILL_CASES], ids=[c[0] for c in PAPERMILL_CASES])
def test_corpus_papermill_bad_parameter_fails_in_the_validation_cell(tmp_path, params, expected):
    import papermill

    results = tmp_path / "results"
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(REPO / "notebooks" / "00_quickstart.ipynb"), str(out), kernel_name="python3",
                                   parameters={**params, "results_dir": str(results), "epochs": params.get("epochs", 2),
                                               "device": "cpu"},
                                   cwd=str(REPO / "notebooks"), progress_bar=False)
    assert "ParameterError" in err.value.ename and expected in err.value.evalue
    assert "validate_notebook_params" in err.value.traceback[-1] or err.value.exec_count <= 3
    assert run_folders(results) == [] and not (results / "runs").exists()


def test_corpus_store_summary_with_a_non_numeric_density_is_named_not_a_crash(tmp_path, pristine_store):
    src, dense, mp = pristine_store
    root = tmp_path / "results"
    shutil.copytree(src, root)
    path = _file(root, mp, "summary.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "density": "high"}))
    with pytest.raises(ResultsError, match=r"summary.json is malformed \(field 'density' is 'high'"):
        load_results(root)
    with pytest.warns(UserWarning, match=mp):
        assert set(load_results(root, on_error="skip")["run_id"]) == {dense}


def test_group_fairness_on_data_without_groups_is_refused_before_anything_is_written(tmp_path):
    exp = make_experiment(tmp_path / "results")
    for mode in ("group", "class_group"):
        with pytest.raises(ValueError, match=f"fairness='{mode}' needs a dataset with a sensitive attribute; "
                                             "'digits' has none"):
            run_method(exp, "ballot", 0, density=0.5, fairness=mode)
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


def test_a_damaged_twin_is_not_copied_into_a_val_rule_run(tmp_path):
    """A val_rule run reuses its complete last-epoch twin's training; the twin's files are checked first, so a
    damaged twin raises (naming its file) instead of spreading into a new run."""
    exp = make_experiment(tmp_path / "results")
    twin = run_method(exp, "lth", 0, density=0.5)
    P.save_mask({"0.weight": torch.ones(3, 3)}, twin.run.file("mask.pt"))  # wrong names and shapes
    before = {p.name for p in (tmp_path / "results" / "runs").iterdir()}
    with pytest.raises(Exception, match="mask"):
        run_method(exp, "lth", 0, density=0.5, select="val_rule")
    after = {p.name for p in (tmp_path / "results" / "runs").iterdir()}
    assert after == before  # no new run folder


def test_temporary_files_of_a_killed_write_are_removed(tmp_path):
    """A writer killed during an atomic write leaves ``.<name>.<random>.tmp``; the next writer of the folder (under
    its lock) removes it, and a finished run holds none."""
    import shutil

    exp = make_experiment(tmp_path / "results")
    first = run_method(exp, "lth", 0, density=0.5)
    folder = first.run.path
    shutil.rmtree(folder)  # as if it had been killed before finishing ...
    folder.mkdir()
    (folder / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"partial")  # ... while writing its checkpoint
    again = run_method(exp, "lth", 0, density=0.5)
    assert again.run.path == folder and again.run.complete
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("params, message", [
    ({"datasets": ["digits", "digits_s"], "epochs": 2, "dataset_overrides": {"digits_s": {"epochs": 1}},
      "rewind_epoch": 1},
     r"rewind_epoch=1 on digits_s \(1 epochs\): the rewind point must be in \[0, 1\)"),
    ({"datasets": ["digits", "digits_s"], "epochs": 2, "dataset_overrides": {"digits_s": {"epochs": 1}},
      "ballot_candidates": {"default": {}, "w": {"refined": True, "schedule": "warmup_cosine", "warmup_epochs": 1}}},
     r"ballot_candidates\['w'\] on digits_s \(1 epochs\): warmup_epochs"),
    # a candidate's own rewind point would make the comparison measure the rewind point too (LTH rewinds to θ0)
    ({"datasets": ["digits"], "epochs": 2, "ballot_candidates": {"r": {"rewind_epoch": 1}}},
     r"ballot_candidates\['r'\] sets rewind_epoch=1 but the comparison's rewind_epoch is 0"),
    ({"datasets": ["digits"], "epochs": 2, "rewind_epoch": "1"}, "rewind_epoch must be an integer"),
    ({"datasets": ["digits"], "dataset_overrides": {"digits": {"epochs": -4}}},
     r"dataset_overrides\['digits'\]: epochs must be >= 1, got -4"),
    ({"choice_eps": -5.0}, "choice_eps must be >= 0"),
])
def test_notebook03_per_dataset_recipes_are_checked_before_anything_runs(tmp_path, params, message):
    """Each dataset's recipe (with its overrides) and every Ballot candidate against it are checked up front, with
    no data loaded and nothing written: before, these passed `sweep validate` and failed after training."""
    from ballot_lib.validation import ParameterError, validate_notebook_params

    with pytest.raises(ParameterError, match=message):
        validate_notebook_params("03_baseline_comparison.ipynb",
                                 {**params, "results_dir": str(tmp_path / "results"), "device": "cpu"})
    assert tree(tmp_path) == []


def test_an_integer_for_a_float_setting_is_the_same_run_as_its_float(tmp_path):
    """`lr: 1` in a YAML file and `lr=1.0` are one setting: same config, same hash, so the run is reused (an int
    used to hash differently and train the same run twice, breaking seed pairing)."""
    import dataclasses

    from ballot_lib.experiment import experiment_from_params
    from ballot_lib.methods import make_config
    from ballot_lib.results import config_hash

    a = experiment_from_params(dataset="digits", model="mlp", lr=1, weight_decay=0, results_dir=str(tmp_path))
    b = experiment_from_params(dataset="digits", model="mlp", lr=1.0, weight_decay=0.0, results_dir=str(tmp_path))
    assert type(a.train.lr) is float and type(a.train.weight_decay) is float
    assert config_hash(dataclasses.asdict(a.train)) == config_hash(dataclasses.asdict(b.train))
    for method, opts in (("ballot", {"eta": 2}), ("mp", {"finetune": "short", "finetune_lr": 1}),
                         ("safecompress", {"fairness_weight": 1})):
        as_float = {k: float(v) if isinstance(v, int) else v for k, v in opts.items()}
        i, f = make_config(method, density=0.1, **opts), make_config(method, density=0.1, **as_float)
        assert i == f and config_hash(dataclasses.asdict(i)) == config_hash(dataclasses.asdict(f)), method
    # Booleans are not numbers here.
    with pytest.raises(ValueError, match="lr"):
        experiment_from_params(dataset="digits", model="mlp", lr=True, results_dir=str(tmp_path))


def test_an_image_model_on_feature_vectors_is_refused_by_validate_and_before_any_file(tmp_path):
    from ballot_lib.experiment import experiment_from_params
    from ballot_lib.validation import validate_notebook_params

    with pytest.raises(ValueError, match="model 'cnn' takes images and dataset 'adult' gives feature vectors"):
        validate_notebook_params("00_quickstart.ipynb", {"dataset": "adult", "model": "cnn"})
    with pytest.raises(ValueError, match="no \\(dataset, model\\) pair"):
        validate_notebook_params("03_baseline_comparison.ipynb", {"datasets": ["adult"], "models": ["cnn"]})
    # notebook 03 skips the conv model on adult when another pair is valid
    validate_notebook_params("03_baseline_comparison.ipynb", {"datasets": ["adult", "digits"], "models": ["cnn"]})
    exp = experiment_from_params(dataset="adult", model="cnn", epochs=1, results_dir=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="use model 'mlp'"):
        exp.dense(0)
    assert tree(tmp_path) == []


def test_a_results_dir_or_out_dir_that_is_a_file_is_refused(tmp_path):
    from ballot_lib.experiment import experiment_from_params
    from ballot_lib.validation import validate_notebook_params

    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ValueError, match="results_dir .* is not a folder"):
        validate_notebook_params("00_quickstart.ipynb", {"results_dir": str(f)})
    with pytest.raises(ValueError, match="results_dir .* is not a folder"):
        experiment_from_params(dataset="digits", results_dir=str(f))
    with pytest.raises(ValueError, match="out_dir .* is not a folder"):
        validate_notebook_params("05_results_report.ipynb", {"out_dir": str(f)})
    with pytest.raises(ValueError, match="'density' is not a Ballot option"):
        validate_notebook_params("03_baseline_comparison.ipynb",
                                 {"ballot_candidates": {"default": {}, "x": {"density": 0.5}}})


def test_grid_with_a_missing_real_dataset_stops_before_any_job(tmp_path, capsys):
    """A job on a real dataset whose files are absent would fail inside the notebook (its error only in a log):
    `grid` names the missing files in one line, exits 2 and writes nothing."""
    from ballot_lib import sweep

    params = tmp_path / "cifar.yaml"
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    params.write_text(f"notebook: 00_quickstart.ipynb\nparameters: {{dataset: cifar10, model: cnn, data_root: {nodata}}}\n")
    out = tmp_path / "out"
    assert sweep.main(["grid", str(params), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "CIFAR10: missing data_batch_1" in err and str(nodata / "cifar-10-batches-py") in err, err
    assert "Traceback" not in err and not out.exists()


def test_sweep_command_line_mistakes_are_one_line_errors_before_anything_runs(tmp_path, capsys):
    from ballot_lib import sweep

    dup = tmp_path / "dup.yaml"
    dup.write_text("notebook: 00_quickstart.ipynb\ngrid: {seed: [0, 0]}\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["validate", str(tmp_path)], "cannot be read"),                   # a folder, not a file
        (["validate", str(dup)], "lists the same value more than once (0"),  # the same job twice
        (["grid", str(dup), "--out", str(afile)], "is a file, not a folder"),
        (["grid", str(dup), "--out", str(afile / "sub")], "which is a file, not a folder"),  # a file on the way
        (["suite", "--out", str(afile)], "is a file, not a folder"),
        (["cost", str(dup), "--csv", str(tmp_path)], "is a folder"),
        (["cost", str(dup), "--ips", "resnet18=inf"], "positive finite"),
        (["cost", str(dup), "--concurrency", "inf"], "positive finite"),
    ]
    for argv, message in cases:
        assert sweep.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dup.yaml"]


@pytest.mark.parametrize("method", ["safecompress", "fairscratch"])
def test_budget_too_short_for_the_warmup_refused_before_training(tmp_path, method):
    # 4 epochs with a 2-epoch warm-up: budget 0.5 trains 2 epochs, which cannot hold the warm-up. It used to fail
    # inside train() with a message about warmup_epochs (not the budget), after the run had been started.
    exp = make_experiment(tmp_path / "results", epochs=4, warmup_epochs=2, schedule="cosine")
    with pytest.raises(ParameterError, match=r"budget=0\.5 trains 2 epoch.*warmup_epochs = 2.*at least 0\.75"):
        run_method(exp, method, 0, density=0.5, budget=0.5)
    assert tree(tmp_path / "results") == []
    assert compute_epochs(exp, method, density=0.5, budget=0.75) == pytest.approx(3.0)


# ------------------------------------------------------------------------------------------ run_grid


@pytest.mark.parametrize("variants, densities, seeds, message", [
    (None, [0.5], [0, -1], r"seeds\[1\] must be a non-negative integer"),
    (None, [0.5], [0, 2**64], r"seeds\[1\] must be a non-negative integer below 2\*\*63"),
    (None, [0.5], [0, True], r"seeds\[1\] must be an integer"),
    (None, [0.5], [0, 1.0], r"seeds\[1\] must be an integer"),
    (None, [0.5], "01", "seeds must be a list"),
    (None, [0.5], [], "seeds must be a non-empty list"),
    (None, [0.5], [0, 1, 0], "seeds lists 0 twice"),
    (None, [], [0], "densities must be a non-empty list"),
    (None, [0.5, 1.5], [0], r"densities\[1\]: density must be in \(0, 1\]"),
    (None, [0.5, "0.2"], [0], r"densities\[1\]: density must be a number"),
    (None, [0.5, True], [0], r"densities\[1\]: density must be a number"),
    (None, [0.5, 0.5], [0], "densities lists 0.5 twice"),
    ([], [0.5], [0], "variants must be a non-empty list"),
    ("a-string", [0.5], [0], r"variants\[0\] must be a Variant"),
    ("dup-label", [0.5], [0], "variants \\(labels\\) lists 'x' twice"),
    ("dense-only", [2.0], [0], r"densities\[0\]: density must be in \(0, 1\]"),  # checked even if unused
])
def test_run_grid_checks_every_seed_density_and_variant_before_any_job(tmp_path, no_training, variants, densities,
                                                                      seeds, message):
    """A bad second seed used to be refused only after the first seed's runs had trained."""
    from ballot_lib.methods import Variant, run_grid

    variants = {None: [Variant("MP", "mp", {})], "dense-only": [Variant("dense", "dense")], "a-string": ["mp"],
                "dup-label": [Variant("x", "mp", {}), Variant("x", "lth", {})]}.get(variants, variants) \
        if not isinstance(variants, list) else variants
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ParameterError, match=message):
        run_grid(exp, variants, densities, seeds, progress=False)
    assert tree(tmp_path) == []


def test_run_grid_accepts_numpy_seeds_and_densities(tmp_path):
    import numpy as np

    from ballot_lib.methods import Variant, run_grid

    exp = make_experiment(tmp_path / "results")
    df = run_grid(exp, [Variant("dense", "dense")], [np.float32(0.5)], np.array([0], dtype=np.int64),
                  progress=False)
    assert set(df["seed"]) == {0} and set(df["variant"]) == {"dense"}


# ------------------------------------------------------------------------------------------ group disparity


@pytest.mark.parametrize("params, ok", [
    ({"dataset": "digits"}, False), ({"dataset": "digits_lt"}, False), ({"dataset": "celeba"}, False),
    ({"dataset": "utkface", "sensitive": "none"}, False), ({"dataset": "cifar10", "model": "cnn"}, False),
    ({"dataset": "digits_s"}, True), ({"dataset": "adult"}, True), ({"dataset": "celeba", "target": "Smiling"}, True),
    ({"dataset": "cifar10s", "model": "cnn"}, True),
])
def test_a_group_disparity_on_data_without_groups_is_refused_by_validation(tmp_path, capsys, params, ok):
    """Notebook 04 with disparity='group_gap' on digits used to pass validation, train the whole population and
    fail in its tables with a pandas KeyError."""
    from ballot_lib.validation import validate_notebook_params

    args = {**params, "disparity": "group_gap", "results_dir": str(tmp_path / "results")}
    if ok:
        validate_notebook_params("04_prune_responsibly.ipynb", args, check_device=False)
        return
    with pytest.raises(ParameterError, match=rf"disparity='group_gap' needs a dataset with a sensitive attribute.*"
                                             rf"'{params['dataset']}' has none.*valid choices: cwv, mcd, worst_class"):
        validate_notebook_params("04_prune_responsibly.ipynb", args, check_device=False)
    if params["dataset"] == "digits":  # and `sweep validate`
        pfile = tmp_path / "p.yaml"
        pfile.write_text("notebook: 04_prune_responsibly.ipynb\nparameters: {dataset: digits, disparity: group_gap}\n")
        assert sweep.main(["validate", str(pfile)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "disparity='group_gap'" in err, err
        pfile.unlink()
    assert tree(tmp_path) == []


def test_population_tables_of_a_group_disparity_without_groups_is_a_one_line_error(tmp_path, capsys):
    from ballot_lib import population

    exp = make_experiment(tmp_path / "results")
    for seed in (0, 1):
        run_method(exp, "l1_unstructured", seed, density=0.5, retrain_epochs=1)
    before = tree(tmp_path)
    assert population.main([str(exp.store.root), "--disparity", "group_gap"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: disparity 'group_gap'") and err.count("\n") == 1 and "digits" in err, err
    assert "valid choices: cwv, mcd, worst_class" in err
    assert tree(tmp_path) == before
    with pytest.raises(ValueError, match="group_gap"):
        population.pareto_table(load_results(exp.store.root), "group_gap")


# ------------------------------------------------------------------------------------------ options that were
# accepted and trained something else than asked (found by a fuzzing review)

@pytest.mark.parametrize("method,opts,message", [
    # NaN/inf were stored as null in the run id: another run's results came back.
    ("l1_unstructured", {"retrain_lr": float("inf")}, r"retrain_lr must be a number or None, got inf"),
    ("mp", {"finetune": "short", "finetune_lr": float("nan")}, r"finetune_lr must be a number or None, got nan"),
    ("ballot", {"eta": float("inf")}, "eta must be a finite number"),
    ("ballot", {"delta": float("inf")}, "delta must be a finite number"),
    # Ballot options without a range check trained (and stored) nonsense.
    ("ballot", {"eta": -5.0}, r"eta must be >= 0"),
    ("ballot", {"schedule": "warmup_cosine", "warmup_epochs": -3}, r"warmup_epochs must be >= 0"),
    ("ballot", {"gamma": -1.0}, r"gamma must be >= 0"),
    ("ballot", {"vote_fraction": 1.5}, r"vote_fraction must be in \(0, 1\]"),
    # MP: 0 was replaced by the default rate; options of another fine-tuning changed the run id only.
    ("mp", {"finetune": "short", "finetune_lr": 0.0}, r"finetune_lr must be > 0"),
    ("mp", {"finetune": "short", "finetune_lr": -1.0}, r"finetune_lr must be > 0"),
    ("mp", {"finetune_lr": 0.01}, r"finetune_lr=0.01 applies to finetune='short' only, not finetune='full'"),
    ("mp", {"finetune": "short", "rewind_epoch": 1}, r"rewind_epoch=1 applies to finetune='lr_rewind' only"),
    ("mp", {"finetune": "lr_rewind", "finetune_epochs": 2}, r"finetune_epochs=2 applies to finetune='short'"),
    # LTH: levels were ignored when rate was given.
    ("lth", {"levels": 3, "rate": 0.2}, r"give levels \(3\) or rate \(0.2\), not both"),
    # Faithful mode replaced what was asked for.
    ("ballot", {"mode": "faithful", "eta": 2.0}, r"mode='faithful' .* fixes eta to 1.0; got eta=2.0"),
])
def test_options_that_trained_something_else_are_refused_before_anything_is_written(tmp_path, method, opts,
                                                                                      message):
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ParameterError, match=message):
        run_method(exp, method, 0, **{"density": 0.5, **opts})
    assert tree(tmp_path / "results") == []


def test_a_density_that_keeps_no_weight_is_refused_before_anything_is_written(tmp_path):
    exp = make_experiment(tmp_path / "results")
    n = sum(p.numel() for p in P.prunable_weights(exp.new_model()).values())
    with pytest.raises(ParameterError, match=rf"density=1e-05 keeps round\(density × {n:,}\) = 0 .* at least"):
        run_method(exp, "lth", 0, density=1e-5)
    assert tree(tmp_path / "results") == []
    assert round((1 / n) * n) == 1  # the smallest density it suggests keeps one weight


def test_a_run_config_with_a_non_finite_number_gets_no_run_id(tmp_path):
    from ballot_lib.results import ResultsStore

    with pytest.raises(ValueError, match=r"method_cfg.lr = inf is not a finite number"):
        ResultsStore(tmp_path).run({"method": "x", "method_cfg": {"lr": float("inf")}})


@pytest.mark.parametrize("device", ["mps", "meta", "cuda:99"])
def test_devices_the_suite_cannot_train_on_are_refused_before_anything_is_written(tmp_path, device):
    from ballot_lib.experiment import experiment_from_params

    with pytest.raises(ValueError, match=repr(device)):
        experiment_from_params(dataset="digits", model="mlp", device=device, results_dir=str(tmp_path / "r"))
    assert tree(tmp_path) == []


@pytest.mark.parametrize("pairs,message", [
    ([({"w": torch.ones(2)}, {"w": torch.ones(2)}), ({"v": torch.ones(2)}, {"v": torch.ones(2)})],
     r"grad_pairs\[1\]\[0\] \(g_acc\) names tensors \['v'\]"),
    ([{"w": torch.ones(2)}], r"grad_pairs\[0\] must be a \(g_acc, g_fair\)"),
    ([([1.0, 2.0], [1.0, 2.0])], r"grad_pairs\[0\]\[0\] \(g_acc\) must be a dict name -> tensor"),
])
def test_vote_mask_names_what_is_wrong_with_its_gradients(pairs, message):
    from ballot_lib.methods import ballot

    with pytest.raises(ParameterError, match=message):
        ballot.vote_mask(pairs, 0.5)


# ------------------------------------------------------------------------------------------ sweep --gpus


@pytest.mark.parametrize("gpus, message", [
    ("x,y", "--gpus must be comma-separated non-negative GPU indices"),
    ("0,-1", "'-1' is not one"),
    ("0,,1", "'' is not one"),
    ("1.5", "'1.5' is not one"),
    ("0,0", "--gpus lists GPU 0 more than once"),
    ("0,1,00", "--gpus lists GPU 0 more than once"),
])
def test_sweep_grid_bad_gpus_is_a_one_line_error_before_anything_runs(tmp_path, capsys, monkeypatch, gpus, message):
    params = tmp_path / "p.yaml"
    params.write_text("notebook: 00_quickstart.ipynb\nparameters: {epochs: 2}\n")
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: pytest.fail("a job ran despite a bad --gpus"))
    out = tmp_path / "out"
    assert sweep.main(["grid", str(params), "--out", str(out), "--gpus", gpus]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpus") and err.count("\n") == 1 and message in err, err
    assert not out.exists()
    with pytest.raises(ValueError, match="--gpus"):  # the API too
        sweep.run_grid_file(params, out, gpus=gpus.split(","))
    assert not out.exists()


def test_sweep_gpus_accepts_distinct_indices():
    assert sweep.parse_gpus("") == [] and sweep.parse_gpus("0,1, 3") == ["0", "1", "3"]
    assert sweep.check_gpus([0, "2"]) == ["0", "2"]


def test_sweep_params_file_setting_a_key_in_parameters_and_grid_is_refused(tmp_path, capsys, monkeypatch):
    params = tmp_path / "p.yaml"
    params.write_text("notebook: 00_quickstart.ipynb\nparameters: {epochs: 2, lr: 0.1}\ngrid: {epochs: [1, 3]}\n")
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: pytest.fail("a job ran despite a bad parameter file"))
    out = tmp_path / "out"
    for argv in (["validate", str(params)], ["grid", str(params), "--out", str(out)]):
        assert sweep.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "'epochs' set in both 'parameters' and 'grid'" in err and str(params) in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ metrics, masks, fronts


@pytest.mark.parametrize("num_classes, message", [
    (3.0, r"num_classes must be an integer, got 3\.0 \(float\)"),
    (True, r"num_classes must be an integer, got True \(bool\)"),
    (0, "num_classes must be >= 1, got 0"),
    ("3", r"num_classes must be an integer, got '3' \(str\)"),
])
def test_metrics_refuse_a_class_count_that_is_not_a_positive_int(num_classes, message):
    from ballot_lib import metrics as M

    y = torch.tensor([0, 1, 0])
    for fn in (M.per_class_accuracy, M.confusion_matrix, M.cwv, M.mcd):
        with pytest.raises(ParameterError, match=message):
            fn(y, y, num_classes)
    with pytest.raises(ParameterError, match="num_groups must be an integer"):
        M.per_group_accuracy(y, y, y, 2.0)


def test_metrics_accept_numpy_class_counts():
    import numpy as np

    from ballot_lib import metrics as M

    y = torch.tensor([0, 1, 0])
    assert M.per_class_accuracy(y, y, np.int64(2)).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("call, message", [
    (lambda: P.magnitude_mask(None, 0.5), "model must be an nn.Module or a mapping name -> weight tensor, got "
                                          "NoneType"),
    (lambda: P.magnitude_mask(nn.ReLU(), 0.5), "model ReLU has no prunable weights: only the weights of nn.Linear and "
                                               "nn.Conv2d layers"),
    (lambda: P.random_mask(nn.Sequential(nn.ReLU(), nn.Dropout()), 0.5), "model Sequential has no prunable weights"),
    (lambda: P.make_mask("magnitude_global", {}, 0.5), "mapping name -> weight tensor is empty"),
    (lambda: P.density(None), "mask must be a mapping name -> 0/1 tensor, got NoneType"),
    (lambda: P.density({}), "mask is empty"),
    (lambda: P.density({"w": torch.tensor([0.5, 2.0])}), r"mask\['w'\] must hold only 0/1 .*got e\.g\. \[0\.5, 2\.0\]"),
    (lambda: P.density({"w": [1, 0]}), r"mask\['w'\] must be a 0/1 tensor, got list"),
    (lambda: P.sparsity({"w": torch.tensor([-1, 1])}), r"mask\['w'\] must hold only 0/1"),
    (lambda: P.layer_densities({"w": torch.tensor([3])}), r"mask\['w'\] must hold only 0/1"),
])
def test_masks_of_no_model_or_of_values_other_than_0_1_are_clear_errors(call, message):
    with pytest.raises(ParameterError, match=message):
        call()


def test_density_of_0_1_masks_of_any_dtype():
    assert P.density({"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([True, True])}) == 0.75
    assert P.density({"a": torch.tensor([1, 0], dtype=torch.uint8)}) == 0.5


@pytest.mark.parametrize("maximize, message", [
    (["yes", "no"], r"maximize\[0\] must be True or False .*got 'yes' \(str\)"),
    ([True, 0], r"maximize\[1\] must be True or False .*got 0 \(int\)"),
    ([True, None], r"maximize\[1\] must be True or False"),
    ("tf", "maximize must be a list of one True/False per objective"),
])
def test_pareto_maximize_flags_must_be_bools(maximize, message):
    from ballot_lib import pareto

    pts = [[1.0, 2.0], [2.0, 1.0]]
    for call in (lambda: pareto.non_dominated(pts, maximize), lambda: pareto.hypervolume(pts, [0, 0], maximize),
                 lambda: pareto.chebyshev(pts, maximize, [1, 1])):
        with pytest.raises(ParameterError, match=message):
            call()


def test_pareto_accepts_numpy_bools():
    import numpy as np

    from ballot_lib import pareto

    pts = [[1.0, 2.0], [2.0, 1.0], [0.0, 0.0]]
    assert pareto.non_dominated(pts, np.array([True, True])).tolist() == [True, True, False]
    assert pareto.non_dominated(pts, [np.bool_(True), True]).tolist() == [True, True, False]


def test_experiment_from_params_names_an_unknown_parameter_and_the_valid_ones(tmp_path):
    from ballot_lib.experiment import experiment_params

    with pytest.raises(ParameterError, match=r"no parameter\(s\) \['epoch'\].*did you mean 'epochs'.*valid: .*'lr'"):
        experiment_from_params(epoch=3, results_dir=str(tmp_path / "r"))
    assert "unknown" not in experiment_params() and "check_device" not in experiment_params()
    assert tree(tmp_path) == []


# ------------------------------------------------------------------------------------------ options that do not
# apply: ignored by the setting, yet hashed into the run id (the same computation trained again under another id).
# A non-default value is refused at validation, naming the option and its value; the default always passes.

def _population(technique: str, **kw):
    from ballot_lib.methods import make_config

    return make_config(technique, density=0.5, **kw)


# (id, build-and-validate, text the message must contain)
INERT_OPTIONS = [
    ("skew-digits", lambda: DataConfig("digits", skew=0.99).validate(), "skew=0.99 applies to the skewed datasets"),
    ("skew-digits_lt", lambda: DataConfig("digits_lt", skew=0.8).validate(), "skew=0.8"),
    ("skew-adult", lambda: DataConfig("adult", skew=0.5).validate(), "skew=0.5"),
    ("skew-cifar10", lambda: DataConfig("cifar10", skew=1.0).validate(), "not dataset 'cifar10'"),
    ("lt_ratio-no-long-tail", lambda: DataConfig("digits", lt_ratio=50.0).validate(),
     "lt_ratio=50.0 applies to the 'exp' long-tail profile only, not dataset 'digits' with long_tail='none'"),
    ("lt_ratio-step", lambda: DataConfig("cifar10", long_tail="step", lt_ratio=100.0).validate(), "lt_ratio=100.0"),
    ("lt_ratio-digits_lt-step", lambda: DataConfig("digits_lt", long_tail="step", lt_ratio=5.0).validate(),
     "lt_ratio=5.0 applies to the 'exp' long-tail profile only, not dataset 'digits_lt' with long_tail='step'"),
    ("lt_keep-no-long-tail", lambda: DataConfig("digits", lt_keep=0.5).validate(), "lt_keep=0.5"),
    ("lt_keep-exp", lambda: DataConfig("digits", long_tail="exp", lt_keep=0.5).validate(),
     "lt_keep=0.5 applies to the 'step' long-tail profile only"),
    ("lt_keep-digits_lt", lambda: DataConfig("digits_lt", lt_keep=0.2).validate(),
     "not dataset 'digits_lt', whose train split has the 'exp' long-tail profile by construction"),
    ("lt_classes-no-long-tail", lambda: DataConfig("digits", lt_classes=(1, 2)).validate(), "lt_classes=[1, 2]"),
    ("lt_classes-digits_lt", lambda: DataConfig("digits_lt", lt_classes=[3]).validate(), "lt_classes=[3]"),
    ("lt_classes-twice", lambda: DataConfig("digits", long_tail="step", lt_classes=(3, 3)).validate(),
     "lt_classes lists 3 twice"),
    ("lt_classes-out-of-range", lambda: DataConfig("digits", long_tail="step", lt_classes=(3, 10)).validate(),
     "lt_classes [10] out of range for dataset 'digits': its classes are 0..9"),
    ("long_tail-exp-on-digits_lt", lambda: DataConfig("digits_lt", long_tail="exp").validate(),
     "long_tail='exp' is the profile dataset 'digits_lt' has by construction"),
    ("val_fraction-celeba", lambda: DataConfig("celeba", val_fraction=0.2).validate(),
     "val_fraction=0.2 applies to datasets whose val split is carved from train only, not dataset 'celeba'"),
    ("split_seed-celeba", lambda: DataConfig("celeba", split_seed=1).validate(), "split_seed=1"),
    ("max_train-below-classes", lambda: DataConfig("digits", max_train=7).validate(),
     "max_train=7 is below the 10 classes of dataset 'digits'"),
    ("max_train-below-utkface-race", lambda: DataConfig("utkface", target="race", max_train=4).validate(),
     "max_train=4 is below the 5 classes"),
    ("momentum-adam", lambda: TrainConfig(optimizer="adam", momentum=0.5).validate(),
     "momentum=0.5 applies to optimizer 'sgd' only, not optimizer 'adam'"),
    ("momentum-adamw", lambda: TrainConfig(optimizer="adamw", momentum=0.0).validate(), "momentum=0.0"),
    ("nesterov-adam", lambda: TrainConfig(optimizer="adam", nesterov=True).validate(),
     "nesterov=True applies to optimizer 'sgd' with momentum > 0 only, not optimizer 'adam'"),
    ("nesterov-no-momentum", lambda: TrainConfig(momentum=0.0, nesterov=True).validate(),
     "nesterov=True applies to optimizer 'sgd' with momentum > 0 only, not momentum=0.0"),
    ("gamma-cosine", lambda: TrainConfig(gamma=0.5).validate(),
     "gamma=0.5 applies to schedule 'multistep' with milestones only, not schedule 'cosine'"),
    ("gamma-constant", lambda: TrainConfig(schedule="constant", gamma=0.2).validate(), "gamma=0.2"),
    ("gamma-multistep-without-milestones", lambda: TrainConfig(schedule="multistep", gamma=0.5).validate(),
     "not schedule 'multistep' without milestones"),
    ("width-resnet18", lambda: ModelConfig("resnet18", width=64).validate(),
     "width=64 applies to models mlp, cnn only, not model 'resnet18'"),
    ("width-resnet50", lambda: ModelConfig("resnet50", width=8).validate(), "width=8"),
    ("width-vgg16_bn", lambda: ModelConfig("vgg16_bn", width=8).validate(), "width=8"),
    ("prune_first_conv-mlp", lambda: ModelConfig("mlp", prune_first_conv=False).validate(),
     "prune_first_conv=False applies to models cnn, resnet18, resnet50, vgg16_bn only, not model 'mlp'"),
    *[(f"n-{t}", (lambda t=t: _population(t, n=2.0)), f"n=2.0 applies to technique 'ln_structured' only, not "
                                                        f"technique '{t}'")
      for t in ("l1_unstructured", "global_unstructured", "random_unstructured", "random_structured")],
]


@pytest.mark.parametrize("call,message", [c[1:] for c in INERT_OPTIONS], ids=[c[0] for c in INERT_OPTIONS])
def test_an_option_that_does_not_apply_is_refused_naming_it(call, message):
    with pytest.raises(ParameterError) as err:
        call()
    assert message in str(err.value)


# Defaults always pass (spelled out too, e.g. a YAML list for a tuple, an int for a float), and each option passes
# where it applies.
INERT_DEFAULTS = [
    *[(f"defaults-{name}", (lambda name=name: DataConfig(name).validate()))
      for name in ("digits", "digits_lt", "digits_s", "adult", "cifar10", "cifar10s", "cifar100", "celeba", "utkface",
                   "tinyimagenet")],
    ("defaults-spelled-out-digits", lambda: DataConfig("digits", skew=0.95, lt_ratio=10, lt_keep=0.1, lt_classes=[],
                                                       val_fraction=0.1, split_seed=0).validate()),
    ("defaults-spelled-out-celeba", lambda: DataConfig("celeba", val_fraction=0.1, split_seed=0, skew=0.95).validate()),
    ("skew-digits_s", lambda: DataConfig("digits_s", skew=0.99).validate()),
    ("skew-cifar10s", lambda: DataConfig("cifar10s", skew=0.8).validate()),
    ("lt_ratio-digits_lt", lambda: DataConfig("digits_lt", lt_ratio=50.0).validate()),
    ("lt_ratio-exp", lambda: DataConfig("cifar10", long_tail="exp", lt_ratio=100.0).validate()),
    ("lt_keep-lt_classes-step", lambda: DataConfig("digits", long_tail="step", lt_keep=0.2,
                                                   lt_classes=(3,)).validate()),
    ("lt_keep-lt_classes-digits_lt-step", lambda: DataConfig("digits_lt", long_tail="step", lt_keep=0.5,
                                                             lt_classes=[1, 2]).validate()),
    ("split_seed-celeba-max_train", lambda: DataConfig("celeba", split_seed=2, max_train=1000).validate()),
    ("split_seed-celeba-long-tail", lambda: DataConfig("celeba", split_seed=2, long_tail="step").validate()),
    ("val_fraction-split_seed-digits", lambda: DataConfig("digits", val_fraction=0.2, split_seed=3).validate()),
    ("max_train-equal-to-classes", lambda: DataConfig("digits", max_train=10).validate()),
    ("max_train-utkface-gender", lambda: DataConfig("utkface", max_train=2).validate()),
    *[(f"train-defaults-{o}-{s}", (lambda o=o, s=s: TrainConfig(optimizer=o, schedule=s).validate()))
      for o in ("sgd", "adam", "adamw") for s in ("constant", "multistep", "cosine")],
    ("train-defaults-spelled-out-adam", lambda: TrainConfig(optimizer="adam", momentum=0.9, nesterov=False,
                                                            gamma=0.1).validate()),
    ("train-authors", lambda: TrainConfig.authors().validate()),
    ("nesterov-sgd", lambda: TrainConfig(nesterov=True, momentum=0.5).validate()),
    ("momentum-zero-sgd", lambda: TrainConfig(momentum=0.0).validate()),
    ("gamma-multistep", lambda: TrainConfig(schedule="multistep", milestones=(3, 6), gamma=0.5).validate()),
    *[(f"model-defaults-{m}", (lambda m=m: ModelConfig(m).validate()))
      for m in ("mlp", "cnn", "resnet18", "resnet50", "vgg16_bn")],
    ("width-mlp-cnn", lambda: [ModelConfig(m, width=8).validate() for m in ("mlp", "cnn")]),
    ("prune_first_conv-conv-models", lambda: [ModelConfig(m, prune_first_conv=False).validate()
                                              for m in ("cnn", "resnet18", "resnet50", "vgg16_bn")]),
    ("n-ln_structured", lambda: _population("ln_structured", n=2.0)),
    *[(f"n-default-{t}", (lambda t=t: (_population(t), _population(t, n=1))))
      for t in ("l1_unstructured", "global_unstructured", "random_unstructured", "ln_structured", "random_structured")],
]


@pytest.mark.parametrize("call", [c[1] for c in INERT_DEFAULTS], ids=[c[0] for c in INERT_DEFAULTS])
def test_defaults_and_options_where_they_apply_are_accepted(call):
    call()


@pytest.mark.parametrize("kw, message", [
    ({"skew": 0.99}, "skew=0.99"),
    ({"lt_ratio": 50.0}, "lt_ratio=50.0"),
    ({"dataset": "digits_lt", "long_tail": "exp"}, "long_tail='exp'"),
    ({"max_train": 5}, "max_train=5"),
    ({"optimizer": "adam", "momentum": 0.5}, "momentum=0.5"),
], ids=["skew", "lt_ratio", "long_tail", "max_train", "momentum"])
def test_options_that_do_not_apply_are_refused_by_the_notebooks_entry_point_before_anything(tmp_path, no_data, kw,
                                                                                            message):
    with pytest.raises(ParameterError, match=message):
        _exp(tmp_path / "results", **kw)
    assert tree(tmp_path) == []


def test_n_of_another_technique_is_refused_before_any_run_folder(tmp_path, no_training):
    exp = make_experiment(tmp_path / "results")
    with pytest.raises(ParameterError, match="n=2.0 applies to technique 'ln_structured' only"):
        run_method(exp, "random_structured", 0, density=0.5, n=2.0)
    assert run_folders(tmp_path / "results") == []


def test_a_gpu_params_file_setting_an_option_that_does_not_apply_is_refused_by_sweep_validate(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text("notebook: 01_lth_fairness_failure.ipynb\nparameters:\n  dataset: cifar10\n  model: resnet18\n"
                 "  lt_ratio: 100.0\n  device: cuda\ngrid:\n  seeds: [[0]]\n")
    assert sweep.main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "lt_ratio=100.0 applies to the 'exp' long-tail profile only" in err and str(f) in err


def test_recipes_derived_by_methods_may_keep_options_they_no_longer_use(tmp_path):
    """The experiment's recipe is checked in full; a method's derived recipe is not refused for what it inherits:
    MP's short fine-tune is constant-rate (gamma unused) and a short retraining drops every milestone."""
    exp = make_experiment(tmp_path / "results", schedule="multistep", milestones=(1,), gamma=0.5)
    assert run_method(exp, "mp", 0, density=0.5, finetune="short", finetune_epochs=1).run.complete
    assert run_method(exp, "l1_unstructured", 0, density=0.5, retrain_epochs=1).run.complete


@pytest.mark.parametrize("var,value,message", [
    ("BALLOT_STEP_MODE", "fast", r"\$BALLOT_STEP_MODE must be one of auto, eager, compiled, graph, got 'fast'"),
    ("BALLOT_STEP_MODE", "graph", "step_mode 'graph' needs a CUDA device"),
    ("BALLOT_PROGRESS", "fancy", "BALLOT_PROGRESS='fancy' is not a progress style; valid: auto, text, none"),
])
def test_a_bad_environment_variable_is_refused_when_the_experiment_is_made(tmp_path, monkeypatch, var, value,
                                                                          message):
    """They were read only when training started, after the dense run had written θ0 and its config (review)."""
    from conftest import make_experiment

    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=message):
        make_experiment(tmp_path / "results")
    assert not (tmp_path / "results").exists()

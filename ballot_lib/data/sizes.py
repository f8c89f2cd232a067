"""Split sizes of a dataset configuration without its files: what a job will train on, for planning its cost.

Real datasets are sized from the counts of their official files (:data:`NOMINAL`) with the same carving rules as
their loaders (val = ``val_fraction`` of each class of the official train set, UTKFace's 20 % test, CIFAR-10S's
val/test in both domains) and the shared options (long tail, ``max_train``); embedded datasets are loaded (they
are small) and counted. The loaders stay the reference: ``tests/test_cost.py`` checks these sizes against them on
generated fixtures in the exact on-disk formats.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .core import DataConfig, get_dataset, long_tail_counts, long_tail_profile, trim_counts


@dataclass(frozen=True)
class Nominal:
    """Counts of a real dataset's official files.

    ``train``: per-class counts of the official train set (one total where the class counts are not fixed: then
    carving rounds once instead of per class, an approximation of a few images); ``test``/``val``: the official
    test/val counts (0: carved, see ``test_fraction`` and ``DataConfig.val_fraction``).
    """

    train: tuple[int, ...]
    test: int = 0
    val: int = 0
    side: int = 32
    test_fraction: float = 0.0
    eval_copies: int = 1
    resizable: bool = False

    @property
    def per_class(self) -> bool:
        return len(self.train) > 1


#: name -> official counts (CIFAR: 50,000/10,000; CelebA: the official 162,770/19,867/19,962 partition at the
#: authors' 128 px; UTKFace: the 23,708 aligned & cropped faces, test = 20 %; Tiny-ImageNet: 500 train images per
#: class, the 10,000 labelled val images as test, 64 px).
NOMINAL: dict[str, Nominal] = {
    "cifar10": Nominal((5_000,) * 10, test=10_000),
    "cifar100": Nominal((500,) * 100, test=10_000),
    "cifar10s": Nominal((5_000,) * 10, test=10_000, eval_copies=2),
    "celeba": Nominal((162_770,), test=19_962, val=19_867, side=128, resizable=True),
    "utkface": Nominal((23_708,), test_fraction=0.2, side=64, resizable=True),
    "tinyimagenet": Nominal((500,) * 200, test=10_000, side=64),
}


@dataclass(frozen=True)
class SplitSizes:
    """Train/val/test sample counts and the image side (None for feature vectors)."""

    train: int
    val: int
    test: int
    side: Optional[int]
    nominal: bool  # computed from official counts (True) or counted from the loaded data (False)


def carve(counts: np.ndarray, fraction: float, limit: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (rest, carved) counts of :func:`ballot_lib.data.stratified_split` with ``fraction`` (and
    ``limit``)."""
    counts = np.asarray(counts, dtype=np.int64)
    carved = np.rint(fraction * counts).astype(np.int64)  # numpy and Python's round() both round half to even
    two = counts >= 2
    carved[two] = np.minimum(np.maximum(carved[two], 1), counts[two] - 1)
    if limit is not None:
        carved = trim_counts(carved, fraction * counts, counts, limit)
    return counts - carved, carved


def split_sizes(cfg: DataConfig, nominal: Optional[Nominal] = None) -> SplitSizes:
    """The split sizes of ``cfg`` (``nominal``: counts to use instead of :data:`NOMINAL`, e.g. a fixture's).

    Raises ``ValueError`` for a long tail on a real dataset whose class counts are not fixed (CelebA, UTKFace).
    """
    nom = nominal or NOMINAL.get(cfg.name)
    if nom is None:
        return _loaded_sizes(cfg)
    counts = np.array(nom.train, dtype=np.int64)
    if nom.test_fraction:
        counts, test = carve(counts, nom.test_fraction)
        n_test = int(test.sum())
    else:
        n_test = nom.test
    if nom.val:
        train, n_val = counts, nom.val
    else:
        train, val = carve(counts, cfg.val_fraction)
        n_val = int(val.sum())
    profile = long_tail_profile(cfg)
    if profile != "none":
        if not nom.per_class:
            raise ValueError(f"long_tail: the train class counts of {cfg.name!r} are not fixed, so its long-tailed "
                             "size cannot be computed without the data")
        train = long_tail_counts(train, profile, cfg.lt_ratio, cfg.lt_keep, cfg.lt_classes)
    n_train = int(train.sum())
    if cfg.max_train is not None and n_train > cfg.max_train:
        n_train = int(carve(train, cfg.max_train / n_train, cfg.max_train)[1].sum())
    side = (cfg.image_size or nom.side) if nom.resizable else nom.side
    return SplitSizes(n_train, n_val * nom.eval_copies, n_test * nom.eval_copies, side, True)


@functools.lru_cache(maxsize=32)
def _loaded_sizes(cfg: DataConfig) -> SplitSizes:
    b = get_dataset(cfg)
    side = b.input_shape[-1] if len(b.input_shape) == 3 else None
    return SplitSizes(len(b.train), len(b.val), len(b.test), side, False)

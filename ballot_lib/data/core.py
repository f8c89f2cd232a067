"""Data containers, the dataset registry and the transformations shared by every dataset.

Every dataset is loaded into memory as tensors (a :class:`Split` per train/val/test). Images are stored as
``uint8`` ``[N, C, H, W]`` and normalised batch by batch on the training device; tabular data is stored as
``float32`` ``[N, F]``. Keeping whole splits as tensors lets the training loop keep them resident on the GPU and
augment whole batches at once (see :mod:`ballot_lib.training`).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..registry import Registry
from ..checks import (ParameterError, check_applies, check_fields, check_int, check_list, check_number,
                      check_seed)

if TYPE_CHECKING:
    import pandas


class DatasetError(RuntimeError):
    """A dataset is missing or malformed. The message says which files were expected where."""


@dataclass
class Split:
    """One split of a dataset: inputs ``x``, labels ``y`` and (optionally) sensitive groups ``g``."""

    x: torch.Tensor
    y: torch.Tensor
    g: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or (self.g is not None and len(self.g) != len(self.y)):
            raise ValueError(
                f"split tensors disagree in length: x {len(self.x)}, y {len(self.y)}, "
                f"g {None if self.g is None else len(self.g)}"
            )
        self.y = self.y.long()
        if self.g is not None:
            self.g = self.g.long()

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> "Split":
        """Return the rows ``index`` (a new Split sharing no storage with this one)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return Split(self.x[idx], self.y[idx], None if self.g is None else self.g[idx])

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.y.numpy(), minlength=num_classes)


@dataclass
class DataBundle:
    """A loaded dataset: three splits plus what the model and metrics need to know about it.

    ``mean``/``std`` (per channel) are applied on the device to ``uint8`` images after division by 255; they are
    ``None`` for tabular data, which loaders standardise themselves. ``augment`` turns on random crop (padding
    ``crop_padding``) and horizontal flip for the training split.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    group_names: Optional[list[str]] = None
    group_attribute: Optional[str] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    augment: bool = False
    crop_padding: int = 4
    flip: bool = True
    notes: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.x.dim() == 4

    @property
    def num_groups(self) -> int:
        return 0 if self.group_names is None else len(self.group_names)

    def summary(self) -> "pandas.DataFrame":
        """Per-split, per-class sample counts (and per-group counts where the dataset has groups)."""
        import pandas as pd

        rows = []
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            groups = [None] if split.g is None else list(range(self.num_groups))
            for c in range(self.num_classes):
                for gi in groups:
                    sel = split.y == c
                    if gi is not None:
                        sel &= split.g == gi
                    rows.append(
                        {
                            "split": split_name,
                            "class": self.class_names[c],
                            "group": None if gi is None or self.group_names is None else self.group_names[gi],
                            "count": int(sel.sum()),
                        }
                    )
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to load and how to split and skew it.

    Fields whose default switches a feature off (``long_tail="none"``, ``max_train=None``) keep old result hashes
    valid when new options are added. ``root`` is where the files are and is not part of a run's identity.
    """

    name: str = "digits_lt"  # dataset name, one of ballot_lib.data.DATASETS.names()
    root: Optional[str] = None  # data root for real datasets (default: $BALLOT_DATA_ROOT or ~/ballot_data)
    split_seed: int = 0  # seed of the train/val(/test) carving, fixed across runs so splits are shared
    val_fraction: float = 0.1  # fraction of train carved out as val where the dataset has no official val split
    long_tail: str = "none"  # train-split imbalance: "none", "exp" (ratio lt_ratio) or "step" (keep lt_keep of lt_classes)
    lt_ratio: float = 10.0  # exp profile: n_max / n_min over classes (CIFAR-10-LT convention), >= 1
    lt_keep: float = 0.1  # step profile: fraction of train images kept in each class of lt_classes
    lt_classes: tuple[int, ...] = ()  # step profile: minority classes (default: the upper half of class indices)
    skew: float = 0.95  # *_s datasets: share of a class's train images in its majority domain
    # *_s datasets: classes whose majority domain is domain 0 (colour / original); the other classes have domain 1
    # as their majority. () = the first half of the class indices (0-4), as in CIFAR-10S. Out of identity() at
    # that default, so older run hashes stay valid.
    skew_classes: tuple[int, ...] = ()
    target: Optional[str] = None  # target attribute (celeba, utkface); None = dataset default
    sensitive: Optional[str] = None  # sensitive attribute g (adult: sex/race, celeba: Male, utkface: gender/race)
    image_size: Optional[int] = None  # resize images to this size, 8..256 (celeba, utkface); None = dataset default
    max_train: Optional[int] = None  # keep at most this many train samples (stratified), for quick runs
    verify: bool = True  # check torchvision md5 sums of real files (test fixtures turn this off)

    def identity(self) -> dict:
        """The fields that define what data a run saw (``root`` and ``verify`` excluded)."""
        d = asdict(self)
        d.pop("root")
        d.pop("verify")
        d["lt_classes"] = list(self.lt_classes)
        # skew_classes joined later: left out at its default (empty, or the default first half spelled out), so
        # the identity (and the hash) of every configuration that existed before is unchanged.
        skew_classes = sorted(set(self.skew_classes))
        if skew_classes == [] or skew_classes == default_skew_classes(self.name):
            d.pop("skew_classes")
        else:
            d["skew_classes"] = skew_classes
        if self.max_train is not None:
            # max_train became an exact cap (2026-12-02): where stratified rounding used to overshoot it (7 -> 10 on
            # digits), the subsample changed. Every max_train configuration names the correction, so a run stored
            # before is never served as the new data's result (configurations without max_train keep their ids).
            d["fixes"] = ["max_train_exact"]
        return d

    def validate(self) -> "DataConfig":
        """Check types (no coercion), ranges and that ``target``/``sensitive``/``image_size`` apply to the dataset."""
        check_fields(self, paths=("root",))
        DATASETS.get(self.name)
        if self.root is not None and (str(self.root) == "" or Path(self.root).is_file()):
            raise ParameterError(f"root must be the folder holding the datasets (or None for $BALLOT_DATA_ROOT), "
                                 f"got {str(self.root)!r}" + (", a file" if str(self.root) else ""))
        if self.long_tail not in ("none", "exp", "step"):
            raise ValueError(f"long_tail must be one of 'none', 'exp', 'step', got {self.long_tail!r}")
        check_seed(self.split_seed, "split_seed")
        check_number("lt_ratio", self.lt_ratio, 1, hint=" (n_max / n_min)")
        check_number("lt_keep", self.lt_keep, 0, 1, low_open=True)
        check_number("val_fraction", self.val_fraction, 0, 1, low_open=True, high_open=True)
        check_number("skew", self.skew, 0.5, 1)
        for i, c in enumerate(self.lt_classes):
            check_int(f"lt_classes[{i}]", c, 0)
        if len(self.skew_classes):
            self._check_skew_classes()
        check_list("lt_classes", list(self.lt_classes), nonempty=False, unique=True)  # (3, 3) trains as (3,)
        if self.max_train is not None:
            check_int("max_train", self.max_train, 1, hint=" (or None for all)")
        if self.image_size is not None:
            check_int("image_size", self.image_size, IMAGE_SIZE_MIN, IMAGE_SIZE_MAX,
                      hint=" (pixels; empty/0/None: the dataset default)")
        # Options a dataset does not take would be silently ignored, yet hashed into the run: reject them.
        options = DATASET_OPTIONS.get(self.name, {})
        for key in ("target", "sensitive", "image_size"):
            value = getattr(self, key)
            if value is None:
                continue
            if key not in options:
                takes = sorted(n for n, o in DATASET_OPTIONS.items() if key in o)
                raise ParameterError(f"{key}={value!r} does not apply to dataset {self.name!r} (only to "
                                     f"{', '.join(takes)}); leave it empty")
            valid = options[key]
            if valid is not None and value not in valid:
                raise ParameterError(f"unknown {key} {value!r} for dataset {self.name!r}; valid choices: "
                                     f"{', '.join(valid)}")
        if self.name in ATTRIBUTE_DEFAULTS:
            target, sensitive = resolved_attributes(self)
            if sensitive == target:
                others = [a for a in DATASET_OPTIONS[self.name]["sensitive"] or () if a != target]
                raise ParameterError(
                    f"sensitive attribute {sensitive!r} equals the target {target!r} of dataset {self.name!r}"
                    f"{' (the default target)' if self.target is None else ''}: choose another target or a "
                    f"sensitive attribute among {', '.join(others)}"
                )
        self._check_options_apply()
        return self

    def _check_options_apply(self) -> None:
        """Refuse options that the dataset, or its long-tail profile, would ignore while they still change the run id
        (the same data trained again under another id); their defaults always pass."""
        name, default = self.name, DataConfig()
        skewed = ", ".join(SKEW_DATASETS)
        check_applies("skew", self.skew, default.skew, name in SKEW_DATASETS, f"the skewed datasets ({skewed})",
                      f"dataset {name!r}")
        own = DEFAULT_LONG_TAIL.get(name)
        if own is not None and self.long_tail == own:
            raise ParameterError(f"long_tail={self.long_tail!r} is the profile dataset {name!r} has by construction "
                                 f"(with long_tail='none'): leave it at its default 'none' (the same data, which "
                                 f"would otherwise be trained again under another run id)")
        profile = long_tail_profile(self)
        here = (f"dataset {name!r}, whose train split has the {own!r} long-tail profile by construction"
                if self.long_tail == "none" and own is not None
                else f"dataset {name!r} with long_tail={self.long_tail!r}")
        for key, applies in (("lt_ratio", "exp"), ("lt_keep", "step"), ("lt_classes", "step")):
            check_applies(key, getattr(self, key), getattr(default, key), profile == applies,
                          f"the {applies!r} long-tail profile", here,
                          f"set long_tail={'none' if own == applies else applies!r}")
        if name in OFFICIAL_SPLITS:
            check_applies("val_fraction", self.val_fraction, default.val_fraction, False,
                          "datasets whose val split is carved from train",
                          f"dataset {name!r} (its val split is the official one)")
            check_applies("split_seed", self.split_seed, default.split_seed,
                          profile != "none" or self.max_train is not None, "a long tail or max_train",
                          f"dataset {name!r} without them (its splits are the official partition: nothing is drawn)",
                          "set long_tail or max_train")
        classes = num_classes(self)
        if self.max_train is not None and classes is not None and self.max_train < classes:
            raise ParameterError(f"max_train={self.max_train} is below the {classes} classes of dataset {name!r}: the "
                                 f"stratified subsample keeps at least one train sample of each class; use max_train "
                                 f">= {classes} (or None for all)")
        bad = [c for c in self.lt_classes if classes is not None and c >= classes]
        if bad and classes is not None:  # (found when the data was loaded before: after the dense run's set-up started)
            raise ParameterError(f"lt_classes {bad} out of range for dataset {name!r}: its classes are 0..{classes - 1}")

    def _check_skew_classes(self) -> None:
        """``skew_classes``: only for the skewed datasets, class indices in range, each at most once."""
        given = list(self.skew_classes)
        if self.name not in SKEW_DATASETS:
            raise ParameterError(f"skew_classes={given!r} does not apply to dataset {self.name!r} (only to "
                                 f"{', '.join(SKEW_DATASETS)}); leave it empty")
        n = SKEW_DATASETS[self.name]
        for i, c in enumerate(given):
            check_int(f"skew_classes[{i}]", c, 0, n - 1,
                      hint=f" (a class index of {self.name}, which has {n} classes)")
        check_list("skew_classes", given, unique=True)


#: The skewed-domain datasets (CIFAR-10S construction) and their number of classes: the datasets that take
#: ``DataConfig.skew_classes``.
SKEW_DATASETS: dict[str, int] = {"digits_s": 10, "cifar10s": 10}


#: Datasets that are long-tailed by construction: name -> the train-split profile they have when
#: ``DataConfig.long_tail`` is "none". :func:`long_tail_profile` is the one place that reads it.
DEFAULT_LONG_TAIL: dict[str, str] = {"digits_lt": "exp"}


def long_tail_profile(cfg: DataConfig) -> str:
    """The long-tail profile the train split of ``cfg`` gets: ``cfg.long_tail``, or where that is "none" the
    dataset's own (:data:`DEFAULT_LONG_TAIL`, e.g. ``digits_lt`` is "exp"), else "none". It decides which of
    ``lt_ratio`` ("exp") and ``lt_keep``/``lt_classes`` ("step") apply."""
    return cfg.long_tail if cfg.long_tail != "none" else DEFAULT_LONG_TAIL.get(cfg.name, "none")


#: Datasets whose train/val/test splits are an official partition: ``val_fraction`` does not apply, and
#: ``split_seed`` draws only a long tail or the ``max_train`` subsample.
OFFICIAL_SPLITS: tuple[str, ...] = ("celeba",)

#: Classes of each built-in dataset (UTKFace's depend on its target: :data:`UTKFACE_CLASSES`). A dataset not listed
#: (one registered outside the library) is checked when it is loaded instead (:func:`cap_train`).
NUM_CLASSES: dict[str, int] = {"digits": 10, "digits_lt": 10, "digits_s": 10, "adult": 2, "cifar10": 10,
                               "cifar10s": 10, "cifar100": 100, "celeba": 2, "tinyimagenet": 200}
UTKFACE_CLASSES: dict[str, int] = {"gender": 2, "race": 5, "age_bin": 4}


def num_classes(cfg: DataConfig) -> Optional[int]:
    """The number of classes of the dataset of ``cfg`` (its target's, for UTKFace), or None where not known."""
    if cfg.name == "utkface":
        return UTKFACE_CLASSES.get(resolved_attributes(cfg)[0])
    return NUM_CLASSES.get(cfg.name)


def default_skew_classes(name: str) -> list[int]:
    """The classes whose majority domain is domain 0 when ``skew_classes`` is empty: the first half of the class
    indices of dataset ``name`` (``[]`` for a dataset without skewed domains)."""
    return list(range(SKEW_DATASETS.get(name, 0) // 2))


#: name -> loader(cfg: DataConfig) -> DataBundle
DATASETS: Registry[Callable[[DataConfig], DataBundle]] = Registry("dataset")

#: The 40 binary attributes of CelebA, in the column order of the official ``list_attr_celeba.txt`` header (the
#: loader still checks the names against the file it reads).
CELEBA_ATTRIBUTES: tuple[str, ...] = tuple(
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young".split()
)
UTKFACE_ATTRIBUTES: tuple[str, ...] = ("gender", "race", "age_bin")

#: Bounds of ``DataConfig.image_size`` (pixels). The faces are natively 178 px (CelebA's centre crop) and 200 px
#: (UTKFace); a larger side only upsamples, and CelebA held in memory at 256 px already takes ~39 GB.
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 8, 256

#: Which datasets take ``target``, ``sensitive`` and ``image_size``, and (where fixed) their valid values; ``None``
#: means any value in range. Any other dataset rejects them. ``"none"`` as ``sensitive`` turns groups off.
DATASET_OPTIONS: dict[str, dict[str, Optional[tuple]]] = {
    "adult": {"sensitive": ("sex", "race")},
    "celeba": {"target": CELEBA_ATTRIBUTES, "sensitive": CELEBA_ATTRIBUTES + ("none",), "image_size": None},
    "utkface": {"target": UTKFACE_ATTRIBUTES, "sensitive": UTKFACE_ATTRIBUTES + ("none",), "image_size": None},
}

#: name -> (default target, default sensitive attribute, sensitive attribute when the target is that default;
#: None = no groups). CelebA: target Male without groups, any other target with g = Male (FST's setting);
#: UTKFace: target gender with g = race, target race with g = gender.
ATTRIBUTE_DEFAULTS: dict[str, tuple[str, Optional[str], Optional[str]]] = {
    "celeba": ("Male", "Male", None),
    "utkface": ("gender", "race", "gender"),
}


def resolved_attributes(cfg: DataConfig) -> tuple[str, Optional[str]]:
    """(target, sensitive attribute or None for no groups) that ``cfg`` selects, its defaults filled in."""
    default_target, default_sensitive, alternative = ATTRIBUTE_DEFAULTS[cfg.name]
    target = cfg.target or default_target
    sensitive = cfg.sensitive or (alternative if target == default_sensitive else default_sensitive)
    return target, None if sensitive == "none" else sensitive


def stratified_split(
    y: np.ndarray, fraction: float, seed: int, limit: Optional[int] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, carved) with ``fraction`` of every class carved out, reproducibly.

    Every class with at least two samples keeps at least one sample on each side. ``limit``: carve at most this
    many in all (:func:`trim_counts`; the split is the same as without it wherever it carves no more).
    """
    rng = np.random.default_rng(seed)
    perms, counts = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        perms.append(idx)
        counts.append(n)
    if limit is not None:
        sizes = np.array([len(p) for p in perms], dtype=np.int64)
        counts = trim_counts(np.array(counts, dtype=np.int64), fraction * sizes, sizes, limit).tolist()
    rest = [idx[n:] for idx, n in zip(perms, counts)]
    carved = [idx[:n] for idx, n in zip(perms, counts)]
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(carved))


def trim_counts(counts: np.ndarray, exact: np.ndarray, sizes: np.ndarray, limit: int) -> np.ndarray:
    """Per-class carved ``counts`` reduced to at most ``limit`` in all: rounding each class (and keeping one
    sample of each class of two or more) can carve a few more than ``fraction`` of the whole. One sample at a time
    goes back from the class whose count exceeds its exact share ``exact`` the most (the lowest class index on a
    tie), never below one for a class of ``sizes`` >= 2. Counts already within ``limit`` are returned unchanged.
    """
    counts = np.array(counts, dtype=np.int64)
    floor = (np.asarray(sizes) >= 2).astype(np.int64)
    excess = int(counts.sum()) - int(limit)
    if excess > int((counts - floor).sum()):
        raise ValueError(f"cannot carve at most {limit} samples keeping one of each of the {int(floor.sum())} "
                         f"classes of two or more samples")
    exact = np.asarray(exact, dtype=np.float64)
    while excess > 0:
        over = np.where(counts > floor, counts - exact, -np.inf)
        counts[int(np.argmax(over))] -= 1  # argmax: the first (lowest) class index on a tie
        excess -= 1
    return counts


def long_tail_counts(
    counts: np.ndarray, profile: str, ratio: float = 10.0, keep: float = 0.1, classes: Sequence[int] = ()
) -> np.ndarray:
    """Per-class sample counts after applying a long-tail profile to ``counts``.

    ``exp``: class c keeps ``n_max * ratio**(-c / (C - 1))`` samples (capped at what it has), so class 0 is the
    head and class C-1 has ``n_max / ratio``. ``step``: classes in ``classes`` (default: upper half of indices)
    keep ``round(keep * n_c)``; others keep all. Every class keeps at least one sample.
    """
    counts = np.asarray(counts, dtype=np.int64)
    C = len(counts)
    if profile == "none":
        return counts.copy()
    if profile == "exp":
        n_max = counts.max()
        target = np.array([n_max * ratio ** (-c / max(C - 1, 1)) for c in range(C)])
        out = np.minimum(counts, np.floor(target + 1e-9).astype(np.int64))
    elif profile == "step":
        minority = list(classes) if len(classes) else list(range(C // 2, C))
        bad = [c for c in minority if not 0 <= c < C]
        if bad:
            raise ValueError(f"lt_classes {bad} out of range for {C} classes")
        out = counts.copy()
        for c in minority:
            out[c] = int(round(keep * counts[c]))
    else:
        raise ValueError(f"unknown long-tail profile {profile!r}; valid: 'none', 'exp', 'step'")
    return np.maximum(np.minimum(out, counts), np.minimum(counts, 1))


def apply_long_tail(split: Split, num_classes: int, cfg: DataConfig, profile: Optional[str] = None) -> Split:
    """Subsample a *train* split per class following ``profile`` (default ``cfg.long_tail``).

    Only the train split is ever subsampled: val and test keep their class balance.
    """
    profile = cfg.long_tail if profile is None else profile
    if profile == "none":
        return split
    y = split.y.numpy()
    counts = np.bincount(y, minlength=num_classes)
    keep = long_tail_counts(counts, profile, cfg.lt_ratio, cfg.lt_keep, cfg.lt_classes)
    rng = np.random.default_rng(cfg.split_seed + 1)
    idx = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        idx.append(np.sort(rng.choice(members, size=keep[c], replace=False)) if keep[c] < len(members) else members)
    return split.subset(np.sort(np.concatenate(idx)))


def cap_train(split: Split, max_train: Optional[int], seed: int) -> Split:
    """Keep at most ``max_train`` samples, stratified by class, reproducibly.

    Each class keeps ``round(max_train / len(split) * n_c)`` samples (at least one); where that rounding adds up
    to more than ``max_train``, the excess is given back (:func:`trim_counts`), so the cap is never exceeded.
    """
    if max_train is None:
        return split
    if len(split) <= max_train:
        # The same data as without the cap, but max_train is part of the run id: runs would train twice.
        warnings.warn(f"max_train={max_train} keeps every sample of the {len(split)}-sample train split (no effect), "
                      f"yet it is part of each run's id: leave it unset (None) so that these runs are shared with "
                      f"the uncapped ones")
        return split
    y = split.y.numpy()
    present = len(np.unique(y))
    if max_train < present:
        raise ParameterError(f"max_train={max_train} is below the {present} classes of the train split: the "
                             f"stratified subsample keeps at least one train sample of each class; use max_train "
                             f">= {present} (or None for all)")
    _, idx = stratified_split(y, max_train / len(split), seed + 2, limit=max_train)
    return split.subset(idx)


def check_bundle(bundle: Any, cfg: DataConfig) -> None:
    """What a loader returned, checked before anything trains on it (a registered loader's mistakes surfaced as an
    ``IndexError`` in the middle of a dense run, or not at all): a :class:`DataBundle` whose three splits are
    :class:`Split` objects, ``num_classes`` an integer >= 2 (a warning when :data:`NUM_CLASSES` lists another
    for the name), one class name per class, every label in ``[0, num_classes)`` and every group in
    ``[0, len(group_names))``."""
    where = f"dataset {cfg.name!r}: its loader"
    if not isinstance(bundle, DataBundle):
        raise DatasetError(f"{where} must return a ballot_lib.data.DataBundle, got {type(bundle).__name__}")
    for name in ("train", "val", "test"):
        if not isinstance(getattr(bundle, name), Split):
            raise DatasetError(f"{where}'s {name} split must be a ballot_lib.data.Split(x, y, g), got "
                               f"{type(getattr(bundle, name)).__name__}")
    k = bundle.num_classes
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 2:
        raise DatasetError(f"{where} gives num_classes={k!r}: an integer >= 2")
    k = int(k)
    listed = num_classes(cfg)
    if listed is not None and listed != k:  # a warning: a real dataset's folder may hold fewer classes (fixtures)
        warnings.warn(f"{where} gives num_classes={k}, but ballot_lib.data.core.NUM_CLASSES[{cfg.name!r}] = {listed} "
                      f"(used by the checks of max_train and lt_classes before loading): check the files, or make "
                      f"the two agree")
    if not isinstance(bundle.class_names, (list, tuple)) or len(bundle.class_names) != k:
        got = (f"{len(bundle.class_names)} class names" if isinstance(bundle.class_names, (list, tuple)) else
               f"class_names={type(bundle.class_names).__name__}")
        raise DatasetError(f"{where} gives {got} for num_classes={k}: one name per class")
    groups = None if bundle.group_names is None else len(bundle.group_names)
    for name in ("train", "val", "test"):
        split = getattr(bundle, name)
        for what, t, n in (("labels", split.y, k), ("groups", split.g, groups)):
            if t is None or not len(t):
                continue
            if n is None:
                raise DatasetError(f"{where}'s {name} split has groups but the bundle has no group_names")
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= n:
                raise DatasetError(f"{where}'s {name} split has {what} in [{lo}, {hi}], outside [0, {n - 1}] "
                                   f"({'num_classes' if what == 'labels' else 'len(group_names)'} = {n})")


def finalize(bundle: DataBundle, cfg: DataConfig) -> DataBundle:
    """Apply the options shared by every dataset (long tail, train cap) and record them in ``notes``."""
    check_bundle(bundle, cfg)
    # A dataset such as ``digits_lt`` has a profile of its own that applies when the config names none.
    profile = long_tail_profile(cfg)
    train = apply_long_tail(bundle.train, bundle.num_classes, cfg, profile)
    bundle.notes["long_tail"] = profile
    train = cap_train(train, cfg.max_train, cfg.split_seed)
    bundle = replace(bundle, train=train)
    check_splits(bundle, cfg)
    bundle.notes.setdefault("train_class_counts", bundle.train.class_counts(bundle.num_classes).tolist())
    return bundle


def check_splits(bundle: DataBundle, cfg: Optional[DataConfig] = None) -> None:
    """Raise :class:`DatasetError` if a split of ``bundle`` is empty (training and evaluation need every one)."""
    sizes = {name: len(getattr(bundle, name)) for name in ("train", "val", "test")}
    empty = [name for name, n in sizes.items() if n == 0]
    if not empty:
        return
    source = bundle.notes.get("source")
    capped = cfg is not None and cfg.max_train is not None and "train" in empty
    raise DatasetError(
        f"{bundle.name}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
        f"(train/val/test = {sizes['train']}/{sizes['val']}/{sizes['test']} samples)"
        + (f" with max_train={cfg.max_train}" if capped and cfg is not None else "")
        + f"; the dataset{f' in {source}' if source else ''} has too few samples to split: check that its files "
        f"are complete" + (" or raise max_train" if capped else "")
    )


def get_dataset(name_or_cfg: str | DataConfig, **overrides) -> DataBundle:
    """Load a dataset by name (or :class:`DataConfig`), applying the long-tail and train-cap options.

    Example:
        >>> bundle = get_dataset("digits_lt")
        >>> bundle.num_classes
        10
    """
    cfg = name_or_cfg if isinstance(name_or_cfg, DataConfig) else DataConfig(name=name_or_cfg)
    if overrides:
        cfg = replace(cfg, **overrides)
    cfg.validate()
    loader = DATASETS.get(cfg.name)
    return finalize(loader(cfg), cfg)

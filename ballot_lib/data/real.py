"""Loaders for the real image datasets on disk: ``cifar10``, ``cifar100``, ``cifar10s``, ``celeba``, ``utkface``,
``tinyimagenet``.

Every dataset lives under one data root, :func:`ballot_lib.paths.data_root` (``DataConfig.root``, else
``$BALLOT_DATA_ROOT``, else ``~/ballot_data``). Nothing is ever downloaded: a missing or malformed dataset raises
:class:`~ballot_lib.data.core.DatasetError` naming the files expected, the folder they were expected in and where
to obtain them, before any image is decoded. Images are returned as ``uint8`` tensors ``[N, 3, H, W]`` (RGB),
labels as ``int64``; ``mean``/``std`` are per-channel statistics applied on the training device.

Expected layout (``<root>`` = the data root)::

    <root>/cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/      train, test, meta
    <root>/celeba/                img_align_celeba/000001.jpg .., list_attr_celeba.txt, list_eval_partition.txt,
                                  identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt
    <root>/UTKFace/               [age]_[gender]_[race]_[datetime].jpg.chip.jpg (or .jpg)
    <root>/tiny-imagenet-200/     wnids.txt, words.txt, train/<wnid>/images/<wnid>_<i>.JPEG,
                                  val/images/val_<i>.JPEG, val/val_annotations.txt

Datasets:

* ``cifar10`` / ``cifar100``: torchvision's ``CIFAR10``/``CIFAR100`` (fine labels). Test = the official test
  batch; val = ``val_fraction`` of the official train set, stratified with ``split_seed``. Augmentation on
  (crop padding 4, flip).
* ``cifar10s``: CIFAR-10S (Wang et al., CVPR 2020) built from ``cifar10``'s splits. In train, classes 0-4 keep
  exactly ``round(skew * n_c)`` images in colour and render the rest in grayscale (ITU-R 601-2 luma, the same
  integer formula as PIL's ``convert("L")``, replicated on three channels); classes 5-9 the reverse. The choice is
  seeded by ``split_seed`` (:func:`ballot_lib.data.embedded.skewed_domains`). Val and test hold every image in
  both versions. g = domain: 0 ``color``, 1 ``gray``.
* ``celeba``: torchvision's ``CelebA`` with the official partition (``list_eval_partition.txt``: 0 train,
  1 valid, 2 test). Target = binary attribute ``cfg.target`` (default ``Male``, as in the Ballot authors' code);
  g = attribute ``cfg.sensitive``: default none when the target is ``Male``, else ``Male`` (FST's setting:
  ``Smiling``/``Blond_Hair`` with g = ``Male``); ``sensitive="none"`` turns groups off. Preprocessing as the
  authors: CenterCrop 178 then Resize ``cfg.image_size or 128`` (bilinear). Decoding ~200k JPEGs is slow, so the
  decoded images are cached per (split, image size) in ``<root>/celeba/_ballot_cache/<split>_<size>px.pt``
  (written atomically; a corrupt or stale cache is rebuilt). The cache holds images only, not labels, because
  images do not depend on the target: labels come from the attribute file at every load, so one cache serves
  every target/sensitive choice.
* ``utkface``: UTKFace aligned and cropped faces (200x200), labels parsed from file names. Target
  ``cfg.target or "gender"`` and g ``cfg.sensitive or "race"`` (``"gender"`` when the target is race), each one
  of ``gender`` (0 male, 1 female), ``race`` (0 White, 1 Black, 2 Asian, 3 Indian, 4 Others), ``age_bin``
  (0-19, 20-39, 40-59, 60+); ``sensitive="none"`` turns groups off. Files with malformed names are skipped, warned about and counted in
  ``notes["skipped_files"]``. No official split: test = 20 %, then val = ``val_fraction`` of the rest, both
  stratified by (target, group) with ``split_seed``. Resized to ``cfg.image_size or 64``.
* ``tinyimagenet``: Tiny-ImageNet-200, 64x64, 200 classes indexed in sorted wnid order (the order of
  ``torchvision.datasets.ImageFolder`` on ``train/``); class names = first synonym in ``words.txt``. The labelled
  ``val/`` split serves as test (``test/`` has no labels); val is carved from train. Augmentation on (crop
  padding 8, flip).

Checksums and test fixtures: torchvision's CIFAR and CelebA classes check the md5 sums of the real files and
refuse anything else. With ``DataConfig(verify=False)`` the loaders use small subclasses whose
``_check_integrity`` returns True (and, for CIFAR, whose meta file is read without its md5 check), so the
format-faithful fixtures that the tests write (``tests/fixtures_real.py``) load through the same code path as
the real files. Keep ``verify=True`` (the default) for real data.

Security: CIFAR batches are pickles, and unpickling runs code; load them only from your own data root.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import datasets as tvd
from torchvision.transforms import functional as TF

from ..paths import data_root
from ..progress import bar
from .core import DATASETS, DataBundle, DataConfig, DatasetError, Split, resolved_attributes, stratified_split
from .embedded import _both_domains, skewed_domains

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
TINYIMAGENET_MEAN, TINYIMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
# Face crops have no agreed statistics; ImageNet's are the usual choice.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CIFAR10_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it in the data root)"
CIFAR100_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract it in the data root)"
CELEBA_SOURCE = (
    "the CelebA site https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html: 'Align&Cropped Images' "
    "(img_align_celeba.zip, unzipped) plus the Anno/*.txt files and Eval/list_eval_partition.txt, all in <root>/celeba"
)
UTKFACE_SOURCE = (
    "https://susanqq.github.io/UTKFace/ ('Aligned&Cropped Faces', UTKFace.tar.gz, extracted in the data root)"
)
TINYIMAGENET_SOURCE = "http://cs231n.stanford.edu/tiny-imagenet-200.zip (unzip it in the data root)"

CELEBA_FILES = (
    "list_attr_celeba.txt",
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
CELEBA_CROP = 178  # the aligned images are 178x218; the authors crop the central 178x178 square
CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}  # our split name -> code in list_eval_partition.txt
CACHE_FORMAT = 1

UTK_TEST_FRACTION = 0.2
UTK_ATTRIBUTES = {
    "gender": ["male", "female"],
    "race": ["White", "Black", "Asian", "Indian", "Others"],
    "age_bin": ["0-19", "20-39", "40-59", "60+"],
}
UTK_AGE_EDGES = (20, 40, 60)  # age_bin = number of edges <= age


# --------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------


def require_files(folder: Path, files: Sequence[str], dataset: str, source: str, folders: Sequence[str] = ()) -> None:
    """Raise :class:`DatasetError` unless every path in ``files`` (relative to ``folder``) exists, as a folder
    for the entries also listed in ``folders`` and as a file for the others.

    The message lists the missing files, every expected file, the folder and where to obtain the dataset.
    """
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise DatasetError(
            f"{dataset}: missing {', '.join(missing)} in folder {folder} (expected: {', '.join(files)}). "
            f"Obtain the dataset from {source}, or point DataConfig.root / $BALLOT_DATA_ROOT at the folder "
            f"that contains {folder.name}/."
        )
    for f in files:
        want_folder = f in folders
        if (folder / f).is_dir() != want_folder:
            raise DatasetError(
                f"{dataset}: {folder / f} is a {'file' if want_folder else 'folder'}, expected a "
                f"{'folder' if want_folder else 'file'}. Obtain the dataset from {source}."
            )


def _read_text(path: Path, dataset: str, expected: str) -> str:
    """The text of ``path`` (UTF-8); any failure to read it raises :class:`DatasetError` naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError as e:
        raise DatasetError(f"{dataset}: {path} is a folder, expected a file ({expected})") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{dataset}: {path} is not UTF-8 text (byte {e.start}: {e.reason}); expected "
                           f"{expected}") from e
    except OSError as e:
        raise DatasetError(f"{dataset}: cannot read {path} ({e.strerror or e}); expected {expected}") from e


def _square_resize(size: int) -> Callable[[Image.Image], Image.Image]:
    """A PIL transform resizing to ``size`` x ``size`` (bilinear, antialiased), a no-op at that size."""

    def resize(im: Image.Image) -> Image.Image:
        return im if im.size == (size, size) else TF.resize(im, [size, size])

    return resize


def _read_rgb(path: Path, prepare: Callable[[Image.Image], Image.Image], size: int) -> np.ndarray:
    """Decode one image with PIL as RGB, apply ``prepare`` and return it as ``uint8`` ``[size, size, 3]``."""
    try:
        with Image.open(path) as im:
            arr = np.array(prepare(im.convert("RGB")))
    except (OSError, ValueError) as e:  # missing, truncated or not an image (UnidentifiedImageError is OSError)
        raise DatasetError(f"could not read image {path}: {e}") from e
    if arr.shape != (size, size, 3):
        raise DatasetError(f"image {path} has shape {arr.shape} after preprocessing, expected {(size, size, 3)}")
    return arr


def _decode_images(
    paths: Sequence[Path], size: int, prepare: Callable[[Image.Image], Image.Image], desc: str
) -> torch.Tensor:
    """Decode ``paths`` into a ``uint8`` tensor ``[N, 3, size, size]`` with a thread pool and a progress bar."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        arrays = pool.map(lambda p: _read_rgb(p, prepare, size), paths)
        for i, arr in enumerate(bar(arrays, total=len(paths), desc=desc, unit="img")):
            out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def _check_labels(y: np.ndarray, num_classes: int, where: Path) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(f"labels in {where} outside [0, {num_classes}): found {y.min()}..{y.max()}")


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10, CIFAR-100, CIFAR-10S
# --------------------------------------------------------------------------------------------------------------


def _read_meta_unchecked(self: tvd.CIFAR10) -> None:
    """``CIFAR10._load_meta`` without the md5 check (the rest is torchvision's behaviour)."""
    with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
        self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
    self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class UncheckedCIFAR10(tvd.CIFAR10):
    """``torchvision.datasets.CIFAR10`` that skips the md5 checks (``DataConfig(verify=False)``)."""

    def _check_integrity(self) -> bool:
        return True

    _load_meta = _read_meta_unchecked


class UncheckedCIFAR100(tvd.CIFAR100):
    """``torchvision.datasets.CIFAR100`` that skips the md5 checks (``DataConfig(verify=False)``)."""

    def _check_integrity(self) -> bool:
        return True

    _load_meta = _read_meta_unchecked


def _cifar_split(cls: type, root: Path, train: bool, num_classes: int, source: str) -> tuple[Split, list[str]]:
    """Load one official CIFAR split with torchvision as a :class:`Split` plus the class names."""
    folder = root / cls.base_folder
    files = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    require_files(folder, files, cls.__name__.replace("Unchecked", ""), source)
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError as e:  # torchvision's md5 check failed
        raise DatasetError(
            f"{folder}: {e} (md5 mismatch: these are not the official files; use verify=False only for "
            f"test fixtures). Obtain the dataset from {source}."
        ) from e
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError, OSError) as e:
        raise DatasetError(f"malformed CIFAR files in {folder}: {type(e).__name__}: {e}") from e
    y = np.asarray(ds.targets, dtype=np.int64)
    _check_labels(y, num_classes, folder)
    if len(ds.classes) != num_classes or len(y) != len(ds.data):
        raise DatasetError(f"malformed CIFAR files in {folder}: {len(ds.classes)} class names, "
                           f"{len(ds.data)} images, {len(y)} labels (expected {num_classes} class names)")
    x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # HWC -> CHW
    return Split(x, torch.from_numpy(y)), list(ds.classes)


def cifar_splits(cfg: DataConfig, hundred: bool = False) -> tuple[Split, Split, Split, list[str]]:
    """CIFAR-10 (or CIFAR-100) as (train, val, test, class names): val carved from the official train set."""
    cls = (UncheckedCIFAR100 if hundred else UncheckedCIFAR10) if not cfg.verify else (
        tvd.CIFAR100 if hundred else tvd.CIFAR10
    )
    num_classes, source = (100, CIFAR100_SOURCE) if hundred else (10, CIFAR10_SOURCE)
    root = data_root(cfg.root)
    full, names = _cifar_split(cls, root, True, num_classes, source)
    test, _ = _cifar_split(cls, root, False, num_classes, source)
    tr, va = stratified_split(full.y.numpy(), cfg.val_fraction, cfg.split_seed)
    return full.subset(tr), full.subset(va), test, names


def _cifar_bundle(name: str, cfg: DataConfig, hundred: bool) -> DataBundle:
    train, val, test, names = cifar_splits(cfg, hundred)
    mean, std = (CIFAR100_MEAN, CIFAR100_STD) if hundred else (CIFAR10_MEAN, CIFAR10_STD)
    return DataBundle(
        name=name, train=train, val=val, test=test, num_classes=len(names), class_names=names,
        mean=mean, std=std, augment=True, crop_padding=4, notes={"source": str(data_root(cfg.root))},
    )


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> DataBundle:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` (torchvision format)."""
    return _cifar_bundle("cifar10", cfg, hundred=False)


@DATASETS.register("cifar100")
def load_cifar100(cfg: DataConfig) -> DataBundle:
    """CIFAR-100 (fine labels) from ``<root>/cifar-100-python/`` (torchvision format)."""
    return _cifar_bundle("cifar100", cfg, hundred=True)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Grayscale version of ``uint8`` RGB images ``[N, 3, H, W]``, the gray channel replicated three times.

    Uses ITU-R 601-2 luma with PIL's integer rounding, so the result equals ``Image.convert("L")`` exactly.
    """
    r, g, b = x.to(torch.int32).unbind(dim=1)
    luma = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    return luma.to(torch.uint8).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


@DATASETS.register("cifar10s")
def load_cifar10s(cfg: DataConfig) -> DataBundle:
    """CIFAR-10S: skewed colour/grayscale train split, every val/test image in both domains (g = domain)."""
    train, val, test, names = cifar_splits(cfg)
    g = torch.from_numpy(skewed_domains(train.y.numpy(), 10, cfg.skew, cfg.split_seed + 7))
    x = torch.where(g.view(-1, 1, 1, 1).bool(), to_grayscale(train.x), train.x)
    return DataBundle(
        name="cifar10s", train=Split(x, train.y, g), val=_both_domains(val, to_grayscale),
        test=_both_domains(test, to_grayscale), num_classes=10, class_names=names,
        group_names=["color", "gray"], group_attribute="domain", mean=CIFAR10_MEAN, std=CIFAR10_STD,
        augment=True, crop_padding=4, notes={"skew": cfg.skew, "source": str(data_root(cfg.root))},
    )


# --------------------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------------------


class UncheckedCelebA(tvd.CelebA):
    """``torchvision.datasets.CelebA`` that skips the md5 checks (``DataConfig(verify=False)``)."""

    def _check_integrity(self) -> bool:
        return True


def _celeba_attributes(root: Path, verify: bool) -> tuple[list[str], torch.Tensor, list[str]]:
    """Parse the CelebA text files with torchvision: (file names, 0/1 attributes ``[N, 40]``, attribute names)."""
    folder = root / "celeba"
    require_files(folder, CELEBA_FILES + ("img_align_celeba",), "CelebA", CELEBA_SOURCE, folders=("img_align_celeba",))
    cls = tvd.CelebA if verify else UncheckedCelebA
    try:
        ds = cls(str(root), split="all", target_type="attr", download=False)
    except RuntimeError as e:  # torchvision's md5 check failed
        raise DatasetError(
            f"{folder}: {e} (md5 mismatch: these are not the official text files; use verify=False only for "
            f"test fixtures). Obtain the dataset from {CELEBA_SOURCE}."
        ) from e
    except (ValueError, IndexError, OSError) as e:  # UnicodeDecodeError is a ValueError
        raise DatasetError(f"malformed CelebA text files in {folder}: {type(e).__name__}: {e}") from e
    names = [n for n in ds.attr_names if n]  # the real header line ends with a space
    if ds.attr.shape != (len(ds.filename), len(names)):
        raise DatasetError(
            f"malformed {folder / 'list_attr_celeba.txt'}: attribute table {tuple(ds.attr.shape)} does not match "
            f"{len(ds.filename)} files in list_eval_partition.txt and {len(names)} attribute names"
        )
    return list(ds.filename), ds.attr, names


def _celeba_partition(folder: Path, filenames: Sequence[str]) -> np.ndarray:
    """Partition codes (0 train, 1 valid, 2 test) in the order of ``filenames``, from list_eval_partition.txt."""
    path = folder / "list_eval_partition.txt"
    text = _read_text(path, "CelebA", "lines '<file> 0|1|2'")
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if [r[0] for r in rows] != list(filenames) or any(len(r) != 2 or r[1] not in ("0", "1", "2") for r in rows):
        raise DatasetError(f"malformed {path}: expected lines '<file> 0|1|2' matching the attribute file")
    return np.array([int(r[1]) for r in rows], dtype=np.int64)


def _celeba_prepare(size: int) -> Callable[[Image.Image], Image.Image]:
    """The authors' preprocessing: CenterCrop 178 then Resize to ``size`` x ``size``."""
    resize = _square_resize(size)
    return lambda im: resize(TF.center_crop(im, [CELEBA_CROP, CELEBA_CROP]))


def _load_cache(path: Path, filenames: Sequence[str], size: int) -> Optional[torch.Tensor]:
    """The cached images at ``path`` if the file is readable and matches ``filenames``/``size``, else None."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        x = obj["x"]
        ok = obj.get("format") == CACHE_FORMAT and obj["filenames"] == list(filenames)
        ok = ok and x.dtype == torch.uint8 and tuple(x.shape) == (len(filenames), 3, size, size)
    except Exception as e:  # any failure to read the cache means: rebuild it
        warnings.warn(f"CelebA cache {path} is unreadable ({type(e).__name__}: {e}); rebuilding it")
        return None
    if not ok:
        warnings.warn(f"CelebA cache {path} does not match the current files or size; rebuilding it")
        return None
    return x


def _save_cache(path: Path, x: torch.Tensor, filenames: Sequence[str]) -> None:
    """Write the cache atomically (temporary file in the same folder, then ``os.replace``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
    except OSError as e:  # a read-only data root: work without a cache
        warnings.warn(f"cannot write CelebA cache in {path.parent} ({e}); images will be decoded again next time")
        return
    try:
        torch.save({"format": CACHE_FORMAT, "x": x, "filenames": list(filenames)}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def celeba_images(folder: Path, split: str, filenames: Sequence[str], size: int) -> torch.Tensor:
    """Images of one CelebA split as ``uint8`` ``[N, 3, size, size]``, from the cache or decoded and cached."""
    cache = folder / "_ballot_cache" / f"{split}_{size}px.pt"
    x = _load_cache(cache, filenames, size)
    if x is not None:
        return x
    paths = [folder / "img_align_celeba" / f for f in filenames]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"CelebA: {len(missing)} images of the {split} split missing in {folder / 'img_align_celeba'} "
            f"(e.g. {', '.join(missing[:3])}). Obtain the dataset from {CELEBA_SOURCE}."
        )
    x = _decode_images(paths, size, _celeba_prepare(size), desc=f"CelebA {split} {size}px")
    _save_cache(cache, x, filenames)
    return x


def _celeba_columns(names: list[str], target: str, sensitive: Optional[str]) -> tuple[int, Optional[int]]:
    """Column indices of the target and sensitive attributes; unknown names raise ValueError."""
    for what, attr in (("target", target), ("sensitive", sensitive)):
        if attr is not None and attr not in names:
            raise ValueError(f"celeba: unknown {what} attribute {attr!r}; valid choices: {', '.join(names)}")
    if sensitive == target:
        raise ValueError(f"celeba: sensitive attribute must differ from the target, both are {target!r}")
    return names.index(target), None if sensitive is None else names.index(sensitive)


@DATASETS.register("celeba")
def load_celeba(cfg: DataConfig) -> DataBundle:
    """CelebA with its official partition; binary target ``cfg.target`` (default Male), g = ``cfg.sensitive``."""
    target, sensitive = resolved_attributes(cfg)
    size = cfg.image_size or 128
    root = data_root(cfg.root)
    filenames, attr, names = _celeba_attributes(root, cfg.verify)
    t, s = _celeba_columns(names, target, sensitive)
    parts = _celeba_partition(root / "celeba", filenames)
    splits = {}
    for split, code in CELEBA_SPLITS.items():
        idx = np.flatnonzero(parts == code)
        if len(idx) == 0:
            raise DatasetError(f"CelebA: no file has partition code {code} ({split}) in list_eval_partition.txt")
        x = celeba_images(root / "celeba", split, [filenames[i] for i in idx], size)
        rows = torch.from_numpy(idx)
        splits[split] = Split(x, attr[rows, t], None if s is None else attr[rows, s])
    return DataBundle(
        name="celeba", **splits, num_classes=2, class_names=[f"not {target}", target],
        group_names=None if s is None else [f"not {sensitive}", sensitive], group_attribute=sensitive,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=False,
        notes={"target": target, "sensitive": sensitive, "image_size": size, "source": str(root / "celeba")},
    )


# --------------------------------------------------------------------------------------------------------------
# UTKFace
# --------------------------------------------------------------------------------------------------------------


def parse_utkface_name(name: str) -> Optional[dict[str, int]]:
    """Labels encoded in a UTKFace file name ``age_gender_race_datetime.jpg[.chip.jpg]``, or None if malformed.

    Example:
        >>> parse_utkface_name("25_1_2_20170116174525125.jpg.chip.jpg")
        {'age': 25, 'gender': 1, 'race': 2, 'age_bin': 1}
    """
    stem = name[: -len(".chip.jpg")] if name.endswith(".chip.jpg") else name
    stem = stem[: -len(".jpg")] if stem.endswith(".jpg") else stem
    fields = stem.split("_")
    if len(fields) != 4 or not all(f.isdigit() for f in fields[:3]) or not fields[3]:
        return None
    age, gender, race = (int(f) for f in fields[:3])
    if gender not in (0, 1) or race not in range(5):
        return None
    return {"age": age, "gender": gender, "race": race, "age_bin": int(np.searchsorted(UTK_AGE_EDGES, age, "right"))}


def utkface_index(folder: Path) -> tuple[list[Path], dict[str, np.ndarray], list[str]]:
    """The well-named images in ``folder`` (sorted), their label arrays, and the names of skipped files."""
    require_files(folder.parent, [folder.name], "UTKFace", UTKFACE_SOURCE, folders=[folder.name])
    try:
        files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(".jpg"))
    except OSError as e:
        raise DatasetError(f"UTKFace: cannot list folder {folder} ({e.strerror or e})") from e
    if not files:
        raise DatasetError(
            f"UTKFace: no [age]_[gender]_[race]_[datetime].jpg.chip.jpg files in folder {folder}. "
            f"Obtain the dataset from {UTKFACE_SOURCE}."
        )
    parsed = [(p, parse_utkface_name(p.name)) for p in files]
    kept = [(p, d) for p, d in parsed if d is not None]
    skipped = [p.name for p, d in parsed if d is None]
    labels = {k: np.array([d[k] for _, d in kept], dtype=np.int64) for k in UTK_ATTRIBUTES}
    return [p for p, _ in kept], labels, skipped


def _utk_attributes(target: str, sensitive: Optional[str]) -> None:
    for what, attr in (("target", target), ("sensitive", sensitive)):
        if attr is not None and attr not in UTK_ATTRIBUTES:
            raise ValueError(f"utkface: unknown {what} {attr!r}; valid choices: {', '.join(UTK_ATTRIBUTES)}")
    if sensitive == target:
        raise ValueError(f"utkface: sensitive attribute must differ from the target, both are {target!r}")


def _utk_split_indices(key: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: test = 20 %, then val = ``val_fraction`` of the rest, stratified by ``key``."""
    rest, test = stratified_split(key, UTK_TEST_FRACTION, cfg.split_seed)
    tr, va = stratified_split(key[rest], cfg.val_fraction, cfg.split_seed + 100)
    return rest[tr], rest[va], test


@DATASETS.register("utkface")
def load_utkface(cfg: DataConfig) -> DataBundle:
    """UTKFace faces with labels from file names; target/sensitive among gender, race, age_bin."""
    target, sensitive = resolved_attributes(cfg)
    _utk_attributes(target, sensitive)
    folder = data_root(cfg.root) / "UTKFace"
    paths, labels, skipped = utkface_index(folder)
    if skipped:
        warnings.warn(f"UTKFace: skipped {len(skipped)} files with malformed names in {folder}, e.g. {skipped[:3]}")
    if not paths:
        raise DatasetError(f"UTKFace: no file in {folder} has a well-formed name age_gender_race_datetime.jpg")
    size = cfg.image_size or 64
    x = _decode_images(paths, size, _square_resize(size), desc=f"UTKFace {size}px")
    y = torch.from_numpy(labels[target])
    g = None if sensitive is None else torch.from_numpy(labels[sensitive])
    key = labels[target] * 10 + (0 if g is None else labels[sensitive])
    full = Split(x, y, g)
    train, val, test = (full.subset(i) for i in _utk_split_indices(key, cfg))
    return DataBundle(
        name="utkface", train=train, val=val, test=test, num_classes=len(UTK_ATTRIBUTES[target]),
        class_names=list(UTK_ATTRIBUTES[target]), group_names=None if g is None else list(UTK_ATTRIBUTES[sensitive]),
        group_attribute=sensitive, mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=False,
        notes={"target": target, "sensitive": sensitive, "image_size": size, "skipped_files": len(skipped),
               "skipped_examples": skipped[:10], "source": str(folder)},
    )


# --------------------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# --------------------------------------------------------------------------------------------------------------

TINYIMAGENET_FILES = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")
TINYIMAGENET_SIZE = 64


def _tiny_classes(folder: Path) -> tuple[list[str], list[str]]:
    """(sorted wnids, class names): each name is the first synonym listed for the wnid in words.txt."""
    text = _read_text(folder / "wnids.txt", "Tiny-ImageNet", "one wnid such as n01443537 per line")
    wnids = sorted({line.strip() for line in text.splitlines() if line.strip()})
    words = {}
    for line in _read_text(folder / "words.txt", "Tiny-ImageNet", "lines wnid<TAB>synonyms").splitlines():
        wnid, _, text = line.partition("\t")
        words[wnid.strip()] = text.split(",")[0].strip()
    if not wnids:
        raise DatasetError(f"Tiny-ImageNet: {folder / 'wnids.txt'} lists no class")
    return wnids, [words.get(w) or w for w in wnids]


def _tiny_train(folder: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """Training image paths ``train/<wnid>/images/*.JPEG`` and their labels (index into ``wnids``)."""
    paths, labels = [], []
    for c, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        found = sorted(p for p in images.glob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
        if not found:
            raise DatasetError(f"Tiny-ImageNet: no {wnid}_<i>.JPEG images in folder {images}. "
                               f"Obtain the dataset from {TINYIMAGENET_SOURCE}.")
        paths += found
        labels += [c] * len(found)
    return paths, np.array(labels, dtype=np.int64)


def _tiny_val(folder: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """Labelled validation images from ``val/val_annotations.txt`` (file, wnid, box; tab-separated)."""
    ann = folder / "val" / "val_annotations.txt"
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    text = _read_text(ann, "Tiny-ImageNet", "lines file<TAB>wnid<TAB>box")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetError(f"malformed line {n} of {ann}: {line!r} (expected file<TAB>wnid<TAB>box, a wnid "
                               f"from wnids.txt)")
        paths.append(folder / "val" / "images" / fields[0])
        labels.append(index[fields[1]])
    if not paths:
        raise DatasetError(f"Tiny-ImageNet: {ann} lists no image (expected lines file<TAB>wnid<TAB>box, one per "
                           f"image of {folder / 'val' / 'images'}). Obtain the dataset from {TINYIMAGENET_SOURCE}.")
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"Tiny-ImageNet: {len(missing)} images listed in {ann} missing in "
                           f"{folder / 'val' / 'images'} (e.g. {', '.join(missing[:3])})")
    return paths, np.array(labels, dtype=np.int64)


@DATASETS.register("tinyimagenet")
def load_tinyimagenet(cfg: DataConfig) -> DataBundle:
    """Tiny-ImageNet-200 (64x64): val carved from train, the labelled ``val/`` used as test."""
    folder = data_root(cfg.root) / "tiny-imagenet-200"
    require_files(folder, TINYIMAGENET_FILES, "Tiny-ImageNet", TINYIMAGENET_SOURCE, folders=("train", "val/images"))
    wnids, names = _tiny_classes(folder)
    train_paths, train_y = _tiny_train(folder, wnids)
    test_paths, test_y = _tiny_val(folder, wnids)
    prepare, size = _square_resize(TINYIMAGENET_SIZE), TINYIMAGENET_SIZE
    full = Split(_decode_images(train_paths, size, prepare, "Tiny-ImageNet train"), torch.from_numpy(train_y))
    test = Split(_decode_images(test_paths, size, prepare, "Tiny-ImageNet val (test)"), torch.from_numpy(test_y))
    tr, va = stratified_split(train_y, cfg.val_fraction, cfg.split_seed)
    return DataBundle(
        name="tinyimagenet", train=full.subset(tr), val=full.subset(va), test=test, num_classes=len(wnids),
        class_names=names, mean=TINYIMAGENET_MEAN, std=TINYIMAGENET_STD, augment=True, crop_padding=8,
        notes={"wnids": wnids, "source": str(folder)},
    )

"""Loaders for the real image datasets on disk: ``cifar10``, ``cifar100``, ``cifar10s``, ``celeba``, ``utkface``,
``tinyimagenet``.

Every dataset lives under one data root, :func:`ballot_lib.paths.data_root` (``DataConfig.root``, else
``$BALLOT_DATA_ROOT``, else ``~/ballot_data``). Nothing is ever downloaded: a missing or malformed dataset raises
:class:`~ballot_lib.data.core.DatasetError` naming the files expected, the folder they were expected in and where
to obtain them, before any image is decoded. Every CIFAR batch and CelebA annotation file is checked (format,
keys, shapes, counts, label ranges); a problem is reported with the file, the line or key, what was expected and
where to obtain the dataset. Images are returned as ``uint8`` tensors ``[N, 3, H, W]`` (RGB), labels as
``int64``; ``mean``/``std`` are per-channel statistics applied on the training device.

Expected layout (``<root>`` = the data root)::

    <root>/cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/      train, test, meta
    <root>/celeba/                img_align_celeba/000001.jpg .., list_attr_celeba.txt, list_eval_partition.txt,
                                  identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt
    <root>/UTKFace/               [age]_[gender]_[race]_[datetime].jpg.chip.jpg (or .jpg)
    <root>/tiny-imagenet-200/     wnids.txt, words.txt, train/<wnid>/images/<wnid>_<i>.JPEG,
                                  val/images/val_<i>.JPEG, val/val_annotations.txt

Datasets:

* ``cifar10`` / ``cifar100``: the pickled batches in torchvision's ``CIFAR10``/``CIFAR100`` format (fine labels),
  read here with torchvision's file list and md5 sums so that each file is checked in the pass that loads it.
  Test = the official test batch; val = ``val_fraction`` of the official train set, stratified with
  ``split_seed``. Augmentation on (crop padding 4, flip).
* ``cifar10s``: CIFAR-10S (Wang et al., CVPR 2020) built from ``cifar10``'s splits. In train, classes 0-4 (or the
  classes ``skew_classes``) keep exactly ``round(skew * n_c)`` images in colour and render the rest in grayscale
  (ITU-R 601-2 luma, the same integer formula as PIL's ``convert("L")``, replicated on three channels); the other
  classes the reverse. The choice is seeded by ``split_seed`` (:func:`ballot_lib.data.embedded.skewed_domains`).
  Val and test hold every image in both versions. g = domain: 0 ``color``, 1 ``gray``.
* ``celeba``: the files of torchvision's ``CelebA`` with the official partition (``list_eval_partition.txt``:
  0 train, 1 valid, 2 test). The five annotation files are parsed and checked here (torchvision pairs their lines
  by position without checking that they name the same image): each must list the same images in the same order
  as ``list_attr_celeba.txt``. Target = binary attribute ``cfg.target`` (default ``Male``, as in the Ballot
  authors' code); g = attribute ``cfg.sensitive``: default none when the target is ``Male``, else ``Male``
  (FST's setting: ``Smiling``/``Blond_Hair`` with g = ``Male``); ``sensitive="none"`` turns groups off.
  Preprocessing as the authors: CenterCrop 178 then Resize ``cfg.image_size or 128`` (bilinear). Decoding ~200k
  JPEGs is slow, so the decoded images are cached per (split, image size) in
  ``<root>/celeba/_ballot_cache/<split>_<size>px.pt`` (written atomically; a corrupt or stale cache is rebuilt).
  The cache holds images only, not labels, because images do not depend on the target: labels come from the
  attribute file at every load, so one cache serves every target/sensitive choice.
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

Checksums and test fixtures: with ``DataConfig(verify=True)`` (the default) the CIFAR and CelebA files must have
the md5 sums of the official release (torchvision's lists); anything else raises :class:`DatasetError` naming the
file. ``DataConfig(verify=False)`` skips only the checksums, so the format-faithful fixtures that the tests write
(``tests/fixtures_real.py``) load through the same code path, with the same format checks, as the real files.
Keep ``verify=True`` for real data.

Security: CIFAR batches are pickles, and unpickling runs code; load them only from your own data root.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import datasets as tvd
from torchvision.transforms import functional as TF

from ..paths import data_root, new_file_mode
from ..progress import bar
from .core import (
    DATASETS, DataBundle, DataConfig, DatasetError, Split, default_skew_classes, resolved_attributes, stratified_split,
)
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


def require_files(
    folder: Path, files: Sequence[str], dataset: str, source: str, folders: Sequence[str] = (),
    dataset_folder: Optional[str] = None,
) -> None:
    """Raise :class:`DatasetError` unless every path in ``files`` (relative to ``folder``) exists, as a folder
    for the entries also listed in ``folders`` and as a file for the others.

    The message lists the missing files, every expected file, the folder and where to obtain the dataset, and
    says to point the data root at the folder that contains ``dataset_folder`` (the dataset's own folder under
    the data root; default ``folder.name``, for a ``folder`` that is the dataset's folder itself).
    """
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise DatasetError(
            f"{dataset}: missing {', '.join(missing)} in folder {folder} (expected: {', '.join(files)}). "
            f"Obtain the dataset from {source}, or point DataConfig.root / $BALLOT_DATA_ROOT at the folder "
            f"that contains {dataset_folder or folder.name}/."
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


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10, CIFAR-100, CIFAR-10S
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarFormat:
    """Where a CIFAR release lives and what its pickles hold. File names, md5 sums and the meta key are
    torchvision's (``torchvision.datasets.CIFAR10``/``CIFAR100``), so the two read the same files."""

    dataset: str  # name in messages
    folder: str  # folder under the data root
    train: tuple[tuple[str, str], ...]  # (file, md5) of the official train batches
    test: tuple[tuple[str, str], ...]  # (file, md5) of the official test batch
    meta: tuple[str, str]  # (file, md5) of the meta file
    labels_key: str  # key of the labels in a batch
    names_key: str  # key of the class names in the meta file
    num_classes: int
    source: str  # where to obtain it

    @property
    def files(self) -> list[str]:
        return [f for f, _ in self.train + self.test] + [self.meta[0]]


def _cifar_format(cls: Any, dataset: str, labels_key: str, num_classes: int, source: str) -> CifarFormat:
    pairs = lambda lst: tuple((str(f), str(m)) for f, m in lst)  # noqa: E731
    return CifarFormat(dataset, cls.base_folder, pairs(cls.train_list), pairs(cls.test_list),
                       (cls.meta["filename"], cls.meta["md5"]), labels_key, cls.meta["key"], num_classes, source)


CIFAR10_FORMAT = _cifar_format(tvd.CIFAR10, "CIFAR10", "labels", 10, CIFAR10_SOURCE)
CIFAR100_FORMAT = _cifar_format(tvd.CIFAR100, "CIFAR100", "fine_labels", 100, CIFAR100_SOURCE)


def _md5_mismatch(path: Path, got: str, want: str, dataset: str, source: str) -> DatasetError:
    """The error for a file whose md5 sum is not the official one (``DataConfig(verify=True)``)."""
    return DatasetError(
        f"{dataset}: {path} is not the official file (md5 mismatch: {got}, expected {want}). Obtain the dataset "
        f"from {source}. A copy you built yourself (e.g. a test fixture) loads with DataConfig(verify=False), "
        f"which skips the checksums."
    )


def _md5(data: bytes) -> str:
    """Hex md5 sum of ``data`` (a checksum of the release, not a security check)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _read_cifar_pickle(path: Path, md5: Optional[str], fmt: CifarFormat, keys: Sequence[str], expected: str) -> dict:
    """Unpickle one CIFAR file (``encoding="latin1"``, as torchvision) into a dict holding ``keys``.

    ``md5`` (None: no check) is checked on the bytes read for unpickling, so each file is read once. Any problem
    raises :class:`DatasetError` naming the file, what was ``expected`` and where to obtain the dataset.
    """
    hint = f"; expected {expected}. Obtain the dataset from {fmt.source}."
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{fmt.dataset}: cannot read {path} ({e.strerror or e}){hint}") from e
    if md5 is not None:
        got = _md5(raw)
        if got != md5:
            raise _md5_mismatch(path, got, md5, fmt.dataset, fmt.source)
    try:
        obj = pickle.loads(raw, encoding="latin1")
    except Exception as e:  # a damaged pickle raises nearly any exception type (EOFError, UnpicklingError, ...)
        raise DatasetError(f"{fmt.dataset}: {path} is not a readable pickle ({type(e).__name__}: {e}){hint}") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{fmt.dataset}: {path} holds a {type(obj).__name__}, not a dict{hint}")
    missing = [k for k in keys if k not in obj]
    if missing:
        found = ", ".join(sorted(repr(k) for k in obj)) or "none"
        raise DatasetError(f"{fmt.dataset}: {path} has no key {', '.join(map(repr, missing))} (keys found: "
                           f"{found}){hint}")
    return obj


def _cifar_batch(path: Path, md5: Optional[str], fmt: CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    """(images ``[N, 3072]`` uint8, labels ``[N]`` int64) of one checked CIFAR batch file."""
    expected = (f"a pickled dict with 'data' (N x 3072 uint8: 1024 red, 1024 green, 1024 blue values) and "
                f"'{fmt.labels_key}' (N labels in [0, {fmt.num_classes}))")
    obj = _read_cifar_pickle(path, md5, fmt, ("data", fmt.labels_key), expected)
    hint = f"; expected {expected}. Obtain the dataset from {fmt.source}."
    data = obj["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        found = (f"an array of shape {data.shape} and dtype {data.dtype}" if isinstance(data, np.ndarray)
                 else f"a {type(data).__name__}")
        raise DatasetError(f"{fmt.dataset}: 'data' in {path} is {found}{hint}")
    labels = obj[fmt.labels_key]
    try:
        y = np.asarray(labels)
    except Exception:  # ragged or odd objects: reported below like any other non-integer labels
        y = np.asarray([None])
    if y.size == 0:
        y = y.astype(np.int64).reshape(0)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DatasetError(f"{fmt.dataset}: '{fmt.labels_key}' in {path} is not a list of integers (found "
                           f"{type(labels).__name__} of dtype {y.dtype}, shape {y.shape}){hint}")
    if len(y) != len(data):
        raise DatasetError(f"{fmt.dataset}: {path} holds {len(data)} images but {len(y)} labels{hint}")
    if len(y) and (y.min() < 0 or y.max() >= fmt.num_classes):
        raise DatasetError(f"{fmt.dataset}: labels in {path} outside [0, {fmt.num_classes}): found "
                           f"{y.min()}..{y.max()}{hint}")
    return data, y.astype(np.int64)


def _cifar_names(folder: Path, fmt: CifarFormat, verify: bool) -> list[str]:
    """The class names from the meta file (``label_names`` / ``fine_label_names``), checked."""
    name, md5 = fmt.meta
    expected = f"a pickled dict with '{fmt.names_key}' (a list of {fmt.num_classes} class names)"
    obj = _read_cifar_pickle(folder / name, md5 if verify else None, fmt, (fmt.names_key,), expected)
    names = obj[fmt.names_key]
    if isinstance(names, (list, tuple)):
        names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if not isinstance(names, list) or len(names) != fmt.num_classes or not all(isinstance(n, str) for n in names):
        found = f"{len(names)} entries" if isinstance(names, list) else f"a {type(names).__name__}"
        raise DatasetError(f"{fmt.dataset}: '{fmt.names_key}' in {folder / name} is {found}; expected {expected}. "
                           f"Obtain the dataset from {fmt.source}.")
    return names


def _cifar_split(folder: Path, files: Sequence[tuple[str, str]], fmt: CifarFormat, verify: bool) -> Split:
    """One official split (the batches ``files``) as a :class:`Split` of ``uint8`` ``[N, 3, 32, 32]`` images.

    Each file is read once: its md5 (when ``verify``), its format and its labels are checked on the bytes that
    are then loaded, as torchvision's ``CIFAR10`` stacks them (rows of 1024 red, green, blue values).
    """
    batches = [_cifar_batch(folder / name, md5 if verify else None, fmt) for name, md5 in files]
    x = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
    y = np.concatenate([b[1] for b in batches])
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def cifar_splits(cfg: DataConfig, hundred: bool = False) -> tuple[Split, Split, Split, list[str]]:
    """CIFAR-10 (or CIFAR-100) as (train, val, test, class names): val carved from the official train set.

    Every file is checked before any is used (keys, shapes, label count and range, class names; the md5 sums
    when ``cfg.verify``); a problem raises :class:`DatasetError` naming the file.
    """
    fmt = CIFAR100_FORMAT if hundred else CIFAR10_FORMAT
    root = data_root(cfg.root)
    require_dataset(root, "cifar100" if hundred else "cifar10")
    folder = root / fmt.folder
    names = _cifar_names(folder, fmt, cfg.verify)
    full = _cifar_split(folder, fmt.train, fmt, cfg.verify)
    test = _cifar_split(folder, fmt.test, fmt, cfg.verify)
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
    g = torch.from_numpy(skewed_domains(train.y.numpy(), 10, cfg.skew, cfg.split_seed + 7, cfg.skew_classes))
    x = torch.where(g.view(-1, 1, 1, 1).bool(), to_grayscale(train.x), train.x)
    return DataBundle(
        name="cifar10s", train=Split(x, train.y, g), val=_both_domains(val, to_grayscale),
        test=_both_domains(test, to_grayscale), num_classes=10, class_names=names,
        group_names=["color", "gray"], group_attribute="domain", mean=CIFAR10_MEAN, std=CIFAR10_STD,
        augment=True, crop_padding=4,
        notes={"skew": cfg.skew, "skew_classes": sorted(cfg.skew_classes) or default_skew_classes("cifar10s"),
               "source": str(data_root(cfg.root))},
    )


# --------------------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelebaTable:
    """The format of one CelebA annotation file: optional count and header lines, then one line per image, the
    file name followed by ``values`` values, separated by one or more spaces."""

    file: str
    header: Optional[int]  # None: no count/header lines; else line 1 = image count, line 2 = ``header`` names
    values: int  # values after the file name on each image line
    value: str  # regular expression of one value
    value_text: str  # what one value is, in words (for messages)
    layout: str  # the expected format, in words (for messages)

    @property
    def first_image_line(self) -> int:
        """Line number (1-based) of the first image line."""
        return 1 if self.header is None else 3


CELEBA_TABLES: dict[str, CelebaTable] = {t.file: t for t in (
    CelebaTable("list_attr_celeba.txt", 40, 40, "-1|1", "-1 or 1",
                "line 1 the image count, line 2 the 40 attribute names, then one line per image: the file name "
                "and 40 values -1 or 1"),
    CelebaTable("list_eval_partition.txt", None, 1, "[012]", "0, 1 or 2",
                "one line per image: the file name and 0 (train), 1 (valid) or 2 (test)"),
    CelebaTable("identity_CelebA.txt", None, 1, "[0-9]+", "a non-negative integer",
                "one line per image: the file name and the identity number"),
    CelebaTable("list_bbox_celeba.txt", 5, 4, "-?[0-9]+", "an integer",
                "line 1 the image count, line 2 'image_id x_1 y_1 width height', then one line per image: the "
                "file name and 4 integers"),
    CelebaTable("list_landmarks_align_celeba.txt", 10, 10, "-?[0-9]+", "an integer",
                "line 1 the image count, line 2 the 10 landmark names, then one line per image: the file name "
                "and 10 integers"),
)}


def _celeba_table(folder: Path, table: CelebaTable) -> tuple[list[str], list[str], list[str], int]:
    """Read and check one annotation file: (header names, file names, the values part of each image line, the line
    number of the first image line).

    Lines may end in CRLF and carry trailing spaces; empty lines at the very end of the file are ignored. Any other
    deviation from ``table`` raises :class:`DatasetError` naming the file, the line and the expected format.
    """
    path = folder / table.file
    text = _read_text(path, "CelebA", table.layout)
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()

    def malformed(line_no: int, problem: str) -> DatasetError:
        return DatasetError(f"CelebA: malformed {path}, line {line_no}: {problem}; expected {table.layout}. "
                            f"Obtain the dataset from {CELEBA_SOURCE}.")

    header: list[str] = []
    first = table.first_image_line
    if table.header is not None:
        if len(lines) < 2:
            raise malformed(len(lines) + 1, "the file ends before its header line")
        if not re.fullmatch(r"\s*[0-9]+\s*", lines[0]):
            raise malformed(1, f"{lines[0].strip()[:60]!r} is not the image count")
        header = lines[1].split()
        if len(header) != table.header:
            raise malformed(2, f"the header has {len(header)} names, expected {table.header}")
    row = re.compile(rf"[ \t]*(\S+)((?:[ \t]+(?:{table.value})){{{table.values}}})[ \t\r]*")
    names, values = [], []
    for line_no, line in enumerate(lines[first - 1:], start=first):
        m = row.fullmatch(line)
        if m is None:
            raise malformed(line_no, _celeba_row_problem(line, table))
        names.append(m.group(1))
        values.append(m.group(2))
    if table.header is not None and int(lines[0]) != len(names):
        raise malformed(1, f"the image count {int(lines[0])} differs from the {len(names)} image lines that follow")
    if not names:
        raise DatasetError(f"CelebA: {path} lists no image; expected {table.layout}. Obtain the dataset from "
                           f"{CELEBA_SOURCE}.")
    return header, names, values, first


def _celeba_row_problem(line: str, table: CelebaTable) -> str:
    """What is wrong with an image line that does not match ``table`` (for the error message)."""
    fields = line.split()
    shown = line.strip() if len(line) <= 80 else line.strip()[:77] + "..."
    if not fields:
        return "an empty line among the image lines"
    if len(fields) != table.values + 1:
        return f"{len(fields) - 1} values after the file name {fields[0]!r}, expected {table.values} ({shown!r})"
    bad = next((v for v in fields[1:] if not re.fullmatch(table.value, v)), None)
    if bad is not None:
        return f"value {bad!r} for {fields[0]} is not {table.value_text} ({shown!r})"
    return f"values not separated by spaces ({shown!r})"


def _check_celeba_md5(folder: Path) -> None:
    """Compare the annotation files with the md5 sums of the official release (torchvision's list)."""
    for _, md5, name in tvd.CelebA.file_list:
        if name in CELEBA_TABLES:
            path = folder / name
            try:
                got = _md5(path.read_bytes())
            except OSError as e:
                raise DatasetError(f"CelebA: cannot read {path} ({e.strerror or e})") from e
            if got != md5:
                raise _md5_mismatch(path, got, md5, "CelebA", CELEBA_SOURCE)


def _same_images(folder: Path, ref: tuple[str, list[str], int], other: tuple[str, list[str], int]) -> None:
    """Raise unless two annotation files list the same images in the same order (the files are aligned by
    position: the n-th image line of each describes the same image)."""
    (ref_file, ref_names, ref_first), (file, names, first) = ref, other
    for i, (a, b) in enumerate(zip(ref_names, names)):
        if a != b:
            raise DatasetError(
                f"CelebA: {folder / file} line {first + i} names {b!r} where {folder / ref_file} line "
                f"{ref_first + i} names {a!r}: every annotation file must list the same images in the same "
                f"order. Obtain the dataset from {CELEBA_SOURCE}."
            )
    if len(names) != len(ref_names):
        raise DatasetError(
            f"CelebA: {folder / file} lists {len(names)} images but {folder / ref_file} lists {len(ref_names)}: "
            f"every annotation file must list the same images in the same order. Obtain the dataset from "
            f"{CELEBA_SOURCE}."
        )


def _celeba_attributes(root: Path, verify: bool) -> tuple[list[str], torch.Tensor, list[str]]:
    """Read and check the CelebA annotation files: (file names, 0/1 attributes ``[N, 40]``, attribute names).

    The files are parsed here, in torchvision's ``CelebA`` format, rather than by torchvision: its parser pairs
    the files' lines by position only and fails without naming file or line. The file names are those of
    ``list_attr_celeba.txt``. ``verify`` checks the official md5 sums of the five annotation files first.
    """
    folder = root / "celeba"
    require_dataset(root, "celeba")
    if verify:
        _check_celeba_md5(folder)
    attr_file = "list_attr_celeba.txt"
    header, filenames, values, _ = _celeba_table(folder, CELEBA_TABLES[attr_file])
    # The values were checked to be -1 or 1, so the parse cannot fail; 1 -> 1, -1 -> 0 as torchvision maps them.
    signs = np.fromstring(" ".join(values), dtype=np.int8, sep=" ").reshape(len(filenames), len(header))
    return filenames, torch.from_numpy((signs > 0).astype(np.int64)), header


def _celeba_partition(folder: Path, filenames: Sequence[str]) -> np.ndarray:
    """Partition codes (0 train, 1 valid, 2 test) in the order of ``filenames``, from list_eval_partition.txt.

    ``filenames`` are the image names of ``list_attr_celeba.txt`` (see :func:`_celeba_attributes`): the two files
    are paired line by line, so a line naming another image than the attribute file's raises
    :class:`DatasetError` naming both lines, both names and both files.
    """
    table = CELEBA_TABLES["list_eval_partition.txt"]
    _, names, codes, first = _celeba_table(folder, table)
    attr_first = CELEBA_TABLES["list_attr_celeba.txt"].first_image_line
    _same_images(folder, ("list_attr_celeba.txt", list(filenames), attr_first), (table.file, names, first))
    return np.array([int(c) for c in codes], dtype=np.int64)


def _check_celeba_unused(folder: Path, filenames: Sequence[str]) -> None:
    """Check the identity, bounding-box and landmark files (not used, but part of the release that torchvision's
    class reads): their format, and that they list the images ``filenames`` of the attribute file in its order."""
    attr = ("list_attr_celeba.txt", list(filenames), CELEBA_TABLES["list_attr_celeba.txt"].first_image_line)
    for name in ("identity_CelebA.txt", "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt"):
        _, names, _, first = _celeba_table(folder, CELEBA_TABLES[name])
        _same_images(folder, attr, (name, names, first))


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
        try:  # a shared data root: readable as the umask intends, not mkstemp's 0o600 (best effort)
            os.fchmod(fd, new_file_mode())
        except OSError:
            pass
        finally:
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
    _check_celeba_unused(root / "celeba", filenames)
    splits = {}
    for split, code in CELEBA_SPLITS.items():
        idx = np.flatnonzero(parts == code)
        if len(idx) == 0:
            raise DatasetError(f"CelebA: no file has partition code {code} ({split}) in list_eval_partition.txt")
        x = celeba_images(root / "celeba", split, [filenames[i] for i in idx], size)
        rows = torch.from_numpy(idx)
        splits[split] = Split(x, attr[rows, t], None if s is None else attr[rows, s])
    return DataBundle(
        name="celeba", train=splits["train"], val=splits["val"], test=splits["test"], num_classes=2,
        class_names=[f"not {target}", target],
        group_names=None if sensitive is None else [f"not {sensitive}", sensitive], group_attribute=sensitive,
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
    _require_folder(folder, "UTKFace", UTKFACE_SOURCE)
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
    key = labels[target] * 10 + (0 if sensitive is None else labels[sensitive])
    full = Split(x, y, g)
    train, val, test = (full.subset(i) for i in _utk_split_indices(key, cfg))
    return DataBundle(
        name="utkface", train=train, val=val, test=test, num_classes=len(UTK_ATTRIBUTES[target]),
        class_names=list(UTK_ATTRIBUTES[target]),
        group_names=None if sensitive is None else list(UTK_ATTRIBUTES[sensitive]),
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
    require_dataset(data_root(cfg.root), "tinyimagenet")
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


# --------------------------------------------------------------------------------------------------------------
# Presence check (a batch runner's check before it launches jobs)
# --------------------------------------------------------------------------------------------------------------


def require_dataset(root: Path, name: str) -> None:
    """Raise :class:`DatasetError` (naming the files expected, the folder and where to obtain the dataset) unless
    the files the loader of real dataset ``name`` reads are under the data root ``root``; other names pass. Nothing
    is read: the loaders call it first, and ``sweep grid`` (:func:`check_present`) before it launches any job."""
    if name in ("cifar10", "cifar10s", "cifar100"):
        fmt = CIFAR100_FORMAT if name == "cifar100" else CIFAR10_FORMAT
        require_files(root / fmt.folder, fmt.files, fmt.dataset, fmt.source)
    elif name == "celeba":
        require_files(root / "celeba", CELEBA_FILES + ("img_align_celeba",), "CelebA", CELEBA_SOURCE,
                      folders=("img_align_celeba",))
    elif name == "utkface":
        _require_folder(root / "UTKFace", "UTKFace", UTKFACE_SOURCE)
    elif name == "tinyimagenet":
        require_files(root / "tiny-imagenet-200", TINYIMAGENET_FILES, "Tiny-ImageNet", TINYIMAGENET_SOURCE,
                      folders=("train", "val/images"))


def _require_folder(folder: Path, dataset: str, source: str) -> None:
    """A dataset that is one folder of files (UTKFace): the folder must exist (:func:`require_files`)."""
    require_files(folder.parent, [folder.name], dataset, source, folders=[folder.name], dataset_folder=folder.name)


def check_present(cfg: DataConfig) -> None:
    """:func:`require_dataset` for the dataset and data root of ``cfg`` (embedded datasets pass)."""
    require_dataset(data_root(cfg.root), cfg.name)


"""Datasets: a registry by name, embedded offline datasets and loaders for real datasets on disk.

Use :func:`get_dataset` with a name or a :class:`DataConfig`; ``DATASETS.names()`` lists the valid names.
"""
from .core import (
    DATASETS,
    DataBundle,
    DataConfig,
    DatasetError,
    Split,
    apply_long_tail,
    get_dataset,
    long_tail_counts,
    stratified_split,
)
from . import embedded  # noqa: F401  (registers digits, digits_lt, digits_s, adult)

try:  # real-dataset loaders need torchvision; the embedded ones do not
    from . import real  # noqa: F401
except ImportError as _e:  # pragma: no cover - only without torchvision
    if "torchvision" not in str(_e) and "real" not in str(_e):
        raise

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataConfig",
    "DatasetError",
    "Split",
    "apply_long_tail",
    "get_dataset",
    "long_tail_counts",
    "stratified_split",
]

"""Bit-packed masks (8 entries per byte): the ``packed`` file format of :func:`ballot_lib.pruning.save_mask` and the
in-memory form of :class:`ballot_lib.methods.base.CandidateMasks`. A leaf module (numpy and torch only), so the
store's checks (:mod:`ballot_lib.results`) and the pruning primitives read one definition.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np
import torch


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A mask tensor (any shape, any device; nonzero = kept) as a 1-d CPU ``uint8`` tensor of ``ceil(numel / 8)``
    bytes: its row-major entries packed by ``numpy.packbits`` (first entry in the high bit, zero padding)."""
    return torch.from_numpy(np.packbits(mask.detach().bool().cpu().contiguous().numpy().reshape(-1)))


def unpack_bits(bits: torch.Tensor, shape: "tuple[int, ...] | list[int]") -> torch.Tensor:
    """The CPU bool tensor of ``shape`` that :func:`pack_bits` packed into ``bits``."""
    numel = math.prod(shape)
    return torch.from_numpy(np.unpackbits(bits.contiguous().numpy(), count=numel).view(np.bool_)).reshape(tuple(shape))


#: Format marker and version of the bit-packed mask files :func:`ballot_lib.pruning.save_mask` writes. The file holds
#: ``{"format": MASK_FORMAT, "version": MASK_FORMAT_VERSION, "masks": {name: {"shape": [...], "bits": t}}}``, where
#: ``t`` is a 1-d ``torch.uint8`` tensor of ``ceil(numel / 8)`` bytes: the flattened (row-major) mask packed by
#: ``numpy.packbits`` (8 entries per byte, first entry in the high bit, zero padding). Only tensors, dicts, lists,
#: ints and strings: weights-only loading reads it. Files of the older format (a plain dict name -> bool tensor,
#: 1 byte per weight) are read too.
MASK_FORMAT = "ballot_lib.packed_mask"
MASK_FORMAT_VERSION = 1


def pack_mask(mask: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """``mask`` in the bit-packed file format of :func:`save_mask` (see :data:`MASK_FORMAT`)."""
    packed: dict[str, dict[str, object]] = {}
    for n, m in mask.items():
        packed[n] = {"shape": [int(s) for s in m.shape], "bits": pack_bits(m)}
    return {"format": MASK_FORMAT, "version": MASK_FORMAT_VERSION, "masks": packed}


def is_packed_mask(obj: object) -> bool:
    """Whether ``obj`` (a loaded mask file) claims the bit-packed format, valid or not (its format marker)."""
    return isinstance(obj, Mapping) and isinstance(obj.get("format"), str) and obj["format"] == MASK_FORMAT


def _packed_shape(shape: object) -> Optional[tuple[int, ...]]:
    """``shape`` as a tuple if it is a list (or tuple) of non-negative ints, else ``None``."""
    if not isinstance(shape, (list, tuple)):
        return None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        return None
    return tuple(shape)


def unpack_mask(obj: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The mask (name -> CPU bool tensor of its shape) held by a bit-packed mask file's content ``obj``.

    Raises:
        ValueError: saying what is wrong, if ``obj`` is not a valid file of version :data:`MASK_FORMAT_VERSION`
            (unknown version, shapes that are not lists of non-negative ints, a packed tensor of the wrong dtype
            or byte length for its shape).
    """
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != MASK_FORMAT_VERSION:
        raise ValueError(f"unknown {MASK_FORMAT} format version {version!r}; this ballot_lib reads version "
                         f"{MASK_FORMAT_VERSION} and plain dicts of bool tensors")
    masks = obj.get("masks")
    if not isinstance(masks, Mapping):
        raise ValueError(f"its 'masks' is a {type(masks).__name__}, not a mapping name -> packed tensor")
    out: dict[str, torch.Tensor] = {}
    for n, entry in masks.items():
        if not isinstance(n, str) or not isinstance(entry, Mapping):
            raise ValueError(f"its entry {n!r} is not a name -> {{'shape', 'bits'}} mapping")
        shape, bits = _packed_shape(entry.get("shape")), entry.get("bits")
        if shape is None:
            raise ValueError(f"the shape of {n!r} is {entry.get('shape')!r}, not a list of non-negative ints")
        numel = math.prod(shape)
        if not isinstance(bits, torch.Tensor) or bits.dtype != torch.uint8 or bits.dim() != 1:
            what = f"a {bits.dtype} tensor of shape {tuple(bits.shape)}" if isinstance(bits, torch.Tensor) else \
                f"a {type(bits).__name__}"
            raise ValueError(f"the packed bits of {n!r} are {what}, not a 1-d torch.uint8 tensor")
        if bits.numel() != (numel + 7) // 8:
            raise ValueError(f"the packed bits of {n!r} hold {bits.numel()} bytes; its shape {list(shape)} needs "
                             f"{(numel + 7) // 8}")
        out[n] = unpack_bits(bits, shape)
    return out


__all__ = ["MASK_FORMAT", "MASK_FORMAT_VERSION", "is_packed_mask", "pack_bits", "pack_mask", "unpack_bits",
           "unpack_mask"]

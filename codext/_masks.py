"""The one rule for ground-truth masks given as arrays: codext.data.from_arrays and
codext.metrics.evaluate read them through as_levels, and codext.data.load reads mask
files through _C.mask_from_levels, which ends with the same C test
(cx_mask_binary_level, csrc/data/mask.c).

A uint8 mask holding 0 and one other level v <= 128 and nothing else (a 0/1 mask, or
palette indices) is binary with v as its foreground and reads as 0/255; any other uint8
mask (one level everywhere included) is read as it is (foreground where > 128). bool
masks read as 0/255. So a 0/1 mask is never scored or trained as empty.
"""
import numpy as np

from . import _C


def as_levels(masks):
    """masks: uint8 [N, H, W] or [H, W], or bool. Returns uint8 of the same shape by the
    rule above: the array itself when nothing changes, else a converted copy."""
    if masks.dtype == np.bool_:
        return masks.astype(np.uint8) * np.uint8(255)
    levels = _C.mask_binary_levels(masks)
    if not levels.any():
        return masks
    out = np.array(masks, dtype=np.uint8, order="C")
    flat = out.reshape((-1,) + out.shape[-2:])
    for i in np.flatnonzero(levels):
        np.multiply(flat[i] != 0, np.uint8(255), out=flat[i], casting="unsafe")
    return out

"""The mask rules live in C once (csrc/data/mask.c, core/mask.h): _C.mask_from_levels
against the rules written out in NumPy (as codext read masks before), and the > 128
binarisation shared by resizing, augmentation and the metrics."""
import numpy as np
import pytest

import codext
from codext import _C


def levels_reference(arr):
    """The mask-file rules in NumPy: levels above 255 -> foreground above half the
    maximum; else clipped to 0..255; then 0 plus one value <= 128 -> 0/255."""
    if arr.dtype != np.uint8:
        top = arr.max() if arr.size else 0
        if top > 255:
            mask = (arr > top / 2) * np.uint8(255)
        else:
            with np.errstate(invalid="ignore"):
                mask = np.where(np.isnan(arr), 0, np.clip(arr, 0, 255)).astype(np.uint8) \
                    if arr.dtype.kind == "f" else np.clip(arr, 0, 255).astype(np.uint8)
    else:
        mask = arr
    top = int(mask.max()) if mask.size else 0
    if 0 < top <= 128 and not np.any((mask != 0) & (mask != top)):
        mask = (mask > 0) * np.uint8(255)
    return mask


def cases():
    rng = np.random.default_rng(3)
    shape = (7, 9)
    yield rng.integers(0, 256, shape).astype(np.uint8)                      # grey levels
    yield (rng.random(shape) > 0.5).astype(np.uint8)                        # 0/1
    yield (rng.random(shape) > 0.5).astype(np.uint8) * 128                  # 0/128: one value
    yield (rng.random(shape) > 0.5).astype(np.uint8) * 129                  # 0/129: kept
    yield np.zeros(shape, np.uint8)
    yield (rng.random(shape) > 0.5).astype(np.uint16) * 65535               # 16-bit
    yield ((rng.random(shape) > 0.5) * 65535).astype(">u2")                 # 16-bit big-endian
    yield rng.integers(0, 1001, shape).astype(np.int32)                     # 0..1000
    yield rng.integers(-50, 200, shape).astype(np.int32)                    # negatives, <= 255
    yield np.full(shape, 511, np.int32)                                     # odd maximum
    yield rng.integers(0, 2, shape).astype(np.uint16)                       # 16-bit 0/1
    yield (rng.random(shape) * 300).astype(np.float32)                      # float above 255
    yield (rng.random(shape) * 200 - 20).astype(np.float32)                 # float clipped
    f = (rng.random(shape) * 300).astype(np.float32)
    f[2, 3] = np.nan
    yield f                                                                 # NaN: clip rule
    yield np.array([[0.0, np.inf]], np.float32)


@pytest.mark.parametrize("levels", list(cases()), ids=lambda a: str(a.dtype))
def test_mask_from_levels_follows_the_rules(levels):
    got = _C.mask_from_levels(levels)
    assert got.dtype == np.uint8 and got.shape == levels.shape
    assert np.array_equal(got, levels_reference(levels))


def test_mask_from_levels_rejects_non_numbers():
    with pytest.raises(TypeError, match="levels must be a numpy array"):
        _C.mask_from_levels([1, 2])
    with pytest.raises(TypeError, match="integers or floats"):
        _C.mask_from_levels(np.array(["a"]))


def test_one_threshold_everywhere():
    """128 is background and 129 foreground for resizing, augmentation and the metrics."""
    mask = np.array([[0, 127, 128, 129], [130, 200, 255, 128]], np.uint8)
    fg = mask > 128
    assert np.array_equal(_C.resize_mask(mask, 2, 4), fg * np.uint8(255))
    image = np.zeros((1, 2, 4, 3), np.uint8)
    _, y = codext.data.augment_batch(image, mask[None], np.arange(1), train=False)
    assert np.array_equal(y[0, 0], fg.astype(np.float32))
    pred = fg.astype(np.float32)
    assert codext.metrics.evaluate([pred], [mask])["mae"] == 0.0

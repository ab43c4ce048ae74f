"""The mask rules live in C once (csrc/data/mask.c, core/mask.h): _C.mask_from_levels
against the rules written out in NumPy (as codext read masks before), and the > 128
binarisation shared by resizing, augmentation and the metrics."""
import os

import numpy as np
import pytest

import codext
from codext import _C


def levels_reference(arr):
    """The mask-file rules in NumPy: levels above 255 -> foreground above half the
    maximum; else clipped to 0..255; then 0 plus one value <= 128 (both present) -> 0/255."""
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
    if 0 < top <= 128 and not np.any((mask != 0) & (mask != top)) and np.any(mask == 0):
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
    yield np.full(shape, 1, np.uint8)                                       # one level: as is
    yield np.full(shape, 128, np.uint8)
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


# ---- one rule for ground-truth masks given as arrays, files or metric inputs ------------------

def two_masks():
    """Two 0/1 uint8 masks (an object each) of one size, and their 0/255 reading."""
    m = np.zeros((2, 24, 32), np.uint8)
    m[0, 4:14, 6:20] = 1
    m[1, 10:22, 2:9] = 1
    return m, m * np.uint8(255)


@pytest.mark.parametrize("masks", [two_masks()[0], two_masks()[0] * np.uint8(100)],
                         ids=["0-1", "0-100"])
def test_a_low_level_binary_mask_is_the_same_mask_everywhere(masks, tmp_path):
    """A uint8 mask of 0 and one level <= 128 is that binary mask for metrics.evaluate,
    data.from_arrays and data.load alike, never an empty one."""
    Image = pytest.importorskip("PIL.Image")
    want = (masks != 0) * np.uint8(255)
    # metrics: scored exactly as its 0/255 form (a perfect prediction scores perfectly)
    preds = [w.astype(np.float32) / 255 for w in want]
    got = codext.metrics.evaluate(preds, list(masks))
    ref = codext.metrics.evaluate(preds, list(want))
    assert got["iou"] == ref["iou"] == 1.0 and got["mae"] == 0.0 and got["sm"] == ref["sm"]
    # from_arrays: training and test masks become 0/255
    images = np.zeros(masks.shape + (3,), np.uint8)
    d = codext.data.from_arrays(images, masks, images, masks)
    assert np.array_equal(d.train.masks, want) and np.array_equal(d.test.masks, want)
    assert all(np.array_equal(f, w) for f, w in zip(d.test.masks_full, want))
    # load: mask files with these levels
    for split in ("Train", "Test"):
        for i, m in enumerate(masks):
            os.makedirs(tmp_path / "set" / split / "Image", exist_ok=True)
            os.makedirs(tmp_path / "set" / split / "GT_Object", exist_ok=True)
            Image.fromarray(images[i]).save(tmp_path / "set" / split / "Image" / f"cam_{i}.png")
            Image.fromarray(m).save(tmp_path / "set" / split / "GT_Object" / f"cam_{i}.png")
    loaded = codext.data.load(str(tmp_path / "set"), img_size=32, cache_dir=str(tmp_path / "cache"),
                              progress=False)
    assert all(np.array_equal(f, w) for f, w in zip(loaded.test.masks_full, want))
    assert loaded.train.masks.max() == 255


def test_the_array_rule_is_the_file_rule():
    """codext/_masks.py (arrays) and _C.mask_from_levels (files) agree on every uint8 case."""
    from codext import _masks
    for levels in cases():
        if levels.dtype == np.uint8:
            assert np.array_equal(_masks.as_levels(levels), _C.mask_from_levels(levels))
    stack = np.stack([c for c in cases() if c.dtype == np.uint8])
    assert np.array_equal(_masks.as_levels(stack), np.stack([_C.mask_from_levels(c) for c in stack]))
    grey = stack[0]
    assert _masks.as_levels(grey) is grey                    # nothing to change: no copy


def test_a_mask_that_is_neither_is_refused_by_from_arrays_naming_the_fix():
    masks = np.array([[[0, 1], [2, 0]]], np.uint8)           # 0/1/2: not one level
    with pytest.raises(ValueError, match=r"only 0 and 255.*\(masks > 0\)"):
        codext.data.from_arrays(np.zeros((1, 2, 2, 3), np.uint8), masks)
    masks = np.array([[[0, 1], [200, 0]]], np.uint8)         # grey levels
    with pytest.raises(ValueError, match=r"\(masks > 128\)"):
        codext.data.from_arrays(np.zeros((1, 2, 2, 3), np.uint8), masks)

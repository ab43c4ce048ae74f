"""codext's one resize (csrc/data/resize.c) against NumPy references in float64."""
import numpy as np
import pytest

import codext
from codext import _C, data


def taps(out, size):
    """PyTorch align_corners=False: source position of each output index and its neighbours."""
    s = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
    i0 = np.minimum(np.floor(s).astype(np.int64), size - 1)
    i1 = np.where(i0 < size - 1, i0 + 1, i0)
    return i0, i1, s - i0


def ref_bilinear(src, out_h, out_w):
    """src [H, W, C] -> float64 [out_h, out_w, C], unrounded."""
    a = src.astype(np.float64)
    y0, y1, wy = taps(out_h, a.shape[0])
    x0, x1, wx = taps(out_w, a.shape[1])
    wx = wx[None, :, None]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy[:, None, None]) + bottom * wy[:, None, None]


def ref_nearest(src, out_h, out_w):
    def index(out, size):
        return np.minimum(np.floor((np.arange(out) + 0.5) * size / out).astype(np.int64), size - 1)
    return src[index(out_h, src.shape[0])][:, index(out_w, src.shape[1])]


SHAPES = [((7, 5), (3, 3)), ((5, 7), (11, 13)), ((64, 48), (32, 32)), ((33, 65), (352, 17)),
          ((1, 1), (4, 6)), ((480, 640), (352, 352)), ((9, 9), (9, 9))]


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("in_hw,out_hw", SHAPES)
def test_bilinear_matches_reference(in_hw, out_hw, channels):
    rng = np.random.default_rng(hash((in_hw, out_hw, channels)) % 2**32)
    src = rng.integers(0, 256, (*in_hw, channels), dtype=np.uint8)
    got = _C.resize_image(src, *out_hw)
    assert got.dtype == np.uint8 and got.shape == (*out_hw, channels)
    ref = ref_bilinear(src, *out_hw)
    diff = np.abs(got.astype(np.float64) - np.floor(ref + 0.5))
    # float32 blending may round a value lying within ~1e-4 of a half the other way
    near_half = np.abs(ref - np.floor(ref) - 0.5) < 1e-3
    assert np.all(diff[~near_half] == 0), "rounded result differs from the float64 reference"
    assert np.all(diff <= 1)


def test_bilinear_identity_and_constant():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    assert np.array_equal(_C.resize_image(src, 13, 17), src)
    const = np.full((40, 30, 3), 77, np.uint8)
    assert np.all(_C.resize_image(const, 352, 352) == 77)
    assert np.all(_C.resize_image(const, 3, 5) == 77)


def test_bilinear_upsample_by_two_known_values():
    src = np.array([[0, 100]], np.uint8)[:, :, None]  # 1x2 -> 1x4
    # positions -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped neighbour): 0, 25, 75, 100
    assert _C.resize_image(src, 1, 4)[0, :, 0].tolist() == [0, 25, 75, 100]


@pytest.mark.parametrize("in_hw,out_hw", SHAPES)
def test_mask_nearest_then_threshold(in_hw, out_hw):
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, in_hw, dtype=np.uint8)
    got = _C.resize_mask(src, *out_hw)
    ref = np.where(ref_nearest(src, *out_hw) > 128, 255, 0)
    assert np.array_equal(got, ref)
    assert set(np.unique(got)) <= {0, 255}


def test_mask_threshold_edges():
    src = np.array([[0, 128, 129, 255]], np.uint8)
    assert _C.resize_mask(src, 1, 4).tolist() == [[0, 0, 255, 255]]


@pytest.mark.parametrize("in_hw,out_hw", SHAPES[:5])
def test_float_resize(in_hw, out_hw):
    rng = np.random.default_rng(2)
    src = rng.random((2, 3, *in_hw)).astype(np.float32)
    got = data.resize_probs(src, out_hw)
    assert got.dtype == np.float32 and got.shape == (2, 3, *out_hw)
    ref = np.stack([ref_bilinear(p[:, :, None], *out_hw)[:, :, 0] for p in src.reshape(-1, *in_hw)])
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=0, atol=2e-6)


def test_batch_equals_single_and_threads():
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (5, 31, 47, 3), dtype=np.uint8)
    masks = rng.integers(0, 256, (5, 31, 47), dtype=np.uint8)
    old = codext.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            codext.set_num_threads(threads)
            results.append((_C.resize_image(imgs, 64, 40), _C.resize_mask(masks, 64, 40),
                            _C.resize_float(masks.astype(np.float32), 20, 90)))
    finally:
        codext.set_num_threads(old)
    for a, b in zip(*results):
        assert np.array_equal(a, b)
    for i in range(5):
        assert np.array_equal(results[0][0][i], _C.resize_image(imgs[i], 64, 40))
        assert np.array_equal(results[0][1][i], _C.resize_mask(masks[i], 64, 40))


def test_out_argument_and_noncontiguous_input():
    rng = np.random.default_rng(4)
    src = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = np.zeros((2, 16, 16, 3), np.uint8)
    _C.resize_image(src, 16, 16, out=out[1])
    assert np.array_equal(out[1], _C.resize_image(src, 16, 16)) and not out[0].any()
    flipped = src[:, ::-1]  # a strided view is copied, not misread
    assert np.array_equal(_C.resize_image(flipped, 16, 16), _C.resize_image(flipped.copy(), 16, 16))


def test_bad_input():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        _C.resize_image(img.astype(np.float32), 4, 4)
    with pytest.raises(ValueError, match="dimensions"):
        _C.resize_image(np.zeros((8, 8), np.uint8), 4, 4)
    with pytest.raises(ValueError, match="out_h"):
        _C.resize_image(img, 0, 4)
    with pytest.raises(ValueError, match="shape"):
        _C.resize_image(img, 4, 4, out=np.zeros((4, 5, 3), np.uint8))
    ro = np.zeros((4, 4, 3), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _C.resize_image(img, 4, 4, out=ro)
    with pytest.raises(ValueError, match="empty"):
        _C.resize_mask(np.zeros((0, 5), np.uint8), 4, 4)
    with pytest.raises(TypeError, match="uint8"):
        _C.resize_mask(np.zeros((5, 5), bool), 4, 4)


def test_as_rgb_uint8():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(data.as_rgb_uint8(gray), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    assert np.array_equal(data.as_rgb_uint8(rgba), rgba[:, :, :3])
    f = np.full((2, 2, 3), 0.5, np.float32)
    assert np.all(data.as_rgb_uint8(f) == 128)
    assert np.all(data.as_rgb_uint8(f * 200) == 100)
    with pytest.raises(ValueError, match="NaN"):
        data.as_rgb_uint8(np.full((2, 2, 3), np.nan))
    with pytest.raises(ValueError, match=r"\[H, W"):
        data.as_rgb_uint8(np.zeros((2, 2, 2), np.uint8))

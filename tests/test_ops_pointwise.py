"""Pointwise (GELU, sigmoid, softmax, add, axpy, mul, affine), broadcast (scale_mid,
scale_outer_inner) and layout (transpose, copy_channels) ops on the CPU backend:
float64 NumPy references, finite-difference gradients and thread-count independence."""
import math

import numpy as np
import pytest

import codext
from opcheck import gradcheck, relative_error, run, run_backward

F32_ULP = 2.0 ** -23  # relative spacing of floats: a correctly rounded result is within half


@pytest.fixture
def restore_threads():
    n = codext.get_num_threads()
    yield
    codext.set_num_threads(n)


def bit_identical_across_threads(fn):
    results = []
    for n in (1, 2):
        codext.set_num_threads(n)
        results.append(fn())
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def normal_cdf(x):
    return np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in np.asarray(x, np.float64).ravel()]).reshape(np.shape(x))


def wide_values(rng, n):
    """Random values plus a dense sweep, the tails and awkward points."""
    sweep = np.linspace(-20, 20, 4001)
    special = [0.0, -0.0, 1e-30, -1e-30, 1e-40, 0.5, -0.75179, 5.0, -5.0, 9.0, -9.0, 14.1, -14.1,
               30.0, -30.0, 88.0, -88.0, 104.0, -104.0, 1e4, -1e4, 3e38, -3e38]
    return np.concatenate([3 * rng.standard_normal(n), sweep, special]).astype(np.float32)


def assert_elementwise(ours, ref, rtol, tiny=1e-37):
    """|ours - ref| <= rtol |ref| where |ref| is a normal float; tiny absolute error below."""
    ours = ours.astype(np.float64)
    err = np.abs(ours - ref)
    big = np.abs(ref) >= tiny
    assert np.all(err[big] <= rtol * np.abs(ref[big])), f"max rel err {np.max(err[big] / np.abs(ref[big])):.3g}"
    assert np.all(err[~big] <= 2 * tiny)


# ---- GELU -----------------------------------------------------------------------------

def test_gelu_forward_correctly_rounded():
    x = wide_values(np.random.default_rng(0), 5001)
    (y,) = run("gelu", [x])
    xd = x.astype(np.float64)
    ref = xd * normal_cdf(xd)
    # within about one float rounding everywhere, tails included (x Phi(x) for x << 0)
    assert_elementwise(y, ref, 1.01 * F32_ULP / 2 + 1e-9)


@pytest.mark.parametrize("n", [1, 7, 1001])
def test_gelu_odd_sizes(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    (y,) = run("gelu", [x])
    assert relative_error(y, x * normal_cdf(x)) < 1e-7


def test_gelu_backward_matches_reference():
    rng = np.random.default_rng(1)
    x = wide_values(rng, 3001)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    (dx,) = run_backward("gelu", [x], [dy])
    xd = x.astype(np.float64)
    slope = normal_cdf(xd) + xd * np.exp(-0.5 * xd * xd) / math.sqrt(2 * math.pi)
    ref = dy * slope
    err = np.abs(dx - ref)
    assert np.all(err <= 1.01 * F32_ULP / 2 * np.abs(ref) + 1e-9 * np.abs(dy))


def test_gelu_gradcheck():
    x = np.random.default_rng(2).standard_normal((4, 9)).astype(np.float32) * 2
    gradcheck("gelu", [x])


def test_gelu_threads_bit_identical(restore_threads):
    x = np.random.default_rng(3).standard_normal(100003).astype(np.float32) * 3
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    bit_identical_across_threads(lambda: run("gelu", [x]) + run_backward("gelu", [x], [dy]))


# ---- sigmoid --------------------------------------------------------------------------

def sigmoid_ref(x):
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def test_sigmoid_forward_stable():
    x = wide_values(np.random.default_rng(5), 3001)
    (y,) = run("sigmoid", [x])
    assert np.all(np.isfinite(y))
    assert_elementwise(y, sigmoid_ref(x), 1.01 * F32_ULP / 2 + 1e-9)
    (y,) = run("sigmoid", [np.array([-1e4, -200, 0, 200, 1e4], np.float32)])
    assert list(y) == [0, 0, 0.5, 1, 1]


def test_sigmoid_backward():
    rng = np.random.default_rng(6)
    x = (4 * rng.standard_normal(257)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    (dx,) = run_backward("sigmoid", [x], [dy])
    s = sigmoid_ref(x)
    assert relative_error(dx, dy * s * (1 - s)) < 1e-6
    gradcheck("sigmoid", [rng.standard_normal((3, 7)).astype(np.float32) * 2])


def test_sigmoid_threads_bit_identical(restore_threads):
    x = np.random.default_rng(7).standard_normal(100003).astype(np.float32) * 5
    dy = np.random.default_rng(8).standard_normal(x.shape).astype(np.float32)
    bit_identical_across_threads(lambda: run("sigmoid", [x]) + run_backward("sigmoid", [x], [dy]))


# ---- softmax --------------------------------------------------------------------------

def softmax_ref(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 33), (2, 3, 64)])
def test_softmax_forward(shape):
    x = (3 * np.random.default_rng(9).standard_normal(shape)).astype(np.float32)
    (y,) = run("softmax", [x])
    assert relative_error(y, softmax_ref(x)) < 1e-7
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-6)


def test_softmax_large_values():
    rng = np.random.default_rng(10)
    x = np.stack([1e4 + rng.standard_normal(9), -1e4 + rng.standard_normal(9),
                  80 * rng.standard_normal(9), np.full(9, 3e38)]).astype(np.float32)
    (y,) = run("softmax", [x])
    assert np.all(np.isfinite(y))
    ref = softmax_ref(x)
    assert_elementwise(y, ref, 4 * F32_ULP)


def test_softmax_backward():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 13)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    (dx,) = run_backward("softmax", [x], [dy])
    y = softmax_ref(x)
    ref = y * (dy - (dy * y).sum(-1, keepdims=True))
    assert relative_error(dx, ref) < 1e-6
    gradcheck("softmax", [x])
    gradcheck("softmax", [rng.standard_normal((2, 3, 5)).astype(np.float32)])


def test_softmax_threads_bit_identical(restore_threads):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3001, 29)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    bit_identical_across_threads(lambda: run("softmax", [x]) + run_backward("softmax", [x], [dy]))


# ---- add, axpy, mul, affine -----------------------------------------------------------

@pytest.mark.parametrize("n", [1, 13, 70001])
def test_arithmetic_forward(n):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((2, n)).astype(np.float32)
    assert np.array_equal(run("add", [a, b])[0], a + b)
    assert np.array_equal(run("mul", [a, b])[0], a * b)
    assert np.array_equal(run("axpy", [a, b], fargs=[0.75])[0], b + np.float32(0.75) * a)
    assert np.array_equal(run("affine", [a], fargs=[-1.0, 1.0])[0], np.float32(-1) * a + np.float32(1))
    (y,) = run("affine", [a], fargs=[0.3, 2.5])
    assert relative_error(y, 0.3 * a.astype(np.float64) + 2.5) < 1e-7


def test_arithmetic_backward():
    rng = np.random.default_rng(13)
    a, b, dy = rng.standard_normal((3, 4, 5)).astype(np.float32)
    da, db = run_backward("add", [a, b], [dy])
    assert np.array_equal(da, dy) and np.array_equal(db, dy)
    da, db = run_backward("mul", [a, b], [dy])
    assert np.array_equal(da, dy * b) and np.array_equal(db, dy * a)
    (dx,) = run_backward("affine", [a], [dy], fargs=[0.3, 2.5])
    assert np.array_equal(dx, np.float32(0.3) * dy)
    gradcheck("add", [a, b])
    gradcheck("mul", [a, b])
    gradcheck("affine", [a], fargs=[-1.5, 0.5])


def test_arithmetic_shape_mismatch():
    with pytest.raises(ValueError):
        run("add", [np.zeros(3, np.float32), np.zeros(4, np.float32)])


def test_arithmetic_threads_bit_identical(restore_threads):
    rng = np.random.default_rng(14)
    a, b, dy = rng.standard_normal((3, 200001)).astype(np.float32)
    bit_identical_across_threads(lambda: run("add", [a, b]) + run("mul", [a, b]) + run_backward("mul", [a, b], [dy])
                                 + run("axpy", [a, b], fargs=[0.3]) + run("affine", [a], fargs=[0.3, 0.1]))


# ---- scale_mid, scale_outer_inner -----------------------------------------------------

SCALE_SHAPES = [(5, 3, 1), (2, 4, 9), (1, 3, 50), (3, 1, 7), (7, 11, 13)]


@pytest.mark.parametrize("shape", SCALE_SHAPES)
def test_scale_mid(shape):
    rng = np.random.default_rng(15)
    outer, mid, inner = shape
    x = rng.standard_normal(shape).astype(np.float32)
    s = rng.standard_normal(mid).astype(np.float32)
    (y,) = run("scale_mid", [x, s])
    assert np.array_equal(y, x * s[None, :, None])
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, ds = run_backward("scale_mid", [x, s], [dy])
    assert np.array_equal(dx, dy * s[None, :, None])
    ref = (dy.astype(np.float64) * x).sum((0, 2))
    np.testing.assert_allclose(ds, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    gradcheck("scale_mid", [x, s])


@pytest.mark.parametrize("shape", SCALE_SHAPES + [(2, 3, 300)])
def test_scale_outer_inner(shape):
    rng = np.random.default_rng(16)
    outer, mid, inner = shape
    x = rng.standard_normal(shape).astype(np.float32)
    s = rng.standard_normal((outer, inner)).astype(np.float32)
    (y,) = run("scale_outer_inner", [x, s])
    assert np.array_equal(y, x * s[:, None, :])
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, ds = run_backward("scale_outer_inner", [x, s], [dy])
    assert np.array_equal(dx, dy * s[:, None, :])
    ref = (dy.astype(np.float64) * x).sum(1)
    np.testing.assert_allclose(ds, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    if x.size <= 2000:
        gradcheck("scale_outer_inner", [x, s])


@pytest.mark.parametrize("shape", [(3000, 8, 1), (2, 5, 20000), (1, 6, 30000), (4, 16, 3000)])
def test_scale_threads_bit_identical(restore_threads, shape):
    rng = np.random.default_rng(17)
    x, dy = rng.standard_normal((2,) + shape).astype(np.float32)
    s_mid = rng.standard_normal(shape[1]).astype(np.float32)
    s_oi = rng.standard_normal((shape[0], shape[2])).astype(np.float32)
    bit_identical_across_threads(lambda: run("scale_mid", [x, s_mid]) + run_backward("scale_mid", [x, s_mid], [dy])
                                 + run("scale_outer_inner", [x, s_oi])
                                 + run_backward("scale_outer_inner", [x, s_oi], [dy]))
    # the blocked reduction is accurate too
    _, ds = run_backward("scale_mid", [x, s_mid], [dy])
    ref = (dy.astype(np.float64) * x).sum((0, 2))
    np.testing.assert_allclose(ds, ref, rtol=1e-6, atol=1e-7 * np.abs(dy * x).sum())


# ---- transpose, copy_channels ---------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (1, 70, 45), (3, 33, 64)])
def test_transpose(shape):
    rng = np.random.default_rng(18)
    x = rng.standard_normal(shape).astype(np.float32)
    (y,) = run("transpose", [x])
    assert np.array_equal(y, x.transpose(0, 2, 1))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    (dx,) = run_backward("transpose", [x], [dy])
    assert np.array_equal(dx, dy.transpose(0, 2, 1))


def test_transpose_gradcheck_and_threads(restore_threads):
    rng = np.random.default_rng(19)
    gradcheck("transpose", [rng.standard_normal((2, 3, 4)).astype(np.float32)])
    x = rng.standard_normal((4, 80, 1000)).astype(np.float32)
    dy = rng.standard_normal((4, 1000, 80)).astype(np.float32)
    bit_identical_across_threads(lambda: run("transpose", [x]) + run_backward("transpose", [x], [dy]))


@pytest.mark.parametrize("accumulate", [0, 1])
@pytest.mark.parametrize("src_shape,dst_shape,n,src_off,dst_off", [
    ((2, 5, 3, 4), (2, 7, 3, 4), 3, 1, 2),   # concat-style copy into a slice
    ((2, 7, 12), (2, 3, 12), 3, 4, 0),       # split-style copy out of a slice
    ((1, 2, 1, 1), (1, 2, 1, 1), 2, 0, 0),
    ((3, 4, 5), (3, 4, 5), 0, 0, 0),         # nothing to copy
])
def test_copy_channels(src_shape, dst_shape, n, src_off, dst_off, accumulate):
    rng = np.random.default_rng(20)
    src = rng.standard_normal(src_shape).astype(np.float32)
    dst = rng.standard_normal(dst_shape).astype(np.float32)
    (out,) = run("copy_channels", [src, dst], iargs=[n, src_off, dst_off, accumulate])
    ref = dst.copy()
    block = src[:, src_off:src_off + n]
    if accumulate:
        ref[:, dst_off:dst_off + n] += block
    else:
        ref[:, dst_off:dst_off + n] = block
    assert np.array_equal(out, ref)


def test_copy_channels_out_of_range():
    src, dst = np.zeros((1, 4, 3), np.float32), np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError):
        run("copy_channels", [src, dst], iargs=[3, 0, 0, 0])
    with pytest.raises(ValueError):
        run("copy_channels", [src, dst], iargs=[2, 3, 0, 0])


def test_copy_channels_threads_bit_identical(restore_threads):
    rng = np.random.default_rng(21)
    src = rng.standard_normal((4, 64, 4000)).astype(np.float32)
    dst = rng.standard_normal((4, 96, 4000)).astype(np.float32)
    bit_identical_across_threads(lambda: run("copy_channels", [src, dst], iargs=[64, 0, 32, 1]))

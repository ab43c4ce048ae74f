"""Pooling and resizing ops (csrc/cpu/pool.c, csrc/cpu/resize.c) against NumPy float64.

Every op here is linear and separable, so each reference is a pair of per-axis matrices
Mh [out_h, in_h], Mw [out_w, in_w] built straight from PyTorch's rule: forward
y = Mh x Mw^T, backward dx = Mh^T dy Mw (checked directly, besides gradcheck).
"""
import numpy as np
import pytest

import codext
from opcheck import gradcheck, relative_error, run, run_backward


# ---- references -------------------------------------------------------------------------

def avgpool_axis(n_in, k, stride, pad, count_include_pad):
    """PyTorch AvgPool2d (ceil_mode False) along one axis: window [o*stride - pad, +k),
    divisor factor the padded window clipped to n_in + pad (count_include_pad) or the
    valid pixels. The 2-D divisor is the product of the two axis factors. [n_out, n_in]"""
    n_out = (n_in + 2 * pad - k) // stride + 1
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        start = o * stride - pad
        end = min(start + k, n_in + pad)
        lo, hi = max(start, 0), min(start + k, n_in)
        m[o, lo:hi] = 1.0 / ((end - start) if count_include_pad else (hi - lo))
    return m


def adaptive_axis(n_in, n_out):
    """Bins [floor(o*in/out), ceil((o+1)*in/out)). [n_out, n_in]"""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        lo, hi = (o * n_in) // n_out, -(-((o + 1) * n_in) // n_out)
        m[o, lo:hi] = 1.0 / (hi - lo)
    return m


def bilinear_axis(n_in, n_out):
    """PyTorch's upsample_bilinear2d weights along one axis (align_corners=False), with
    the index and lambda arithmetic done in float32 as PyTorch does. [n_out, n_in]"""
    f = np.float32
    w = np.zeros((n_out, n_in))
    scale = f(n_in) / f(n_out)
    for o in range(n_out):
        if n_in == n_out:
            w[o, o] = 1.0
            continue
        src = f(scale * f(f(o) + f(0.5))) - f(0.5)
        src = max(src, f(0.0))
        i0 = min(int(np.floor(src)), n_in - 1)
        l1 = min(max(f(src - f(i0)), f(0.0)), f(1.0))
        l0 = f(1.0) - l1
        i1 = i0 + (1 if i0 < n_in - 1 else 0)
        w[o, i0] += l0
        w[o, i1] += l1
    return w


def apply(axes, x):
    """y = Mh x Mw^T on every plane."""
    mh, mw = axes
    return mh @ x.astype(np.float64) @ mw.T


def apply_transpose(axes, dy):
    """dx = Mh^T dy Mw on every plane."""
    mh, mw = axes
    return mh.T @ dy.astype(np.float64) @ mw


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_linear(name, x, iargs, axes, tol=1e-5):
    (y,) = run(name, [x], iargs)
    assert relative_error(y, apply(axes, x)) <= tol
    dy = rand(y.shape, seed=1)
    (dx,) = run_backward(name, [x], [dy], iargs)
    assert relative_error(dx, apply_transpose(axes, dy)) <= tol


def linear_gradcheck(name, x, iargs):
    # The op is linear, so central differences are exact for any step: a large step
    # keeps the float32 rounding of the outputs from swamping the difference (windows of
    # 31x31 make each output move by only h/961).
    gradcheck(name, [x], iargs, h=1.0)


# ---- avgpool2d ----------------------------------------------------------------------------

AVGPOOL_CASES = [
    # (shape, k, stride, pad, count_include_pad)
    ((2, 3, 7, 9), 3, 1, 1, 1),
    ((2, 3, 7, 9), 3, 1, 1, 0),
    ((1, 2, 11, 8), 7, 1, 3, 0),
    ((1, 2, 10, 13), 9, 1, 4, 0),
    ((1, 2, 6, 5), 9, 1, 4, 0),  # window wider than the map
    ((2, 2, 8, 6), 2, 2, 0, 1),
    ((1, 3, 9, 7), 3, 2, 1, 1),
    ((1, 3, 9, 7), 3, 2, 1, 0),
    ((1, 2, 13, 11), 5, 3, 2, 1),
    ((1, 2, 13, 11), 5, 3, 2, 0),
    ((1, 1, 40, 37), 31, 1, 15, 1),  # the structure loss's window
    ((1, 1, 1, 1), 1, 1, 0, 1),
]


@pytest.mark.parametrize("shape,k,stride,pad,incl", AVGPOOL_CASES)
def test_avgpool2d_matches_reference(shape, k, stride, pad, incl):
    x = rand(shape)
    axes = (avgpool_axis(shape[2], k, stride, pad, incl), avgpool_axis(shape[3], k, stride, pad, incl))
    check_linear("avgpool2d", x, (k, stride, pad, incl), axes)


def test_avgpool2d_known_values():
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    (y,) = run("avgpool2d", [x], (3, 1, 1, 1))
    assert y[0, 0, 0, 0] == pytest.approx((1 + 2 + 4 + 5) / 9)
    (y,) = run("avgpool2d", [x], (3, 1, 1, 0))
    assert y[0, 0, 0, 0] == pytest.approx((1 + 2 + 4 + 5) / 4)
    assert y[0, 0, 1, 1] == pytest.approx(5.0)


def test_avgpool2d_large_map_accuracy():
    # Prefix sums over a 352-wide map: still float32-accurate.
    x = (rand((1, 1, 96, 352)) + 3.0).astype(np.float32)
    axes = (avgpool_axis(96, 31, 1, 15, 1), avgpool_axis(352, 31, 1, 15, 1))
    (y,) = run("avgpool2d", [x], (31, 1, 15, 1))
    assert relative_error(y, apply(axes, x)) <= 1e-6


@pytest.mark.parametrize("shape,k,stride,pad,incl", [AVGPOOL_CASES[0], AVGPOOL_CASES[3],
                                                      AVGPOOL_CASES[9], AVGPOOL_CASES[10]])
def test_avgpool2d_gradcheck(shape, k, stride, pad, incl):
    linear_gradcheck("avgpool2d", rand(shape), (k, stride, pad, incl))


def test_avgpool2d_rejects_bad_padding():
    with pytest.raises(ValueError):
        run("avgpool2d", [rand((1, 1, 5, 5))], (3, 1, 2, 1))


# ---- adaptive avgpool ---------------------------------------------------------------------

ADAPTIVE_CASES = [
    ((2, 3, 7, 7), (4, 4)),   # overlapping bins
    ((1, 2, 5, 5), (3, 3)),
    ((1, 2, 11, 9), (1, 1)),
    ((1, 2, 11, 9), (2, 2)),
    ((2, 2, 11, 9), (4, 4)),
    ((1, 2, 7, 5), (4, 3)),
    ((1, 1, 3, 2), (5, 4)),   # out > in
    ((1, 1, 6, 6), (6, 6)),
    ((1, 1, 1, 1), (2, 3)),
]


@pytest.mark.parametrize("shape,out_hw", ADAPTIVE_CASES)
def test_adaptive_avgpool2d_matches_reference(shape, out_hw):
    x = rand(shape)
    axes = (adaptive_axis(shape[2], out_hw[0]), adaptive_axis(shape[3], out_hw[1]))
    check_linear("adaptive_avgpool2d", x, out_hw, axes)


@pytest.mark.parametrize("shape,out_hw", [ADAPTIVE_CASES[0], ADAPTIVE_CASES[1], ADAPTIVE_CASES[6]])
def test_adaptive_avgpool2d_gradcheck(shape, out_hw):
    linear_gradcheck("adaptive_avgpool2d", rand(shape), out_hw)


# ---- global avgpool -----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 16, 9)])
def test_global_avgpool(shape):
    x = rand(shape)
    (y,) = run("global_avgpool", [x])
    assert y.shape == shape[:2]
    assert relative_error(y, x.astype(np.float64).mean(axis=(2, 3))) <= 1e-6
    dy = rand(shape[:2], seed=1)
    (dx,) = run_backward("global_avgpool", [x], [dy])
    ref = np.broadcast_to(dy.astype(np.float64)[:, :, None, None] / (shape[2] * shape[3]), shape)
    assert relative_error(dx, ref) <= 1e-6
    linear_gradcheck("global_avgpool", x, ())


# ---- bilinear -----------------------------------------------------------------------------

RESIZE_CASES = [
    ((1, 2, 4, 5), (8, 10)),    # x2 up
    ((2, 3, 7, 5), (14, 10)),
    ((1, 2, 5, 7), (13, 11)),   # odd factors
    ((1, 2, 12, 10), (5, 7)),   # down, no antialias
    ((1, 2, 9, 16), (4, 4)),
    ((1, 2, 6, 6), (6, 6)),     # identity
    ((1, 2, 6, 4), (3, 9)),     # down one axis, up the other
    ((2, 2, 1, 1), (4, 6)),     # the context expert's 1x1 back to size
    ((1, 1, 2, 2), (9, 7)),
    ((1, 1, 4, 4), (1, 1)),
]


@pytest.mark.parametrize("shape,out_hw", RESIZE_CASES)
def test_resize_bilinear_matches_reference(shape, out_hw):
    x = rand(shape)
    axes = (bilinear_axis(shape[2], out_hw[0]), bilinear_axis(shape[3], out_hw[1]))
    check_linear("resize_bilinear", x, out_hw, axes)


def test_resize_bilinear_known_values():
    # torch.nn.Upsample(scale_factor=2, mode='bilinear') documentation example.
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    (y,) = run("resize_bilinear", [x], (4, 4))
    expected = np.array([[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5],
                         [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]])
    np.testing.assert_array_equal(y[0, 0], expected.astype(np.float32))


@pytest.mark.parametrize("shape,out_hw", [RESIZE_CASES[2], RESIZE_CASES[3], RESIZE_CASES[6],
                                           RESIZE_CASES[7]])
def test_resize_bilinear_gradcheck(shape, out_hw):
    linear_gradcheck("resize_bilinear", rand(shape), out_hw)


# ---- thread-count independence ------------------------------------------------------------

THREAD_CASES = [
    ("avgpool2d", (4, 8, 33, 35), (3, 1, 1, 0)),
    ("avgpool2d", (2, 2, 64, 70), (31, 1, 15, 1)),
    ("avgpool2d", (4, 8, 33, 35), (5, 3, 2, 1)),
    ("adaptive_avgpool2d", (4, 16, 29, 31), (4, 4)),
    ("resize_bilinear", (2, 8, 23, 25), (88, 90)),
    ("resize_bilinear", (2, 8, 90, 87), (23, 25)),
]


@pytest.mark.parametrize("name,shape,iargs", THREAD_CASES + [("global_avgpool", (8, 64, 33, 31), ())])
def test_bit_identical_across_thread_counts(name, shape, iargs):
    x = rand(shape)
    results = []
    before = codext.get_num_threads()
    try:
        for n in (1, 2):
            codext.set_num_threads(n)
            (y,) = run(name, [x], iargs)
            dy = rand(y.shape, seed=2)
            (dx,) = run_backward(name, [x], [dy], iargs)
            results.append((y, dx))
    finally:
        codext.set_num_threads(before)
    for a, b in zip(results[0], results[1]):
        assert a.tobytes() == b.tobytes()

"""conv2d on the CPU: every path (pointwise GEMM, implicit-im2col GEMM, disjoint-window
scatter, transposed-correlation input gradient, channel-wise direct loops) against a
float64 NumPy reference, finite differences and the thread-count contract."""
import numpy as np
import pytest

import codext
from opcheck import gradcheck, relative_error, run, run_backward


def out_size(n, k, stride, pad, dil):
    return (n + 2 * pad - dil * (k - 1) - 1) // stride + 1


def windows(x, kh, kw, stride, ph, pw, dil):
    """Yields (i, j, view into the padded x, slices) for each filter tap."""
    B, C, H, W = x.shape
    oh, ow = out_size(H, kh, stride, ph, dil), out_size(W, kw, stride, pw, dil)
    xp = np.zeros((B, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dil, i * dil + stride * (oh - 1) + 1, stride)
            cols = slice(j * dil, j * dil + stride * (ow - 1) + 1, stride)
            yield i, j, xp, rows, cols


def conv_ref(x, w, b, stride, ph, pw, dil, groups):
    x, w = x.astype(np.float64), w.astype(np.float64)
    O, Cg, kh, kw = w.shape
    Og = O // groups
    y = 0.0
    parts = []
    for g in range(groups):
        acc = 0.0
        for i, j, xp, rows, cols in windows(x[:, g * Cg:(g + 1) * Cg], kh, kw, stride, ph, pw, dil):
            acc = acc + np.einsum("bchw,oc->bohw", xp[:, :, rows, cols], w[g * Og:(g + 1) * Og, :, i, j])
        parts.append(acc)
    y = np.concatenate(parts, axis=1)
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


def conv_backward_ref(x, w, dy, stride, ph, pw, dil, groups):
    x, w, dy = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    B, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    dxp = np.zeros((B, C, H + 2 * ph, W + 2 * pw))
    dw = np.zeros_like(w)
    for g in range(groups):
        dyg = dy[:, g * Og:(g + 1) * Og]
        for i, j, xp, rows, cols in windows(x[:, g * Cg:(g + 1) * Cg], kh, kw, stride, ph, pw, dil):
            dw[g * Og:(g + 1) * Og, :, i, j] += np.einsum("bchw,bohw->oc", xp[:, :, rows, cols], dyg)
            dxp[:, g * Cg:(g + 1) * Cg, rows, cols] += np.einsum("bohw,oc->bchw", dyg, w[g * Og:(g + 1) * Og, :, i, j])
    return dxp[:, :, ph:ph + H, pw:pw + W], dw, dy.sum(axis=(0, 2, 3))


# (batch, in_ch, h, w, out_ch, k_h, k_w, stride, pad_h, pad_w, dilation, groups)
CONFIGS = [
    (2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1),    # general 3x3
    (1, 4, 8, 8, 6, 1, 1, 1, 0, 0, 1, 1),     # pointwise
    (3, 5, 7, 6, 9, 1, 1, 1, 0, 0, 1, 1),     # pointwise, odd sizes
    (2, 3, 8, 12, 7, 4, 4, 4, 0, 0, 1, 1),    # stem-like patchify 4x4/4
    (2, 4, 9, 7, 6, 2, 2, 2, 0, 0, 1, 1),     # downsample-like 2x2/2 (odd input)
    (2, 4, 9, 7, 6, 2, 2, 2, 0, 1, 1, 2),     # disjoint windows with padding, 2 groups
    (2, 3, 9, 9, 5, 1, 1, 2, 1, 0, 1, 1),     # strided pointwise with padding
    (1, 3, 7, 9, 4, 3, 3, 2, 1, 0, 1, 1),     # overlapping stride 2, asymmetric padding
    (2, 4, 11, 10, 6, 3, 5, 2, 2, 1, 2, 2),   # non-square kernel, dilation 2, stride 2
    (1, 2, 13, 11, 3, 2, 2, 1, 2, 0, 1, 1),   # even kernel, stride 1
    (2, 6, 10, 9, 6, 3, 3, 1, 1, 1, 1, 6),    # depthwise 3x3
    (2, 5, 12, 13, 5, 7, 7, 1, 3, 3, 1, 5),   # depthwise 7x7
    (1, 3, 15, 14, 3, 9, 9, 1, 4, 4, 1, 3),   # depthwise 9x9
    (1, 4, 11, 10, 4, 5, 5, 1, 2, 2, 1, 4),   # depthwise 5x5
    (2, 4, 17, 15, 4, 3, 3, 1, 4, 4, 4, 4),   # depthwise dilation 4
    (1, 2, 20, 19, 2, 3, 3, 1, 8, 8, 8, 2),   # depthwise dilation 8
    (2, 3, 9, 9, 3, 3, 3, 1, 2, 2, 2, 3),     # depthwise dilation 2
    (2, 4, 9, 9, 4, 5, 5, 2, 2, 2, 1, 4),     # depthwise stride 2
    (1, 3, 11, 13, 3, 3, 3, 4, 1, 2, 1, 3),   # depthwise stride 4, asymmetric padding
    (1, 3, 6, 7, 3, 3, 3, 1, 4, 0, 1, 3),     # depthwise, padding larger than the kernel
    (2, 4, 9, 9, 12, 3, 3, 1, 1, 1, 1, 4),    # channel multiplier 3 (the edge expert)
    (1, 2, 8, 7, 6, 3, 3, 2, 0, 1, 1, 2),     # multiplier 3, stride 2
    (2, 4, 8, 9, 6, 3, 3, 1, 1, 1, 1, 2),     # 2 groups
    (3, 2, 5, 5, 4, 3, 3, 1, 0, 0, 1, 1),     # batch 3, no padding
    (1, 1, 6, 7, 3, 3, 3, 1, 1, 1, 1, 1),     # single input channel (channel-wise path)
    (2, 3, 9, 10, 4, 3, 3, 1, 3, 2, 1, 1),    # padding 3 / 2
    (1, 2, 7, 7, 3, 2, 3, 3, 1, 2, 1, 1),     # stride 3, non-square kernel
]


def make(cfg, seed=0, bias=True):
    B, C, H, W, O, kh, kw, s, ph, pw, d, g = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    w = rng.standard_normal((O, C // g, kh, kw)).astype(np.float32)
    inputs = [x, w] + ([rng.standard_normal(O).astype(np.float32)] if bias else [])
    return inputs, [s, ph, pw, d, g]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_conv_forward_and_backward_match_reference(cfg):
    inputs, iargs = make(cfg)
    x, w, b = inputs
    y = run("conv2d", inputs, iargs)[0]
    assert relative_error(y, conv_ref(x, w, b, *iargs)) <= 1e-5
    y_nobias = run("conv2d", [x, w], iargs)[0]
    assert relative_error(y_nobias, conv_ref(x, w, None, *iargs)) <= 1e-5

    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    dx, dw, db = run_backward("conv2d", inputs, [dy], iargs)
    dx_ref, dw_ref, db_ref = conv_backward_ref(x, w, dy, *iargs)
    assert relative_error(dx, dx_ref) <= 1e-5
    assert relative_error(dw, dw_ref) <= 1e-5
    assert relative_error(db, db_ref) <= 1e-5
    dx2, dw2 = run_backward("conv2d", [x, w], [dy], iargs)
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dw, dw2)


GRAD_CONFIGS = [
    (1, 2, 5, 6, 3, 3, 3, 1, 1, 1, 1, 1),     # general
    (2, 3, 4, 5, 2, 1, 1, 1, 0, 0, 1, 1),     # pointwise
    (1, 2, 8, 8, 3, 4, 4, 4, 0, 0, 1, 1),     # patchify
    (1, 2, 7, 6, 3, 3, 3, 2, 1, 0, 1, 1),     # overlapping stride 2
    (1, 4, 6, 7, 4, 2, 3, 1, 1, 0, 1, 2),     # 2 groups
    (2, 2, 7, 6, 2, 3, 3, 1, 2, 2, 2, 2),     # depthwise dilated
    (1, 2, 7, 7, 2, 5, 5, 2, 2, 2, 1, 2),     # depthwise stride 2
    (1, 2, 5, 5, 6, 3, 3, 1, 1, 1, 1, 2),     # multiplier 3
]


@pytest.mark.parametrize("cfg", GRAD_CONFIGS, ids=[str(c) for c in GRAD_CONFIGS])
def test_conv_gradcheck(cfg):
    inputs, iargs = make(cfg, seed=2)
    # conv2d is linear in each input on its own, so central differences have no
    # truncation error: a large step only shrinks the float32 rounding noise.
    gradcheck("conv2d", inputs, iargs, h=0.5)


@pytest.fixture
def restore_threads():
    saved = codext.get_num_threads()
    yield
    codext.set_num_threads(saved)


THREAD_CONFIGS = [
    (3, 16, 20, 22, 24, 3, 3, 1, 1, 1, 1, 1),    # implicit im2col, transposed dx
    (2, 24, 18, 17, 40, 1, 1, 1, 0, 0, 1, 1),    # pointwise
    (2, 8, 24, 28, 32, 4, 4, 4, 0, 0, 1, 1),     # patchify (scatter dx)
    (3, 16, 19, 21, 16, 7, 7, 1, 3, 3, 1, 16),   # depthwise
    (2, 8, 17, 15, 24, 3, 3, 1, 1, 1, 1, 8),     # multiplier 3
]


@pytest.mark.parametrize("cfg", THREAD_CONFIGS, ids=[str(c) for c in THREAD_CONFIGS])
def test_conv_thread_count_does_not_change_bits(cfg, restore_threads):
    inputs, iargs = make(cfg, seed=3)
    results = []
    for threads in (1, 2, 3):
        codext.set_num_threads(threads)
        y = run("conv2d", inputs, iargs)[0]
        dy = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
        results.append([y] + run_backward("conv2d", inputs, [dy], iargs))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_conv_rejects_bad_arguments():
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError):  # w has the wrong number of input channels for groups
        run("conv2d", [x, np.zeros((4, 3, 3, 3), np.float32)], [1, 1, 1, 1, 2])
    with pytest.raises(ValueError):  # empty output
        run("conv2d", [x, np.zeros((4, 4, 7, 7), np.float32)], [1, 0, 0, 1, 1])
    with pytest.raises(ValueError):  # bias of the wrong size
        run("conv2d", [x, np.zeros((4, 4, 3, 3), np.float32), np.zeros(3, np.float32)],
            [1, 1, 1, 1, 1])

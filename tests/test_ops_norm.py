"""LayerNorm (channels-last), LayerNorm2d (NCHW) and L2 normalisation on the CPU backend:
float64 NumPy references, finite-difference gradients and thread-count independence."""
import numpy as np
import pytest

import codext
from opcheck import gradcheck, relative_error, run, run_backward

EPS = 1e-6


@pytest.fixture
def restore_threads():
    n = codext.get_num_threads()
    yield
    codext.set_num_threads(n)


def layernorm_ref(x, w, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def layernorm_grads_ref(x, w, dy, eps):
    """dx, dweight, dbias of sum(dy * layernorm(x)) in float64."""
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    axes = tuple(range(x.ndim - 1))
    return dx, (dy * xhat).sum(axes), dy.sum(axes)


def params(rng, n):
    return (1 + 0.3 * rng.standard_normal(n)).astype(np.float32), (0.2 * rng.standard_normal(n)).astype(np.float32)


# ---- layernorm ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (13, 80), (3, 4, 33), (40, 584)])
def test_layernorm_forward(shape):
    rng = np.random.default_rng(1)
    # an offset mean: the two-pass variance must not lose digits to cancellation
    x = (3 + 0.5 * rng.standard_normal(shape)).astype(np.float32)
    w, b = params(rng, shape[-1])
    (y,) = run("layernorm", [x, w, b], fargs=[EPS])
    assert y.shape == x.shape and y.dtype == np.float32
    assert relative_error(y, layernorm_ref(x, w, b, EPS)) < 1e-6


def test_layernorm_backward_matches_reference():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 29)).astype(np.float32)
    w, b = params(rng, 29)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dw, db = run_backward("layernorm", [x, w, b], [dy], fargs=[EPS])
    rdx, rdw, rdb = layernorm_grads_ref(x, w, dy, EPS)
    assert relative_error(dx, rdx) < 1e-6
    assert relative_error(dw, rdw) < 1e-6
    assert relative_error(db, rdb) < 1e-6


@pytest.mark.parametrize("shape", [(6, 10), (3, 2, 7)])
def test_layernorm_gradcheck(shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = params(rng, shape[-1])
    gradcheck("layernorm", [x, w, b], fargs=[EPS])


def test_layernorm_threads_bit_identical(restore_threads):
    rng = np.random.default_rng(4)
    # 3000 rows: many reduction blocks for dweight/dbias
    x = rng.standard_normal((3000, 40)).astype(np.float32)
    w, b = params(rng, 40)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for n in (1, 2):
        codext.set_num_threads(n)
        results.append(run("layernorm", [x, w, b], fargs=[EPS]) + run_backward("layernorm", [x, w, b], [dy], fargs=[EPS]))
    for a, b_ in zip(*results):
        assert np.array_equal(a, b_)


def test_layernorm_rejects_bad_weight():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError):
        run("layernorm", [x, np.ones(5, np.float32), np.zeros(4, np.float32)], fargs=[EPS])


# ---- layernorm2d ----------------------------------------------------------------------

def layernorm2d_ref(x, w, b, eps):
    shape = x.shape
    x3 = x.reshape(shape[0], shape[1], -1).transpose(0, 2, 1)
    y = layernorm_ref(x3, w, b, eps)
    return y.transpose(0, 2, 1).reshape(shape)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 80, 4, 4), (2, 16, 17), (2, 8, 20, 30), (1, 584, 3, 3)])
def test_layernorm2d_forward(shape):
    rng = np.random.default_rng(5)
    x = (-2 + rng.standard_normal(shape)).astype(np.float32)
    w, b = params(rng, shape[1])
    (y,) = run("layernorm2d", [x, w, b], fargs=[EPS])
    assert y.shape == x.shape
    assert relative_error(y, layernorm2d_ref(x, w, b, EPS)) < 1e-6


def test_layernorm2d_backward_matches_reference():
    rng = np.random.default_rng(6)
    shape = (2, 12, 19, 23)  # 437 pixels: two tiles, the second partial
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = params(rng, 12)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, dw, db = run_backward("layernorm2d", [x, w, b], [dy], fargs=[EPS])
    to_rows = lambda a: a.reshape(2, 12, -1).transpose(0, 2, 1)
    rdx, rdw, rdb = layernorm_grads_ref(to_rows(x), w, to_rows(dy), EPS)
    assert relative_error(dx, rdx.transpose(0, 2, 1).reshape(shape)) < 1e-6
    assert relative_error(dw, rdw) < 1e-6
    assert relative_error(db, rdb) < 1e-6


@pytest.mark.parametrize("shape", [(2, 5, 3, 3), (1, 3, 7)])
def test_layernorm2d_gradcheck(shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = params(rng, shape[1])
    gradcheck("layernorm2d", [x, w, b], fargs=[EPS])


def test_layernorm2d_threads_bit_identical(restore_threads):
    rng = np.random.default_rng(8)
    shape = (3, 24, 40, 40)
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = params(rng, 24)
    dy = rng.standard_normal(shape).astype(np.float32)
    results = []
    for n in (1, 2):
        codext.set_num_threads(n)
        results.append(run("layernorm2d", [x, w, b], fargs=[EPS]) + run_backward("layernorm2d", [x, w, b], [dy], fargs=[EPS]))
    for a, b_ in zip(*results):
        assert np.array_equal(a, b_)


# ---- l2norm ---------------------------------------------------------------------------

def l2norm_ref(x, eps):
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (3, 5, 64)])
def test_l2norm_forward(shape):
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    (y,) = run("l2norm", [x], fargs=[1e-12])
    assert relative_error(y, l2norm_ref(x, 1e-12)) < 1e-6


def test_l2norm_eps_branch():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    x[1] = rng.standard_normal(6) * 1e-14  # norm ~2e-14 < eps: y = x / eps
    x[2] = 0.0
    eps = 1e-12
    (y,) = run("l2norm", [x], fargs=[eps])
    assert relative_error(y, l2norm_ref(x, eps)) < 1e-6
    np.testing.assert_allclose(y[1], x[1].astype(np.float64) / eps, rtol=1e-6)
    assert np.all(y[2] == 0)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    (dx,) = run_backward("l2norm", [x], [dy], fargs=[eps])
    np.testing.assert_allclose(dx[1:], dy[1:].astype(np.float64) / eps, rtol=1e-6)
    n = np.linalg.norm(x[0].astype(np.float64))
    ref0 = (dy[0] - x[0] * np.dot(x[0], dy[0]) / n**2) / n
    np.testing.assert_allclose(dx[0], ref0, rtol=1e-5, atol=1e-6)


def test_l2norm_gradcheck_both_branches():
    # eps = 1: row 0 (norm ~0.3) is in the x/eps branch, row 1 (norm ~4) in x/||x||;
    # finite-difference steps (~0.01) do not move either row across the branch point.
    # (Norms of order 1 keep the float rounding of y small next to dy/dx ~ 1/norm.)
    rng = np.random.default_rng(11)
    x = np.stack([0.1 * rng.standard_normal(7), 1.5 * rng.standard_normal(7)]).astype(np.float32)
    norms = np.linalg.norm(x, axis=1)
    assert norms[0] < 0.7 and norms[1] > 1.5
    gradcheck("l2norm", [x], fargs=[1.0])
    gradcheck("l2norm", [rng.standard_normal((3, 5)).astype(np.float32)], fargs=[1e-12])


def test_l2norm_threads_bit_identical(restore_threads):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2000, 33)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for n in (1, 2):
        codext.set_num_threads(n)
        results.append(run("l2norm", [x], fargs=[1e-12]) + run_backward("l2norm", [x], [dy], fargs=[1e-12]))
    for a, b in zip(*results):
        assert np.array_equal(a, b)

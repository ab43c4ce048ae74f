"""The GEMM behind the CPU ops ("gemm") and the linear layer ("linear")."""
import numpy as np
import pytest

import codext
from codext import _C
from opcheck import gradcheck, relative_error, run, run_backward


def gemm(A, B, C, trans_a, trans_b, alpha, beta, isa=0):
    iargs = [trans_a, trans_b] + ([isa] if isa else [])
    return run("gemm", [A, B, C], iargs, [alpha, beta])[0]


def gemm_ref(A, B, C, trans_a, trans_b, alpha, beta):
    a = A.astype(np.float64).T if trans_a else A.astype(np.float64)
    b = B.astype(np.float64).T if trans_b else B.astype(np.float64)
    out = alpha * (a @ b)
    return out + beta * C.astype(np.float64) if beta != 0 else out


def operands(rng, M, N, K, trans_a, trans_b):
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    C = rng.standard_normal((M, N)).astype(np.float32)
    return A, B, C


def available_isas():
    levels = []
    A, B, C = operands(np.random.default_rng(0), 2, 2, 2, 0, 0)
    for isa in (1, 2, 3):
        try:
            gemm(A, B, C, 0, 0, 1.0, 0.0, isa)
            levels.append(isa)
        except ValueError:
            pass
    return levels


# Odd sizes: 1x1, not multiples of any micro-tile (4/6/12/24 x 16/32), K spanning several
# K blocks (320), tall, wide, tiny K.
SHAPES = [(1, 1, 1), (7, 13, 5), (37, 45, 29), (100, 70, 700), (3, 200, 2), (130, 3, 17),
          (25, 33, 1000), (64, 96, 320)]


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_matches_numpy(M, N, K, trans_a, trans_b):
    rng = np.random.default_rng(M * 1000 + N + K)
    A, B, C = operands(rng, M, N, K, trans_a, trans_b)
    for alpha, beta in [(1.0, 0.0), (1.0, 1.0), (0.5, -2.0)]:
        out = gemm(A, B, C, trans_a, trans_b, alpha, beta)
        assert relative_error(out, gemm_ref(A, B, C, trans_a, trans_b, alpha, beta)) <= 1e-5


def test_gemm_beta_zero_does_not_read_c():
    rng = np.random.default_rng(1)
    A, B, _ = operands(rng, 19, 21, 23, 0, 0)
    C = np.full((19, 21), np.nan, dtype=np.float32)
    out = gemm(A, B, C, 0, 0, 1.0, 0.0)
    assert np.all(np.isfinite(out))
    assert relative_error(out, A.astype(np.float64) @ B) <= 1e-5


def test_gemm_without_c():
    rng = np.random.default_rng(11)
    A, B, _ = operands(rng, 9, 70, 41, 1, 0)
    out = run("gemm", [A, B], [1, 0], [2.0, 5.0])[0]
    assert relative_error(out, 2.0 * (A.astype(np.float64).T @ B)) <= 1e-5


def test_gemm_empty_k_scales_c():
    C = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = gemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), C, 0, 0, 1.0, 2.0)
    np.testing.assert_array_equal(out, 2 * C)


def test_gemm_every_micro_kernel():
    """Each micro-kernel this CPU can run is correct; the AVX2 and AVX-512 kernels run
    the same FMA chains, so they agree bit for bit."""
    rng = np.random.default_rng(2)
    isas = available_isas()
    baseline = 1  # the AVX2 or portable kernel runs everywhere
    assert baseline in isas
    for M, N, K in [(37, 45, 29), (100, 70, 700), (50, 33, 330)]:
        for trans_a, trans_b in [(0, 0), (1, 1)]:
            A, B, C = operands(rng, M, N, K, trans_a, trans_b)
            ref = gemm_ref(A, B, C, trans_a, trans_b, 1.5, 1.0)
            outs = {isa: gemm(A, B, C, trans_a, trans_b, 1.5, 1.0, isa) for isa in isas}
            for out in outs.values():
                assert relative_error(out, ref) <= 1e-5
            if 2 in outs and 3 in outs:
                np.testing.assert_array_equal(outs[2], outs[3])


def test_gemm_rejects_bad_shapes():
    with pytest.raises(ValueError):
        run("gemm", [np.zeros((3, 4)), np.zeros((5, 6)), np.zeros((3, 6))], [0, 0], [1.0, 0.0])
    with pytest.raises(ValueError):
        run("gemm", [np.zeros((3, 4)), np.zeros((4, 6)), np.zeros((3, 5))], [0, 0], [1.0, 0.0])


@pytest.fixture
def restore_threads():
    saved = codext.get_num_threads()
    yield
    codext.set_num_threads(saved)


def test_gemm_thread_count_does_not_change_bits(restore_threads):
    rng = np.random.default_rng(3)
    for M, N, K, ta, tb in [(300, 150, 700, 0, 1), (40, 36, 5000, 1, 0), (2000, 40, 80, 0, 0)]:
        A, B, C = operands(rng, M, N, K, ta, tb)
        outs = []
        for threads in (1, 2, 3):
            codext.set_num_threads(threads)
            outs.append(gemm(A, B, C, ta, tb, 1.0, 1.0))
        np.testing.assert_array_equal(outs[0], outs[1])
        np.testing.assert_array_equal(outs[0], outs[2])


# ---- linear ---------------------------------------------------------------------------------

def linear_ref(x, w, b=None):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if b is None else y + b.astype(np.float64)


@pytest.mark.parametrize("rows,in_f,out_f", [(1, 1, 1), (5, 7, 3), (33, 80, 320), (600, 13, 17),
                                             (2, 300, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_forward(rows, in_f, out_f, bias):
    rng = np.random.default_rng(rows + in_f + out_f)
    x = rng.standard_normal((rows, in_f)).astype(np.float32)
    w = rng.standard_normal((out_f, in_f)).astype(np.float32)
    inputs = [x, w] + ([rng.standard_normal(out_f).astype(np.float32)] if bias else [])
    y = run("linear", inputs)[0]
    assert y.shape == (rows, out_f)
    assert relative_error(y, linear_ref(*inputs)) <= 1e-5


@pytest.mark.parametrize("rows,in_f,out_f", [(5, 7, 3), (600, 13, 17), (40, 333, 9)])
def test_linear_backward_matches_formulas(rows, in_f, out_f):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((rows, in_f)).astype(np.float32)
    w = rng.standard_normal((out_f, in_f)).astype(np.float32)
    b = rng.standard_normal(out_f).astype(np.float32)
    dy = rng.standard_normal((rows, out_f)).astype(np.float32)
    dx, dw, db = run_backward("linear", [x, w, b], [dy])
    dy64 = dy.astype(np.float64)
    assert relative_error(dx, dy64 @ w) <= 1e-5
    assert relative_error(dw, dy64.T @ x) <= 1e-5
    assert relative_error(db, dy64.sum(0)) <= 1e-5
    dx2, dw2 = run_backward("linear", [x, w], [dy])
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dw, dw2)


def test_linear_gradcheck():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    # linear in each input on its own: a large step only shrinks rounding noise
    gradcheck("linear", [x, w, b], h=0.5)
    gradcheck("linear", [x, w], h=0.5)


def test_linear_thread_count_does_not_change_bits(restore_threads):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1100, 48)).astype(np.float32)
    w = rng.standard_normal((72, 48)).astype(np.float32)
    b = rng.standard_normal(72).astype(np.float32)
    dy = rng.standard_normal((1100, 72)).astype(np.float32)
    results = []
    for threads in (1, 2):
        codext.set_num_threads(threads)
        results.append(run("linear", [x, w, b]) + run_backward("linear", [x, w, b], [dy]))
    for a, b_ in zip(*results):
        np.testing.assert_array_equal(a, b_)


def test_linear_rejects_bad_shapes():
    with pytest.raises(ValueError):
        run("linear", [np.zeros((3, 4)), np.zeros((5, 6))])
    with pytest.raises(ValueError):
        run("linear", [np.zeros((3, 4)), np.zeros((5, 4)), np.zeros(4)])

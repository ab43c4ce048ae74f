"""XCA core and Fourier positional encoding (csrc/cpu/attention.c) against NumPy float64."""
import math

import numpy as np
import pytest

import codext
from opcheck import gradcheck, relative_error, run, run_backward


def rand(shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# ---- XCA ----------------------------------------------------------------------------------

def xca_reference(qkv, temperature, heads):
    """timm's XCA between its qkv and proj linears, in float64:
    q, k, v as (B, heads, d, N); q, k L2-normalised over N (x / max(||x||, 1e-12));
    attn = softmax((q k^T) * temperature); (attn v) permuted back to (B, N, heads*d)."""
    qkv = qkv.astype(np.float64)
    b, n, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    parts = qkv.reshape(b, n, 3, heads, d).transpose(2, 0, 3, 4, 1)
    q, k, v = parts[0], parts[1], parts[2]
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    logits = (q @ k.swapaxes(-1, -2)) * temperature.astype(np.float64)[None, :, None, None]
    logits -= logits.max(axis=-1, keepdims=True)
    attn = np.exp(logits)
    attn /= attn.sum(axis=-1, keepdims=True)
    return (attn @ v).transpose(0, 3, 1, 2).reshape(b, n, c)


def xca_inputs(batch, tokens, channels, heads, seed=0):
    qkv = rand((batch, tokens, 3 * channels), seed)
    temperature = np.random.default_rng(seed + 100).uniform(0.5, 3.0, heads).astype(np.float32)
    return qkv, temperature


XCA_CASES = [
    # (batch, tokens, channels, heads)
    (2, 7, 8, 2),
    (1, 13, 12, 3),
    (3, 5, 6, 1),
    (2, 33, 16, 4),
    (1, 1, 4, 2),
    (1, 500, 20, 2),
]


@pytest.mark.parametrize("batch,tokens,channels,heads", XCA_CASES)
def test_xca_matches_reference(batch, tokens, channels, heads):
    qkv, temperature = xca_inputs(batch, tokens, channels, heads)
    (out,) = run("xca", [qkv, temperature], (heads,))
    assert out.shape == (batch, tokens, channels)
    assert relative_error(out, xca_reference(qkv, temperature, heads)) <= 1e-5


def test_xca_sharp_softmax():
    # Large temperatures: nearly one-hot attention rows.
    qkv, _ = xca_inputs(2, 9, 8, 2, seed=3)
    temperature = np.array([40.0, 80.0], dtype=np.float32)
    (out,) = run("xca", [qkv, temperature], (2,))
    assert relative_error(out, xca_reference(qkv, temperature, 2)) <= 1e-5


@pytest.mark.parametrize("batch,tokens,channels,heads", XCA_CASES[:4])
def test_xca_gradcheck(batch, tokens, channels, heads):
    # Steps above the default 1e-2: with h = 1e-2 the float32 rounding of the ~100
    # outputs, amplified by 1/h and by the Richardson step, alone reaches ~1e-4 (the
    # float64 check below shows the analytic gradient is right to ~1e-7). The temperature
    # is smooth enough for a larger step still.
    qkv, temperature = xca_inputs(batch, tokens, channels, heads, seed=1)
    gradcheck("xca", [qkv, temperature], (heads,), wrt=[0], h=2e-2)
    gradcheck("xca", [qkv, temperature], (heads,), wrt=[1], h=8e-2)


def check_against_float64_differences(qkv, temperature, heads, tol=1e-6):
    """Backward against central differences of the float64 NumPy reference: no float32
    noise, so the tolerance can be tight."""
    (out,) = run("xca", [qkv, temperature], (heads,))
    cot = rand(out.shape, seed=9).astype(np.float64)
    dqkv, dtemperature = run_backward("xca", [qkv, temperature], [cot], (heads,))

    def objective(q, t):
        return float(np.sum(xca_reference(q, t, heads) * cot))

    q64, t64 = qkv.astype(np.float64), temperature.astype(np.float64)
    h = 1e-6 * max(float(np.abs(q64).min()), 1e-3)
    numeric_q = np.zeros_like(q64)
    for index in np.ndindex(q64.shape):
        plus, minus = q64.copy(), q64.copy()
        plus[index] += h
        minus[index] -= h
        numeric_q[index] = (objective(plus, t64) - objective(minus, t64)) / (2 * h)
    h_t = 1e-6
    numeric_t = np.array([(objective(q64, t64 + e) - objective(q64, t64 - e)) / (2 * h_t)
                          for e in np.eye(heads) * h_t])
    assert relative_error(dqkv, numeric_q) <= tol
    assert relative_error(dtemperature, numeric_t) <= tol


def test_xca_backward_matches_float64_differences():
    qkv, temperature = xca_inputs(2, 6, 8, 2, seed=8)
    check_against_float64_differences(qkv, temperature, 2)


def test_xca_backward_small_norms():
    # q and k channels with small (but above eps) norms: the normalisation Jacobian is
    # steep there (gradients ~1e3 times the others).
    qkv, temperature = xca_inputs(1, 6, 4, 1, seed=2)
    qkv[:, :, :8] *= 1e-3
    check_against_float64_differences(qkv, temperature, 1)


def test_xca_eps_branch():
    # A q channel and a k channel that are zero over every token: their norm is below
    # eps = 1e-12, so x / eps is linear there and the gradient is g / eps (PyTorch's
    # clamp_min passes no gradient to the norm). Probed with float64 differences of the
    # reference whose steps stay inside the eps ball.
    heads = 1
    qkv, temperature = xca_inputs(1, 5, 4, heads, seed=4)
    zero_channels = [1, 4 + 2]  # q channel 1, k channel 2
    qkv[:, :, zero_channels] = 0.0
    (out,) = run("xca", [qkv, temperature], (heads,))
    assert relative_error(out, xca_reference(qkv, temperature, heads)) <= 1e-5
    cot = rand(out.shape, seed=5).astype(np.float64)
    dqkv, _ = run_backward("xca", [qkv, temperature], [cot], (heads,))

    q64 = qkv.astype(np.float64)
    numeric = np.zeros_like(q64)
    for index in np.ndindex(q64.shape):
        h = 1e-16 if index[2] in zero_channels else 1e-6  # S moves by h / eps
        plus, minus = q64.copy(), q64.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (np.sum(xca_reference(plus, temperature, heads) * cot)
                          - np.sum(xca_reference(minus, temperature, heads) * cot)) / (2 * h)
    assert np.abs(dqkv[:, :, zero_channels]).max() > 1e6  # the 1/eps scale
    assert relative_error(dqkv[:, :, zero_channels], numeric[:, :, zero_channels]) <= 1e-6
    others = [c for c in range(12) if c not in zero_channels]
    assert relative_error(dqkv[:, :, others], numeric[:, :, others]) <= 1e-6


def test_xca_bit_identical_across_thread_counts():
    qkv, temperature = xca_inputs(3, 50, 24, 4, seed=6)
    dout = rand((3, 50, 24), seed=7)
    results = []
    before = codext.get_num_threads()
    try:
        for n in (1, 2):
            codext.set_num_threads(n)
            (out,) = run("xca", [qkv, temperature], (4,))
            dqkv, dt = run_backward("xca", [qkv, temperature], [dout], (4,))
            results.append((out, dqkv, dt))
    finally:
        codext.set_num_threads(before)
    for a, b in zip(results[0], results[1]):
        assert a.tobytes() == b.tobytes()


def test_xca_rejects_bad_shapes():
    qkv, temperature = xca_inputs(1, 4, 6, 2)
    with pytest.raises(ValueError):
        run("xca", [qkv, temperature], (4,))  # 6 channels do not split into 4 heads
    with pytest.raises(ValueError):
        run("xca", [qkv[:, :, :-1], temperature], (2,))


# ---- Fourier positional encoding ----------------------------------------------------------

def posenc_timm_float32(hidden, h, w, temperature):
    """timm's PositionalEncodingFourier before its 1x1 projection, step by step in float32
    as timm computes it (cumsum of ones, divide by the last + eps, scale 2pi)."""
    f = np.float32
    ones = np.ones((h, w), dtype=f)
    y_embed = np.cumsum(ones, axis=0, dtype=f)
    x_embed = np.cumsum(ones, axis=1, dtype=f)
    scale = f(2 * math.pi)
    y_embed = y_embed / (y_embed[-1:, :] + f(1e-6)) * scale
    x_embed = x_embed / (x_embed[:, -1:] + f(1e-6)) * scale
    dim_t = np.arange(hidden, dtype=f)
    dim_t = f(temperature) ** (f(2) * np.floor(dim_t / f(2)) / f(hidden))
    pos_x = x_embed[:, :, None] / dim_t
    pos_y = y_embed[:, :, None] / dim_t
    pos_x = np.stack((np.sin(pos_x[:, :, 0::2]), np.cos(pos_x[:, :, 1::2])), axis=3).reshape(h, w, hidden)
    pos_y = np.stack((np.sin(pos_y[:, :, 0::2]), np.cos(pos_y[:, :, 1::2])), axis=3).reshape(h, w, hidden)
    return np.concatenate((pos_y, pos_x), axis=2).transpose(2, 0, 1)


def posenc_float64(hidden, h, w, temperature):
    i = np.arange(hidden)
    dim_t = float(temperature) ** (2 * (i // 2) / hidden)
    y = (np.arange(h) + 1) / (h + 1e-6) * 2 * np.pi
    x = (np.arange(w) + 1) / (w + 1e-6) * 2 * np.pi
    arg_y = y[None, :, None] / dim_t[:, None, None]
    arg_x = x[None, None, :] / dim_t[:, None, None]
    even = (i % 2 == 0)[:, None, None]
    pos_y = np.where(even, np.sin(arg_y), np.cos(arg_y))
    pos_x = np.where(even, np.sin(arg_x), np.cos(arg_x))
    return np.concatenate((np.broadcast_to(pos_y, (hidden, h, w)),
                           np.broadcast_to(pos_x, (hidden, h, w))), axis=0)


@pytest.mark.parametrize("hidden,h,w,temperature", [
    (32, 44, 44, 10000.0),   # EdgeNeXt stage 1 at 352
    (32, 7, 11, 10000.0),
    (8, 1, 1, 10000.0),
    (16, 5, 3, 100.0),
])
def test_posenc_fourier(hidden, h, w, temperature):
    (out,) = run("posenc_fourier", [], (hidden, h, w), (temperature,))
    assert out.shape == (2 * hidden, h, w)
    assert relative_error(out, posenc_float64(hidden, h, w, temperature)) <= 1e-7
    timm = posenc_timm_float32(hidden, h, w, temperature)
    assert relative_error(out, timm) <= 2e-6
    assert np.max(np.abs(out - timm)) <= 2e-6

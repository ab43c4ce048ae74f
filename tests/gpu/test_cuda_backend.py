"""The CUDA backend's ops against float64 NumPy references and against the CPU backend.

Every op runs through `_C.op(name, arrays, iargs, fargs, backward, backend=...)`, the
backend op runner of csrc/testing/backend_ops.h, which calls the backend's table the same
way for "cpu" and "cuda". Backward calls take the forward inputs, the output gradients
and optionally one starting gradient per input (to check accumulation; an empty one
passes NULL). Tolerances: forward relative error 1e-5, backward 1e-4.

CODEXT_GPU_TEST_BACKEND=cpu runs the same checks on the CPU backend (no GPU needed):
a check of the runner, of these references and of the CPU ops.
"""
import math
import os
from collections import namedtuple

import numpy as np
import pytest

from codext import _C

BACKEND = os.environ.get("CODEXT_GPU_TEST_BACKEND", "cuda")
FORWARD_RTOL = 1e-5
BACKWARD_RTOL = 1e-4


def relative_error(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30))


def run(backend, name, inputs, iargs, fargs, grads=None, starts=None):
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in inputs]
    if grads is None:
        return _C.op(name, arrays, list(iargs), list(fargs), backend=backend)
    arrays += [np.ascontiguousarray(g, dtype=np.float32) for g in grads]
    if starts is not None:
        arrays += [np.ascontiguousarray(s, dtype=np.float32) for s in starts]
    return _C.op(name, arrays, list(iargs), list(fargs), backward=True, backend=backend)


# ---- float64 references ------------------------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)


def phi_cdf(x):
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def gelu_ref(x):
    return [x * phi_cdf(x)]


def gelu_grad(x, dy):
    return [dy * (phi_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))]


def sigmoid_ref(x):
    return [1.0 / (1.0 + np.exp(-x))]


def sigmoid_grad(x, dy):
    s = sigmoid_ref(x)[0]
    return [dy * s * (1 - s)]


def layernorm_rows(x, w, b, eps):
    """x [rows, cols] -> y, mean [rows], rstd [rows], xhat."""
    mean = x.mean(axis=1)
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean[:, None]) * rstd[:, None]
    return xhat * w + b, mean, rstd, xhat


def layernorm_rows_grad(x, w, b, eps, dy):
    _, _, rstd, xhat = layernorm_rows(x, w, b, eps)
    g = dy * w
    dx = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def layernorm_ref(x, w, b, eps):
    y, mean, rstd, _ = layernorm_rows(x, w, b, eps)
    return [y, np.stack([mean, rstd])]


def layernorm_grad(x, w, b, dy, eps):
    return list(layernorm_rows_grad(x, w, b, eps, dy))


def to_rows(x):
    """[batch, channels, ...] -> [batch*hw, channels]"""
    batch, channels = x.shape[:2]
    return x.reshape(batch, channels, -1).transpose(0, 2, 1).reshape(-1, channels)


def from_rows(rows, shape):
    batch, channels = shape[:2]
    return rows.reshape(batch, -1, channels).transpose(0, 2, 1).reshape(shape)


def layernorm2d_ref(x, w, b, eps):
    y, mean, rstd, _ = layernorm_rows(to_rows(x), w, b, eps)
    return [from_rows(y, x.shape), np.stack([mean, rstd])]


def layernorm2d_grad(x, w, b, dy, eps):
    dx, dw, db = layernorm_rows_grad(to_rows(x), w, b, eps, to_rows(dy))
    return [from_rows(dx, x.shape), dw, db]


def linear_ref(x, w, b):
    return [x @ w.T + (b if b.size else 0.0)]


def linear_grad(x, w, b, dy):
    return [dy @ w, dy.T @ x, dy.sum(axis=0) if b.size else np.zeros(0)]


def conv_windows(x, w, stride, pad_h, pad_w, dilation):
    """Yields (i, j, slice_h, slice_w) of the padded input read by kernel tap (i, j)."""
    _, _, h, wd = x.shape
    k_h, k_w = w.shape[2:]
    out_h = (h + 2 * pad_h - dilation * (k_h - 1) - 1) // stride + 1
    out_w = (wd + 2 * pad_w - dilation * (k_w - 1) - 1) // stride + 1
    for i in range(k_h):
        for j in range(k_w):
            yield (i, j, slice(i * dilation, i * dilation + stride * (out_h - 1) + 1, stride),
                   slice(j * dilation, j * dilation + stride * (out_w - 1) + 1, stride), out_h, out_w)


def conv2d_ref(x, w, b, stride, pad_h, pad_w, dilation, groups):
    padded = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    out_ch, cin_g = w.shape[:2]
    cout_g = out_ch // groups
    y = None
    for i, j, sh, sw, out_h, out_w in conv_windows(x, w, stride, pad_h, pad_w, dilation):
        if y is None:
            y = np.zeros((x.shape[0], out_ch, out_h, out_w))
        for g in range(groups):
            patch = padded[:, g * cin_g:(g + 1) * cin_g, sh, sw]
            y[:, g * cout_g:(g + 1) * cout_g] += np.einsum("bchw,oc->bohw", patch, w[g * cout_g:(g + 1) * cout_g, :, i, j])
    if b.size:
        y += b[None, :, None, None]
    return [y]


def conv2d_grad(x, w, b, dy, stride, pad_h, pad_w, dilation, groups):
    padded = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    dpadded = np.zeros_like(padded)
    dw = np.zeros_like(w)
    out_ch, cin_g = w.shape[:2]
    cout_g = out_ch // groups
    for i, j, sh, sw, _, _ in conv_windows(x, w, stride, pad_h, pad_w, dilation):
        for g in range(groups):
            cs, os_ = slice(g * cin_g, (g + 1) * cin_g), slice(g * cout_g, (g + 1) * cout_g)
            dw[os_, :, i, j] += np.einsum("bohw,bchw->oc", dy[:, os_], padded[:, cs, sh, sw])
            dpadded[:, cs, sh, sw] += np.einsum("bohw,oc->bchw", dy[:, os_], w[os_, :, i, j])
    h, wd = x.shape[2:]
    dx = dpadded[:, :, pad_h:pad_h + h, pad_w:pad_w + wd]
    return [dx, dw, dy.sum(axis=(0, 2, 3)) if b.size else np.zeros(0)]


# ---- the cases ---------------------------------------------------------------------------

# make(rng) -> (inputs, iargs, fargs); ref(*inputs64, *fargs, *iargs) -> outputs;
# grad(*inputs64, *output_grads, *fargs, *iargs) -> one gradient per input (None: forward
# only).
# n_dy: output gradients a backward call takes (layernorm's `saved` gets none).
Case = namedtuple("Case", "id name make ref grad n_dy")


def normal(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def pointwise(rng, shape, scale=1.0):
    return normal(rng, *shape, scale=scale)


def conv_case(cid, x_shape, w_shape, stride, pad_h, pad_w, dilation, groups, bias=True):
    def make(rng):
        x = normal(rng, *x_shape)
        w = normal(rng, *w_shape, scale=1.0 / math.sqrt(np.prod(w_shape[1:])))
        b = normal(rng, w_shape[0]) if bias else np.zeros(0, np.float32)
        return [x, w, b], [stride, pad_h, pad_w, dilation, groups], []

    return Case(cid, "conv2d", make,
                lambda x, w, b, *ia: conv2d_ref(x, w, b, *ia),
                lambda x, w, b, dy, *ia: conv2d_grad(x, w, b, dy, *ia), 1)


def linear_case(cid, rows, inf, outf, bias=True):
    def make(rng):
        b = normal(rng, outf) if bias else np.zeros(0, np.float32)
        return [normal(rng, rows, inf), normal(rng, outf, inf, scale=1 / math.sqrt(inf)), b], [], []

    return Case(cid, "linear", make, linear_ref, linear_grad, 1)


def layernorm_case(cid, name, x_shape):
    channels = x_shape[1]

    def make(rng):
        x = normal(rng, *x_shape, scale=2.0) + 0.5
        return [x, normal(rng, channels) + 1.0, normal(rng, channels)], [], [1e-6]

    if name == "layernorm":
        return Case(cid, name, make, layernorm_ref, layernorm_grad, 1)
    return Case(cid, name, make, layernorm2d_ref, layernorm2d_grad, 1)


CASES = [
    Case("gelu", "gelu", lambda r: ([pointwise(r, (3, 37), 3.0)], [], []), gelu_ref, gelu_grad, 1),
    Case("gelu_big", "gelu", lambda r: ([pointwise(r, ((1 << 20) + 7,), 3.0)], [], []), gelu_ref, gelu_grad, 1),
    Case("sigmoid", "sigmoid", lambda r: ([pointwise(r, (5, 41), 4.0)], [], []), sigmoid_ref, sigmoid_grad, 1),
    Case("add", "add", lambda r: ([pointwise(r, (3, 5, 7)), pointwise(r, (3, 5, 7))], [], []),
         lambda a, b: [a + b], None, 1),
    Case("axpy", "axpy", lambda r: ([pointwise(r, (129,)), pointwise(r, (129,))], [], [-0.75]),
         lambda x, y, alpha: [y + alpha * x], None, 1),
    Case("affine", "affine", lambda r: ([pointwise(r, (11, 3))], [], [1.5, -0.25]),
         lambda x, alpha, beta: [alpha * x + beta], None, 1),
    Case("mul", "mul", lambda r: ([pointwise(r, (7, 13)), pointwise(r, (7, 13))], [], []),
         lambda a, b: [a * b], lambda a, b, dy: [dy * b, dy * a], 1),
    layernorm_case("layernorm", "layernorm", (37, 29)),
    layernorm_case("layernorm_wide", "layernorm", (64, 584)),
    layernorm_case("layernorm_many_rows", "layernorm", (5000, 99)),
    layernorm_case("layernorm2d", "layernorm2d", (2, 5, 7, 9)),
    layernorm_case("layernorm2d_80ch", "layernorm2d", (1, 80, 3, 3)),
    layernorm_case("layernorm2d_big_plane", "layernorm2d", (2, 5, 70, 70)),
    linear_case("linear", 13, 17, 11),
    linear_case("linear_no_bias", 6, 9, 5, bias=False),
    linear_case("linear_big", 1000, 77, 33),
    conv_case("conv3x3", (2, 6, 9, 11), (4, 6, 3, 3), 1, 1, 1, 1, 1),
    conv_case("conv_stem4x4s4", (2, 3, 16, 20), (8, 3, 4, 4), 4, 0, 0, 1, 1),
    conv_case("conv_down2x2s2", (1, 8, 10, 6), (12, 8, 2, 2), 2, 0, 0, 1, 1),
    conv_case("conv_dw7x7", (2, 5, 12, 13), (5, 1, 7, 7), 1, 3, 3, 1, 5),
    conv_case("conv_dw3x3_dil2", (1, 4, 11, 9), (4, 1, 3, 3), 1, 2, 2, 2, 4),
    conv_case("conv_grouped_3x", (1, 4, 8, 8), (12, 1, 3, 3), 1, 1, 1, 1, 4),
    conv_case("conv1x1_no_bias", (2, 10, 5, 5), (7, 10, 1, 1), 1, 0, 0, 1, 1, bias=False),
    conv_case("conv3x3s2_odd", (1, 3, 9, 7), (5, 3, 3, 3), 2, 1, 1, 1, 1),
]
BACKWARD_CASES = [c for c in CASES if c.grad is not None]


def ids(cases):
    return [c.id for c in cases]


def prepare(case, seed=0):
    rng = np.random.default_rng(seed)
    inputs, iargs, fargs = case.make(rng)
    outs = run(BACKEND, case.name, inputs, iargs, fargs)
    dys = [normal(rng, *o.shape) for o in outs[:case.n_dy]]
    return rng, inputs, iargs, fargs, outs, dys


def as64(arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def extra_args(case, iargs, fargs):
    return list(fargs) + list(iargs)


# ---- the tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_forward_matches_numpy(case):
    _, inputs, iargs, fargs, outs, _ = prepare(case)
    refs = case.ref(*as64(inputs), *extra_args(case, iargs, fargs))
    assert len(outs) == len(refs)
    for k, (out, ref) in enumerate(zip(outs, refs)):
        err = relative_error(out, ref)
        assert err <= FORWARD_RTOL, f"{case.id}: output {k} relative error {err:.2e}"


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=ids(BACKWARD_CASES))
def test_backward_matches_numpy(case):
    _, inputs, iargs, fargs, _, dys = prepare(case)
    grads = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    refs = case.grad(*as64(inputs), *as64(dys), *extra_args(case, iargs, fargs))
    assert len(grads) == len(inputs)
    for k, (grad, ref) in enumerate(zip(grads, refs)):
        assert grad.shape == inputs[k].shape, f"{case.id}: gradient {k} has shape {grad.shape}"
        if ref.size:
            err = relative_error(grad, ref)
            assert err <= BACKWARD_RTOL, f"{case.id}: gradient {k} relative error {err:.2e}"


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_matches_cpu_backend(case):
    """The CPU backend is the reference (docs/backends.md). `saved` is backend-private and
    not compared."""
    _, inputs, iargs, fargs, outs, dys = prepare(case)
    cpu_outs = run("cpu", case.name, inputs, iargs, fargs)
    n_compared = case.n_dy if case.name.startswith("layernorm") else len(outs)
    for k in range(n_compared):
        err = relative_error(outs[k], cpu_outs[k])
        assert err <= FORWARD_RTOL, f"{case.id}: output {k} differs from the CPU backend by {err:.2e}"
    if case.grad is None:
        return
    grads = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    cpu_grads = run("cpu", case.name, inputs, iargs, fargs, grads=dys)
    for k, (grad, cpu) in enumerate(zip(grads, cpu_grads)):
        if cpu.size:
            err = relative_error(grad, cpu)
            assert err <= BACKWARD_RTOL, f"{case.id}: gradient {k} differs from the CPU backend by {err:.2e}"


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=ids(BACKWARD_CASES))
def test_backward_accumulates(case):
    rng, inputs, iargs, fargs, _, dys = prepare(case)
    grads = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    starts = [normal(rng, *x.shape) for x in inputs]
    summed = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys, starts=starts)
    for k, (total, start, grad) in enumerate(zip(summed, starts, grads)):
        if start.size:
            err = relative_error(total, start.astype(np.float64) + grad)
            assert err <= 1e-6, f"{case.id}: gradient {k} does not accumulate (error {err:.2e})"


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=ids(BACKWARD_CASES))
def test_null_gradients_are_skipped(case):
    """Each gradient alone (the others NULL) equals the one of a full backward call."""
    _, inputs, iargs, fargs, _, dys = prepare(case)
    full = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    for keep in range(len(inputs)):
        starts = [np.zeros_like(x) if k == keep else np.zeros(0, np.float32) for k, x in enumerate(inputs)]
        only = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys, starts=starts)
        for k, grad in enumerate(only):
            if k == keep:
                assert np.array_equal(grad, full[k]), f"{case.id}: gradient {k} alone differs"
            else:
                assert grad.size == 0, f"{case.id}: gradient {k} should be absent (NULL)"


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=ids(BACKWARD_CASES))
def test_deterministic(case):
    _, inputs, iargs, fargs, outs, dys = prepare(case)
    again = run(BACKEND, case.name, inputs, iargs, fargs)
    for a, b in zip(outs, again):
        assert np.array_equal(a, b), f"{case.id}: forward is not bit-reproducible"
    first = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    second = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    for k, (a, b) in enumerate(zip(first, second)):
        assert np.array_equal(a, b), f"{case.id}: gradient {k} is not bit-reproducible"


def test_bad_shapes_raise_and_leave_the_backend_usable():
    x = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError):
        run(BACKEND, "linear", [x, np.ones((3, 6), np.float32), np.zeros(0, np.float32)], [], [])
    y = run(BACKEND, "affine", [x], [], [2.0, 1.0])[0]
    assert np.array_equal(y, np.full((4, 5), 3.0, np.float32))


@pytest.mark.skipif(BACKEND != "cuda", reason="checks the CUDA loader")
def test_loader_reason_names_the_device():
    ok, reason = _C.cuda_backend_available()
    assert ok and "device 0" in reason and "sm_" in reason, reason

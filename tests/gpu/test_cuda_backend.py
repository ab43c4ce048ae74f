"""The op-test runner's cases on a device backend: against float64 NumPy references and
against the CPU backend.

Every case runs through `codext._testing.op(name, arrays, iargs, fargs, backward,
backend=...)`, the op-test runner of csrc/testing/op_runner.h, which calls the backend's
table the same way for "cpu" and "cuda". Forward calls return the outputs then the saved
state; backward calls take the forward inputs, one gradient per output and optionally one
starting gradient per input (to check accumulation; an empty one passes NULL). The cases
cover every op of the table (test_cases_cover_the_op_table) in every family, with odd and
non-square sizes; each has its tolerances against float64 NumPy (default: forward relative
error 1e-5, backward 1e-4), and every output and gradient must match the CPU backend's to
1e-5 (CPU_RTOL: both are float32). An op the backend does not support must be refused with
an error naming it.

CODEXT_GPU_TEST_BACKEND=cpu runs the same checks on the CPU backend (no GPU needed):
a check of the runner, of these references and of the CPU ops.
"""
import math
import os
from collections import namedtuple

import numpy as np
import pytest

from testing_module import testing

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
        return testing.op(name, arrays, list(iargs), list(fargs), backend=backend)
    arrays += [np.ascontiguousarray(g, dtype=np.float32) for g in grads]
    if starts is not None:
        arrays += [np.ascontiguousarray(s, dtype=np.float32) for s in starts]
    return testing.op(name, arrays, list(iargs), list(fargs), backward=True, backend=backend)


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

# make(rng) -> (inputs, iargs, fargs); ref(*inputs64, *fargs, *iargs) -> outputs (then the
# saved state when the reference knows its layout); grad(*inputs64, *output_grads, *fargs,
# *iargs) -> one gradient per input. ref and grad may be None: the case is then checked
# against the CPU backend only (tests/test_ops_*.py check the CPU ops against NumPy).
Case = namedtuple("Case", "id name make ref grad rtol grad_rtol", defaults=(None, None, FORWARD_RTOL, BACKWARD_RTOL))


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
                lambda x, w, b, dy, *ia: conv2d_grad(x, w, b, dy, *ia))


def linear_case(cid, rows, inf, outf, bias=True):
    def make(rng):
        b = normal(rng, outf) if bias else np.zeros(0, np.float32)
        return [normal(rng, rows, inf), normal(rng, outf, inf, scale=1 / math.sqrt(inf)), b], [], []

    return Case(cid, "linear", make, linear_ref, linear_grad)


def layernorm_case(cid, name, x_shape):
    channels = x_shape[1]

    def make(rng):
        x = normal(rng, *x_shape, scale=2.0) + 0.5
        return [x, normal(rng, channels) + 1.0, normal(rng, channels)], [], [1e-6]

    if name == "layernorm":
        return Case(cid, name, make, layernorm_ref, layernorm_grad)
    return Case(cid, name, make, layernorm2d_ref, layernorm2d_grad)


def softmax_ref(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return [e / e.sum(-1, keepdims=True)]


def softmax_grad(x, dy):
    y = softmax_ref(x)[0]
    return [y * (dy - (dy * y).sum(-1, keepdims=True))]


def l2norm_ref(x, eps):
    norm = np.sqrt((x * x).sum(-1))
    return [x / np.maximum(norm, eps)[..., None], norm.reshape(-1)]


def l2norm_grad(x, dy, eps):
    norm = np.sqrt((x * x).sum(-1, keepdims=True))
    n = np.maximum(norm, eps)
    dx = dy / n - np.where(norm > eps, x * (dy * x).sum(-1, keepdims=True) / (n ** 2 * norm), 0.0)
    return [dx]


def scale_mid_ref(x, s):
    return [x * s[None, :, None]]


def scale_mid_grad(x, s, dy):
    return [dy * s[None, :, None], (dy * x).sum(axis=(0, 2))]


def scale_outer_inner_ref(x, s):
    return [x * s[:, None, :]]


def scale_outer_inner_grad(x, s, dy):
    return [dy * s[:, None, :], (dy * x).sum(axis=1)]


def copy_channels_ref(src, dst, n, src_off, dst_off, accumulate):
    out = dst.copy()
    block = src[:, src_off:src_off + n]
    out[:, dst_off:dst_off + n] = out[:, dst_off:dst_off + n] + block if accumulate else block
    return [out]


def global_avgpool_ref(x):
    return [x.mean(axis=(2, 3))]


def global_avgpool_grad(x, dy):
    return [np.broadcast_to(dy[:, :, None, None] / (x.shape[2] * x.shape[3]), x.shape)]


def pool_case(cid, name, x_shape, iargs):
    return Case(cid, name, lambda r: ([pointwise(r, x_shape)], list(iargs), []))


def xca_case(cid, batch, tokens, channels, heads):
    def make(rng):
        return [normal(rng, batch, tokens, 3 * channels), rng.uniform(0.5, 2.0, heads).astype(np.float32)], [heads], []

    return Case(cid, "xca", make)


def structure_loss_case(cid, batch, h, w):
    def make(rng):
        logits = normal(rng, batch, 1, h, w, scale=2.0)
        target = (rng.uniform(size=(batch, 1, h, w)) < 0.4).astype(np.float32)
        return [logits, target], [], []

    return Case(cid, "structure_loss", make)


CASES = [
    Case("gelu", "gelu", lambda r: ([pointwise(r, (3, 37), 3.0)], [], []), gelu_ref, gelu_grad),
    Case("gelu_big", "gelu", lambda r: ([pointwise(r, ((1 << 20) + 7,), 3.0)], [], []), gelu_ref, gelu_grad),
    Case("sigmoid", "sigmoid", lambda r: ([pointwise(r, (5, 41), 4.0)], [], []), sigmoid_ref, sigmoid_grad),
    Case("softmax", "softmax", lambda r: ([pointwise(r, (7, 13), 3.0)], [], []), softmax_ref, softmax_grad),
    Case("softmax_3d", "softmax", lambda r: ([pointwise(r, (2, 5, 33), 3.0)], [], []), softmax_ref, softmax_grad),
    Case("softmax_wide", "softmax", lambda r: ([pointwise(r, (19, 301), 5.0)], [], []), softmax_ref, softmax_grad),
    Case("add", "add", lambda r: ([pointwise(r, (3, 5, 7)), pointwise(r, (3, 5, 7))], [], []),
         lambda a, b: [a + b], lambda a, b, dy: [dy, dy]),
    Case("axpy", "axpy", lambda r: ([pointwise(r, (129,)), pointwise(r, (129,))], [], [-0.75]),
         lambda x, y, alpha: [y + alpha * x]),
    Case("affine", "affine", lambda r: ([pointwise(r, (11, 3))], [], [1.5, -0.25]),
         lambda x, alpha, beta: [alpha * x + beta], lambda x, dy, alpha, beta: [alpha * dy]),
    Case("mul", "mul", lambda r: ([pointwise(r, (7, 13)), pointwise(r, (7, 13))], [], []),
         lambda a, b: [a * b], lambda a, b, dy: [dy * b, dy * a]),
    Case("scale_mid", "scale_mid", lambda r: ([pointwise(r, (3, 5, 7)), pointwise(r, (5,))], [], []),
         scale_mid_ref, scale_mid_grad),
    Case("scale_mid_rows", "scale_mid", lambda r: ([pointwise(r, (37, 11, 1)), pointwise(r, (11,))], [], []),
         scale_mid_ref, scale_mid_grad),
    # ds in column chunks (inner < 1024: 2000 rows in 32-row chunks), and in plane pieces
    Case("scale_mid_row_chunks", "scale_mid", lambda r: ([pointwise(r, (2000, 3, 5)), pointwise(r, (3,))], [], []),
         scale_mid_ref, scale_mid_grad),
    Case("scale_mid_planes", "scale_mid", lambda r: ([pointwise(r, (2, 3, 9000)), pointwise(r, (3,))], [], []),
         scale_mid_ref, scale_mid_grad),
    Case("scale_outer_inner", "scale_outer_inner",
         lambda r: ([pointwise(r, (2, 3, 11)), pointwise(r, (2, 11))], [], []),
         scale_outer_inner_ref, scale_outer_inner_grad),
    Case("scale_outer_inner_big", "scale_outer_inner",
         lambda r: ([pointwise(r, (3, 40, 700)), pointwise(r, (3, 700))], [], []),
         scale_outer_inner_ref, scale_outer_inner_grad),
    Case("transpose", "transpose", lambda r: ([pointwise(r, (2, 5, 9))], [], []),
         lambda x: [x.transpose(0, 2, 1)], lambda x, dy: [dy.transpose(0, 2, 1)]),
    Case("transpose_tiles", "transpose", lambda r: ([pointwise(r, (3, 70, 97))], [], []),
         lambda x: [x.transpose(0, 2, 1)], lambda x, dy: [dy.transpose(0, 2, 1)]),
    Case("copy_channels", "copy_channels",
         lambda r: ([pointwise(r, (2, 5, 3, 7)), pointwise(r, (2, 6, 3, 7))], [3, 1, 2, 1], []),
         lambda src, dst, *ia: copy_channels_ref(src, dst, *ia)),
    Case("copy_channels_overwrite", "copy_channels",
         lambda r: ([pointwise(r, (1, 4, 9)), pointwise(r, (1, 7, 9))], [4, 0, 3, 0], []),
         lambda src, dst, *ia: copy_channels_ref(src, dst, *ia)),
    layernorm_case("layernorm", "layernorm", (37, 29)),
    layernorm_case("layernorm_wide", "layernorm", (64, 584)),
    layernorm_case("layernorm_many_rows", "layernorm", (5000, 99)),
    layernorm_case("layernorm2d", "layernorm2d", (2, 5, 7, 9)),
    layernorm_case("layernorm2d_80ch", "layernorm2d", (1, 80, 3, 3)),
    layernorm_case("layernorm2d_big_plane", "layernorm2d", (2, 5, 70, 70)),
    Case("l2norm", "l2norm", lambda r: ([pointwise(r, (7, 11))], [], [1e-12]), l2norm_ref, l2norm_grad),
    Case("l2norm_clamped", "l2norm", lambda r: ([pointwise(r, (5, 3), 0.1)], [], [0.5]), l2norm_ref, l2norm_grad),
    Case("l2norm_wide", "l2norm", lambda r: ([pointwise(r, (21, 333))], [], [1e-12]), l2norm_ref, l2norm_grad),
    linear_case("linear", 13, 17, 11),
    linear_case("linear_no_bias", 6, 9, 5, bias=False),
    linear_case("linear_big", 1000, 77, 33),
    conv_case("conv3x3", (2, 6, 9, 11), (4, 6, 3, 3), 1, 1, 1, 1, 1),
    conv_case("conv_stem4x4s4", (2, 3, 16, 20), (8, 3, 4, 4), 4, 0, 0, 1, 1),
    conv_case("conv_down2x2s2", (1, 8, 10, 6), (12, 8, 2, 2), 2, 0, 0, 1, 1),
    conv_case("conv_dw7x7", (2, 5, 12, 13), (5, 1, 7, 7), 1, 3, 3, 1, 5),
    conv_case("conv_dw3x3_dil2", (1, 4, 11, 9), (4, 1, 3, 3), 1, 2, 2, 2, 4),
    conv_case("conv_grouped_3x", (1, 4, 8, 8), (12, 1, 3, 3), 1, 1, 1, 1, 4),
    # depthwise (groups == in == out): our kernels, not cuDNN (kernels/device/depthwise.cuh);
    # strided, unbiased, and big enough that each filter-gradient thread sums many terms
    conv_case("conv_dw5x5s2", (1, 6, 13, 10), (6, 1, 5, 5), 2, 2, 2, 1, 6),
    conv_case("conv_dw3x3_no_bias", (2, 3, 7, 9), (3, 1, 3, 3), 1, 1, 1, 1, 3, bias=False),
    conv_case("conv_dw3x3_big", (2, 3, 40, 37), (3, 1, 3, 3), 1, 1, 1, 1, 3),
    conv_case("conv1x1_no_bias", (2, 10, 5, 5), (7, 10, 1, 1), 1, 0, 0, 1, 1, bias=False),
    conv_case("conv1x1_odd", (3, 5, 4, 7), (6, 5, 1, 1), 1, 0, 0, 1, 1),
    conv_case("conv3x3_no_bias", (2, 4, 6, 5), (3, 4, 3, 3), 1, 1, 1, 1, 1, bias=False),
    conv_case("conv3x3s2_odd", (1, 3, 9, 7), (5, 3, 3, 3), 2, 1, 1, 1, 1),
    pool_case("avgpool3x3s2", "avgpool2d", (2, 3, 9, 7), (3, 2, 1, 1)),
    pool_case("avgpool31_loss_window", "avgpool2d", (1, 2, 33, 35), (31, 1, 15, 1)),
    pool_case("avgpool2x2_no_pad_count", "avgpool2d", (1, 3, 7, 5), (2, 2, 1, 0)),
    pool_case("adaptive_avgpool", "adaptive_avgpool2d", (2, 3, 11, 7), (3, 5)),
    pool_case("adaptive_avgpool_up", "adaptive_avgpool2d", (1, 2, 3, 5), (7, 6)),
    Case("global_avgpool", "global_avgpool", lambda r: ([pointwise(r, (2, 3, 5, 7))], [], []),
         global_avgpool_ref, global_avgpool_grad),
    pool_case("resize_up", "resize_bilinear", (2, 3, 5, 7), (11, 9)),
    pool_case("resize_down", "resize_bilinear", (1, 2, 12, 10), (5, 4)),
    xca_case("xca", 2, 13, 12, 3),
    xca_case("xca_one_head", 1, 7, 5, 1),
    xca_case("xca_d36_260_tokens", 1, 260, 72, 2),  # CUDA: 2x2 tiles of 32 channels, 2 token chunks
    Case("posenc_fourier", "posenc_fourier", lambda r: ([], [8, 5, 7], [10000.0])),
    structure_loss_case("structure_loss", 2, 9, 11),
    structure_loss_case("structure_loss_big", 1, 40, 33),
    structure_loss_case("structure_loss_two_chunks", 2, 70, 61),  # CUDA: 4096-pixel chunks
]


def info(case):
    return testing.op_info(case.name)


BACKWARD_CASES = [c for c in CASES if info(c)["backward"]]


def ids(cases):
    return [c.id for c in cases]


def prepare(case, seed=0):
    rng = np.random.default_rng(seed)
    inputs, iargs, fargs = case.make(rng)
    outs = run(BACKEND, case.name, inputs, iargs, fargs)
    dys = [normal(rng, *o.shape) for o in outs[:info(case)["outputs"]]]
    return rng, inputs, iargs, fargs, outs, dys


def as64(arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def extra_args(case, iargs, fargs):
    return list(fargs) + list(iargs)


def refused(case, backward):
    """On a backend that lacks an op of the case: asserts the runner refuses it with an error
    naming the op, and returns True (nothing more to check)."""
    needed = info(case)["backward_ops" if backward else "forward_ops"]
    missing = [op for op in needed if not testing.backend_supports(BACKEND)[op]]
    if not missing:
        return False
    rng = np.random.default_rng(0)
    inputs, iargs, fargs = case.make(rng)
    with pytest.raises(RuntimeError, match="does not implement") as error:
        if backward:
            outs = run("cpu", case.name, inputs, iargs, fargs)
            run(BACKEND, case.name, inputs, iargs, fargs, grads=outs[:info(case)["outputs"]])
        else:
            run(BACKEND, case.name, inputs, iargs, fargs)
    assert all(op in str(error.value) for op in missing), str(error.value)
    return True


# ---- the tests ---------------------------------------------------------------------------

REF_CASES = [c for c in CASES if c.ref is not None]
GRAD_CASES = [c for c in BACKWARD_CASES if c.grad is not None]


def test_cases_cover_the_op_table():
    """Every op of the table runs in some case (forward ops of every case, backward ops of
    the cases with a backward)."""
    covered = set()
    for case in CASES:
        covered |= set(info(case)["forward_ops"])
    for case in BACKWARD_CASES:
        covered |= set(info(case)["backward_ops"])
    assert covered == set(testing.table_ops()), sorted(set(testing.table_ops()) - covered)


@pytest.mark.parametrize("case", REF_CASES, ids=ids(REF_CASES))
def test_forward_matches_numpy(case):
    if refused(case, False):
        return
    _, inputs, iargs, fargs, outs, _ = prepare(case)
    refs = case.ref(*as64(inputs), *extra_args(case, iargs, fargs))
    # the reference gives the outputs, and the saved state when it knows its layout
    assert info(case)["outputs"] <= len(refs) <= len(outs)
    for k, (out, ref) in enumerate(zip(outs, refs)):
        err = relative_error(out, ref)
        assert err <= case.rtol, f"{case.id}: output {k} relative error {err:.2e}"


@pytest.mark.parametrize("case", GRAD_CASES, ids=ids(GRAD_CASES))
def test_backward_matches_numpy(case):
    if refused(case, True):
        return
    _, inputs, iargs, fargs, _, dys = prepare(case)
    grads = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    refs = case.grad(*as64(inputs), *as64(dys), *extra_args(case, iargs, fargs))
    assert len(grads) == len(inputs)
    for k, (grad, ref) in enumerate(zip(grads, refs)):
        assert grad.shape == inputs[k].shape, f"{case.id}: gradient {k} has shape {grad.shape}"
        if ref.size:
            err = relative_error(grad, ref)
            assert err <= case.grad_rtol, f"{case.id}: gradient {k} relative error {err:.2e}"


# The device against the CPU backend, both in float32: outputs and gradients to 1e-5
# relative (the bar; the two sum in other orders, nothing more), looser only where
# a case says why (CPU_RTOL_EXCEPTIONS).
CPU_RTOL = 1e-5
CPU_RTOL_EXCEPTIONS = {}


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_matches_cpu_backend(case):
    """The CPU backend is the reference (docs/backends.md). The saved state is
    backend-private and not compared; the outputs and gradients are, to CPU_RTOL."""
    if refused(case, False):
        return
    _, inputs, iargs, fargs, outs, dys = prepare(case)
    cpu_outs = run("cpu", case.name, inputs, iargs, fargs)
    assert len(outs) == len(cpu_outs)
    for k in range(info(case)["outputs"]):
        err = relative_error(outs[k], cpu_outs[k])
        tol = CPU_RTOL_EXCEPTIONS.get(case.id, CPU_RTOL)
        assert err <= tol, f"{case.id}: output {k} differs from the CPU backend by {err:.2e}"
    if not info(case)["backward"] or refused(case, True):
        return
    grads = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
    cpu_grads = run("cpu", case.name, inputs, iargs, fargs, grads=dys)
    for k, (grad, cpu) in enumerate(zip(grads, cpu_grads)):
        if cpu.size:
            err = relative_error(grad, cpu)
            tol = CPU_RTOL_EXCEPTIONS.get(case.id, CPU_RTOL)
            assert err <= tol, f"{case.id}: gradient {k} differs from the CPU backend by {err:.2e}"


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=ids(BACKWARD_CASES))
def test_backward_accumulates(case):
    if refused(case, True):
        return
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
    if refused(case, True):
        return
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


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_deterministic(case):
    if refused(case, False):
        return
    _, inputs, iargs, fargs, outs, dys = prepare(case)
    again = run(BACKEND, case.name, inputs, iargs, fargs)
    for a, b in zip(outs, again):
        assert np.array_equal(a, b), f"{case.id}: forward is not bit-reproducible"
    if not info(case)["backward"] or refused(case, True):
        return
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


def model_ops(kind):
    """The ops binding a model needs: the CPU backend refusing every op names them all."""
    with pytest.raises(RuntimeError) as error:
        testing.bind_model(kind, unsupported=testing.table_ops())
    message = str(error.value)
    return {op for op in testing.table_ops() if op in message.split("needs: ", 1)[1].split(", ")}


@pytest.mark.parametrize("kind", ["cod", "backbone"])
def test_binding_a_model_names_the_ops_the_backend_lacks(kind):
    missing = sorted(model_ops(kind) - {op for op, ok in testing.backend_supports(BACKEND).items() if ok})
    if not missing:
        testing.bind_model(kind, backend=BACKEND)
        return
    with pytest.raises(RuntimeError, match="does not implement") as error:
        testing.bind_model(kind, backend=BACKEND)
    listed = str(error.value).split("needs: ", 1)[1].split(", ")
    assert sorted(listed) == missing, str(error.value)


@pytest.mark.skipif(BACKEND != "cuda", reason="checks the CUDA loader")
def test_loader_reason_names_the_device():
    from codext import _C
    ok, reason = _C.cuda_backend_available()
    assert ok and "device 0" in reason and "sm_" in reason, reason

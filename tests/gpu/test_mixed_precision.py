"""Mixed precision on a CUDA backend (cx_precision in ops/cuda_abi.h, kernels/precision.cu).

Every case of the op-test runner (test_cuda_backend.CASES) runs on the device backend in
fp16, and in bf16 where the GPU has it (sm_80+; the emulator reports sm_75 unless
CODEXT_EMU_SM says otherwise; before sm_80 each bf16 call must be refused by name),
against the CPU backend: relative error <= 1e-2 (the
issue's bound for half precision), forward and backward. The scope is checked exactly:
the products that take half operands (linear; conv2d with one group) give results that
differ from the fp32 run (outputs and input gradients), and every other op gives the fp32
run's bits, since it stays float32, as does a dense convolution's filter gradient. Under CODEXT_GPU_TEST_BACKEND=cpu only the refusals run."""
import os
import re

import numpy as np
import pytest

from conftest import cuda_backend_status
from testing_module import testing
from test_cuda_backend import BACKEND, CASES, ids, info, normal, relative_error

LOW_RTOL = 1e-2


def device_sm():
    """The device's architecture as an integer (75 for sm_75), from the loader's line."""
    found = re.search(r"\(sm_(\d+)", cuda_backend_status()[1])
    assert found, cuda_backend_status()[1]
    return int(found.group(1))


def low_precisions():
    return ["fp16", "bf16"]


def needs_device():
    if BACKEND == "cpu":
        pytest.skip("mixed precision is the CUDA backend's (CODEXT_GPU_TEST_BACKEND=cpu)")


def run(name, inputs, iargs, fargs, precision, backend=None, grads=None, starts=None):
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in inputs]
    if grads is not None:
        arrays += [np.ascontiguousarray(g, dtype=np.float32) for g in grads]
    if starts is not None:
        arrays += [np.ascontiguousarray(g, dtype=np.float32) for g in starts]
    return testing.op(name, arrays, list(iargs), list(fargs), backward=grads is not None,
                      backend=backend or BACKEND, precision=precision)


def takes_half_operands(case, iargs):
    """linear, and conv2d with one group (its iargs end with the group count) unless our own
    direct kernels run every convolution (CODEXT_CUDA_CONV=own: float32 in every precision,
    as the deterministic fallback is)."""
    if case.name == "conv2d" and os.environ.get("CODEXT_CUDA_CONV") == "own":
        return False
    return case.name == "linear" or (case.name == "conv2d" and iargs[-1] == 1)


def supported(case):
    ops = info(case)["forward_ops"] + (info(case)["backward_ops"] if info(case)["backward"] else [])
    return all(testing.backend_supports(BACKEND)[op] for op in ops)


@pytest.mark.parametrize("precision", low_precisions())
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_low_precision_matches_cpu_backend(case, precision):
    needs_device()
    if not supported(case):
        return  # test_cuda_backend checks the refusal
    rng = np.random.default_rng(0)
    inputs, iargs, fargs = case.make(rng)
    if precision == "bf16" and device_sm() < 80:
        with pytest.raises(ValueError, match=r"bf16 needs a GPU of compute capability 8\.0.*sm_\d+"):
            run(case.name, inputs, iargs, fargs, precision)
        return
    outs = run(case.name, inputs, iargs, fargs, precision)
    full = run(case.name, inputs, iargs, fargs, "fp32")
    cpu = run(case.name, inputs, iargs, fargs, "fp32", backend="cpu")
    n_out = info(case)["outputs"]
    half = takes_half_operands(case, iargs)
    for k in range(n_out):
        err = relative_error(outs[k], cpu[k])
        assert err <= LOW_RTOL, f"{case.id} {precision}: output {k} differs from the CPU by {err:.2e}"
        if half:
            assert not np.array_equal(outs[k], full[k]), f"{case.id}: {precision} gave the fp32 bits"
        else:
            assert np.array_equal(outs[k], full[k]), f"{case.id}: {precision} changed a float32 op"
    if not info(case)["backward"]:
        return
    dys = [normal(rng, *o.shape) for o in outs[:n_out]]
    grads = run(case.name, inputs, iargs, fargs, precision, grads=dys)
    full_grads = run(case.name, inputs, iargs, fargs, "fp32", grads=dys)
    cpu_grads = run(case.name, inputs, iargs, fargs, "fp32", backend="cpu", grads=dys)
    for k, (grad, cpu_grad) in enumerate(zip(grads, cpu_grads)):
        if not cpu_grad.size:
            continue
        err = relative_error(grad, cpu_grad)
        assert err <= LOW_RTOL, f"{case.id} {precision}: gradient {k} differs from the CPU by {err:.2e}"
        # a dense convolution's filter gradient stays float32 (kernels/conv.cu: a sum over
        # the whole batch would overflow half): the fp32 run's bits
        stays = not half or (case.name == "conv2d" and k == 1)
        if stays:
            assert np.array_equal(grad, full_grads[k]), f"{case.id}: {precision} changed gradient {k}"
        elif k == 0:  # the data gradient took half operands
            assert not np.array_equal(grad, full_grads[k]), f"{case.id}: {precision} gave fp32's dx"
    # gradients accumulate: the half result is widened and added to what was there
    starts = [normal(rng, *x.shape) for x in inputs]
    summed = run(case.name, inputs, iargs, fargs, precision, grads=dys, starts=starts)
    for k, (total, start, grad) in enumerate(zip(summed, starts, grads)):
        if start.size and grad.size:
            err = relative_error(total, start.astype(np.float64) + grad)
            assert err <= 1e-6, f"{case.id} {precision}: gradient {k} does not accumulate ({err:.2e})"


def test_half_rounding_is_what_the_products_see():
    """A product of values that half cannot hold: fp16 rounds each operand to 11 bits
    before multiplying, so 1 + 2^-12 becomes 1 (and the sum over 64 such products 64),
    while fp32 keeps it."""
    needs_device()
    x = np.full((1, 64), 1.0 + 2.0 ** -12, np.float32)
    w = np.ones((1, 64), np.float32)
    no_bias = np.zeros(0, np.float32)
    low = run("linear", [x, w, no_bias], [], [], "fp16")[0]
    full = run("linear", [x, w, no_bias], [], [], "fp32")[0]
    assert low[0, 0] == 64.0
    assert full[0, 0] == np.float32(64.0 * (1.0 + 2.0 ** -12))
    # an operand beyond half's range (65504) overflows to infinity: loss scaling's signal
    big = run("linear", [np.full((1, 2), 7e4, np.float32), np.ones((1, 2), np.float32), no_bias],
              [], [], "fp16")[0]
    assert np.isinf(big[0, 0])
    # after a failed or low-precision call the backend is back in fp32
    assert run("linear", [x, w, no_bias], [], [], "fp32")[0][0, 0] == full[0, 0]


def test_precision_names_and_the_cpu_backend_are_checked():
    x, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="precision must be 'fp32', 'fp16' or 'bf16', got 'half'"):
        testing.op("linear", [x, w, np.zeros(0, np.float32)], [], [], backend="cpu", precision="half")
    with pytest.raises(ValueError, match="the CPU backend computes in fp32"):
        testing.op("linear", [x, w, np.zeros(0, np.float32)], [], [], backend="cpu", precision="fp16")

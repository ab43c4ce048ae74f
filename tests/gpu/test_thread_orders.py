"""On the CUDA emulator only: every case of test_cuda_backend.py gives the same bits, forward
and backward, whatever order the emulated threads of a block run in.

The backend promises launch-independent results (docs/backends.md: no atomics, reductions
in an order fixed by the shape). The emulator reads CX_EMU_ORDER at every launch
(docs/emulator.md), so this process switches between `forward`, `reverse` and `random:N`
and compares the outputs and gradients bit for bit: a reduction whose order follows the
threads' scheduling, or a shared-memory race, changes them. On a GPU (or with
CODEXT_GPU_TEST_BACKEND=cpu) there is no order to choose, and the test skips.
"""
import os

import numpy as np
import pytest

from test_cuda_backend import BACKEND, BACKWARD_CASES, CASES, ids, info, prepare, run
from testing_module import testing

EMULATED = bool(os.environ.get("CODEXT_CUDA_EMULATED")) and BACKEND == "cuda"
ORDERS = ["reverse", "random:7", "random:1234"]


@pytest.fixture
def thread_order():
    """set(order): later launches run their threads in that order; restored afterwards."""
    if not EMULATED:
        pytest.skip("thread orders exist on the CUDA emulator only (CODEXT_CUDA_EMULATED)")
    before = os.environ.get("CX_EMU_ORDER")

    def set_order(order):
        os.environ["CX_EMU_ORDER"] = order

    yield set_order
    if before is None:
        os.environ.pop("CX_EMU_ORDER", None)
    else:
        os.environ["CX_EMU_ORDER"] = before


def supported(case, backward):
    needed = info(case)["backward_ops" if backward else "forward_ops"]
    return all(testing.backend_supports(BACKEND)[op] for op in needed)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_same_bits_in_every_thread_order(case, thread_order):
    if not supported(case, False):
        return  # not implemented here: test_cuda_backend.py checks that it is refused
    thread_order("forward")
    _, inputs, iargs, fargs, outs, dys = prepare(case)
    backward = info(case)["backward"] and supported(case, True)
    grads = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys) if backward else []
    for order in ORDERS:
        thread_order(order)
        again = run(BACKEND, case.name, inputs, iargs, fargs)
        for k, (a, b) in enumerate(zip(outs, again)):
            assert np.array_equal(a, b), f"{case.id}: forward output {k} changes with CX_EMU_ORDER={order}"
        if backward:
            regrads = run(BACKEND, case.name, inputs, iargs, fargs, grads=dys)
            for k, (a, b) in enumerate(zip(grads, regrads)):
                assert np.array_equal(a, b), f"{case.id}: gradient {k} changes with CX_EMU_ORDER={order}"

"""Allocation failures are never lost: the engine's allocator (csrc/core/memory.c) is made
to fail its N-th allocation, for every N a call makes, and each run must end with a
Python MemoryError (or, where the engine has an allocation-free fallback, with the very
result of an unfailed run), no crash, no leaked block, and no output handed back.

The hook is in codext._testing (the test build: CODEXT_TEST_BUILD=1)."""
import numpy as np
import pytest

import codext
from codext import _C
from testing_module import testing

@pytest.fixture(autouse=True)
def single_thread():
    """One thread: the allocation sequence is then the same on every run (scratch buffers
    are per thread), and every scratch buffer is the caller's, which the walk releases."""
    threads = _C.get_num_threads()
    _C.set_num_threads(1)
    yield
    testing.test_alloc_fail_at(0)
    _C.set_num_threads(threads)


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return a == b or (a != a and b != b)


def walk(run):
    """Runs run() once unfailed (the reference and the allocation count), then once per N
    with the N-th allocation failing. Returns (allocations, MemoryError runs, runs that
    completed through a fallback with the reference result, the MemoryError messages)."""
    testing.test_scratch_release()
    testing.test_alloc_fail_at(0)
    reference = run()
    total = testing.test_alloc_count()
    assert total > 0
    raised = fell_back = 0
    messages = []
    for n in range(1, total + 1):
        testing.test_scratch_release()
        live = testing.test_alloc_live()
        testing.test_alloc_fail_at(n)
        try:
            result = run()
        except MemoryError as e:
            assert str(e), f"allocation {n}: MemoryError without a message"
            messages.append(str(e))
            raised += 1
        else:
            # The failed allocation had an allocation-free fallback: the result must be
            # exactly the unfailed one, never a partial one.
            assert same(result, reference), f"allocation {n} failed but a different result came back"
            fell_back += 1
        finally:
            testing.test_alloc_fail_at(0)
        assert testing.test_alloc_live() == live, f"allocation {n}: {testing.test_alloc_live() - live} block(s) leaked"
    return total, raised, fell_back, messages


def test_every_allocation_of_a_forward_backward_and_batch_prediction_fails_cleanly():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    y = (rng.random((1, 1, 64, 64)) > 0.5).astype(np.float32)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (70, 30, 3), dtype=np.uint8)]

    def run():
        native = _C.CODModel("edgenext_tiny_test", 8, 3, 2, 0, 0.5, 0.01)
        outputs = native.forward(x, True)
        parts = native.loss(y)
        native.backward(1.0, True)
        grads = native.grads().copy()
        logits = native.forward(x, False)
        probs = native.predict_batch(images, 64, [(40, 50), (35, 61)])
        return outputs, parts, grads, logits, probs

    total, raised, fell_back, messages = walk(run)
    assert raised + fell_back == total and raised > total // 2, (total, raised, fell_back)
    # failures inside CPU ops (scratch memory, on whichever thread) reach Python through
    # the backend's sync(), with the op's own message
    assert any(m.startswith("gemm:") for m in messages), messages
    assert any(m.startswith("conv2d") and "scratch" in m for m in messages), messages


def test_every_allocation_of_the_standalone_backbone_fails_cleanly():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 64, 96)).astype(np.float32)

    def run():
        backbone = _C.Backbone("edgenext_tiny_test", 3)
        features = backbone.forward(x)
        dx = backbone.backward([np.ones_like(f) for f in features])
        return features, dx, backbone.grads().copy()

    total, raised, fell_back, messages = walk(run)
    assert raised + fell_back == total and raised > total // 2, (total, raised, fell_back)


def test_every_allocation_of_a_metrics_call_fails_cleanly():
    rng = np.random.default_rng(1)
    gts = [(rng.random((24, 31)) > 0.6).astype(np.uint8) * 255, (rng.random((17, 20)) > 0.3).astype(np.uint8) * 255]
    preds = [rng.random(g.shape).astype(np.float32) for g in gts]

    def run():
        return codext.metrics.evaluate(preds, gts, per_image=True)

    total, raised, fell_back, messages = walk(run)
    assert raised == total and fell_back == 0, (total, raised, fell_back)


def test_the_hook_is_off_after_a_walk():
    testing.test_alloc_fail_at(0)
    m = codext.Model("edgenext_tiny_test", decoder_dim=8, num_experts=3, img_size=64)
    assert m.predict(np.zeros((40, 50, 3), np.uint8)).shape == (40, 50)

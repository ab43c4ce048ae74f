"""Helpers for testing single ops through the op-test runner, codext._testing.op (see
csrc/testing/op_runner.h: forward -> outputs then saved state; backward -> one gradient per
input). run() returns the outputs only (saved=True: the saved state too).

gradcheck() compares an op's analytic backward against central finite differences of
    L(inputs) = sum_k <cotangent_k, output_k(inputs)>
evaluated in float64 from the op's float32 outputs. Richardson extrapolation of two
step sizes removes the O(h^2) truncation error, so the check is sharp (typically
1e-5 relative) even though the ops compute in float32. Two probes per input:
  - directional: <grad, v> against dL/dt (x + t v) for random directions v (covers every
    element at once);
  - elementwise: individual entries (all of them for small inputs).
"""
import numpy as np

from testing_module import testing


def run(name, inputs, iargs=(), fargs=(), saved=False, backend="cpu"):
    outs = testing.op(name, [np.ascontiguousarray(x, dtype=np.float32) for x in inputs], list(iargs),
                      list(fargs), backend=backend)
    return outs if saved else outs[:testing.op_info(name)["outputs"]]


def run_backward(name, inputs, cotangents, iargs=(), fargs=(), starts=None, backend="cpu"):
    arrays = list(inputs) + list(cotangents) + (list(starts) if starts is not None else [])
    arrays = [np.ascontiguousarray(x, dtype=np.float32) for x in arrays]
    return testing.op(name, arrays, list(iargs), list(fargs), backward=True, backend=backend)


def _objective(name, inputs, cotangents, iargs, fargs):
    outs = run(name, inputs, iargs, fargs)
    return sum(float(np.dot(o.astype(np.float64).ravel(), c.astype(np.float64).ravel())) for o, c in zip(outs, cotangents))


def _derivative(f, h):
    """Richardson-extrapolated central difference of f at 0 with base step h."""
    d1 = (f(h) - f(-h)) / (2 * h)
    d2 = (f(h / 2) - f(-h / 2)) / h
    return (4 * d2 - d1) / 3


def gradcheck(name, inputs, iargs=(), fargs=(), wrt=None, h=1e-2, rtol=1e-4, n_elements=24,
              n_directions=3, seed=0):
    """Asserts the op's backward matches finite differences for the inputs in `wrt`
    (indices; default all). Returns the largest relative error seen."""
    rng = np.random.default_rng(seed)
    inputs = [np.array(x, dtype=np.float32) for x in inputs]
    outs = run(name, inputs, iargs, fargs)
    cotangents = [rng.standard_normal(o.shape).astype(np.float32) for o in outs]
    grads = run_backward(name, inputs, cotangents, iargs, fargs)
    assert len(grads) == len(inputs), f"{name}: backward returned {len(grads)} gradients for {len(inputs)} inputs"
    for g, x in zip(grads, inputs):
        assert g.shape == x.shape, f"{name}: gradient shape {g.shape} != input shape {x.shape}"
    worst = 0.0
    for i in (range(len(inputs)) if wrt is None else wrt):
        x0 = inputs[i]
        grad = grads[i].astype(np.float64)

        def at(delta):
            def f(t):
                trial = list(inputs)
                trial[i] = (x0.astype(np.float64) + t * delta).astype(np.float32)
                return _objective(name, trial, cotangents, iargs, fargs)
            return f

        # Directional probes over every element at once.
        for _ in range(n_directions):
            v = rng.standard_normal(x0.shape)
            numeric = _derivative(at(v), h)
            analytic = float(np.dot(grad.ravel(), v.ravel()))
            scale = max(abs(numeric), np.linalg.norm(grad), 1e-6)
            err = abs(analytic - numeric) / scale
            worst = max(worst, err)
            assert err <= rtol, f"{name}: input {i} directional derivative {analytic:.8g} vs numeric {numeric:.8g} (rel err {err:.2e})"
        # Elementwise probes.
        flat = np.arange(x0.size) if x0.size <= n_elements else rng.choice(x0.size, n_elements, replace=False)
        numeric = np.empty(len(flat))
        for j, k in enumerate(flat):
            e = np.zeros(x0.size)
            e[k] = 1.0
            numeric[j] = _derivative(at(e.reshape(x0.shape)), h)
        analytic = grad.ravel()[flat]
        denom = max(np.linalg.norm(numeric), np.linalg.norm(grad.ravel()) * np.sqrt(len(flat) / x0.size), 1e-6)
        err = float(np.linalg.norm(analytic - numeric) / denom)
        worst = max(worst, err)
        assert err <= rtol, f"{name}: input {i} elementwise gradient rel err {err:.2e}\nanalytic {analytic[:6]}\nnumeric  {numeric[:6]}"
    return worst


def relative_error(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30))

"""The CUDA backend's own kernels on the CUDA emulator, against the CPU backend.

kernels/pointwise.cu, norm.cu and reduce.cu (the host side, which launches through
CX_LAUNCH from kernels/launch.cuh) with the device code they include (kernels/device/*.cuh)
are compiled as C++ against the emulator (csrc/emu) under AddressSanitizer and UBSan, with
tests/emu/kernel_harness.cu standing in for backend_cuda.cu. They are compiled from a
temporary copy of those files, where the deliberate bugs are planted. (The whole backend,
cuBLAS and cuDNN calls included, runs on the emulator in tests/test_emu_backend.py.)

Every case also runs under several thread orders: these kernels promise results that do
not depend on the launch (no atomics, fixed-order reductions), so the outputs must be
bit-identical across orders.
"""
import os
import subprocess

import numpy as np
import pytest

from emu_build import CASES, ROOT, build, clean_env, compilers, sanitizer_findings
from opcheck import run, run_backward

KERNEL_FILES = ["pointwise.cu", "norm.cu", "reduce.cu"]
ORDERS = ["forward", "reverse", "random:5"]

pytestmark = pytest.mark.timeout(300)


def test_kernels_launch_through_cx_launch():
    """nvcc, NVRTC and the emulator read the same host files only when no launch is
    spelled <<<>>> outside kernels/launch.cuh."""
    for name in sorted(os.listdir(os.path.join(ROOT, "kernels"))):
        if name.endswith((".cu", ".cuh")) and name != "launch.cuh":
            with open(os.path.join(ROOT, "kernels", name)) as f:
                assert "<<<" not in f.read(), f"kernels/{name} launches with <<<>>>: use CX_LAUNCH"


# Deliberate bugs for the tests that prove the net holds: (file, text, replacement).
MUTATIONS = [
    # block_sum's barrier between tree steps dropped (device/reduce.cuh)
    ("device/reduce.cuh", "            shared[threadIdx.x] += shared[threadIdx.x + half];\n        __syncthreads();\n",
     "            shared[threadIdx.x] += shared[threadIdx.x + half];\n"),
    # an off-by-one in every grid-stride loop (the macro of device/helpers.cuh)
    ("device/helpers.cuh", "i < (n);", "i <= (n);"),
]


def build_kernels(compiler, tmp_path_factory, mutations=()):
    """The kernel harness built by `compiler`; returns run_op(op, arrays, ints, eps, order,
    check=True) -> read(name, shape), or the CompletedProcess when check is False."""
    out_dir = str(tmp_path_factory.mktemp("emu-kernels-" + compiler.replace("+", "x")))
    os.makedirs(os.path.join(out_dir, "device"))
    # the host files and the device code they include ("device/x.cuh", found beside the
    # copy first), copied so that mutations can be applied
    device = [os.path.join("device", n) for n in sorted(os.listdir(os.path.join(ROOT, "kernels", "device")))]
    unused = {m[0] for m in mutations} - set(KERNEL_FILES) - set(device)
    assert not unused, f"mutations name files kernels/ no longer has: {unused}"
    sources = []
    for name in KERNEL_FILES + device:
        with open(os.path.join(ROOT, "kernels", name)) as f:
            text = f.read()
        for file_name, old, new in mutations:
            if file_name == name:
                assert old in text, f"{name} no longer holds the text a mutation replaces"
                text = text.replace(old, new)
        path = os.path.join(out_dir, name)
        with open(path, "w") as f:
            f.write(text)
        if name in KERNEL_FILES:
            sources.append(path)
    sources.append(os.path.join(CASES, "kernel_harness.cu"))
    extra = ["-Wno-sign-compare"]  # threadIdx.x < int: nvcc does not warn on device code
    binary = build(compiler, out_dir, sources, "emu_kernels", extra, libraries=False)

    def run_op(op, arrays, ints, eps=None, order="forward", check=True):
        work = tmp_path_factory.mktemp("case")
        for name, array in arrays.items():
            np.ascontiguousarray(array, dtype=np.float32).tofile(os.path.join(work, name + ".f32"))
        args = [binary, op, str(work)] + [str(i) for i in ints] + ([repr(eps)] if eps is not None else [])
        res = subprocess.run(args, capture_output=True, text=True, timeout=120,
                             env=clean_env(CX_EMU_ORDER=order, ASAN_OPTIONS="detect_leaks=1"))
        if not check:
            return res
        assert res.returncode == 0 and not sanitizer_findings(res.stderr), res.stderr
        assert "error=none" in res.stdout, res.stdout

        def read(name, shape):
            return np.fromfile(os.path.join(work, name + ".f32"), dtype=np.float32).reshape(shape)
        return read

    return run_op


@pytest.fixture(scope="session", params=compilers() or [None])
def kernels(request, tmp_path_factory):
    if request.param is None:
        pytest.skip("no C++ compiler (clang++ or g++) to build the CUDA emulator")
    return build_kernels(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def broken_kernels(tmp_path_factory):
    """The same kernels with MUTATIONS applied (one compiler: the first found)."""
    if not compilers():
        pytest.skip("no C++ compiler (clang++ or g++) to build the CUDA emulator")
    return build_kernels(compilers()[0], tmp_path_factory, MUTATIONS)


def close(ours, ref, rtol=1e-5):
    """fp32 agreement: elementwise relative, with an absolute floor at rtol * max |ref|
    (sums that cancel to near zero)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * max(np.abs(ref).max(), 1e-30))


def across_orders(kernels, op, arrays, ints, eps, outputs):
    """Runs op under every order; asserts bit-identical outputs; returns them."""
    results = []
    for order in ORDERS:
        read = kernels(op, arrays, ints, eps, order)
        results.append([read(name, shape) for name, shape in outputs])
    for other, order in zip(results[1:], ORDERS[1:]):
        for (name, _), a, b in zip(outputs, results[0], other):
            assert np.array_equal(a, b), f"{op} {name}: {order} differs from forward"
    return results[0]


def test_gelu_keeps_relative_accuracy_in_the_far_tails(kernels):
    # Phi(x) for x down to -9 is 1e-19: the form 1 + erf(x / sqrt 2) cancels to nothing
    # there in float (20 % off at -5, 0 below -5.9); erfc keeps every element relative
    x = np.concatenate([np.linspace(-9.0, -3.0, 97), np.linspace(3.0, 9.0, 31)]).astype(np.float32)
    dy = np.ones_like(x)
    (y,) = across_orders(kernels, "gelu_forward", {"x": x}, [x.size], None, [("y", (x.size,))])
    (dx,) = across_orders(kernels, "gelu_backward", {"x": x, "dy": dy}, [x.size], None,
                          [("dx", (x.size,))])
    np.testing.assert_allclose(y, run("gelu", [x])[0], rtol=2e-5, atol=0)
    np.testing.assert_allclose(dx, run_backward("gelu", [x], [dy])[0], rtol=2e-5, atol=0)
    assert np.all(y[x < 0] < 0)  # never rounded to zero


def test_gelu_matches_cpu(kernels):
    rng = np.random.default_rng(1)
    n = 1000
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    (y,) = across_orders(kernels, "gelu_forward", {"x": x}, [n], None, [("y", (n,))])
    (dx,) = across_orders(kernels, "gelu_backward", {"x": x, "dy": dy}, [n], None, [("dx", (n,))])
    close(y, run("gelu", [x])[0])
    close(dx, run_backward("gelu", [x], [dy])[0])


def test_layernorm_matches_cpu(kernels):
    """One warp per row (shuffle reductions), rows not a multiple of the 8 rows per block;
    backward through the fixed-order column sums of reduce.cu."""
    rng = np.random.default_rng(2)
    rows, cols, eps = 37, 200, 1e-6
    x = (rng.standard_normal((rows, cols)) * 2 + 0.5).astype(np.float32)
    w, b = rng.standard_normal(cols).astype(np.float32), rng.standard_normal(cols).astype(np.float32)
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    arrays = {"x": x, "w": w, "b": b, "dy": dy}
    y, saved = across_orders(kernels, "layernorm_forward", arrays, [rows, cols], eps,
                             [("y", (rows, cols)), ("saved", (2, rows))])
    ref_y, ref_saved = run("layernorm", [x, w, b], fargs=[eps], saved=True)
    close(y, ref_y)
    close(saved, ref_saved)
    grads = across_orders(kernels, "layernorm_backward", arrays, [rows, cols], eps,
                          [("dx", (rows, cols)), ("dw", (cols,)), ("db", (cols,))])
    for ours, ref in zip(grads, run_backward("layernorm", [x, w, b], [dy], fargs=[eps])):
        close(ours, ref)


def layernorm2d_case():
    rng = np.random.default_rng(3)
    batch, channels, hw, eps = 2, 5, 300, 1e-6
    x = rng.standard_normal((batch, channels, hw)).astype(np.float32)
    arrays = {"x": x, "w": rng.standard_normal(channels).astype(np.float32),
              "b": rng.standard_normal(channels).astype(np.float32),
              "dy": rng.standard_normal(x.shape).astype(np.float32)}
    return arrays, [batch, channels, hw], eps


def test_layernorm2d_matches_cpu(kernels):
    """One thread per pixel over 3 blocks; backward through the channel sums (a
    block-wide tree reduction in static shared memory with __syncthreads)."""
    arrays, (batch, channels, hw), eps = layernorm2d_case()
    x, w, b, dy = arrays["x"], arrays["w"], arrays["b"], arrays["dy"]
    y, saved = across_orders(kernels, "layernorm2d_forward", arrays, [batch, channels, hw], eps,
                             [("y", x.shape), ("saved", (2, batch * hw))])
    ref_y, ref_saved = run("layernorm2d", [x, w, b], fargs=[eps], saved=True)
    close(y, ref_y)
    close(saved, ref_saved)
    grads = across_orders(kernels, "layernorm2d_backward", arrays, [batch, channels, hw], eps,
                          [("dx", x.shape), ("dw", (channels,)), ("db", (channels,))])
    for ours, ref in zip(grads, run_backward("layernorm2d", [x, w, b], [dy], fargs=[eps])):
        close(ours, ref)


# ---- the net holds: deliberately broken kernels are caught ----

def test_a_dropped_barrier_in_reduce_cu_is_caught(broken_kernels):
    """Without block_sum's barrier the channel sums race: the emulator's thread orders
    give different (and wrong) dbias."""
    arrays, ints, eps = layernorm2d_case()
    ref_db = run_backward("layernorm2d", [arrays["x"], arrays["w"], arrays["b"]], [arrays["dy"]],
                          fargs=[eps])[2]
    sums = [broken_kernels("layernorm2d_backward", arrays, ints, eps, order)("db", (ints[1],))
            for order in ORDERS]
    differs = any(not np.array_equal(sums[0], other) for other in sums[1:])
    wrong = any(not np.allclose(db, ref_db, rtol=1e-5, atol=1e-5) for db in sums)
    assert differs and wrong, sums


def test_an_off_by_one_in_pointwise_cu_is_caught(broken_kernels):
    """i <= n in the grid-stride loop: thread n reads and writes one float past the
    allocations, which AddressSanitizer reports."""
    n = 1000
    x = np.linspace(-3, 3, n).astype(np.float32)
    res = broken_kernels("gelu_forward", {"x": x}, [n], check=False)
    assert res.returncode != 0
    assert "ERROR: AddressSanitizer" in res.stderr and "gelu_forward_kernel" in res.stderr, res.stderr
